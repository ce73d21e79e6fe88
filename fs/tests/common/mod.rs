//! Shared by the ext4 and XFS tests: tool and root checks, loop mounts; for ext4,
//! images made by mke2fs -d, opened writable through an overlay, committed after each
//! step and checked by e2fsck and debugfs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, Overlay, RawFile};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::Filesystem;

pub fn have(tool: &str) -> bool {
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

/// A small tree: a config file, a 3 MB file, and a directory big enough to be an htree.
pub fn populate(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/fstab"), "/dev/sda1 / ext4 defaults 0 1\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::create_dir(root.join("many")).unwrap();
    for i in 0..2000 {
        std::fs::write(root.join(format!("many/file-{i:05}")), format!("{i}\n")).unwrap();
    }
}

pub struct Image {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub kind: String,
}

impl Image {
    /// mke2fs -t KIND EXTRA of `mib` MiB from `populate`.
    pub fn new(kind: &str, extra: &[&str], mib: u32) -> Image {
        Self::with_tree(kind, extra, mib, populate)
    }

    pub fn with_tree(kind: &str, extra: &[&str], mib: u32, fill: impl Fn(&Path)) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        fill(&src);
        let path = dir.path().join("fs.img");
        let st = Command::new("mke2fs")
            .args(["-q", "-F", "-t", kind, "-d"])
            .arg(&src)
            .args(extra)
            .arg(&path)
            .arg(format!("{mib}M"))
            .status()
            .unwrap();
        assert!(st.success(), "mke2fs -t {kind} {extra:?}");
        // mke2fs -d writes linear directories; e2fsck -D indexes the large ones (htree),
        // as a kernel would have.
        if !kind.starts_with("ext2") || extra.iter().any(|e| e.contains("dir_index")) {
            let st = Command::new("e2fsck")
                .arg("-fyD")
                .arg(&path)
                .output()
                .unwrap();
            assert!(st.status.code().unwrap_or(8) < 4, "e2fsck -fyD");
        }
        Image {
            _dir: dir,
            path,
            kind: kind.to_string(),
        }
    }

    pub fn open_rw(&self) -> (Arc<Overlay>, Ext4Fs) {
        let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&self.path, true).unwrap());
        let ov = Arc::new(Overlay::new(base));
        let fs = Ext4Fs::open_rw(ov.clone(), &self.kind).unwrap();
        (ov, fs)
    }

    /// Opens, runs `f`, commits, and checks the result with e2fsck.
    pub fn step(
        &self,
        label: &str,
        what: &str,
        f: impl FnOnce(&dyn Filesystem) -> transplant_fs::Result<()>,
    ) {
        let (ov, fs) = self.open_rw();
        f(&fs).unwrap_or_else(|e| panic!("{label}: {what}: {e}"));
        fs.sync().unwrap();
        ov.commit().unwrap();
        self.fsck(&format!("{label}: after {what}"));
    }

    pub fn with(&self, f: impl FnOnce(&dyn Filesystem)) {
        let (_ov, fs) = self.open_rw();
        f(&fs);
    }

    pub fn fsck(&self, label: &str) {
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{label}: e2fsck -fn:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn debugfs(&self, req: &str) -> Vec<u8> {
        let out = Command::new("debugfs")
            .args(["-R", req])
            .arg(&self.path)
            .output()
            .unwrap();
        out.stdout
    }

    /// Whether debugfs sees an htree index on `path`.
    pub fn is_htree(&self, path: &str) -> bool {
        String::from_utf8_lossy(&self.debugfs(&format!("htree {path}"))).contains("Root node dump")
    }

    pub fn expect_cat(&self, path: &str, want: &[u8]) {
        let got = self.debugfs(&format!("cat {path}"));
        assert!(
            got == want,
            "debugfs cat {path}: {} bytes, want {}",
            got.len(),
            want.len()
        );
    }

    /// Checks mode (octal, as debugfs prints it), uid and gid with debugfs stat.
    pub fn expect_stat(&self, path: &str, mode: &str, uid: u32, gid: u32) {
        let s = String::from_utf8_lossy(&self.debugfs(&format!("stat {path}"))).into_owned();
        assert!(
            s.contains(&format!("Mode:  {mode}")) || s.contains(&format!("Mode:  0{mode}")),
            "{path}: {s}"
        );
        assert!(s.contains(&format!("User: {uid:>5}")), "{path} uid: {s}");
        assert!(s.contains(&format!("Group: {gid:>5}")), "{path} gid: {s}");
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// A loop mount on a loop device of its own (attached here, not by `mount -o loop`,
/// which may reuse a device still detaching from the previous mount of the same file),
/// unmounted and detached on drop.
pub struct Mounted(PathBuf, String);

impl Mounted {
    pub fn new(img: &Path, mnt: &Path, ro: bool) -> Mounted {
        std::fs::create_dir_all(mnt).unwrap();
        let mut last = String::new();
        for _ in 0..10 {
            let mut c = Command::new("losetup");
            if ro {
                c.arg("-r");
            }
            let out = c.args(["-f", "--show"]).arg(img).output().unwrap();
            let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() {
                let m = Command::new("mount")
                    .args(["-o", if ro { "ro" } else { "rw" }])
                    .arg(&dev)
                    .arg(mnt)
                    .output()
                    .unwrap();
                if m.status.success() {
                    return Mounted(mnt.to_path_buf(), dev);
                }
                last = String::from_utf8_lossy(&m.stderr).into_owned();
                let _ = Command::new("losetup").args(["-d", &dev]).status();
            } else {
                last = String::from_utf8_lossy(&out.stderr).into_owned();
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("cannot mount {}: {last}", img.display());
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = Command::new("losetup").args(["-d", &self.1]).status();
    }
}
