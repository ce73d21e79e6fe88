//! qcow2 reader against qemu-img: versions, cluster sizes, compression, zero clusters,
//! extended L2, backing chains; refusals; hostile headers and tables.

mod common;

use std::path::Path;
use std::sync::Arc;
use transplant_formats::{open_image, BlockDev, ErrorKind, MemDev, OpenCtx, OpenOptions};

fn fixtures() -> Option<std::path::PathBuf> {
    if !common::have("qemu-img") || !common::have("qemu-io") {
        return None;
    }
    Some(common::fixtures("qcow2"))
}

#[test]
fn every_kind_reads_like_qemu() {
    let Some(dir) = fixtures() else { return };
    for f in [
        "v2.qcow2",
        "v3.qcow2",
        "c512.qcow2",
        "c2m.qcow2",
        "zlib.qcow2",
        "zstd.qcow2",
        "zlib-v2.qcow2",
        "odd.qcow2",
        "zeros.qcow2",
        "zeros-v2.qcow2",
        "extl2.qcow2",
        "over-raw.qcow2",
        "over-vmdk.qcow2",
        "level3.qcow2",
        "noformat.qcow2",
        "over-small.qcow2",
        "dirty.qcow2",
    ] {
        common::assert_same_as_qemu(&dir.join(f), Some("qcow2"));
    }
}

#[test]
fn info_describes_chain_and_features() {
    let Some(dir) = fixtures() else { return };
    let img = open_image(&dir.join("level3.qcow2"), &OpenOptions::default()).unwrap();
    let i = img.info();
    assert_eq!(i.subformat.as_deref(), Some("v3"));
    assert_eq!(i.backing_reference.as_deref(), Some("level2.qcow2"));
    let b2 = i.backing.as_ref().unwrap();
    let b1 = b2.backing.as_ref().unwrap();
    assert_eq!(
        b1.backing.as_ref().unwrap().format,
        transplant_formats::Format::Raw
    );
    let z = open_image(&dir.join("zstd.qcow2"), &OpenOptions::default())
        .unwrap()
        .info();
    assert_eq!(z.details["compression"], "zstd");
    let x = open_image(&dir.join("extl2.qcow2"), &OpenOptions::default())
        .unwrap()
        .info();
    assert_eq!(x.details["extended_l2"], "true");
    // Zero clusters show as zero runs in the map.
    let zi = open_image(&dir.join("zeros.qcow2"), &OpenOptions::default()).unwrap();
    let e = zi.extent_at(0).unwrap();
    assert_eq!(e.kind, transplant_formats::ExtentKind::Zero);
    assert_eq!(e.len, 1 << 20);
}

#[test]
fn dirty_and_corrupt_bits_are_readable_with_notes() {
    let Some(dir) = fixtures() else { return };
    let i = open_image(&dir.join("dirty.qcow2"), &OpenOptions::default())
        .unwrap()
        .info();
    assert!(i.dirty);
    assert!(
        i.notes.iter().any(|n| n.contains("refcounts")),
        "{:?}",
        i.notes
    );
    assert_eq!(i.details["refcount_bits"], "16");
    assert_eq!(i.details["nb_snapshots"], "0");
    let clean = open_image(&dir.join("v3.qcow2"), &OpenOptions::default())
        .unwrap()
        .info();
    assert!(!clean.dirty);
    assert_eq!(clean.cluster_size, Some(65536));
    assert_eq!(
        open_image(&dir.join("v2.qcow2"), &OpenOptions::default())
            .unwrap()
            .info()
            .subformat
            .as_deref(),
        Some("v2")
    );
    // The corrupt bit (1): still readable, with a note.
    let mut b = std::fs::read(dir.join("v3.qcow2")).unwrap();
    b[79] |= 2;
    let img = open_bytes(b).unwrap();
    let i = img.info();
    assert!(i.dirty);
    assert!(
        i.notes.iter().any(|n| n.contains("corrupt")),
        "{:?}",
        i.notes
    );
    assert_eq!(
        common::sha256_dev(&*img),
        common::qemu_raw_sha256(&dir.join("v3.qcow2"), Some("qcow2"))
    );
}

#[test]
fn encrypted_and_external_data_are_refused_clearly() {
    let Some(dir) = fixtures() else { return };
    for (f, word) in [
        ("encrypted.qcow2", "encrypted"),
        ("external.qcow2", "external data file"),
    ] {
        let e = open_image(&dir.join(f), &OpenOptions::default())
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains(word), "{e}");
    }
}

#[test]
fn eight_threads_read_the_same_image() {
    let Some(dir) = fixtures() else { return };
    let path = dir.join("zlib.qcow2");
    let reference = common::qemu_raw_sha256(&path, Some("qcow2"));
    let img = open_image(&path, &OpenOptions::default()).unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| assert_eq!(common::sha256_dev(&*img), reference));
        }
    });
}

