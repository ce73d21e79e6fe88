//! Journal replay for writing, against e2fsck's replay (`e2fsck -fy` recovers the journal
//! first, with the kernel's recovery code). Dirty journals are made two ways:
//!
//! - the kernel's own: a loop mount, files written and fsync'd, then `xfs_io -x -c
//!   'shutdown -f'` (EXT4_IOC_SHUTDOWN: commit the log, write nothing more) and the home
//!   locations of every logged block put back as they were before the mount, since the
//!   block device's writeback may have checkpointed some; only a replay brings them back;
//! - debugfs's journal writer (`jo`, `jw`, `jc`), for what the kernel rarely writes on
//!   demand: revoke records, an escaped block, an uncommitted transaction.
//!
//! After our replay and a write through `Ext4Fs::open_rw`, `e2fsck -fn` must find the
//! filesystem clean and every file must read as in e2fsck's replay.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use transplant_formats::{BlockDev, RawFile};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::{FileKind, Filesystem, NewNode, SetAttrs};

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

fn tools() -> bool {
    have("mkfs.ext4") && have("debugfs") && have("e2fsck") && have("dumpe2fs")
}

/// Unmounts on drop, so a failing assertion never leaves a loop mount behind.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn mkfs(img: &Path, args: &[&str], size: &str) {
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .args(args)
        .arg(img)
        .arg(size)
        .status()
        .unwrap();
    assert!(st.success());
}

fn debugfs(img: &Path, cmd: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", cmd])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn header(img: &Path) -> String {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn header_field(img: &Path, name: &str) -> String {
    header(img)
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim_start_matches(':').trim().to_string())
        .unwrap_or_default()
}

fn block_size(img: &Path) -> u64 {
    header_field(img, "Block size").parse().unwrap()
}

/// Filesystem blocks the journal holds, from debugfs's log dump.
fn logged_blocks(img: &Path) -> Vec<u64> {
    debugfs(img, "logdump -a")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FS block "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Makes the journal on `img` need recovery through a loop mount, as a guest that was
/// running when it was copied; None where loop mounts are not permitted (outside CI).
fn kernel_dirty(img: &Path, mkfs_args: &[&str], mount_opts: &str) -> Option<()> {
    let dir = img.parent().unwrap();
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    mkfs(img, mkfs_args, "24M");
    let before = std::fs::read(img).unwrap();
    let mounted = Command::new("mount")
        .args(["-o", &format!("loop{mount_opts}")])
        .arg(img)
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "loop mount is required when CI is set"
        );
        eprintln!("loop mount not permitted here: skipped");
        return None;
    }
    {
        let _m = Mounted(&mnt);
        let put = |name: &str, data: &[u8]| {
            use std::io::Write;
            let mut f = std::fs::File::create(mnt.join(name)).unwrap();
            f.write_all(data).unwrap();
            f.sync_all().unwrap();
        };
        std::fs::create_dir(mnt.join("etc")).unwrap();
        put("etc/hostname", b"dirty-guest\n");
        put("etc/fstab", b"/dev/sda1 / ext4 errors=remount-ro 0 1\n");
        for i in 0..40u32 {
            let data: Vec<u8> = (0..i * 997).map(|j| (j * 31 + i) as u8).collect();
            put(&format!("f{i}"), &data);
        }
        std::fs::create_dir(mnt.join("many")).unwrap();
        for i in 0..300 {
            std::fs::write(mnt.join(format!("many/entry-{i:04}")), format!("{i}\n")).unwrap();
        }
        std::os::unix::fs::symlink("/etc/hostname", mnt.join("link")).unwrap();
        std::fs::remove_file(mnt.join("f7")).unwrap();
        std::fs::rename(mnt.join("f8"), mnt.join("etc/f8-moved")).unwrap();
        std::fs::File::open(mnt.join("many"))
            .unwrap()
            .sync_all()
            .unwrap();
        std::fs::File::open(&mnt).unwrap().sync_all().unwrap();
        let st = Command::new("xfs_io")
            .args(["-x", "-c", "shutdown -f"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success(), "xfs_io shutdown failed");
    }
    let mut bytes = std::fs::read(img).unwrap();
    let logged = logged_blocks(img);
    assert!(
        !logged.is_empty(),
        "no committed transaction in the journal"
    );
    let bs = block_size(img);
    let sb_block = 1024 / bs;
    for b in logged {
        // The superblock keeps needs_recovery.
        if b == sb_block {
            continue;
        }
        let at = (b * bs) as usize;
        bytes[at..at + bs as usize].copy_from_slice(&before[at..at + bs as usize]);
    }
    std::fs::write(img, &bytes).unwrap();
    assert!(header(img).contains("needs_recovery"));
    assert!(
        !debugfs(img, "ls /").contains("hostname") && !debugfs(img, "ls /etc").contains("hostname"),
        "home locations already hold the transactions: test is void"
    );
    Some(())
}

