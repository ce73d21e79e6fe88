//! XFS log recovery against the kernel's. Dirty logs are made for real: a mkfs.xfs
//! image is changed on a loop mount (files created, written, renamed, removed, a
//! directory grown to leaf form, xattrs set), some of it synced and some only logged,
//! then the filesystem is shut down with the log flushed and the metadata not written
//! back (`xfs_io -x -c 'shutdown -f'`). A copy is mounted so the kernel replays it (the
//! reference); our reader on the dirty original must show the same tree (names,
//! kinds, modes, sizes, contents, link targets, xattrs) as the kernel on the replayed
//! copy, without writing the original. Needs root, loop devices, xfsprogs, attr.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use transplant_formats::BlockDev;
use transplant_fs::xfs::{LogState, XfsFs, XfsOptions};
use transplant_fs::{FileKind, Filesystem};

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found && std::env::var_os("CI").is_some() {
        panic!("{tool} is required in CI");
    }
    found
}

fn can_mount() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !root && std::env::var_os("CI").is_some() {
        panic!("XFS log tests need root (loop mounts) in CI");
    }
    root && have("mkfs.xfs") && have("xfs_io") && have("setfattr") && have("getfattr")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mkfs(img: &Path, size_mb: u64, opts: &[&str]) {
    let f = std::fs::File::create(img).unwrap();
    f.set_len(size_mb << 20).unwrap();
    drop(f);
    run(Command::new("mkfs.xfs")
        .args(["-q", "-f"])
        .args(opts)
        .arg(img)
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1"));
}

/// A loop mount on a loop device of its own, unmounted and detached on drop.
struct Mounted(PathBuf, String);

impl Mounted {
    fn new(img: &Path, mnt: &Path) -> Result<Mounted, String> {
        Mounted::with(img, mnt, "rw")
    }

    fn with(img: &Path, mnt: &Path, opts: &str) -> Result<Mounted, String> {
        std::fs::create_dir_all(mnt).unwrap();
        let mut last = String::new();
        for _ in 0..10 {
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(img)
                .output()
                .unwrap();
            let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() {
                let m = Command::new("mount")
                    .args(["-o", opts])
                    .arg(&dev)
                    .arg(mnt)
                    .output()
                    .unwrap();
                if m.status.success() {
                    return Ok(Mounted(mnt.to_path_buf(), dev));
                }
                last = String::from_utf8_lossy(&m.stderr).into_owned();
                let _ = Command::new("losetup").args(["-d", &dev]).status();
                if last.contains("wrong fs type") {
                    break;
                }
            } else {
                last = String::from_utf8_lossy(&out.stderr).into_owned();
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Err(format!("cannot mount {}: {last}", img.display()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = Command::new("losetup").args(["-d", &self.1]).status();
    }
}

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Changes that reach the log: some written back by a sync half-way (so replay must
/// leave newer metadata alone), the rest only in the log.
fn workload(root: &Path, reflink: bool) {
    workload_then(root, reflink, false)
}

/// `workload`, with `settle`: a sync just before the shutdown, so the kernel has
/// inactivated the removed files (its background inode GC may otherwise still hold them
/// on the AGI's unlinked lists at the shutdown, depending on the machine's load, and a
/// write after the replay refuses those; see log_recover). The log stays dirty.
fn workload_then(root: &Path, reflink: bool, settle: bool) {
    let p = |s: &str| root.join(s);
    std::fs::create_dir_all(p("etc/sysconfig")).unwrap();
    std::fs::write(p("etc/fstab"), b"UUID=1 / xfs defaults 0 0\n").unwrap();
    std::fs::create_dir(p("many")).unwrap();
    for k in 0..400 {
        std::fs::write(p(&format!("many/entry-{k:04}")), format!("{k}\n")).unwrap();
    }
    std::fs::write(p("early"), bytes(1, 20_000)).unwrap();
    run(&mut Command::new("sync"));
    // After the sync: only in the log (data synced, metadata not written back).
    for k in 0..400 {
        if k % 3 == 0 {
            std::fs::remove_file(p(&format!("many/entry-{k:04}"))).unwrap();
        } else if k % 3 == 1 {
            std::fs::rename(
                p(&format!("many/entry-{k:04}")),
                p(&format!("many/renamed-{k:04}")),
            )
            .unwrap();
        }
    }
    std::fs::create_dir_all(p("new/deep/er")).unwrap();
    for (i, n) in [0usize, 1, 4096, 70_000, 1 << 20].iter().enumerate() {
        let f = std::fs::File::create(p(&format!("new/deep/f{i}"))).unwrap();
        f.write_all_at(&bytes(10 + i as u64, *n), 0).unwrap();
        f.sync_all().unwrap();
    }
    // Many extents: the data fork becomes a btree, logged as a root.
    let f = std::fs::File::create(p("new/frag")).unwrap();
    for k in 0..300u64 {
        f.write_all_at(&bytes(k, 4096), k * 8192).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    std::os::unix::fs::symlink("../etc/fstab", p("new/link")).unwrap();
    std::os::unix::fs::symlink(format!("/{}", "y".repeat(300)), p("new/longlink")).unwrap();
    std::fs::hard_link(p("early"), p("new/early.hard")).unwrap();
    std::fs::remove_file(p("etc/fstab")).unwrap();
    std::fs::write(p("etc/fstab"), b"UUID=2 / xfs defaults 0 0\n").unwrap();
    std::fs::File::open(p("etc/fstab"))
        .unwrap()
        .sync_all()
        .unwrap();
    run(Command::new("setfattr")
        .args(["-n", "security.selinux", "-v", "system_u:object_r:etc_t:s0"])
        .arg(p("etc/fstab")));
    run(Command::new("setfattr")
        .args(["-n", "user.big", "-v", &"v".repeat(3000)])
        .arg(p("new/deep/f1")));
    std::fs::rename(p("new/deep/er"), p("etc/sysconfig/moved")).unwrap();
    if reflink {
        run(Command::new("cp")
            .args(["--reflink=always"])
            .arg(p("new/deep/f4"))
            .arg(p("new/clone")));
    }
    if settle {
        run(&mut Command::new("sync"));
    }
    run(Command::new("xfs_io")
        .args(["-x", "-c", "shutdown -f"])
        .arg(root));
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    size: u64,
    data: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The tree as the kernel shows it on a mounted (replayed) filesystem.
fn kernel_tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::from("")];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let path = root.join(&r);
            let m = std::fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            let (kind, data) = if ft.is_dir() {
                todo.push(r.clone());
                ("dir", Vec::new())
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&path).unwrap();
                ("symlink", t.into_os_string().into_encoded_bytes())
            } else {
                ("file", std::fs::read(&path).unwrap())
            };
            let xattrs = kernel_xattrs(&path);
            out.insert(
                format!("/{}", r.display()),
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    size: if ft.is_dir() { 0 } else { m.size() },
                    data,
                    xattrs,
                },
            );
        }
    }
    out
}

fn kernel_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let out = Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(path)
        .output()
        .unwrap();
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((name, val)) = line.split_once('=') else {
            continue;
        };
        let hex = val.trim_start_matches("0x");
        let val = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        v.push((name.as_bytes().to_vec(), val));
    }
    v.sort();
    v
}

