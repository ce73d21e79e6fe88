//! The VMDK writers against qemu-img: streamOptimized and monolithicSparse from the raw
//! fixtures, odd sizes, chunks that cut grains, many grain tables, cancelled copies, and
//! the stream's marker order checked against VMware's rules.

mod common;

use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use transplant_formats::copy::{copy, CopyOptions};
use transplant_formats::output::vmdk::{create_sink, AdapterType, VmdkSubformat};
use transplant_formats::output::VmdkOptions;
use transplant_formats::{open_image, BlockDev, Extent, ExtentKind, RawFile, Result};

const BOTH: [VmdkSubformat; 2] = [
    VmdkSubformat::StreamOptimized,
    VmdkSubformat::MonolithicSparse,
];

fn opts(sub: VmdkSubformat) -> VmdkOptions {
    VmdkOptions {
        subformat: sub,
        ..Default::default()
    }
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A disk made of a few data patches over zeroes, of any size, with an extent map that
/// calls everything outside the patches a hole: chunks then start and end inside grains.
struct Patchy {
    len: u64,
    patches: Vec<(u64, Vec<u8>)>,
}

impl BlockDev for Patchy {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        buf.fill(0);
        let end = offset + buf.len() as u64;
        for (at, data) in &self.patches {
            let s = (*at).max(offset);
            let e = (at + data.len() as u64).min(end);
            if s < e {
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&data[(s - at) as usize..(e - at) as usize]);
            }
        }
        Ok(())
    }
    fn extent_at(&self, offset: u64) -> Result<Extent> {
        let mut next = self.len;
        for (at, data) in &self.patches {
            let e = at + data.len() as u64;
            if offset >= *at && offset < e {
                return Ok(Extent {
                    kind: ExtentKind::Data,
                    len: e - offset,
                });
            }
            if *at > offset {
                next = next.min(*at);
            }
        }
        Ok(Extent {
            kind: ExtentKind::Unallocated,
            len: next - offset,
        })
    }
    fn name(&self) -> &str {
        "patchy"
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Half compressible, never all zero.
            ((x % 7) as u8) | 1
        })
        .collect()
}

fn convert(src: &dyn BlockDev, out: &Path, o: &VmdkOptions) {
    let mut sink = create_sink(out, src.len(), o, false).unwrap();
    copy(src, &mut *sink, &CopyOptions::default(), &mut |_| {}).unwrap();
}

fn qemu_check(out: &Path) {
    let o = Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("No errors were found"),
        "qemu-img check {}: {text}{}",
        out.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn qemu_info(out: &Path) -> serde_json::Value {
    let o = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success());
    serde_json::from_slice(&o.stdout).unwrap()
}

/// qemu-img reads `out` as `expect` (our source, padded with zeroes to whole sectors),
/// calls it a VMDK of the right sub-format and size, finds no errors; our reader agrees.
fn verify(out: &Path, expect: &[u8], sub: VmdkSubformat) {
    let padded_len = expect.len().next_multiple_of(512);
    let mut padded = expect.to_vec();
    padded.resize(padded_len, 0);
    assert_eq!(
        common::qemu_raw_sha256(out, Some("vmdk")),
        sha(&padded),
        "{}",
        out.display()
    );
    qemu_check(out);
    let info = qemu_info(out);
    assert_eq!(info["format"], "vmdk");
    assert_eq!(info["virtual-size"], padded_len as u64);
    let data = &info["format-specific"]["data"];
    assert_eq!(data["create-type"], sub.as_str());
    assert_eq!(
        data["extents"][0]["compressed"].as_bool().unwrap_or(false),
        sub == VmdkSubformat::StreamOptimized
    );
    common::assert_same_as_qemu(out, Some("vmdk"));
}

#[test]
fn fixtures_both_subformats() {
    if !common::have("qemu-img") {
        return;
    }
    let base = common::fixtures("base");
    let dir = tempfile::tempdir().unwrap();
    for name in ["data-64m.raw", "data-odd.raw"] {
        let path = base.join(name);
        let src = RawFile::open(&path, false).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for sub in BOTH {
            let out = dir.path().join(format!("{name}.{}.vmdk", sub.as_str()));
            convert(&src, &out, &opts(sub));
            verify(&out, &bytes, sub);
        }
    }
    // Compression shrinks the stream below the sparse file.
    let s = std::fs::metadata(dir.path().join("data-64m.raw.streamOptimized.vmdk"))
        .unwrap()
        .len();
    let m = std::fs::metadata(dir.path().join("data-64m.raw.monolithicSparse.vmdk"))
        .unwrap()
        .len();
    assert!(s < m, "stream {s} vs sparse {m}");
}

