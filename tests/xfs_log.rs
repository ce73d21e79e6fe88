//! `ls` and `cat` on an XFS guest whose log needs recovery (shut down with the log
//! flushed and the metadata not written back, as a snapshot of a running guest is):
//! the log is replayed in memory, so files that exist only in the log are listed and
//! read, and the image is left as it was. Needs root (loop mounts) and xfsprogs.

mod common;
use common::{have, sh, transplant};

#[test]
fn ls_and_cat_replay_a_dirty_xfs_log() {
    let root = sh("id -u").trim() == "0";
    if !root && std::env::var_os("CI").is_some() {
        panic!("needs root (loop mounts) in CI");
    }
    if !root || !have("mkfs.xfs") || !have("xfs_io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("guest.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let (i, m) = (img.display(), mnt.display());
    sh(&format!(
        "TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f {i}"
    ));
    let dev = sh(&format!("losetup -f --show {i}")).trim().to_string();
    let setup = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mount {dev} {m} && mkdir -p {m}/etc && echo old > {m}/etc/hostname && sync && \
             echo 'NAME=\"Rocky Linux\"' > {m}/etc/os-release && sync -f {m}/etc/os-release && \
             echo 'UUID=1 / xfs defaults 0 0' > {m}/etc/fstab && sync -f {m}/etc/fstab && \
             echo new > {m}/etc/hostname.tmp && sync -f {m}/etc/hostname.tmp && \
             mv {m}/etc/hostname.tmp {m}/etc/hostname && \
             xfs_io -x -c 'shutdown -f' {m}"
        ))
        .status()
        .unwrap();
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    let _ = std::process::Command::new("losetup")
        .args(["-d", &dev])
        .status();
    assert!(setup.success());
    let before = std::fs::read(&img).unwrap();
    let out = transplant(&["ls", &format!("{i}:/etc")]);
    let ls = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{ls}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ls.contains("os-release") && ls.contains("hostname"), "{ls}");
    assert!(!ls.contains("hostname.tmp"), "{ls}");
    let out = transplant(&["cat", &format!("{i}:/etc/hostname")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"new\n");
    let out = transplant(&["cat", &format!("{i}:/etc/os-release")]);
    assert_eq!(out.stdout, b"NAME=\"Rocky Linux\"\n");
    assert!(
        std::fs::read(&img).unwrap() == before,
        "the image was written"
    );
}
