//! Names changed in leaf and node directories (more entries than one directory block
//! holds), and block directories grown into leaf and node form, on filesystems made by
//! mkfs.xfs in four shapes (v5 defaults, v4, 8 KiB directory blocks with rmapbt, 1 KiB
//! blocks) and filled by a protofile. After every step `xfs_repair -n` must find
//! nothing; at the end our reader and the kernel (a read-only loop mount) must list
//! exactly the names expected. Names that share a hash are among them.

mod common;
use common::{have, is_root};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, Overlay, RawFile};
use transplant_fs::xfs::XfsFs;
use transplant_fs::{Filesystem, NewNode, SetAttrs};

/// The directory name hash, as `xfs_da_hashname` computes it.
fn hashname(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    let mut c = name.chunks_exact(4);
    for x in &mut c {
        h = (u32::from(x[0]) << 21)
            ^ (u32::from(x[1]) << 14)
            ^ (u32::from(x[2]) << 7)
            ^ u32::from(x[3])
            ^ h.rotate_left(28);
    }
    match *c.remainder() {
        [a, b, x] => (u32::from(a) << 14) ^ (u32::from(b) << 7) ^ u32::from(x) ^ h.rotate_left(21),
        [a, b] => (u32::from(a) << 7) ^ u32::from(b) ^ h.rotate_left(14),
        [a] => u32::from(a) ^ h.rotate_left(7),
        _ => h,
    }
}

/// Groups of four 8-byte names with one hash: flipping bits 4-5 of the fourth byte
/// moves the hash of the first word by what flipping bits 0-1 of the eighth undoes.
fn colliding(n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for g in 0..n {
        let (p, t) = (format!("c{:02}", g % 100), format!("{:03}", g));
        for (s, w) in [('a', 'd'), ('q', 'e'), ('A', 'f'), ('Q', 'g')] {
            out.push(format!("{p}{s}{t}{w}"));
        }
    }
    for q in out.chunks(4) {
        assert!(q
            .iter()
            .all(|x| hashname(x.as_bytes()) == hashname(q[0].as_bytes())));
    }
    out
}

fn long_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:05}-kernel-module-with-a-rather-long-file-name.ko.xz")
}

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

struct Image {
    _dir: tempfile::TempDir,
    path: PathBuf,
    label: String,
}

impl Image {
    /// mkfs.xfs with `opts`, filled from a protofile: directories of empty files.
    fn new(opts: &[&str], dirs: &[(String, Vec<String>)]) -> Image {
        Image::with_data(opts, dirs, false)
    }

    /// The same, the files holding a byte each when `data` (so the directory's blocks
    /// lie between theirs, one extent each).
    fn with_data(opts: &[&str], dirs: &[(String, Vec<String>)], data: bool) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, if data { &b"x"[..] } else { b"" }).unwrap();
        let mut text = String::from("/dev/null\n0 0\nd--755 0 0\n");
        for (d, names) in dirs {
            text.push_str(&format!("{d} d--755 0 0\n"));
            for n in names {
                text.push_str(&format!("{n} ---644 0 0 {}\n", empty.display()));
            }
            text.push_str("$\n");
        }
        text.push_str("$\n");
        let proto = dir.path().join("proto");
        std::fs::write(&proto, text).unwrap();
        let path = dir.path().join("fs.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
        let out = Command::new("mkfs.xfs")
            .args(["-q", "-f"])
            .args(opts)
            .arg("-p")
            .arg(&proto)
            .arg(&path)
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
        let img = Image {
            _dir: dir,
            path,
            label: format!("{opts:?}"),
        };
        img.repair("as made by mkfs.xfs");
        img
    }

    fn step(&self, what: &str, f: impl FnOnce(&XfsFs) -> transplant_fs::Result<()>) {
        let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&self.path, true).unwrap());
        let ov = Arc::new(Overlay::new(base));
        let fs = XfsFs::open_rw(ov.clone()).unwrap();
        let t = std::time::Instant::now();
        f(&fs).unwrap_or_else(|e| panic!("{}: {what}: {e}", self.label));
        fs.sync().unwrap();
        ov.commit().unwrap();
        drop(fs);
        let t1 = t.elapsed();
        self.repair(&format!("after {what}"));
        eprintln!(
            "{}: {what}: {t1:?} + repair {:?}",
            self.label,
            t.elapsed() - t1
        );
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
        let odd: Vec<&str> = text
            .lines()
            .map(|l| l.trim_start_matches([' ', '\t', '-']).trim())
            .filter(|l| !l.is_empty() && !REPAIR_CLEAN.iter().any(|ok| l.starts_with(ok)))
            .collect();
        assert!(
            out.status.success() && odd.is_empty(),
            "{}: {when}: xfs_repair -n:\n{text}",
            self.label
        );
    }

    /// The highest file block the directory maps, and its format.
    fn shape(&self, path: &str) -> (u64, String) {
        let out = Command::new("xfs_db")
            .arg("-r")
            .args([
                "-c",
                &format!("path {path}"),
                "-c",
                "p core.format",
                "-c",
                "bmap",
            ])
            .arg(&self.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let last = text
            .lines()
            .filter_map(|l| l.strip_prefix("data offset "))
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let off: u64 = w.next()?.parse().ok()?;
                let count: u64 = w.nth(4)?.parse().ok()?;
                Some(off + count - 1)
            })
            .max()
            .unwrap_or(0);
        (last, text)
    }

    fn names(&self, path: &str) -> BTreeSet<String> {
        let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&self.path, false).unwrap());
        let fs = XfsFs::open(base).unwrap();
        fs.read_dir(path.as_bytes())
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e.name).unwrap())
            .collect()
    }
}

