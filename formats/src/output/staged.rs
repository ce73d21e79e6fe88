//! A file that becomes visible under its final name only when complete.

use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

pub struct StagedFile {
    tmp: Option<tempfile::NamedTempFile>,
    dest: PathBuf,
}

impl StagedFile {
    /// Creates a hidden temporary file beside `dest` (same filesystem, so the final rename
    /// is atomic). Refuses to overwrite an existing `dest` unless `overwrite`.
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self> {
        let name = dest.display().to_string();
        if !overwrite && dest.exists() {
            return Err(Error::refused(
                name,
                "the output exists; remove it or pass --overwrite",
            ));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        // Mode 0666 minus the umask, as any new file: tempfile's 0600 would surprise.
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{base}."))
            .suffix(".transplant-partial")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&name, e))?;
        Ok(StagedFile {
            tmp: Some(tmp),
            dest: dest.to_path_buf(),
        })
    }

    pub fn file(&self) -> Result<&File> {
        self.tmp.as_ref().map(|t| t.as_file()).ok_or_else(|| {
            Error::io(
                self.dest.display().to_string(),
                std::io::Error::other("output already finished"),
            )
        })
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// fsyncs the data, renames it into place and fsyncs the folder.
    pub fn commit(&mut self) -> Result<()> {
        let name = self.dest.display().to_string();
        let tmp = self
            .tmp
            .take()
            .ok_or_else(|| Error::io(&name, std::io::Error::other("output already finished")))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(&name, e))?;
        tmp.persist(&self.dest)
            .map_err(|e| Error::io(&name, e.error))?;
        if let Some(dir) = self.dest.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}