#[test]
fn chunks_cutting_grains_and_many_tables() {
    if !common::have("qemu-img") {
        return;
    }
    // 70 MiB + 1000 bytes: three grain tables, the last grain cut by the disk's end;
    // patches start and end inside grains, one spans a table boundary, two share a grain.
    let len = (70 << 20) + 1000;
    let src = Patchy {
        len,
        patches: vec![
            (4096, pattern(8192, 1)),
            (65536 + 512, pattern(100, 2)),
            (65536 + 40000, pattern(3000, 3)),
            ((32 << 20) - 70000, pattern(150_000, 4)),
            ((50 << 20) + 12345, pattern(3 << 20, 5)),
            (len - 300, pattern(300, 6)),
        ],
    };
    let mut expect = vec![0u8; len as usize];
    src.read_at(&mut expect, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for sub in BOTH {
        let out = dir.path().join(format!("p.{}.vmdk", sub.as_str()));
        convert(&src, &out, &opts(sub));
        verify(&out, &expect, sub);
        // Only grains holding data are stored: well under the disk's size.
        let size = std::fs::metadata(&out).unwrap().len();
        assert!(size < 8 << 20, "{sub:?}: {size}");
        if sub == VmdkSubformat::StreamOptimized {
            check_stream_order(&out);
        }
    }
}

#[test]
fn large_sparse_disk_stays_small() {
    if !common::have("qemu-img") {
        return;
    }
    // 200 GiB with a few patches: 6400 grain tables, nearly all empty.
    let len = 200u64 << 30;
    let src = Patchy {
        len,
        patches: vec![
            (1 << 20, pattern(70_000, 7)),
            ((150 << 30) + 777, pattern(200_000, 8)),
            (len - 4096, pattern(4096, 9)),
        ],
    };
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.raw");
    {
        let f = std::fs::File::create(&reference).unwrap();
        f.set_len(len).unwrap();
        use std::os::unix::fs::FileExt;
        for (at, d) in &src.patches {
            f.write_all_at(d, *at).unwrap();
        }
    }
    for sub in BOTH {
        let out = dir.path().join(format!("big.{}.vmdk", sub.as_str()));
        convert(&src, &out, &opts(sub));
        qemu_check(&out);
        let st = Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(&reference)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{sub:?}: {}",
            String::from_utf8_lossy(&st.stdout)
        );
        // Our reader, at the patches.
        let img = open_image(&out, &Default::default()).unwrap();
        assert_eq!(img.len(), len);
        for (at, d) in &src.patches {
            let mut b = vec![0u8; d.len()];
            img.read_at(&mut b, *at).unwrap();
            assert!(b == *d, "{sub:?} at {at}");
        }
        // Disk usage stays small (the sparse file's reserved tables are holes).
        let used = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&out).unwrap().blocks() * 512
        };
        assert!(used < 40 << 20, "{sub:?}: {used}");
        if sub == VmdkSubformat::StreamOptimized {
            check_stream_order(&out);
        }
    }
}

