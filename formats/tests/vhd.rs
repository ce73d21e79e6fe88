//! VHD (vpc) reader: qemu-made fixed and dynamic disks against `qemu-img convert -O raw`,
//! a differencing disk built here (qemu cannot make one), and hostile inputs.

mod common;

use std::path::Path;
use std::sync::Arc;
use transplant_formats::{open_image, BlockDev, ErrorKind, MemDev, OpenCtx, OpenOptions};

fn fixtures() -> Option<std::path::PathBuf> {
    if !common::have("qemu-img") {
        return None;
    }
    Some(common::fixtures("vhd"))
}

#[test]
fn qemu_made_disks_read_like_qemu() {
    let Some(dir) = fixtures() else { return };
    for f in [
        "dynamic.vhd",
        "fixed.vhd",
        "dynamic-force.vhd",
        "fixed-odd.vhd",
        "dynamic-odd.vhd",
    ] {
        common::assert_same_as_qemu(&dir.join(f), Some("vpc"));
    }
    let img = open_image(&dir.join("dynamic.vhd"), &OpenOptions::default()).unwrap();
    let info = img.info();
    assert_eq!(info.subformat.as_deref(), Some("dynamic"));
    assert_eq!(info.cluster_size, Some(2 * 1024 * 1024));
    assert_eq!(info.details["creator_app"], "qemu");
    assert_eq!(info.details["disk_type"], "3 (dynamic)");
    // The base data has holes, which qemu leaves unallocated in the block table.
    let holes = transplant_formats::extents_in(&*img, 0, img.len())
        .map(|r| r.unwrap())
        .filter(|(_, e)| e.kind == transplant_formats::ExtentKind::Unallocated)
        .count();
    assert!(holes > 0);
    assert_eq!(info.details["geometry_size"], info.virtual_size.to_string());
    let fixed = open_image(&dir.join("fixed.vhd"), &OpenOptions::default()).unwrap();
    assert_eq!(fixed.info().subformat.as_deref(), Some("fixed"));
}

