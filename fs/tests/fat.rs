//! FAT12/16/32 against dosfstools and mtools: images made by mkfs.fat, filled by mcopy and
//! mmd (long names, NT lower-case names, a read-only file, a directory that spans several
//! clusters, a 3 MiB file), read through `FatFs` and compared with what `mdir` lists and
//! `mtype` prints; after each write `fsck.fat -n` must find nothing to fix and mtools
//! must read back exactly what was written. Needs dosfstools and mtools.

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

    /// Every file as mtools reads it, copied out at once (`mcopy -s`, faster than one
    /// mtype per file).
    fn extract(&self) -> BTreeMap<String, Vec<u8>> {
        let out = tempfile::tempdir().unwrap();
        let dest = format!("{}/", out.path().display());
        if !self.mdir().is_empty() {
            mtools("mcopy", &self.path, &["-s", "-n", "::/*", &dest]);
        }
        fn walk_host(root: &Path, dir: &Path, m: &mut BTreeMap<String, Vec<u8>>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk_host(root, &p, m);
                } else {
                    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    m.insert(format!("/{rel}"), std::fs::read(&p).unwrap());
                }
            }
        }
        let mut m = BTreeMap::new();
        walk_host(out.path(), out.path(), &mut m);
        m
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
    compare_with(img, fs, &img.files)
}