type Tree = BTreeMap<Vec<u8>, (FileKind, u32, u64, Vec<u8>)>;

/// Every entry with its kind, mode, size and content (link target for symlinks).
fn tree(fs: &dyn Filesystem) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec![b"/".to_vec()];
    while let Some(dir) = todo.pop() {
        for e in fs.read_dir(&dir).unwrap() {
            let mut p = dir.clone();
            if p.last() != Some(&b'/') {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            let m = fs.lstat(&p).unwrap();
            let content = match e.kind {
                FileKind::Dir => {
                    todo.push(p.clone());
                    Vec::new()
                }
                FileKind::Symlink => fs.read_link(&p).unwrap(),
                FileKind::File => {
                    let mut buf = vec![0u8; m.size as usize];
                    let n = fs
                        .read(&p, 0, &mut buf)
                        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&p)));
                    buf.truncate(n);
                    buf
                }
                _ => Vec::new(),
            };
            out.insert(p, (e.kind, m.mode, m.size, content));
        }
    }
    out
}

fn fsck_clean(img: &Path) {
    let o = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        o.status.success(),
        "e2fsck -fn {}:\n{}",
        img.display(),
        String::from_utf8_lossy(&o.stdout)
    );
}

/// e2fsck's replay of a copy of `img`.
fn reference(img: &Path) -> std::path::PathBuf {
    let r = img.with_extension("ref");
    std::fs::copy(img, &r).unwrap();
    let o = Command::new("e2fsck").arg("-fy").arg(&r).output().unwrap();
    // 1: errors corrected (the journal replay counts as one).
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "e2fsck -fy:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!header(&r).contains("needs_recovery"));
    r
}

/// Replays through `open_rw` on a copy of `img`, writes a file, and checks the result
/// against e2fsck's replay.
fn replay_matches_e2fsck(img: &Path) {
    let r = reference(img);
    let ours = img.with_extension("ours");
    std::fs::copy(img, &ours).unwrap();
    {
        let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(&ours, true).unwrap());
        let fs = Ext4Fs::open_rw(dev, "ext4").unwrap();
        let attrs = SetAttrs {
            mode: Some(0o644),
            ..Default::default()
        };
        fs.create(b"/written-after-replay", NewNode::File(b"new\n"), &attrs)
            .unwrap();
        fs.write_file(b"/etc/hostname", b"rewritten\n").unwrap();
        fs.sync().unwrap();
    }
    fsck_clean(&ours);
    let h = header(&ours);
    assert!(!h.contains("needs_recovery"), "{h}");
    for f in ["Journal sequence", "Journal start"] {
        assert_eq!(header_field(&ours, f), header_field(&r, f), "{f}");
    }
    let open = |p: &Path| {
        let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(p, false).unwrap());
        Ext4Fs::open(dev, "ext4").unwrap()
    };
    let want = tree(&open(&r));
    let mut got = tree(&open(&ours));
    assert_eq!(
        got.remove(b"/written-after-replay".as_slice()).map(|t| t.3),
        Some(b"new\n".to_vec())
    );
    let (_, _, _, host) = got.remove(b"/etc/hostname".as_slice()).unwrap();
    assert_eq!(host, b"rewritten\n");
    let mut want = want;
    assert_eq!(
        want.remove(b"/etc/hostname".as_slice()).unwrap().3,
        b"dirty-guest\n"
    );
    assert_eq!(got.len(), want.len());
    for (p, w) in &want {
        assert_eq!(
            got.get(p),
            Some(w),
            "{} differs from e2fsck's replay",
            String::from_utf8_lossy(p)
        );
    }
}

/// A dirty journal from the kernel with `mkfs_args` and `mount_opts`, whose journal
/// features must then be `features` (dumpe2fs's names), replayed as e2fsck does.
fn kernel_case(mkfs_args: &[&str], mount_opts: &str, features: &str) {
    if !tools() || !have("xfs_io") || !have("mount") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    if kernel_dirty(&img, mkfs_args, mount_opts).is_none() {
        return;
    }
    assert_eq!(header_field(&img, "Journal features"), features);
    replay_matches_e2fsck(&img);
}

#[test]
fn kernel_journal_ext4_csum_v3_64bit() {
    kernel_case(&["-t", "ext4"], "", "journal_64bit journal_checksum_v3");
}

