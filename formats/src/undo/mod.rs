//! Committing an overlay into its image with an undo log, and rolling a commit back.
//!
//! A commit writes into the user's only copy of a disk, so it must be reversible even if
//! it is cut half-way (power loss, a full disk, Ctrl-C). The order is what makes it so:
//! 1. the original bytes of every range the overlay changed are saved to the undo file
//!    (written under a temporary name, fsynced, renamed, folder fsynced): the undo file
//!    exists whole or not at all, and exists before the image is touched;
//! 2. the changed blocks are written into the image and flushed;
//! 3. a "committed" marker is appended to the undo file and fsynced.
//!
//! [`undo`] puts the saved bytes back. It refuses a file that is cut or damaged, or one
//! for another image, and it is safe to run again after it was itself interrupted: it
//! only ever writes saved original bytes. Each record also holds a checksum of the bytes
//! that replaced the original, so after a finished commit undo can tell that the image
//! still holds what the commit wrote, and refuses (unless forced) to roll back over later
//! changes.

mod file;

pub use file::UndoState;

use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use crate::overlay::Overlay;
use file::RecordIndex;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The largest range one record saves: the overlay's block, so a torn write costs one
/// record, and restores move data in blocks this size.
const RECORD: u64 = crate::overlay::OVERLAY_BLOCK;

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UndoSummary {
    pub undo_path: PathBuf,
    /// Saved ranges (records in the undo file).
    pub records: u64,
    /// Bytes written into the image (and saved in the undo file).
    pub bytes: u64,
}

/// What an undo did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UndoReport {
    /// State the undo file was in before this run.
    pub state: UndoState,
    pub records: u64,
    /// Records whose original bytes were written back.
    pub restored: u64,
    /// Records the image already held the original of (never written by an interrupted
    /// commit, or restored by an earlier interrupted undo).
    pub already_original: u64,
    /// Records whose current bytes were neither the original nor the commit's (a torn
    /// write of an interrupted commit, or `force`).
    pub mismatched: u64,
    pub bytes_restored: u64,
}

/// How `undo` treats an image that changed after the commit.
#[derive(Debug, Clone, Copy, Default)]
pub struct UndoOptions {
    /// Restore even where a committed image no longer holds what the commit wrote, and
    /// even if the image's name differs from the one the undo file records.
    pub force: bool,
}

/// Facts about an undo file, for messages and `undo --check`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UndoFileInfo {
    pub image_name: String,
    pub image_size: u64,
    pub records: u64,
    pub saved_bytes: u64,
    pub state: UndoState,
}

/// `IMAGE.transplant-undo`, beside the image.
pub fn default_undo_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(".transplant-undo");
    PathBuf::from(s)
}

