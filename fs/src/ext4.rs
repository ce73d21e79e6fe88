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

use crate::error::{Error, Result};
use crate::{DirEntry, FileKind, Filesystem, FsInfo, Metadata, Time};
use ext4_view::{Ext4, Ext4Error, Ext4Read};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
        self.with(path, |fs| fs.symlink_metadata(path).map(|m| metadata(&m)))
    }

    fn read_dir(&self, path: &[u8]) -> Result<Vec<DirEntry>> {
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
        self.with(path, |fs| fs.read_link(path).map(|p| p.as_ref().to_vec()))
    }
}
