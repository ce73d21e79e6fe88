//! VHDX reader: qemu-made fixed and dynamic images against `qemu-img convert -O raw`, a
//! differencing disk made by patching one (qemu cannot make or read those), and hostile
//! inputs.

mod common;

use std::path::Path;
use std::sync::Arc;
use transplant_formats::{open_image, BlockDev, ErrorKind, MemDev, OpenCtx, OpenOptions};

fn fixtures() -> Option<std::path::PathBuf> {
    if !common::have("qemu-img") {
        return None;
    }
    Some(common::fixtures("vhdx"))
}

#[test]
fn qemu_made_images_read_like_qemu() {
    let Some(dir) = fixtures() else { return };
    for f in [
        "dynamic.vhdx",
        "fixed.vhdx",
        "dynamic-1m.vhdx",
        "dynamic-odd.vhdx",
        "zero-state.vhdx",
    ] {
        common::assert_same_as_qemu(&dir.join(f), Some("vhdx"));
    }
    let d = open_image(&dir.join("dynamic-1m.vhdx"), &OpenOptions::default()).unwrap();
    let i = d.info();
    assert_eq!(i.subformat.as_deref(), Some("dynamic"));
    assert_eq!(i.cluster_size, Some(1 << 20));
    assert_eq!(i.details["logical_sector_size"], "512");
    let f = open_image(&dir.join("fixed.vhdx"), &OpenOptions::default()).unwrap();
    assert_eq!(f.info().subformat.as_deref(), Some("fixed"));
}

fn crc_fix(b: &mut [u8], len: usize) {
    b[4..8].copy_from_slice(&[0; 4]);
    let c = crc32c::crc32c(&b[..len]);
    b[4..8].copy_from_slice(&c.to_le_bytes());
}

fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

const BAT_GUID: [u8; 16] = [
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
];
const META_GUID: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];
const FILE_PARAMS: [u8; 16] = [
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d, 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b,
];
const LOCATOR: [u8; 16] = [
    0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c,
];

/// (BAT offset, metadata offset) from the first region table.
fn regions(img: &[u8]) -> (usize, usize) {
    let r = 192 * 1024;
    let n = u32le(img, r + 8) as usize;
    let (mut bat, mut meta) = (0, 0);
    for i in 0..n {
        let e = r + 16 + i * 32;
        if img[e..e + 16] == BAT_GUID {
            bat = u64le(img, e + 16) as usize;
        }
        if img[e..e + 16] == META_GUID {
            meta = u64le(img, e + 16) as usize;
        }
    }
    (bat, meta)
}

/// Makes a differencing disk from a qemu-made dynamic image with 1 MiB blocks: block 0
/// partially present (sectors chosen by `keep`), blocks 1 and 2 not present (parent),
/// block 3 zero, the rest the child's own.
fn make_differencing(img: Vec<u8>, parent: &str, keep: &dyn Fn(u64) -> bool) -> Vec<u8> {
    make_differencing_with(img, &[("relative_path", parent)], keep)
}

