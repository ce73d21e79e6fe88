//! Superblock probing against `blkid -p` for what `info` names but cannot read: vfat (FAT16
//! and FAT32), xfs, btrfs, LUKS1/2, NTFS.

use std::path::Path;
use std::process::Command;
use transplant_formats::RawFile;
use transplant_fs::probe;

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

fn blkid(img: &Path, key: &str) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn check(name: &str, img: &Path) {
    let p = probe(&RawFile::open(img, false).unwrap())
        .unwrap()
        .unwrap_or_else(|| panic!("{name}: nothing found"));
    assert_eq!(Some(p.kind.clone()), blkid(img, "TYPE"), "{name}");
    assert_eq!(p.uuid, blkid(img, "UUID"), "{name} uuid");
    // NTFS keeps its label in the $Volume MFT record, which probing does not parse (yet).
    if name == "ntfs" {
        return;
    }
    if let Some(l) = blkid(img, "LABEL") {
        assert_eq!(p.label.as_deref(), Some(l.as_str()), "{name} label");
    }
}

fn blank(img: &Path, size: u64) {
    let _ = std::fs::remove_file(img);
    std::fs::File::create(img).unwrap().set_len(size).unwrap();
}

fn run(cmd: &str, args: &[&str], img: &Path) {
    let st = Command::new(cmd).args(args).arg(img).status().unwrap();
    assert!(st.success(), "{cmd} {args:?}");
}

#[test]
fn probe_agrees_with_blkid_beyond_ext() {
    if !have("blkid") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("p.img");
    if have("mkfs.vfat") {
        blank(&img, 64 << 20);
        run("mkfs.vfat", &["-F", "16", "-n", "FATLBL"], &img);
        check("fat16", &img);
        blank(&img, 64 << 20);
        run("mkfs.vfat", &["-F", "32", "-n", "FAT32L"], &img);
        check("fat32", &img);
    }
    if have("mkfs.xfs") {
        blank(&img, 300 << 20);
        run("mkfs.xfs", &["-q", "-f", "-L", "xfslbl"], &img);
        check("xfs", &img);
    }
    if have("mkfs.btrfs") {
        blank(&img, 128 << 20);
        run("mkfs.btrfs", &["-q", "-f", "-L", "btrlbl"], &img);
        check("btrfs", &img);
    }
    if have("mkntfs") {
        blank(&img, 64 << 20);
        run("mkntfs", &["-q", "-F", "-f", "-L", "ntfslbl"], &img);
        check("ntfs", &img);
    }
    if have("cryptsetup") {
        for t in ["luks1", "luks2"] {
            blank(&img, 32 << 20);
            let st = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo -n pw | cryptsetup luksFormat -q --type {t} --pbkdf-force-iterations 1000 --pbkdf pbkdf2 --key-file - {}",
                    img.display()
                ))
                .status()
                .unwrap();
            assert!(st.success(), "luksFormat {t}");
            check(t, &img);
        }
    }
}
