//! XFS writes that need new allocation structures: inode chunks made when every chunk
//! is full, and replacing or removing files whose blocks are shared (reflink). Each
//! result is checked with `xfs_repair -n` and read back by the kernel (loop mount, as
//! root) and by our reader.

mod common;
use common::{have, is_root, Mounted};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, Overlay, RawFile};
use transplant_fs::xfs::XfsFs;
use transplant_fs::{Filesystem, NewNode, SetAttrs};

/// Whether the kernel tests can run: root for loop mounts (required under CI).
fn kernel_ok() -> bool {
    let root = is_root();
    if !root && std::env::var_os("CI").is_some() {
        panic!("the XFS kernel tests need root (loop mounts) in CI");
    }
    root
}

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

fn mkfs(path: &Path, mb: u64, opts: &[&str]) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(mb << 20)
        .unwrap();
    let out = Command::new("mkfs.xfs")
        .args(["-q", "-f"])
        .args(opts)
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

fn repair(path: &Path, when: &str) {
    let out = Command::new("xfs_repair")
        .args(["-n", "-f"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let odd: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start_matches([' ', '\t', '-']).trim())
        .filter(|l| !l.is_empty() && !REPAIR_CLEAN.iter().any(|ok| l.starts_with(ok)))
        .collect();
    assert!(
        out.status.success() && odd.is_empty(),
        "{when}: xfs_repair -n:\n{text}"
    );
}

/// Opens the image for writing over an overlay, runs `f`, commits, checks with repair.
fn step(path: &Path, what: &str, f: impl FnOnce(&XfsFs) -> transplant_fs::Result<()>) {
    let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(path, true).unwrap());
    let ov = Arc::new(Overlay::new(base));
    let fs = XfsFs::open_rw(ov.clone()).unwrap();
    f(&fs).unwrap_or_else(|e| panic!("{what}: {e}"));
    fs.sync().unwrap();
    ov.commit().unwrap();
    repair(path, &format!("after {what}"));
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

fn sb_field(path: &Path, field: &str) -> u64 {
    let out = Command::new("xfs_db")
        .args(["-r", "-c", "sb 0", "-c", &format!("p {field}")])
        .arg(path)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.split('=')
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("xfs_db sb {field}: {s}"))
}

const DIRS: usize = 10;
const PER_DIR: usize = 20;

fn name(d: usize, f: usize) -> String {
    format!("/d{d}/file{f:02}")
}

