//! ext2, ext3 and ext4. Read-only opens read through the `ext4-view` crate where it can,
//! and through this crate's own engine (the modules below) where it cannot; opens for
//! writing go through the engine alone.
//!
//! A journal that needs recovery (a guest copied while running) is replayed first, by
//! this crate (`journal_replay`, the kernel's three passes): into an in-memory overlay
//! for reading, so the device is never written and both readers see the replayed
//! filesystem; into the device itself (an overlay) for writing. Should that replay fail,
//! a read-only open leaves the journal to ext4-view, which replays it in memory itself.
//!
//! ext4-view is the default reader because it reads in parallel: its `Ext4` is
//! `Rc`-based, so each thread that touches a filesystem loads its own instance
//! (superblock, group descriptors, journal) on first use and keeps it in a thread-local
//! map, and FUSE threads then read without a shared lock, while the engine
//! serves one call at a time behind a mutex. It was byte-identical on 10,110 entries in a
//! trial (see CRATES.md). What it lacks, and where the engine takes over:
//!
//! - inline_data (`DATA_IN_INODE`): ext4-view refuses the whole filesystem, so every call
//!   on such a filesystem goes to the engine, which reads inline files, directories and
//!   symlinks (see `inline`) as well as everything else on it;
//! - file data: ext4-view 1.0 takes a zero indirect pointer (a hole covering a whole
//!   indirect block of an ext2/3 block map) for block 0 and reports the read as corrupt,
//!   and a read that seeks into such a hole past the double-indirect pointer panics (an
//!   unwrap in its `File::read_bytes`; seen on a 24 MiB sparse file on 1 KiB blocks).
//!   The engine reads holes as zeroes, and reads large files faster (`cat` of 512 MiB:
//!   0.26 s against 0.71 s on an ext3 block map, 0.15 s against 0.35 s on ext4 extents),
//!   so the data of every file is read through it (opened on the first read), holding
//!   its lock only to find the file and its map, not while reading the data, so parallel
//!   readers still read in parallel. Metadata and listings stay with ext4-view. If the
//!   engine cannot open the filesystem (meta_bg; a journal needing recovery that
//!   `journal_replay` could not replay), ext4-view reads everything, as before.
//!
//! Casefold and encrypted directories stay unsupported either way.
//!
//! Writing: `Ext4Fs::open_rw` checks the filesystem is safe to change, and from then on
//! every call, reads included, goes through the engine behind one lock, so reads see the
//! writes.

mod bitmap;
mod block_map;
mod csum;
mod dir;
mod dir_block;
mod dx_hash;
mod engine;
mod extent_tree;
mod group_desc;
mod htree;
mod inline;
mod inode;
pub mod journal_replay;
mod journal_state;
mod le;
mod map_write;
mod mapping;
mod ops;
mod read;
mod superblock;

use crate::error::{Error, Result};
use crate::{DirEntry, FileKind, Filesystem, FsInfo, Metadata, NewNode, SetAttrs, Time};
use engine::Engine;
use ext4_view::{Ext4, Ext4Error, Ext4Read};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use transplant_formats::BlockDev;

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static INSTANCES: RefCell<HashMap<usize, Ext4>> = RefCell::new(HashMap::new());
}

struct DevReader(Arc<dyn BlockDev>);

impl Ext4Read for DevReader {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_at(dst, start).map_err(|e| Box::new(e) as _)
    }
}

pub struct Ext4Fs {
    id: usize,
    dev: Arc<dyn BlockDev>,
    info: FsInfo,
    /// Set when opened for writing: then every call goes through it.
    rw: Option<Mutex<Engine>>,
    /// Read-only: the engine, for what ext4-view cannot read; opened on first need (None
    /// inside when it cannot read the filesystem either).
    own: OnceLock<Option<Mutex<Engine>>>,
    /// ext4-view refused the filesystem: every call goes to `own`.
    own_only: bool,
}

