//! The qcow2 writer against qemu-img: every cluster size and compression method, odd
//! sizes, chunks that cut clusters, cancelled copies, and thin overlays over a backing
//! image. qemu-img must find no errors and no leaks, and read the same bytes we wrote.

mod common;

use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use transplant_formats::copy::{copy, CopyOptions};
use transplant_formats::output::qcow2::Qcow2Compression;
use transplant_formats::output::{Qcow2Options, Qcow2Sink};
use transplant_formats::{
    open_image, BlockDev, Extent, ExtentKind, MemDev, OpenOptions, RawFile, Result,
};

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A device whose extent map calls some zero ranges holes, at offsets that cut clusters,
/// so the writer sees chunks starting and ending inside clusters.
struct Holey {
    inner: MemDev,
    holes: Vec<(u64, u64)>,
}

impl BlockDev for Holey {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn extent_at(&self, offset: u64) -> Result<Extent> {
        let mut next = self.len();
        for &(s, e) in &self.holes {
            if offset >= s && offset < e {
                return Ok(Extent {
                    kind: ExtentKind::Unallocated,
                    len: e - offset,
                });
            }
            if s > offset {
                next = next.min(s);
            }
        }
        Ok(Extent {
            kind: ExtentKind::Data,
            len: next - offset,
        })
    }
    fn name(&self) -> &str {
        "holey"
    }
}

fn qemu_check(out: &Path) {
    let o = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img check {}: {}{}",
        out.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("No errors were found"), "{text}");
}

fn qemu_info(out: &Path) -> serde_json::Value {
    let o = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn write_qcow2(src: &dyn BlockDev, dest: &Path, opts: &Qcow2Options) {
    let mut sink = Qcow2Sink::create(dest, src.len(), opts, false).unwrap();
    copy(src, &mut sink, &CopyOptions::default(), &mut |_| {}).unwrap();
}

/// The disk as qemu shows it: the source padded to whole sectors.
fn padded(mut b: Vec<u8>) -> Vec<u8> {
    b.resize(b.len().next_multiple_of(512), 0);
    b
}

fn check_against(out: &Path, expect: &[u8], compression: Qcow2Compression) {
    qemu_check(out);
    let info = qemu_info(out);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], expect.len() as u64);
    let ctype = info["format-specific"]["data"]["compression-type"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let want = if compression == Qcow2Compression::Zstd {
        "zstd"
    } else {
        "zlib"
    };
    assert_eq!(ctype, want);
    let digest = sha(expect);
    assert_eq!(
        common::qemu_raw_sha256(out, Some("qcow2")),
        digest,
        "{}",
        out.display()
    );
    let img = open_image(
        out,
        &OpenOptions {
            allow_outside_paths: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        common::sha256_dev(&*img),
        digest,
        "our reader, {}",
        out.display()
    );
}

#[test]
fn every_cluster_size_and_compression() {
    if !common::have("qemu-img") {
        return;
    }
    let base = common::fixtures("base");
    let dir = tempfile::tempdir().unwrap();
    for file in ["data-64m.raw", "data-odd.raw"] {
        let path = base.join(file);
        let src = RawFile::open(&path, false).unwrap();
        let expect = padded(std::fs::read(&path).unwrap());
        for cs in [512u64, 64 << 10, 2 << 20] {
            let mut plain = 0;
            for compression in [
                Qcow2Compression::None,
                Qcow2Compression::Zlib,
                Qcow2Compression::Zstd,
            ] {
                let out = dir
                    .path()
                    .join(format!("{file}-{cs}-{compression:?}.qcow2"));
                let opts = Qcow2Options {
                    cluster_size: cs,
                    compression,
                    ..Default::default()
                };
                write_qcow2(&src, &out, &opts);
                check_against(&out, &expect, compression);
                let size = std::fs::metadata(&out).unwrap().len();
                eprintln!("{file} cluster {cs} {compression:?}: {size} bytes");
                if compression == Qcow2Compression::None {
                    plain = size;
                } else if file == "data-64m.raw" {
                    assert!(size < plain, "{file} {cs} {compression:?} did not shrink");
                } else {
                    // Incompressible clusters are stored as they are, never larger.
                    assert!(size <= plain, "{file} {cs} {compression:?} grew");
                }
            }
        }
    }
    // Only the outputs remain: no temporary files.
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));
}