/// On a fresh filesystem (one chunk, 61 inodes free with 4 KiB blocks) 210 new inodes need new chunks;
/// in every shape the kernel reads them all back.
#[test]
fn creates_past_the_first_inode_chunk() {
    if !have("mkfs.xfs") || !have("xfs_repair") || !have("xfs_db") {
        return;
    }
    let kernel = kernel_ok();
    let shapes: &[&[&str]] = &[
        &[],
        &["-m", "crc=0"],
        &["-m", "reflink=1,rmapbt=1"],
        &["-b", "size=1024"],
        &["-b", "size=65536"],
        &["-i", "sparse=0", "-m", "finobt=0"],
    ];
    for opts in shapes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.img");
        let mb = if opts.contains(&"size=65536") {
            512
        } else {
            64
        };
        mkfs(&path, mb, opts);
        let icount = sb_field(&path, "icount");
        let used = icount - sb_field(&path, "ifree");
        let made = (DIRS + DIRS * PER_DIR) as u64;
        step(&path, &format!("{opts:?}: 210 creates"), |fs| {
            for d in 0..DIRS {
                fs.create(
                    format!("/d{d}").as_bytes(),
                    NewNode::Dir,
                    &SetAttrs::default(),
                )?;
                for f in 0..PER_DIR {
                    let data = format!("{d}/{f}\n");
                    fs.create(
                        name(d, f).as_bytes(),
                        NewNode::File(data.as_bytes()),
                        &SetAttrs::default(),
                    )?;
                }
            }
            Ok(())
        });
        let after = sb_field(&path, "icount");
        let ifree = sb_field(&path, "ifree");
        assert!(after > icount, "{opts:?}: no chunk was made");
        assert_eq!(after - ifree, used + made, "{opts:?}");
        // A second session finds the chunks' free inodes and uses them.
        step(&path, &format!("{opts:?}: one more"), |fs| {
            fs.create(b"/last", NewNode::File(b"x"), &SetAttrs::default())
        });
        {
            let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&path, false).unwrap());
            let fs = XfsFs::open(base).unwrap();
            assert_eq!(fs.read_dir(b"/d9").unwrap().len(), PER_DIR, "{opts:?}");
            assert_eq!(read_all(&fs, b"/d9/file19"), b"9/19\n", "{opts:?}");
        }
        // This kernel no longer mounts v4 filesystems.
        if kernel && !opts.contains(&"crc=0") {
            let mnt = dir.path().join("mnt");
            let _m = Mounted::new(&path, &mnt, true);
            for d in 0..DIRS {
                let n = std::fs::read_dir(mnt.join(format!("d{d}")))
                    .unwrap()
                    .count();
                assert_eq!(n, PER_DIR, "{opts:?}: d{d}");
            }
            assert_eq!(
                std::fs::read(mnt.join("d9/file19")).unwrap(),
                b"9/19\n",
                "{opts:?}"
            );
        }
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files sharing blocks, made by the kernel: `data` (10 MiB), two reflinked copies,
/// the second partly rewritten in place (so its middle is its own and the refcount
/// records split, with runs of three users and of two). Replacing and removing them one
/// by one must drop references without freeing blocks another file still maps.
#[test]
fn replacing_reflinked_files_keeps_the_other_copies() {
    if !have("mkfs.xfs") || !have("xfs_repair") || !kernel_ok() {
        return;
    }
    let orig = bytes(21, 10 << 20);
    let patch = bytes(22, 1 << 20);
    let mut clone2 = orig.clone();
    clone2[(3 << 20)..(4 << 20)].copy_from_slice(&patch);
    for opts in [&["-m", "reflink=1"][..], &["-m", "reflink=1,rmapbt=1"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.img");
        mkfs(&path, 96, opts);
        let mnt = dir.path().join("mnt");
        {
            let _m = Mounted::new(&path, &mnt, false);
            std::fs::write(mnt.join("data"), &orig).unwrap();
            let (d, c1, c2) = (mnt.join("data"), mnt.join("clone1"), mnt.join("clone2"));
            let (d, c1, c2) = (
                d.to_str().unwrap(),
                c1.to_str().unwrap(),
                c2.to_str().unwrap(),
            );
            sh(&["cp", "--reflink=always", d, c1]);
            sh(&["cp", "--reflink=always", d, c2]);
            let p = mnt.join("patch");
            std::fs::write(&p, &patch).unwrap();
            let p = p.to_str().unwrap();
            let of = format!("of={c2}");
            let inf = format!("if={p}");
            sh(&[
                "dd",
                &inf,
                &of,
                "bs=1M",
                "seek=3",
                "conv=notrunc",
                "status=none",
            ]);
            std::fs::remove_file(p).unwrap();
            sh(&["sync"]);
        }
        repair(&path, "as the kernel left it");
        let new1 = bytes(23, 5 << 20);
        step(&path, &format!("{opts:?}: replace clone1"), |fs| {
            fs.write_file(b"/clone1", &new1)
        });
        {
            let _m = Mounted::new(&path, &mnt, true);
            assert!(std::fs::read(mnt.join("data")).unwrap() == orig, "{opts:?}");
            assert!(
                std::fs::read(mnt.join("clone1")).unwrap() == new1,
                "{opts:?}"
            );
            assert!(
                std::fs::read(mnt.join("clone2")).unwrap() == clone2,
                "{opts:?}"
            );
        }
        step(&path, &format!("{opts:?}: remove data"), |fs| {
            fs.remove(b"/data")
        });
        step(&path, &format!("{opts:?}: replace clone2"), |fs| {
            fs.write_file(b"/clone2", b"small\n")
        });
        let _m = Mounted::new(&path, &mnt, true);
        assert!(
            std::fs::read(mnt.join("clone1")).unwrap() == new1,
            "{opts:?}"
        );
        assert_eq!(std::fs::read(mnt.join("clone2")).unwrap(), b"small\n");
    }
}

/// Symbolic links too long for the inode get a block of their own (v5: with its
/// header); the kernel and xfs_db follow them, and removing them frees the block.
#[test]
fn long_symlink_targets_go_to_a_block() {
    if !have("mkfs.xfs") || !have("xfs_repair") {
        return;
    }
    let kernel = kernel_ok();
    let long = format!("/{}", "abcdefghi/".repeat(60));
    let longest = format!("/{}", "x".repeat(1022));
    for opts in [&[][..], &["-m", "crc=0"][..], &["-b", "size=1024"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.img");
        mkfs(&path, 64, opts);
        let one_k_v5 = opts.contains(&"size=1024");
        step(&path, &format!("{opts:?}: long symlinks"), |fs| {
            let a = SetAttrs::default();
            fs.create(b"/l600", NewNode::Symlink(long.as_bytes()), &a)?;
            fs.create(b"/gone", NewNode::Symlink(long.as_bytes()), &a)?;
            let r = fs.create(b"/l1023", NewNode::Symlink(longest.as_bytes()), &a);
            // Over one 1 KiB block with its 56-byte header: not written.
            assert_eq!(r.is_err(), one_k_v5, "{opts:?}: {r:?}");
            // The kernel's limit: 1023 bytes.
            let too = format!("{longest}y");
            assert!(fs
                .create(b"/l1025", NewNode::Symlink(too.as_bytes()), &a)
                .is_err());
            fs.remove(b"/gone")
        });
        let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&path, false).unwrap());
        let fs = XfsFs::open(base).unwrap();
        assert_eq!(fs.read_link(b"/l600").unwrap(), long.as_bytes());
        if !one_k_v5 {
            assert_eq!(fs.read_link(b"/l1023").unwrap(), longest.as_bytes());
        }
        if kernel && !opts.contains(&"crc=0") {
            let mnt = dir.path().join("mnt");
            let _m = Mounted::new(&path, &mnt, true);
            let t = std::fs::read_link(mnt.join("l600")).unwrap();
            assert_eq!(t.to_str().unwrap(), long, "{opts:?}");
        }
    }
}

