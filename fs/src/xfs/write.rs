//! The writes the guest rewriter needs, on top of the reader: replace a file's data,
//! create files, directories and symbolic links, remove names, rename, change
//! attributes. Each call is one [`Txn`]: everything is decided in memory first, and a
//! call that fails (no space, an unsupported shape) writes nothing.
//!
//! What is refused at open, and why: a log that needs recovery (the kernel would replay
//! it over our changes), an external log (its state cannot be seen), quota accounting
//! (the dquots would go stale), parent pointers (every name change would need one),
//! ASCII case-insensitive names, and any feature bit this code does not know.

use super::bmbt::Fork;
use super::dinode::{now, RawInode, DIFLAG2_BIGTIME, DIFLAG2_NREXT64};
use super::dir2_sf::{self, bad_name, RawEntry};
use super::dir_long::LongDir;
use super::dir_write::{self, FT_DIR, FT_REG, FT_SYMLINK};
use super::inode::{Inode, FMT_EXTENTS, FMT_LOCAL};
use super::txn::{State, Txn};
use super::{bmbt, bmbt_write, dir2_data, XfsFs, DIR_LEAF_OFFSET};
use crate::error::{Error, Result};
use crate::{show, FileKind, NewNode, SetAttrs};

const RO_KNOWN: u32 = 0xf;
const INCOMPAT_BIGTIME: u32 = 0x8;
const INCOMPAT_NREXT64: u32 = 0x20;
const INCOMPAT_PARENT: u32 = 0x80;
// v4 feature bits this writer knows (versionnum and features2).
const V4_KNOWN: u16 = 0xfff0 & !0x0200; // all but "shared"
const V4_BORG: u16 = 0x4000;
const F2_KNOWN: u32 = 0x2 | 0x8 | 0x80 | 0x200;
const QUOTA_ACCT: u16 = 0x1 | 0x8 | 0x40;

/// Why writing to this superblock is not safe, if it is not.
pub(crate) fn check_features(fs: &XfsFs) -> Result<()> {
    let sb = &fs.vol.sb;
    let dev = fs.vol.name().to_string();
    let unsupported = |f: String| Error::Unsupported {
        dev: dev.clone(),
        feature: format!("writing XFS with {f}"),
    };
    if sb.crc {
        if sb.ro_compat & !RO_KNOWN != 0 {
            return Err(unsupported(format!(
                "read-only-compatible feature bits {:#x}",
                sb.ro_compat & !RO_KNOWN
            )));
        }
        if sb.incompat & INCOMPAT_PARENT != 0 {
            return Err(unsupported("parent pointers".into()));
        }
        if sb.log_incompat != 0 {
            return Err(Error::Refused {
                dev,
                reason: format!(
                    "the XFS log has incompatible features set ({:#x}), so it was not unmounted \
                     cleanly by this kernel; mount and unmount it once under Linux first",
                    sb.log_incompat
                ),
            });
        }
    } else {
        if sb.versionnum & 0xfff0 & !V4_KNOWN != 0 {
            return Err(unsupported("the v4 \"shared\" feature".into()));
        }
        if sb.features2 & !F2_KNOWN != 0 {
            return Err(unsupported(format!(
                "v4 feature bits {:#x}",
                sb.features2 & !F2_KNOWN
            )));
        }
    }
    if sb.versionnum & V4_BORG != 0 {
        return Err(unsupported("ASCII case-insensitive names".into()));
    }
    if sb.qflags & QUOTA_ACCT != 0 {
        return Err(unsupported(
            "quota accounting on (the quota records would not follow the changes)".into(),
        ));
    }
    Ok(())
}

/// A directory's names as the writer changes them.
enum DirForm {
    Short,
    /// Block form: its one block (AG-encoded block number, blocks per directory block),
    /// and its block map with btree blocks (for growing into leaf form).
    Block(u64, u64, Vec<bmbt::Extent>, Vec<u64>),
    /// Leaf or node form, as read.
    Long(Box<LongDir>),
}

struct DirView {
    parent: u64,
    entries: Vec<RawEntry>,
    form: DirForm,
}

fn split_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let p = path.strip_suffix(b"/").unwrap_or(path);
    let i = p.iter().rposition(|&c| c == b'/')?;
    let (dir, name) = (&p[..i], &p[i + 1..]);
    Some((if dir.is_empty() { b"/" } else { dir }, name))
}

