//! ext2/3/4 read on filesystems made by mke2fs -d from a populated folder: every file's
//! content and metadata read back equals the source; superblock probing agrees with blkid;
//! guest symlinks resolve inside the guest.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, RawFile};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::{probe, FileKind, Filesystem, GuestTree};

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

/// A tree with the awkward cases: big sparse file, hardlink, setuid, fast/slow/absolute
/// symlinks, a directory large enough to be an htree, device nodes, unicode names.
fn populate(root: &Path) {
    std::fs::create_dir_all(root.join("etc/sub")).unwrap();
    std::fs::write(root.join("etc/fstab"), "/dev/sda1 / ext4 defaults 0 1\n").unwrap();
    std::fs::write(root.join("etc/x"), "target of an absolute link\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    let f = std::fs::File::create(root.join("sparse.bin")).unwrap();
    f.set_len(40 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"end of a sparse file", (40 << 20) - 20)
        .unwrap();
    std::fs::hard_link(root.join("etc/fstab"), root.join("fstab.hardlink")).unwrap();
    std::fs::write(root.join("suid"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("etc/fstab", root.join("fast-link")).unwrap();
    let long = format!("etc/{}fstab", "sub/../".repeat(12));
    std::os::unix::fs::symlink(&long, root.join("slow-link")).unwrap();
    std::os::unix::fs::symlink("/etc/x", root.join("etc/sub/abs-link")).unwrap();
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    std::fs::create_dir(root.join("many")).unwrap();
    for i in 0..3000 {
        std::fs::write(root.join(format!("many/file-{i:05}")), format!("{i}\n")).unwrap();
    }
    std::fs::write(root.join("ünïcødé ✓.txt"), "names are bytes\n").unwrap();
    let _ = Command::new("mknod")
        .arg(root.join("null"))
        .args(["c", "1", "3"])
        .status();
}

fn mkfs(kind: &str, extra: &[&str], src: &Path, img: &Path) {
    let st = Command::new(format!("mkfs.{kind}"))
        .args(["-q", "-F", "-L", "tp-label", "-d"])
        .arg(src)
        .args(extra)
        .arg(img)
        .arg("160M")
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.{kind} {extra:?}");
}

fn open(img: &Path, kind: &str) -> Arc<dyn Filesystem> {
    let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(img, false).unwrap());
    Arc::new(Ext4Fs::open(dev, kind).unwrap())
}

/// Walks the source tree and checks every entry against the image.
fn compare(src: &Path, fs: &dyn Filesystem) {
    let mut stack = vec![src.to_path_buf()];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = format!("/{}", p.strip_prefix(src).unwrap().to_str().unwrap());
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ours = fs
                .lstat(rel.as_bytes())
                .unwrap_or_else(|err| panic!("{rel}: {err}"));
            assert_eq!(ours.mode, m.mode() & 0o7777, "{rel} mode");
            assert_eq!(ours.mtime.secs, m.mtime(), "{rel} mtime");
            n += 1;
            if m.is_dir() {
                assert_eq!(ours.kind, FileKind::Dir);
                let mut names: Vec<Vec<u8>> = fs
                    .read_dir(rel.as_bytes())
                    .unwrap()
                    .into_iter()
                    .map(|e| e.name)
                    .collect();
                names.sort();
                let mut want: Vec<Vec<u8>> = std::fs::read_dir(&p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_encoded_bytes())
                    .collect();
                want.sort();
                if rel == "/" {
                    want.push(b"lost+found".to_vec());
                    want.sort();
                }
                assert_eq!(names, want, "{rel} entries");
                stack.push(p);
            } else if m.file_type().is_symlink() {
                assert_eq!(ours.kind, FileKind::Symlink);
                assert_eq!(
                    fs.read_link(rel.as_bytes()).unwrap(),
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes()
                );
            } else if m.is_file() {
                assert_eq!(ours.size, m.len(), "{rel} size");
                let want = std::fs::read(&p).unwrap();
                let mut got = vec![0u8; want.len()];
                let k = fs
                    .read(rel.as_bytes(), 0, &mut got)
                    .unwrap_or_else(|e| panic!("{rel}: {e}"));
                assert_eq!(k, want.len(), "{rel}");
                assert!(got == want, "{rel} content");
            } else {
                assert_eq!(ours.kind, FileKind::CharDevice, "{rel}");
            }
        }
    }
    assert!(n > 3000);
}

#[test]
fn variants_read_back_exactly() {
    if !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src);
    let cases: [(&str, &[&str], &str); 6] = [
        ("ext2", &[], "ext2"),
        ("ext3", &[], "ext3"),
        ("ext4", &[], "ext4"),
        ("ext4", &["-O", "^metadata_csum"], "ext4"),
        ("ext4", &["-O", "^64bit"], "ext4"),
        ("ext4", &["-b", "1024"], "ext4"),
    ];
    for (mk, extra, kind) in cases {
        let img = dir.path().join("fs.img");
        let _ = std::fs::remove_file(&img);
        mkfs(mk, extra, &src, &img);
        let dev = RawFile::open(&img, false).unwrap();
        let p = probe(&dev).unwrap().unwrap();
        assert_eq!(p.kind, kind, "{mk} {extra:?}");
        assert_eq!(p.label.as_deref(), Some("tp-label"));
        let fs = open(&img, kind);
        assert_eq!(fs.info().uuid, p.uuid);
        compare(&src, &*fs);
        // Random-offset reads of the big file.
        let big = std::fs::read(src.join("big.bin")).unwrap();
        let mut b = vec![0u8; 70_000];
        let k = fs.read(b"/big.bin", 1_234_567, &mut b).unwrap();
        assert_eq!(&b[..k], &big[1_234_567..1_234_567 + k]);
    }
}

