//! ext2, ext3 and ext4, read through the `ext4-view` crate.
//!
//! Chosen because it reads extents and block maps, htree directories, 64bit,
//! metadata_csum and replays the journal in memory when it needs recovery, and was
//! byte-identical on 10,110 entries in a trial (see CRATES.md). What it lacks: inline_data
//! and casefold directories (refused as unsupported, with the feature named), holes in
//! ext2/3 indirect block maps (reading past one is a "corrupt" error, never wrong bytes;
//! sparse files on ext2/3 guests are rare outside /var/log/lastlog), and
//! thread-safety — its `Ext4` is `Rc`-based. So each thread that touches a filesystem
//! loads its own instance (superblock, group descriptors, journal) on first use and keeps
//! it in a thread-local map: FUSE threads then read in parallel without a shared lock.
//!
//! Writing is this crate's own engine (the modules below, one per on-disk structure):
//! `Ext4Fs::open_rw` checks the filesystem is safe to change, and from then on every call,
//! reads included, goes through the engine behind one lock, so reads see the writes.

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
mod inode;
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
use std::sync::{Mutex, MutexGuard};
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
}

impl Ext4Fs {
    /// Opens an ext2/3/4 filesystem on `dev`; `kind` is what probing called it.
    pub fn open(dev: Arc<dyn BlockDev>, kind: &str) -> Result<Self> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = dev.name().to_string();
        let fs =
            Ext4::load(Box::new(DevReader(dev.clone()))).map_err(|e| map_err(&name, "/", e))?;
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
        })
    }

    /// Opens for writing (normally over an `Overlay`), refusing filesystems that are not
    /// safe to change: a journal needing recovery, errors recorded, an unknown incompatible
    /// or read-only-compatible feature, bigalloc, a mismatched checksum.
    pub fn open_rw(dev: Arc<dyn BlockDev>, kind: &str) -> Result<Ext4Fs> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
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
        })
    }

    fn engine(&self) -> Option<MutexGuard<'_, Engine>> {
        self.rw
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
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
        if let Some(e) = self.engine() {
            return e.read_data(path, offset, buf);
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