impl Ext4Fs {
    /// Opens an ext2/3/4 filesystem on `dev`; `kind` is what probing called it.
    pub fn open(dev: Arc<dyn BlockDev>, kind: &str) -> Result<Self> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        check_group_table(&*dev)?;
        let (dev, replay_failed) = replayed_in_memory(dev);
        let name = dev.name().to_string();
        let fs = match Ext4::load(Box::new(DevReader(dev.clone()))) {
            Ok(fs) => fs,
            // The engine cannot read around the journal: why the replay failed is the
            // reason to give.
            Err(e) if is_inline_refusal(&e) => match replay_failed {
                Some(why) => return Err(why),
                None => return Self::open_own(dev, kind, id),
            },
            Err(e) => return Err(map_err(&name, "/", e)),
        };
        let label = fs
            .label()
            .to_str()
            .ok()
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty());
        let uuid = Some(fs.uuid().to_string());
        INSTANCES.with(|m| m.borrow_mut().insert(id, fs));
        Ok(Ext4Fs {
            id,
            dev,
            info: FsInfo {
                kind: kind.to_string(),
                label,
                uuid,
            },
            rw: None,
            own: OnceLock::new(),
            own_only: false,
        })
    }

    /// A read-only open served by the engine alone (see the module doc).
    fn open_own(dev: Arc<dyn BlockDev>, kind: &str, id: usize) -> Result<Self> {
        let e = Engine::open_read(dev.clone())?;
        let info = FsInfo {
            kind: kind.to_string(),
            label: e.sb.label(),
            uuid: Some(e.sb.uuid_string()),
        };
        Ok(Ext4Fs {
            id,
            dev,
            info,
            rw: None,
            own: OnceLock::from(Some(Mutex::new(e))),
            own_only: true,
        })
    }

    /// Opens for writing (normally over an `Overlay`), refusing filesystems that are not
    /// safe to change: errors recorded, an unknown incompatible or read-only-compatible
    /// feature, bigalloc, a mismatched checksum. A journal needing recovery is replayed
    /// into `dev` first, as a kernel mount would (see `journal_replay`), but only once the
    /// replayed filesystem passes those checks: a refusal leaves `dev` unwritten.
    pub fn open_rw(dev: Arc<dyn BlockDev>, kind: &str) -> Result<Ext4Fs> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if journal_replay::needs_recovery(&*dev) {
            let trial = Arc::new(journal_replay::ReplayView::new(dev.clone()));
            let trial_dev: Arc<dyn BlockDev> = trial.clone();
            journal_replay::recover(&trial_dev)?;
            drop(Engine::open(trial_dev)?);
            trial.commit()?;
        }
        let e = Engine::open(dev.clone())?;
        let info = FsInfo {
            kind: kind.to_string(),
            label: e.sb.label(),
            uuid: Some(e.sb.uuid_string()),
        };
        Ok(Ext4Fs {
            id,
            dev,
            info,
            rw: Some(Mutex::new(e)),
            own: OnceLock::new(),
            own_only: false,
        })
    }

    /// The engine when it serves every call: opened for writing, or ext4-view refused.
    fn engine(&self) -> Option<MutexGuard<'_, Engine>> {
        let m = match &self.rw {
            Some(m) => Some(m),
            None if self.own_only => self.own.get().and_then(|o| o.as_ref()),
            None => None,
        };
        m.map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The engine as a second reader beside ext4-view, opened on first need.
    fn fallback(&self) -> Option<MutexGuard<'_, Engine>> {
        self.own
            .get_or_init(|| Engine::open_read(self.dev.clone()).ok().map(Mutex::new))
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The engine for reading file data, when it can read this filesystem: it reads
    /// block-map holes right where ext4-view fails or panics on them, and `cat` of a
    /// large file took 0.26 s against ext4-view's 0.71 s on an ext3 block map and
    /// 0.15 s against 0.35 s on an ext4 extent tree (512 MiB, see `cat_speed_*` in
    /// tests/ext4_inline.rs).
    fn reads_through_engine(&self) -> Option<MutexGuard<'_, Engine>> {
        self.fallback()
    }

    /// Reads through a read-only engine, holding it only to find the file.
    fn read_own(
        &self,
        e: MutexGuard<'_, Engine>,
        path: &[u8],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let src = e.read_source(path)?;
        drop(e);
        read::fill(&src, offset, buf, |b, off| Ok(self.dev.read_at(b, off)?))
    }

    fn write_engine(&self, path: &[u8]) -> Result<MutexGuard<'_, Engine>> {
        self.engine().ok_or_else(|| {
            Error::ReadOnly(format!(
                "{}: {} is open read-only",
                crate::show(path),
                self.dev.name()
            ))
        })
    }

    fn with<R>(
        &self,
        path: &[u8],
        f: impl FnOnce(&Ext4) -> std::result::Result<R, Ext4Error>,
    ) -> Result<R> {
        let name = self.dev.name();
        let fs = INSTANCES.with(|m| m.borrow().get(&self.id).cloned());
        let fs = match fs {
            Some(fs) => fs,
            None => {
                let fs = Ext4::load(Box::new(DevReader(self.dev.clone())))
                    .map_err(|e| map_err(name, "/", e))?;
                INSTANCES.with(|m| m.borrow_mut().insert(self.id, fs.clone()));
                fs
            }
        };
        f(&fs).map_err(|e| map_err(name, &crate::show(path), e))
    }
}