#[test]
fn backing_policy_loops_and_depth() {
    let Some(dir) = fixtures() else { return };
    let t = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        common::run(
            std::process::Command::new("qemu-img")
                .args(args)
                .current_dir(t.path()),
        )
    };
    run(&["create", "-q", "-f", "qcow2", "a.qcow2", "4M"]);
    run(&[
        "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2",
    ]);
    run(&["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2"]);
    let e = open_image(&t.path().join("b.qcow2"), &OpenOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("loops"), "{e}");
    // Backing names outside the folder.
    std::fs::write(t.path().join("../x.raw"), b"").ok();
    for name in ["../x.raw", "/etc/hostname"] {
        run(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            name,
            "-F",
            "raw",
            "out.qcow2",
            "4M",
        ]);
        let e = open_image(&t.path().join("out.qcow2"), &OpenOptions::default())
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Refused, "{name}: {e}");
    }
    // Depth: a 3-level chain with max_depth 2.
    let opts = OpenOptions {
        max_depth: 2,
        ..Default::default()
    };
    let e = open_image(&dir.join("level3.qcow2"), &opts).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(open_image(
        &dir.join("level3.qcow2"),
        &OpenOptions {
            max_depth: 3,
            ..Default::default()
        }
    )
    .is_ok());
}

fn open_bytes(b: Vec<u8>) -> transplant_formats::Result<Arc<dyn transplant_formats::Image>> {
    transplant_formats::qcow2::open(
        Arc::new(MemDev::new("hostile.qcow2", b)),
        Path::new("hostile.qcow2"),
        &OpenCtx::detached(),
    )
}