/// Leaf form: the last mapped block is the leaf block at 32 GiB; node form maps free
/// index blocks from 64 GiB.
#[derive(Debug, PartialEq)]
enum Form {
    Leaf,
    Node,
}

fn form(img: &Image, path: &str, dirblk: u64, blocklog: u32) -> Form {
    let (last, text) = img.shape(path);
    let leaf = (32u64 << 30) >> blocklog;
    let free = (64u64 << 30) >> blocklog;
    if last >= free {
        Form::Node
    } else {
        assert_eq!(last, leaf + dirblk - 1, "{}: {path}: {text}", img.label);
        Form::Leaf
    }
}

/// Whether the directory's data blocks (below 32 GiB) have holes among them.
fn data_holes(img: &Image, path: &str, blocklog: u32) -> bool {
    let (_, text) = img.shape(path);
    let leaf = (32u64 << 30) >> blocklog;
    let mut ranges: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data offset "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let off: u64 = w.next()?.parse().ok()?;
            let count: u64 = w.nth(4)?.parse().ok()?;
            Some((off, off + count))
        })
        .filter(|r| r.0 < leaf)
        .collect();
    ranges.sort();
    ranges.windows(2).any(|w| w[0].1 < w[1].0)
}

fn create(fs: &XfsFs, path: &str) -> transplant_fs::Result<()> {
    fs.create(path.as_bytes(), NewNode::File(b""), &SetAttrs::default())
}