impl Drop for Ext4Fs {
    fn drop(&mut self) {
        // Instances in other threads go when those threads end.
        let _ = INSTANCES.try_with(|m| m.borrow_mut().remove(&self.id));
    }
}

/// A read-only view of `dev` with its journal replayed (into an overlay, so nothing is
/// written), when it needs recovery and the replay succeeds; else `dev` itself, for
/// ext4-view to replay or refuse as it does, with why the replay failed. Both readers then see the replayed
/// filesystem: the engine too, which does not read around a journal needing recovery.
fn replayed_in_memory(dev: Arc<dyn BlockDev>) -> (Arc<dyn BlockDev>, Option<Error>) {
    if !journal_replay::needs_recovery(&*dev) {
        return (dev, None);
    }
    let view: Arc<dyn BlockDev> = Arc::new(journal_replay::ReplayView::new(dev.clone()));
    match journal_replay::recover(&view) {
        Ok(_) => (view, None),
        Err(e) => (dev, Some(e)),
    }
}

/// Refuses a superblock whose group descriptor table could not be on the device:
/// ext4-view allocates one descriptor per group the block count implies before reading
/// any, so a hostile block count would ask for many GiB (found by fuzzing).
fn check_group_table(dev: &dyn BlockDev) -> Result<()> {
    use le::{u16_at, u32_at};
    let mut raw = [0u8; 1024];
    if dev
        .read_at(&mut raw, superblock::SUPERBLOCK_OFFSET)
        .is_err()
        || u16_at(&raw, 0x38) != superblock::MAGIC
    {
        return Ok(()); // ext4-view says what is wrong.
    }
    let is64 = u32_at(&raw, 0x60) & superblock::incompat::BIT64 != 0;
    // ext4-view takes the high half of the block count even without 64bit.
    let blocks = u32_at(&raw, 0x4) as u64 | (u32_at(&raw, 0x150) as u64) << 32;
    let per_group = u32_at(&raw, 0x20) as u64;
    let desc = if is64 {
        (u16_at(&raw, 0xFE) as u64).max(32)
    } else {
        32
    };
    if per_group == 0 {
        return Ok(());
    }
    let groups = blocks.div_ceil(per_group);
    if groups > 1 << 22 || groups.saturating_mul(desc) > dev.len() {
        return Err(Error::Corrupt {
            dev: dev.name().to_string(),
            detail: format!(
                "superblock: {blocks} blocks in groups of {per_group} make {groups} block groups, whose descriptors cannot fit on the device ({} bytes)",
                dev.len()
            ),
        });
    }
    Ok(())
}

/// Whether ext4-view refused the filesystem for inline_data (and nothing else).
fn is_inline_refusal(e: &Ext4Error) -> bool {
    match e {
        Ext4Error::Incompatible(i) => {
            let m = i.to_string();
            m.contains("DATA_IN_INODE")
        }
        _ => false,
    }
}

fn map_err(dev: &str, path: &str, e: Ext4Error) -> Error {
    match e {
        Ext4Error::NotFound => Error::NotFound(path.to_string()),
        Ext4Error::NotADirectory => Error::NotADirectory(path.to_string()),
        Ext4Error::IsADirectory => Error::IsADirectory(path.to_string()),
        Ext4Error::NotASymlink => Error::NotASymlink(path.to_string()),
        Ext4Error::TooManySymlinks => Error::Loop(path.to_string()),
        Ext4Error::Incompatible(i) => Error::Unsupported {
            dev: dev.to_string(),
            feature: feature_names(&i.to_string()),
        },
        Ext4Error::Encrypted => Error::Unsupported {
            dev: dev.to_string(),
            feature: format!("{path} is encrypted (fscrypt)"),
        },
        Ext4Error::Corrupt(c) => Error::Corrupt {
            dev: dev.to_string(),
            detail: c.to_string(),
        },
        other => Error::Io {
            dev: dev.to_string(),
            detail: format!("{path}: {other}"),
        },
    }
}