#[test]
fn probe_agrees_with_blkid() {
    if !have("mkfs.ext4") || !have("blkid") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, Vec<String>)> =
        vec![("ext4".into(), vec![]), ("ext2".into(), vec![])];
    let img = dir.path().join("p.img");
    let run_blkid = |img: &Path| -> String {
        String::from_utf8_lossy(
            &Command::new("blkid")
                .args(["-p", "-o", "export"])
                .arg(img)
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    for (kind, _) in cases.drain(..) {
        let _ = std::fs::remove_file(&img);
        assert!(Command::new(format!("mkfs.{kind}"))
            .args(["-q", "-F", "-L", "lbl"])
            .arg(&img)
            .arg("64M")
            .status()
            .unwrap()
            .success());
        let b = run_blkid(&img);
        let p = probe(&RawFile::open(&img, false).unwrap())
            .unwrap()
            .unwrap();
        assert!(b.contains(&format!("TYPE={}", p.kind)), "{b}");
        assert!(b.contains(&format!("UUID={}", p.uuid.unwrap())), "{b}");
    }
    if have("mkswap") {
        let _ = std::fs::remove_file(&img);
        std::fs::File::create(&img)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        assert!(Command::new("mkswap")
            .args(["-q", "-L", "sw"])
            .arg(&img)
            .status()
            .unwrap()
            .success());
        let b = run_blkid(&img);
        let p = probe(&RawFile::open(&img, false).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(p.kind, "swap");
        assert!(b.contains(&format!("UUID={}", p.uuid.unwrap())), "{b}");
        assert_eq!(p.label.as_deref(), Some("sw"));
    }
}

#[test]
fn guest_symlinks_resolve_inside_the_guest() {
    if !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src);
    let img = dir.path().join("fs.img");
    mkfs("ext4", &[], &src, &img);
    let tree = GuestTree::new(open(&img, "ext4"), "fs.img");
    // Absolute target: the guest's /etc/x, not the host's.
    assert_eq!(
        tree.read_file(b"/etc/sub/abs-link", 1 << 20).unwrap(),
        b"target of an absolute link\n"
    );
    assert_eq!(
        tree.read_file(b"/slow-link", 1 << 20).unwrap(),
        std::fs::read(src.join("etc/fstab")).unwrap()
    );
    // `..` above the root stays at the root.
    assert_eq!(
        tree.read_file(b"/../../../etc/fstab", 1 << 20).unwrap(),
        std::fs::read(src.join("etc/fstab")).unwrap()
    );
    let e = tree.read_file(b"/loop-a", 100).unwrap_err();
    assert!(matches!(e, transplant_fs::Error::Loop(_)), "{e}");
    assert!(matches!(
        tree.stat(b"/nope", true).unwrap_err(),
        transplant_fs::Error::NotFound(_)
    ));
    assert!(matches!(
        tree.stat(b"/etc/fstab/x", true).unwrap_err(),
        transplant_fs::Error::NotADirectory(_)
    ));
    // A second filesystem attached at /boot.
    let img2 = dir.path().join("boot.img");
    let boot_src = dir.path().join("boot");
    std::fs::create_dir_all(boot_src.join("grub")).unwrap();
    std::fs::write(
        boot_src.join("grub/grub.cfg"),
        "linux /vmlinuz root=/dev/sda1\n",
    )
    .unwrap();
    mkfs("ext2", &[], &boot_src, &img2);
    let mut tree = tree;
    tree.attach(b"/boot", open(&img2, "ext2"), "boot.img");
    assert_eq!(
        tree.read_file(b"/boot/grub/grub.cfg", 1000).unwrap(),
        b"linux /vmlinuz root=/dev/sda1\n"
    );
    assert!(tree
        .read_dir(b"/")
        .unwrap()
        .iter()
        .any(|e| e.name == b"boot"));
}

#[test]
fn hostile_filesystems_are_clean_errors() {
    if !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .arg("32M")
        .status()
        .unwrap()
        .success());
    let good = std::fs::read(&img).unwrap();
    let try_open = |b: Vec<u8>| -> Result<(), transplant_fs::Error> {
        let dev: Arc<dyn BlockDev> = Arc::new(transplant_formats::MemDev::new("hostile.img", b));
        let fs = Ext4Fs::open(dev, "ext4")?;
        fs.read_dir(b"/")?;
        Ok(())
    };
    assert!(try_open(good[..3000].to_vec()).is_err());
    let mut b = good.clone();
    b[1024 + 24] = 20; // s_log_block_size
    assert!(try_open(b).is_err());
    let mut b = good.clone();
    b[1024..1028].copy_from_slice(&u32::MAX.to_le_bytes()); // s_inodes_count
    let _ = try_open(b); // error or not, never a panic
}
