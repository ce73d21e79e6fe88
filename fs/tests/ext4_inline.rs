//! Reads the engine serves where ext4-view cannot: inline_data filesystems (files in the
//! inode and in its system.data xattr, inline directories, inline symlinks) made by
//! `mkfs.ext4 -O inline_data -d`, and ext2/ext3 files with holes in their indirect block
//! maps. Everything read back must equal the source tree and what `debugfs` reads.

mod common;

use common::have;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, Overlay, RawFile};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::{FileKind, Filesystem, NewNode, SetAttrs};

fn tools() -> bool {
    have("mke2fs") && have("debugfs") && have("e2fsck")
}

fn mkfs(kind: &str, extra: &[&str], src: &Path, img: &Path, size: &str) {
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", kind, "-d"])
        .arg(src)
        .args(extra)
        .arg(img)
        .arg(size)
        .status()
        .unwrap();
    assert!(st.success(), "mke2fs -t {kind} {extra:?}");
    let out = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(out.status.success(), "e2fsck -fn on the fresh image");
}

fn debugfs(img: &Path, req: &str) -> Vec<u8> {
    Command::new("debugfs")
        .args(["-R", req])
        .arg(img)
        .output()
        .unwrap()
        .stdout
}

fn open_ro(img: &Path, kind: &str) -> Ext4Fs {
    let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(img, false).unwrap());
    Ext4Fs::open(dev, kind).unwrap()
}

fn open_rw(img: &Path, kind: &str) -> Ext4Fs {
    let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(img, false).unwrap());
    Ext4Fs::open_rw(Arc::new(Overlay::new(dev)), kind).unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| b'!' + ((i * 7 + seed as usize) % 90) as u8)
        .collect()
}

/// Files on both sides of every inline boundary (60 bytes of i_block, then what the
/// in-inode xattr area holds, then blocks), directories inline, spilling into
/// system.data and in blocks, symlinks fast, inline and in a block.
fn inline_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/fstab"), "/dev/sda1 / ext4 defaults 0 1\n").unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    for n in [
        0, 1, 30, 59, 60, 61, 80, 100, 120, 150, 160, 200, 4096, 70_000,
    ] {
        std::fs::write(root.join(format!("f{n}")), pattern(n, n as u8)).unwrap();
    }
    // mke2fs keeps up to four short names inline, then moves a directory to a block.
    for (name, count) in [("d0", 0), ("d2", 2), ("d4", 4), ("d12", 12), ("d80", 80)] {
        let d = root.join(name);
        std::fs::create_dir(&d).unwrap();
        for i in 0..count {
            std::fs::write(d.join(format!("n{i}")), format!("{name}/{i}\n")).unwrap();
        }
    }
    std::fs::create_dir_all(root.join("d2/nested/deeper")).unwrap();
    std::fs::write(root.join("d2/nested/deeper/leaf"), "leaf\n").unwrap();
    for n in [5, 59, 60, 80, 120, 300] {
        let target: String = "t/".repeat(n / 2) + &"x".repeat(n % 2);
        std::os::unix::fs::symlink(&target, root.join(format!("l{n}"))).unwrap();
    }
    std::os::unix::fs::symlink("../f30", root.join("d2/up")).unwrap();
}

