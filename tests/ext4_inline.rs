//! `transplant ls -R` and `cat` on an inline_data filesystem (read by the engine, since
//! ext4-view refuses it) and on an ext2 guest with sparse files, end to end.

mod common;

use common::{have, transplant};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

fn mkfs(kind: &str, extra: &[&str], src: &Path, img: &Path) {
    assert!(Command::new("mke2fs")
        .args(["-q", "-F", "-t", kind, "-d"])
        .arg(src)
        .args(extra)
        .arg(img)
        .arg("16M")
        .status()
        .unwrap()
        .success());
}

fn ok(args: &[&str]) -> Vec<u8> {
    let out = transplant(args);
    assert!(
        out.status.success(),
        "transplant {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn ls_and_cat_an_inline_data_guest() {
    if !have("mke2fs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc/small")).unwrap();
    std::fs::write(src.join("etc/fstab"), "/dev/sda1 / ext4 defaults 0 1\n").unwrap();
    std::fs::write(src.join("etc/os-release"), "ID=debian\n").unwrap();
    std::fs::write(src.join("etc/small/a"), "inline in i_block\n").unwrap();
    let spill: String = (0..110)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    std::fs::write(src.join("etc/small/b"), &spill).unwrap();
    std::os::unix::fs::symlink("../os-release", src.join("etc/small/rel")).unwrap();
    let img = dir.path().join("inline.img");
    mkfs("ext4", &["-O", "inline_data"], &src, &img);
    let img = img.to_str().unwrap();

    let listing = String::from_utf8(ok(&["ls", "-R", &format!("{img}:/etc")])).unwrap();
    for p in [
        "/etc/fstab",
        "/etc/small",
        "/etc/small/a",
        "/etc/small/b",
        "/etc/small/rel",
    ] {
        assert!(
            listing.lines().any(|l| l == p),
            "{p} missing in:\n{listing}"
        );
    }
    assert_eq!(
        ok(&["cat", &format!("{img}:/etc/small/a")]),
        b"inline in i_block\n"
    );
    assert_eq!(
        ok(&["cat", &format!("{img}:/etc/small/b")]),
        spill.as_bytes()
    );
    // A guest symlink out of an inline directory resolves inside the guest.
    assert_eq!(
        ok(&["cat", &format!("{img}:/etc/small/rel")]),
        b"ID=debian\n"
    );
}

#[test]
fn cat_sparse_files_of_an_ext2_guest() {
    if !have("mke2fs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/fstab"), "/dev/sda1 / ext2 defaults 0 1\n").unwrap();
    std::fs::write(src.join("etc/os-release"), "ID=debian\n").unwrap();
    let f = std::fs::File::create(src.join("lastlog")).unwrap();
    f.set_len(6 << 20).unwrap();
    f.write_all_at(b"one entry", 5 << 20).unwrap();
    let img = dir.path().join("ext2.img");
    mkfs("ext2", &["-b", "1024"], &src, &img);
    let got = ok(&["cat", &format!("{}:/lastlog", img.to_str().unwrap())]);
    assert!(
        got == std::fs::read(src.join("lastlog")).unwrap(),
        "/lastlog"
    );
}