#[test]
fn kernel_journal_ext3_no_csum_32bit() {
    kernel_case(&["-t", "ext3", "-b", "1024"], "", "(none)");
}

#[test]
fn kernel_journal_ext4_without_metadata_csum_async_commit() {
    // journal_async_commit turns on journal checksums, v1 (crc32 of each transaction in
    // its commit block) without metadata_csum, here over 32-bit block numbers.
    kernel_case(
        &["-t", "ext4", "-b", "4096", "-O", "^metadata_csum,^64bit"],
        ",data=writeback,journal_async_commit",
        "journal_checksum journal_async_commit",
    );
}

/// Writes transactions with debugfs's journal writer: one logging an escaped block (its
/// first bytes are the JBD2 magic) and another, a second transaction revoking that
/// other one, and a third left uncommitted. Only the escaped block may be replayed.
fn debugfs_case(mkfs_args: &[&str], jo: &str, features: &str) {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let img = dir.path().join("fs.img");
    let probe = dir.path().join("probe.img");
    mkfs(&probe, mkfs_args, "8M");
    let bs = block_size(&probe) as usize;
    let orig: Vec<u8> = (0..3 * bs).map(|i| b'a' + (i / bs) as u8).collect();
    std::fs::write(src.join("a"), &orig).unwrap();
    std::fs::write(src.join("keep"), b"unchanged\n").unwrap();
    std::fs::create_dir(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), b"dirty-guest\n").unwrap();
    let mut args = mkfs_args.to_vec();
    args.extend(["-d", src.to_str().unwrap()]);
    mkfs(&img, &args, "8M");
    let blocks: Vec<u64> = (0..3)
        .map(|i| {
            debugfs(&img, &format!("bmap /a {i}"))
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    let mut escaped = vec![b'X'; bs];
    escaped[..4].copy_from_slice(&0xC03B_3998u32.to_be_bytes());
    let two = dir.path().join("two");
    let mut d = escaped.clone();
    d.extend(vec![b'Y'; bs]);
    std::fs::write(&two, &d).unwrap();
    let three = dir.path().join("three");
    std::fs::write(&three, vec![b'Z'; bs]).unwrap();
    let cmds = dir.path().join("cmds");
    std::fs::write(
        &cmds,
        format!(
            "{jo}\njw -b {},{} {}\njw -r {} /dev/null\njw -b {} -c {}\njc\n",
            blocks[0],
            blocks[1],
            two.display(),
            blocks[1],
            blocks[2],
            three.display()
        ),
    )
    .unwrap();
    let o = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(header(&img).contains("needs_recovery"));
    assert_eq!(header_field(&img, "Journal features"), features);
    let log = debugfs(&img, "logdump");
    assert!(log.contains("revoke"), "{log}");
    let mut want = escaped;
    want.extend_from_slice(&orig[bs..]);
    replay_matches_e2fsck(&img);
    let dev: Arc<dyn BlockDev> =
        Arc::new(RawFile::open(&img.with_extension("ours"), false).unwrap());
    let fs = Ext4Fs::open(dev, "ext4").unwrap();
    let mut got = vec![0u8; 3 * bs];
    assert_eq!(fs.read(b"/a", 0, &mut got).unwrap(), 3 * bs);
    assert!(
        got == want,
        "/a is not the escaped block then the original two"
    );
}

#[test]
fn debugfs_journal_ext4_csum_v3_revoke_escape() {
    debugfs_case(
        &["-t", "ext4", "-b", "4096"],
        "jo -c",
        "journal_incompat_revoke journal_64bit journal_checksum_v3",
    );
}

#[test]
fn debugfs_journal_ext3_32bit_no_csum() {
    debugfs_case(
        &["-t", "ext3", "-b", "1024"],
        "jo",
        "journal_incompat_revoke",
    );
}

#[test]
fn debugfs_journal_csum_v2() {
    debugfs_case(
        &["-t", "ext4", "-b", "2048", "-O", "^64bit"],
        "jo -c -v 2",
        "journal_incompat_revoke journal_checksum_v2",
    );
}

/// A read-only open replays into memory: the engine, which reads inline_data filesystems
/// (ext4-view refuses them), sees the logged block, and the image is not written.
#[test]
fn read_only_open_replays_in_memory() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), vec![b'a'; 8192]).unwrap();
    std::fs::write(src.join("inline"), b"in the inode\n").unwrap();
    let img = dir.path().join("fs.img");
    mkfs(
        &img,
        &[
            "-t",
            "ext4",
            "-b",
            "4096",
            "-O",
            "inline_data",
            "-d",
            src.to_str().unwrap(),
        ],
        "8M",
    );
    let block: u64 = debugfs(&img, "bmap /a 1").trim().parse().unwrap();
    let blk = dir.path().join("blk");
    std::fs::write(&blk, vec![b'J'; 4096]).unwrap();
    let cmds = dir.path().join("cmds");
    std::fs::write(
        &cmds,
        format!("jo -c\njw -b {block} {}\njc\n", blk.display()),
    )
    .unwrap();
    let o = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(header(&img).contains("needs_recovery"));
    let bytes = std::fs::read(&img).unwrap();
    let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(&img, false).unwrap());
    let fs = Ext4Fs::open(dev, "ext4").unwrap();
    let mut buf = vec![0u8; 8192];
    assert_eq!(fs.read(b"/a", 0, &mut buf).unwrap(), 8192);
    assert!(buf[..4096].iter().all(|&b| b == b'a'));
    assert!(buf[4096..].iter().all(|&b| b == b'J'));
    let n = fs.read(b"/inline", 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"in the inode\n");
    drop(fs);
    assert!(
        std::fs::read(&img).unwrap() == bytes,
        "the image was written"
    );
}

