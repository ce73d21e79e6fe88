//! The VHDX writer against qemu-img: 1 MiB and 32 MiB blocks, 512 and 4096-byte logical
//! sectors, odd sizes, chunks that cut blocks, disks large enough for the BAT's sector
//! bitmap entries to matter, ZERO or NOT_PRESENT for empty blocks, cancelled copies.

mod common;

use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use transplant_formats::copy::{copy, CopyOptions};
use transplant_formats::output::{VhdxOptions, VhdxSink};
use transplant_formats::{open_image, BlockDev, Extent, ExtentKind, RawFile, Result};

const MIB: u64 = 1 << 20;

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A disk made of a few data patches over zeroes, of any size, with an extent map that
/// calls everything outside the patches a hole.
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
            (x as u8) | 1
        })
        .collect()
}

fn convert(src: &dyn BlockDev, out: &Path, o: &VhdxOptions) {
    let mut sink = VhdxSink::create(out, src.len(), o, false).unwrap();
    copy(src, &mut sink, &CopyOptions::default(), &mut |_| {}).unwrap();
}

fn qemu_check(out: &Path) {
    let o = Command::new("qemu-img")
        .args(["check", "-f", "vhdx"])
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

/// qemu-img reads `out` as `expect` padded with zeroes to `sector`, reports the block
/// size and virtual size, finds no errors; our reader agrees.
fn verify(out: &Path, expect: &[u8], o: &VhdxOptions) {
    let padded_len = expect.len().next_multiple_of(o.logical_sector as usize);
    let mut padded = expect.to_vec();
    padded.resize(padded_len, 0);
    assert_eq!(
        common::qemu_raw_sha256(out, Some("vhdx")),
        sha(&padded),
        "{}",
        out.display()
    );
    qemu_check(out);
    let info = qemu_info(out);
    assert_eq!(info["format"], "vhdx");
    assert_eq!(info["virtual-size"], padded_len as u64);
    assert_eq!(info["cluster-size"], u64::from(o.block_size));
    common::assert_same_as_qemu(out, Some("vhdx"));
}

fn blocks(mib: u32) -> VhdxOptions {
    VhdxOptions {
        block_size: mib << 20,
        ..Default::default()
    }
}

/// Payload blocks the file holds: its length past the fixed 4 MiB of metadata and BAT.
fn stored_blocks(out: &Path, o: &VhdxOptions) -> u64 {
    let len = std::fs::metadata(out).unwrap().len();
    (len - 4 * MIB) / u64::from(o.block_size)
}

#[test]
fn fixtures_at_two_block_sizes() {
    if !common::have("qemu-img") {
        return;
    }
    let base = common::fixtures("base");
    let dir = tempfile::tempdir().unwrap();
    for name in ["data-64m.raw", "data-odd.raw"] {
        let path = base.join(name);
        let src = RawFile::open(&path, false).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for mib in [1, 32] {
            let o = blocks(mib);
            let out = dir.path().join(format!("{name}.{mib}.vhdx"));
            convert(&src, &out, &o);
            verify(&out, &bytes, &o);
        }
    }
}

#[test]
fn chunks_cutting_blocks_zero_blocks_and_4k_sectors() {
    if !common::have("qemu-img") {
        return;
    }
    // 1 MiB blocks: patches straddle blocks, one block is touched only by zeroes that
    // the extent map calls data, several blocks are never touched.
    let len = 20 * MIB + 1234;
    let src = Patchy {
        len,
        patches: vec![
            (MIB - 4096, pattern(8192, 1)),
            (3 * MIB + 100, pattern(10, 2)),
            (5 * MIB, vec![0u8; MIB as usize]),
            (9 * MIB + 7, pattern((2 * MIB) as usize, 3)),
            (len - 34, pattern(34, 4)),
        ],
    };
    let mut expect = vec![0u8; len as usize];
    src.read_at(&mut expect, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, o) in [
        blocks(1),
        VhdxOptions {
            zero_blocks: true,
            ..blocks(1)
        },
        VhdxOptions {
            logical_sector: 4096,
            ..blocks(2)
        },
    ]
    .iter()
    .enumerate()
    {
        let out = dir.path().join(format!("p{i}.vhdx"));
        convert(&src, &out, o);
        if o.logical_sector == 512 {
            verify(&out, &expect, o);
        } else {
            // qemu-img (10.0) opens only 512-byte logical sectors: our reader checks these.
            let img = open_image(&out, &Default::default()).unwrap();
            let mut padded = expect.clone();
            padded.resize(expect.len().next_multiple_of(4096), 0);
            assert_eq!(img.len(), padded.len() as u64);
            assert_eq!(common::sha256_dev(&*img), sha(&padded));
            assert_eq!(common::sha256_dev_by_extents(&*img), sha(&padded));
        }
        // Blocks 0, 1, 3, 9, 10, 11, 20 (1 MiB) hold data; the zero block is not stored.
        // (qemu-img map cannot tell: its VHDX driver reports every block as data.)
        let want = if o.block_size == 1 << 20 { 7 } else { 5 };
        assert_eq!(stored_blocks(&out, o), want, "{o:?}");
    }
}

#[test]
fn bitmap_entries_interleave_past_a_chunk() {
    if !common::have("qemu-img") {
        return;
    }
    // 1 MiB blocks of 512-byte sectors: a sector bitmap entry after every 4096 payload
    // entries (4 GiB). Data past 4 GiB and 8 GiB lands after one and two of them.
    let len = 9 * 1024 * MIB + 512;
    let src = Patchy {
        len,
        patches: vec![
            (MIB, pattern(5000, 5)),
            (4096 * MIB - 100, pattern(300, 6)),
            (8192 * MIB + 3 * MIB, pattern(MIB as usize, 7)),
            (len - 512, pattern(512, 8)),
        ],
    };
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&reference).unwrap();
        f.set_len(len).unwrap();
        for (at, d) in &src.patches {
            f.write_all_at(d, *at).unwrap();
        }
    }
    let o = blocks(1);
    let out = dir.path().join("big.vhdx");
    convert(&src, &out, &o);
    qemu_check(&out);
    let st = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "vhdx"])
        .arg(&reference)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
    assert_eq!(qemu_info(&out)["virtual-size"], len);
    assert_eq!(stored_blocks(&out, &o), 5);
    let img = open_image(&out, &Default::default()).unwrap();
    for (at, d) in &src.patches {
        let mut b = vec![0u8; d.len()];
        img.read_at(&mut b, *at).unwrap();
        assert!(b == *d, "at {at}");
    }
}

#[test]
fn options_are_checked_and_cancel_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.vhdx");
    for bad in [
        blocks(3),
        blocks(512),
        VhdxOptions {
            logical_sector: 1024,
            ..Default::default()
        },
    ] {
        assert!(VhdxSink::create(&out, MIB, &bad, false).is_err());
    }
    assert!(VhdxSink::create(&out, (64 << 40) + 1, &VhdxOptions::default(), false).is_err());
    let src = Patchy {
        len: 16 * MIB,
        patches: vec![(0, pattern(16 << 20, 3))],
    };
    let mut sink = VhdxSink::create(&out, src.len(), &VhdxOptions::default(), false).unwrap();
    let o = CopyOptions::default();
    o.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(copy(&src, &mut sink, &o, &mut |_| {}).is_err());
    drop(sink);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn zero_size_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("z.vhdx");
    let e = VhdxSink::create(&out, 0, &VhdxOptions::default(), false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), transplant_formats::ErrorKind::Unsupported);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
