//! The write operations of the `Filesystem` trait on the engine, each one transaction
//! (allocations first, then the writes; see `engine`).

use super::dir::DirLoc;
use super::dir_block;
use super::engine::Engine;
use super::inode::{flags, Inode, I_BLOCK_LEN, ROOT_INO, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use super::le::{put_u32, u32_at};
use super::mapping::Run;
use super::read::split_parent;
use super::superblock::ro_compat;
use crate::error::{Error, Result};
use crate::{show, FileKind, NewNode, SetAttrs, Time};

/// The link count past which dir_nlink stores 1 ("many").
const LINK_MAX: u16 = 65000;
const XATTR_MAGIC: u32 = 0xEA02_0000;

pub fn now() -> Time {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Time {
        secs: d.as_secs() as i64,
        nanos: d.subsec_nanos(),
    }
}

/// What freeing an inode's xattr block takes, decided before the commit point.
enum XattrDrop {
    None,
    Freed,
    Decrement(u64, Vec<u8>),
}

impl Engine {
    fn refuse(&self, reason: String) -> Error {
        Error::Refused {
            dev: self.name.clone(),
            reason,
        }
    }

    /// Inode flags that forbid changing an inode's content.
    fn check_writable_inode(&self, i: &Inode, path: &[u8]) -> Result<()> {
        let f = i.flags();
        if f & (flags::IMMUTABLE | flags::APPEND) != 0 {
            return Err(self.refuse(format!(
                "{} is immutable or append-only (chattr +i/+a); clear the flag in the guest first",
                show(path)
            )));
        }
        if f & flags::VERITY != 0 {
            return Err(self.refuse(format!(
                "{} is protected by fs-verity and cannot be changed",
                show(path)
            )));
        }
        let what = if f & flags::INLINE_DATA != 0 {
            "inline_data"
        } else if f & flags::ENCRYPT != 0 {
            "encrypt"
        } else if f & flags::EA_INODE != 0 {
            "ea_inode"
        } else {
            return Ok(());
        };
        Err(Error::Unsupported {
            dev: self.name.clone(),
            feature: format!("writing {what} inodes ({} is one)", show(path)),
        })
    }

    /// A directory we may add names to or remove names from.
    fn writable_dir(&self, path: &[u8]) -> Result<Inode> {
        let d = self.inode_of(path)?;
        self.check_dir_writable(&d, path)?;
        if d.flags() & (flags::IMMUTABLE | flags::APPEND) != 0 {
            return Err(self.refuse(format!(
                "directory {} is immutable or append-only; clear the flag in the guest first",
                show(path)
            )));
        }
        Ok(d)
    }

    fn inode_goal(&self, ino: u32) -> u64 {
        let g = (ino - 1) / self.sb.inodes_per_group;
        self.sb.group_first_block(g)
    }

    /// Allocates blocks for `n` logical blocks from 0 and returns them as runs.
    fn alloc_runs(&mut self, goal: u64, n: u64) -> Result<Vec<Run>> {
        let mut logical = 0;
        Ok(self
            .alloc_blocks(goal, n)?
            .into_iter()
            .map(|(p, len)| {
                let r = Run {
                    logical,
                    physical: p,
                    len,
                    uninit: false,
                };
                logical += len;
                r
            })
            .collect())
    }

    /// Writes `data` over the runs (logical 0 onwards), zero-padding the last block.
    fn write_runs(&self, runs: &[Run], data: &[u8]) -> Result<()> {
        let bs = self.bs() as usize;
        for r in runs {
            let start = r.logical as usize * bs;
            let end = (start + r.len as usize * bs).min(data.len());
            let Some(chunk) = data.get(start..end) else {
                continue;
            };
            let full = chunk.len() / bs * bs;
            if full > 0 {
                self.write_data(r.physical, &chunk[..full])?;
            }
            if full < chunk.len() {
                let mut last = vec![0u8; bs];
                last[..chunk.len() - full].copy_from_slice(&chunk[full..]);
                self.write_data(r.physical + (full / bs) as u64, &last)?;
            }
        }
        Ok(())
    }

    fn check_size(&mut self, len: u64) -> Result<()> {
        if len >= 1 << 31 && !self.sb.large_file() {
            self.sb.ro_compat |= ro_compat::LARGE_FILE;
            let rc = self.sb.ro_compat;
            put_u32(&mut self.sb.raw, 0x64, rc);
            self.sb_changed();
        }
        let blocks = len.div_ceil(self.bs());
        if blocks > u32::MAX as u64 {
            return Err(Error::Unsupported {
                dev: self.name.clone(),
                feature: format!("files of {len} bytes"),
            });
        }
        Ok(())
    }

    pub fn write_file(&mut self, path: &[u8], data: &[u8]) -> Result<()> {
        let mut i = self.inode_of(path)?;
        match i.kind() {
            FileKind::File => {}
            FileKind::Dir => return Err(Error::IsADirectory(show(path))),
            _ => {
                return Err(self.refuse(format!(
                    "{} is not a regular file; remove it and create a file instead",
                    show(path)
                )))
            }
        }
        self.check_writable_inode(&i, path)?;
        let len = data.len() as u64;
        let nblocks = len.div_ceil(self.bs());
        self.txn(|e| {
            e.check_size(len)?;
            let old = e.mapping(&i)?;
            e.free_blocks(&old.owned())?;
            let goal = old
                .runs
                .first()
                .map(|r| r.physical)
                .unwrap_or_else(|| e.inode_goal(i.ino));
            let runs = e.alloc_runs(goal, nblocks)?;
            let plan = e.plan_mapping(&i, &runs, &[], goal)?;
            e.commit_point();
            e.write_runs(&runs, data)?;
            plan.apply(e, &mut i, nblocks)?;
            i.set_size(len);
            let t = now();
            i.set_mtime(t);
            i.set_ctime(t);
            e.write_inode(&mut i)
        })
    }

    fn inc_links(&self, dir: &mut Inode) {
        let l = dir.links();
        if l == 1 {
            return; // dir_nlink: already "many"
        }
        dir.set_links(if l.saturating_add(1) >= LINK_MAX {
            1
        } else {
            l + 1
        });
    }

    fn dec_links(dir: &mut Inode) {
        if dir.links() > 2 {
            dir.set_links(dir.links() - 1);
        }
    }

    fn check_subdir_room(&self, dir: &Inode, path: &[u8]) -> Result<()> {
        if dir.links() != 1 && dir.links().saturating_add(1) >= LINK_MAX && !self.sb.dir_nlink() {
            return Err(self.refuse(format!(
                "{} has too many subdirectories for a filesystem without dir_nlink",
                show(path)
            )));
        }
        Ok(())
    }

    pub fn create(&mut self, path: &[u8], node: NewNode<'_>, attrs: &SetAttrs) -> Result<()> {
        let (ppath, name) = split_parent(path)?;
        let mut pdir = self.writable_dir(&ppath)?;
        if self.find_entry(&pdir, &name)?.is_some() {
            return Err(Error::Exists(show(path)));
        }
        let bs = self.bs();
        let (kind, type_bits, perm, data): (FileKind, u16, u32, &[u8]) = match node {
            NewNode::File(d) => (FileKind::File, S_IFREG, 0o644, d),
            NewNode::Dir => (FileKind::Dir, S_IFDIR, 0o755, &[]),
            NewNode::Symlink(t) => {
                if t.is_empty() || t.len() as u64 >= bs.min(4096) || t.contains(&0) {
                    return Err(self.refuse(format!(
                        "a symlink target of {} bytes (must be 1 to {} bytes, no NUL)",
                        t.len(),
                        bs.min(4096) - 1
                    )));
                }
                (FileKind::Symlink, S_IFLNK, 0o777, t)
            }
        };
        let is_dir = kind == FileKind::Dir;
        if is_dir {
            self.check_subdir_room(&pdir, &ppath)?;
        }
        let fast = kind == FileKind::Symlink && data.len() < I_BLOCK_LEN;
        let nblocks = if is_dir {
            1
        } else if fast {
            0
        } else {
            (data.len() as u64).div_ceil(bs)
        };
        let pino = pdir.ino;
        self.txn(|e| {
            e.check_size(data.len() as u64)?;
            let plan = e.plan_insert(&pdir, &name)?;
            let ino = e.alloc_inode(pino, is_dir)?;
            let goal = e.inode_goal(ino);
            let runs = e.alloc_runs(goal, nblocks)?;
            let extra = if e.sb.want_extra_isize >= 4 {
                e.sb.want_extra_isize
            } else {
                32
            };
            let mut i = Inode::new(ino, e.sb.inode_size, extra);
            let generation = e.new_generation();
            i.set_generation(generation);
            let map = if fast {
                None
            } else {
                Some(e.plan_mapping(&i, &runs, &[], goal)?)
            };
            e.commit_point();
            let t = now();
            i.set_mode(type_bits | (attrs.mode.unwrap_or(perm) & 0o7777) as u16);
            i.set_uid(attrs.uid.unwrap_or(0));
            i.set_gid(attrs.gid.unwrap_or(0));
            i.set_atime(attrs.atime.unwrap_or(t));
            i.set_mtime(attrs.mtime.unwrap_or(t));
            i.set_ctime(t);
            i.set_crtime(t);
            i.set_links(if is_dir { 2 } else { 1 });
            if is_dir {
                let mut b = dir_block::dot_block(
                    bs as usize,
                    e.sb.metadata_csum(),
                    ino,
                    pino,
                    e.sb.filetype(),
                );
                if let Some(seed) = e.inode_seed(&i) {
                    dir_block::set_tail_csum(&mut b, seed);
                }
                if let Some(r) = runs.first() {
                    e.write_block(r.physical, &b)?;
                }
                i.set_size(bs);
            } else if fast {
                let mut ib = [0u8; I_BLOCK_LEN];
                ib[..data.len()].copy_from_slice(data);
                i.set_i_block(&ib);
                i.set_size(data.len() as u64);
            } else {
                e.write_runs(&runs, data)?;
                i.set_size(data.len() as u64);
            }
            if let Some(m) = map {
                m.apply(e, &mut i, nblocks)?;
            }
            e.write_inode(&mut i)?;
            e.apply_insert(&mut pdir, plan, &name, ino, kind)?;
            if is_dir {
                e.inc_links(&mut pdir);
            }
            pdir.set_mtime(t);
            pdir.set_ctime(t);
            e.write_inode(&mut pdir)
        })
    }

    /// Phase one of dropping an inode: free its blocks, xattr block and inode number.
    fn release_inode(&mut self, i: &Inode) -> Result<XattrDrop> {
        let map = self.mapping(i)?;
        self.free_blocks(&map.owned())?;
        let x = match i.file_acl() {
            0 => XattrDrop::None,
            b => {
                let mut blk = self.read_block(b)?;
                if u32_at(&blk, 0) != XATTR_MAGIC {
                    return Err(self.corrupt(format!(
                        "inode {}: xattr block {b} has a bad magic number",
                        i.ino
                    )));
                }
                let refs = u32_at(&blk, 4);
                if refs > 1 {
                    put_u32(&mut blk, 4, refs - 1);
                    if self.sb.metadata_csum() {
                        put_u32(&mut blk, 0x10, 0);
                        let c = super::csum::crc32c(self.sb.csum_seed, &b.to_le_bytes());
                        let c = super::csum::crc32c(c, &blk);
                        put_u32(&mut blk, 0x10, c);
                    }
                    XattrDrop::Decrement(b, blk)
                } else {
                    self.free_blocks(&[(b, 1)])?;
                    XattrDrop::Freed
                }
            }
        };
        self.free_inode(i.ino, i.is_dir())?;
        if i.is_dir() {
            self.forget_dir(i.ino);
        }
        Ok(x)
    }

    /// Phase two: mark the inode deleted.
    fn finish_release(&self, i: &mut Inode, x: XattrDrop, t: Time) -> Result<()> {
        if let XattrDrop::Decrement(b, blk) = x {
            self.write_block(b, &blk)?;
        }
        i.set_file_acl(0);
        i.set_links(0);
        i.set_dtime(t.secs as u32);
        i.set_size(0);
        let mut ib = [0u8; I_BLOCK_LEN];
        if i.flags() & flags::EXTENTS != 0 {
            let (root, _) = super::extent_tree::build(&[], &[], self.bs(), None);
            ib = root;
        }
        i.set_i_block(&ib);
        self.set_blocks(i, 0)?;
        self.write_inode(i)
    }

    pub fn remove(&mut self, path: &[u8]) -> Result<()> {
        let (ppath, name) = split_parent(path)?;
        let mut pdir = self.writable_dir(&ppath)?;
        let loc = self
            .find_entry(&pdir, &name)?
            .ok_or_else(|| Error::NotFound(show(path)))?;
        let mut i = self.read_inode(loc.entry.inode)?;
        let is_dir = i.is_dir();
        if is_dir {
            if i.ino == ROOT_INO {
                return Err(self.refuse("the root directory cannot be removed".into()));
            }
            self.check_dir_writable(&i, path)?;
            if !self.dir_is_empty(&i)? {
                return Err(Error::NotEmpty(show(path)));
            }
        }
        if i.flags() & (flags::IMMUTABLE | flags::APPEND) != 0 {
            return Err(self.refuse(format!(
                "{} is immutable or append-only; clear the flag in the guest first",
                show(path)
            )));
        }
        let drop = is_dir || i.links() <= 1;
        self.txn(|e| {
            let x = if drop {
                Some(e.release_inode(&i)?)
            } else {
                None
            };
            e.commit_point();
            let t = now();
            e.remove_entry(&pdir, &name, &loc)?;
            match x {
                Some(x) => e.finish_release(&mut i, x, t)?,
                None => {
                    i.set_links(i.links() - 1);
                    i.set_ctime(t);
                    e.write_inode(&mut i)?;
                }
            }
            if is_dir {
                Self::dec_links(&mut pdir);
            }
            pdir.set_mtime(t);
            pdir.set_ctime(t);
            e.write_inode(&mut pdir)
        })
    }

    /// Whether directory `ino` is `ancestor` or lies below it.
    fn is_within(&self, mut ino: u32, ancestor: u32) -> Result<bool> {
        for _ in 0..4096 {
            if ino == ancestor {
                return Ok(true);
            }
            if ino == ROOT_INO {
                return Ok(false);
            }
            let d = self.read_inode(ino)?;
            let dd = self
                .find_entry(&d, b"..")?
                .ok_or_else(|| self.corrupt(format!("directory inode {ino} has no '..'")))?;
            ino = dd.entry.inode;
        }
        Err(self.corrupt("directory parents loop"))
    }

    pub fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        let (fp, fname) = split_parent(from)?;
        let (tp, tname) = split_parent(to)?;
        let mut fdir = self.writable_dir(&fp)?;
        let floc = self
            .find_entry(&fdir, &fname)?
            .ok_or_else(|| Error::NotFound(show(from)))?;
        let mut src = self.read_inode(floc.entry.inode)?;
        let tdir_ino = self.lookup_path(&tp)?;
        let same = tdir_ino == fdir.ino;
        let mut tdir_own = if same {
            None
        } else {
            Some(self.writable_dir(&tp)?)
        };
        let tloc: Option<DirLoc> = {
            let t = tdir_own.as_ref().unwrap_or(&fdir);
            self.find_entry(t, &tname)?
        };
        if tloc.is_some_and(|l| l.entry.inode == src.ino) {
            return Ok(());
        }
        let src_dir = src.is_dir();
        if src_dir && !same && src.flags() & flags::INLINE_DATA != 0 {
            // Its ".." would change, and an inline directory keeps it in the inode.
            return Err(Error::Unsupported {
                dev: self.name.clone(),
                feature: format!(
                    "moving inline_data directories to another parent ({} is one)",
                    show(from)
                ),
            });
        }
        if src_dir && !same && self.is_within(tdir_ino, src.ino)? {
            return Err(self.refuse(format!(
                "cannot move {} into itself ({})",
                show(from),
                show(to)
            )));
        }
        let mut target = match tloc {
            Some(l) => Some(self.read_inode(l.entry.inode)?),
            None => None,
        };
        if let Some(t) = &target {
            if t.is_dir() {
                if !src_dir {
                    return Err(Error::IsADirectory(show(to)));
                }
                if !self.dir_is_empty(t)? {
                    return Err(Error::NotEmpty(show(to)));
                }
            } else if src_dir {
                return Err(Error::NotADirectory(show(to)));
            }
            if t.flags() & (flags::IMMUTABLE | flags::APPEND) != 0 {
                return Err(self.refuse(format!("{} is immutable or append-only", show(to))));
            }
        }
        if src_dir && !same && target.is_none() {
            let t = tdir_own.as_ref().unwrap_or(&fdir);
            self.check_subdir_room(t, &tp)?;
        }
        let drop_target = target
            .as_ref()
            .is_some_and(|t| t.is_dir() || t.links() <= 1);
        self.txn(|e| {
            let plan = match tloc {
                None => Some(e.plan_insert(tdir_own.as_ref().unwrap_or(&fdir), &tname)?),
                Some(_) => None,
            };
            let x = match (&target, drop_target) {
                (Some(t), true) => Some(e.release_inode(t)?),
                _ => None,
            };
            e.commit_point();
            let t = now();
            let kind = src.kind();
            {
                let td = tdir_own.as_mut().unwrap_or(&mut fdir);
                match (tloc, plan) {
                    (Some(l), _) => e.set_entry(td, &l, src.ino, kind)?,
                    (None, Some(p)) => e.apply_insert(td, p, &tname, src.ino, kind)?,
                    (None, None) => {}
                }
            }
            e.remove_entry(&fdir, &fname, &floc)?;
            if let Some(tg) = target.as_mut() {
                let was_dir = tg.is_dir();
                match x {
                    Some(x) => e.finish_release(tg, x, t)?,
                    None => {
                        tg.set_links(tg.links().saturating_sub(1));
                        tg.set_ctime(t);
                        e.write_inode(tg)?;
                    }
                }
                if was_dir {
                    // The replaced directory's ".." no longer counts in the target parent.
                    Self::dec_links(tdir_own.as_mut().unwrap_or(&mut fdir));
                }
            }
            if src_dir && !same {
                e.set_dotdot(&src, tdir_ino)?;
                Self::dec_links(&mut fdir);
                if let Some(td) = tdir_own.as_mut() {
                    e.inc_links(td);
                }
            }
            src.set_ctime(t);
            e.write_inode(&mut src)?;
            for d in [Some(&mut fdir), tdir_own.as_mut()].into_iter().flatten() {
                d.set_mtime(t);
                d.set_ctime(t);
                e.write_inode(d)?;
            }
            Ok(())
        })
    }

    pub fn set_attrs(&mut self, path: &[u8], a: &SetAttrs) -> Result<()> {
        let mut i = self.inode_of(path)?;
        if i.flags() & flags::IMMUTABLE != 0 {
            return Err(self.refuse(format!(
                "{} is immutable (chattr +i); clear the flag in the guest first",
                show(path)
            )));
        }
        if let Some(m) = a.mode {
            i.set_mode((i.mode() & S_IFMT) | (m & 0o7777) as u16);
        }
        if let Some(u) = a.uid {
            i.set_uid(u);
        }
        if let Some(g) = a.gid {
            i.set_gid(g);
        }
        if let Some(t) = a.atime {
            i.set_atime(t);
        }
        if let Some(t) = a.mtime {
            i.set_mtime(t);
        }
        i.set_ctime(now());
        self.write_inode(&mut i)
    }
}
