//! ext4 writes at the edges: filesystems that must be refused, running out of space and
//! inodes (a clear error, the filesystem unchanged and clean), fragmented free space giving
//! deep extent trees, and ext3 files reaching triple-indirect blocks.

mod common;

use common::*;
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, Overlay, RawFile};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::{Error, Filesystem, NewNode, SetAttrs};

fn tools() -> bool {
    have("mke2fs") && have("e2fsck") && have("debugfs")
}

fn open_err(img: &Image) -> Error {
    let base: Arc<dyn BlockDev> = Arc::new(RawFile::open(&img.path, true).unwrap());
    match Ext4Fs::open_rw(Arc::new(Overlay::new(base)), &img.kind) {
        Ok(_) => panic!("opened for writing"),
        Err(e) => e,
    }
}

fn debugfs_w(img: &Image, req: &str) {
    let st = Command::new("debugfs")
        .args(["-w", "-R", req])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(st.status.success(), "debugfs -w {req}");
}

#[test]
fn unsafe_filesystems_are_refused_with_advice() {
    if !tools() {
        return;
    }
    let tiny = |_: &std::path::Path| {};
    let cases: &[(&[&str], &str, &str, bool)] = &[
        // A journal needing recovery is replayed (tests/ext4_journal_replay.rs); one
        // that is not there is corrupt.
        (
            &["-O", "^has_journal"],
            "feature needs_recovery",
            "there is no journal",
            false,
        ),
        (&[], "ssv state 3", "e2fsck", true),
        (&[], "ssv state 0", "not cleanly unmounted", true),
        (&[], "ssv last_orphan 12", "orphan", true),
        (
            &[],
            "ssv feature_incompat 0x100002c2",
            "unknown bits",
            false,
        ),
        (&["-O", "quota"], "", "quota", false),
    ];
    for (extra, req, says, refused) in cases {
        let img = Image::with_tree("ext4", extra, 16, tiny);
        if !req.is_empty() {
            debugfs_w(&img, req);
        }
        let e = open_err(&img);
        let kind = e.kind();
        assert!(e.to_string().contains(says), "{req}: {e}");
        assert_eq!(
            kind == transplant_formats::ErrorKind::Refused,
            *refused,
            "{req}: {e} is {kind:?}"
        );
    }
    let img = Image::with_tree("ext4", &["-O", "bigalloc", "-C", "16384"], 32, tiny);
    let e = open_err(&img);
    assert!(e.to_string().contains("bigalloc"), "{e}");
    assert_eq!(e.kind(), transplant_formats::ErrorKind::Unsupported);
}

#[test]
fn a_corrupted_group_descriptor_checksum_is_refused() {
    if !tools() {
        return;
    }
    let img = Image::with_tree("ext4", &["-b", "4096"], 16, |_| {});
    // Flip a byte of group 0's free-block count without fixing its checksum.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img.path)
        .unwrap();
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 4096 + 0xC).unwrap();
    f.write_all_at(&[b[0] ^ 1], 4096 + 0xC).unwrap();
    let e = open_err(&img);
    assert!(e.to_string().contains("e2fsck"), "{e}");
}

#[test]
fn running_out_of_space_and_inodes_changes_nothing() {
    if !tools() {
        return;
    }
    for (kind, extra) in [
        ("ext4", &["-N", "64"][..]),
        ("ext2", &["-N", "64", "-b", "1024"][..]),
    ] {
        let img = Image::with_tree(kind, extra, 8, |root| {
            std::fs::create_dir(root.join("etc")).unwrap();
            std::fs::write(root.join("etc/keep"), "keep me\n").unwrap();
        });
        let label = format!("{kind} {extra:?}");
        let (ov, fs) = img.open_rw();
        // Fill most of the space, then ask for more than is left.
        let fill = vec![0x5au8; 6 << 20];
        fs.create(b"/fill", NewNode::File(&fill), &SetAttrs::default())
            .unwrap();
        let too_big = vec![1u8; 4 << 20];
        let e = fs.write_file(b"/etc/keep", &too_big).unwrap_err();
        assert!(matches!(e, Error::NoSpace(_)), "{label}: {e}");
        let e = fs
            .create(b"/more", NewNode::File(&too_big), &SetAttrs::default())
            .unwrap_err();
        assert!(matches!(e, Error::NoSpace(_)), "{label}: {e}");
        // Inodes: create empty files until none are left.
        let mut n = 0;
        let e = loop {
            match fs.create(
                format!("/etc/f{n}").as_bytes(),
                NewNode::File(b""),
                &SetAttrs::default(),
            ) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
            assert!(n < 1000);
        };
        assert!(matches!(e, Error::NoSpace(_)), "{label}: {e}");
        fs.sync().unwrap();
        ov.commit().unwrap();
        img.fsck(&format!("{label}: after running out"));
        img.expect_cat("/etc/keep", b"keep me\n");
        img.expect_cat("/fill", &fill);
        // And space comes back when files go.
        img.step(&label, "free and reuse", |fs| {
            fs.remove(b"/fill")?;
            fs.write_file(b"/etc/keep", &too_big)
        });
        img.expect_cat("/etc/keep", &too_big);
    }
}

