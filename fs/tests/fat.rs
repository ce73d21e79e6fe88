//! FAT12/16/32 against dosfstools and mtools: images made by mkfs.fat, filled by mcopy and
//! mmd (long names, NT lower-case names, a read-only file, a directory that spans several
//! clusters, a 3 MiB file), read through `FatFs` and compared with what `mdir` lists and
//! `mtype` prints; after each write `fsck.fat -n` must find nothing to fix and mtools
//! must read back exactly what was written. Needs dosfstools and mtools.

#![allow(dead_code, unused_imports)] // the write tests land next

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, Overlay, RawFile};
use transplant_fs::fat::{FatFs, FatType};
use transplant_fs::{Error, FileKind, Filesystem, NewNode, SetAttrs, Time};

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok && std::env::var_os("CI").is_some() {
        panic!("{tool} is required when CI is set");
    }
    ok
}

fn tools() -> bool {
    have("mkfs.fat") && have("fsck.fat") && have("mcopy") && have("mtype") && have("mdir")
}

fn mtools(cmd: &str, img: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd)
        .arg("-i")
        .arg(img)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Image {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// Files put in, by path, with content.
    files: BTreeMap<String, Vec<u8>>,
}

/// 1 Jan 2020 12:34:56 UTC, the mtime every file is given (mcopy -m keeps it).
const MTIME: i64 = 1_577_882_096;

impl Image {
    fn new(fat: u8, kib: u32, big: bool) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esp.img");
        let st = Command::new("mkfs.fat")
            .args([
                "-C",
                "-F",
                &fat.to_string(),
                "-n",
                "ESPTEST",
                "-i",
                "1234abcd",
            ])
            .arg(&path)
            .arg(kib.to_string())
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "mkfs.fat: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let src = dir.path().join("src");
        let mut files = BTreeMap::new();
        let mut put = |p: &str, data: Vec<u8>| {
            let host = src.join(p);
            std::fs::create_dir_all(host.parent().unwrap()).unwrap();
            std::fs::write(&host, &data).unwrap();
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(MTIME as u64);
            std::fs::File::options()
                .write(true)
                .open(&host)
                .unwrap()
                .set_modified(t)
                .unwrap();
            files.insert(format!("/{p}"), data);
        };
        put("EFI/BOOT/BOOTX64.EFI", pattern(70_000, 1));
        put("EFI/redhat/grubx64.efi", pattern(5000, 2));
        put("EFI/redhat/shimx64-redhat.efi", pattern(9000, 3));
        put(
            "EFI/redhat/grub.cfg",
            b"search --no-floppy --fs-uuid --set=dev abcd\n".to_vec(),
        );
        put("EFI/redhat/grubenv", {
            let mut v = b"# GRUB Environment Block\nsaved_entry=x\n".to_vec();
            v.resize(1024, b'#');
            v
        });
        put("A Long Name, With Spaces.txt", b"spaces\n".to_vec());
        put("ünïcødé 名前.txt", b"unicode\n".to_vec());
        put("Mixed.Case", b"".to_vec());
        for i in 0..150 {
            put(
                &format!("many/entry-number-{i:04}.conf"),
                format!("{i}\n").into_bytes(),
            );
        }
        if big {
            put("big.bin", pattern(3 << 20, 4));
        }
        let mut args: Vec<String> = vec!["-s".into(), "-m".into()];
        for e in std::fs::read_dir(&src).unwrap() {
            args.push(e.unwrap().path().to_string_lossy().into_owned());
        }
        args.push("::/".into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        mtools("mcopy", &path, &a);
        mtools("mattrib", &path, &["+r", "::/EFI/redhat/grub.cfg"]);
        Image {
            _dir: dir,
            path,
            files,
        }
    }

    fn dev(&self) -> Arc<dyn BlockDev> {
        Arc::new(RawFile::open(&self.path, false).unwrap())
    }

    fn open(&self) -> FatFs {
        FatFs::open(self.dev()).unwrap()
    }

    /// Every path mdir lists, directories with a trailing slash.
    fn mdir(&self) -> Vec<String> {
        let out = mtools("mdir", &self.path, &["-/", "-b", "::/"]);
        let mut v: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("::").map(str::to_string))
            .collect();
        v.sort();
        v
    }

    fn mtype(&self, p: &str) -> Vec<u8> {
        mtools("mtype", &self.path, &[&format!("::{p}")])
    }

    fn fsck(&self, what: &str) {
        let out = Command::new("fsck.fat")
            .arg("-n")
            .arg(&self.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fsck.fat -n after {what}:\n{text}");
        // fsck.fat -n exits 0 on a clean volume; any proposed fix is printed.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("fsck.fat ") && !l.contains("files,") && !l.is_empty())
            .filter(|l| !l.contains("No changes") && !l.contains("Leaving filesystem unchanged"))
            .filter(|l| !l.starts_with("Checking we can access the last sector"))
            .collect();
        assert!(lines.is_empty(), "fsck.fat -n after {what}:\n{text}");
    }
}