/// The name an undo file records for an image: its canonical path when the device is a
/// host file, else the device's name.
fn identity(dev: &dyn BlockDev) -> String {
    let n = dev.name();
    match Path::new(n).canonicalize() {
        Ok(p) => p.display().to_string(),
        Err(_) => n.to_string(),
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::io(path.display().to_string(), e)
}

fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_folder(path: &Path) -> Result<()> {
    let dir = folder(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// Adds what to do next to an error, keeping its kind (so the exit status still says
/// whether the image was corrupt or the host failed).
fn with_advice(e: Error, advice: &str) -> Error {
    match e {
        Error::Corrupt {
            file,
            structure,
            offset,
            detail,
        } => Error::Corrupt {
            file,
            structure,
            offset,
            detail: format!("{detail}; {advice}"),
        },
        Error::Unsupported { file, feature } => Error::Unsupported {
            file,
            feature: format!("{feature}; {advice}"),
        },
        Error::Refused { file, reason } => Error::Refused {
            file,
            reason: format!("{reason}; {advice}"),
        },
        Error::ReadOnly { file } => {
            Error::refused(file, format!("the device is read-only; {advice}"))
        }
        Error::Io { file, source } => Error::io(
            file,
            std::io::Error::new(source.kind(), format!("{source}; {advice}")),
        ),
        e @ Error::OutOfRange { .. } => {
            let msg = format!("{e}; {advice}");
            Error::io("commit", std::io::Error::other(msg))
        }
    }
}

/// Opens and checks an undo file: every checksum, the end marker, the ranges.
fn parse_file(undo_path: &Path) -> Result<(File, file::Parsed)> {
    let name = undo_path.display().to_string();
    let f = File::open(undo_path).map_err(|e| io(undo_path, e))?;
    let len = f.metadata().map_err(|e| io(undo_path, e))?.len();
    let parsed = file::parse(&name, &f, len)?;
    Ok((f, parsed))
}

/// Reads an undo file's header and state, checking it whole.
pub fn read_undo(undo_path: &Path) -> Result<UndoFileInfo> {
    let (_, p) = parse_file(undo_path)?;
    Ok(UndoFileInfo {
        image_name: p.image_name,
        image_size: p.image_size,
        records: p.records.len() as u64,
        saved_bytes: p.saved_bytes,
        state: p.state,
    })
}

fn append_marker(undo_path: &Path, tag: &[u8; 4], at: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(undo_path)
        .map_err(|e| io(undo_path, e))?;
    // Written at the end of the last valid piece, so a cut marker of an earlier run is
    // overwritten rather than left in front of this one.
    f.write_all_at(&file::marker(tag), at)
        .and_then(|_| f.set_len(at + 8))
        .and_then(|_| f.sync_all())
        .map_err(|e| io(undo_path, e))
}

/// Writes the overlay's changes into its base device, saving the bytes they replace to
/// `undo_path` first (see the module comment for the order). An existing undo file is
/// refused unless it records a finished undo, since it may be the only way back from an
/// earlier commit. On success the overlay is empty and the base holds its changes.
pub fn commit_with_undo(overlay: &Overlay, undo_path: &Path) -> Result<UndoSummary> {
    let base = overlay.base();
    let undo_name = undo_path.display().to_string();
    let image = base.name().to_string();
    if let Ok(meta) = std::fs::symlink_metadata(undo_path) {
        let replaceable =
            meta.is_file() && matches!(read_undo(undo_path), Ok(i) if i.state == UndoState::Undone);
        if !replaceable {
            return Err(Error::refused(
                &undo_name,
                format!(
                    "an undo file is already there; it may be the only way to roll back an \
                     earlier commit: run `transplant undo {image}` first, or delete it to keep \
                     those changes, or name another undo file"
                ),
            ));
        }
    }

    // 1. Save the original bytes.
    let ranges = overlay.changed_ranges();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            undo_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "undo".into())
        ))
        .suffix(".partial")
        .tempfile_in(folder(undo_path))
        .map_err(|e| io(undo_path, e))?;
    let mut records = 0u64;
    let mut bytes = 0u64;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        w.write_all(&file::header(base.len(), &identity(&**base)))
            .map_err(|e| io(undo_path, e))?;
        let mut old = vec![0u8; RECORD as usize];
        let mut new = vec![0u8; RECORD as usize];
        for (start, len) in ranges {
            let end = start.saturating_add(len);
            let mut pos = start;
            while pos < end {
                let n = (end - pos).min(RECORD) as usize;
                let (o, nw) = (&mut old[..n], &mut new[..n]);
                base.read_at(o, pos)?;
                overlay.read_at(nw, pos)?;
                let head = file::record_head(pos, n as u32, crc32c::crc32c(o), crc32c::crc32c(nw));
                let crc = crc32c::crc32c_append(crc32c::crc32c(&head), o);
                w.write_all(&head)
                    .and_then(|_| w.write_all(o))
                    .and_then(|_| w.write_all(&crc.to_le_bytes()))
                    .map_err(|e| io(undo_path, e))?;
                records += 1;
                bytes += n as u64;
                pos += n as u64;
            }
        }
        w.write_all(&file::end(records, bytes))
            .and_then(|_| w.flush())
            .map_err(|e| io(undo_path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| io(undo_path, e))?;
    tmp.persist(undo_path).map_err(|e| io(undo_path, e.error))?;
    sync_folder(undo_path)?;
    let end_of_records = std::fs::metadata(undo_path)
        .map_err(|e| io(undo_path, e))?
        .len();

    // 2. Write the image.
    let advice = format!(
        "the commit stopped part-way and the image may be half-written: `transplant undo \
         {image} --undo-file {undo_name}` restores it"
    );
    overlay.commit().map_err(|e| with_advice(e, &advice))?;

    // 3. Say it finished.
    append_marker(undo_path, file::COMMITTED, end_of_records).map_err(|e| {
        with_advice(
            e,
            "the image was fully written, but the undo file could not record it; it still \
             rolls the commit back",
        )
    })?;
    Ok(UndoSummary {
        undo_path: undo_path.to_path_buf(),
        records,
        bytes,
    })
}

/// Puts the bytes saved in `undo_path` back into `base`. See [`undo_with`].
pub fn undo(base: &dyn BlockDev, undo_path: &Path) -> Result<UndoReport> {
    undo_with(base, undo_path, &UndoOptions::default())
}

/// What the image holds in one saved range now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Now {
    Original,
    Committed,
    Other,
}