/// Walks the source and checks every entry against the image: kind, mode, owner, size,
/// mtime, listing, content, link target; returns the paths of the regular files.
fn compare(src: &Path, fs: &dyn Filesystem) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rel_dir = format!("/{}", dir.strip_prefix(src).unwrap().to_str().unwrap());
        let mut names: Vec<Vec<u8>> = fs
            .read_dir(rel_dir.as_bytes())
            .unwrap_or_else(|e| panic!("{rel_dir}: {e}"))
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != b"lost+found")
            .collect();
        names.sort();
        let mut want: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_encoded_bytes())
            .collect();
        want.sort();
        assert_eq!(names, want, "{rel_dir} entries");
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = format!("/{}", p.strip_prefix(src).unwrap().to_str().unwrap());
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ours = fs
                .lstat(rel.as_bytes())
                .unwrap_or_else(|err| panic!("{rel}: {err}"));
            assert_eq!(ours.mode, m.mode() & 0o7777, "{rel} mode");
            assert_eq!((ours.uid, ours.gid), (m.uid(), m.gid()), "{rel} owner");
            assert_eq!(ours.mtime.secs, m.mtime(), "{rel} mtime");
            if m.is_dir() {
                assert_eq!(ours.kind, FileKind::Dir, "{rel}");
                stack.push(p);
            } else if m.file_type().is_symlink() {
                assert_eq!(ours.kind, FileKind::Symlink, "{rel}");
                let want = std::fs::read_link(&p).unwrap().into_os_string();
                assert_eq!(ours.size, want.len() as u64, "{rel} size");
                let got = fs.read_link(rel.as_bytes()).unwrap();
                assert_eq!(got, want.into_encoded_bytes(), "{rel} target");
            } else {
                assert_eq!(ours.kind, FileKind::File, "{rel}");
                assert_eq!(ours.size, m.len(), "{rel} size");
                let want = std::fs::read(&p).unwrap();
                let mut got = vec![0u8; want.len() + 10];
                let k = fs.read(rel.as_bytes(), 0, &mut got).unwrap();
                assert_eq!(k, want.len(), "{rel} length read");
                assert!(got[..k] == want[..], "{rel} content");
                // A read from the middle, across the i_block/system.data seam.
                if want.len() > 40 {
                    let mut part = vec![0u8; 30];
                    let k = fs.read(rel.as_bytes(), 40, &mut part).unwrap();
                    let end = want.len().min(70);
                    assert_eq!(&part[..k], &want[40..end], "{rel} at 40");
                }
                files.push(rel);
            }
        }
    }
    files
}

#[test]
fn inline_data_files_directories_and_symlinks_read_back() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    inline_tree(&src);
    let img = dir.path().join("fs.img");
    mkfs(
        "ext4",
        &["-O", "inline_data,metadata_csum"],
        &src,
        &img,
        "16M",
    );
    // The fixture does hold every kind: inline files in i_block alone and spilling into
    // system.data, block-mapped ones, inline directories both ways, inline symlinks.
    let stat = |p: &str| String::from_utf8_lossy(&debugfs(&img, &format!("stat {p}"))).into_owned();
    for p in ["/f30", "/f100", "/d0", "/d2", "/d4", "/d2/nested", "/l80"] {
        assert!(
            stat(p).contains("Flags: 0x10000000"),
            "{p} is not inline:\n{}",
            stat(p)
        );
    }
    for p in ["/f100", "/l80"] {
        let s = stat(p);
        let spill = s
            .lines()
            .find_map(|l| l.trim().strip_prefix("system.data ("))
            .unwrap_or("0)");
        assert_ne!(spill, "0)", "{p} does not spill into system.data:\n{s}");
    }
    for p in ["/f4096", "/d12", "/d80", "/l300"] {
        assert!(!stat(p).contains("Flags: 0x10000000"), "{p} is inline");
    }

    let ro = open_ro(&img, "ext4");
    assert_eq!(ro.info().kind, "ext4");
    assert!(ro.info().uuid.is_some());
    let files = compare(&src, &ro);
    for f in &files {
        let want = std::fs::read(src.join(&f[1..])).unwrap();
        let got = debugfs(&img, &format!("cat {f}"));
        // debugfs 1.47 prints all 60 bytes of i_block for an inline file shorter than
        // that: the file, then zeroes.
        let pad = got.len() == 60 && want.len() < 60;
        let same = got.get(..want.len()) == Some(&want[..])
            && (got.len() == want.len() || pad && got[want.len()..].iter().all(|&b| b == 0));
        assert!(
            same,
            "debugfs cat {f}: {} bytes, want {}",
            got.len(),
            want.len()
        );
    }
    // "." and ".." of an inline directory resolve like any other.
    let up = transplant_fs::resolve_path(&ro, b"/d2/up", true).unwrap();
    assert_eq!(up, b"/f30".to_vec());
    let mut b = [0u8; 8];
    assert_eq!(ro.read(b"/d2/nested/../n1", 0, &mut b).unwrap(), 5);
    assert_eq!(&b[..5], b"d2/1\n");
    assert!(!ro.writable());
    // The same through an open for writing, which reads through the engine too.
    let rw = open_rw(&img, "ext4");
    compare(&src, &rw);
}

