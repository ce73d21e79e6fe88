//! Opening images, and the policy for files that images name: VMDK extents, qcow2 backing
//! files, VHDX and VHD parent locators. Those names come from untrusted bytes, so they
//! resolve only inside the naming image's own folder unless the user allows more: an image
//! must not be able to make us read `/etc/shadow` as an "extent" or loop through itself.

use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::probe::{probe, Format};
use crate::raw::RawFile;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// How deep a backing/parent chain may go before we call it hostile. qemu has no limit; real
/// VMware snapshot chains reach a few dozen at worst.
pub const DEFAULT_MAX_DEPTH: u32 = 64;

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Follow references to files outside the image's folder (`--allow-outside-paths`).
    pub allow_outside_paths: bool,
    pub max_depth: u32,
    /// Open the top image for writing (in-place edits). Backing files are always read-only.
    pub writable: bool,
    /// Skip probing and open as this format (`-f`).
    pub format: Option<Format>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            allow_outside_paths: false,
            max_depth: DEFAULT_MAX_DEPTH,
            writable: false,
            format: None,
        }
    }
}

/// What a reader needs to open the files its image names.
#[derive(Debug, Clone)]
pub struct OpenCtx {
    pub options: OpenOptions,
    depth: u32,
    /// Canonical paths of the images above the one being opened, top first.
    chain: Vec<PathBuf>,
    /// Images not backed by a host folder (fuzz inputs, in-memory tests): every reference to
    /// another file is refused.
    detached: bool,
}

impl OpenCtx {
    pub fn new(options: OpenOptions) -> Self {
        OpenCtx {
            options,
            depth: 0,
            chain: Vec::new(),
            detached: false,
        }
    }

    /// For images that do not live in a folder: any file they name is refused.
    pub fn detached() -> Self {
        OpenCtx {
            detached: true,
            ..OpenCtx::new(OpenOptions::default())
        }
    }

    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Resolves `reference`, a path found inside the image at `from`, under the policy.
    pub fn resolve(&self, from: &Path, reference: &str) -> Result<PathBuf> {
        let file = from.display().to_string();
        if self.detached {
            return Err(Error::refused(
                file,
                format!(
                    "the image names another file ('{reference}') and is not opened from a folder"
                ),
            ));
        }
        if reference.is_empty() || reference.contains('\0') {
            return Err(Error::corrupt(
                file,
                "file reference",
                0,
                "empty or NUL-containing file name",
            ));
        }
        let dir = from
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let reference_path = Path::new(reference);
        let candidate = if reference_path.is_absolute() {
            reference_path.to_path_buf()
        } else {
            dir.join(reference_path)
        };
        if self.options.allow_outside_paths {
            return Ok(candidate);
        }
        if reference_path
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(Error::refused(
                file,
                format!(
                    "'{reference}' climbs out of the image's folder with '..'; pass --allow-outside-paths if you trust this image"
                ),
            ));
        }
        let canon_dir = dir.canonicalize().map_err(|e| Error::io(&file, e))?;
        let canon = candidate.canonicalize().map_err(|e| {
            Error::io(
                &file,
                std::io::Error::new(
                    e.kind(),
                    format!("cannot open '{reference}' named in this image: {e}"),
                ),
            )
        })?;
        if !canon.starts_with(&canon_dir) {
            let why = if reference_path.is_absolute() {
                "is an absolute path outside the image's folder"
            } else {
                "leads outside the image's folder through a symbolic link"
            };
            return Err(Error::refused(
                file,
                format!(
                    "'{reference}' {why} ({}); pass --allow-outside-paths if you trust this image",
                    canon.display()
                ),
            ));
        }
        Ok(canon)
    }

    /// Opens a plain host file named by an image (a VMDK extent), read-only unless the top
    /// image was opened writable and `writable` is asked.
    pub fn open_file(&self, from: &Path, reference: &str) -> Result<(PathBuf, Arc<RawFile>)> {
        let path = self.resolve(from, reference)?;
        let writable = self.options.writable && self.depth == 0;
        let f = RawFile::open(&path, writable)?;
        Ok((path, Arc::new(f)))
    }

    /// Opens a backing or parent image of any format, one level deeper, refusing loops and
    /// chains deeper than the limit. `format` is what the child says the parent is, if it
    /// says.
    pub fn open_backing(
        &self,
        from: &Path,
        reference: &str,
        format: Option<Format>,
    ) -> Result<Arc<dyn Image>> {
        let path = self.resolve(from, reference)?;
        let canon = path.canonicalize().unwrap_or_else(|_| path.clone());
        let file = from.display().to_string();
        let self_canon = from.canonicalize().unwrap_or_else(|_| from.to_path_buf());
        if canon == self_canon || self.chain.contains(&canon) {
            let mut names: Vec<String> =
                self.chain.iter().map(|p| p.display().to_string()).collect();
            names.push(self_canon.display().to_string());
            names.push(canon.display().to_string());
            return Err(Error::corrupt(
                file,
                "backing chain",
                0,
                format!("the chain loops: {}", names.join(" -> ")),
            ));
        }
        if self.depth + 1 > self.options.max_depth {
            return Err(Error::refused(
                file,
                format!(
                    "the backing chain is deeper than {} images; this looks hostile",
                    self.options.max_depth
                ),
            ));
        }
        let mut child = self.clone();
        child.depth += 1;
        child.chain.push(self_canon);
        child.options.format = format;
        open_image_with(&path, &child)
    }
}