/// A pattern that compresses somewhat, with zero runs at offsets that cut clusters.
fn synthetic(len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    let mut x = 0x1234_5678u32;
    for (i, b) in d.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = if (i / 3000) % 5 == 0 {
            0
        } else {
            (x % 7) as u8
        };
    }
    d
}

#[test]
fn chunks_cutting_clusters() {
    if !common::have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut data = synthetic(9 * 1024 * 1024 + 777);
    let holes = vec![(100_000u64, 170_001u64), (3 << 20, (5 << 20) + 4097)];
    for &(s, e) in &holes {
        data[s as usize..e as usize].fill(0);
    }
    let expect = padded(data.clone());
    for cs in [512u64, 64 << 10, 2 << 20] {
        for compression in [Qcow2Compression::None, Qcow2Compression::Zstd] {
            let src = Holey {
                inner: MemDev::new("src", data.clone()),
                holes: holes.clone(),
            };
            let out = dir.path().join(format!("cut-{cs}-{compression:?}.qcow2"));
            let opts = Qcow2Options {
                cluster_size: cs,
                compression,
                ..Default::default()
            };
            write_qcow2(&src, &out, &opts);
            check_against(&out, &expect, compression);
        }
    }
}

#[test]
fn empty_and_tiny_disks() {
    if !common::have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (i, data) in [vec![0u8; 1 << 20], vec![7u8; 1000], vec![]]
        .into_iter()
        .enumerate()
    {
        let out = dir.path().join(format!("tiny-{i}.qcow2"));
        write_qcow2(
            &MemDev::new("src", data.clone()),
            &out,
            &Qcow2Options::default(),
        );
        check_against(&out, &padded(data), Qcow2Compression::None);
    }
}

#[test]
fn cancelled_copy_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.qcow2");
    let src = MemDev::new("src", synthetic(8 << 20));
    let opts = Qcow2Options {
        compression: Qcow2Compression::Zlib,
        ..Default::default()
    };
    let mut sink = Qcow2Sink::create(&dest, src.len(), &opts, false).unwrap();
    let copts = CopyOptions::default();
    copts
        .cancel
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(copy(&src, &mut sink, &copts, &mut |_| {}).is_err());
    drop(sink);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn refuses_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.qcow2");
    for cs in [256u64, 3 << 10, 4 << 20] {
        let opts = Qcow2Options {
            cluster_size: cs,
            ..Default::default()
        };
        assert!(Qcow2Sink::create(&dest, 1 << 20, &opts, false).is_err());
    }
    let opts = Qcow2Options {
        cluster_size: 512,
        backing_file: Some("b".repeat(500)),
        ..Default::default()
    };
    assert!(Qcow2Sink::create(&dest, 1 << 20, &opts, false).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn thin_overlay_over_a_raw_backing() {
    if !common::have("qemu-img") {
        return;
    }
    let base = common::fixtures("base").join("data-64m.raw");
    let base = std::fs::canonicalize(base).unwrap();
    let backing: Arc<dyn BlockDev> = Arc::new(RawFile::open(&base, false).unwrap());
    let mut data = std::fs::read(&base).unwrap();
    const MIB: usize = 1 << 20;
    // Three MiB rewritten, a small unaligned edit, a zeroed range read as data and one
    // reported as a hole (the backing has data under both).
    for (i, b) in data[10 * MIB..13 * MIB].iter_mut().enumerate() {
        *b = (i % 251) as u8 ^ 0x5a;
    }
    data[50 * MIB + 12345..50 * MIB + 12445].fill(0xee);
    data[20 * MIB..21 * MIB + 3000].fill(0);
    let hole = ((40 * MIB) as u64, (44 * MIB + 512) as u64);
    data[hole.0 as usize..hole.1 as usize].fill(0);
    assert!(!transplant_formats::copy::is_zero(
        &std::fs::read(&base).unwrap()[20 * MIB..21 * MIB]
    ));
    let dir = tempfile::tempdir().unwrap();
    for compression in [Qcow2Compression::None, Qcow2Compression::Zstd] {
        let src = Holey {
            inner: MemDev::new("modified", data.clone()),
            holes: vec![hole],
        };
        let out = dir.path().join(format!("overlay-{compression:?}.qcow2"));
        let opts = Qcow2Options {
            compression,
            backing_file: Some(base.display().to_string()),
            backing_format: Some("raw".into()),
            ..Default::default()
        };
        let mut sink = Qcow2Sink::create(&out, src.len(), &opts, false)
            .unwrap()
            .with_backing_dev(backing.clone());
        copy(&src, &mut sink, &CopyOptions::default(), &mut |_| {}).unwrap();
        let size = std::fs::metadata(&out).unwrap().len();
        eprintln!("overlay {compression:?}: {size} bytes");
        assert!(size < 5 * MIB as u64, "overlay is {size} bytes");
        check_against(&out, &data, compression);
        let info = qemu_info(&out);
        assert_eq!(info["backing-filename"], base.display().to_string());
        assert_eq!(info["backing-filename-format"], "raw");
        // The zeroed ranges are zero clusters, the rest falls through to the backing.
        let o = Command::new("qemu-img")
            .args(["map", "--output=json"])
            .arg(&out)
            .output()
            .unwrap();
        let map: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let zero_in_top = map
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["depth"] == 0 && e["zero"] == true)
            .map(|e| e["length"].as_u64().unwrap())
            .sum::<u64>();
        assert!(zero_in_top >= 5 * MIB as u64, "{zero_in_top}");
    }
}