fn db_field(path: &Path, obj: &str, field: &str) -> u64 {
    let out = Command::new("xfs_db")
        .args(["-r", "-c", obj, "-c", &format!("p {field}")])
        .arg(path)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.split('=')
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("xfs_db {obj} {field}: {s}"))
}

/// Chunks the kernel made and filled on a loop mount (its files in four directories,
/// so in several AGs, then each AG's free inodes used up by files in a directory of
/// that AG, since the kernel makes a chunk in the parent's AG before it looks at the
/// others), then 210 of ours.
#[test]
fn chunks_after_the_kernels_full_ones() {
    if !have("mkfs.xfs") || !have("xfs_repair") || !have("xfs_db") || !kernel_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    let mnt = dir.path().join("mnt");
    mkfs(&path, 64, &[]);
    let ag_bits = sb_field(&path, "agblklog") + sb_field(&path, "inopblog");
    let agcount = sb_field(&path, "agcount");
    for round in 0..4 {
        let free: Vec<u64> = (0..agcount)
            .map(|a| db_field(&path, &format!("agi {a}"), "freecount"))
            .collect();
        if free.iter().all(|&f| f == 0) {
            break;
        }
        let _m = Mounted::new(&path, &mnt, false);
        let mut by_ag = std::collections::BTreeMap::new();
        for d in 0..8 {
            let p = mnt.join(format!("k{d}"));
            if !p.exists() {
                std::fs::create_dir(&p).unwrap();
            }
            use std::os::unix::fs::MetadataExt;
            by_ag.insert(std::fs::metadata(&p).unwrap().ino() >> ag_bits, p);
        }
        for (a, &f) in free.iter().enumerate() {
            if let Some(d) = by_ag.get(&(a as u64)) {
                for k in 0..f {
                    std::fs::write(d.join(format!("r{round}-{k}")), b"k").unwrap();
                }
            }
        }
    }
    assert_eq!(sb_field(&path, "ifree"), 0, "the kernel left free inodes");
    repair(&path, "as the kernel left it");
    let used = sb_field(&path, "icount");
    step(&path, "210 creates after the kernel's chunks", |fs| {
        let a = SetAttrs::default();
        for d in 0..DIRS {
            fs.create(format!("/d{d}").as_bytes(), NewNode::Dir, &a)?;
            for f in 0..PER_DIR {
                fs.create(name(d, f).as_bytes(), NewNode::File(b"x"), &a)?;
            }
        }
        Ok(())
    });
    let made = (DIRS + DIRS * PER_DIR) as u64;
    assert_eq!(
        sb_field(&path, "icount") - sb_field(&path, "ifree"),
        used + made
    );
    let _m = Mounted::new(&path, &mnt, true);
    for d in 0..DIRS {
        let n = std::fs::read_dir(mnt.join(format!("d{d}")))
            .unwrap()
            .count();
        assert_eq!(n, PER_DIR);
    }
}

/// The `imaxpct` limit the kernel keeps, kept: past it a create fails with no space.
#[test]
fn new_chunks_stop_at_the_inode_limit() {
    if !have("mkfs.xfs") || !have("xfs_repair") || !have("xfs_db") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    // 32 MiB at 1%: 80 blocks of inodes, 640 inodes (ten chunks).
    mkfs(&path, 32, &["-i", "maxpct=1"]);
    let mut made = 3u64;
    step(&path, "creates up to the inode limit", |fs| {
        let a = SetAttrs::default();
        for d in 0.. {
            for f in 0..=PER_DIR {
                let (p, node) = if f == 0 {
                    (format!("/d{d}"), NewNode::Dir)
                } else {
                    (name(d, f), NewNode::File(b"x"))
                };
                match fs.create(p.as_bytes(), node, &a) {
                    Ok(()) => made += 1,
                    Err(transplant_fs::Error::NoSpace(why)) => {
                        assert!(why.contains("imaxpct"), "{why}");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    });
    assert_eq!(sb_field(&path, "icount"), 640);
    assert_eq!(sb_field(&path, "ifree"), 640 - made);
}
