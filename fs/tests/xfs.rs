//! XFS read against the kernel: images made by mkfs.xfs in several shapes, populated on
//! a loop mount (v5) or by a mkfs protofile (v4, which this kernel no longer mounts),
//! then every entry's kind, mode, owners, size, times, content, link target and extended
//! attributes read through `XfsFs` must equal what the kernel showed (or the protofile
//! put in). Needs root, loop devices, xfsprogs and attr (getfattr/setfattr).

mod common;
use common::{have, Mounted};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, MemDev};
use transplant_fs::xfs::{LogState, XfsFs, XfsOptions};
use transplant_fs::{resolve_path, FileKind, Filesystem};

fn can_mount() -> bool {
    let root = unsafe_free_is_root();
    if !root && std::env::var_os("CI").is_some() {
        panic!("XFS tests need root (loop mounts) in CI");
    }
    root && have("mkfs.xfs") && have("getfattr") && have("setfattr") && have("xfs_io")
}

fn unsafe_free_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// mkfs.xfs refuses filesystems under 300 MB unless it believes it runs under fstests.
fn mkfs(img: &Path, size_mb: u64, opts: &[&str]) {
    let f = std::fs::File::create(img).unwrap();
    f.set_len(size_mb << 20).unwrap();
    drop(f);
    run(Command::new("mkfs.xfs")
        .args(["-q", "-f"])
        .args(opts)
        .arg(img)
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1"));
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn setfattr(path: &Path, name: &str, value: &str) {
    run(Command::new("setfattr")
        .args(["-h", "-n", name, "-v", value])
        .arg(path));
}

/// Fills a mounted filesystem with every shape the reader must handle. `node_entries`
/// sizes the directory that must reach node form.
fn populate(root: &Path, node_entries: usize) {
    let p = |s: &str| root.join(s);
    std::fs::create_dir_all(p("etc")).unwrap();
    std::fs::write(p("etc/fstab"), b"UUID=x / xfs defaults 0 0\n").unwrap();
    std::fs::write(p("etc/os-release"), b"ID=rocky\nVERSION_ID=9.4\n").unwrap();
    setfattr(
        &p("etc/fstab"),
        "security.selinux",
        "system_u:object_r:etc_t:s0",
    );
    setfattr(&p("etc"), "security.selinux", "system_u:object_r:etc_t:s0");
    for (i, n) in [0usize, 1, 4095, 4096, 4097, 70_000].iter().enumerate() {
        std::fs::write(p(&format!("small{i}")), bytes(i as u64, *n)).unwrap();
    }
    std::fs::write(p("big.bin"), bytes(99, 3 << 20)).unwrap();
    std::fs::hard_link(p("big.bin"), p("big.link")).unwrap();
    // Holes: data at 0, 1 MiB and 10 MiB + 5.
    let f = std::fs::File::create(p("sparse")).unwrap();
    for (k, off) in [0u64, 1 << 20, (10 << 20) + 5].iter().enumerate() {
        f.write_all_at(&bytes(k as u64 + 7, 3000), *off).unwrap();
    }
    drop(f);
    // 400 separate extents: more than an inode holds, so the fork becomes a btree.
    let f = std::fs::File::create(p("frag")).unwrap();
    for k in 0..400u64 {
        f.write_all_at(&bytes(k, 4096), k * 8192).unwrap();
        f.sync_data().unwrap();
    }
    drop(f);
    // Preallocated (unwritten) extents read as zeroes around the written part.
    run(Command::new("xfs_io")
        .args(["-f", "-c", "falloc 0 1m", "-c", "pwrite -S 0x5a 65536 4096"])
        .arg(p("prealloc")));
    for (name, n) in [
        ("d_sf", 3),
        ("d_block", 40),
        ("d_leaf", 300),
        ("d_node", node_entries),
    ] {
        std::fs::create_dir(p(name)).unwrap();
        for k in 0..n {
            let f = p(&format!("{name}/entry-with-a-longish-name-{k:05}"));
            if k % 3 == 0 {
                std::fs::create_dir(f).unwrap();
            } else {
                std::fs::write(f, format!("{k}\n")).unwrap();
            }
        }
    }
    std::os::unix::fs::symlink("small1", p("l_short")).unwrap();
    std::os::unix::fs::symlink("/etc/fstab", p("l_abs")).unwrap();
    let long = format!("/{}", "long-component/".repeat(40));
    std::os::unix::fs::symlink(&long, p("l_long")).unwrap();
    std::os::unix::fs::symlink(format!("/{}", "x".repeat(1022)), p("l_max")).unwrap();
    setfattr(
        &p("l_short"),
        "security.selinux",
        "system_u:object_r:bin_t:s0",
    );
    run(Command::new("mknod").arg(p("cdev")).args(["c", "1", "3"]));
    run(Command::new("mknod").arg(p("bdev")).args(["b", "7", "0"]));
    run(Command::new("mkfifo").arg(p("fifo")));
    drop(std::os::unix::net::UnixListener::bind(p("sock")).unwrap());
    std::fs::write(p("suid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(p("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir(p("tmp")).unwrap();
    std::fs::set_permissions(p("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::chown(p("small1"), Some(1000), Some(1001)).unwrap();
    std::os::unix::fs::lchown(p("l_short"), Some(4_000_000_000), Some(7)).unwrap();
    run(Command::new("touch")
        .args(["-h", "-d", "2001-02-03 04:05:06.123456789"])
        .arg(p("small2")));
    run(Command::new("touch")
        .args(["-d", "2100-01-01 00:00:01.5"])
        .arg(p("small3")));
    run(Command::new("touch")
        .args(["-d", "1969-12-31 23:59:50"])
        .arg(p("small4")));
    // Attributes: a few (shortform), many (leaf), very many (node), a remote value.
    std::fs::write(p("attr_many"), b"m").unwrap();
    for k in 0..40 {
        setfattr(&p("attr_many"), &format!("user.k{k}"), &"v".repeat(60));
    }
    std::fs::write(p("attr_remote"), b"r").unwrap();
    setfattr(&p("attr_remote"), "user.big", &"R".repeat(9000));
    setfattr(&p("attr_remote"), "trusted.t", "secret");
    std::fs::write(p("attr_node"), b"n").unwrap();
    let names: Vec<String> = (0..700).map(|k| format!("user.attribute-{k:04}")).collect();
    // setfattr --restore takes them all in one process.
    let mut dump = format!("# file: {}\n", p("attr_node").display());
    for n in &names {
        dump.push_str(&format!("{n}=\"value-{n}\"\n"));
    }
    let restore = p("../restore.txt");
    std::fs::write(&restore, dump).unwrap();
    run(Command::new("setfattr").arg(format!("--restore={}", restore.display())));
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    kind: FileKind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, u32),
    atime: (i64, u32),
    data: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    children: Option<Vec<Vec<u8>>>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn kind_of(ft: std::fs::FileType) -> FileKind {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_char_device() {
        FileKind::CharDevice
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else {
        FileKind::File
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// All extended attributes under `root`, per guest path, as the kernel shows them.
fn kernel_xattrs(root: &Path) -> BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>> {
    let out = Command::new("getfattr")
        .args(["-R", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(root)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut all = BTreeMap::new();
    let mut cur: Option<Vec<u8>> = None;
    let prefix = root.to_str().unwrap().trim_end_matches('/');
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            let rel = f.strip_prefix(prefix).unwrap();
            let rel = if rel.is_empty() { "/" } else { rel };
            cur = Some(rel.as_bytes().to_vec());
        } else if let Some((n, v)) = line.split_once('=') {
            let v = v.strip_prefix("0x").unwrap();
            all.entry(cur.clone().unwrap())
                .or_insert_with(BTreeMap::new)
                .insert(n.as_bytes().to_vec(), unhex(v));
        }
    }
    all
}

/// The kernel's view of every entry under `root`.
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Rec> {
    let xattrs = kernel_xattrs(root);
    let mut out = BTreeMap::new();
    let mut todo = vec![(root.to_path_buf(), b"/".to_vec())];
    while let Some((host, guest)) = todo.pop() {
        let m = std::fs::symlink_metadata(&host).unwrap();
        let kind = kind_of(m.file_type());
        let mut rec = Rec {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec() as u32),
            atime: (m.atime(), m.atime_nsec() as u32),
            data: None,
            link: None,
            children: None,
            xattrs: xattrs.get(&guest).cloned().unwrap_or_default(),
        };
        match kind {
            FileKind::File => rec.data = Some(std::fs::read(&host).unwrap()),
            FileKind::Symlink => {
                use std::os::unix::ffi::OsStrExt;
                rec.link = Some(
                    std::fs::read_link(&host)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            }
            FileKind::Dir => {
                let mut names = Vec::new();
                for e in std::fs::read_dir(&host).unwrap() {
                    use std::os::unix::ffi::OsStrExt;
                    let e = e.unwrap();
                    let name = e.file_name().as_bytes().to_vec();
                    let mut g = guest.clone();
                    if g.len() > 1 {
                        g.push(b'/');
                    }
                    g.extend_from_slice(&name);
                    todo.push((e.path(), g));
                    names.push(name);
                }
                names.sort();
                rec.children = Some(names);
            }
            _ => {}
        }
        out.insert(guest, rec);
    }
    out
}

/// Reads `path` whole in uneven chunks, so reads start and end inside blocks.
fn read_all(fs: &XfsFs, path: &[u8], size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 12_345];
    loop {
        let n = fs.read(path, out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        assert!(out.len() as u64 <= size);
    }
    out
}

/// What `XfsFs` shows of every path in `want`; compares times only when `times`.
fn compare(fs: &XfsFs, want: &BTreeMap<Vec<u8>, Rec>, times: bool, xattrs: bool) {
    for (path, w) in want {
        let show = String::from_utf8_lossy(path);
        let m = fs
            .lstat(path)
            .unwrap_or_else(|e| panic!("lstat {show}: {e}"));
        assert_eq!(m.kind, w.kind, "{show}");
        assert_eq!((m.mode, m.uid, m.gid), (w.mode, w.uid, w.gid), "{show}");
        if w.kind != FileKind::Dir {
            assert_eq!(m.size, w.size, "{show}");
        }
        if times {
            assert_eq!((m.mtime.secs, m.mtime.nanos), w.mtime, "mtime {show}");
            assert_eq!((m.atime.secs, m.atime.nanos), w.atime, "atime {show}");
        }
        if let Some(d) = &w.data {
            let got = read_all(fs, path, m.size);
            assert!(got == *d, "content of {show} differs");
        }
        if let Some(l) = &w.link {
            assert_eq!(&fs.read_link(path).unwrap(), l, "{show}");
        }
        if let Some(c) = &w.children {
            let mut got: Vec<Vec<u8>> = fs
                .read_dir(path)
                .unwrap_or_else(|e| panic!("read_dir {show}: {e}"))
                .into_iter()
                .map(|e| {
                    let mut p = path.clone();
                    if p.len() > 1 {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&e.name);
                    assert_eq!(
                        want[&p].kind,
                        e.kind,
                        "entry kind of {}",
                        String::from_utf8_lossy(&p)
                    );
                    e.name
                })
                .collect();
            got.sort();
            assert_eq!(&got, c, "listing of {show}");
        }
        if xattrs {
            let got: BTreeMap<Vec<u8>, Vec<u8>> = fs.xattrs(path).unwrap().into_iter().collect();
            assert_eq!(got, w.xattrs, "xattrs of {show}");
        }
    }
}

fn open(img: &Path) -> XfsFs {
    let dev = transplant_formats::open_image(img, &Default::default()).unwrap();
    XfsFs::open(dev as Arc<dyn BlockDev>).unwrap()
}

/// mkfs with `opts`, populate on a loop mount, snapshot through a read-only mount, then
/// compare what `XfsFs` reads from the unmounted image.
fn round_trip(opts: &[&str], size_mb: u64, node_entries: usize) -> (tempfile::TempDir, XfsFs) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    let mnt = dir.path().join("mnt");
    mkfs(&img, size_mb, opts);
    {
        let _m = Mounted::new(&img, &mnt, false);
        populate(&mnt, node_entries);
    }
    let want = {
        let _m = Mounted::new(&img, &mnt, true);
        snapshot(&mnt)
    };
    let fs = open(&img);
    assert_eq!(fs.log_state(), &LogState::Clean);
    compare(&fs, &want, true, true);
    (dir, fs)
}

/// What xfs_db prints for `fields` of the inode at `path`, and its block map.
fn xfs_db(img: &Path, path: &str, cmds: &[&str]) -> String {
    let mut c = Command::new("xfs_db");
    c.arg("-r").args(["-c", &format!("path {path}")]);
    for x in cmds {
        c.args(["-c", x]);
    }
    let out = c.arg(img).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn v5_defaults_every_shape() {
    if !can_mount() {
        return;
    }
    let (d, fs) = round_trip(&["-L", "rootfs"], 160, 10_000);
    // The shapes this test claims to cover, as xfs_db sees them.
    let img = d.path().join("x.img");
    let fmt = |p: &str| xfs_db(&img, p, &["print core.format core.aformat"]);
    assert!(
        fmt("/frag").contains("core.format = 3 (btree)"),
        "{}",
        fmt("/frag")
    );
    assert!(fmt("/d_sf").contains("core.format = 1 (local)"));
    assert!(fmt("/etc/fstab").contains("core.aformat = 1 (local)"));
    let bmap = |p: &str, a: &str| xfs_db(&img, p, &[&format!("bmap {a}")]);
    // Node form: a free-index block at 64 GiB (block 16777216); leaf form: a leaf block
    // at 32 GiB and none there; block form: one block.
    assert!(bmap("/d_node", "").contains("offset 16777216"));
    assert!(bmap("/d_leaf", "").contains("offset 8388608"));
    assert!(!bmap("/d_leaf", "").contains("offset 16777216"));
    assert_eq!(bmap("/d_block", "").lines().count(), 1);
    // Attribute forks: one leaf block, a multi-block dabtree.
    assert!(bmap("/attr_many", "-a").contains("count 1 "));
    assert!(
        bmap("/attr_node", "-a").lines().count() > 1
            || !bmap("/attr_node", "-a").contains("count 1 ")
    );
    let info = fs.info();
    assert_eq!(info.kind, "xfs");
    assert_eq!(info.label.as_deref(), Some("rootfs"));
    assert_eq!(
        fs.get_xattr(b"/etc/fstab", b"security.selinux")
            .unwrap()
            .as_deref(),
        Some(&b"system_u:object_r:etc_t:s0"[..])
    );
    assert_eq!(fs.get_xattr(b"/etc/fstab", b"user.none").unwrap(), None);
    // Guest symlinks resolve inside the filesystem.
    assert_eq!(resolve_path(&fs, b"/l_abs", true).unwrap(), b"/etc/fstab");
    assert_eq!(
        fs.lstat(b"/d_node/entry-with-a-longish-name-09998")
            .unwrap()
            .kind,
        FileKind::File
    );
    assert!(matches!(
        fs.lstat(b"/d_node/missing"),
        Err(transplant_fs::Error::NotFound(_))
    ));
    assert!(matches!(
        fs.lstat(b"/small1/x"),
        Err(transplant_fs::Error::NotADirectory(_))
    ));
    assert!(matches!(
        fs.read(b"/etc", 0, &mut [0; 4]),
        Err(transplant_fs::Error::IsADirectory(_))
    ));
}

#[test]
fn v5_small_blocks() {
    if !can_mount() {
        return;
    }
    round_trip(&["-b", "size=1024"], 128, 1500);
}

#[test]
fn v5_large_blocks_and_directory_blocks() {
    if !can_mount() {
        return;
    }
    round_trip(&["-b", "size=65536"], 320, 1500);
    round_trip(&["-n", "size=65536"], 128, 3000);
}

#[test]
fn v5_reflink_rmapbt_and_shared_extents() {
    if !can_mount() || !have("cp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    let mnt = dir.path().join("mnt");
    mkfs(&img, 128, &["-m", "reflink=1,rmapbt=1", "-i", "size=2048"]);
    {
        let _m = Mounted::new(&img, &mnt, false);
        populate(&mnt, 600);
        run(Command::new("cp")
            .arg("--reflink=always")
            .arg(mnt.join("big.bin"))
            .arg(mnt.join("big.reflink")));
        // Change the copy's middle: shared, then unshared blocks.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("big.reflink"))
            .unwrap();
        f.write_all_at(b"changed", 1 << 20).unwrap();
    }
    let want = {
        let _m = Mounted::new(&img, &mnt, true);
        snapshot(&mnt)
    };
    compare(&open(&img), &want, true, true);
}

/// Writes a protofile for `src` (a host tree of files, dirs and symlinks) with the
/// modes and owners given per name.
fn protofile(src: &Path, out: &mut String, depth: usize) {
    let mut names: Vec<_> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let name = p.file_name().unwrap().to_str().unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let pad = " ".repeat(depth);
        let perm = m.mode() & 0o777;
        if m.is_dir() {
            out.push_str(&format!("{pad}{name} d--{perm:03o} {} {}\n", 3, 4));
            protofile(&p, out, depth + 1);
            out.push_str(&format!("{pad}$\n"));
        } else if m.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            out.push_str(&format!("{pad}{name} l--777 0 0 {}\n", t.display()));
        } else {
            out.push_str(&format!(
                "{pad}{name} -u-{perm:03o} 1000 100 {}\n",
                p.display()
            ));
        }
    }
}

#[test]
fn v4_from_protofile_with_and_without_ftype() {
    if !have("mkfs.xfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/fstab"), b"/dev/sda1 / xfs defaults 0 0\n").unwrap();
    std::fs::write(src.join("big"), bytes(5, 2 << 20)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    for (name, n) in [
        ("d_sf", 4),
        ("d_block", 50),
        ("d_leaf", 300),
        ("d_node", 3000),
    ] {
        std::fs::create_dir(src.join(name)).unwrap();
        for k in 0..n {
            std::fs::write(
                src.join(format!("{name}/file-number-{k:05}")),
                format!("{k}"),
            )
            .unwrap();
        }
    }
    std::os::unix::fs::symlink("etc/fstab", src.join("l_short")).unwrap();
    std::os::unix::fs::symlink("/a".repeat(300), src.join("l_long")).unwrap();
    let mut proto = String::from("dummy\n0 0\nd--755 0 0\n");
    protofile(&src, &mut proto, 1);
    proto.push_str(" cdev c--644 0 0 1 3\n fifo p--600 5 6\n$\n");
    let pf = dir.path().join("proto");
    std::fs::write(&pf, &proto).unwrap();
    for opts in [&["-m", "crc=0"][..], &["-m", "crc=0", "-n", "ftype=0"]] {
        let img = dir.path().join("v4.img");
        let mut o = opts.to_vec();
        let pfs = pf.to_str().unwrap();
        o.extend(["-p", pfs]);
        mkfs(&img, 64, &o);
        let fs = open(&img);
        assert_eq!(fs.log_state(), &LogState::Clean);
        // Compare with the source tree: contents, kinds, listings, link targets.
        let want = snapshot(&src);
        for (path, w) in &want {
            let m = fs.lstat(path).unwrap();
            assert_eq!(m.kind, w.kind, "{}", String::from_utf8_lossy(path));
            match w.kind {
                FileKind::File => {
                    assert_eq!((m.mode, m.uid, m.gid), (0o4000 | w.mode, 1000, 100));
                    assert!(read_all(&fs, path, m.size) == *w.data.as_ref().unwrap());
                }
                FileKind::Symlink => {
                    assert_eq!(&fs.read_link(path).unwrap(), w.link.as_ref().unwrap())
                }
                FileKind::Dir => {
                    let mut got: Vec<_> = fs
                        .read_dir(path)
                        .unwrap()
                        .into_iter()
                        .map(|e| e.name)
                        .collect();
                    got.sort();
                    let mut c = w.children.clone().unwrap();
                    if path == b"/" {
                        c.extend([b"cdev".to_vec(), b"fifo".to_vec()]);
                        c.sort();
                    }
                    assert_eq!(got, c);
                }
                _ => {}
            }
        }
        assert_eq!(fs.lstat(b"/cdev").unwrap().kind, FileKind::CharDevice);
        let f = fs.lstat(b"/fifo").unwrap();
        assert_eq!(
            (f.kind, f.mode, f.uid, f.gid),
            (FileKind::Fifo, 0o600, 5, 6)
        );
        assert!(fs
            .read_dir(b"/")
            .unwrap()
            .iter()
            .any(|e| e.name == b"cdev" && e.kind == FileKind::CharDevice));
    }
}

#[test]
fn dirty_log_is_replayed_then_clean_after_kernel_replay() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    let mnt = dir.path().join("mnt");
    mkfs(&img, 64, &[]);
    {
        let _m = Mounted::new(&img, &mnt, false);
        std::fs::write(mnt.join("before"), b"synced").unwrap();
        run(&mut Command::new("sync"));
        std::fs::create_dir(mnt.join("after")).unwrap();
        let f = std::fs::File::create(mnt.join("after/file")).unwrap();
        f.write_all_at(b"in the log", 0).unwrap();
        // Data in place, the inode and directories only in the log.
        f.sync_all().unwrap();
        // Flush the log, then stop: the metadata is only in the log.
        run(Command::new("xfs_io")
            .args(["-x", "-c", "shutdown -f"])
            .arg(&mnt));
    }
    let dev =
        || transplant_formats::open_image(&img, &Default::default()).unwrap() as Arc<dyn BlockDev>;
    // Replayed in memory at open (fs/tests/xfs_log.rs compares it with the kernel's).
    let fs = XfsFs::open(dev()).unwrap();
    assert!(matches!(fs.log_state(), LogState::Replayed { .. }));
    let mut buf = [0u8; 64];
    let n = fs.read(b"/after/file", 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"in the log");
    let fs = XfsFs::open_with(
        dev(),
        XfsOptions {
            allow_dirty_log: true,
        },
    )
    .unwrap();
    assert!(matches!(fs.log_state(), LogState::Dirty(_)));
    assert!(
        fs.lstat(b"/after").is_err(),
        "as it stands, without the log"
    );
    drop(fs);
    // The kernel replays it at mount; afterwards it is clean and complete.
    drop(Mounted::new(&img, &mnt, false));
    let fs = open(&img);
    assert_eq!(fs.log_state(), &LogState::Clean);
    let mut buf = [0u8; 64];
    let n = fs.read(b"/after/file", 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"in the log");
}

#[test]
fn wrapped_log_after_many_mounts_is_clean() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    let mnt = dir.path().join("mnt");
    mkfs(&img, 64, &["-l", "size=6m"]);
    for round in 0..3 {
        let _m = Mounted::new(&img, &mnt, false);
        for k in 0..2000 {
            std::fs::write(mnt.join(format!("f{k}")), format!("{round}")).unwrap();
        }
        for k in 0..2000 {
            std::fs::remove_file(mnt.join(format!("f{k}"))).unwrap();
        }
    }
    let fs = open(&img);
    assert_eq!(fs.log_state(), &LogState::Clean);
    assert!(fs.read_dir(b"/").unwrap().is_empty());
}

#[test]
fn hostile_images_fail_cleanly() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    let mnt = dir.path().join("mnt");
    mkfs(&img, 64, &[]);
    {
        let _m = Mounted::new(&img, &mnt, false);
        populate(&mnt, 600);
    }
    let data = std::fs::read(&img).unwrap();
    // Truncated: refused at open, naming the sizes.
    let short: Arc<dyn BlockDev> =
        Arc::new(MemDev::new("short.img", data[..data.len() / 2].to_vec()));
    let e = XfsFs::open(short).err().unwrap();
    assert!(e.to_string().contains("truncated"), "{e}");
    // A byte flipped at 400 places over the metadata-dense start (superblock, AG
    // headers, the first inode chunk, directory and attribute blocks): each open and
    // walk fails or succeeds, never panics or hangs.
    let base = Arc::new(data);
    for k in 0..400u64 {
        let dev: Arc<dyn BlockDev> = Arc::new(Flip {
            base: base.clone(),
            at: (k * 4099 + k * k * 13) % (1 << 20),
            x: 0x41 ^ (k as u8 | 1),
        });
        if let Ok(fs) = XfsFs::open(dev) {
            walk(&fs);
        }
    }
}

/// An image with one byte changed.
struct Flip {
    base: Arc<Vec<u8>>,
    at: u64,
    x: u8,
}

impl BlockDev for Flip {
    fn len(&self) -> u64 {
        self.base.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> transplant_formats::Result<()> {
        transplant_formats::error::check_range("flip", offset, buf.len() as u64, self.len())?;
        let o = offset as usize;
        buf.copy_from_slice(&self.base[o..o + buf.len()]);
        if (offset..offset + buf.len() as u64).contains(&self.at) {
            buf[(self.at - offset) as usize] ^= self.x;
        }
        Ok(())
    }
    fn name(&self) -> &str {
        "flip.img"
    }
}

/// A bounded walk reading a little of everything, as the fuzz target does.
fn walk(fs: &XfsFs) {
    let mut todo = vec![b"/".to_vec()];
    let mut buf = vec![0u8; 4096];
    let mut seen = 0;
    while let Some(d) = todo.pop() {
        let Ok(es) = fs.read_dir(&d) else { continue };
        for e in es {
            seen += 1;
            if seen > 5000 {
                return;
            }
            let mut p = d.clone();
            if p.len() > 1 {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            let _ = fs.lstat(&p);
            let _ = fs.xattrs(&p);
            match e.kind {
                FileKind::Dir => todo.push(p),
                FileKind::Symlink => {
                    let _ = fs.read_link(&p);
                }
                _ => {
                    let _ = fs.read(&p, 0, &mut buf);
                }
            }
        }
    }
}
