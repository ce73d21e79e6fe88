//! Raw images: files (holes found by SEEK_DATA) and block devices, against qemu-img.

mod common;

use std::process::Command;
use transplant_formats::{open_image, BlockDev, ExtentKind, OpenOptions};

#[test]
fn raw_file_matches_qemu_and_finds_holes() {
    if !common::have("qemu-img") {
        return;
    }
    let base = common::fixtures("base");
    for f in ["data-64m.raw", "data-9m.raw"] {
        common::assert_same_as_qemu(&base.join(f), Some("raw"));
    }
    // qemu rounds a raw file's size up to 512 bytes and reads zeroes there; we keep the
    // exact size, so a raw-to-raw copy is identical to its input.
    let odd = base.join("data-odd.raw");
    let img = open_image(&odd, &OpenOptions::default()).unwrap();
    assert_eq!(img.len(), 5_000_011);
    assert_eq!(common::sha256_dev(&*img), common::sha256_file(&odd));
    assert_eq!(
        common::sha256_dev_by_extents(&*img),
        common::sha256_file(&odd)
    );
    let img = open_image(&base.join("data-9m.raw"), &OpenOptions::default()).unwrap();
    let info = img.info();
    assert!(info.probed_as_raw);
    // gen-data leaves holes: the map must show some, and never claim a hole holds data.
    let holes: u64 = transplant_formats::extents_in(&*img, 0, img.len())
        .map(|r| r.unwrap())
        .filter(|(_, e)| e.kind == ExtentKind::Unallocated)
        .map(|(_, e)| e.len)
        .sum();
    assert!(holes > 0);
}

#[test]
fn block_device_reads_like_its_file() {
    if !common::have("losetup") {
        return;
    }
    let base = common::fixtures("base");
    let file = base.join("data-9m.raw");
    let out = Command::new("losetup")
        .args(["-f", "--show", "-r"])
        .arg(&file)
        .output()
        .unwrap();
    if !out.status.success() {
        // Loop devices need privileges some sandboxes do not give.
        let msg = String::from_utf8_lossy(&out.stderr);
        if std::env::var_os("CI").is_some() && unsafe_libc_is_root() {
            panic!("losetup failed as root under CI: {msg}");
        }
        eprintln!("skipping: losetup failed: {msg}");
        return;
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _guard = Detach(dev.clone());
    let img = open_image(std::path::Path::new(&dev), &OpenOptions::default()).unwrap();
    assert_eq!(img.len(), 9 * 1024 * 1024);
    assert_eq!(img.info().subformat.as_deref(), Some("block device"));
    assert_eq!(common::sha256_dev(&*img), common::sha256_file(&file));
}

fn unsafe_libc_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn truncated_and_empty_files_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let img = open_image(&empty, &OpenOptions::default()).unwrap();
    assert_eq!(img.len(), 0);
    let mut b = [0u8; 1];
    let e = img.read_at(&mut b, 0).unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
    assert!(img.extent_at(0).is_err());
    let e = open_image(dir.path(), &OpenOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("directory"), "{e}");
}
