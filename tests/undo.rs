//! `transplant undo` end to end: a commit made through the library (as `mount --rw` and
//! `convert --in-place` make them) is rolled back by the command, a second run changes
//! nothing, and a torn undo file is refused with exit status 5 before anything is written.

mod common;
use common::have;

use std::path::Path;
use std::process::{Command, Output};
use transplant_formats::undo::{commit_with_undo, default_undo_path};
use transplant_formats::{open_image_rw, BlockDev, OpenOptions, Overlay};

fn undo_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_transplant"))
        .arg("undo")
        .args(args)
        .output()
        .unwrap()
}

fn commit(img: &Path) {
    let dev = open_image_rw(img, &OpenOptions::default()).unwrap();
    let ov = Overlay::new(dev);
    ov.write_at(b"changed", 5).unwrap();
    ov.write_at(&[1u8; 100_000], 1 << 20).unwrap();
    commit_with_undo(&ov, &default_undo_path(img)).unwrap();
}

#[test]
fn undo_rolls_back_raw_and_qcow2() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let orig: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(&raw, &orig).unwrap();
    let q = dir.path().join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-c", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .status()
        .unwrap();
    assert!(st.success());
    let pristine = dir.path().join("pristine.qcow2");
    std::fs::copy(&q, &pristine).unwrap();

    for img in [&raw, &q] {
        let s = img.to_str().unwrap();
        commit(img);
        let o = undo_cmd(&[s, "--check", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["state"], "committed");
        assert_eq!(v["image_size"], 4 << 20);

        let o = undo_cmd(&[s]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("rolled"));
        let o = undo_cmd(&[s]);
        assert!(o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("already rolled back"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::remove_file(default_undo_path(img)).unwrap();
    }
    assert_eq!(std::fs::read(&raw).unwrap(), orig);
    let o = Command::new("qemu-img")
        .arg("compare")
        .arg(&pristine)
        .arg(&q)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let o = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&q)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && t.contains("No errors") && !t.contains("leaked"),
        "{t}"
    );
}

#[test]
fn a_torn_or_missing_undo_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![3u8; 2 << 20]).unwrap();
    commit(&raw);
    let after = std::fs::read(&raw).unwrap();
    let u = default_undo_path(&raw);
    let whole = std::fs::read(&u).unwrap();
    std::fs::write(&u, &whole[..whole.len() / 2]).unwrap();
    let o = undo_cmd(&[raw.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("incomplete or damaged"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(&raw).unwrap(), after, "nothing was written");

    let other = dir.path().join("other.raw");
    std::fs::write(&other, vec![0u8; 4096]).unwrap();
    let o = undo_cmd(&[other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "no undo file there");
}