/// Free space in single-block holes, so a new file gets one extent per block.
fn fragment(fs: &dyn Filesystem, files: usize) {
    for i in 0..files {
        fs.create(
            format!("/frag/{i:05}").as_bytes(),
            NewNode::File(b"x"),
            &SetAttrs::default(),
        )
        .unwrap();
    }
    for i in (0..files).step_by(2) {
        fs.remove(format!("/frag/{i:05}").as_bytes()).unwrap();
    }
}

#[test]
fn fragmented_space_gives_deep_extent_trees() {
    if !tools() {
        return;
    }
    let img = Image::with_tree("ext4", &["-b", "1024", "-N", "8192"], 12, |root| {
        std::fs::create_dir(root.join("frag")).unwrap();
    });
    img.step("ext4 1k", "fragment free space", |fs| {
        fragment(fs, 7000);
        Ok(())
    });
    // Leave no long free run: fill everything after the holes.
    let (_, fs) = img.open_rw();
    drop(fs);
    let data: Vec<u8> = (0..3400 * 1024u32)
        .map(|i| (i / 1024) as u8 ^ (i as u8))
        .collect();
    img.step("ext4 1k", "write a file over the holes", |fs| {
        fs.create(b"/deep", NewNode::File(b""), &SetAttrs::default())?;
        fs.write_file(b"/deep", &data)
    });
    img.expect_cat("/deep", &data);
    let ex = String::from_utf8_lossy(&img.debugfs("ex /deep")).into_owned();
    // debugfs prints "Level Entries ..." with one row per node; depth 2 has level 2 rows.
    assert!(
        ex.contains(" 2/ 2 "),
        "expected a depth-2 tree:\n{}",
        &ex[..ex.len().min(2000)]
    );
    img.with(|fs| {
        let mut back = vec![0u8; data.len()];
        assert_eq!(fs.read(b"/deep", 0, &mut back).unwrap(), data.len());
        assert!(back == data);
    });
    img.step("ext4 1k", "shrink the deep file", |fs| {
        fs.write_file(b"/deep", b"small")
    });
    img.step("ext4 1k", "remove the holes' neighbours", |fs| {
        for i in (1..7000).step_by(2) {
            fs.remove(format!("/frag/{i:05}").as_bytes())?;
        }
        Ok(())
    });
}

#[test]
fn ext3_files_use_triple_indirect_blocks() {
    if !tools() {
        return;
    }
    let img = Image::with_tree("ext3", &["-b", "1024"], 80, |_| {});
    // 12 + 256 + 65536 blocks fit without triple indirection; go past it.
    let data: Vec<u8> = (0..(12 + 256 + 65536 + 300) * 1024u32)
        .map(|i| (i % 249) as u8)
        .collect();
    img.step("ext3 1k", "a file with triple indirect blocks", |fs| {
        fs.create(b"/big", NewNode::File(&data), &SetAttrs::default())
    });
    img.expect_cat("/big", &data);
    img.step("ext3 1k", "replace it", |fs| {
        fs.write_file(b"/big", b"tiny\n")
    });
    img.expect_cat("/big", b"tiny\n");
}