#[test]
fn writes_to_inline_inodes_are_refused_and_the_rest_is_clean() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    inline_tree(&src);
    let img = dir.path().join("fs.img");
    mkfs("ext4", &["-O", "inline_data"], &src, &img, "16M");
    let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&img, true).unwrap());
    let ov = Arc::new(Overlay::new(base));
    let fs = Ext4Fs::open_rw(ov.clone(), "ext4").unwrap();
    let e = fs.write_file(b"/f100", b"new").unwrap_err();
    assert!(e.to_string().contains("inline_data"), "{e}");
    for p in [&b"/d4/x"[..], b"/d2/x"] {
        let e = fs
            .create(p, NewNode::File(b"x"), &SetAttrs::default())
            .unwrap_err();
        assert!(e.to_string().contains("inline_data"), "{e}");
    }
    let e = fs.rename(b"/d2/nested", b"/d80/nested").unwrap_err();
    assert!(e.to_string().contains("inline_data"), "{e}");
    let e = fs.remove(b"/d0").unwrap_err();
    assert!(e.to_string().contains("inline_data"), "{e}");
    // Through inline directories, block-mapped targets stay writable.
    fs.rename(b"/f4096", b"/d80/moved").unwrap();
    fs.remove(b"/f61").unwrap();
    fs.set_attrs(
        b"/d2/nested/deeper/leaf",
        &SetAttrs {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    fs.sync().unwrap();
    drop(fs);
    ov.commit().unwrap();
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ro = open_ro(&img, "ext4");
    let mut b = vec![0u8; 5000];
    assert_eq!(ro.read(b"/d80/moved", 0, &mut b).unwrap(), 4096);
    assert_eq!(&b[..4096], &pattern(4096, 0)[..]);
    assert_eq!(ro.lstat(b"/d2/nested/deeper/leaf").unwrap().mode, 0o600);
}

/// Sparse files as ext2/3 block maps hold them: holes before the first block, between
/// direct and indirect blocks, covering whole indirect blocks, and at the end.
fn sparse_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let put = |name: &str, len: u64, writes: &[(u64, &[u8])]| {
        let f = std::fs::File::create(root.join(name)).unwrap();
        f.set_len(len).unwrap();
        for (off, data) in writes {
            f.write_all_at(data, *off).unwrap();
        }
    };
    put("all-hole", 3 << 20, &[]);
    put("head-hole", 100_000, &[(90_000, b"after the hole")]);
    put(
        "scattered",
        24 << 20,
        &[
            (0, b"first block"),
            (20_000, b"still direct"),
            (300_000, b"single indirect"),
            (5 << 20, b"double indirect"),
            ((20 << 20) + 4095, b"across a block edge"),
        ],
    );
    put("tail-hole", 1 << 20, &[(0, &[7u8; 9000])]);
    std::fs::write(root.join("dense"), pattern(200_000, 3)).unwrap();
}

#[test]
fn holes_in_ext2_and_ext3_block_maps_read_as_zeroes() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sparse_tree(&src);
    for (kind, extra) in [("ext2", &["-b", "1024"][..]), ("ext3", &["-b", "4096"][..])] {
        let img = dir.path().join(format!("{kind}.img"));
        mkfs(kind, extra, &src, &img, "40M");
        // mke2fs kept the holes: far fewer blocks than the sizes.
        let st = String::from_utf8_lossy(&debugfs(&img, "stat /scattered")).into_owned();
        let count: u64 = st
            .split("Blockcount: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{kind}: no Blockcount in\n{st}"));
        assert!(count < 200, "{kind}: /scattered uses {count} sectors");
        for fs in [open_ro(&img, kind), open_rw(&img, kind)] {
            compare(&src, &fs);
            // Many small reads, as a FUSE mount or `cat` makes them.
            let want = std::fs::read(src.join("scattered")).unwrap();
            let mut got = vec![0u8; want.len()];
            let mut off = 0;
            while off < got.len() {
                let end = (off + 128 * 1024 + 17).min(got.len());
                let k = fs
                    .read(b"/scattered", off as u64, &mut got[off..end])
                    .unwrap();
                assert!(k > 0);
                off += k;
            }
            assert!(got == want, "{kind}: /scattered in pieces");
        }
        assert!(
            debugfs(&img, "cat /scattered") == std::fs::read(src.join("scattered")).unwrap(),
            "{kind}: debugfs cat"
        );
    }
}