fn compare_with(img: &Image, fs: &dyn Filesystem, model: &BTreeMap<String, Vec<u8>>) {
    let mut ours = Vec::new();
    walk(fs, "/", &mut ours);
    ours.sort();
    assert_eq!(ours, img.mdir());
    let theirs = img.extract();
    for p in ours.iter().filter(|p| !p.ends_with('/')) {
        let data = read_all(fs, p);
        assert!(
            Some(&data) == theirs.get(p),
            "{p}: content differs from mtools'"
        );
        if let Some(want) = model.get(p) {
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

impl Image {
    /// Opens writable over an overlay, runs `f`, commits, and checks with fsck.fat.
    fn step(&self, what: &str, f: impl FnOnce(&FatFs) -> transplant_fs::Result<()>) {
        let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&self.path, true).unwrap());
        let ov = Arc::new(Overlay::new(base));
        let fs = FatFs::open_rw(ov.clone()).unwrap();
        assert!(fs.writable());
        f(&fs).unwrap_or_else(|e| panic!("{what}: {e}"));
        fs.sync().unwrap();
        ov.commit().unwrap();
        self.fsck(what);
    }

    /// mdir lists exactly `model` (files and, with a trailing slash, directories) and
    /// mtype prints each file's content; our reader agrees with both.
    fn expect(&self, what: &str, model: &BTreeMap<String, Vec<u8>>) {
        let mut want: Vec<String> = Vec::new();
        for p in model.keys() {
            let mut d = String::new();
            for c in p
                .trim_start_matches('/')
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .unwrap()
                .1
            {
                d.push('/');
                d.push_str(c);
                want.push(format!("{d}/"));
            }
            if !p.ends_with('/') {
                want.push(p.clone());
            }
        }
        want.sort();
        want.dedup();
        assert_eq!(self.mdir(), want, "{what}: mdir");
        let theirs = self.extract();
        for (p, data) in model.iter().filter(|(p, _)| !p.ends_with('/')) {
            assert!(
                theirs.get(p) == Some(data),
                "{what}: mtools reads {p} differently"
            );
        }
        for p in ["/EFI/redhat/grubenv", "/EFI/redhat/grubx64.efi"] {
            assert!(Some(&self.mtype(p)) == model.get(p), "{what}: mtype {p}");
        }
        compare_with(self, &self.open(), model);
    }
}

fn check_write(fat: u8, kib: u32) {
    if !tools() {
        return;
    }
    let img = Image::new(fat, kib, false);
    let mut model = img.files.clone();
    let shim = model["/EFI/redhat/shimx64-redhat.efi"].clone();

    img.step("removing EFI/BOOT", |fs| {
        fs.remove(b"/EFI/BOOT/BOOTX64.EFI")?;
        assert!(matches!(fs.remove(b"/EFI"), Err(Error::NotEmpty(_))));
        fs.remove(b"/EFI/BOOT")
    });
    model.remove("/EFI/BOOT/BOOTX64.EFI");
    img.expect("removing EFI/BOOT", &model);

    let a = SetAttrs::default();
    img.step("a new EFI/BOOT with the fallback loader", |fs| {
        fs.create(b"/EFI/BOOT", NewNode::Dir, &a)?;
        fs.create(b"/EFI/BOOT/BOOTX64.EFI", NewNode::File(&shim), &a)?;
        fs.create(b"/EFI/BOOT/grubx64.efi", NewNode::File(b"grub"), &a)?;
        fs.create(b"/EFI/BOOT/BOOTX64.CSV", NewNode::File(b""), &a)
    });
    model.insert("/EFI/BOOT/BOOTX64.EFI".into(), shim.clone());
    model.insert("/EFI/BOOT/grubx64.efi".into(), b"grub".to_vec());
    model.insert("/EFI/BOOT/BOOTX64.CSV".into(), Vec::new());
    img.expect("a new EFI/BOOT", &model);
    // BOOTX64.EFI is a plain 8.3 entry, grubx64.efi one with the lowercase bits: mdir
    // shows neither with a long name.
    let listing = String::from_utf8(mtools("mdir", &img.path, &["::/EFI/BOOT"])).unwrap();
    assert!(
        listing
            .lines()
            .any(|l| l.trim_end().starts_with("BOOTX64  EFI") && !l.contains("BOOTX64.EFI")),
        "{listing}"
    );
    assert!(
        listing.lines().any(|l| l.starts_with("grubx64  efi")),
        "{listing}"
    );

    let big = pattern(3 << 20, 9);
    let mtime = Time {
        secs: 1_700_000_000,
        nanos: 0,
    };
    img.step("a 3 MiB file with a long name", |fs| {
        let at = SetAttrs {
            mtime: Some(mtime),
            mode: Some(0o444),
            ..Default::default()
        };
        fs.create(
            b"/EFI/BOOT/A rather long file name.bin",
            NewNode::File(&big),
            &at,
        )
    });
    model.insert("/EFI/BOOT/A rather long file name.bin".into(), big.clone());
    img.expect("a 3 MiB file", &model);
    let m = img
        .open()
        .lstat(b"/efi/boot/a RATHER long file name.bin")
        .unwrap();
    assert_eq!((m.size, m.mode, m.mtime), (3 << 20, 0o444, mtime));

    img.step("replacing files (bigger, smaller, empty)", |fs| {
        let mut env = b"# GRUB Environment Block\nsaved_entry=new\n".to_vec();
        env.resize(1024, b'#');
        fs.write_file(b"/EFI/redhat/grubenv", &env)?;
        fs.write_file(b"/EFI/BOOT/A rather long file name.bin", b"small now")?;
        fs.write_file(b"/EFI/BOOT/grubx64.efi", &pattern(200_000, 5))?;
        fs.write_file(b"/Mixed.Case", b"was empty")?;
        fs.write_file(b"/EFI/BOOT/BOOTX64.CSV", b"")
    });
    let mut env = b"# GRUB Environment Block\nsaved_entry=new\n".to_vec();
    env.resize(1024, b'#');
    model.insert("/EFI/redhat/grubenv".into(), env);
    model.insert(
        "/EFI/BOOT/A rather long file name.bin".into(),
        b"small now".to_vec(),
    );
    model.insert("/EFI/BOOT/grubx64.efi".into(), pattern(200_000, 5));
    model.insert("/Mixed.Case".into(), b"was empty".to_vec());
    img.expect("replacing files", &model);

    img.step("renames", |fs| {
        fs.rename(b"/EFI/redhat/grub.cfg", b"/EFI/redhat/grub.cfg.old")?;
        fs.rename(b"/Mixed.Case", b"/MIXED.CASE")?;
        fs.rename(b"/EFI/BOOT/BOOTX64.CSV", b"/EFI/redhat/BOOTX64.CSV")?;
        fs.rename(b"/many", b"/EFI/many")
    });
    let v = model.remove("/EFI/redhat/grub.cfg").unwrap();
    model.insert("/EFI/redhat/grub.cfg.old".into(), v);
    let v = model.remove("/Mixed.Case").unwrap();
    model.insert("/MIXED.CASE".into(), v);
    let v = model.remove("/EFI/BOOT/BOOTX64.CSV").unwrap();
    model.insert("/EFI/redhat/BOOTX64.CSV".into(), v);
    for k in model
        .keys()
        .filter(|k| k.starts_with("/many/"))
        .cloned()
        .collect::<Vec<_>>()
    {
        let v = model.remove(&k).unwrap();
        model.insert(format!("/EFI{k}"), v);
    }
    img.expect("renames", &model);

    img.step("growing a directory by clusters", |fs| {
        fs.create(b"/grow", NewNode::Dir, &a)?;
        for i in 0..120 {
            let p = format!("/grow/a long name to take several slots {i:03}.txt");
            fs.create(p.as_bytes(), NewNode::File(p.as_bytes()), &a)?;
        }
        Ok(())
    });
    for i in 0..120 {
        let p = format!("/grow/a long name to take several slots {i:03}.txt");
        model.insert(p.clone(), p.into_bytes());
    }
    img.expect("growing a directory", &model);

    img.step("removing and reusing slots", |fs| {
        for i in (0..120).step_by(3) {
            fs.remove(format!("/grow/a long name to take several slots {i:03}.txt").as_bytes())?;
        }
        fs.create(b"/grow/x.txt", NewNode::File(b"x"), &a)?;
        fs.remove(b"/EFI/many/entry-number-0007.conf")
    });
    for i in (0..120).step_by(3) {
        model.remove(&format!(
            "/grow/a long name to take several slots {i:03}.txt"
        ));
    }
    model.insert("/grow/x.txt".into(), b"x".to_vec());
    model.remove("/EFI/many/entry-number-0007.conf");
    img.expect("removing", &model);

    // What is refused, and how.
    img.step("refusals", |fs| {
        assert!(matches!(
            fs.create(b"/EFI/boot", NewNode::Dir, &a),
            Err(Error::Exists(_))
        ));
        assert!(matches!(
            fs.create(b"/grow/X.TXT", NewNode::File(b""), &a),
            Err(Error::Exists(_))
        ));
        assert!(matches!(
            fs.create(b"/l", NewNode::Symlink(b"x"), &a),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            fs.create(b"/a:b", NewNode::File(b""), &a),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            fs.write_file(b"/EFI", b""),
            Err(Error::IsADirectory(_))
        ));
        assert!(matches!(
            fs.rename(b"/EFI", b"/EFI/BOOT/EFI"),
            Err(Error::Refused { .. })
        ));
        assert!(matches!(
            fs.create(b"/huge", NewNode::File(&vec![0; (kib as usize) << 10]), &a),
            Err(Error::NoSpace(_))
        ));
        Ok(())
    });
    img.expect("refusals", &model);
    let (free, cs) = img.open().free_clusters();
    assert!(free > 0 && cs > 0);
}

#[test]
fn write_fat12() {
    check_write(12, 8 * 1024);
}

#[test]
fn write_fat16() {
    check_write(16, 20 * 1024);
}

#[test]
fn write_fat32() {
    check_write(32, 40 * 1024);
}

/// A volume marked dirty (by Linux in the boot sector, by Windows in FAT[1]) whose FAT
/// copies agree is what a running guest's copied ESP looks like: written, the mark kept.
/// Copies that differ (a write cut short) are refused for writing, and still read.
#[test]
fn dirty_volumes_are_written_only_when_their_fats_agree() {
    if !tools() {
        return;
    }
    for (fat, kib) in [(16u8, 20 * 1024u32), (32, 40 * 1024)] {
        let img = Image::new(fat, kib, false);
        let pristine = std::fs::read(&img.path).unwrap();
        let state = if fat == 32 { 65 } else { 37 };
        let fat0 = u16::from_le_bytes([pristine[14], pristine[15]]) as usize * 512;
        let fat_len = if fat == 32 {
            u32::from_le_bytes(pristine[36..40].try_into().unwrap()) as usize * 512
        } else {
            u16::from_le_bytes([pristine[22], pristine[23]]) as usize * 512
        };
        let (byte, bit) = if fat == 32 { (7, 0x08) } else { (3, 0x80) };
        // Linux's mark in the boot sector: written, the mark kept.
        let mut b = pristine.clone();
        b[state] |= 1;
        std::fs::write(&img.path, &b).unwrap();
        let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&img.path, true).unwrap());
        let ov = Arc::new(Overlay::new(base));
        let fs = FatFs::open_rw(ov.clone()).expect("dirty but consistent");
        fs.create(b"/NEW.TXT", NewNode::File(b"x"), &SetAttrs::default())
            .unwrap();
        fs.sync().unwrap();
        drop(fs);
        ov.commit().unwrap();
        assert_eq!(std::fs::read(&img.path).unwrap()[state] & 1, 1);
        assert!(img.open().lstat(b"/new.txt").is_ok());
        // Windows' clean-shutdown bit cleared in both FATs: written too.
        let mut b = pristine.clone();
        b[fat0 + byte] &= !bit;
        b[fat0 + fat_len + byte] &= !bit;
        std::fs::write(&img.path, &b).unwrap();
        assert!(FatFs::open_rw(img.dev()).is_ok());
        // Dirty with the second FAT behind the first: refused, still readable.
        let mut b = pristine.clone();
        b[state] |= 1;
        b[fat0 + fat_len + 40] ^= 0xff;
        std::fs::write(&img.path, &b).unwrap();
        let e = FatFs::open_rw(img.dev())
            .err()
            .expect("dirty volume with differing FATs opened rw");
        assert!(
            matches!(e, Error::Refused { .. })
                && e.to_string().contains("fsck.fat")
                && e.to_string().contains("differ"),
            "{e}"
        );
        compare(&img, &img.open());
        std::fs::write(&img.path, &pristine).unwrap();
        assert!(FatFs::open_rw(img.dev()).is_ok());
    }
}