#[test]
fn uninit_groups_are_initialised_when_first_used() {
    if !tools() {
        return;
    }
    for extra in [
        &["-b", "1024"][..],
        &["-b", "1024", "-O", "^metadata_csum,uninit_bg"][..],
    ] {
        let img = Image::with_tree("ext4", extra, 64, |_| {});
        let groups = || {
            let out = Command::new("dumpe2fs").arg(&img.path).output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .matches("BLOCK_UNINIT")
                .count()
        };
        let before = groups();
        assert!(before >= 4, "{extra:?}: expected BLOCK_UNINIT groups");
        let data: Vec<u8> = (0..40u32 << 20)
            .map(|i| (i >> 10) as u8 ^ i as u8)
            .collect();
        img.step(&format!("{extra:?}"), "a file across uninit groups", |fs| {
            fs.create(b"/big", NewNode::File(&data), &SetAttrs::default())?;
            for i in 0..8 {
                fs.create(
                    format!("/d{i}").as_bytes(),
                    NewNode::Dir,
                    &SetAttrs::default(),
                )?;
            }
            Ok(())
        });
        assert!(groups() < before, "{extra:?}: no group was initialised");
        img.expect_cat("/big", &data);
    }
}

#[test]
fn guest_tree_writes_go_to_the_mounted_filesystem() {
    if !tools() {
        return;
    }
    let root = Image::with_tree("ext4", &[], 16, |r| {
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::write(r.join("etc/x"), "x").unwrap();
        std::os::unix::fs::symlink("/boot/grub", r.join("etc/grub")).unwrap();
    });
    let boot = Image::with_tree("ext2", &[], 8, |r| {
        std::fs::create_dir_all(r.join("grub")).unwrap();
    });
    let (rov, rfs) = root.open_rw();
    let (bov, bfs) = boot.open_rw();
    let mut tree = transplant_fs::GuestTree::new(Arc::new(rfs), "root");
    tree.attach(b"/boot", Arc::new(bfs), "boot");
    assert!(tree.writable());
    // Through a guest symlink that crosses into /boot.
    tree.create(
        b"/etc/grub/grub.cfg",
        NewNode::File(b"cfg\n"),
        &SetAttrs::default(),
    )
    .unwrap();
    let e = tree.rename(b"/etc/x", b"/boot/x").unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    let e = tree.remove(b"/boot").unwrap_err();
    assert!(e.to_string().contains("mount point"), "{e}");
    tree.rename(b"/etc/x", b"/etc/y").unwrap();
    tree.sync().unwrap();
    rov.commit().unwrap();
    bov.commit().unwrap();
    drop(tree);
    root.fsck("root");
    boot.fsck("boot");
    boot.expect_cat("/grub/grub.cfg", b"cfg\n");
    root.expect_cat("/etc/y", b"x");
}

#[test]
fn inline_data_is_refused_by_name() {
    if !tools() {
        return;
    }
    let img = Image::with_tree("ext4", &["-O", "inline_data"], 16, |r| {
        std::fs::create_dir_all(r.join("small")).unwrap();
        std::fs::write(r.join("small/f"), "tiny").unwrap();
        std::fs::write(r.join("tiny"), "tiny").unwrap();
    });
    let (ov, fs) = img.open_rw();
    let e = fs.write_file(b"/tiny", b"more").unwrap_err();
    assert!(e.to_string().contains("inline_data"), "{e}");
    let e = fs
        .create(b"/small/g", NewNode::File(b"x"), &SetAttrs::default())
        .unwrap_err();
    assert!(e.to_string().contains("inline_data"), "{e}");
    // Elsewhere the filesystem is writable, without inline data.
    fs.create(b"/new", NewNode::File(b"regular"), &SetAttrs::default())
        .unwrap();
    fs.remove(b"/tiny").unwrap();
    fs.sync().unwrap();
    ov.commit().unwrap();
    img.fsck("inline_data");
    img.expect_cat("/new", b"regular");
}

/// Fuzzing found a directory link count at its maximum overflowing on mkdir.
#[test]
fn extreme_link_counts_do_not_overflow() {
    if !tools() {
        return;
    }
    for (extra, ok) in [(&["-O", "^dir_nlink"][..], false), (&[][..], true)] {
        let img = Image::with_tree("ext4", extra, 16, |r| {
            std::fs::create_dir(r.join("d")).unwrap();
        });
        debugfs_w(&img, "sif /d links_count 65535");
        let (_ov, fs) = img.open_rw();
        let r = fs.create(b"/d/sub", NewNode::Dir, &SetAttrs::default());
        assert_eq!(r.is_ok(), ok, "{extra:?}: {r:?}");
    }
}