#[test]
fn empty_disk_and_options() {
    if !common::have("qemu-img") {
        return;
    }
    let src = Patchy {
        len: 3 << 20,
        patches: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let o = VmdkOptions {
        subformat: VmdkSubformat::StreamOptimized,
        adapter_type: AdapterType::Ide,
        hw_version: "11".into(),
        tools_version: Some("10346".into()),
        compression_level: 1,
    };
    let out = dir.path().join("empty.vmdk");
    convert(&src, &out, &o);
    verify(&out, &vec![0u8; 3 << 20], VmdkSubformat::StreamOptimized);
    check_stream_order(&out);
    let desc = std::fs::read(&out).unwrap();
    let text = String::from_utf8_lossy(&desc[512..512 * 21]);
    assert!(text.contains("ddb.adapterType = \"ide\""), "{text}");
    assert!(text.contains("ddb.virtualHWVersion = \"11\""));
    assert!(text.contains("ddb.toolsVersion = \"10346\""));
    assert!(text.contains("ddb.geometry.heads = \"16\""));
    assert!(text.contains("RW 6144 SPARSE \"empty.vmdk\""));
    // The whole file: header and descriptor (one grain's room), directory marker and
    // directory, footer marker and footer, end of stream.
    assert_eq!(desc.len(), (128 + 5) * 512);
}

#[test]
fn cancel_and_refuse_overwrite_leave_nothing() {
    let src = Patchy {
        len: 16 << 20,
        patches: vec![(0, pattern(16 << 20, 3))],
    };
    for sub in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("c.vmdk");
        let mut sink = create_sink(&out, src.len(), &opts(sub), false).unwrap();
        let o = CopyOptions::default();
        o.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(copy(&src, &mut *sink, &o, &mut |_| {}).is_err());
        drop(sink);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{sub:?}");
        std::fs::write(&out, b"keep").unwrap();
        assert!(create_sink(&out, 1 << 20, &opts(sub), false).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Walks a stream front to back as a streaming reader would and checks VMware's rules:
/// the header defers to the footer; grains come in increasing order; each grain table
/// follows its grains and precedes any grain of a later table; then the directory, the
/// footer and the end-of-stream marker, which ends the file; and the directory and
/// tables found through the footer point at exactly those places.
fn check_stream_order(out: &Path) {
    let f = std::fs::read(out).unwrap();
    assert_eq!(&f[0..4], b"KDMV");
    assert_eq!(le32(&f, 4), 3);
    assert_eq!(le32(&f, 8), 0x30001);
    assert_eq!(le64(&f, 56), u64::MAX, "header gdOffset");
    let overhead = le64(&f, 64) as usize;
    let mut pos = overhead * 512;
    let mut last_lba: Option<u64> = None;
    let mut open_table: Option<u64> = None;
    let mut tables_seen: Vec<(u64, usize)> = Vec::new();
    let mut grain_at = std::collections::HashMap::new();
    let mut gd_at = None;
    loop {
        assert!(pos + 512 <= f.len(), "ran off the end at {pos}");
        let val = le64(&f, pos);
        let size = le32(&f, pos + 8) as usize;
        if size != 0 {
            assert!(last_lba.is_none_or(|l| val > l), "grain order at {pos}");
            assert!(gd_at.is_none(), "grain after the directory");
            let table = val / 128 / 512;
            if let Some(t) = open_table {
                assert_eq!(
                    t, table,
                    "grain of table {table} before table {t} was closed"
                );
            }
            assert!(
                tables_seen.iter().all(|(t, _)| *t < table),
                "grain of an already written table"
            );
            open_table = Some(table);
            last_lba = Some(val);
            grain_at.insert(val, pos);
            pos += (12 + size).next_multiple_of(512);
            continue;
        }
        match le32(&f, pos + 12) {
            1 => {
                assert_eq!(val, 4);
                let t = open_table
                    .take()
                    .expect("a grain table with no grains before it");
                tables_seen.push((t, pos + 512));
                pos += 512 + 2048;
            }
            2 => {
                assert!(open_table.is_none(), "grains without their table");
                gd_at = Some(pos + 512);
                pos += 512 + val as usize * 512;
            }
            3 => {
                assert_eq!(val, 1);
                assert_eq!(&f[pos + 512..pos + 516], b"KDMV");
                let footer_gd = le64(&f, pos + 512 + 56) as usize * 512;
                assert_eq!(Some(footer_gd), gd_at, "footer gdOffset");
                pos += 1024;
            }
            0 => {
                assert_eq!(val, 0);
                assert_eq!(pos + 512, f.len(), "end-of-stream is the last sector");
                assert!(f[pos..].iter().all(|&b| b == 0));
                break;
            }
            t => panic!("unknown marker type {t} at {pos}"),
        }
    }
    // Footer: the second-to-last sector, after its marker.
    assert_eq!(le32(&f, f.len() - 1536 + 12), 3);
    let gd = gd_at.expect("no grain directory");
    let capacity = le64(&f, 12);
    let tables = capacity.div_ceil(128 * 512) as usize;
    let mut seen = tables_seen.iter();
    for i in 0..tables {
        let e = le32(&f, gd + 4 * i) as usize * 512;
        if e == 0 {
            continue;
        }
        let &(t, at) = seen.next().expect("directory entry for an unwritten table");
        assert_eq!((t as usize, at), (i, e));
        for j in 0..512 {
            let g = le32(&f, e + 4 * j) as usize * 512;
            if g != 0 {
                let lba = (i * 512 + j) as u64 * 128;
                assert_eq!(grain_at.get(&lba), Some(&g), "table {i} entry {j}");
            }
        }
    }
    assert!(
        seen.next().is_none(),
        "a written table the directory misses"
    );
}

#[test]
fn zero_size_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for sub in BOTH {
        let out = dir.path().join("z.vmdk");
        let e = create_sink(&out, 0, &opts(sub), false).err().unwrap();
        assert_eq!(e.kind(), transplant_formats::ErrorKind::Unsupported);
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