/// ext4-view names feature flags by its own constants; administrators know the
/// mke2fs/tune2fs names (`-O inline_data`), so those lead.
fn feature_names(msg: &str) -> String {
    const NAMES: [(&str, &str); 6] = [
        ("DATA_IN_INODE", "inline_data"),
        ("CASE_FOLDING", "casefold"),
        ("ENCRYPTED", "encrypt"),
        ("COMPRESSION", "compression"),
        ("LARGE_DIR", "large_dir"),
        ("DIRDATA", "dirdata"),
    ];
    let mut out = msg.to_string();
    for (flag, name) in NAMES {
        if msg.contains(flag) {
            out = out.replace(flag, &format!("{name} ({flag})"));
        }
    }
    out
}

fn time(t: ext4_view::Timestamp) -> Time {
    Time {
        secs: t.seconds(),
        nanos: t.nanoseconds(),
    }
}

fn kind(t: ext4_view::FileType) -> FileKind {
    if t.is_dir() {
        FileKind::Dir
    } else if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_char_dev() {
        FileKind::CharDevice
    } else if t.is_block_dev() {
        FileKind::BlockDevice
    } else if t.is_fifo() {
        FileKind::Fifo
    } else if t.is_socket() {
        FileKind::Socket
    } else {
        FileKind::File
    }
}

fn metadata(m: &ext4_view::Metadata) -> Metadata {
    Metadata {
        kind: kind(m.file_type()),
        mode: (m.mode() & 0o7777) as u32,
        uid: m.uid(),
        gid: m.gid(),
        size: m.len(),
        atime: time(m.accessed()),
        mtime: time(m.modified()),
        crtime: m.created().map(time),
    }
}

impl Filesystem for Ext4Fs {
    fn info(&self) -> FsInfo {
        self.info.clone()
    }

    fn lstat(&self, path: &[u8]) -> Result<Metadata> {
        if let Some(e) = self.engine() {
            return e.stat(path);
        }
        self.with(path, |fs| fs.symlink_metadata(path).map(|m| metadata(&m)))
    }

    fn read_dir(&self, path: &[u8]) -> Result<Vec<DirEntry>> {
        if let Some(e) = self.engine() {
            return e.read_dir_entries(path);
        }
        self.with(path, |fs| {
            let mut out = Vec::new();
            for e in fs.read_dir(path)? {
                let e = e?;
                let name = e.file_name().as_ref().to_vec();
                if name == b"." || name == b".." {
                    continue;
                }
                out.push(DirEntry {
                    name,
                    kind: kind(e.file_type()?),
                });
            }
            Ok(out)
        })
    }

    fn read(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<usize> {
        if self.rw.is_some() {
            if let Some(e) = self.engine() {
                return e.read_data(path, offset, buf);
            }
        }
        if let Some(e) = self.engine().or_else(|| self.reads_through_engine()) {
            return self.read_own(e, path, offset, buf);
        }
        self.with(path, |fs| {
            let mut f = fs.open(path)?;
            if offset >= f.metadata().len() {
                return Ok(0);
            }
            f.seek_to(offset)?;
            let mut done = 0;
            while done < buf.len() {
                let n = f.read_bytes(&mut buf[done..])?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            Ok(done)
        })
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        if let Some(e) = self.engine() {
            return e.read_link_target(path);
        }
        self.with(path, |fs| fs.read_link(path).map(|p| p.as_ref().to_vec()))
    }

    fn writable(&self) -> bool {
        self.rw.is_some()
    }

    fn write_file(&self, path: &[u8], data: &[u8]) -> Result<()> {
        self.write_engine(path)?.write_file(path, data)
    }

    fn create(&self, path: &[u8], node: NewNode<'_>, attrs: &SetAttrs) -> Result<()> {
        self.write_engine(path)?.create(path, node, attrs)
    }

    fn remove(&self, path: &[u8]) -> Result<()> {
        self.write_engine(path)?.remove(path)
    }

    fn rename(&self, from: &[u8], to: &[u8]) -> Result<()> {
        self.write_engine(from)?.rename(from, to)
    }

    fn set_attrs(&self, path: &[u8], attrs: &SetAttrs) -> Result<()> {
        self.write_engine(path)?.set_attrs(path, attrs)
    }

    fn sync(&self) -> Result<()> {
        if let Some(mut e) = self.engine() {
            e.flush_meta()?;
            e.dev.flush()?;
        }
        Ok(())
    }
}