/// A small deterministic generator for the random writes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random writes through the in-place writer and the same writes on a raw copy: qemu-img
/// must then read the image as the copy, and find no errors or leaks.
fn random_writes(image: &Path, expect: &mut [u8], seed: u64, count: usize) {
    use transplant_formats::output::qcow2::inplace::open_writable_with;
    let dev = open_writable_with(
        image,
        &OpenOptions {
            allow_outside_paths: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(dev.len(), expect.len() as u64);
    let mut rng = Rng(seed);
    let len = expect.len() as u64;
    for i in 0..count {
        let size = match i % 4 {
            0 => 1 + rng.below(100),
            1 => 4096,
            2 => 65536,
            _ => 1 + rng.below(300_000),
        };
        let size = size.min(len);
        let off = rng.below(len - size + 1);
        let off = if i % 4 == 1 { off & !4095 } else { off };
        let buf: Vec<u8> = if i % 7 == 0 {
            vec![0; size as usize]
        } else {
            (0..size).map(|_| rng.next() as u8).collect()
        };
        dev.write_at(&buf, off).unwrap();
        expect[off as usize..(off + size) as usize].copy_from_slice(&buf);
        // Reads through the writer see the writes at once.
        let mut back = vec![0u8; size as usize];
        dev.read_at(&mut back, off).unwrap();
        assert_eq!(back, buf, "read back at {off:#x}+{size:#x}");
    }
    dev.flush().unwrap();
    drop(dev);
    qemu_check(image);
    assert_eq!(
        common::qemu_raw_sha256(image, Some("qcow2")),
        sha(expect),
        "{}",
        image.display()
    );
}

#[test]
fn in_place_writes_on_our_own_and_qemu_images() {
    if !common::have("qemu-img") {
        return;
    }
    let base = common::fixtures("base");
    let raw9 = std::fs::canonicalize(base.join("data-9m.raw")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data9 = std::fs::read(&raw9).unwrap();

    // qemu's own compressed image (compressed clusters get copied on write).
    let q = dir.path().join("qemu-c.qcow2");
    common::run(
        Command::new("qemu-img")
            .args(["convert", "-c", "-O", "qcow2", "-f", "raw"])
            .arg(&raw9)
            .arg(&q),
    );
    let mut expect = data9.clone();
    random_writes(&q, &mut expect, 1, 120);

    // An overlay over the raw file: writes fall through to copies of backing clusters.
    let o = dir.path().join("over.qcow2");
    common::run(
        Command::new("qemu-img")
            .args(["create", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&raw9)
            .arg(&o),
    );
    let mut expect = data9.clone();
    random_writes(&o, &mut expect, 2, 120);

    // Our own zstd output at 512-byte clusters: new refcount blocks and L2 tables.
    let small = synthetic(3 << 20);
    let w = dir.path().join("ours-512.qcow2");
    write_qcow2(
        &MemDev::new("src", small.clone()),
        &w,
        &Qcow2Options {
            cluster_size: 512,
            compression: Qcow2Compression::Zstd,
            ..Default::default()
        },
    );
    let mut expect = small;
    random_writes(&w, &mut expect, 3, 40);
    // A second session on the same image.
    random_writes(&w, &mut expect, 4, 40);
}

#[test]
fn overlay_without_backing_contents_marks_every_hole_zero() {
    if !common::have("qemu-img") {
        return;
    }
    let base = common::fixtures("base");
    let raw9 = std::fs::canonicalize(base.join("data-9m.raw")).unwrap();
    let mut data = synthetic(9 << 20);
    let hole = (1u64 << 20, 3u64 << 20);
    data[hole.0 as usize..hole.1 as usize].fill(0);
    let src = Holey {
        inner: MemDev::new("src", data.clone()),
        holes: vec![hole],
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("over.qcow2");
    let opts = Qcow2Options {
        backing_file: Some(raw9.display().to_string()),
        backing_format: Some("raw".into()),
        ..Default::default()
    };
    write_qcow2(&src, &out, &opts);
    check_against(&out, &data, Qcow2Compression::None);
}

/// The header's refcount table: (offset, clusters).
fn refcount_table(image: &Path) -> (u64, u32) {
    let h = std::fs::read(image).unwrap();
    (
        u64::from_be_bytes(h[48..56].try_into().unwrap()),
        u32::from_be_bytes(h[56..60].try_into().unwrap()),
    )
}

#[test]
fn in_place_writes_grow_the_refcount_table() {
    if !common::have("qemu-img") {
        return;
    }
    // At 512-byte clusters qemu's one-cluster refcount table covers 8 MiB of file:
    // writing 20 MiB in place must replace it, more than once.
    let dir = tempfile::tempdir().unwrap();
    for (name, compressed) in [("empty.qcow2", false), ("zlib.qcow2", true)] {
        let img = dir.path().join(name);
        let len = 24usize << 20;
        let mut expect = vec![0u8; len];
        if compressed {
            // Start from compressed data in the first 2 MiB (copied on write).
            let raw = dir.path().join("seed.raw");
            let mut seed = vec![0u8; len];
            seed[..2 << 20].copy_from_slice(&synthetic(2 << 20));
            std::fs::write(&raw, &seed).unwrap();
            common::run(
                Command::new("qemu-img")
                    .args(["convert", "-c", "-f", "raw", "-O", "qcow2", "-o"])
                    .arg("cluster_size=512")
                    .arg(&raw)
                    .arg(&img),
            );
            expect = seed;
        } else {
            common::run(
                Command::new("qemu-img")
                    .args(["create", "-f", "qcow2", "-o", "cluster_size=512"])
                    .arg(&img)
                    .arg(len.to_string()),
            );
        }
        let before = refcount_table(&img);
        {
            use transplant_formats::output::qcow2::inplace::open_writable;
            let dev = open_writable(&img).unwrap();
            let data = synthetic(20 << 20);
            for (i, piece) in data.chunks(256 * 1024).enumerate() {
                let off = (i * 256 * 1024 + 1000) as u64;
                dev.write_at(piece, off).unwrap();
                expect[off as usize..off as usize + piece.len()].copy_from_slice(piece);
            }
            dev.flush().unwrap();
        }
        let after = refcount_table(&img);
        assert!(after.1 > before.1, "{name}: table {before:?} -> {after:?}");
        assert_ne!(after.0, before.0);
        qemu_check(&img);
        let o = Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&img)
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stdout);
        assert!(!t.contains("leaked"), "{name}: {t}");
        assert_eq!(
            common::qemu_raw_sha256(&img, Some("qcow2")),
            sha(&expect),
            "{name}"
        );
        // And a second session over the grown table.
        let mut e2 = expect.clone();
        random_writes(&img, &mut e2, 9, 30);
    }
}

/// A crash at any host write of an in-place write that grows the refcount table leaves
/// an image `qemu-img check` finds no error in (leaks are allowed), whose guest bytes are
/// the old ones or the new ones.
#[test]
fn a_crash_anywhere_while_growing_the_table_only_leaks() {
    if !common::have("qemu-img") {
        return;
    }
    use transplant_formats::output::qcow2::inplace::open_writable;
    let dir = tempfile::tempdir().unwrap();
    // 7.9 MiB of data at 512-byte clusters: the file is just under the 8 MiB the first
    // refcount table covers, so a 1 MiB write must grow it.
    let len = 16usize << 20;
    let mut seed = vec![0u8; len];
    seed[..7_900_000].copy_from_slice(&synthetic(7_900_000));
    let raw = dir.path().join("seed.raw");
    std::fs::write(&raw, &seed).unwrap();
    let base = dir.path().join("base.qcow2");
    common::run(
        Command::new("qemu-img")
            .args([
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                "cluster_size=512",
            ])
            .arg(&raw)
            .arg(&base),
    );
    let new = vec![0x3cu8; 1 << 20];
    let at = 10u64 << 20;
    let mut after = seed.clone();
    after[at as usize..at as usize + new.len()].copy_from_slice(&new);
    assert_ne!(sha(&seed), sha(&after));
    let img = dir.path().join("img.qcow2");
    // Returns whether the write finished.
    let trial = |crash: Option<u64>| -> bool {
        std::fs::copy(&base, &img).unwrap();
        let dev = open_writable(&img).unwrap();
        if let Some(n) = crash {
            dev.crash_at_write(n);
        }
        let ok = dev.write_at(&new, at).is_ok();
        drop(dev);
        ok
    };
    assert!(trial(None));
    let total = {
        std::fs::copy(&base, &img).unwrap();
        let dev = open_writable(&img).unwrap();
        dev.write_at(&new, at).unwrap();
        dev.host_writes()
    };
    let before = refcount_table(&base);
    // The write that switches the header: the first crash point after which it changed.
    let (mut lo, mut hi) = (0u64, total);
    while lo < hi {
        let mid = (lo + hi) / 2;
        trial(Some(mid));
        if refcount_table(&img) == before {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    assert!(
        lo > 0 && lo < total,
        "the table never grew ({lo} of {total})"
    );
    let mut points: Vec<u64> = (0..16).map(|i| i * total / 16).collect();
    points.extend(lo.saturating_sub(15)..(lo + 15).min(total));
    for n in points {
        assert!(
            !trial(Some(n)),
            "crash at {n} of {total} did not stop the write"
        );
        let o = Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&img)
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stdout);
        // Exit 3 means leaks only; 2 would be errors.
        assert!(
            matches!(o.status.code(), Some(0) | Some(3)) && !t.contains("ERROR"),
            "crash at write {n} of {total} (header at {lo}): {t}"
        );
        // The 1 MiB lands cluster by cluster: any mix of old and new clusters is legal,
        // but nothing outside the write may change.
        let bytes = {
            let out = dir.path().join("back.raw");
            common::run(
                Command::new("qemu-img")
                    .args(["convert", "-f", "qcow2", "-O", "raw"])
                    .arg(&img)
                    .arg(&out),
            );
            std::fs::read(&out).unwrap()
        };
        assert_eq!(&bytes[..at as usize], &seed[..at as usize], "crash at {n}");
        assert!(bytes[at as usize + new.len()..].iter().all(|&b| b == 0));
        for c in bytes[at as usize..at as usize + new.len()].chunks(512) {
            assert!(c.iter().all(|&b| b == 0) || c.iter().all(|&b| b == 0x3c));
        }
    }
}