/// A journal that recorded an error when it aborted (`s_errno`): the kernel moves it to
/// the filesystem's superblock on mount (errors recorded, e2fsck needed), so writing is
/// refused and the image left as it was; reading still sees the replay.
#[test]
fn a_journal_error_is_refused_for_writing() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    // No journal checksums, so s_errno can be set without recomputing one.
    mkfs(&img, &["-t", "ext3", "-b", "1024"], "8M");
    let blk = dir.path().join("blk");
    std::fs::write(&blk, vec![b'J'; 1024]).unwrap();
    let cmds = dir.path().join("cmds");
    std::fs::write(&cmds, format!("jo\njw -b 7000 {}\njc\n", blk.display())).unwrap();
    let o = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success());
    let jblock: u64 = debugfs(&img, "bmap <8> 0").trim().parse().unwrap();
    let mut bytes = std::fs::read(&img).unwrap();
    let at = jblock as usize * 1024 + 0x20;
    bytes[at..at + 4].copy_from_slice(&(-5i32).to_be_bytes());
    std::fs::write(&img, &bytes).unwrap();
    assert!(header_field(&img, "Journal errno").contains("-5"));
    let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(&img, true).unwrap());
    match Ext4Fs::open_rw(dev.clone(), "ext3") {
        Err(transplant_fs::Error::Refused { reason, .. }) => {
            assert!(reason.contains("errors recorded"), "{reason}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened for writing"),
    }
    assert!(
        std::fs::read(&img).unwrap() == bytes,
        "the image was written"
    );
    assert!(Ext4Fs::open(dev, "ext3").is_ok());
}

/// Fast commits the kernel made (an fsync on a fast_commit filesystem) and never followed
/// with a full commit: ext4 would replay them itself, logically; this replay cannot, so
/// writing is refused by name and the image left as it was.
#[test]
fn pending_fast_commits_are_refused() {
    if !tools() || !have("xfs_io") || !have("mount") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    mkfs(&img, &["-t", "ext4", "-O", "fast_commit"], "24M");
    let mounted = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "loop mount is required when CI is set"
        );
        return;
    }
    {
        let _m = Mounted(&mnt);
        std::fs::write(mnt.join("a"), b"a\n").unwrap();
        assert!(Command::new("sync").status().unwrap().success());
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("a"))
            .unwrap();
        f.write_all(b"more\n").unwrap();
        f.sync_all().unwrap();
        // No log flush: the running transaction, which the fast commit belongs to,
        // never commits.
        let st = Command::new("xfs_io")
            .args(["-x", "-c", "shutdown"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success());
    }
    assert!(header(&img).contains("needs_recovery"));
    let log = debugfs(&img, "logdump");
    assert!(log.contains("tag HEAD"), "no fast commit written: {log}");
    let bytes = std::fs::read(&img).unwrap();
    let dev: Arc<dyn BlockDev> = Arc::new(RawFile::open(&img, true).unwrap());
    match Ext4Fs::open_rw(dev, "ext4") {
        Err(transplant_fs::Error::Unsupported { dev, feature }) => {
            assert!(feature.contains("fast commits"), "{feature}");
            assert_eq!(dev, img.display().to_string());
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened for writing"),
    }
    assert!(
        std::fs::read(&img).unwrap() == bytes,
        "the image was written"
    );
}
