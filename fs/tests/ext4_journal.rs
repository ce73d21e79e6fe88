//! A journal that needs recovery: the kernel writes through a loop mount, the image is
//! copied after `sync` (transaction committed, needs_recovery set), and the home locations
//! of every logged block except the superblock are put back to their state before the
//! mount. Only a reader that replays the journal sees the new file — debugfs, which does
//! not replay, must not, or the test proves nothing.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, RawFile};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::Filesystem;

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok && std::env::var_os("CI").is_some() {
        panic!("{tool} is required when CI is set");
    }
    ok
}

/// Unmounts on drop, so a failing assertion never leaves a loop mount behind.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn debugfs(img: &Path, cmd: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", cmd])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn reads_see_committed_transactions() {
    if !have("mkfs.ext4") || !have("debugfs") || !have("mount") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "1024"])
        .arg(&img)
        .arg("16M")
        .status()
        .unwrap()
        .success());
    let before = std::fs::read(&img).unwrap();
    let ok = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "loop mount is required when CI is set"
        );
        eprintln!("loop mount not permitted here: skipped");
        return;
    }
    let after = {
        let _m = Mounted(&mnt);
        std::fs::write(mnt.join("new.txt"), "journaled content\n").unwrap();
        std::fs::create_dir(mnt.join("newdir")).unwrap();
        assert!(Command::new("sync").status().unwrap().success());
        std::fs::read(&img).unwrap()
    };
    let copy = dir.path().join("copy.img");
    std::fs::write(&copy, &after).unwrap();
    let logged: Vec<u64> = debugfs(&copy, "logdump -a")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FS block "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        !logged.is_empty(),
        "no committed transaction in the journal"
    );
    let mut bytes = after.clone();
    for b in logged {
        // Block 1 holds the superblock (1 KiB blocks): it keeps needs_recovery.
        if b == 1 {
            continue;
        }
        let at = (b * 1024) as usize;
        bytes[at..at + 1024].copy_from_slice(&before[at..at + 1024]);
    }
    std::fs::write(&copy, &bytes).unwrap();
    let features = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&features.stdout).contains("needs_recovery"));
    assert!(
        !debugfs(&copy, "ls /").contains("new.txt"),
        "home locations already hold the transaction: test is void"
    );
    let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(&copy, false).unwrap());
    let fs = Ext4Fs::open(dev, "ext4").unwrap();
    let mut buf = [0u8; 64];
    let n = fs.read(b"/new.txt", 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"journaled content\n");
    assert!(fs.read_dir(b"/newdir").unwrap().is_empty());
    // The image itself is never written by the replay.
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
}