/// Walks the tree through `fs`, as mdir lists it.
fn walk(fs: &dyn Filesystem, dir: &str, out: &mut Vec<String>) {
    for e in fs.read_dir(dir.as_bytes()).unwrap() {
        let p = format!(
            "{}/{}",
            dir.trim_end_matches('/'),
            String::from_utf8(e.name).unwrap()
        );
        match e.kind {
            FileKind::Dir => {
                out.push(format!("{p}/"));
                walk(fs, &p, out);
            }
            _ => out.push(p),
        }
    }
}

fn read_all(fs: &dyn Filesystem, p: &str) -> Vec<u8> {
    let size = fs.lstat(p.as_bytes()).unwrap().size as usize;
    let mut buf = vec![0u8; size + 10];
    let mut got = 0;
    // Odd-sized reads, to cross cluster and run boundaries.
    while got < size {
        let end = (got + 7777).min(buf.len());
        let n = fs
            .read(p.as_bytes(), got as u64, &mut buf[got..end])
            .unwrap();
        assert!(n > 0, "{p}: short read at {got}");
        got += n;
    }
    buf.truncate(size);
    buf
}

/// Our listing equals mdir's, every file reads as mtype prints it and as it was put in.
fn compare(img: &Image, fs: &dyn Filesystem) {
    let mut ours = Vec::new();
    walk(fs, "/", &mut ours);
    ours.sort();
    assert_eq!(ours, img.mdir());
    for p in ours.iter().filter(|p| !p.ends_with('/')) {
        let data = read_all(fs, p);
        assert!(data == img.mtype(p), "{p}: content differs from mtype");
        if let Some(want) = img.files.get(p) {
            assert!(&data == want, "{p}: content differs from what was put in");
        }
    }
}

fn check_read(fat: u8, kib: u32, big: bool, want: FatType) {
    if !tools() {
        return;
    }
    let img = Image::new(fat, kib, big);
    let fs = img.open();
    assert_eq!(fs.fat_type(), want);
    let info = fs.info();
    assert_eq!(info.kind, "vfat");
    assert_eq!(info.label.as_deref(), Some("ESPTEST"));
    assert_eq!(info.uuid.as_deref(), Some("1234-ABCD"));
    compare(&img, &fs);
    // Metadata: modes from the read-only bit, owners 0, times as mcopy -m kept them.
    let m = fs.lstat(b"/EFI/redhat/grub.cfg").unwrap();
    assert_eq!(
        (m.kind, m.mode, m.uid, m.gid),
        (FileKind::File, 0o444, 0, 0)
    );
    assert_eq!(
        m.mtime,
        Time {
            secs: MTIME,
            nanos: 0
        }
    );
    let m = fs.lstat(b"/EFI/BOOT/BOOTX64.EFI").unwrap();
    assert_eq!((m.mode, m.size), (0o644, 70_000));
    let d = fs.lstat(b"/EFI").unwrap();
    assert_eq!((d.kind, d.mode), (FileKind::Dir, 0o755));
    // Lookups ignore ASCII case and find 8.3 aliases, as Linux's vfat does.
    assert_eq!(fs.lstat(b"/efi/boot/bootx64.efi").unwrap().size, 70_000);
    assert_eq!(fs.lstat(b"/EFI/REDHAT/GRUBX64.EFI").unwrap().size, 5000);
    assert_eq!(fs.lstat(b"/EFI/redhat/SHIMX6~1.EFI").unwrap().size, 9000);
    assert_eq!(
        fs.lstat("/ÜNÏCØDÉ 名前.txt".as_bytes())
            .ok()
            .map(|m| m.size),
        None
    );
    assert_eq!(fs.lstat("/ünïcødé 名前.TXT".as_bytes()).unwrap().size, 8);
    assert!(matches!(fs.lstat(b"/nope"), Err(Error::NotFound(_))));
    assert!(matches!(
        fs.lstat(b"/EFI/BOOT/BOOTX64.EFI/x"),
        Err(Error::NotADirectory(_))
    ));
    assert!(fs.read_link(b"/EFI/BOOT/BOOTX64.EFI").is_err());
    assert!(!fs.writable());
    assert!(fs.write_file(b"/EFI/BOOT/BOOTX64.EFI", b"x").is_err());
}

#[test]
fn read_fat12() {
    check_read(12, 8 * 1024, false, FatType::Fat12);
}

#[test]
fn read_fat16() {
    check_read(16, 20 * 1024, true, FatType::Fat16);
}

#[test]
fn read_fat32() {
    check_read(32, 40 * 1024, true, FatType::Fat32);
}
