//! Commits with an undo log into real images, checked by qemu-img: after a commit and
//! after an undo `qemu-img check` finds nothing wrong with a qcow2 image, and after the
//! undo `qemu-img compare` finds the image equal to a copy taken before. Commits cut
//! after N writes are rolled back too.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use transplant_formats::undo::{commit_with_undo, default_undo_path, read_undo, undo, UndoState};
use transplant_formats::{open_image_rw, BlockDev, Error, OpenOptions, Overlay, Result};

/// Writes fail after `left` of them: a commit cut short.
struct FailAfter {
    inner: Arc<dyn BlockDev>,
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
            return Err(Error::io(
                self.inner.name(),
                std::io::Error::other("injected failure"),
            ));
        }
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
}

fn qemu(args: &[&str], img: &Path) -> String {
    let o = Command::new("qemu-img")
        .args(args)
        .arg(img)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "qemu-img {args:?} {}: {text}",
        img.display()
    );
    text
}

fn check(img: &Path) {
    let t = qemu(&["check", "-f", "qcow2"], img);
    assert!(t.contains("No errors were found"), "{t}");
    assert!(!t.contains("leaked"), "{t}");
}

fn compare(a: &Path, b: &Path) {
    let o = Command::new("qemu-img")
        .args(["compare"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img compare {} {}: {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The edits: a small one, one across several clusters, one at the very end, one over
/// a hole.
fn edit(ov: &Overlay) {
    ov.write_at(b"fstab edited", 1000).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8 + 1).collect();
    ov.write_at(&big, 2_000_000).unwrap();
    ov.write_at(b"end", ov.len() - 3).unwrap();
    ov.write_at(&[7u8; 5000], 6 << 20).unwrap();
}

/// A raw image with data and holes, and qcow2 copies: plain, compressed (so commits copy
/// compressed clusters on write).
fn images(dir: &Path) -> Vec<(std::path::PathBuf, &'static str)> {
    let raw = dir.join("disk.raw");
    let mut data = vec![0u8; 8 << 20];
    for (i, b) in data.iter_mut().enumerate().take(3 << 20) {
        *b = (i % 251) as u8;
    }
    data[7 << 20..(7 << 20) + 4096].fill(9);
    std::fs::write(&raw, &data).unwrap();
    let mut out = vec![(raw.clone(), "raw")];
    for (name, extra) in [("plain.qcow2", &[][..]), ("zlib.qcow2", &["-c"][..])] {
        let p = dir.join(name);
        common::run(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .args(extra)
                .arg(&raw)
                .arg(&p),
        );
        out.push((p, "qcow2"));
    }
    out
}

#[test]
fn commit_then_undo_restores_the_original() {
    if !common::have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (img, fmt) in images(dir.path()) {
        let before = dir.path().join("before");
        std::fs::copy(&img, &before).unwrap();
        let u = default_undo_path(&img);
        {
            let dev = open_image_rw(&img, &OpenOptions::default()).unwrap();
            let ov = Overlay::new(dev);
            edit(&ov);
            let s = commit_with_undo(&ov, &u).unwrap();
            assert!(s.records >= 6, "{s:?}");
        }
        if fmt == "qcow2" {
            check(&img);
        }
        // The commit changed the image.
        let o = Command::new("qemu-img")
            .arg("compare")
            .arg(&before)
            .arg(&img)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", img.display());
        assert_eq!(read_undo(&u).unwrap().state, UndoState::Committed);
        {
            let dev = open_image_rw(&img, &OpenOptions::default()).unwrap();
            let r = undo(&*dev, &u).unwrap();
            assert_eq!(r.already_original, 0);
        }
        if fmt == "qcow2" {
            check(&img);
        }
        compare(&before, &img);
        std::fs::remove_file(&u).unwrap();
    }
}

#[test]
fn interrupted_commits_are_rolled_back() {
    if !common::have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (img, fmt) in images(dir.path()) {
        let pristine = dir.path().join("pristine");
        std::fs::copy(&img, &pristine).unwrap();
        for n in [0usize, 1, 3, 6] {
            let u = default_undo_path(&img);
            {
                let dev = open_image_rw(&img, &OpenOptions::default()).unwrap();
                let cut: Arc<dyn BlockDev> = Arc::new(FailAfter {
                    inner: dev,
                    left: AtomicUsize::new(n),
                });
                let ov = Overlay::new(cut);
                edit(&ov);
                let e = commit_with_undo(&ov, &u).unwrap_err();
                assert!(e.to_string().contains("transplant undo"), "{e}");
            }
            assert_eq!(read_undo(&u).unwrap().state, UndoState::Interrupted);
            if fmt == "qcow2" {
                // Cut between clusters: at worst leaks, never errors.
                let t = qemu(&["check", "-f", "qcow2"], &img);
                assert!(!t.contains("ERROR"), "{t}");
            }
            {
                let dev = open_image_rw(&img, &OpenOptions::default()).unwrap();
                undo(&*dev, &u).unwrap();
            }
            if fmt == "qcow2" {
                check(&img);
            }
            compare(&pristine, &img);
            std::fs::remove_file(&u).unwrap();
        }
    }
}

#[test]
fn formats_without_an_in_place_writer_are_unsupported() {
    if !common::have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.vmdk");
    common::run(
        Command::new("qemu-img")
            .args(["create", "-f", "vmdk"])
            .arg(&p)
            .arg("1M"),
    );
    let e = match open_image_rw(&p, &OpenOptions::default()) {
        Err(e) => e,
        Ok(_) => panic!("a VMDK opened for writing"),
    };
    assert_eq!(e.kind(), transplant_formats::ErrorKind::Unsupported, "{e}");
}