fn run(opts: &[&str], blocklog: u32, dirblk: u64, kernel: bool) {
    if !have("mkfs.xfs") || !have("xfs_repair") || !have("xfs_db") {
        return;
    }
    let t0 = std::time::Instant::now();
    let leaf_names: Vec<String> = (0..300).map(|i| format!("file-{i:04}")).collect();
    let bsize = (1usize << blocklog) * dirblk as usize;
    // Past what one directory block holds, and what one leaf block indexes.
    let past_block = bsize / 40;
    let past_leaf = bsize / 8 + 100;
    let node_names: Vec<String> = (0..past_leaf + 400).map(|i| long_name("m", i)).collect();
    let small_names: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    let doomed: Vec<String> = (0..past_leaf).map(|i| long_name("doomed", i)).collect();
    // Inodes to free first (the writer does not allocate inode chunks), in small
    // directories so that removing them is quick.
    let spare: Vec<String> = (0..40).map(|i| format!("x{i:02}")).collect();
    let nspare = (80 + 280 + 300 + past_block + past_leaf + 100) / 40;
    let mut dirs = vec![
        ("leaf".to_string(), leaf_names.clone()),
        ("node".to_string(), node_names.clone()),
        ("small".to_string(), small_names.clone()),
        ("doomed".to_string(), doomed.clone()),
    ];
    for d in 0..nspare {
        dirs.push((format!("spare{d:02}"), spare.clone()));
    }
    let img = Image::new(opts, &dirs);
    img.step("free inodes", |fs| {
        for d in 0..nspare {
            for n in &spare {
                fs.remove(format!("/spare{d:02}/{n}").as_bytes())?;
            }
        }
        Ok(())
    });
    assert_eq!(form(&img, "/leaf", dirblk, blocklog), Form::Leaf);
    assert_eq!(form(&img, "/node", dirblk, blocklog), Form::Node);
    let mut leaf: BTreeSet<String> = leaf_names.iter().cloned().collect();
    let mut node: BTreeSet<String> = node_names.iter().cloned().collect();
    let mut small: BTreeSet<String> = small_names.iter().cloned().collect();
    let coll = colliding(40);
    assert_eq!(form(&img, "/doomed", dirblk, blocklog), Form::Node);
    img.step("empty a node directory and remove it", |fs| {
        for n in &doomed {
            fs.remove(format!("/doomed/{n}").as_bytes())?;
        }
        fs.remove(b"/doomed")
    });

    img.step("create and remove in a leaf directory", |fs| {
        for n in coll.iter().take(80) {
            create(fs, &format!("/leaf/{n}"))?;
            leaf.insert(n.clone());
        }
        for n in leaf_names.iter().step_by(3) {
            fs.remove(format!("/leaf/{n}").as_bytes())?;
            leaf.remove(n);
        }
        // One of each colliding group goes again.
        for n in coll.iter().take(80).step_by(4) {
            fs.remove(format!("/leaf/{n}").as_bytes())?;
            leaf.remove(n);
        }
        Ok(())
    });
    img.step("rename in and across leaf and node directories", |fs| {
        for n in leaf_names.iter().skip(1).step_by(3).take(40) {
            let to = format!("{n}.renamed-with-a-longer-name");
            fs.rename(
                format!("/leaf/{n}").as_bytes(),
                format!("/leaf/{to}").as_bytes(),
            )?;
            leaf.remove(n);
            leaf.insert(to);
        }
        for n in leaf_names.iter().skip(2).step_by(3).take(20) {
            fs.rename(
                format!("/leaf/{n}").as_bytes(),
                format!("/node/{n}").as_bytes(),
            )?;
            leaf.remove(n);
            node.insert(n.clone());
        }
        for n in node_names.iter().take(20) {
            fs.rename(
                format!("/node/{n}").as_bytes(),
                format!("/leaf/{n}").as_bytes(),
            )?;
            node.remove(n);
            leaf.insert(n.clone());
        }
        Ok(())
    });
    img.step("grow a node directory (leaf blocks split)", |fs| {
        for i in 0..200 {
            let n = long_name("new", i);
            create(fs, &format!("/node/{n}"))?;
            node.insert(n);
        }
        for n in coll.iter().skip(80) {
            create(fs, &format!("/node/{n}"))?;
            node.insert(n.clone());
        }
        Ok(())
    });
    img.step("shrink a node directory", |fs| {
        for n in node_names.iter().skip(20).step_by(5) {
            fs.remove(format!("/node/{n}").as_bytes())?;
            node.remove(n);
        }
        Ok(())
    });
    img.step("empty whole data blocks", |fs| {
        for n in leaf_names.iter().skip(150) {
            if leaf.remove(n) {
                fs.remove(format!("/leaf/{n}").as_bytes())?;
            }
        }
        // All but the first and last of the names mkfs put there: short names added
        // since may sit in the free tails of any block.
        let keep: BTreeSet<&String> = node_names
            .iter()
            .take(200)
            .chain(node_names.iter().skip(800))
            .collect();
        let doomed: Vec<String> = node.iter().filter(|n| !keep.contains(n)).cloned().collect();
        for n in doomed {
            fs.remove(format!("/node/{n}").as_bytes())?;
            node.remove(&n);
        }
        Ok(())
    });
    assert!(
        data_holes(&img, "/node", blocklog),
        "{}: {}",
        img.label,
        img.shape("/node").1
    );
    img.step("fill the holes again", |fs| {
        for i in 0..150 {
            let (a, b) = (long_name("refill", i), format!("refill-{i}"));
            create(fs, &format!("/node/{a}"))?;
            node.insert(a);
            create(fs, &format!("/leaf/{b}"))?;
            leaf.insert(b);
        }
        Ok(())
    });
    img.step("grow a block directory into leaf form", |fs| {
        for i in 0..past_block {
            let n = format!("grown-{i:03}-a-name-of-some-length");
            create(fs, &format!("/small/{n}"))?;
            small.insert(n);
        }
        Ok(())
    });
    assert_eq!(form(&img, "/small", dirblk, blocklog), Form::Leaf);
    img.step("grow a leaf directory into node form", |fs| {
        for i in 0..past_leaf {
            let n = format!("more-{i:04}");
            create(fs, &format!("/small/{n}"))?;
            small.insert(n);
        }
        Ok(())
    });
    assert_eq!(form(&img, "/small", dirblk, blocklog), Form::Node);
    img.step("a subdirectory in a node directory", |fs| {
        fs.create(b"/small/sub", NewNode::Dir, &SetAttrs::default())?;
        create(fs, "/small/sub/x")?;
        fs.rename(b"/small/sub", b"/small/sub-renamed")?;
        small.insert("sub-renamed".into());
        // Over an existing name: the old file goes.
        fs.rename(b"/small/more-0000", b"/small/more-0001")?;
        small.remove("more-0000");
        Ok(())
    });
    for (d, want) in [("/leaf", &leaf), ("/node", &node), ("/small", &small)] {
        assert_eq!(&img.names(d), want, "{}: {d}", img.label);
    }
    if !kernel {
        // This kernel may not mount the format (v4 is deprecated).
    } else if is_root() && have("losetup") {
        kernel_lists(&img, &[("leaf", &leaf), ("node", &node), ("small", &small)]);
    } else if std::env::var_os("CI").is_some() {
        panic!("the XFS kernel check needs root (loop mounts) in CI");
    }
    eprintln!("{}: {:?}", img.label, t0.elapsed());
}