#[test]
fn virtual_size_agrees_with_qemu_img_info() {
    let Some(dir) = fixtures() else { return };
    for f in ["dynamic.vhd", "fixed-odd.vhd", "dynamic-force.vhd"] {
        let out = std::process::Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json"])
            .arg(dir.join(f))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let size: u64 = text
            // The image's own size comes last; "children" (the host file) come first.
            .rsplit("\"virtual-size\":")
            .next()
            .and_then(|s| s.trim().split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        let img = open_image(&dir.join(f), &OpenOptions::default()).unwrap();
        assert_eq!(img.len(), size, "{f}");
    }
}

/// Field offsets in the footer and dynamic header.
fn be32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn fix_checksum(b: &mut [u8], field: usize) {
    be32(b, field, 0);
    let sum = b.iter().fold(0u32, |s, &x| s.wrapping_add(x as u32));
    be32(b, field, !sum);
}

/// Turns a qemu-made dynamic VHD (bytes) into a differencing disk whose parent is
/// `parent_name` (a relative W2ru locator), keeping only the sectors `keep` says in each
/// allocated block. Returns the new bytes.
fn make_differencing(mut img: Vec<u8>, parent_name: &str, keep: impl Fn(u64) -> bool) -> Vec<u8> {
    let len = img.len();
    let data_offset = u64::from_be_bytes(img[16..24].try_into().unwrap()) as usize;
    let table =
        u64::from_be_bytes(img[data_offset + 16..data_offset + 24].try_into().unwrap()) as usize;
    let entries =
        u32::from_be_bytes(img[data_offset + 28..data_offset + 32].try_into().unwrap()) as usize;
    let block =
        u32::from_be_bytes(img[data_offset + 32..data_offset + 36].try_into().unwrap()) as u64;
    // Locator data appended before the footer; move the footer.
    let footer = img[len - 512..].to_vec();
    img.truncate(len - 512);
    let loc_off = img.len();
    let name: Vec<u8> = parent_name
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let mut loc = name.clone();
    loc.resize(512, 0);
    img.extend_from_slice(&loc);
    let mut footer = footer;
    be32(&mut footer, 60, 4);
    fix_checksum(&mut footer, 64);
    img.extend_from_slice(&footer);
    img[..512].copy_from_slice(&footer);
    // Dynamic header: locator 0 = W2ru.
    let h = data_offset;
    let l = h + 576;
    img[l..l + 4].copy_from_slice(b"W2ru");
    be32(&mut img, l + 4, 512);
    be32(&mut img, l + 8, name.len() as u32);
    img[l + 16..l + 24].copy_from_slice(&(loc_off as u64).to_be_bytes());
    let mut hdr = img[h..h + 1024].to_vec();
    fix_checksum(&mut hdr, 36);
    img[h..h + 1024].copy_from_slice(&hdr);
    // Bitmaps: keep the chosen sectors.
    let bitmap_len = ((block / 512).div_ceil(8)).div_ceil(512) * 512;
    for i in 0..entries {
        let e = u32::from_be_bytes(img[table + i * 4..table + i * 4 + 4].try_into().unwrap());
        if e == u32::MAX {
            continue;
        }
        let bm = e as usize * 512;
        for s in 0..block / 512 {
            let global = i as u64 * (block / 512) + s;
            let byte = bm + (s / 8) as usize;
            let mask = 0x80u8 >> (s % 8);
            if keep(global) {
                img[byte] |= mask;
            } else {
                img[byte] &= !mask;
            }
        }
        let _ = bitmap_len;
    }
    img
}

#[test]
fn differencing_disk_merges_parent_and_child_by_bitmap() {
    let Some(fx) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Parent: a raw-backed dynamic VHD of pattern A; child data: pattern B.
    let size = 9 * 1024 * 1024usize;
    let a: Vec<u8> = (0..size).map(|i| (i % 199) as u8).collect();
    let b: Vec<u8> = (0..size).map(|i| (i % 7) as u8 + 100).collect();
    std::fs::write(dir.path().join("a.raw"), &a).unwrap();
    std::fs::write(dir.path().join("b.raw"), &b).unwrap();
    for (src, dst) in [("a.raw", "parent.vhd"), ("b.raw", "child-src.vhd")] {
        common::run(
            std::process::Command::new("qemu-img")
                .args(["convert", "-O", "vpc", "-o", "subformat=dynamic"])
                .arg(dir.path().join(src))
                .arg(dir.path().join(dst)),
        );
    }
    let keep = |sector: u64| sector.is_multiple_of(3) || (2000..2100).contains(&sector);
    let child = make_differencing(
        std::fs::read(dir.path().join("child-src.vhd")).unwrap(),
        ".\\parent.vhd",
        keep,
    );
    std::fs::write(dir.path().join("child.vhd"), &child).unwrap();
    let img = open_image(&dir.path().join("child.vhd"), &OpenOptions::default()).unwrap();
    let n = img.len() as usize;
    let mut expect = vec![0u8; n];
    for (s, chunk) in expect.chunks_mut(512).enumerate() {
        let src = if keep(s as u64) { &b } else { &a };
        let start = s * 512;
        for (k, byte) in chunk.iter_mut().enumerate() {
            *byte = src.get(start + k).copied().unwrap_or(0);
        }
    }
    let mut got = vec![0u8; n];
    img.read_at(&mut got, 0).unwrap();
    assert!(got == expect, "differencing read differs");
    let digest = common::sha256_dev_by_extents(&*img);
    assert_eq!(digest, common::sha256_dev(&*img));
    let info = img.info();
    assert_eq!(info.subformat.as_deref(), Some("differencing"));
    assert_eq!(
        info.backing.as_ref().unwrap().subformat.as_deref(),
        Some("dynamic")
    );
    let _ = fx;

    // A parent named outside the folder is refused, and a loop is corrupt.
    let out = make_differencing(
        std::fs::read(dir.path().join("child-src.vhd")).unwrap(),
        "..\\..\\x.vhd",
        keep,
    );
    std::fs::write(dir.path().join("out.vhd"), &out).unwrap();
    let e = open_image(&dir.path().join("out.vhd"), &OpenOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    let selfref = make_differencing(
        std::fs::read(dir.path().join("child-src.vhd")).unwrap(),
        "self.vhd",
        keep,
    );
    std::fs::write(dir.path().join("self.vhd"), &selfref).unwrap();
    let e = open_image(&dir.path().join("self.vhd"), &OpenOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("loops"), "{e}");
}

fn open_bytes(b: Vec<u8>) -> transplant_formats::Result<Arc<dyn transplant_formats::Image>> {
    transplant_formats::vhd::open(
        Arc::new(MemDev::new("hostile.vhd", b)),
        Path::new("hostile.vhd"),
        &OpenCtx::detached(),
    )
}

#[test]
fn hostile_inputs_are_clean_errors() {
    let Some(dir) = fixtures() else { return };
    let good = std::fs::read(dir.join("small.vhd")).unwrap();
    let fixed = std::fs::read(dir.join("fixed-odd.vhd")).unwrap();
    let len = good.len();
    let data_offset = u64::from_be_bytes(good[16..24].try_into().unwrap()) as usize;
    let mut cases: Vec<(&str, Vec<u8>, ErrorKind)> = Vec::new();
    cases.push(("truncated", good[..300].to_vec(), ErrorKind::Corrupt));
    // Damaged end footer with the copy at 0 intact: opens, with a note.
    let mut b = good.clone();
    b[len - 400] ^= 0xff;
    let img = open_bytes(b).unwrap();
    assert!(img.info().notes.iter().any(|n| n.contains("damaged")));
    // Both footers damaged.
    let mut b = good.clone();
    b[len - 400] ^= 0xff;
    b[100] ^= 0xff;
    cases.push(("both footers", b, ErrorKind::Corrupt));
    // A fixed disk's only footer damaged.
    let mut b = fixed.clone();
    let fl = b.len();
    b[fl - 400] ^= 0xff;
    cases.push(("fixed footer", b, ErrorKind::Corrupt));
    let patch_header = |f: &dyn Fn(&mut [u8])| {
        let mut b = good.clone();
        f(&mut b[data_offset..data_offset + 1024]);
        fix_checksum(&mut b[data_offset..data_offset + 1024], 36);
        b
    };
    cases.push((
        "BAT past EOF",
        patch_header(&|h| h[16..24].copy_from_slice(&(1u64 << 40).to_be_bytes())),
        ErrorKind::Corrupt,
    ));
    cases.push((
        "block size 0",
        patch_header(&|h| be32(h, 32, 0)),
        ErrorKind::Corrupt,
    ));
    cases.push((
        "block size 3 MiB",
        patch_header(&|h| be32(h, 32, 3 << 20)),
        ErrorKind::Corrupt,
    ));
    cases.push((
        "block size 1 GiB",
        patch_header(&|h| be32(h, 32, 1 << 30)),
        ErrorKind::Corrupt,
    ));
    cases.push((
        "max entries tiny",
        patch_header(&|h| be32(h, 28, 1)),
        ErrorKind::Corrupt,
    ));
    // max entries huge is fine as long as only the needed entries are read.
    assert!(open_bytes(patch_header(&|h| be32(h, 28, u32::MAX))).is_ok());
    // A BAT entry past the end.
    let table =
        u64::from_be_bytes(good[data_offset + 16..data_offset + 24].try_into().unwrap()) as usize;
    let mut b = good.clone();
    be32(&mut b, table, 0x7fff_ffff);
    cases.push(("BAT entry past EOF", b, ErrorKind::Corrupt));
    // Dynamic header offset into the footer / past the end.
    let mut b = good.clone();
    for f in [0usize, len - 512] {
        b[f + 16..f + 24].copy_from_slice(&((len - 100) as u64).to_be_bytes());
        let mut ft = b[f..f + 512].to_vec();
        fix_checksum(&mut ft, 64);
        b[f..f + 512].copy_from_slice(&ft);
    }
    cases.push(("header into footer", b, ErrorKind::Corrupt));
    // A well-formed footer of a disk type this reader does not handle.
    let mut b = fixed.clone();
    let fl = b.len();
    be32(&mut b[fl - 512..], 60, 5);
    fix_checksum(&mut b[fl - 512..], 64);
    cases.push(("disk type 5", b, ErrorKind::Unsupported));
    // A differencing disk in memory cannot name its parent.
    let diff = make_differencing(good.clone(), "p.vhd", |_| true);
    cases.push(("detached parent", diff, ErrorKind::Refused));
    for (what, bytes, kind) in cases {
        let e = open_bytes(bytes)
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"));
        assert_eq!(e.kind(), kind, "{what}: {e}");
        assert!(e.to_string().contains("hostile.vhd"), "{what}: {e}");
    }
}

/// Early Virtual PC wrote fixed disks with a 511-byte footer; qemu does not read them, so the
/// reference is the same disk with the usual footer.
#[test]
fn old_511_byte_footer_reads_like_the_512_byte_one() {
    let Some(dir) = fixtures() else { return };
    let fixed = std::fs::read(dir.join("fixed-odd.vhd")).unwrap();
    let want = open_bytes(fixed.clone()).unwrap();
    let mut old = fixed[..fixed.len() - 512].to_vec();
    old.extend_from_slice(&fixed[fixed.len() - 512..fixed.len() - 1]);
    let got = open_bytes(old).unwrap();
    assert_eq!(got.len(), want.len());
    assert_eq!(common::sha256_dev(&*got), common::sha256_dev(&*want));
    assert_eq!(got.info().subformat.as_deref(), Some("fixed"));
}

/// Sets locator 0's platform code and fixes the header checksum.
fn set_locator_code(img: &mut [u8], code: &[u8; 4]) {
    let h = u64::from_be_bytes(img[16..24].try_into().unwrap()) as usize;
    img[h + 576..h + 580].copy_from_slice(code);
    fix_checksum(&mut img[h..h + 1024], 36);
}

#[test]
fn parent_locators_stay_in_the_folder_and_chains_cannot_loop() {
    let Some(fx) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(fx.join("small.vhd")).unwrap();
    std::fs::copy(fx.join("small.vhd"), dir.path().join("parent.vhd")).unwrap();
    // An absolute W2ku path elsewhere: only its file name is looked for, beside the image.
    let mut abs = make_differencing(src.clone(), "C:\\Images\\parent.vhd", |s| s % 2 == 0);
    set_locator_code(&mut abs, b"W2ku");
    std::fs::write(dir.path().join("abs.vhd"), &abs).unwrap();
    let img = open_image(&dir.path().join("abs.vhd"), &OpenOptions::default()).unwrap();
    assert_eq!(
        img.info().backing_reference.as_deref(),
        Some("C:\\Images\\parent.vhd")
    );
    // The same disk as the parent wherever the bitmap is clear: reads equal the parent's.
    assert_eq!(
        common::sha256_dev(&*img),
        common::sha256_dev(&*open_bytes(src.clone()).unwrap())
    );
    // An absolute Unix path outside the folder never reaches /etc: the name is not here.
    let mut etc = make_differencing(src.clone(), "/etc/passwd", |_| false);
    set_locator_code(&mut etc, b"W2ku");
    std::fs::write(dir.path().join("etc.vhd"), &etc).unwrap();
    let e = open_image(&dir.path().join("etc.vhd"), &OpenOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    // a.vhd -> b.vhd -> a.vhd.
    let a = make_differencing(src.clone(), "b.vhd", |_| false);
    let b = make_differencing(src.clone(), "a.vhd", |_| false);
    std::fs::write(dir.path().join("a.vhd"), &a).unwrap();
    std::fs::write(dir.path().join("b.vhd"), &b).unwrap();
    let e = open_image(&dir.path().join("a.vhd"), &OpenOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("loops"), "{e}");
}

/// The size rule depends on the creator application; qemu is the reference for each.
#[test]
fn creator_app_decides_between_geometry_and_footer_size() {
    let Some(fx) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(fx.join("dynamic-force.vhd")).unwrap();
    let len = src.len();
    for app in [b"vpc ", b"win ", b"tap\0", b"d2v "] {
        let mut b = src.clone();
        for f in [0, len - 512] {
            b[f + 28..f + 32].copy_from_slice(app);
            // qemu's force_size writes the maximum geometry; give it a smaller real one.
            b[f + 56..f + 60].copy_from_slice(&[0, 130, 16, 63]);
            fix_checksum(&mut b[f..f + 512], 64);
        }
        let path = dir.path().join("app.vhd");
        std::fs::write(&path, &b).unwrap();
        common::assert_same_as_qemu(&path, Some("vpc"));
        let img = open_image(&path, &OpenOptions::default()).unwrap();
        let info = img.info();
        let geometry: u64 = info.details["geometry_size"].parse().unwrap();
        let footer: u64 = info.details["footer_size"].parse().unwrap();
        assert_ne!(geometry, footer);
        let want = if app == b"vpc " { geometry } else { footer };
        assert_eq!(img.len(), want, "{}", String::from_utf8_lossy(app));
        assert!(info.notes.iter().any(|n| n.contains("differ")));
    }
}
