//! XFS, read-only: v4 and v5 (CRC) filesystems, as RHEL, CentOS, Rocky, Alma and Oracle
//! Linux guests put them on `/boot` and `/`.
//!
//! Written here rather than on the `lamxfs` crate, which reads contents correctly but
//! surfaces neither owners, times, device kinds nor extended attributes (so no SELinux
//! labels), re-walks a file's whole block map on every read call, takes `&mut self`,
//! and keeps its structures private, which the XFS write work will need. One module per
//! on-disk structure: [`superblock`], [`inode`], [`bmbt`] (fork block maps),
//! [`dir2_sf`] and [`dir2_data`] (directories in every form), [`symlink`], [`attr`] and
//! [`log`]. v5 metadata is checked for its CRC, owner and UUID before it is believed.
//!
//! Path lookups go through a per-directory name index built from a full read of the
//! directory's data blocks (so block, leaf and node directories share one code path,
//! and a 10,000-entry directory costs one pass, not one per lookup), and parsed inodes
//! and file block maps are cached: FUSE threads share these behind one short lock and
//! read file data without it. Caches are bounded; past the bound they start over.
//!
//! A log that needs recovery (a guest not shut down cleanly) is replayed in memory at
//! open ([`log_recover`]): reads see the filesystem as the kernel would after mount,
//! and the device is not written; opened for writing, the replay goes onto the device
//! (an overlay) and the log is closed ([`log_recover_clear`]). What recovery cannot do
//! is refused with the reason, unless the caller asks to read the filesystem as it
//! stands.

mod attr;
mod bmbt;
mod bmbt_write;
mod bytes;
mod dinode;
mod dir2_data;
mod dir2_sf;
mod dir_write;
mod ialloc;
mod inode;
mod log;
mod log_recover;
mod log_recover_clear;
mod log_recover_dev;
mod log_recover_items;
mod log_recover_record;
mod rmap;
mod sbtree;
mod space;
mod superblock;
mod symlink;
mod txn;
mod volume;
mod write;

pub use log::LogState;