/// A read-only loop mount of the image lists the same names.
fn kernel_lists(img: &Image, dirs: &[(&str, &BTreeSet<String>)]) {
    let mnt = img.path.with_extension("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("losetup")
        .args(["-r", "-f", "--show"])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let m = Command::new("mount")
        .args(["-o", "ro", &dev])
        .arg(&mnt)
        .output()
        .unwrap();
    let listed: Vec<(String, BTreeSet<String>)> = if m.status.success() {
        dirs.iter()
            .map(|(d, _)| {
                let names = std::fs::read_dir(mnt.join(d))
                    .map(|r| {
                        r.map(|e| e.unwrap().file_name().into_string().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                (d.to_string(), names)
            })
            .collect()
    } else {
        Vec::new()
    };
    // Lookups by name go through the hash index, not readdir.
    let looked: Vec<bool> = dirs
        .iter()
        .flat_map(|(d, want)| want.iter().step_by(7).map(move |n| Path::new(d).join(n)))
        .map(|p| mnt.join(p).exists())
        .collect();
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(
        m.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&m.stderr)
    );
    for ((d, got), (_, want)) in listed.iter().zip(dirs) {
        assert_eq!(got, *want, "{}: kernel lists /{d}", img.label);
    }
    assert!(
        looked.iter().all(|&x| x),
        "{}: a kernel lookup failed",
        img.label
    );
}

#[test]
fn v5_leaf_and_node() {
    run(&[], 12, 1, true);
}

#[test]
fn v4_leaf_and_node() {
    run(&["-m", "crc=0"], 12, 1, false);
}

#[test]
fn dir_blocks_of_8k() {
    run(&["-n", "size=8192", "-m", "rmapbt=1"], 12, 2, true);
}

#[test]
fn blocks_of_1k() {
    run(&["-b", "size=1024"], 10, 4, true);
}

/// A node directory whose block map is a btree (its blocks among its files' blocks),
/// with reverse mapping on.
#[test]
fn btree_mapped_directory() {
    if !have("mkfs.xfs") || !have("xfs_repair") || !have("xfs_db") {
        return;
    }
    let names: Vec<String> = (0..1200).map(|i| long_name("f", i)).collect();
    let spare: Vec<String> = (0..200).map(|i| format!("x{i:03}")).collect();
    let img = Image::with_data(
        &["-m", "rmapbt=1"],
        &[("d".into(), names.clone()), ("spare".into(), spare.clone())],
        true,
    );
    let (_, text) = img.shape("/d");
    assert!(text.contains("(btree)"), "{text}");
    let mut want: BTreeSet<String> = names.iter().cloned().collect();
    img.step("free inodes", |fs| {
        for n in &spare {
            fs.remove(format!("/spare/{n}").as_bytes())?;
        }
        Ok(())
    });
    img.step("grow and shrink a btree-mapped directory", |fs| {
        for i in 0..150 {
            let n = long_name("g", i);
            create(fs, &format!("/d/{n}"))?;
            want.insert(n);
        }
        for n in names.iter().step_by(4) {
            fs.remove(format!("/d/{n}").as_bytes())?;
            want.remove(n);
        }
        Ok(())
    });
    assert_eq!(img.names("/d"), want);
}

/// A shortform directory in a large inode holds more than one directory block does:
/// it goes straight to leaf form.
#[test]
fn shortform_straight_to_leaf() {
    if !have("mkfs.xfs") || !have("xfs_repair") || !have("xfs_db") {
        return;
    }
    let names: Vec<String> = (0..166)
        .map(|i| {
            format!(
                "{}{}",
                (b'a' + (i / 26) as u8) as char,
                (b'a' + (i % 26) as u8) as char
            )
        })
        .collect();
    let spare: Vec<String> = (0..200).map(|i| format!("x{i:03}")).collect();
    let img = Image::new(&["-i", "size=2048"], &[("spare".into(), spare.clone())]);
    img.step("fill a new directory", |fs| {
        for n in &spare {
            fs.remove(format!("/spare/{n}").as_bytes())?;
        }
        // 165 such names fit in a 4 KiB block (and in the 2 KiB inode).
        fs.create(b"/sf", NewNode::Dir, &SetAttrs::default())?;
        for n in names.iter().take(165) {
            create(fs, &format!("/sf/{n}"))?;
        }
        Ok(())
    });
    let (_, text) = img.shape("/sf");
    assert!(text.contains("(local)"), "{text}");
    img.step("one more name", |fs| {
        create(fs, &format!("/sf/{}", names[165]))
    });
    assert_eq!(form(&img, "/sf", 1, 12), Form::Leaf);
    let want: BTreeSet<String> = names.into_iter().collect();
    assert_eq!(img.names("/sf"), want);
}

/// Directories the kernel grew and thinned (stale leaf entries, holes among the data
/// blocks, free index entries of freed blocks), then changed here.
#[test]
fn kernel_made_directories() {
    let root = is_root();
    if !root && std::env::var_os("CI").is_some() {
        panic!("the XFS kernel test needs root (loop mounts) in CI");
    }
    if !root || !have("mkfs.xfs") || !have("xfs_repair") || !have("losetup") {
        return;
    }
    let img = Image::new(&[], &[]);
    let mnt = img.path.with_extension("rw");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let m = Command::new("mount").arg(&dev).arg(&mnt).status().unwrap();
    let mut want: Vec<(&str, BTreeSet<String>)> =
        vec![("n", BTreeSet::new()), ("l", BTreeSet::new())];
    if m.success() {
        for (d, count, keep) in [("n", 3000, 2), ("l", 400, 4)] {
            std::fs::create_dir(mnt.join(d)).unwrap();
            for i in 0..count {
                std::fs::write(mnt.join(d).join(long_name("k", i)), b"").unwrap();
            }
            for i in 0..count {
                let n = long_name("k", i);
                if i % keep == 0 {
                    want.iter_mut().find(|w| w.0 == d).unwrap().1.insert(n);
                } else {
                    std::fs::remove_file(mnt.join(d).join(n)).unwrap();
                }
            }
        }
        let _ = Command::new("umount").arg(&mnt).status();
    }
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(m.success(), "mount failed");
    img.repair("as the kernel left it");
    assert_eq!(form(&img, "/n", 1, 12), Form::Node);
    assert_eq!(form(&img, "/l", 1, 12), Form::Leaf);
    img.step(
        "create, remove and rename in kernel-made directories",
        |fs| {
            for i in 0..200 {
                let n = long_name("ours", i);
                create(fs, &format!("/n/{n}"))?;
                want[0].1.insert(n.clone());
                create(fs, &format!("/l/{n}"))?;
                want[1].1.insert(n);
            }
            for i in (0..400).step_by(8) {
                let n = long_name("k", i);
                fs.rename(format!("/l/{n}").as_bytes(), format!("/n/{n}").as_bytes())?;
                want[1].1.remove(&n);
                want[0].1.insert(n);
            }
            for i in (0..3000).step_by(6) {
                let n = long_name("k", i);
                fs.remove(format!("/n/{n}").as_bytes())?;
                want[0].1.remove(&n);
            }
            Ok(())
        },
    );
    for (d, w) in &want {
        assert_eq!(&img.names(&format!("/{d}")), w, "/{d}");
    }
    kernel_lists(&img, &[("n", &want[0].1), ("l", &want[1].1)]);
}
