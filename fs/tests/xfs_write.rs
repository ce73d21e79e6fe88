//! XFS writes on filesystems made by mkfs.xfs in the shapes the issue names (current
//! defaults, v4 `-m crc=0`, `-m reflink=1,rmapbt=1`, 1 KiB and 64 KiB blocks), filled
//! by an mkfs protofile: after every operation `xfs_repair -n` must find nothing, and
//! `xfs_db -r` (and our reader) must read back what was written. A v5 filesystem filled
//! on a loop mount checks that SELinux labels stay and that the kernel reads the result.

mod common;
use common::{have, is_root, Mounted};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, Overlay, RawFile};
use transplant_fs::xfs::XfsFs;
use transplant_fs::{Error, FileKind, Filesystem, NewNode, SetAttrs};

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Beginnings of the lines a clean `xfs_repair -n` prints.
const REPAIR_CLEAN: &[&str] = &[
    "Phase ",
    "agno = ",
    "Cannot get host filesystem geometry",
    "Repair may fail if there is a sector size mismatch",
    "the image and the host filesystem",
    "zero log",
    "scan filesystem freespace and inode maps",
    "found root inode chunk",
    "scan (but don't clear) agi unlinked lists",
    "process known inodes and perform inode discovery",
    "process newly discovered inodes",
    "setting up duplicate extent list",
    "check for inodes claiming duplicate blocks",
    "No modify flag set",
    "traversing filesystem",
    "traversal finished",
    "moving disconnected inodes to lost+found",
];

/// The shapes of the issue.
const CONFIGS: &[&[&str]] = &[
    &[],
    &["-m", "crc=0"],
    &["-m", "reflink=1,rmapbt=1"],
    &["-b", "size=1024"],
    &["-b", "size=65536"],
];

struct Image {
    _dir: tempfile::TempDir,
    path: PathBuf,
    label: String,
}

/// A protofile entry: a file with its content, or a directory with its entries.
enum Proto {
    File(&'static str, Vec<u8>),
    Dir(&'static str, Vec<Proto>),
}

fn proto_text(entries: &[Proto], src: &Path, out: &mut String, n: &mut usize) {
    for e in entries {
        match e {
            Proto::File(name, data) => {
                *n += 1;
                let p = src.join(format!("f{n}"));
                std::fs::write(&p, data).unwrap();
                out.push_str(&format!("{name} ---644 0 0 {}\n", p.display()));
            }
            Proto::Dir(name, sub) => {
                out.push_str(&format!("{name} d--755 0 0\n"));
                proto_text(sub, src, out, n);
                out.push_str("$\n");
            }
        }
    }
}

fn tree() -> Vec<Proto> {
    vec![
        Proto::Dir(
            "etc",
            vec![
                Proto::File("fstab", b"/dev/sda2 / xfs defaults 0 0\n".to_vec()),
                Proto::File("hosts", b"127.0.0.1 localhost\n".to_vec()),
            ],
        ),
        Proto::Dir(
            "boot",
            vec![
                Proto::File("initramfs.img", bytes(1, 3 << 20)),
                Proto::Dir("loader", vec![Proto::Dir("entries", vec![])]),
            ],
        ),
        Proto::Dir(
            "block",
            (0..40)
                .map(|i| Proto::File(NAMES[i], format!("{i}\n").into_bytes()))
                .collect(),
        ),
    ]
}

/// Names that make "block" a block-form directory (too many for the inode).
const NAMES: [&str; 40] = [
    "a00", "a01", "a02", "a03", "a04", "a05", "a06", "a07", "a08", "a09", "a10", "a11", "a12",
    "a13", "a14", "a15", "a16", "a17", "a18", "a19", "a20", "a21", "a22", "a23", "a24", "a25",
    "a26", "a27", "a28", "a29", "a30", "a31", "a32", "a33", "a34", "a35", "a36", "a37", "a38",
    "a39",
];

fn mkfs(path: &Path, mb: u64, opts: &[&str], proto: Option<&Path>) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(mb << 20)
        .unwrap();
    let mut c = Command::new("mkfs.xfs");
    c.args(["-q", "-f"]).args(opts);
    if let Some(p) = proto {
        c.arg("-p").arg(p);
    }
    let out = c
        .arg(path)
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.xfs {opts:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Image {
    fn new(opts: &[&str], mb: u64, entries: &[Proto]) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let mut text = String::from("/dev/null\n0 0\nd--755 0 0\n");
        proto_text(entries, &src, &mut text, &mut 0);
        text.push_str("$\n");
        let proto = dir.path().join("proto");
        std::fs::write(&proto, text).unwrap();
        let path = dir.path().join("fs.img");
        mkfs(&path, mb, opts, Some(&proto));
        let img = Image {
            _dir: dir,
            path,
            label: format!("{opts:?}"),
        };
        img.repair("as made by mkfs.xfs");
        img
    }

    fn open_rw(&self) -> (Arc<Overlay>, XfsFs) {
        let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&self.path, true).unwrap());
        let ov = Arc::new(Overlay::new(base));
        let fs = XfsFs::open_rw(ov.clone()).unwrap();
        (ov, fs)
    }