/// The same view through our reader.
fn our_tree(fs: &XfsFs) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(dir) = todo.pop() {
        let path = if dir.is_empty() { "/" } else { &dir };
        for e in fs.read_dir(path.as_bytes()).unwrap() {
            let p = format!("{dir}/{}", String::from_utf8_lossy(&e.name));
            let m = fs.lstat(p.as_bytes()).unwrap();
            let (kind, data) = match m.kind {
                FileKind::Dir => {
                    todo.push(p.clone());
                    ("dir", Vec::new())
                }
                FileKind::Symlink => ("symlink", fs.read_link(p.as_bytes()).unwrap()),
                _ => {
                    let mut buf = vec![0u8; m.size as usize];
                    let n = fs.read(p.as_bytes(), 0, &mut buf).unwrap();
                    buf.truncate(n);
                    ("file", buf)
                }
            };
            let mut xattrs = fs.xattrs(p.as_bytes()).unwrap();
            xattrs.sort();
            out.insert(
                p,
                Entry {
                    kind,
                    mode: m.mode,
                    size: if kind == "dir" { 0 } else { m.size },
                    data,
                    xattrs,
                },
            );
        }
    }
    out
}

fn dev(img: &Path) -> Arc<dyn BlockDev> {
    transplant_formats::open_image(img, &Default::default()).unwrap()
}

fn sha(img: &Path) -> Vec<u8> {
    std::fs::read(img).unwrap()
}

/// Files created and removed, each step pushed to disk by a freeze (which also moves
/// the log tail up to the head), so the log goes round and the part left to replay
/// may straddle its end.
fn churn(root: &Path, rounds: usize) {
    for r in 0..rounds {
        for k in 0..1000 {
            std::fs::write(root.join(format!("churn{k}")), format!("{r}")).unwrap();
        }
        run(Command::new("xfs_io")
            .args(["-x", "-c", "freeze", "-c", "thaw"])
            .arg(root));
        for k in 0..1000 {
            std::fs::remove_file(root.join(format!("churn{k}"))).unwrap();
        }
        run(Command::new("xfs_io")
            .args(["-x", "-c", "freeze", "-c", "thaw"])
            .arg(root));
    }
}

