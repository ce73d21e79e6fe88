//! `convert` onto a block device (loop devices over small files): only data is written
//! unless `--zero-fill`, and a device that is mounted (itself or a partition), held by
//! device-mapper, an active swap area, or too small is refused before any write. Every
//! loop device, mount and dm table a test makes is removed by a guard, even on failure.

mod common;
use common::have;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_transplant"))
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo/guest.qcow2")
}

fn sh(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Loop devices need root and /dev/loop-control; without them (a plain user, a
/// container without devices) these tests cannot run at all. CI runs as root.
fn can_loop() -> bool {
    if !(have("losetup") && Path::new("/dev/loop-control").exists()) {
        return false;
    }
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    if !root && std::env::var_os("CI").is_some() {
        panic!("the block-device tests must run as root under CI");
    }
    root
}

/// A loop device over `file`, detached on drop.
struct Loop(String);

impl Loop {
    fn new(file: &Path, partitions: bool) -> Loop {
        let mut c = Command::new("losetup");
        c.args(["--find", "--show"]);
        if partitions {
            c.arg("-P");
        }
        let o = sh(c.arg(file));
        Loop(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }
    fn path(&self) -> &str {
        &self.0
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Runs a cleanup command on drop (umount, swapoff, dmsetup remove).
struct Undo(Vec<String>);

impl Drop for Undo {
    fn drop(&mut self) {
        let _ = Command::new(&self.0[0]).args(&self.0[1..]).status();
    }
}

fn file_of(dir: &Path, name: &str, size: usize, fill: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, vec![fill; size]).unwrap();
    p
}

fn convert(args: &[&str]) -> Output {
    bin()
        .arg("convert")
        .arg(demo())
        .args(args)
        .output()
        .unwrap()
}

fn qemu_raw(dir: &Path) -> Vec<u8> {
    let p = dir.join("ref.raw");
    sh(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(demo())
        .arg(&p));
    std::fs::read(p).unwrap()
}

#[test]
fn data_only_then_zero_fill_onto_a_loop_device() {
    if !can_loop() || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reference = qemu_raw(dir.path());
    // A device larger than the disk, full of old bytes.
    let back = file_of(dir.path(), "dev.img", 20 << 20, 0xee);
    let lo = Loop::new(&back, false);

    let o = convert(&[lo.path(), "-O", "raw"]);
    assert_eq!(o.status.code(), Some(5), "no --overwrite");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--overwrite"));

    let o = convert(&[lo.path(), "-O", "raw", "--overwrite", "--verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--zero-fill"));
    let dev = std::fs::read(lo.path()).unwrap();
    // Data where the input has data; old bytes elsewhere; nothing past the disk.
    let mut old = 0usize;
    for (i, (d, r)) in dev.iter().zip(&reference).enumerate() {
        if *r != 0 {
            assert_eq!(d, r, "byte {i}");
        } else if *d == 0xee {
            old += 1;
        }
    }
    assert!(
        old > 8 << 20,
        "holes were written: only {old} old bytes left"
    );
    assert!(dev[reference.len()..].iter().all(|&b| b == 0xee));

    let o = convert(&[
        lo.path(),
        "-O",
        "raw",
        "--overwrite",
        "--zero-fill",
        "--verify",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verified"], true);
    let dev = std::fs::read(lo.path()).unwrap();
    assert!(dev[..reference.len()] == reference[..], "zero-filled copy");
    assert!(dev[reference.len()..].iter().all(|&b| b == 0xee));

    // Other formats do not go onto devices; --zero-fill does not go to files.
    let o = convert(&[lo.path(), "-O", "qcow2", "--overwrite"]);
    assert_eq!(o.status.code(), Some(1));
    let f = dir.path().join("f.raw");
    let o = convert(&[f.to_str().unwrap(), "--zero-fill"]);
    assert!(!o.status.success());
}

#[test]
fn a_device_too_small_or_in_use_is_refused() {
    if !can_loop() || !have("mkfs.ext4") || !have("sfdisk") || !have("dmsetup") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let refused = |dev: &str, why: &str| {
        let o = convert(&[dev, "-O", "raw", "--overwrite"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(5), "{dev}: {err}");
        assert!(err.contains(why), "{dev}: expected '{why}' in: {err}");
    };

    let small = file_of(dir.path(), "small.img", 8 << 20, 0xee);
    let lo = Loop::new(&small, false);
    refused(lo.path(), "holds 8388608 bytes");
    drop(lo);
    assert!(std::fs::read(&small).unwrap().iter().all(|&b| b == 0xee));

    // A mounted filesystem on the device itself.
    let whole = file_of(dir.path(), "whole.img", 20 << 20, 0);
    let lo = Loop::new(&whole, false);
    sh(Command::new("mkfs.ext4").args(["-q", "-F", lo.path()]));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(Command::new("mount").arg(lo.path()).arg(&mnt));
    let um = Undo(vec!["umount".into(), mnt.display().to_string()]);
    refused(lo.path(), "is mounted on");
    drop(um);
    // Kept attached until the next loop device exists: re-binding the same loop number
    // straight away can leave the old file's sector 0 in the block device's cache, and
    // the partition scan then finds no table (seen once in a full run).
    let whole_lo = lo;

    // A mounted partition of the device.
    let parted = file_of(dir.path(), "parted.img", 20 << 20, 0);
    sh(Command::new("sfdisk")
        .args(["-q"])
        .arg(&parted)
        .stdin(std::fs::File::open(write_script(dir.path())).unwrap()));
    let lo = Loop::new(&parted, true);
    drop(whole_lo);
    let p1 = format!("{}p1", lo.path());
    let _node = partition_node(&p1);
    sh(Command::new("mkfs.ext4").args(["-q", "-F", &p1]));
    sh(Command::new("mount").arg(&p1).arg(&mnt));
    let um = Undo(vec!["umount".into(), mnt.display().to_string()]);
    let name = Path::new(&p1).file_name().unwrap().to_string_lossy();
    refused(lo.path(), &format!("{name} is mounted on"));
    drop(um);

    // Held by device-mapper (what an active LVM volume looks like).
    // Kernels built without device-mapper cannot show this; say so rather than fail.
    let dm = format!("transplant-test-{}", std::process::id());
    let made = Command::new("dmsetup")
        .args([
            "create",
            &dm,
            "--table",
            &format!("0 2048 linear {} 0", lo.path()),
        ])
        .output()
        .unwrap();
    if made.status.success() {
        let rm = Undo(vec!["dmsetup".into(), "remove".into(), dm.clone()]);
        refused(lo.path(), &format!("({dm})"));
        drop(rm);
    } else {
        eprintln!(
            "device-mapper unavailable here; the holder check is not exercised: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }

    // An active swap area (containers may forbid swapon: then there is nothing to test).
    sh(Command::new("mkswap").arg(&p1));
    if Command::new("swapon")
        .arg(&p1)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    {
        let off = Undo(vec!["swapoff".into(), p1.clone()]);
        refused(lo.path(), "active swap area");
        drop(off);
    } else {
        eprintln!("swapon not permitted here; the swap check is not exercised");
    }
    // Free again: the copy goes ahead.
    let o = convert(&[lo.path(), "-O", "raw", "--overwrite", "-q"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The partition's device node: udev makes it, but a container may have no udev, and
/// then it is made here from sysfs (and removed on drop).
fn partition_node(p1: &str) -> Option<Undo> {
    let name = Path::new(p1)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let sys = format!("/sys/class/block/{name}/dev");
    let disk = p1.trim_end_matches("p1");
    // Up to 15 s: on a loaded machine the kernel's partition scan can lag.
    for i in 0..150 {
        if Path::new(p1).exists() {
            return None;
        }
        if i % 50 == 5 {
            // Some kernels do not scan a loop device's table themselves; partx adds the
            // partitions through BLKPG (after dropping any stale cached sector 0).
            let _ = Command::new("blockdev")
                .args(["--flushbufs", disk])
                .status();
            let _ = Command::new("partx").args(["-a", disk]).status();
        }
        if let Ok(d) = std::fs::read_to_string(&sys) {
            let (ma, mi) = d.trim().split_once(':').unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
            if Path::new(p1).exists() {
                return None;
            }
            sh(Command::new("mknod").args([p1, "b", ma, mi]));
            return Some(Undo(vec!["rm".into(), "-f".into(), p1.into()]));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{p1} did not appear");
}

fn write_script(dir: &Path) -> PathBuf {
    let p = dir.join("layout.sfdisk");
    std::fs::write(&p, "label: dos\nstart=2048, size=30000, type=83\n").unwrap();
    p
}
