//! `transplant write`, `rm`, `mkdir` and `mount --rw` end to end on ext4 guests made by
//! mke2fs -d: after each command `e2fsck -fn` finds the filesystem clean and debugfs reads
//! back what was written; formats that cannot be written in place and filesystems that are
//! not safe to write are refused with exit status 5 and the image untouched.

mod common;
use common::have;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    c.wait_with_output().unwrap()
}

fn run(args: &[&str]) -> Output {
    run_with_stdin(args, b"")
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A guest root filesystem image (raw).
fn guest(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/fstab"), "/dev/sda1 / ext4 defaults 0 1\n").unwrap();
    std::fs::write(src.join("etc/os-release"), "ID=debian\n").unwrap();
    let img = dir.join("guest.img");
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&src)
        .arg(&img)
        .arg("32M")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    img
}

fn fsck(img: &Path) {
    let o = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        o.status.success(),
        "e2fsck -fn {}:\n{}",
        img.display(),
        String::from_utf8_lossy(&o.stdout)
    );
}

fn debugfs(img: &Path, req: &str) -> Vec<u8> {
    Command::new("debugfs")
        .args(["-R", req])
        .arg(img)
        .output()
        .unwrap()
        .stdout
}

fn sha(p: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

#[test]
fn write_rm_mkdir_on_raw_and_qcow2() {
    if !have("mke2fs") || !have("e2fsck") || !have("debugfs") || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = guest(dir.path());
    let s = img.to_str().unwrap();
    let t = |p: &str| format!("{s}:{p}");
    ok(&run_with_stdin(&["write", &t("/etc/hostname")], b"web01\n"));
    ok(&run_with_stdin(
        &["write", &t("/etc/fstab"), "--mode", "600", "--owner", "7:8"],
        b"UUID=1 / ext4 defaults 0 1\n",
    ));
    ok(&run(&["mkdir", "-p", &t("/etc/dracut.conf.d/x/y")]));
    ok(&run(&["rm", &t("/etc/dracut.conf.d/x/y")]));
    let o = run(&["rm", &t("/etc/dracut.conf.d")]);
    assert_eq!(o.status.code(), Some(5), "rm of a non-empty directory");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    let o = run(&["mkdir", &t("/etc")]);
    assert_eq!(o.status.code(), Some(5), "mkdir of an existing directory");
    fsck(&img);
    assert_eq!(debugfs(&img, "cat /etc/hostname"), b"web01\n");
    assert_eq!(
        debugfs(&img, "cat /etc/fstab"),
        b"UUID=1 / ext4 defaults 0 1\n"
    );
    let st = String::from_utf8_lossy(&debugfs(&img, "stat /etc/fstab")).into_owned();
    assert!(
        st.contains("Mode:  0600") && st.contains("User:     7"),
        "{st}"
    );
    let o = run(&["cat", &t("/etc/hostname")]);
    assert_eq!(o.stdout, b"web01\n");

    // qcow2, written in place; qemu-img check stays clean.
    let q = dir.path().join("guest.qcow2");
    ok(&Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&img)
        .arg(&q)
        .output()
        .unwrap());
    let qs = q.to_str().unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    ok(&run_with_stdin(
        &["write", &format!("{qs}:/boot.img")],
        &big,
    ));
    ok(&run(&["rm", &format!("{qs}:/etc/hostname")]));
    ok(&Command::new("qemu-img")
        .arg("check")
        .arg(&q)
        .output()
        .unwrap());
    let back = dir.path().join("back.img");
    ok(&Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&q)
        .arg(&back)
        .output()
        .unwrap());
    fsck(&back);
    assert!(debugfs(&back, "cat /boot.img") == big);
    assert!(debugfs(&back, "stat /etc/hostname").is_empty());
}