/// mke2fs moves a directory to a block once i_block is full; the kernel first grows it
/// into system.data. So a kernel mount adds names to an inline directory (and writes
/// small files, inline too), and the result is read back against the mounted view.
#[test]
fn directories_the_kernel_spilled_into_system_data() {
    if !tools() || !have("mount") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("grow")).unwrap();
    std::fs::write(src.join("grow/a"), "a\n").unwrap();
    let img = dir.path().join("fs.img");
    mkfs("ext4", &["-O", "inline_data"], &src, &img, "16M");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .unwrap();
    if !st.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "a loop mount is needed when CI is set"
        );
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    {
        let _u = Unmount(&mnt);
        for i in 0..4 {
            std::fs::write(mnt.join(format!("grow/k{i}")), pattern(70 + i, i as u8)).unwrap();
        }
    }
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "e2fsck -fn after the kernel's writes");
    let st = String::from_utf8_lossy(&debugfs(&img, "stat /grow")).into_owned();
    assert!(
        st.contains("Flags: 0x10000000"),
        "/grow is not inline:\n{st}"
    );
    assert!(
        !st.contains("system.data (0)"),
        "/grow did not spill into system.data:\n{st}"
    );
    let fs = open_ro(&img, "ext4");
    let mut names: Vec<Vec<u8>> = fs
        .read_dir(b"/grow")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            b"a".to_vec(),
            b"k0".to_vec(),
            b"k1".to_vec(),
            b"k2".to_vec(),
            b"k3".to_vec()
        ]
    );
    for i in 0..4usize {
        let p = format!("/grow/k{i}");
        let mut b = vec![0u8; 200];
        let n = fs.read(p.as_bytes(), 0, &mut b).unwrap();
        assert_eq!(&b[..n], &pattern(70 + i, i as u8)[..], "{p}");
    }
    assert_eq!(fs.lstat(b"/grow/k3").unwrap().size, 73);
}

/// CPU seconds (user + system) of this process so far, from /proc/self/stat.
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Times `read` of a whole file in 1 MiB pieces (as `transplant cat` and FUSE do),
/// best of three: (wall, cpu) seconds.
fn time_cat(len: usize, mut read: impl FnMut(u64, &mut [u8]) -> usize) -> (f64, f64) {
    let mut best = (f64::MAX, f64::MAX);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..3 {
        let (t, c) = (std::time::Instant::now(), cpu_secs());
        let mut off = 0usize;
        let mut sum = 0u64;
        while off < len {
            let n = read(off as u64, &mut buf);
            assert!(n > 0);
            sum = sum.wrapping_add(buf[0] as u64);
            off += n;
        }
        std::hint::black_box(sum);
        let w = t.elapsed().as_secs_f64();
        best = (best.0.min(w), best.1.min(cpu_secs() - c));
    }
    best
}

/// `cat` of a 512 MiB file: the engine against ext4-view (as `Ext4Fs` read through it
/// before), on an ext3 block map and an ext4 extent tree; `Ext4Fs::open` is what
/// read-only opens do now (the engine for data). Run with `cargo test --release -p transplant-fs --test ext4_inline
/// cat_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn cat_speed_engine_against_ext4_view() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let len = 512usize << 20;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(src.join("big")).unwrap());
        let chunk = pattern(1 << 20, 9);
        for _ in 0..len >> 20 {
            f.write_all(&chunk).unwrap();
        }
    }
    for kind in ["ext3", "ext4"] {
        let img = dir.path().join(format!("{kind}.img"));
        mkfs(kind, &[], &src, &img, "700M");
        let _ = std::fs::read(&img); // the page cache warm for both
        let ours = open_rw(&img, kind);
        let e = time_cat(len, |off, b| ours.read(b"/big", off, b).unwrap());
        let view =
            ext4_view::Ext4::load(Box::new(RawReader(std::fs::File::open(&img).unwrap()))).unwrap();
        let v = time_cat(len, |off, b| {
            // What Ext4Fs did per call before: open, seek, read until the buffer is full.
            let mut f = view.open("/big").unwrap();
            f.seek_to(off).unwrap();
            let mut done = 0;
            while done < b.len() {
                let n = f.read_bytes(&mut b[done..]).unwrap();
                if n == 0 {
                    break;
                }
                done += n;
            }
            done
        });
        let ro = open_ro(&img, kind);
        let r = time_cat(len, |off, b| ro.read(b"/big", off, b).unwrap());
        println!(
            "{kind}: engine (open_rw, overlay) {:.3} s wall {:.2} s cpu; ext4-view {:.3} s wall {:.2} s cpu; Ext4Fs::open {:.3} s wall {:.2} s cpu; engine/ext4-view wall {:.2}",
            e.0, e.1, v.0, v.1, r.0, r.1, e.0 / v.0
        );
    }
}

struct RawReader(std::fs::File);

impl ext4_view::Ext4Read for RawReader {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0
            .read_exact_at(dst, start)
            .map_err(|e| Box::new(e) as _)
    }
}