struct Case<'a> {
    mkfs: &'a [&'a str],
    mount: &'a str,
    reflink: bool,
    churn: usize,
}

/// Makes a dirty log, replays it ourselves and by the kernel, and compares. Returns
/// false when this kernel cannot mount such a filesystem.
fn check(c: Case) -> bool {
    let mkfs_opts = c.mkfs;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dirty.img");
    let copy = dir.path().join("replayed.img");
    let mnt = dir.path().join("mnt");
    mkfs(&img, 64, mkfs_opts);
    match Mounted::with(&img, &mnt, c.mount) {
        Ok(_m) => {
            churn(&mnt, c.churn);
            workload(&mnt, c.reflink)
        }
        Err(e) => {
            eprintln!("skipped {mkfs_opts:?}: {e}");
            return false;
        }
    }
    let before = sha(&img);
    let raw = XfsFs::open_with(
        dev(&img),
        XfsOptions {
            allow_dirty_log: true,
        },
    )
    .unwrap();
    assert!(
        matches!(raw.log_state(), LogState::Dirty(_)),
        "{:?}",
        raw.log_state()
    );
    assert!(raw.lstat(b"/new").is_err(), "only in the log");
    drop(raw);
    std::fs::copy(&img, &copy).unwrap();
    let reference = {
        let _m = Mounted::new(&copy, &mnt).unwrap();
        kernel_tree(&mnt)
    };
    let t = std::time::Instant::now();
    let fs = XfsFs::open(dev(&img)).unwrap();
    let took = t.elapsed();
    let LogState::Replayed { transactions } = fs.log_state() else {
        panic!("not replayed: {:?}", fs.log_state());
    };
    eprintln!("{mkfs_opts:?}: replayed {transactions} transactions in {took:?}");
    assert!(*transactions > 0);
    let ours = our_tree(&fs);
    let kn: Vec<_> = reference.keys().collect();
    let on: Vec<_> = ours.keys().collect();
    assert_eq!(on, kn, "names differ");
    for (k, v) in &reference {
        assert_eq!(&ours[k], v, "{k} differs");
    }
    assert!(reference.contains_key("/etc/sysconfig/moved"));
    assert!(!reference.contains_key("/many/entry-0000"));
    assert_eq!(sha(&img), before, "the dirty image was written");
    true
}

#[test]
fn v5_defaults_replay_like_the_kernel() {
    if !can_mount() {
        return;
    }
    assert!(
        check(Case {
            mkfs: &[],
            mount: "rw",
            reflink: false,
            churn: 0
        }),
        "the kernel must mount a v5 filesystem"
    );
}

/// 256 KiB log buffers: records past 32 KiB carry extended headers; a small log that
/// has gone round several times.
#[test]
fn big_records_in_a_wrapped_log_replay_like_the_kernel() {
    if !can_mount() {
        return;
    }
    for churn in [2, 10] {
        assert!(check(Case {
            mkfs: &["-l", "size=6m"],
            mount: "logbsize=256k",
            reflink: false,
            churn,
        }));
    }
}

#[test]
fn v5_reflink_rmapbt_replay_like_the_kernel() {
    if !can_mount() {
        return;
    }
    assert!(check(Case {
        mkfs: &["-m", "reflink=1,rmapbt=1"],
        mount: "rw",
        reflink: true,
        churn: 1,
    }));
}

#[test]
fn v4_replays_like_the_kernel_where_it_mounts_v4() {
    if !can_mount() {
        return;
    }
    // Kernels built without CONFIG_XFS_SUPPORT_V4 cannot make (or replay) a v4 log.
    check(Case {
        mkfs: &["-m", "crc=0"],
        mount: "rw",
        reflink: false,
        churn: 0,
    });
}

/// The dirty image with some bytes replaced, without copying it.
struct Patched {
    base: Arc<Vec<u8>>,
    patches: BTreeMap<u64, Vec<u8>>,
}

