//! `transplant mount` end to end: needs /dev/fuse (and fusermount3 to unmount). Required
//! when CI is set; skipped with a message elsewhere if FUSE is not usable.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn fuse_usable() -> bool {
    let ok = Path::new("/dev/fuse").exists()
        && Command::new("sh")
            .args(["-c", "command -v fusermount3"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("FUSE (/dev/fuse and fusermount3) is required when CI is set");
        }
        eprintln!("skipping: FUSE not usable here");
    }
    ok
}

fn is_mounted(dir: &Path) -> bool {
    let canon = dir.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(canon.to_str().unwrap()))
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn raw_mount_shows_disk_and_unmounts_with_fusermount() {
    if !fuse_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    let bytes = data(3 * 1024 * 1024 + 512);
    std::fs::write(&img, &bytes).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(["mount", "--raw"])
        .arg(&img)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The command returned: the mount must already be there.
    assert!(is_mounted(&mnt));
    let back = std::fs::read(mnt.join("disk")).unwrap();
    let writable = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("disk"));
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(back.len(), bytes.len());
    assert!(back == bytes, "the mounted disk differs from the image");
    assert!(writable.is_err(), "the raw view must be read-only");
    wait_until("unmount", || !is_mounted(&mnt));
}

#[test]
fn foreground_mount_unmounts_on_sigterm() {
    if !fuse_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    std::fs::write(&a, data(1 << 20)).unwrap();
    std::fs::write(&b, vec![5u8; 1 << 20]).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(["mount", "--raw", "--foreground"])
        .arg(&a)
        .arg(&b)
        .arg(&mnt)
        .spawn()
        .unwrap();
    wait_until("mount", || is_mounted(&mnt));
    let mut names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["disk1", "disk2"]);
    assert_eq!(
        std::fs::read(mnt.join("disk2")).unwrap(),
        vec![5u8; 1 << 20]
    );
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(!is_mounted(&mnt));
}

#[test]
fn raw_mount_shows_partitions() {
    if !fuse_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    let mut bytes = data(8 << 20);
    bytes[..512].fill(0);
    std::fs::write(&img, &bytes).unwrap();
    let mut c = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\n,2M,83\n,,83\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    let bytes = std::fs::read(&img).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(["mount", "--raw"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let p1 = std::fs::read(mnt.join("p1"));
    let p2 = std::fs::read(mnt.join("p2"));
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    assert!(p1.unwrap() == bytes[1 << 20..3 << 20]);
    assert!(p2.unwrap() == bytes[3 << 20..]);
}

#[test]
fn default_mount_shows_the_guest_tree() {
    if !fuse_usable() {
        return;
    }
    let demo = format!("{}/fixtures/demo/guest.qcow2", env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(["mount", &demo])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let fstab = std::fs::read_to_string(mnt.join("etc/fstab"));
    let readme = std::fs::read_to_string(mnt.join("home/admin/README"));
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("etc/fstab"));
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    assert!(fstab.unwrap().contains("/dev/sda1"));
    assert_eq!(readme.unwrap(), "hello from the demo guest\n");
    assert!(write.is_err(), "the guest view must be read-only");
    wait_until("unmount", || !is_mounted(&mnt));
}
