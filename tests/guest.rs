//! `ls` and `cat` end to end: the demo guest, and a two-partition guest whose fstab
//! attaches /boot by UUID, read through qcow2.

mod common;
use common::have;

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(args)
        .output()
        .unwrap()
}

fn demo() -> String {
    format!("{}/fixtures/demo/guest.qcow2", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn cat_and_ls_the_demo_guest() {
    let out = run(&["cat", &format!("{}:/etc/fstab", demo())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("/dev/sda1"));
    let out = run(&["ls", "-l", &format!("{}:/etc", demo())]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("-rw-r--r--") && l.ends_with(" fstab")),
        "{text}"
    );
    let out = run(&["ls", "--json", "-R", &format!("{}@1:/home", demo())]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"path\":\"/home/admin/README\""), "{text}");
    let out = run(&["cat", &format!("{}:/no/such", demo())]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    let out = run(&["info", "--json", &demo()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["filesystems"][0]["kind"], "ext4");
    assert_eq!(v["filesystems"][0]["label"], "demo-root");
}

fn mkfs(kind: &str, label: &str, src: &Path, img: &Path, size: &str) -> String {
    assert!(Command::new(format!("mkfs.{kind}"))
        .args(["-q", "-F", "-L", label, "-d"])
        .arg(src)
        .arg(img)
        .arg(size)
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

#[test]
fn fstab_mounts_are_attached_and_symlinks_stay_in_the_guest() {
    if !have("mkfs.ext4") || !have("sfdisk") || !have("qemu-img") || !have("blkid") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot");
    std::fs::create_dir_all(boot.join("grub")).unwrap();
    std::fs::write(
        boot.join("grub/grub.cfg"),
        "linux /vmlinuz root=/dev/sda1\n",
    )
    .unwrap();
    let boot_img = dir.path().join("boot.img");
    let boot_uuid = mkfs("ext2", "boot", &boot, &boot_img, "8M");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(
        root.join("etc/fstab"),
        format!("/dev/sda1 / ext4 defaults 0 1\nUUID={boot_uuid}\t/boot ext2 defaults 0 2\n"),
    )
    .unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=debian\n").unwrap();
    // An absolute symlink to a host path must resolve in the guest.
    std::os::unix::fs::symlink("/etc/os-release", root.join("release-link")).unwrap();
    let root_img = dir.path().join("root.img");
    mkfs("ext4", "root", &root, &root_img, "16M");
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let mut c = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048,size=16M,type=83\n,8M,83\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    for (img, seek) in [(&root_img, "1"), (&boot_img, "17")] {
        assert!(Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", disk.display()))
            .args([
                "bs=1M",
                &format!("seek={seek}"),
                "conv=notrunc",
                "status=none"
            ])
            .status()
            .unwrap()
            .success());
    }
    let q = dir.path().join("guest.qcow2");
    assert!(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&disk)
        .arg(&q)
        .status()
        .unwrap()
        .success());
    let q = q.to_str().unwrap();
    let out = run(&["cat", &format!("{q}:/boot/grub/grub.cfg")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"linux /vmlinuz root=/dev/sda1\n");
    let out = run(&["cat", &format!("{q}:/release-link")]);
    assert_eq!(
        out.stdout,
        b"ID=debian\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Partition 2 alone.
    let out = run(&["ls", &format!("{q}@2:/grub")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "grub.cfg");
}
