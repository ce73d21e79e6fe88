//! ext2/3/4 writes on filesystems made by mke2fs with varied features: after every
//! operation `e2fsck -fn` finds the filesystem clean, and debugfs reads back what was
//! written.

mod common;

use common::*;
use transplant_fs::{FileKind, NewNode, SetAttrs, Time};

/// The feature sets of the issue: ext2, ext3, ext4 default, without metadata_csum,
/// without 64bit, 1 KiB blocks, and with uninit_bg instead of metadata_csum.
const CONFIGS: &[(&str, &[&str])] = &[
    ("ext2", &["-b", "4096"]),
    ("ext3", &["-b", "1024"]),
    ("ext4", &[]),
    ("ext4", &["-b", "1024"]),
    ("ext4", &["-O", "^metadata_csum"]),
    ("ext4", &["-O", "^metadata_csum,uninit_bg"]),
    ("ext4", &["-O", "^64bit"]),
    ("ext4", &["-O", "^flex_bg", "-b", "2048"]),
];

#[test]
fn every_operation_leaves_a_clean_filesystem() {
    if !have("mkfs.ext4") || !have("e2fsck") || !have("debugfs") {
        return;
    }
    for (kind, extra) in CONFIGS {
        let t = Image::new(kind, extra, 64);
        let label = format!("{kind} {extra:?}");
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        t.step(&label, "replace a small file", |fs| {
            fs.write_file(b"/etc/fstab", b"UUID=x / ext4 defaults 0 1\n")
        });
        t.expect_cat("/etc/fstab", b"UUID=x / ext4 defaults 0 1\n");
        t.step(&label, "grow a file to 5 MB", |fs| {
            fs.write_file(b"/etc/fstab", &big)
        });
        t.expect_cat("/etc/fstab", &big);
        t.step(&label, "shrink it to empty", |fs| {
            fs.write_file(b"/etc/fstab", b"")
        });
        t.expect_cat("/etc/fstab", b"");
        let attrs = SetAttrs {
            mode: Some(0o600),
            uid: Some(1000),
            gid: Some(70000),
            atime: None,
            mtime: Some(Time {
                secs: 1_600_000_000,
                nanos: 5,
            }),
        };
        t.step(&label, "create a file", |fs| {
            fs.create(b"/etc/new.conf", NewNode::File(b"hello\n"), &attrs)
        });
        t.expect_cat("/etc/new.conf", b"hello\n");
        t.expect_stat("/etc/new.conf", "0600", 1000, 70000);
        t.step(&label, "create a directory", |fs| {
            fs.create(b"/etc/d", NewNode::Dir, &SetAttrs::default())
        });
        t.step(&label, "a fast symlink", |fs| {
            fs.create(
                b"/etc/d/fast",
                NewNode::Symlink(b"../new.conf"),
                &SetAttrs::default(),
            )
        });
        let long = format!("/{}", "x".repeat(200));
        t.step(&label, "a slow symlink", |fs| {
            fs.create(
                b"/etc/d/slow",
                NewNode::Symlink(long.as_bytes()),
                &SetAttrs::default(),
            )
        });
        t.with(|fs| {
            assert_eq!(fs.read_link(b"/etc/d/slow").unwrap(), long.as_bytes());
            assert_eq!(fs.read_link(b"/etc/d/fast").unwrap(), b"../new.conf");
            assert_eq!(fs.lstat(b"/etc/d").unwrap().kind, FileKind::Dir);
        });
        t.step(&label, "rename over an existing file", |fs| {
            fs.rename(b"/etc/new.conf", b"/etc/fstab")
        });
        t.expect_cat("/etc/fstab", b"hello\n");
        t.step(&label, "move a directory", |fs| {
            fs.rename(b"/etc/d", b"/moved")
        });
        t.step(&label, "chmod/chown", |fs| {
            fs.set_attrs(
                b"/moved",
                &SetAttrs {
                    mode: Some(0o700),
                    uid: Some(5),
                    ..Default::default()
                },
            )
        });
        t.expect_stat("/moved", "0700", 5, 0);
        t.step(&label, "unlink", |fs| fs.remove(b"/moved/slow"));
        t.step(&label, "unlink", |fs| fs.remove(b"/moved/fast"));
        t.step(&label, "rmdir", |fs| fs.remove(b"/moved"));
        t.step(&label, "remove a big file", |fs| fs.remove(b"/big.bin"));
        assert_eq!(t.is_htree("/many"), *kind != "ext2", "{label}");
        t.step(&label, "remove from an htree directory", |fs| {
            fs.remove(b"/many/file-00100")
        });
        assert_eq!(t.is_htree("/many"), *kind != "ext2", "{label}");
        t.step(&label, "add to an htree directory", |fs| {
            fs.create(
                b"/many/zz-new",
                NewNode::File(b"new\n"),
                &SetAttrs::default(),
            )
        });
        t.expect_cat("/many/zz-new", b"new\n");
        t.expect_cat("/many/file-01234", b"1234\n");
        t.step(&label, "remove from it", |fs| {
            fs.remove(b"/many/file-00007")
        });
    }
}

#[test]
fn htree_directories_grow_by_splitting_leaves() {
    if !have("mkfs.ext4") || !have("e2fsck") || !have("debugfs") {
        return;
    }
    for extra in [
        &["-b", "1024"][..],
        &["-b", "4096", "-O", "^metadata_csum"][..],
    ] {
        let t = Image::new("ext4", extra, 64);
        let label = format!("ext4 {extra:?}");
        assert!(t.is_htree("/many"), "{label}");
        let leaves = |t: &Image| {
            String::from_utf8_lossy(&t.debugfs("htree /many"))
                .matches("Entry #")
                .count()
        };
        let before = leaves(&t);
        t.step(&label, "add 400 names to an htree", |fs| {
            for i in 0..400 {
                let n = format!("/many/added-{i}-{}", "n".repeat(i % 40));
                fs.create(n.as_bytes(), NewNode::File(b"a"), &SetAttrs::default())?;
            }
            Ok(())
        });
        assert!(t.is_htree("/many"), "{label}: the index was dropped");
        assert!(leaves(&t) > before, "{label}: no leaf was split");
        t.expect_cat("/many/added-77-nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn", b"a");
        t.expect_cat("/many/file-01999", b"1999\n");
        if extra[1] != "1024" {
            continue;
        }
        // Keep going until the root index is full: it gets a level, and its node splits.
        t.step(&label, "fill the root index", |fs| {
            for i in 0..7000 {
                let n = format!("/many/more-{i:06}-{}", "m".repeat(i % 100));
                fs.create(n.as_bytes(), NewNode::File(b""), &SetAttrs::default())?;
            }
            Ok(())
        });
        t.expect_cat(
            "/many/added-399-nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
            b"a",
        );
        t.expect_cat(
            "/many/more-003999-mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm",
            b"",
        );
        let dump = String::from_utf8_lossy(&t.debugfs("htree /many")).into_owned();
        assert!(
            dump.contains("Indirect levels: 1"),
            "{label}: no level was added"
        );
        let root_count: usize = dump
            .lines()
            .find_map(|l| l.trim().strip_prefix("Number of entries (count): "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(root_count > 1, "{label}: the first node never split");
        t.expect_cat(
            "/many/more-006999-mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm",
            b"",
        );
    }
}