/// Hostile changes to a real image: a looping chain and one that leaves the volume are
/// errors naming the file, and the rest stays readable.
#[test]
fn broken_chains_are_corrupt() {
    if !tools() {
        return;
    }
    let img = Image::new(16, 20 * 1024, false);
    let fs = img.open();
    let mut b = std::fs::read(&img.path).unwrap();
    // Find BOOTX64.EFI's first cluster through a read-only walk of its directory bytes.
    let raw = |name: &[u8; 11], b: &[u8]| -> usize {
        b.chunks_exact(32).position(|e| &e[..11] == name).unwrap() * 32
    };
    let at = raw(b"BOOTX64 EFI", &b);
    let first = u16::from_le_bytes([b[at + 26], b[at + 27]]) as usize;
    let fat0 = u16::from_le_bytes([b[14], b[15]]) as usize * 512;
    b[fat0 + first * 2..fat0 + first * 2 + 2].copy_from_slice(&(first as u16).to_le_bytes());
    std::fs::write(&img.path, &b).unwrap();
    drop(fs);
    let fs = img.open();
    let mut buf = vec![0u8; 100_000];
    let e = fs.read(b"/EFI/BOOT/BOOTX64.EFI", 0, &mut buf).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    b[fat0 + first * 2..fat0 + first * 2 + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
    std::fs::write(&img.path, &b).unwrap();
    let fs = img.open();
    assert!(matches!(
        fs.read(b"/EFI/BOOT/BOOTX64.EFI", 0, &mut buf),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(
        fs.read(b"/EFI/redhat/grubx64.efi", 0, &mut buf).unwrap(),
        5000
    );
    // A writer refuses to free the broken chain, and changes nothing.
    let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&img.path, true).unwrap());
    let ov = Arc::new(Overlay::new(base));
    let w = FatFs::open_rw(ov).unwrap();
    assert!(matches!(
        w.remove(b"/EFI/BOOT/BOOTX64.EFI"),
        Err(Error::Corrupt { .. })
    ));
}

fn is_root() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if !root && std::env::var_os("CI").is_some() {
        panic!("the vfat comparison needs root (a loop mount) in CI");
    }
    root
}