/// `--undo` keeps a log of what an edit overwrote; `transplant undo` puts every byte back.
#[test]
fn edits_with_undo_are_undone_byte_for_byte() {
    if !have("mke2fs") || !have("e2fsck") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = guest(dir.path());
    let s = img.to_str().unwrap();
    let before = sha(&img);
    let o = run_with_stdin(
        &["write", &format!("{s}:/etc/fstab"), "--undo"],
        b"UUID=2 / ext4 defaults 0 1\n",
    );
    ok(&o);
    let undo = dir.path().join("guest.img.transplant-undo");
    assert!(undo.exists());
    assert!(String::from_utf8_lossy(&o.stderr).contains("transplant undo"));
    fsck(&img);
    assert_eq!(
        debugfs(&img, "cat /etc/fstab"),
        b"UUID=2 / ext4 defaults 0 1\n"
    );
    // A second edit with the same log pending is refused before anything changes.
    let mid = sha(&img);
    let o = run(&["rm", &format!("{s}:/etc/os-release"), "--undo"]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(sha(&img), mid);
    // Its own file, then both undone newest first.
    let undo2 = dir.path().join("rm.undo");
    ok(&run(&[
        "rm",
        &format!("{s}:/etc/os-release"),
        "--undo-file",
        undo2.to_str().unwrap(),
    ]));
    assert!(debugfs(&img, "stat /etc/os-release").is_empty());
    ok(&run(&["undo", s, "--undo-file", undo2.to_str().unwrap()]));
    assert_eq!(sha(&img), mid);
    ok(&run(&["undo", s]));
    assert_eq!(sha(&img), before);
    fsck(&img);
}

#[test]
fn unwritable_formats_and_unsafe_filesystems_are_refused() {
    if !have("mke2fs") || !have("debugfs") || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = guest(dir.path());
    let vmdk = dir.path().join("guest.vmdk");
    ok(&Command::new("qemu-img")
        .args(["convert", "-O", "vmdk"])
        .arg(&img)
        .arg(&vmdk)
        .output()
        .unwrap());
    let before = sha(&vmdk);
    let o = run_with_stdin(&["write", &format!("{}:/x", vmdk.display())], b"x");
    assert_eq!(o.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("convert"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(sha(&vmdk), before);

    // Errors recorded: still refused, the image untouched.
    let st = Command::new("debugfs")
        .args(["-w", "-R", "ssv state 3"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(st.status.success());
    let before = sha(&img);
    let o = run_with_stdin(
        &["write", &format!("{}:/etc/hostname", img.display())],
        b"x",
    );
    assert_eq!(o.status.code(), Some(5));
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(
        msg.contains("errors recorded") && msg.contains("e2fsck"),
        "{msg}"
    );
    assert_eq!(sha(&img), before);
}

/// A guest copied while running: its journal holds a committed transaction (written here
/// with debugfs's journal writer, no mount needed) whose block never reached its home.
/// `write` replays it first, as the kernel's mount would, then writes.
#[test]
fn write_replays_a_journal_needing_recovery() {
    if !have("mke2fs") || !have("debugfs") || !have("e2fsck") || !have("dumpe2fs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = guest(dir.path());
    let block: u64 = String::from_utf8_lossy(&debugfs(&img, "bmap /etc/os-release 0"))
        .trim()
        .parse()
        .unwrap();
    let bs = 1024usize
        << u32::from_le_bytes(
            std::fs::read(&img).unwrap()[1024 + 24..1024 + 28]
                .try_into()
                .unwrap(),
        );
    // Same length as "ID=debian\n", so the inode needs no change.
    let mut logged = b"ID=ubuntu\n".to_vec();
    logged.resize(bs, 0);
    let blk = dir.path().join("blk");
    std::fs::write(&blk, &logged).unwrap();
    let cmds = dir.path().join("cmds");
    std::fs::write(
        &cmds,
        format!("jo -c\njw -b {block} {}\njc\n", blk.display()),
    )
    .unwrap();
    let o = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success());
    let h = |img: &Path| {
        String::from_utf8_lossy(
            &Command::new("dumpe2fs")
                .arg("-h")
                .arg(img)
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    assert!(h(&img).contains("needs_recovery"));
    assert_eq!(debugfs(&img, "cat /etc/os-release"), b"ID=debian\n");
    let s = img.to_str().unwrap();
    // Inspection says the journal will be replayed, and does not block on it.
    let o = run(&["inspect", "--json", s]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    let codes = |kind: &str| -> Vec<String> {
        v["targets"][0][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        codes("warnings").contains(&"journal-replayed".to_string()),
        "{v}"
    );
    assert!(
        !codes("blockers").contains(&"unclean-filesystem".to_string()),
        "{v}"
    );
    ok(&run_with_stdin(
        &["write", &format!("{s}:/etc/hostname")],
        b"web01\n",
    ));
    assert!(!h(&img).contains("needs_recovery"));
    fsck(&img);
    assert_eq!(debugfs(&img, "cat /etc/hostname"), b"web01\n");
    assert_eq!(debugfs(&img, "cat /etc/os-release"), b"ID=ubuntu\n");
    let o = run(&["cat", &format!("{s}:/etc/os-release")]);
    assert_eq!(o.stdout, b"ID=ubuntu\n");
}

fn fuse_usable() -> bool {
    let ok = Path::new("/dev/fuse").exists() && have("fusermount3");
    if !ok && std::env::var_os("CI").is_some() {
        panic!("FUSE (/dev/fuse and fusermount3) is required when CI is set");
    }
    ok
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

#[test]
fn mount_rw_commits_on_unmount() {
    if !fuse_usable() || !have("mke2fs") || !have("e2fsck") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = guest(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let server = Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(["mount", "--rw", "--foreground"])
        .arg(&img)
        .arg(&mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the mount", || mnt.join("etc/fstab").exists());
    let run_ops = || -> std::io::Result<()> {
        std::fs::write(mnt.join("etc/hostname"), "db02\n")?;
        std::fs::write(mnt.join("etc/fstab"), "UUID=2 / ext4 defaults 0 1\n")?;
        std::fs::create_dir(mnt.join("opt"))?;
        let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 239) as u8).collect();
        std::fs::write(mnt.join("opt/blob"), &big)?;
        std::os::unix::fs::symlink("../etc/hostname", mnt.join("opt/link"))?;
        std::fs::rename(mnt.join("opt/blob"), mnt.join("opt/blob2"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            mnt.join("opt/blob2"),
            std::fs::Permissions::from_mode(0o640),
        )?;
        std::fs::remove_file(mnt.join("etc/os-release"))?;
        std::fs::write(mnt.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n")?;
        assert_eq!(std::fs::read(mnt.join("opt/blob2"))?, big);
        assert_eq!(
            std::fs::read_link(mnt.join("opt/link"))?,
            Path::new("../etc/hostname")
        );
        Ok(())
    };
    let r = run_ops();
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    let out = server.wait_with_output().unwrap();
    r.unwrap();
    assert!(st.success());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fsck(&img);
    assert_eq!(debugfs(&img, "cat /etc/hostname"), b"db02\n");
    assert_eq!(
        debugfs(&img, "cat /etc/os-release"),
        b"ID=debian\nVERSION_ID=12\n"
    );
    let blob = debugfs(&img, "cat /opt/blob2");
    assert_eq!(blob.len(), 2_000_000);
    let st = String::from_utf8_lossy(&debugfs(&img, "stat /opt/blob2")).into_owned();
    assert!(st.contains("Mode:  0640"), "{st}");
}

fn mkfs_uuid(kind: &str, src: &Path, img: &Path, size: &str) -> String {
    assert!(Command::new("mke2fs")
        .args(["-q", "-F", "-t", kind, "-d"])
        .arg(src)
        .arg(img)
        .arg(size)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let out = Command::new("blkid")
        .args(["-s", "UUID", "-o", "value"])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn dd(args: &[String]) {
    assert!(Command::new("dd")
        .args(args)
        .arg("status=none")
        .status()
        .unwrap()
        .success());
}

/// Root and /boot on two partitions: writes reach the filesystem the guest's fstab
/// mounts there; mount points and cross-filesystem renames are refused.
#[test]
fn writes_follow_the_guests_mounts() {
    if !have("mke2fs") || !have("sfdisk") || !have("blkid") || !have("e2fsck") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("boot/grub")).unwrap();
    std::fs::write(d.join("boot/grub/grub.cfg"), "root=/dev/sda1\n").unwrap();
    let boot_uuid = mkfs_uuid("ext2", &d.join("boot"), &d.join("boot.img"), "8M");
    std::fs::create_dir_all(d.join("root/etc")).unwrap();
    std::fs::create_dir_all(d.join("root/boot")).unwrap();
    std::fs::write(
        d.join("root/etc/fstab"),
        format!("/dev/sda1 / ext4 defaults 0 1\nUUID={boot_uuid} /boot ext2 defaults 0 2\n"),
    )
    .unwrap();
    std::fs::write(d.join("root/etc/os-release"), "ID=debian\n").unwrap();
    mkfs_uuid("ext4", &d.join("root"), &d.join("root.img"), "16M");
    let disk = d.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let mut c = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048,size=16M,type=83\n,8M,83\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    for (img, seek) in [("root.img", 1), ("boot.img", 17)] {
        dd(&[
            format!("if={}", d.join(img).display()),
            format!("of={}", disk.display()),
            "bs=1M".into(),
            format!("seek={seek}"),
            "conv=notrunc".into(),
        ]);
    }
    let s = disk.to_str().unwrap();
    ok(&run_with_stdin(
        &["write", &format!("{s}:/boot/grub/grub.cfg")],
        b"root=UUID=x\n",
    ));
    ok(&run(&["mkdir", &format!("{s}:/boot/efi")]));
    let o = run(&["rm", &format!("{s}:/boot")]);
    assert_eq!(o.status.code(), Some(5), "removing a mount point");
    assert!(String::from_utf8_lossy(&o.stderr).contains("mount point"));
    let o = run(&["cat", &format!("{s}:/boot/grub/grub.cfg")]);
    assert_eq!(o.stdout, b"root=UUID=x\n");
    for (name, skip, size) in [("p1", 1, 16), ("p2", 17, 8)] {
        let p = d.join(name);
        dd(&[
            format!("if={}", disk.display()),
            format!("of={}", p.display()),
            "bs=1M".into(),
            format!("skip={skip}"),
            format!("count={size}"),
        ]);
        fsck(&p);
    }
    assert_eq!(
        debugfs(&d.join("p2"), "cat /grub/grub.cfg"),
        b"root=UUID=x\n"
    );
    assert!(String::from_utf8_lossy(&debugfs(&d.join("p2"), "ls /")).contains("efi"));
}
