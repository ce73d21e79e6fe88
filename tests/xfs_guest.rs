//! `ls`, `cat` and `info` on a RHEL-shaped guest inside a qcow2: /boot on an XFS
//! partition, / on XFS in an LVM logical volume (rl/root) on the second partition,
//! attached as its fstab says. Filesystems are made by mkfs.xfs and filled on loop
//! mounts; the VG by the lvm2 tools on a loop device. Needs root.

mod common;
use common::have;

use std::path::Path;
use std::process::{Command, Output};

fn sh(cmd: &mut Command) -> String {
    let out = cmd.env("LVM_SUPPRESS_FD_WARNINGS", "1").output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn transplant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(args)
        .output()
        .unwrap()
}

/// mkfs.xfs on a file of `mb` MiB (under fstests' names it allows small sizes), then
/// `fill` runs on a loop mount of it; returns the filesystem UUID.
fn xfs(img: &Path, mb: u64, label: &str, fill: impl FnOnce(&Path)) -> String {
    std::fs::File::create(img)
        .unwrap()
        .set_len(mb << 20)
        .unwrap();
    sh(Command::new("mkfs.xfs")
        .args(["-q", "-f", "-L", label])
        .arg(img)
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1"));
    let mnt = img.with_extension("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh(Command::new("mount")
        .args(["-o", "loop"])
        .arg(img)
        .arg(&mnt));
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let guard = Umount(&mnt);
    fill(&mnt);
    drop(guard);
    sh(Command::new("blkid")
        .args(["-s", "UUID", "-o", "value"])
        .arg(img))
}

fn dd(src: &Path, dst: &Path, seek_bytes: u64) {
    sh(Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
        .arg(format!("seek={seek_bytes}"))
        .arg("oflag=seek_bytes"));
}

#[test]
fn rhel_shaped_guest_on_xfs_and_lvm() {
    let root = sh(Command::new("id").arg("-u")) == "0";
    if std::env::var_os("CI").is_some() {
        assert!(root, "this test needs root under CI");
    }
    let tools = [
        "mkfs.xfs", "setfattr", "pvcreate", "losetup", "sfdisk", "qemu-img", "blkid",
    ];
    if !root || !tools.iter().all(|t| have(t)) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let boot_uuid = xfs(&d.join("boot.img"), 64, "boot", |m| {
        std::fs::create_dir_all(m.join("grub2")).unwrap();
        std::fs::write(
            m.join("grub2/grub.cfg"),
            "linux /vmlinuz root=/dev/mapper/rl-root\n",
        )
        .unwrap();
        std::fs::write(m.join("vmlinuz-5.14.0"), vec![0x4d; 300_000]).unwrap();
    });
    let root_img = d.join("root.img");
    xfs(&root_img, 64, "", |m| {
        std::fs::create_dir_all(m.join("etc")).unwrap();
        std::fs::create_dir_all(m.join("boot")).unwrap();
        std::fs::write(
            m.join("etc/fstab"),
            format!(
                "/dev/mapper/rl-root / xfs defaults 0 0\nUUID={boot_uuid} /boot xfs defaults 0 0\n"
            ),
        )
        .unwrap();
        std::fs::write(
            m.join("etc/os-release"),
            "ID=\"rocky\"\nVERSION_ID=\"9.4\"\n",
        )
        .unwrap();
        std::fs::write(m.join("etc/redhat-release"), "Rocky Linux release 9.4\n").unwrap();
        std::os::unix::fs::symlink("/etc/redhat-release", m.join("etc/system-release")).unwrap();
        sh(Command::new("setfattr")
            .args(["-n", "security.selinux", "-v", "system_u:object_r:etc_t:s0"])
            .arg(m.join("etc/fstab")));
    });

    // The PV: a file on a loop device, the LV never activated.
    let pv = d.join("pv.img");
    std::fs::File::create(&pv)
        .unwrap()
        .set_len(80 << 20)
        .unwrap();
    let lo = sh(Command::new("losetup").args(["-f", "--show"]).arg(&pv));
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let detach = Detach(lo.clone());
    let filter = format!("devices {{ filter = [ \"a|^{lo}$|\", \"r|.*|\" ] }}");
    let vg_name = format!("rl{}", std::process::id());
    let lvm = |args: &[&str]| {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]).args(["--config", &filter]);
        sh(&mut c)
    };
    lvm(&["pvcreate", "-q", "-ff", "-y", &lo]);
    lvm(&["vgcreate", "-q", "-s", "4M", &vg_name, &lo]);
    lvm(&[
        "lvcreate",
        "-q",
        "--driverloaded",
        "n",
        "--activate",
        "n",
        "--zero",
        "n",
        "-L",
        "64M",
        "-n",
        "root",
        &vg_name,
    ]);
    let pe_start: u64 = lvm(&[
        "pvs",
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "pe_start",
        &lo,
    ])
    .parse()
    .unwrap();
    // Forget the VG on this host before the loop device goes.
    lvm(&["vgchange", "-q", "--driverloaded", "n", "-an", &vg_name]);
    drop(detach);
    dd(&root_img, &pv, pe_start);

    let disk = d.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(160 << 20)
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
        .write_all(b"label: dos\nstart=2048,size=64M,type=83\nstart=133120,size=80M,type=8e\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    dd(&d.join("boot.img"), &disk, 1 << 20);
    dd(&pv, &disk, 133120 * 512);
    let q = d.join("guest.qcow2");
    sh(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&disk)
        .arg(&q));
    let q = q.to_str().unwrap();

    // /boot found through the root's fstab (UUID), the root through inspection.
    let out = transplant(&["cat", &format!("{q}:/boot/grub2/grub.cfg")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"linux /vmlinuz root=/dev/mapper/rl-root\n");
    let out = transplant(&["cat", &format!("{q}:/etc/system-release")]);
    assert_eq!(
        out.stdout,
        b"Rocky Linux release 9.4\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = transplant(&["ls", "-l", &format!("{q}:/etc")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("-rw-r--r--") && l.ends_with(" fstab")),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = transplant(&["ls", &format!("{q}:/boot")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vmlinuz-5.14.0") && text.contains("grub2"),
        "{text}"
    );
    // The LV and the partition alone.
    let out = transplant(&["cat", &format!("{q}@{vg_name}/root:/etc/os-release")]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rocky"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = transplant(&["ls", &format!("{q}@1:/grub2")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "grub.cfg");
    let out = transplant(&["info", "--json", q]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = v["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "xfs").count(),
        2,
        "{kinds:?}"
    );
}