impl XfsFs {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        let m = self.rw.as_ref().ok_or_else(|| {
            Error::ReadOnly(format!(
                "{}: this XFS filesystem is open read-only",
                self.vol.name()
            ))
        })?;
        Ok(m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Drops every cached inode, directory and block map: a write changed them.
    fn invalidate(&self) {
        *self.cache() = super::Cache::default();
    }

    fn dir_view(&self, dir: &Inode) -> Result<DirView> {
        let vol = &self.vol;
        let sb = &vol.sb;
        if dir.format == FMT_LOCAL {
            let (parent, entries) = dir2_sf::parse(vol, dir)?;
            return Ok(DirView {
                parent,
                entries,
                form: DirForm::Short,
            });
        }
        let per = 1u64 << sb.dirblklog;
        let bsize = u64::from(sb.blocksize) << sb.dirblklog;
        let (map, nodes) = bmbt::extents_and_nodes(vol, dir, Fork::Data)?;
        let data: Vec<_> = map
            .iter()
            .filter(|e| e.off < DIR_LEAF_OFFSET >> sb.blocklog)
            .collect();
        let single = match data.as_slice() {
            // Block form has nothing mapped past its block (as xfs_dir2_isblock sees it).
            [e] if e.off == 0 && e.len == per && dir.size == bsize && map.len() == 1 => {
                Some(e.block)
            }
            _ => None,
        };
        let Some(fsb) = single else {
            let (long, parent, entries) = LongDir::load(vol, dir)?;
            return Ok(DirView {
                parent,
                entries,
                form: DirForm::Long(Box::new(long)),
            });
        };
        let what = format!("directory inode {}", dir.ino);
        let b = bmbt::read_blocks(vol, &map, 0, per, &what)?;
        let at = sb.fsb_offset(fsb).unwrap_or(0);
        let mut entries = Vec::new();
        if !dir2_data::parse(vol, &b, at, dir.ino, &mut entries)? {
            return Err(vol.corrupt(&what, at, "one-block directory without a block header"));
        }
        let parent = dir_write::block_parent(sb, &b)
            .ok_or_else(|| vol.corrupt(&what, at, "\"..\" is not the second entry"))?;
        Ok(DirView {
            parent,
            entries,
            form: DirForm::Block(fsb, per, map, nodes),
        })
    }

    /// Writes `view` back into directory `raw`, turning a shortform directory that no
    /// longer fits in its inode into a block directory, and a block directory that no
    /// longer fits in its block into a leaf directory.
    fn put_dir(&self, tx: &mut Txn<'_>, raw: &mut RawInode, view: &mut DirView) -> Result<()> {
        let vol = &self.vol;
        let sb = &vol.sb;
        let bsize = (sb.blocksize as usize) << sb.dirblklog;
        let dino = raw.ino;
        let too_big = || {
            vol.unsupported(format!(
                "growing XFS directory inode {dino} past one directory block (leaf form)"
            ))
        };
        let (fsb, per) = match view.form {
            DirForm::Short => {
                // Shortform only while one block could hold the entries too (as the
                // kernel's xfs_dir2_sf_addname_pick decides), else its offsets mislead.
                if let Some(b) = dir_write::sf_encode(sb, view.parent, &view.entries)
                    .filter(|b| b.len() <= raw.dfork_size())
                    .filter(|_| {
                        dir_write::block_encode(sb, dino, 0, view.parent, &view.entries, bsize)
                            .is_some()
                    })
                {
                    raw.set_data_fork(FMT_LOCAL, &b, 0);
                    raw.set_size(b.len() as u64);
                    return Ok(());
                }
                let per = 1u64 << sb.dirblklog;
                // Check it fits before taking a block.
                if dir_write::block_encode(sb, raw.ino, 0, view.parent, &view.entries, bsize)
                    .is_none()
                {
                    // Straight to leaf form: a block of "." and "..", then every entry.
                    let fsb = tx.alloc_meta(per as u32, tx.ag_of_ino(dino), dino, 0)?;
                    let b = dir_write::block_encode(sb, dino, fsb, view.parent, &[], bsize)
                        .ok_or_else(too_big)?;
                    let map = vec![super::bmbt::Extent {
                        off: 0,
                        block: fsb,
                        len: per,
                        unwritten: false,
                    }];
                    raw.set_nblocks(raw.nblocks() + per);
                    let mut long = LongDir::from_block(vol, dino, map, Vec::new(), b, true)?;
                    long.apply(vol, &view.entries)?;
                    return long.commit(tx, vol, raw);
                }
                let fsb = tx.alloc_meta(per as u32, tx.ag_of_ino(raw.ino), raw.ino, 0)?;
                let rec = bmbt_write::encode(&super::bmbt::Extent {
                    off: 0,
                    block: fsb,
                    len: per,
                    unwritten: false,
                });
                raw.set_data_fork(FMT_EXTENTS, &rec, 1);
                raw.set_size(bsize as u64);
                raw.set_nblocks(raw.nblocks() + per);
                (fsb, per)
            }
            DirForm::Block(fsb, per, ref map, ref nodes) => {
                if dir_write::block_encode(sb, raw.ino, fsb, view.parent, &view.entries, bsize)
                    .is_none()
                {
                    let what = format!("directory inode {dino}");
                    let b = bmbt::read_blocks(vol, map, 0, per, &what)?;
                    let mut long =
                        LongDir::from_block(vol, dino, map.clone(), nodes.clone(), b, false)?;
                    long.apply(vol, &view.entries)?;
                    return long.commit(tx, vol, raw);
                }
                (fsb, per)
            }
            DirForm::Long(ref mut long) => {
                long.apply(vol, &view.entries)?;
                return long.commit(tx, vol, raw);
            }
        };
        let _ = per;
        let b = dir_write::block_encode(sb, raw.ino, fsb, view.parent, &view.entries, bsize)
            .ok_or_else(too_big)?;
        let at = sb.fsb_offset(fsb).unwrap_or(0);
        tx.write_meta(at, b);
        Ok(())
    }

    fn new_flags2(&self) -> u64 {
        let sb = &self.vol.sb;
        let mut f = 0;
        if sb.incompat & INCOMPAT_BIGTIME != 0 {
            f |= DIFLAG2_BIGTIME;
        }
        if sb.incompat & INCOMPAT_NREXT64 != 0 {
            f |= DIFLAG2_NREXT64;
        }
        f
    }

    /// An inode in the transaction if it changed there already, else from the device.
    fn raw<'t>(&self, tx: &'t mut Txn<'_>, ino: u64) -> Result<&'t mut RawInode> {
        Ok(match tx.inodes.entry(ino) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(RawInode::read(&self.vol, ino)?)
            }
        })
    }

    pub(crate) fn do_write_file(&self, path: &[u8], data: &[u8]) -> Result<()> {
        let mut st = self.state()?;
        let i = self.lookup(path)?;
        match i.kind() {
            FileKind::File => {}
            FileKind::Dir => return Err(Error::IsADirectory(show(path))),
            k => {
                return Err(Error::Refused {
                    dev: self.vol.name().to_string(),
                    reason: format!("{}: a {k:?}, not a regular file", show(path)),
                })
            }
        }
        if i.is_realtime() {
            return Err(self.vol.unsupported(format!(
                "{}: writing a file on the XFS realtime device",
                show(path)
            )));
        }
        let mut raw = RawInode::read(&self.vol, i.ino)?;
        let mut tx = Txn::new(&self.vol, &mut st);
        tx.set_file_data(&mut raw, Some(&i), data)?;
        let t = now();
        raw.set_mtime(t);
        raw.set_ctime(t);
        tx.inodes.insert(raw.ino, raw);
        let r = tx.commit();
        self.invalidate();
        r
    }

    pub(crate) fn do_create(&self, path: &[u8], node: NewNode<'_>, attrs: &SetAttrs) -> Result<()> {
        let mut st = self.state()?;
        let (dpath, name) = split_path(path).ok_or_else(|| Error::Exists(show(path)))?;
        if bad_name(name) || name.len() > 255 {
            return Err(Error::Refused {
                dev: self.vol.name().to_string(),
                reason: format!("{}: not a name a directory can hold", show(path)),
            });
        }
        let dir = self.lookup(dpath)?;
        if dir.kind() != FileKind::Dir {
            return Err(Error::NotADirectory(show(dpath)));
        }
        let mut view = self.dir_view(&dir)?;
        if view.entries.iter().any(|e| e.name == name) {
            return Err(Error::Exists(show(path)));
        }
        let sb = &self.vol.sb;
        let (kind, perm, nlink) = match node {
            NewNode::File(_) => (0o100000u16, 0o644, 1),
            NewNode::Dir => (0o040000, 0o755, 2),
            NewNode::Symlink(t) => {
                if t.is_empty() || t.len() >= 1024 {
                    return Err(Error::Refused {
                        dev: self.vol.name().to_string(),
                        reason: format!("{}: a link target of {} bytes", show(path), t.len()),
                    });
                }
                (0o120000, 0o777, 1)
            }
        };
        let perm = attrs.mode.map(|m| (m & 0o7777) as u16).unwrap_or(perm);
        let mut tx = Txn::new(&self.vol, &mut st);
        let ino = tx.alloc_inode(tx.ag_of_ino(dir.ino))?;
        let mut raw = tx.free_slot(ino)?;
        raw.init(kind | perm, self.new_flags2(), &sb.meta_uuid);
        raw.set_owner(attrs.uid.unwrap_or(0), attrs.gid.unwrap_or(0));
        raw.set_nlink(nlink);
        let t = now();
        raw.set_atime(attrs.atime.unwrap_or(t));
        raw.set_mtime(attrs.mtime.unwrap_or(t));
        raw.set_ctime(t);
        raw.set_crtime(t);
        let ftype = match node {
            NewNode::File(data) => {
                tx.set_file_data(&mut raw, None, data)?;
                FT_REG
            }
            NewNode::Dir => {
                let b = dir_write::sf_encode(sb, dir.ino, &[])
                    .ok_or_else(|| self.vol.corrupt("new directory", 0, "cannot encode"))?;
                raw.set_data_fork(FMT_LOCAL, &b, 0);
                raw.set_size(b.len() as u64);
                FT_DIR
            }
            NewNode::Symlink(target) => {
                if target.len() > raw.dfork_size() {
                    tx.set_symlink_blocks(&mut raw, target)?;
                } else {
                    raw.set_data_fork(FMT_LOCAL, target, 0);
                    raw.set_size(target.len() as u64);
                }
                FT_SYMLINK
            }
        };
        tx.inodes.insert(ino, raw);
        view.entries.push(RawEntry {
            name: name.to_vec(),
            ino,
            ftype: sb.ftype.then_some(ftype),
        });
        let mut draw = RawInode::read(&self.vol, dir.ino)?;
        self.put_dir(&mut tx, &mut draw, &mut view)?;
        if matches!(node, NewNode::Dir) {
            draw.set_nlink(draw.nlink().saturating_add(1));
        }
        draw.set_mtime(t);
        draw.set_ctime(t);
        tx.inodes.insert(dir.ino, draw);
        let r = tx.commit();
        self.invalidate();
        r
    }

    /// Drops one link to inode `ino`; frees it with its blocks when none is left.
    fn unlink_inode(&self, tx: &mut Txn<'_>, ino: &Inode, all: bool) -> Result<()> {
        let raw = self.raw(tx, ino.ino)?;
        let n = if all {
            0
        } else {
            raw.nlink().saturating_sub(1)
        };
        if n > 0 {
            raw.set_nlink(n);
            raw.set_ctime(now());
            return Ok(());
        }
        let mut raw = raw.clone();
        tx.free_fork(ino, Fork::Data)?;
        tx.free_fork(ino, Fork::Attr)?;
        tx.free_inode(ino.ino)?;
        raw.clear(&self.vol.sb.meta_uuid);
        tx.inodes.insert(ino.ino, raw);
        Ok(())
    }

    pub(crate) fn do_remove(&self, path: &[u8]) -> Result<()> {
        let mut st = self.state()?;
        let (dpath, name) = split_path(path).ok_or_else(|| Error::NotFound(show(path)))?;
        let dir = self.lookup(dpath)?;
        let child = self.lookup(path)?;
        if dir.kind() != FileKind::Dir {
            return Err(Error::NotADirectory(show(dpath)));
        }
        let is_dir = child.kind() == FileKind::Dir;
        if is_dir && !self.dir_view(&child)?.entries.is_empty() {
            return Err(Error::NotEmpty(show(path)));
        }
        let mut view = self.dir_view(&dir)?;
        let before = view.entries.len();
        view.entries.retain(|e| e.name != name);
        if view.entries.len() == before {
            return Err(Error::NotFound(show(path)));
        }
        let mut tx = Txn::new(&self.vol, &mut st);
        self.unlink_inode(&mut tx, &child, is_dir)?;
        let mut draw = RawInode::read(&self.vol, dir.ino)?;
        self.put_dir(&mut tx, &mut draw, &mut view)?;
        if is_dir {
            draw.set_nlink(draw.nlink().saturating_sub(1));
        }
        let t = now();
        draw.set_mtime(t);
        draw.set_ctime(t);
        tx.inodes.insert(dir.ino, draw);
        let r = tx.commit();
        self.invalidate();
        r
    }

    pub(crate) fn do_rename(&self, from: &[u8], to: &[u8]) -> Result<()> {
        let mut st = self.state()?;
        let (fdir_p, fname) = split_path(from).ok_or_else(|| Error::NotFound(show(from)))?;
        let (tdir_p, tname) = split_path(to).ok_or_else(|| Error::NotFound(show(to)))?;
        if bad_name(tname) || tname.len() > 255 {
            return Err(Error::Refused {
                dev: self.vol.name().to_string(),
                reason: format!("{}: not a name a directory can hold", show(to)),
            });
        }
        let fdir = self.lookup(fdir_p)?;
        let tdir = self.lookup(tdir_p)?;
        let moving = self.lookup(from)?;
        if tdir.kind() != FileKind::Dir {
            return Err(Error::NotADirectory(show(tdir_p)));
        }
        let is_dir = moving.kind() == FileKind::Dir;
        if is_dir && fdir.ino != tdir.ino {
            return Err(self
                .vol
                .unsupported("moving an XFS directory to another parent directory"));
        }
        let same = fdir.ino == tdir.ino;
        let mut fview = self.dir_view(&fdir)?;
        let mut tview = if same {
            None
        } else {
            Some(self.dir_view(&tdir)?)
        };
        let entry = fview
            .entries
            .iter()
            .find(|e| e.name == fname)
            .cloned()
            .ok_or_else(|| Error::NotFound(show(from)))?;
        if same && fname == tname {
            return Ok(());
        }
        let mut tx = Txn::new(&self.vol, &mut st);
        fview.entries.retain(|e| e.name != fname);
        let target = tview.as_mut().unwrap_or(&mut fview);
        if let Some(old) = target.entries.iter().find(|e| e.name == tname).cloned() {
            let old_i = self.lookup(to)?;
            if old_i.kind() == FileKind::Dir {
                return Err(self
                    .vol
                    .unsupported("renaming over an existing XFS directory"));
            }
            if is_dir {
                return Err(Error::NotADirectory(show(to)));
            }
            target.entries.retain(|e| e.name != tname);
            let _ = old;
            self.unlink_inode(&mut tx, &old_i, false)?;
        }
        target.entries.push(RawEntry {
            name: tname.to_vec(),
            ..entry
        });
        let t = now();
        let mut fraw = RawInode::read(&self.vol, fdir.ino)?;
        self.put_dir(&mut tx, &mut fraw, &mut fview)?;
        fraw.set_mtime(t);
        fraw.set_ctime(t);
        tx.inodes.insert(fdir.ino, fraw);
        if let Some(tv) = &mut tview {
            let mut traw = RawInode::read(&self.vol, tdir.ino)?;
            self.put_dir(&mut tx, &mut traw, tv)?;
            traw.set_mtime(t);
            traw.set_ctime(t);
            tx.inodes.insert(tdir.ino, traw);
        }
        self.raw(&mut tx, moving.ino)?.set_ctime(t);
        let r = tx.commit();
        self.invalidate();
        r
    }

    pub(crate) fn do_set_attrs(&self, path: &[u8], attrs: &SetAttrs) -> Result<()> {
        let mut st = self.state()?;
        let i = self.lookup(path)?;
        let mut raw = RawInode::read(&self.vol, i.ino)?;
        if let Some(m) = attrs.mode {
            raw.set_mode((raw.mode() & 0o170000) | (m & 0o7777) as u16);
        }
        if attrs.uid.is_some() || attrs.gid.is_some() {
            raw.set_owner(attrs.uid.unwrap_or(i.uid), attrs.gid.unwrap_or(i.gid));
        }
        if let Some(t) = attrs.atime {
            raw.set_atime(t);
        }
        if let Some(t) = attrs.mtime {
            raw.set_mtime(t);
        }
        raw.set_ctime(now());
        let mut tx = Txn::new(&self.vol, &mut st);
        tx.inodes.insert(i.ino, raw);
        let r = tx.commit();
        self.invalidate();
        r
    }
}
