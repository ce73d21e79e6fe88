//! Edge cases beside the main matrix: inline_data is read (through the engine), a directory
//! block with rec_len 0 is a clean corrupt error, a guest symlink loop ends as a loop
//! error through `resolve_path`, and a listing agrees with debugfs.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, MemDev, RawFile};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::{resolve_path, Error, Filesystem};

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok && std::env::var_os("CI").is_some() {
        panic!("{tool} is required when CI is set");
    }
    ok
}

fn mkfs(extra: &[&str], src: &Path, img: &Path) {
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .args(extra)
        .arg("-d")
        .arg(src)
        .arg(img)
        .arg("8M")
        .status()
        .unwrap();
    assert!(st.success());
}

fn small_tree(root: &Path) {
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("d/f"), "content\n").unwrap();
    std::fs::write(root.join("small"), "hi\n").unwrap();
    std::os::unix::fs::symlink("b", root.join("a")).unwrap();
    std::os::unix::fs::symlink("a", root.join("b")).unwrap();
    std::os::unix::fs::symlink("/d/../../../d/f", root.join("up")).unwrap();
}

fn debugfs(img: &Path, cmd: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", cmd])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn resolve_path_stays_inside_and_stops_loops() {
    if !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    small_tree(&src);
    let img = dir.path().join("fs.img");
    mkfs(&[], &src, &img);
    let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(&img, false).unwrap());
    let fs = Ext4Fs::open(dev, "ext4").unwrap();
    assert_eq!(resolve_path(&fs, b"/up", true).unwrap(), b"/d/f");
    assert_eq!(resolve_path(&fs, b"/up", false).unwrap(), b"/up");
    assert_eq!(resolve_path(&fs, b"/../../d/./f", true).unwrap(), b"/d/f");
    assert!(matches!(
        resolve_path(&fs, b"/a", true),
        Err(Error::Loop(_))
    ));
    assert!(matches!(
        resolve_path(&fs, b"/small/x", true),
        Err(Error::NotADirectory(_))
    ));
    assert!(matches!(
        resolve_path(&fs, b"/nope", true),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn listing_agrees_with_debugfs() {
    if !have("mkfs.ext4") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    small_tree(&src);
    for i in 0..50 {
        std::fs::write(src.join(format!("d/n{i}")), "x").unwrap();
    }
    let img = dir.path().join("fs.img");
    mkfs(&[], &src, &img);
    let mut want: Vec<String> = debugfs(&img, "ls -l /d")
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .filter(|n| n != "." && n != "..")
        .collect();
    want.sort();
    let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(&img, false).unwrap());
    let fs = Ext4Fs::open(dev, "ext4").unwrap();
    let mut got: Vec<String> = fs
        .read_dir(b"/d")
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn inline_data_is_read_by_the_engine() {
    if !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    small_tree(&src);
    let img = dir.path().join("fs.img");
    mkfs(&["-O", "inline_data"], &src, &img);
    let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(&img, false).unwrap());
    // ext4-view refuses inline_data; the open falls back to this crate's engine (the
    // details are in ext4_inline.rs).
    let fs = Ext4Fs::open(dev, "ext4").unwrap();
    let mut b = [0u8; 16];
    let n = fs.read(b"/small", 0, &mut b).unwrap();
    assert_eq!(&b[..n], b"hi\n");
}

#[test]
fn zero_rec_len_is_a_clean_error() {
    if !have("mkfs.ext4") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    small_tree(&src);
    let img = dir.path().join("fs.img");
    // Without checksums, so the bad rec_len itself is what the reader meets.
    mkfs(&["-O", "^metadata_csum", "-b", "1024"], &src, &img);
    let block: u64 = debugfs(&img, "bmap /d 0").trim().parse().unwrap();
    let mut bytes = std::fs::read(&img).unwrap();
    let at = (block * 1024 + 4) as usize; // rec_len of the "." entry
    bytes[at] = 0;
    bytes[at + 1] = 0;
    let dev: Arc<dyn BlockDev> = Arc::new(MemDev::new("hostile.img", bytes));
    let fs = Ext4Fs::open(dev, "ext4").unwrap();
    let e = fs.read_dir(b"/d").unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

/// Found by fuzzing: a block count implying billions of groups made ext4-view allocate
/// their descriptors (24 GiB) before reading any, even with the count's high half set on
/// a filesystem without 64bit; it is a corrupt error now.
#[test]
fn a_huge_block_count_is_corrupt_not_an_allocation() {
    if !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    small_tree(&src);
    let img = dir.path().join("fs.img");
    mkfs(&["-O", "^64bit"], &src, &img);
    let mut b = std::fs::read(&img).unwrap();
    b[1024 + 0x150..1024 + 0x154].copy_from_slice(&3072u32.to_le_bytes());
    let dev: Arc<dyn BlockDev> = Arc::new(transplant_formats::MemDev::new("huge", b));
    match Ext4Fs::open(dev, "ext4") {
        Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains("block groups"), "{e}"),
        Err(e) => panic!("expected a corrupt error, got {e}"),
        Ok(_) => panic!("opened a filesystem of 2^43 blocks"),
    }
}