fn read_all(img: &dyn BlockDev) -> transplant_formats::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < img.len() {
        let n = (img.len() - pos).min(buf.len() as u64) as usize;
        img.read_at(&mut buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[test]
fn hostile_inputs_are_clean_errors() {
    let Some(dir) = fixtures() else { return };
    let good = std::fs::read(dir.join("zlib-v2.qcow2")).unwrap();
    let v3 = std::fs::read(dir.join("v3.qcow2")).unwrap();
    let be64 = |b: &[u8], o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
    let set64 = |b: &mut Vec<u8>, o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_be_bytes());
    let set32 = |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_be_bytes());
    let mut open_errors: Vec<(&str, Vec<u8>, ErrorKind)> = Vec::new();
    open_errors.push(("truncated header", good[..50].to_vec(), ErrorKind::Corrupt));
    let mut b = good.clone();
    set64(&mut b, 40, 1 << 40);
    open_errors.push(("L1 past EOF", b, ErrorKind::Corrupt));
    let mut b = good.clone();
    set32(&mut b, 36, 0x7fff_ffff);
    set64(&mut b, 24, 1 << 50);
    open_errors.push(("huge L1", b, ErrorKind::Corrupt));
    for bits in [8u32, 30] {
        let mut b = good.clone();
        set32(&mut b, 20, bits);
        open_errors.push(("cluster_bits", b, ErrorKind::Corrupt));
    }
    let mut b = v3.clone();
    set32(&mut b, 100, 50);
    open_errors.push(("header_length", b, ErrorKind::Corrupt));
    let mut b = v3.clone();
    set64(&mut b, 72, 1 << 40);
    open_errors.push(("unknown incompatible bit", b, ErrorKind::Unsupported));
    let mut b = good.clone();
    set64(&mut b, 8, 512);
    set32(&mut b, 16, 5000);
    open_errors.push(("backing name 5000", b, ErrorKind::Corrupt));
    let mut b = v3.clone();
    set64(&mut b, 72, 8);
    open_errors.push(("zstd bit without the type byte", b, ErrorKind::Corrupt));
    let mut b = v3.clone();
    set64(&mut b, 72, 16);
    set32(&mut b, 20, 9);
    open_errors.push(("extended L2 with 512 B clusters", b, ErrorKind::Corrupt));
    let l1 = be64(&good, 40) as usize;
    let mut b = good.clone();
    set64(&mut b, l1, 1 << 45);
    open_errors.push(("L1 entry past EOF", b, ErrorKind::Corrupt));
    for (what, bytes, kind) in open_errors {
        let e = open_bytes(bytes)
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"));
        assert_eq!(e.kind(), kind, "{what}: {e}");
        assert!(e.to_string().contains("hostile.qcow2"), "{what}: {e}");
    }
    // L2 entries pointing past EOF (a normal and a compressed one): open works, the read
    // fails naming the L2 table.
    let l2 = (be64(&good, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let mut b = good.clone();
    let first = be64(&b, l2);
    set64(&mut b, l2, (first & (3 << 62)) | (1 << 40));
    let img = open_bytes(b).unwrap();
    let e = read_all(&*img).unwrap_err();
    assert!(e.to_string().contains("L2 table"), "{e}");
    let v3l1 = be64(&v3, 40) as usize;
    let v3l2 = (be64(&v3, v3l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let mut b = v3.clone();
    set64(&mut b, v3l2, 1 << 45);
    let img = open_bytes(b).unwrap();
    assert!(read_all(&*img)
        .unwrap_err()
        .to_string()
        .contains("L2 table"));
    // A misaligned data cluster.
    {
        let mut b = v3.clone();
        set64(&mut b, v3l2, (1 << 63) | 0x10200);
        let img = open_bytes(b).unwrap();
        let e = read_all(&*img).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("misaligned"), "{e}");
    }
    // Backing files given as JSON or a protocol are not files.
    for name in [
        "json:{\"driver\":\"raw\"}",
        "nbd://host/disk",
        "file:/etc/hostname",
    ] {
        let mut b = v3.clone();
        b[0x800..0x800 + name.len()].copy_from_slice(name.as_bytes());
        set64(&mut b, 8, 0x800);
        set32(&mut b, 16, name.len() as u32);
        let e = open_bytes(b).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{name}: {e}");
        assert!(e.to_string().contains("protocol"), "{e}");
    }
    // A detached image naming a backing file is refused.
    let b = std::fs::read(dir.join("over-raw.qcow2")).unwrap();
    assert_eq!(open_bytes(b).err().unwrap().kind(), ErrorKind::Refused);
    // Truncated data: a read past the file's end is an error or zeroes, never a panic.
    let img = open_bytes(good[..good.len() / 2].to_vec());
    if let Ok(img) = img {
        let _ = read_all(&*img);
    }
}

#[test]
fn empty_large_disk_maps_in_one_extent() {
    if !common::have("qemu-img") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("empty.qcow2");
    common::run(std::process::Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "qcow2",
        p.to_str().unwrap(),
        "1T",
    ]));
    let img = open_image(&p, &OpenOptions::default()).unwrap();
    let e = img.extent_at(0).unwrap();
    assert_eq!(e.kind, transplant_formats::ExtentKind::Unallocated);
    assert_eq!(e.len, 1 << 40);
    let mut buf = vec![1u8; 4 << 20];
    img.read_at(&mut buf, (1 << 40) - (4 << 20)).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

/// Odd-sized reads cut compressed clusters and subclusters in pieces (the FUSE pattern):
/// the bytes must be the same as one big read.
#[test]
fn odd_sized_reads_match_whole_reads() {
    let Some(dir) = fixtures() else { return };
    for f in ["zlib.qcow2", "zstd.qcow2", "extl2.qcow2", "level3.qcow2"] {
        let img = open_image(&dir.join(f), &OpenOptions::default()).unwrap();
        let len = img.len().min(12 << 20) as usize;
        let mut whole = vec![0u8; len];
        img.read_at(&mut whole, 0).unwrap();
        let mut pieces = vec![0u8; len];
        let mut pos = 0;
        for step in [12345usize, 4096, 70000, 511, 200000].iter().cycle() {
            if pos >= len {
                break;
            }
            let n = (*step).min(len - pos);
            img.read_at(&mut pieces[pos..pos + n], pos as u64).unwrap();
            pos += n;
        }
        assert!(whole == pieces, "{f}: piecewise read differs");
    }
}

/// Every L1 entry of a 1 TiB disk points at the same L2 table of zero clusters: walking
/// the map and reading must take one step per table, not one per cluster.
#[test]
fn shared_l2_table_of_zeroes_walks_quickly() {
    let mut b = vec![0u8; 0x30000];
    let put32 = |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_be_bytes());
    let put64 = |b: &mut Vec<u8>, o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_be_bytes());
    b[..4].copy_from_slice(b"QFI\xfb");
    put32(&mut b, 4, 3);
    put32(&mut b, 20, 16);
    put64(&mut b, 24, 1 << 40);
    put32(&mut b, 36, 2048);
    put64(&mut b, 40, 0x10000);
    put32(&mut b, 96, 4);
    put32(&mut b, 100, 104);
    for i in 0..2048 {
        put64(&mut b, 0x10000 + i * 8, 0x20000 | (1 << 63));
    }
    for i in 0..8192 {
        put64(&mut b, 0x20000 + i * 8, 1);
    }
    let img = open_bytes(b).unwrap();
    let t = std::time::Instant::now();
    let mut pos = 0;
    while pos < img.len() {
        let e = img.extent_at(pos).unwrap();
        assert_eq!(e.kind, transplant_formats::ExtentKind::Zero);
        pos += e.len;
    }
    let mut buf = vec![1u8; 3 << 20];
    img.read_at(&mut buf, (1 << 40) - (3 << 20)).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
}