impl BlockDev for Patched {
    fn len(&self) -> u64 {
        self.base.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> transplant_formats::Result<()> {
        transplant_formats::error::check_range("p", offset, buf.len() as u64, self.len())?;
        let end = offset + buf.len() as u64;
        buf.copy_from_slice(&self.base[offset as usize..end as usize]);
        for (&at, p) in &self.patches {
            let (lo, hi) = (at.max(offset), (at + p.len() as u64).min(end));
            if lo < hi {
                buf[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&p[(lo - at) as usize..(hi - at) as usize]);
            }
        }
        Ok(())
    }
    fn name(&self) -> &str {
        "patched"
    }
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}

/// The record CRC the kernel computes (`xlog_cksum`), so mutations get past it.
fn record_crc(hdrs: &[u8], data: &[u8]) -> u32 {
    let mut h = hdrs[..328].to_vec();
    h[32..36].fill(0);
    let mut c = crc32c::crc32c(&h);
    for j in 1..data.len().div_ceil(32768) {
        c = crc32c::crc32c_append(c, &hdrs[j * 512..j * 512 + 260]);
    }
    crc32c::crc32c_append(c, data)
}

/// Garbage, truncated and inconsistent log records (with their CRCs made to match, so
/// the parsers see them) give errors or a filesystem, never a panic.
#[test]
fn hostile_log_records_fail_cleanly() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dirty.img");
    let mnt = dir.path().join("mnt");
    mkfs(&img, 64, &[]);
    {
        let _m = Mounted::new(&img, &mnt).unwrap();
        workload(&mnt, false);
    }
    let base = Arc::new(std::fs::read(&img).unwrap());
    let sb = &base[..512];
    let bs = u64::from(be32(sb, 4));
    let agblocks = u64::from(be32(sb, 84));
    let agblklog = sb[124];
    let logstart = u64::from_be_bytes(sb[48..56].try_into().unwrap());
    let log = ((logstart >> agblklog) * agblocks + (logstart & ((1 << agblklog) - 1))) * bs;
    // The records from the start of the log, up to where mkfs's empty ones begin.
    let mut recs = Vec::new();
    let mut at = log;
    while be32(&base, at as usize) == 0xfeed_babe {
        let len = u64::from(be32(&base, at as usize + 12));
        if len == 0 {
            break;
        }
        let size = u64::from(be32(&base, at as usize + 320));
        let hblks = if size > 32768 {
            size.div_ceil(32768)
        } else {
            1
        };
        recs.push((at, hblks, len));
        at += (hblks + len.div_ceil(512)) * 512;
    }
    assert!(recs.len() > 2, "{} records", recs.len());
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut ok, mut corrupt, mut other) = (0, 0, 0);
    for round in 0..200 {
        let (at, hblks, len) = recs[next() as usize % recs.len()];
        let hl = (hblks * 512) as usize;
        let mut hdrs = base[at as usize..at as usize + hl].to_vec();
        let mut data = base[at as usize + hl..at as usize + hl + len as usize].to_vec();
        match round % 6 {
            // Bytes of the data changed (the cycle stamps are left alone).
            0..=2 => {
                for _ in 0..1 + next() % 8 {
                    let i = next() as usize % data.len();
                    if i % 512 >= 4 {
                        data[i] = next() as u8;
                    }
                }
            }
            // Lengths and counts.
            3 => hdrs[12..16].copy_from_slice(&(next() as u32 % (len as u32 + 4096)).to_be_bytes()),
            4 => hdrs[40..44].copy_from_slice(&(next() as u32 % 100_000).to_be_bytes()),
            // The tail pointer.
            _ => hdrs[28..32].copy_from_slice(&(next() as u32 % 20_000).to_be_bytes()),
        }
        let n = (be32(&hdrs, 12) as usize).min(data.len());
        let crc = record_crc(&hdrs, &data[..n]);
        hdrs[32..36].copy_from_slice(&crc.to_le_bytes());
        let mut patches = BTreeMap::new();
        patches.insert(at, hdrs);
        patches.insert(at + hl as u64, data);
        let dev = Arc::new(Patched {
            base: base.clone(),
            patches,
        });
        match XfsFs::open(dev) {
            Ok(fs) => {
                ok += 1;
                // Whatever it replayed reads without panicking.
                let mut todo = vec![b"/".to_vec()];
                let mut seen = 0;
                while let Some(d) = todo.pop() {
                    let Ok(entries) = fs.read_dir(&d) else {
                        continue;
                    };
                    for e in entries {
                        seen += 1;
                        if seen > 3000 {
                            break;
                        }
                        let mut p = d.clone();
                        if p.last() != Some(&b'/') {
                            p.push(b'/');
                        }
                        p.extend_from_slice(&e.name);
                        if e.kind == FileKind::Dir {
                            todo.push(p);
                        } else {
                            let _ = fs.read(&p, 0, &mut [0u8; 4096]);
                        }
                    }
                }
            }
            Err(e) => match e.kind() {
                transplant_formats::ErrorKind::Corrupt => corrupt += 1,
                _ => {
                    other += 1;
                    eprintln!("{e}");
                }
            },
        }
    }
    eprintln!("hostile records: {ok} opened, {corrupt} corrupt, {other} other");
    assert!(corrupt > 0);
}