    /// Opens, runs `f`, commits, and checks the result with xfs_repair.
    fn step(&self, what: &str, f: impl FnOnce(&XfsFs) -> transplant_fs::Result<()>) {
        let (ov, fs) = self.open_rw();
        f(&fs).unwrap_or_else(|e| panic!("{}: {what}: {e}", self.label));
        fs.sync().unwrap();
        ov.commit().unwrap();
        self.repair(&format!("after {what}"));
    }

    fn with<R>(&self, f: impl FnOnce(&XfsFs) -> R) -> R {
        let (_ov, fs) = self.open_rw();
        f(&fs)
    }

    fn repair(&self, when: &str) {
        let out = Command::new("xfs_repair")
            .args(["-n", "-f"])
            .arg(&self.path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Some findings print without changing the exit status: any line that is not
        // one of a clean run's is one.
        let odd: Vec<&str> = text
            .lines()
            .map(|l| l.trim_start_matches([' ', '\t', '-']).trim())
            .filter(|l| !l.is_empty() && !REPAIR_CLEAN.iter().any(|ok| l.starts_with(ok)))
            .collect();
        assert!(
            out.status.success() && odd.is_empty(),
            "{}: {when}: xfs_repair -n:\n{}{}",
            self.label,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs xfs_db -r commands; returns stdout.
    fn db(&self, cmds: &[&str]) -> String {
        let mut c = Command::new("xfs_db");
        c.arg("-r");
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        let out = c.arg(&self.path).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The file's content as xfs_db reads it, through `cat` of every block of its map.
    fn cat(&self, path: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let st = Command::new("xfs_db")
            .arg("-r")
            .args(["-c", &format!("rdump {path} {}", out.display())])
            .arg(&self.path)
            .output()
            .unwrap();
        if st.status.success() && out.exists() {
            return std::fs::read(&out).unwrap();
        }
        // Older xfs_db has no rdump: read through our own reader instead.
        self.with(|fs| read_all(fs, path.as_bytes()))
    }
}

fn read_all(fs: &dyn Filesystem, path: &[u8]) -> Vec<u8> {
    let size = fs.lstat(path).unwrap().size as usize;
    let mut buf = vec![0u8; size];
    let mut done = 0;
    while done < size {
        let n = fs.read(path, done as u64, &mut buf[done..]).unwrap();
        assert!(n > 0);
        done += n;
    }
    buf
}

#[test]
fn replace_create_remove_in_every_shape() {
    if !have("mkfs.xfs") || !have("xfs_repair") || !have("xfs_db") {
        return;
    }
    for opts in CONFIGS {
        // 64 KiB blocks need a log of 512 blocks: a larger (sparse) filesystem.
        let mb = if opts.contains(&"size=65536") {
            512
        } else {
            128
        };
        let img = Image::new(opts, mb, &tree());
        let fstab = b"UUID=1234 / xfs defaults 0 0\n";
        img.step("replace a small file", |fs| {
            fs.write_file(b"/etc/fstab", fstab)
        });
        img.with(|fs| assert_eq!(read_all(fs, b"/etc/fstab"), fstab));
        let big = bytes(7, 20 << 20);
        img.step("replace with 20 MiB", |fs| {
            fs.write_file(b"/boot/initramfs.img", &big)
        });
        img.with(|fs| assert_eq!(read_all(fs, b"/boot/initramfs.img"), big));
        img.step("empty a file", |fs| fs.write_file(b"/etc/hosts", b""));
        img.step("create in a shortform directory", |fs| {
            fs.create(
                b"/etc/new.conf",
                NewNode::File(b"hello\n"),
                &SetAttrs::default(),
            )
        });
        img.with(|fs| assert_eq!(read_all(fs, b"/etc/new.conf"), b"hello\n"));
        img.step("mkdir", |fs| {
            fs.create(b"/etc/dracut.conf.d", NewNode::Dir, &SetAttrs::default())
        });
        img.step("create in the new directory", |fs| {
            fs.create(
                b"/etc/dracut.conf.d/50-transplant.conf",
                NewNode::File(b"add_drivers+=\" virtio_blk \"\n"),
                &SetAttrs::default(),
            )
        });
        img.step("a symlink", |fs| {
            fs.create(
                b"/etc/localtime",
                NewNode::Symlink(b"../usr/share/zoneinfo/UTC"),
                &SetAttrs::default(),
            )
        });
        img.step("create in a block directory", |fs| {
            fs.create(
                b"/block/new-entry",
                NewNode::File(&bytes(3, 10_000)),
                &SetAttrs::default(),
            )
        });
        img.step("remove from a block directory", |fs| {
            fs.remove(b"/block/a17")
        });
        img.step("remove from a shortform directory", |fs| {
            fs.remove(b"/etc/hosts")
        });
        img.step("rename", |fs| fs.rename(b"/etc/fstab", b"/etc/fstab.new"));
        // Shortform grows into block form.
        img.step("fill a shortform directory past its inode", |fs| {
            for i in 0..30 {
                let name = format!("/boot/loader/entries/rocky-{i:02}-5.14.0.conf");
                fs.create(
                    name.as_bytes(),
                    NewNode::File(b"title Rocky\n"),
                    &SetAttrs::default(),
                )?;
            }
            Ok(())
        });
        img.with(|fs| {
            let names = fs.read_dir(b"/boot/loader/entries").unwrap();
            assert_eq!(names.len(), 30);
            assert_eq!(fs.lstat(b"/etc/localtime").unwrap().kind, FileKind::Symlink);
            assert!(matches!(fs.lstat(b"/etc/hosts"), Err(Error::NotFound(_))));
            assert_eq!(read_all(fs, b"/etc/fstab.new"), fstab);
        });
        let ls = img.db(&["ls /etc"]);
        assert!(
            ls.contains("50-transplant.conf") || ls.contains("dracut.conf.d"),
            "{ls}"
        );
        assert_eq!(img.cat("/boot/initramfs.img"), big, "{}", img.label);
        let fmt = img.db(&[
            "path /block",
            "print core.format",
            "path /boot/loader/entries",
            "print core.format",
        ]);
        assert_eq!(fmt.matches("(extents)").count(), 2, "{}: {fmt}", img.label);
        eprintln!("{}: {fmt}", img.label);
        eprintln!(
            "{}",
            img.db(&["sb 0", "print fdblocks icount ifree", "agf 0", "print"])
        );
    }
}

/// Many small files, every other one removed: a free space of single-block holes, in
/// which a large file needs hundreds of extents (a block-map btree) and the free-space
/// and reverse-mapping btrees grow and shrink by levels.
#[test]
fn fragmented_free_space() {
    if !have("mkfs.xfs") || !have("xfs_repair") || !have("xfs_db") {
        return;
    }
    for opts in [
        // Two AGs: 150 holes in each take two-level bnobt and cntbt.
        &["-b", "size=1024", "-m", "rmapbt=1", "-d", "agcount=2"][..],
        &["-m", "crc=0", "-b", "size=1024"][..],
    ] {
        let dirs: Vec<Proto> = (0..30)
            .map(|d| {
                Proto::Dir(
                    DIRS[d],
                    (0..20)
                        .map(|i| Proto::File(NAMES[i], bytes(i as u64, 1000)))
                        .collect(),
                )
            })
            .collect();
        let mut entries = tree();
        entries.push(Proto::Dir("frag", dirs));
        // Small enough that the holes are a good part of the free space.
        let img = Image::new(opts, 64, &entries);
        // Fill what file data may take (found by trying), then free every other small
        // file: the free space file data may use is then all single-block holes.
        let fits = |blocks: u64| {
            img.with(|fs| {
                fs.create(
                    b"/probe",
                    NewNode::File(&vec![0; blocks as usize * 1024]),
                    &SetAttrs::default(),
                )
                .is_ok()
            })
        };
        let (mut lo, mut hi) = (0u64, 64 << 10);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let filler = lo as usize * 1024;
        img.step("fill the free space", |fs| {
            fs.create(
                b"/filler",
                NewNode::File(&vec![0x5a; filler]),
                &SetAttrs::default(),
            )
        });
        img.step("remove every other small file", |fs| {
            for d in DIRS.iter().take(30) {
                for n in NAMES.iter().take(20).step_by(2) {
                    fs.remove(format!("/frag/{d}/{n}").as_bytes())?;
                }
            }
            Ok(())
        });
        if opts.contains(&"agcount=2") {
            let agf = img.db(&["agf 0", "print bnolevel cntlevel rmaplevel"]);
            assert!(!agf.contains("level = 1\n"), "{agf}");
        }
        let frag = bytes(11, 250 * 1024);
        img.step("a file over the holes", |fs| {
            fs.write_file(b"/etc/fstab", &frag)
        });
        let fmt = img.db(&["path /etc/fstab", "print core.format core.nextents"]);
        assert!(fmt.contains("(btree)"), "{}: {fmt}", img.label);
        img.with(|fs| assert_eq!(read_all(fs, b"/etc/fstab"), frag));
        assert_eq!(img.cat("/etc/fstab"), frag);
        // And back to a few extents: the btree blocks are freed.
        img.step("shrink it back", |fs| fs.write_file(b"/etc/fstab", b"x\n"));
        img.step("remove the filler", |fs| fs.remove(b"/filler"));
        let fmt = img.db(&["path /etc/fstab", "print core.format"]);
        assert!(fmt.contains("(extents)"), "{}: {fmt}", img.label);
    }
}

const DIRS: [&str; 30] = [
    "d00", "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d08", "d09", "d10", "d11", "d12",
    "d13", "d14", "d15", "d16", "d17", "d18", "d19", "d20", "d21", "d22", "d23", "d24", "d25",
    "d26", "d27", "d28", "d29",
];

/// A file larger than the free space: a clear error, and nothing changed.
#[test]
fn out_of_space_changes_nothing() {
    if !have("mkfs.xfs") || !have("xfs_repair") {
        return;
    }
    let img = Image::new(&[], 64, &tree());
    let before = std::fs::read(&img.path).unwrap();
    let (ov, fs) = img.open_rw();
    let huge = vec![1u8; 80 << 20];
    let e = fs.write_file(b"/boot/initramfs.img", &huge).unwrap_err();
    assert!(matches!(e, Error::NoSpace(_)), "{e}");
    let e = fs
        .create(b"/etc/huge", NewNode::File(&huge), &SetAttrs::default())
        .unwrap_err();
    assert!(matches!(e, Error::NoSpace(_)), "{e}");
    // The filesystem still works after the failures.
    fs.write_file(b"/etc/fstab", b"ok\n").unwrap();
    assert_eq!(read_all(&fs, b"/boot/initramfs.img"), bytes(1, 3 << 20));
    fs.sync().unwrap();
    ov.commit().unwrap();
    drop(fs);
    img.repair("after out-of-space errors");
    assert_ne!(std::fs::read(&img.path).unwrap(), before);
}

fn getfattr(path: &Path, name: &str) -> String {
    let out = Command::new("getfattr")
        .args(["-h", "--only-values", "-n", name])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// On a filesystem the kernel filled (SELinux labels, a reflinked copy): a replaced
/// file keeps its label, a reflinked copy can be replaced, and the kernel reads the result.
#[test]
fn kernel_reads_what_was_written_and_labels_stay() {
    let root = is_root();
    if !root && std::env::var_os("CI").is_some() {
        panic!("the XFS kernel test needs root (loop mounts) in CI");
    }
    if !root || !have("mkfs.xfs") || !have("xfs_repair") || !have("setfattr") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    mkfs(&path, 128, &["-m", "reflink=1,rmapbt=1"], None);
    let mnt = dir.path().join("mnt");
    {
        let _m = Mounted::new(&path, &mnt, false);
        std::fs::create_dir(mnt.join("etc")).unwrap();
        std::fs::write(mnt.join("etc/fstab"), b"/dev/sda2 / xfs defaults 0 0\n").unwrap();
        let out = Command::new("setfattr")
            .args(["-n", "security.selinux", "-v", "system_u:object_r:etc_t:s0"])
            .arg(mnt.join("etc/fstab"))
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(mnt.join("data"), bytes(5, 1 << 20)).unwrap();
        let out = Command::new("cp")
            .arg("--reflink=always")
            .arg(mnt.join("data"))
            .arg(mnt.join("data.clone"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let img = Image {
        _dir: dir,
        path: path.clone(),
        label: "kernel-filled v5 reflink+rmapbt".into(),
    };
    img.repair("as the kernel left it");
    let initramfs = bytes(9, 60 << 20);
    img.step("replace a labelled file and create files", |fs| {
        fs.write_file(b"/etc/fstab", b"UUID=abc / xfs defaults 0 0\n")?;
        fs.create(
            b"/initramfs.img",
            NewNode::File(&initramfs),
            &SetAttrs::default(),
        )?;
        fs.create(b"/etc/dracut.conf.d", NewNode::Dir, &SetAttrs::default())?;
        fs.create(
            b"/etc/dracut.conf.d/50-transplant.conf",
            NewNode::File(b"add_drivers+=\" virtio_blk \"\n"),
            &SetAttrs::default(),
        )
    });
    img.with(|fs| {
        // Shared blocks lose a reference (not committed here: see xfs_write_alloc.rs).
        fs.write_file(b"/data.clone", b"x").unwrap();
        assert_eq!(
            fs.get_xattr(b"/etc/fstab", b"security.selinux").unwrap(),
            Some(b"system_u:object_r:etc_t:s0".to_vec())
        );
    });
    let mnt = img.path.with_extension("mnt");
    let _m = Mounted::new(&img.path, &mnt, true);
    assert_eq!(
        std::fs::read(mnt.join("etc/fstab")).unwrap(),
        b"UUID=abc / xfs defaults 0 0\n"
    );
    assert_eq!(
        getfattr(&mnt.join("etc/fstab"), "security.selinux").trim_end_matches('\0'),
        "system_u:object_r:etc_t:s0"
    );
    assert!(std::fs::read(mnt.join("initramfs.img")).unwrap() == initramfs);
    assert_eq!(
        std::fs::read(mnt.join("etc/dracut.conf.d/50-transplant.conf")).unwrap(),
        b"add_drivers+=\" virtio_blk \"\n"
    );
    assert_eq!(
        std::fs::read(mnt.join("data.clone")).unwrap(),
        bytes(5, 1 << 20)
    );
}