use crate::error::{Error, Result};
use crate::{show, DirEntry, FileKind, Filesystem, FsInfo, Metadata, NewNode, SetAttrs};
use bmbt::{Extent, Fork};
use dir2_sf::RawEntry;
use inode::{Inode, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use superblock::{SbError, Superblock};
use transplant_formats::BlockDev;
use volume::Volume;

/// Bounds of the caches: parsed inodes, directory entries, file extents.
const MAX_CACHED_INODES: usize = 16 * 1024;
const MAX_CACHED_DIR_ENTRIES: usize = 2 * 1024 * 1024;
const MAX_CACHED_EXTENTS: usize = 4 * 1024 * 1024;
/// Directory data lives below this byte offset of the directory; its hash indexes above.
const DIR_LEAF_OFFSET: u64 = 32 << 30;

#[derive(Debug, Clone, Copy, Default)]
pub struct XfsOptions {
    /// Read a filesystem whose log needs recovery as it stands, without replaying the
    /// changes the log holds (recent metadata updates may be missing or half-visible).
    pub allow_dirty_log: bool,
}

struct Dir {
    entries: Vec<RawEntry>,
    index: HashMap<Vec<u8>, usize>,
}

#[derive(Default)]
struct Cache {
    inodes: HashMap<u64, Arc<Inode>>,
    dirs: HashMap<u64, Arc<Dir>>,
    dir_entries: usize,
    maps: HashMap<u64, Arc<Vec<Extent>>>,
    map_extents: usize,
}

pub struct XfsFs {
    vol: Volume,
    info: FsInfo,
    log: LogState,
    cache: Mutex<Cache>,
    /// Set when opened for writing: the allocation state of the AGs changed so far.
    rw: Option<Mutex<txn::State>>,
}

fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn kind_of_ftype(ft: u8) -> Option<FileKind> {
    Some(match ft {
        1 => FileKind::File,
        2 => FileKind::Dir,
        3 => FileKind::CharDevice,
        4 => FileKind::BlockDevice,
        5 => FileKind::Fifo,
        6 => FileKind::Socket,
        7 => FileKind::Symlink,
        _ => return None,
    })
}

impl XfsFs {
    /// Opens the XFS filesystem on `dev`, replaying in memory a log that needs recovery.
    pub fn open(dev: Arc<dyn BlockDev>) -> Result<XfsFs> {
        XfsFs::open_with(dev, XfsOptions::default())
    }

    pub fn open_with(dev: Arc<dyn BlockDev>, opts: XfsOptions) -> Result<XfsFs> {
        XfsFs::open_inner(dev, opts, false)
    }

    /// `write_through`: a log that needs recovery is replayed onto `dev` itself (which
    /// must be writable, normally an overlay) and closed, so the filesystem can be
    /// changed; otherwise the replay stays in memory.
    fn open_inner(dev: Arc<dyn BlockDev>, opts: XfsOptions, write_through: bool) -> Result<XfsFs> {
        let name = dev.name().to_string();
        let sb_err = |e: SbError| match e {
            SbError::Corrupt(detail) => Error::Corrupt {
                dev: name.clone(),
                detail: format!("XFS {detail}"),
            },
            SbError::Unsupported(feature) => Error::Unsupported {
                dev: name.clone(),
                feature,
            },
            SbError::Refused(reason) => transplant_formats::Error::refused(&name, reason).into(),
        };
        let mut head = vec![0u8; dev.len().min(4096) as usize];
        dev.read_at(&mut head, 0)?;
        if let Some(s) = Superblock::sector_size(&head).filter(|&s| s as usize > head.len()) {
            if u64::from(s) <= dev.len() {
                head = vec![0u8; s as usize];
                dev.read_at(&mut head, 0)?;
            }
        }
        let sb = Superblock::parse(&head).map_err(sb_err)?;
        let want = sb.dblocks.saturating_mul(sb.blocksize.into());
        if dev.len() < want {
            return Err(Error::Corrupt {
                dev: name.clone(),
                detail: format!(
                    "XFS superblock: the filesystem spans {want} bytes but the device holds {} (truncated image?)",
                    dev.len()
                ),
            });
        }
        let info = FsInfo {
            kind: "xfs".into(),
            label: sb.label.clone(),
            uuid: Some(uuid_string(&sb.uuid)),
        };
        let mut vol = Volume { dev, sb };
        let (mut log, span) = log::examine(&vol)?;
        let refuse =
            |why: String| -> Error { transplant_formats::Error::refused(&name, why).into() };
        match (&log, span) {
            (LogState::Dirty(_), _) if opts.allow_dirty_log => {}
            (LogState::Dirty(_), Some(span)) => {
                let rec = log_recover::recover(&vol, &span)?;
                let transactions = rec.transactions;
                let dev: Arc<dyn BlockDev> = if write_through {
                    log_recover_clear::write_through(&vol, &rec)?;
                    vol.dev.clone()
                } else {
                    Arc::new(rec.dev)
                };
                // Recovery may have replayed the superblock itself.
                let mut head = vec![0u8; usize::from(vol.sb.sectsize)];
                dev.read_at(&mut head, 0)?;
                let sb = Superblock::parse(&head).map_err(sb_err)?;
                vol = Volume { dev, sb };
                if write_through && !matches!(log::examine(&vol)?.0, LogState::Clean) {
                    return Err(vol.corrupt("log", 0, "still not clean after recovery closed it"));
                }
                log = LogState::Replayed { transactions };
            }
            (LogState::Dirty(why), None) => {
                return Err(refuse(format!(
                    "the XFS log needs recovery ({why}), and where to start it cannot be \
                     told: the guest was not shut down cleanly. Mount the filesystem once \
                     under Linux (on a copy) to replay it, or read it as it stands, without \
                     the log's changes"
                )))
            }
            (LogState::External, _) if !opts.allow_dirty_log => {
                return Err(refuse(
                    "the XFS log is on an external device, which was not given, so whether it \
                     needs recovery cannot be told; read it as it stands only if the guest was \
                     shut down cleanly"
                        .into(),
                ))
            }
            _ => {}
        }
        Ok(XfsFs {
            vol,
            info,
            log,
            cache: Mutex::new(Cache::default()),
            rw: None,
        })
    }

    /// Opens for writing (normally over an `Overlay`). A log that needs recovery is
    /// replayed onto `dev` and closed first (the result, once written out, mounts
    /// without recovery). Refuses what is not safe to change: a log whose recovery
    /// cannot be finished (see [`log_recover_clear`]) or that lives on another device, quota accounting,
    /// parent pointers, case-insensitive names, unknown feature bits. The AGs' free
    /// space and inode btrees are read (and checked) when a change first touches them.
    pub fn open_rw(dev: Arc<dyn BlockDev>) -> Result<XfsFs> {
        let mut fs = XfsFs::open(dev.clone())?;
        write::check_features(&fs)?;
        if let LogState::Replayed { .. } = fs.log {
            // Checked on the replay in memory; now the replay goes onto `dev`.
            fs = XfsFs::open_inner(dev, XfsOptions::default(), true)?;
        }
        fs.rw = Some(Mutex::new(txn::State::default()));
        Ok(fs)
    }

    /// What the log check found at open.
    pub fn log_state(&self) -> &LogState {
        &self.log
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic elsewhere cannot leave the caches inconsistent (each insert is one
        // call), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn inode(&self, ino: u64) -> Result<Arc<Inode>> {
        if let Some(i) = self.cache().inodes.get(&ino) {
            return Ok(i.clone());
        }
        let i = Arc::new(Inode::read(&self.vol, ino)?);
        let mut c = self.cache();
        if c.inodes.len() >= MAX_CACHED_INODES {
            c.inodes.clear();
        }
        c.inodes.insert(ino, i.clone());
        Ok(i)
    }

    fn data_map(&self, ino: &Inode) -> Result<Arc<Vec<Extent>>> {
        if let Some(m) = self.cache().maps.get(&ino.ino) {
            return Ok(m.clone());
        }
        let m = Arc::new(bmbt::extents(&self.vol, ino, Fork::Data)?);
        let mut c = self.cache();
        if c.map_extents + m.len() > MAX_CACHED_EXTENTS {
            c.maps.clear();
            c.map_extents = 0;
        }
        c.map_extents += m.len();
        c.maps.insert(ino.ino, m.clone());
        Ok(m)
    }

    fn dir(&self, ino: &Inode) -> Result<Arc<Dir>> {
        if let Some(d) = self.cache().dirs.get(&ino.ino) {
            return Ok(d.clone());
        }
        let entries = self.read_dir_entries(ino)?;
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        let d = Arc::new(Dir { entries, index });
        let mut c = self.cache();
        if c.dir_entries + d.entries.len() > MAX_CACHED_DIR_ENTRIES {
            c.dirs.clear();
            c.dir_entries = 0;
        }
        c.dir_entries += d.entries.len();
        c.dirs.insert(ino.ino, d.clone());
        Ok(d)
    }

    fn read_dir_entries(&self, ino: &Inode) -> Result<Vec<RawEntry>> {
        let vol = &self.vol;
        match ino.format {
            FMT_LOCAL => return Ok(dir2_sf::parse(vol, ino)?.1),
            FMT_EXTENTS | FMT_BTREE => {}
            f => {
                return Err(vol.corrupt(
                    &format!("directory inode {}", ino.ino),
                    ino.offset,
                    format!("data fork format {f}"),
                ))
            }
        }
        let map = self.data_map(ino)?;
        let sb = &vol.sb;
        let per = 1u64 << sb.dirblklog;
        let leaf_fsb = DIR_LEAF_OFFSET >> sb.blocklog;
        // A real directory's data blocks are distinct blocks of the device.
        let budget = (vol.dev.len() >> sb.blocklog) / per + 1;
        let mut out = Vec::new();
        let mut last_db = None;
        let mut read = 0u64;
        for e in map.iter().take_while(|e| e.off < leaf_fsb) {
            let first = e.off / per;
            let last = (e.end().min(leaf_fsb) - 1) / per;
            for db in first..=last {
                if last_db.is_some_and(|l| db <= l) {
                    continue;
                }
                last_db = Some(db);
                read += 1;
                if read > budget {
                    return Err(vol.corrupt(
                        &format!("directory inode {}", ino.ino),
                        ino.offset,
                        "maps more data blocks than the device holds",
                    ));
                }
                let what = format!("directory inode {} block {db}", ino.ino);
                let b = bmbt::read_blocks(vol, &map, db * per, per, &what)?;
                let at = sb
                    .fsb_offset(e.block + (db * per).saturating_sub(e.off))
                    .unwrap_or(0);
                let block_form = dir2_data::parse(vol, &b, at, ino.ino, &mut out)?;
                if block_form && db != 0 {
                    return Err(vol.corrupt(&what, at, "a block-form header past block 0"));
                }
            }
        }
        Ok(out)
    }

    /// The inode at `path` (no symlink is followed).
    fn lookup(&self, path: &[u8]) -> Result<Arc<Inode>> {
        let mut ino = self.inode(self.vol.sb.rootino)?;
        let mut done = 0;
        for comp in path.split(|&c| c == b'/') {
            done += comp.len() + 1;
            if comp.is_empty() || comp == b"." {
                continue;
            }
            let here = || {
                show(
                    path.get(..done.saturating_sub(comp.len() + 2))
                        .unwrap_or(b"/"),
                )
            };
            if ino.kind() != FileKind::Dir {
                return Err(Error::NotADirectory(here()));
            }
            let dir = self.dir(&ino)?;
            let Some(&i) = dir.index.get(comp) else {
                return Err(Error::NotFound(show(path)));
            };
            let child = dir.entries.get(i).map(|e| e.ino).unwrap_or(0);
            ino = self.inode(child)?;
        }
        Ok(ino)
    }

    /// Every extended attribute of `path` with its value (names as `getfattr` shows).
    pub fn xattrs(&self, path: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let ino = self.lookup(path)?;
        attr::list(&self.vol, &ino)?
            .into_iter()
            .map(|a| Ok((a.name.clone(), attr::value(&self.vol, &ino, &a)?)))
            .collect()
    }
}

impl Filesystem for XfsFs {
    fn info(&self) -> FsInfo {
        self.info.clone()
    }

    fn lstat(&self, path: &[u8]) -> Result<Metadata> {
        let i = self.lookup(path)?;
        Ok(Metadata {
            kind: i.kind(),
            mode: u32::from(i.mode & 0o7777),
            uid: i.uid,
            gid: i.gid,
            size: i.size,
            atime: i.atime,
            mtime: i.mtime,
            crtime: i.crtime,
        })
    }

    fn read_dir(&self, path: &[u8]) -> Result<Vec<DirEntry>> {
        let i = self.lookup(path)?;
        if i.kind() != FileKind::Dir {
            return Err(Error::NotADirectory(show(path)));
        }
        let dir = self.dir(&i)?;
        dir.entries
            .iter()
            .map(|e| {
                let kind = match e.ftype.and_then(kind_of_ftype) {
                    Some(k) => k,
                    None => self.inode(e.ino)?.kind(),
                };
                Ok(DirEntry {
                    name: e.name.clone(),
                    kind,
                })
            })
            .collect()
    }

    fn read(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<usize> {
        let i = self.lookup(path)?;
        match i.kind() {
            FileKind::Dir => return Err(Error::IsADirectory(show(path))),
            FileKind::File => {}
            _ => return Ok(0),
        }
        if i.is_realtime() {
            return Err(self
                .vol
                .unsupported(format!("{}: file on the XFS realtime device", show(path))));
        }
        if offset >= i.size {
            return Ok(0);
        }
        let want = (i.size - offset).min(buf.len() as u64) as usize;
        let out = &mut buf[..want];
        let map = self.data_map(&i)?;
        let bl = self.vol.sb.blocklog;
        let end = offset + want as u64;
        let mut pos = offset;
        let mut idx = bmbt::find(&map, offset >> bl);
        while pos < end {
            let dst = (pos - offset) as usize;
            let e = map.get(idx);
            // Saturating: a hostile extent may sit near the 2^54-block limit.
            let bs = 1u64 << bl;
            let ext_start = e.map(|e| e.off.saturating_mul(bs)).unwrap_or(u64::MAX);
            if ext_start > pos {
                // A hole (or past the last extent): zeroes up to the next extent.
                let n = (ext_start.min(end) - pos) as usize;
                out[dst..dst + n].fill(0);
                pos += n as u64;
                continue;
            }
            let Some(e) = e else { break };
            let n = (e.end().saturating_mul(bs).min(end) - pos) as usize;
            if e.unwritten {
                out[dst..dst + n].fill(0);
            } else {
                let base = self.vol.sb.fsb_offset(e.block).unwrap_or(0);
                self.vol
                    .dev
                    .read_at(&mut out[dst..dst + n], base + (pos - ext_start))?;
            }
            pos += n as u64;
            idx += 1;
        }
        Ok(want)
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        let i = self.lookup(path)?;
        if i.kind() != FileKind::Symlink {
            return Err(Error::NotASymlink(show(path)));
        }
        symlink::target(&self.vol, &i)
    }

    fn writable(&self) -> bool {
        self.rw.is_some()
    }

    fn write_file(&self, path: &[u8], data: &[u8]) -> Result<()> {
        self.do_write_file(path, data)
    }

    fn create(&self, path: &[u8], node: NewNode<'_>, attrs: &SetAttrs) -> Result<()> {
        self.do_create(path, node, attrs)
    }

    fn remove(&self, path: &[u8]) -> Result<()> {
        self.do_remove(path)
    }

    fn rename(&self, from: &[u8], to: &[u8]) -> Result<()> {
        self.do_rename(from, to)
    }

    fn set_attrs(&self, path: &[u8], attrs: &SetAttrs) -> Result<()> {
        self.do_set_attrs(path, attrs)
    }

    fn sync(&self) -> Result<()> {
        if self.rw.is_some() {
            self.vol.dev.flush()?;
        }
        Ok(())
    }

    fn get_xattr(&self, path: &[u8], name: &[u8]) -> Result<Option<Vec<u8>>> {
        let ino = self.lookup(path)?;
        let all = attr::list(&self.vol, &ino)?;
        match all.iter().find(|a| a.name == name) {
            Some(a) => Ok(Some(attr::value(&self.vol, &ino, a)?)),
            None => Ok(None),
        }
    }
}