/// `xfs_repair -n` findings: lines a clean run does not print.
fn repair_findings(img: &Path) -> Vec<String> {
    const CLEAN: &[&str] = &[
        "Phase ",
        "agno = ",
        "Cannot get host filesystem geometry",
        "Repair may fail if there is a sector size mismatch",
        "the image and the host filesystem",
        "zero log",
        "scan filesystem freespace and inode maps",
        "found root inode chunk",
        "scan (but don't clear) agi unlinked lists",
        "process known inodes and perform inode discovery",
        "process newly discovered inodes",
        "setting up duplicate extent list",
        "check for inodes claiming duplicate blocks",
        "No modify flag set",
        "traversing filesystem",
        "traversal finished",
        "moving disconnected inodes to lost+found",
    ];
    let out = Command::new("xfs_repair")
        .args(["-n", "-f"])
        .arg(img)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut odd: Vec<String> = text
        .lines()
        .map(|l| l.trim_start_matches([' ', '\t', '-']).trim().to_string())
        .filter(|l| !l.is_empty() && !CLEAN.iter().any(|ok| l.starts_with(ok)))
        .collect();
    if !out.status.success() {
        odd.push(format!("exit status {}", out.status));
    }
    odd
}

/// Writing after a replay (as `convert` does, through an overlay): the replay goes
/// through and the log is closed, so `xfs_repair -n` finds nothing and the kernel
/// mounts it without recovery and sees the log's changes and ours.
#[test]
fn writes_after_replay_leave_a_clean_filesystem() {
    if !can_mount() || !have("xfs_repair") {
        return;
    }
    // The last: a small log gone round, so the unmount record lands in a later cycle.
    for (mkfs_opts, reflink, rounds) in [
        (&[][..], false, 0),
        (&["-m", "reflink=1,rmapbt=1"][..], true, 0),
        (&["-l", "size=6m"][..], false, 10),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("dirty.img");
        let out = dir.path().join("out.img");
        let copy = dir.path().join("replayed.img");
        let mnt = dir.path().join("mnt");
        mkfs(&img, 64, mkfs_opts);
        {
            let _m = Mounted::new(&img, &mnt).unwrap();
            churn(&mnt, rounds);
            workload_then(&mnt, reflink, true);
        }
        std::fs::copy(&img, &copy).unwrap();
        let mut reference = {
            let _m = Mounted::new(&copy, &mnt).unwrap();
            kernel_tree(&mnt)
        };
        std::fs::copy(&img, &out).unwrap();
        let base: Arc<dyn BlockDev> =
            Arc::new(transplant_formats::RawFile::open(&out, true).unwrap());
        let ov = Arc::new(transplant_formats::Overlay::new(base));
        let fs = XfsFs::open_rw(ov.clone()).unwrap();
        assert!(matches!(fs.log_state(), LogState::Replayed { .. }));
        let attrs = transplant_fs::SetAttrs {
            mode: Some(0o644),
            ..Default::default()
        };
        let node = transplant_fs::NewNode::File(b"written after the replay\n");
        fs.create(b"/etc/added", node, &attrs).unwrap();
        fs.write_file(b"/new/deep/f2", b"rewritten").unwrap();
        fs.remove(b"/new/deep/f0").unwrap();
        fs.sync().unwrap();
        drop(fs);
        ov.commit().unwrap();
        let found = repair_findings(&out);
        assert!(found.is_empty(), "{mkfs_opts:?}: xfs_repair -n: {found:#?}");
        let fs = XfsFs::open(dev(&out)).unwrap();
        assert_eq!(fs.log_state(), &LogState::Clean);
        drop(fs);
        let seen = {
            let _m = Mounted::new(&out, &mnt).unwrap();
            kernel_tree(&mnt)
        };
        reference.remove("/new/deep/f0");
        let f2 = reference.get_mut("/new/deep/f2").unwrap();
        f2.data = b"rewritten".to_vec();
        f2.size = 9;
        let added = &seen["/etc/added"];
        assert_eq!(added.data, b"written after the replay\n");
        let mut seen = seen;
        seen.remove("/etc/added");
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>()
        );
        for (k, v) in &reference {
            assert_eq!(&seen[k], v, "{k}");
        }
    }
}