/// Like `make_differencing`, with the locator's path entries given.
fn make_differencing_with(
    mut img: Vec<u8>,
    paths: &[(&str, &str)],
    keep: &dyn Fn(u64) -> bool,
) -> Vec<u8> {
    let (bat, meta) = regions(&img);
    // File parameters: set HasParent.
    let count = u16::from_le_bytes([img[meta + 10], img[meta + 11]]) as usize;
    for i in 0..count {
        let e = meta + 32 + i * 32;
        if img[e..e + 16] == FILE_PARAMS {
            let off = meta + u32le(&img, e + 16) as usize;
            img[off + 4] |= 2;
        }
    }
    // A parent locator item at 512 KiB into the region.
    let item_off = 512 * 1024;
    let mut item = Vec::new();
    item.extend_from_slice(&[
        0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a, 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59,
        0x13,
    ]);
    item.extend_from_slice(&0u16.to_le_bytes());
    let mut pairs = vec![("parent_linkage", "{00000000-0000-0000-0000-000000000000}")];
    pairs.extend_from_slice(paths);
    item.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    let mut strings = Vec::new();
    let base = 20 + pairs.len() * 12;
    for (k, v) in pairs {
        let k16: Vec<u8> = k.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let v16: Vec<u8> = v.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let ko = base + strings.len();
        strings.extend_from_slice(&k16);
        let vo = base + strings.len();
        strings.extend_from_slice(&v16);
        item.extend_from_slice(&(ko as u32).to_le_bytes());
        item.extend_from_slice(&(vo as u32).to_le_bytes());
        item.extend_from_slice(&(k16.len() as u16).to_le_bytes());
        item.extend_from_slice(&(v16.len() as u16).to_le_bytes());
    }
    item.extend_from_slice(&strings);
    img[meta + item_off..meta + item_off + item.len()].copy_from_slice(&item);
    let e = meta + 32 + count * 32;
    img[e..e + 16].copy_from_slice(&LOCATOR);
    img[e + 16..e + 20].copy_from_slice(&(item_off as u32).to_le_bytes());
    img[e + 20..e + 24].copy_from_slice(&(item.len() as u32).to_le_bytes());
    img[e + 24..e + 28].copy_from_slice(&(4u32 | 2).to_le_bytes());
    img[meta + 10..meta + 12].copy_from_slice(&((count + 1) as u16).to_le_bytes());
    // A sector bitmap block appended at the end (MiB-aligned), entry 4096 of the BAT.
    let end = img.len().div_ceil(1 << 20) << 20;
    img.resize(end + (1 << 20), 0);
    for s in 0..2048u64 {
        if keep(s) {
            img[end + (s / 8) as usize] |= 1 << (s % 8);
        }
    }
    let set = |img: &mut Vec<u8>, idx: usize, v: u64| {
        img[bat + idx * 8..bat + idx * 8 + 8].copy_from_slice(&v.to_le_bytes())
    };
    set(&mut img, 4096, (end as u64) | 6);
    let b0 = u64le(&img, bat) & !7;
    set(&mut img, 0, b0 | 7);
    set(&mut img, 1, 0);
    set(&mut img, 2, 0);
    set(&mut img, 3, 2);
    img
}