/// Opens an image file: probes it (unless a format is forced) and returns the format's
/// reader as a block device with `info`.
pub fn open_image(path: &Path, options: &OpenOptions) -> Result<Arc<dyn Image>> {
    open_image_with(path, &OpenCtx::new(options.clone()))
}

pub fn open_image_with(path: &Path, ctx: &OpenCtx) -> Result<Arc<dyn Image>> {
    let writable = ctx.options.writable && ctx.depth == 0;
    let raw = Arc::new(RawFile::open(path, writable)?);
    let (format, fallback) = match ctx.options.format {
        Some(f) => (f, false),
        None => {
            let p = probe(&*raw)?;
            (p.format, p.fallback_raw)
        }
    };
    let file: Arc<dyn BlockDev> = raw.clone();
    match format {
        Format::Raw => Ok(Arc::new(crate::image::RawImage::new(raw, fallback))),
        Format::Qcow2 => crate::qcow2::open(file, path, ctx),
        Format::Vmdk => crate::vmdk::open(file, path, ctx),
        Format::Vhdx => crate::vhdx::open(file, path, ctx),
        Format::Vpc => crate::vhd::open(file, path, ctx),
    }
}

/// Opens an image for writing in place (`--in-place`, `mount --rw`, `transplant undo`):
/// raw files and block devices as they are, qcow2 through its in-place writer (new
/// clusters appended, ordered so a crash leaks at worst). A block device that is mounted,
/// swapped on or held by LVM/dm is refused. Other formats are Unsupported: convert them to
/// qcow2 first. Backing files stay read-only.
pub fn open_image_rw(path: &Path, options: &OpenOptions) -> Result<Arc<dyn BlockDev>> {
    let name = path.display().to_string();
    let format = match options.format {
        Some(f) => f,
        None => probe(&RawFile::open(path, false)?)?.format,
    };
    match format {
        Format::Raw => {
            if crate::hostdev::is_block_device(path) {
                crate::hostdev::check_free(path)?;
            }
            Ok(Arc::new(RawFile::open(path, true)?))
        }
        Format::Qcow2 => Ok(Arc::new(crate::output::qcow2::inplace::open_writable_with(
            path, options,
        )?)),
        other => Err(Error::unsupported(
            name,
            format!("writing in place into {other} images; convert to qcow2 or raw first"),
        )),
    }
}

/// Host bytes allocated for a file (`st_blocks`), 0 if it cannot be stat'ed (detached
/// images).
pub fn host_allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks().saturating_mul(512))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_stay_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.vmdk");
        std::fs::write(&img, b"x").unwrap();
        std::fs::write(dir.path().join("b.raw"), b"y").unwrap();
        let ctx = OpenCtx::new(OpenOptions::default());
        assert!(ctx.resolve(&img, "b.raw").is_ok());
        let e = ctx.resolve(&img, "../etc/passwd").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Refused);
        let e = ctx.resolve(&img, "/etc/passwd").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Refused);
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
        let e = ctx.resolve(&img, "link").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // Absolute but inside the folder is fine.
        let abs = dir.path().join("b.raw");
        assert!(ctx.resolve(&img, abs.to_str().unwrap()).is_ok());
        let open = OpenCtx::new(OpenOptions {
            allow_outside_paths: true,
            ..Default::default()
        });
        assert!(open.resolve(&img, "/etc/hostname").is_ok());
        assert!(OpenCtx::detached().resolve(&img, "b.raw").is_err());
    }
}