/// Restores the saved bytes, after checking (before any write) that the file is whole,
/// that it is for an image of this size, and that the image holds what the commit left:
/// every range the original or the new bytes once the commit finished (any mix while it
/// was interrupted). Running it again after a finished or interrupted undo is harmless.
pub fn undo_with(base: &dyn BlockDev, undo_path: &Path, opts: &UndoOptions) -> Result<UndoReport> {
    let undo_name = undo_path.display().to_string();
    let (f, p) = parse_file(undo_path)?;
    let image = base.name().to_string();
    if p.image_size != base.len() {
        return Err(Error::refused(
            &image,
            format!(
                "the undo file {undo_name} is for an image of {} bytes ({}), this one has {}; \
                 name the right image or undo file",
                p.image_size,
                p.image_name,
                base.len()
            ),
        ));
    }
    let mut report = UndoReport {
        state: p.state,
        records: p.records.len() as u64,
        restored: 0,
        already_original: 0,
        mismatched: 0,
        bytes_restored: 0,
    };
    if p.state == UndoState::Undone {
        report.already_original = report.records;
        return Ok(report);
    }
    let id = identity(base);
    if id != p.image_name && !opts.force && p.state == UndoState::Interrupted {
        return Err(Error::refused(
            &image,
            format!(
                "the undo file {undo_name} was made for {}, not {id}; pass --force if the \
                 image was moved or renamed",
                p.image_name
            ),
        ));
    }

    // Look before writing anything.
    let mut buf = vec![0u8; file::MAX_RECORD as usize];
    let mut plan: Vec<(RecordIndex, Now)> = Vec::with_capacity(p.records.len());
    for r in &p.records {
        let b = buf.get_mut(..r.len as usize).unwrap_or(&mut []);
        base.read_at(b, r.offset)?;
        let crc = crc32c::crc32c(b);
        let now = if crc == r.old_crc {
            Now::Original
        } else if crc == r.new_crc {
            Now::Committed
        } else {
            Now::Other
        };
        if now == Now::Other && p.state == UndoState::Committed && !opts.force {
            return Err(Error::refused(
                &image,
                format!(
                    "the image changed after the commit recorded in {undo_name}: the bytes at \
                     {:#x}+{:#x} are neither the original nor what the commit wrote; undoing \
                     would mix old and new data. Pass --force to restore the saved bytes anyway",
                    r.offset, r.len
                ),
            ));
        }
        plan.push((*r, now));
    }

    for (r, now) in plan {
        if now == Now::Original {
            report.already_original += 1;
            continue;
        }
        if now == Now::Other {
            report.mismatched += 1;
        }
        let b = buf.get_mut(..r.len as usize).unwrap_or(&mut []);
        f.read_exact_at(b, r.data_at)
            .map_err(|e| io(undo_path, e))?;
        // The file was checked whole, but it may have changed since: check again.
        if crc32c::crc32c(b) != r.old_crc {
            return Err(Error::corrupt(
                &undo_name,
                "undo record",
                r.data_at,
                "the saved bytes changed while undoing; run undo again",
            ));
        }
        base.write_at(b, r.offset).map_err(|e| {
            with_advice(
                e,
                &format!("the undo stopped part-way; run it again to finish ({undo_name})"),
            )
        })?;
        report.restored += 1;
        report.bytes_restored += u64::from(r.len);
    }
    base.flush()?;
    append_marker(undo_path, file::UNDONE, p.valid_len)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemDev;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A device whose writes start failing after `left` of them: a commit cut short.
    struct FailAfter {
        inner: Arc<MemDev>,
        left: AtomicUsize,
    }

    impl BlockDev for FailAfter {
        fn len(&self) -> u64 {
            self.inner.len()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
            if self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
            {
                return Err(Error::io("fail", std::io::Error::other("injected failure")));
            }
            self.inner.write_at(buf, offset)
        }
        fn name(&self) -> &str {
            "mem-image"
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn edit(ov: &Overlay) {
        ov.write_at(b"hello", 10).unwrap();
        ov.write_at(&vec![0xaa; 200_000], 300_000).unwrap();
        ov.write_at(b"tail", ov.len() - 4).unwrap();
    }

    fn contents(d: &dyn BlockDev) -> Vec<u8> {
        let mut v = vec![0u8; d.len() as usize];
        d.read_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn commit_then_undo_restores_and_is_idempotent() {
        let orig = pattern(1_000_003);
        let dev = Arc::new(MemDev::writable("mem-image", orig.clone()));
        let ov = Overlay::new(dev.clone());
        edit(&ov);
        let edited = contents(&ov);
        let dir = tempfile::tempdir().unwrap();
        let u = dir.path().join("img.transplant-undo");
        let s = commit_with_undo(&ov, &u).unwrap();
        assert_eq!(s.records, 6, "{s:?}");
        assert_eq!(contents(&*dev), edited);
        assert_eq!(read_undo(&u).unwrap().state, UndoState::Committed);
        // A second commit to the same undo file is refused.
        let ov2 = Overlay::new(dev.clone());
        ov2.write_at(b"x", 0).unwrap();
        let e = commit_with_undo(&ov2, &u).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Refused, "{e}");

        let r = undo(&*dev, &u).unwrap();
        assert_eq!(r.restored, 6);
        assert_eq!(contents(&*dev), orig);
        assert_eq!(read_undo(&u).unwrap().state, UndoState::Undone);
        let r = undo(&*dev, &u).unwrap();
        assert_eq!((r.state, r.restored), (UndoState::Undone, 0));
        assert_eq!(contents(&*dev), orig);
        // Only the undo file is left in the folder (no temporary).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A finished undo file may be replaced by the next commit.
        commit_with_undo(&ov2, &u).unwrap();
    }

    #[test]
    fn an_interrupted_commit_is_rolled_back() {
        let orig = pattern(1_000_003);
        for n in 0..6 {
            let mem = Arc::new(MemDev::writable("mem-image", orig.clone()));
            let dev = Arc::new(FailAfter {
                inner: mem.clone(),
                left: AtomicUsize::new(n),
            });
            let ov = Overlay::new(dev.clone());
            edit(&ov);
            let dir = tempfile::tempdir().unwrap();
            let u = dir.path().join("u");
            let e = commit_with_undo(&ov, &u).unwrap_err();
            assert!(e.to_string().contains("transplant undo"), "{e}");
            assert_eq!(read_undo(&u).unwrap().state, UndoState::Interrupted);
            let r = undo(&*mem, &u).unwrap();
            assert_eq!(r.restored, n as u64, "after {n} writes");
            assert_eq!(contents(&*mem), orig, "after {n} writes");
        }
    }

    #[test]
    fn an_interrupted_undo_runs_again() {
        let orig = pattern(500_000);
        let mem = Arc::new(MemDev::writable("mem-image", orig.clone()));
        let ov = Overlay::new(mem.clone());
        edit(&ov);
        let dir = tempfile::tempdir().unwrap();
        let u = dir.path().join("u");
        commit_with_undo(&ov, &u).unwrap();
        let failing = FailAfter {
            inner: mem.clone(),
            left: AtomicUsize::new(2),
        };
        assert!(undo(&failing, &u).is_err());
        assert_eq!(read_undo(&u).unwrap().state, UndoState::Committed);
        let r = undo(&*mem, &u).unwrap();
        assert_eq!(r.already_original, 2);
        assert_eq!(contents(&*mem), orig);
    }

    #[test]
    fn refuses_torn_files_other_images_and_later_changes() {
        let orig = pattern(500_000);
        let mem = Arc::new(MemDev::writable("mem-image", orig.clone()));
        let ov = Overlay::new(mem.clone());
        edit(&ov);
        let dir = tempfile::tempdir().unwrap();
        let u = dir.path().join("u");
        commit_with_undo(&ov, &u).unwrap();
        let whole = std::fs::read(&u).unwrap();

        // Cut before the end marker.
        let torn = dir.path().join("torn");
        std::fs::write(&torn, &whole[..whole.len() - 40]).unwrap();
        let e = undo(&*mem, &torn).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Refused);
        assert!(e.to_string().contains("incomplete or damaged"), "{e}");

        // Another size.
        let other = MemDev::writable("mem-image", vec![0; 4096]);
        let e = undo(&other, &u).unwrap_err();
        assert!(e.to_string().contains("bytes"), "{e}");

        // Changed after the commit: refused, then forced.
        mem.write_at(b"later", 12).unwrap();
        let e = undo(&*mem, &u).unwrap_err();
        assert!(e.to_string().contains("changed after the commit"), "{e}");
        assert_eq!(&contents(&*mem)[12..17], b"later");
        let r = undo_with(&*mem, &u, &UndoOptions { force: true }).unwrap();
        assert_eq!(r.mismatched, 1);
        assert_eq!(contents(&*mem), orig);
    }
}