#[test]
fn differencing_disk_reads_parent_child_and_bitmap() {
    let Some(_) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let size = 9 << 20;
    let a: Vec<u8> = (0..size).map(|i| (i % 197) as u8 + 1).collect();
    let b: Vec<u8> = (0..size).map(|i| (i % 5) as u8 + 50).collect();
    std::fs::write(dir.path().join("a.raw"), &a).unwrap();
    std::fs::write(dir.path().join("b.raw"), &b).unwrap();
    for (src, dst) in [("a.raw", "parent.vhdx"), ("b.raw", "childsrc.vhdx")] {
        common::run(
            std::process::Command::new("qemu-img")
                .args([
                    "convert",
                    "-O",
                    "vhdx",
                    "-o",
                    "subformat=dynamic,block_size=1M",
                ])
                .arg(dir.path().join(src))
                .arg(dir.path().join(dst)),
        );
    }
    let keep = |s: u64| s.is_multiple_of(5) || (100..300).contains(&s);
    let child = make_differencing(
        std::fs::read(dir.path().join("childsrc.vhdx")).unwrap(),
        "parent.vhdx",
        &keep,
    );
    std::fs::write(dir.path().join("child.vhdx"), &child).unwrap();
    let img = open_image(&dir.path().join("child.vhdx"), &OpenOptions::default()).unwrap();
    let mut expect = b.clone();
    for s in 0..2048usize {
        if !keep(s as u64) {
            expect[s * 512..s * 512 + 512].copy_from_slice(&a[s * 512..s * 512 + 512]);
        }
    }
    expect[1 << 20..3 << 20].copy_from_slice(&a[1 << 20..3 << 20]);
    expect[3 << 20..4 << 20].fill(0);
    let mut got = vec![0u8; size];
    img.read_at(&mut got, 0).unwrap();
    assert!(got == expect, "differencing read differs");
    assert_eq!(
        common::sha256_dev_by_extents(&*img),
        common::sha256_dev(&*img)
    );
    let info = img.info();
    assert_eq!(info.subformat.as_deref(), Some("differencing"));
    assert_eq!(info.backing_reference.as_deref(), Some("parent.vhdx"));

    // Parents outside the folder are refused; a disk naming itself loops.
    let bad = make_differencing(
        std::fs::read(dir.path().join("childsrc.vhdx")).unwrap(),
        "..\\up.vhdx",
        &keep,
    );
    std::fs::write(dir.path().join("bad.vhdx"), &bad).unwrap();
    let e = open_image(&dir.path().join("bad.vhdx"), &OpenOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    let me = make_differencing(
        std::fs::read(dir.path().join("childsrc.vhdx")).unwrap(),
        "me.vhdx",
        &keep,
    );
    std::fs::write(dir.path().join("me.vhdx"), &me).unwrap();
    let e = open_image(&dir.path().join("me.vhdx"), &OpenOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("loops"), "{e}");
    // a's parent is b and b's parent is a.
    let src = std::fs::read(dir.path().join("childsrc.vhdx")).unwrap();
    std::fs::write(
        dir.path().join("a.vhdx"),
        make_differencing(src.clone(), "b.vhdx", &keep),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.vhdx"),
        make_differencing(src.clone(), ".\\a.vhdx", &keep),
    )
    .unwrap();
    let e = open_image(&dir.path().join("a.vhdx"), &OpenOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("loops"), "{e}");
    // A stale relative path: the absolute Windows path's file name, found in this folder.
    let abs = make_differencing_with(
        src.clone(),
        &[
            ("relative_path", "..\\gone\\parent.vhdx"),
            ("absolute_win32_path", "C:\\vms\\parent.vhdx"),
        ],
        &keep,
    );
    std::fs::write(dir.path().join("abs.vhdx"), &abs).unwrap();
    let a = open_image(&dir.path().join("abs.vhdx"), &OpenOptions::default()).unwrap();
    let mut got2 = vec![0u8; size];
    a.read_at(&mut got2, 0).unwrap();
    assert!(
        got2 == expect,
        "read through the absolute path's parent differs"
    );
    // An absolute path alone naming a file elsewhere still only looks in this folder.
    let far = make_differencing_with(
        src,
        &[("absolute_win32_path", "C:\\vms\\elsewhere.vhdx")],
        &keep,
    );
    std::fs::write(dir.path().join("far.vhdx"), &far).unwrap();
    assert!(open_image(&dir.path().join("far.vhdx"), &OpenOptions::default()).is_err());
}

fn open_bytes(b: Vec<u8>) -> transplant_formats::Result<Arc<dyn transplant_formats::Image>> {
    transplant_formats::vhdx::open(
        Arc::new(MemDev::new("hostile.vhdx", b)),
        Path::new("hostile.vhdx"),
        &OpenCtx::detached(),
    )
}

#[test]
fn hostile_inputs_are_clean_errors() {
    let Some(dir) = fixtures() else { return };
    let good = std::fs::read(dir.join("small.vhdx")).unwrap();
    assert!(open_bytes(good.clone()).is_ok());
    let (bat, meta) = regions(&good);
    let h1 = 64 * 1024;
    let h2 = 128 * 1024;
    let mut cases: Vec<(&str, Vec<u8>, ErrorKind)> = Vec::new();
    cases.push(("truncated", good[..300_000].to_vec(), ErrorKind::Corrupt));
    let mut b = good.clone();
    b[h1 + 100] ^= 1;
    b[h2 + 100] ^= 1;
    cases.push(("both headers", b, ErrorKind::Corrupt));
    // One damaged header: opens with a note.
    let mut b = good.clone();
    b[h1 + 100] ^= 1;
    let img = open_bytes(b).unwrap();
    assert!(img.info().notes.iter().any(|n| n.contains("damaged")));
    // Log GUID set in both headers but no entry of that log: corrupt, never misread.
    let mut b = good.clone();
    for h in [h1, h2] {
        b[h + 48] = 1;
        crc_fix(&mut b[h..h + 4096], 4096);
    }
    cases.push(("dirty log without entries", b, ErrorKind::Corrupt));
    // Region entry past EOF (both copies).
    let mut b = good.clone();
    for r in [192 * 1024, 256 * 1024] {
        b[r + 16 + 16..r + 16 + 24].copy_from_slice(&(1u64 << 50).to_le_bytes());
        crc_fix(&mut b[r..r + 65536], 65536);
    }
    cases.push(("region past EOF", b, ErrorKind::Corrupt));
    let mut b = good.clone();
    b[bat..bat + 8].copy_from_slice(&((1u64 << 45) | 6).to_le_bytes());
    cases.push(("BAT entry past EOF", b, ErrorKind::Corrupt));
    let mut b = good.clone();
    b[bat..bat + 8].copy_from_slice(&5u64.to_le_bytes());
    cases.push(("BAT bad state", b, ErrorKind::Corrupt));
    let item = |name: [u8; 16]| -> usize {
        let count = u16::from_le_bytes([good[meta + 10], good[meta + 11]]) as usize;
        (0..count)
            .map(|i| meta + 32 + i * 32)
            .find(|&e| good[e..e + 16] == name)
            .map(|e| meta + u32le(&good, e + 16) as usize)
            .unwrap()
    };
    let fp = item(FILE_PARAMS);
    for (what, bs) in [
        ("block size 0", 0u32),
        ("block size 3 MiB", 3 << 20),
        ("block size 512 MiB", 512 << 20),
    ] {
        let mut b = good.clone();
        b[fp..fp + 4].copy_from_slice(&bs.to_le_bytes());
        cases.push((what, b, ErrorKind::Corrupt));
    }
    let vs = item([
        0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4,
        0xb8,
    ]);
    let mut b = good.clone();
    b[vs..vs + 8].copy_from_slice(&(1u64 << 63).to_le_bytes());
    cases.push(("virtual size 2^63", b, ErrorKind::Corrupt));
    let mut b = good.clone();
    let e0 = meta + 32;
    b[e0 + 16..e0 + 20].copy_from_slice(&0xfff0_0000u32.to_le_bytes());
    cases.push(("metadata item outside region", b, ErrorKind::Corrupt));
    let diff = make_differencing(good.clone(), "p.vhdx", &|_| true);
    cases.push(("detached parent", diff, ErrorKind::Refused));
    for (what, bytes, kind) in cases {
        let e = open_bytes(bytes)
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"));
        assert_eq!(e.kind(), kind, "{what}: {e}");
        assert!(e.to_string().contains("hostile.vhdx"), "{what}: {e}");
    }
}

/// Writes a one-entry log into a copy of `small.vhdx`: a data descriptor replacing the
/// first 4 KiB of payload block 0 and a zero descriptor clearing the next 8 KiB, with the
/// log GUID set in both headers. Returns the image and the file offset of block 0.
fn make_logged(mut img: Vec<u8>, seq: u64) -> (Vec<u8>, u64) {
    let (bat, _) = regions(&img);
    let block0 = (u64le(&img, bat) >> 20) << 20;
    assert!(block0 > 0, "block 0 of small.vhdx is allocated");
    let guid: [u8; 16] = *b"transplant-log-1";
    let (log_off, log_len) = (u64le(&img, 64 * 1024 + 72), u32le(&img, 64 * 1024 + 68));
    assert!(log_len >= 1 << 20);
    let mut e = vec![0u8; 8192];
    e[..4].copy_from_slice(b"loge");
    e[8..12].copy_from_slice(&8192u32.to_le_bytes());
    e[12..16].copy_from_slice(&0u32.to_le_bytes()); // tail: this entry
    e[16..24].copy_from_slice(&seq.to_le_bytes());
    e[24..28].copy_from_slice(&2u32.to_le_bytes());
    e[32..48].copy_from_slice(&guid);
    e[48..56].copy_from_slice(&(img.len() as u64).to_le_bytes());
    e[56..64].copy_from_slice(&(img.len() as u64).to_le_bytes());
    let sector: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    // Data descriptor.
    let d = 64;
    e[d..d + 4].copy_from_slice(b"desc");
    e[d + 4..d + 8].copy_from_slice(&sector[4092..]);
    e[d + 8..d + 16].copy_from_slice(&sector[..8]);
    e[d + 16..d + 24].copy_from_slice(&block0.to_le_bytes());
    e[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
    // Zero descriptor.
    let z = 96;
    e[z..z + 4].copy_from_slice(b"zero");
    e[z + 8..z + 16].copy_from_slice(&8192u64.to_le_bytes());
    e[z + 16..z + 24].copy_from_slice(&(block0 + 4096).to_le_bytes());
    e[z + 24..z + 32].copy_from_slice(&seq.to_le_bytes());
    // Data sector.
    let s = 4096;
    e[s..s + 4].copy_from_slice(b"data");
    e[s + 4..s + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
    e[s + 8..s + 4092].copy_from_slice(&sector[8..4092]);
    e[s + 4092..s + 4096].copy_from_slice(&(seq as u32).to_le_bytes());
    crc_fix(&mut e, 8192);
    let lo = log_off as usize;
    img[lo..lo + 8192].copy_from_slice(&e);
    for h in [64 * 1024, 128 * 1024] {
        img[h + 48..h + 64].copy_from_slice(&guid);
        crc_fix(&mut img[h..], 4096);
    }
    (img, block0)
}

#[test]
fn log_is_replayed_in_memory() {
    let Some(dir) = fixtures() else { return };
    let good = std::fs::read(dir.join("small.vhdx")).unwrap();
    let raw = std::fs::read(common::fixtures("base").join("data-9m.raw")).unwrap();
    let (img, _) = make_logged(good, 5);
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("logged.vhdx");
    std::fs::write(&p, &img).unwrap();
    let before = std::fs::read(&p).unwrap();
    let d = open_image(&p, &OpenOptions::default()).unwrap();
    let i = d.info();
    assert!(i.dirty);
    assert!(
        i.notes
            .iter()
            .any(|n| n.contains("log replayed in memory (1 entries)")),
        "{:?}",
        i.notes
    );
    let mut expect = raw.clone();
    let sector: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    expect[..4096].copy_from_slice(&sector);
    expect[4096..12288].fill(0);
    let mut got = vec![0u8; raw.len()];
    d.read_at(&mut got, 0).unwrap();
    assert!(got == expect, "replayed contents differ");
    drop(d);
    assert!(
        std::fs::read(&p).unwrap() == before,
        "the input was not written"
    );
    // qemu replays a log only when opening read-write: `qemu-img check -r all` on a copy
    // writes the replayed image, which must read like ours.
    let q = t.path().join("qemu.vhdx");
    std::fs::write(&q, &img).unwrap();
    let ok = std::process::Command::new("qemu-img")
        .args(["check", "-r", "all", "-f", "vhdx"])
        .arg(&q)
        .output()
        .unwrap();
    if ok.status.success() {
        let out = t.path().join("qemu.raw");
        let st = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "vhdx", "-O", "raw"])
            .arg(&q)
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        assert!(
            std::fs::read(&out).unwrap() == expect,
            "qemu's replay differs"
        );
    } else {
        eprintln!("qemu-img check -r all failed: {:?}", ok);
    }
}

#[test]
fn hostile_logs_are_clean_errors() {
    let Some(dir) = fixtures() else { return };
    let good = std::fs::read(dir.join("small.vhdx")).unwrap();
    let (img, _) = make_logged(good.clone(), 5);
    let log_off = u64le(&img, 64 * 1024 + 72) as usize;
    // A huge descriptor count: the entry no longer validates, so no active log is found.
    let mut huge = img.clone();
    huge[log_off + 24..log_off + 28].copy_from_slice(&u32::MAX.to_le_bytes());
    crc_fix(&mut huge[log_off..], 8192);
    let e = open_bytes(huge).err().expect("huge descriptor count");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("VHDX log"), "{e}");
    // Bad CRC of the only entry.
    let mut bad = img.clone();
    bad[log_off + 5000] ^= 1;
    let e = open_bytes(bad).err().expect("bad crc");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    // An unknown descriptor type.
    let mut unk = img.clone();
    unk[log_off + 96..log_off + 100].copy_from_slice(b"what");
    crc_fix(&mut unk[log_off..], 8192);
    let e = open_bytes(unk).err().expect("unknown descriptor");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("qemu-img check -r all"), "{e}");
    // A log that says the file was longer than it is.
    let mut short = img.clone();
    short[log_off + 48..log_off + 56].copy_from_slice(&(1u64 << 40).to_le_bytes());
    crc_fix(&mut short[log_off..], 8192);
    let e = open_bytes(short).err().expect("flushed offset past end");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    // A log region past the end of the file.
    let mut past = img.clone();
    for h in [64 * 1024, 128 * 1024] {
        past[h + 72..h + 80].copy_from_slice(&(1u64 << 40).to_le_bytes());
        crc_fix(&mut past[h..], 4096);
    }
    let e = open_bytes(past).err().expect("log past end");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}