/// A read-only loop mount of `img` through the kernel's vfat, detached on drop.
struct Mounted(PathBuf, String);

impl Mounted {
    fn new(img: &Path, mnt: &Path) -> Mounted {
        std::fs::create_dir_all(mnt).unwrap();
        let out = Command::new("losetup")
            .args(["-r", "-f", "--show"])
            .arg(img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let m = Command::new("mount")
            .args([
                "-t",
                "vfat",
                "-o",
                "ro,tz=UTC,iocharset=utf8,shortname=mixed",
            ])
            .arg(&dev)
            .arg(mnt)
            .output()
            .unwrap();
        if !m.status.success() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
            panic!("mount: {}", String::from_utf8_lossy(&m.stderr));
        }
        Mounted(mnt.to_path_buf(), dev)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = Command::new("losetup").args(["-d", &self.1]).status();
    }
}

/// Names, kinds, sizes, mtimes and contents as the kernel's vfat shows them, after our
/// writer made lower-case 8.3 names, long names and directories.
#[test]
fn kernel_vfat_agrees() {
    use std::os::unix::fs::MetadataExt;
    if !tools() || !is_root() || !have("losetup") {
        return;
    }
    // A kernel without vfat (a container's host kernel may lack the module) cannot be
    // compared with; mtools still checks everything above.
    let _ = Command::new("modprobe").arg("vfat").output();
    let fss = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fss
        .lines()
        .any(|l| l.trim_end().ends_with("\tvfat") || l.trim() == "vfat")
    {
        eprintln!("kernel_vfat_agrees: this kernel has no vfat; not compared");
        return;
    }
    let img = Image::new(32, 40 * 1024, false);
    let a = SetAttrs::default();
    img.step("writes for the kernel", |fs| {
        fs.create(b"/EFI/BOOT/grubx64.efi", NewNode::File(b"grub"), &a)?;
        fs.create(b"/EFI/new dir", NewNode::Dir, &a)?;
        fs.create(
            "/EFI/new dir/ünï long.cfg".as_bytes(),
            NewNode::File(b"u"),
            &a,
        )?;
        fs.write_file(b"/EFI/BOOT/BOOTX64.EFI", &pattern(300_000, 8))
    });
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let m = Mounted::new(&img.path, &mnt);
    let fs = img.open();
    let mut ours = Vec::new();
    walk(&fs, "/", &mut ours);
    ours.sort();
    fn host_walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().to_string_lossy());
            if p.is_dir() {
                out.push(format!("{rel}/"));
                host_walk(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut theirs = Vec::new();
    host_walk(&m.0, &m.0, &mut theirs);
    theirs.sort();
    assert_eq!(ours, theirs);
    for p in ours.iter().filter(|p| !p.ends_with('/')) {
        let host = m.0.join(p.trim_start_matches('/'));
        let k = std::fs::metadata(&host).unwrap();
        let o = fs.lstat(p.as_bytes()).unwrap();
        assert_eq!((o.size, o.mtime.secs), (k.len(), k.mtime()), "{p}");
        assert!(read_all(&fs, p) == std::fs::read(&host).unwrap(), "{p}");
    }
    drop(m);
}
