//! The writer's view of one ext2/3/4 filesystem: superblock and group descriptors in
//! memory, everything else read from and written to the device (normally an `Overlay`) as
//! needed. Operations run as transactions in two phases: first every allocation and free
//! (bitmaps and counts only, each recorded so it can be undone), then, past the commit
//! point, the writes that make the change visible (inodes, directory entries, data). A
//! failure in the first phase (out of space, a corrupt bitmap) undoes what it did and leaves
//! the filesystem as it was; the second phase only fails if the device does.
//!
//! Metadata blocks (bitmaps, inode table blocks, directory and map blocks) are kept in a
//! write-back cache and reach the device on `sync` (or when the cache grows past a bound),
//! together with the group descriptors and superblock: creating a thousand small files
//! then writes each touched block once, not once per file. File data goes to the device at
//! once, in large writes, and drops any cached copy of the blocks it covers.

use super::bitmap;
use super::block_map;
use super::extent_tree;
use super::group_desc::{GroupDesc, BLOCK_UNINIT, INODE_UNINIT};
use super::inode::{flags, Inode};
use super::mapping::{Ctx, Mapping};
use super::superblock::{Superblock, SUPERBLOCK_OFFSET};
use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use transplant_formats::BlockDev;

pub(crate) enum Undo {
    AllocBlocks(u64, u64),
    FreeBlocks(u64, u64),
    AllocInode(u32, bool),
    FreeInode(u32, bool),
}

pub struct Engine {
    pub dev: Arc<dyn BlockDev>,
    pub name: String,
    pub sb: Superblock,
    pub groups: Vec<GroupDesc>,
    dirty_groups: BTreeSet<u32>,
    sb_dirty: bool,
    undo: Option<Vec<Undo>>,
    next_generation: u32,
    pub(crate) dirs: RefCell<super::dir::DirCache>,
    /// Dirty metadata blocks by block number.
    cache: RefCell<BTreeMap<u64, Vec<u8>>>,
    /// Opened only to read: nothing changes, so file maps can be kept between reads.
    read_only: bool,
    /// File maps by inode (read-only engines), and the runs they hold together.
    maps: RefCell<(HashMap<u32, Arc<Mapping>>, usize)>,
}

/// Runs of file maps kept by a read-only engine before it starts over.
const MAP_CACHE_RUNS: usize = 1 << 20;

/// Dirty metadata held before it is written out anyway.
const CACHE_BYTES: usize = 32 << 20;

impl Engine {
    /// Opens `dev` for writing, refusing filesystems that are not safe to change.
    pub fn open(dev: Arc<dyn BlockDev>) -> Result<Engine> {
        Self::open_mode(dev, true, true)
    }

    /// Opens `dev` only to read it (nothing is ever written: the engine writes only
    /// what operations change), refusing only what it cannot read right.
    pub fn open_read(dev: Arc<dyn BlockDev>) -> Result<Engine> {
        Self::open_mode(dev, false, true)
    }

    /// Opens `dev` with no state checks, for journal recovery: to find the journal inode's
    /// blocks (which transactions do not change) before the replay, and to recount the
    /// free blocks after it. Only geometry is checked.
    pub fn open_for_recovery(dev: Arc<dyn BlockDev>, write: bool) -> Result<Engine> {
        Self::open_mode(dev, write, false)
    }

    fn open_mode(dev: Arc<dyn BlockDev>, write: bool, checks: bool) -> Result<Engine> {
        let name = dev.name().to_string();
        let mut raw = vec![0u8; 1024];
        dev.read_at(&mut raw, SUPERBLOCK_OFFSET)?;
        let sb = Superblock::parse(&raw, dev.len()).map_err(|detail| Error::Corrupt {
            dev: name.clone(),
            detail,
        })?;
        let blocker = if !checks {
            sb.layout_blockers().map(|why| (false, why))
        } else if write {
            sb.write_blockers()
        } else {
            sb.read_blockers().map(|why| (false, why))
        };
        if let Some((policy, why)) = blocker {
            return Err(if policy {
                Error::Refused {
                    dev: name,
                    reason: why,
                }
            } else {
                Error::Unsupported {
                    dev: name,
                    feature: why,
                }
            });
        }
        let bs = sb.block_size;
        let gdt_off = (sb.first_data_block + 1) * bs;
        let gdt_len = sb.group_count as u64 * sb.desc_size as u64;
        if gdt_len > 1 << 30 {
            return Err(Error::Unsupported {
                dev: name,
                feature: format!("{} block groups", sb.group_count),
            });
        }
        let mut gdt = vec![0u8; gdt_len as usize];
        dev.read_at(&mut gdt, gdt_off)?;
        let mut groups = Vec::with_capacity(sb.group_count as usize);
        for (g, raw) in gdt.chunks(sb.desc_size).enumerate() {
            let gd = GroupDesc::new(raw.to_vec(), sb.is_64bit());
            let g = g as u32;
            if checks && !gd.checksum_ok(&sb, g) {
                return Err(Error::Refused {
                    dev: name,
                    reason: format!(
                        "the checksum of block group descriptor {g} does not match; run `e2fsck -f`, then retry"
                    ),
                });
            }
            let itable_blocks = sb.inode_table_blocks();
            for (what, b, n) in [
                ("block bitmap", gd.block_bitmap(), 1),
                ("inode bitmap", gd.inode_bitmap(), 1),
                ("inode table", gd.inode_table(), itable_blocks),
            ] {
                if b < sb.first_data_block || b.saturating_add(n) > sb.blocks_count {
                    return Err(Error::Corrupt {
                        dev: name,
                        detail: format!("group {g}: {what} at block {b} is outside the filesystem"),
                    });
                }
            }
            groups.push(gd);
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
            .unwrap_or(1);
        let mut e = Engine {
            dev,
            name,
            sb,
            groups,
            dirty_groups: BTreeSet::new(),
            sb_dirty: false,
            undo: None,
            next_generation: seed,
            dirs: Default::default(),
            cache: Default::default(),
            read_only: !write,
            maps: Default::default(),
        };
        if checks {
            super::journal_state::check(&mut e)?;
        }
        Ok(e)
    }

    pub fn corrupt(&self, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            dev: self.name.clone(),
            detail: detail.into(),
        }
    }

    pub fn bs(&self) -> u64 {
        self.sb.block_size
    }

    pub fn read_block(&self, b: u64) -> Result<Vec<u8>> {
        if b >= self.sb.blocks_count {
            return Err(self.corrupt(format!("block {b} is outside the filesystem")));
        }
        if let Some(d) = self.cache.borrow().get(&b) {
            return Ok(d.clone());
        }
        let mut buf = vec![0u8; self.bs() as usize];
        self.dev.read_at(&mut buf, b * self.bs())?;
        Ok(buf)
    }

    /// Writes one metadata block (into the cache).
    pub fn write_block(&self, b: u64, data: &[u8]) -> Result<()> {
        if b >= self.sb.blocks_count || b < self.sb.first_data_block {
            return Err(self.corrupt(format!("write to block {b} outside the filesystem")));
        }
        let full = {
            let mut c = self.cache.borrow_mut();
            c.insert(b, data.to_vec());
            c.len() * self.bs() as usize > CACHE_BYTES
        };
        if full {
            self.flush_blocks()?;
        }
        Ok(())
    }

    /// Writes file data straight to the device over blocks `start..start+n` (whole blocks,
    /// `data.len()` a multiple of the block size), dropping cached copies of them.
    pub fn write_data(&self, start: u64, data: &[u8]) -> Result<()> {
        let n = data.len() as u64 / self.bs();
        if start < self.sb.first_data_block
            || start
                .checked_add(n)
                .is_none_or(|e| e > self.sb.blocks_count)
        {
            return Err(self.corrupt(format!(
                "data write to blocks {start}+{n} outside the filesystem"
            )));
        }
        {
            let mut c = self.cache.borrow_mut();
            let stale: Vec<u64> = c.range(start..start + n).map(|(k, _)| *k).collect();
            for k in stale {
                c.remove(&k);
            }
        }
        self.dev.write_at(data, start * self.bs())?;
        Ok(())
    }

    /// Reads `buf.len()` bytes at byte `offset` of the device, seeing cached blocks.
    pub fn read_bytes(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let bs = self.bs();
        let first = offset / bs;
        let last = (offset + buf.len() as u64).div_ceil(bs);
        let cached = self.cache.borrow().range(first..last).next().is_some();
        if !cached {
            self.dev.read_at(buf, offset)?;
            return Ok(());
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let b = self.read_block(pos / bs)?;
            let within = (pos % bs) as usize;
            let n = (bs as usize - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&b[within..within + n]);
            done += n;
        }
        Ok(())
    }

    /// Writes the cached blocks out, runs of neighbours in one write.
    pub fn flush_blocks(&self) -> Result<()> {
        let blocks = std::mem::take(&mut *self.cache.borrow_mut());
        let bs = self.bs();
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        for (b, data) in blocks {
            if !run.is_empty() && run_start + run.len() as u64 / bs != b {
                self.dev.write_at(&run, run_start * bs)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = b;
            }
            run.extend_from_slice(&data);
        }
        if !run.is_empty() {
            self.dev.write_at(&run, run_start * bs)?;
        }
        Ok(())
    }

    /// (block, offset within it) of an inode.
    fn inode_place(&self, ino: u32) -> Result<(u64, usize)> {
        let off = self.inode_offset(ino)?;
        Ok((off / self.bs(), (off % self.bs()) as usize))
    }

    fn inode_offset(&self, ino: u32) -> Result<u64> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(self.corrupt(format!("inode number {ino} is out of range")));
        }
        let g = (ino - 1) / self.sb.inodes_per_group;
        let idx = (ino - 1) % self.sb.inodes_per_group;
        let gd = self
            .groups
            .get(g as usize)
            .ok_or_else(|| self.corrupt(format!("inode {ino}: no group {g}")))?;
        Ok(gd.inode_table() * self.bs() + idx as u64 * self.sb.inode_size as u64)
    }

    pub fn read_inode(&self, ino: u32) -> Result<Inode> {
        let (b, within) = self.inode_place(ino)?;
        let block = self.read_block(b)?;
        let raw = block
            .get(within..within + self.sb.inode_size)
            .ok_or_else(|| self.corrupt(format!("inode {ino} crosses a block")))?
            .to_vec();
        let i = Inode { ino, raw };
        if self.sb.metadata_csum() && !i.checksum_ok(self.sb.csum_seed) {
            // An all-zero never-used inode has no checksum.
            if i.raw.iter().any(|&b| b != 0) {
                return Err(Error::Refused {
                    dev: self.name.clone(),
                    reason: format!(
                        "the checksum of inode {ino} does not match; run `e2fsck -f`, then retry"
                    ),
                });
            }
        }
        Ok(i)
    }

    pub fn write_inode(&self, i: &mut Inode) -> Result<()> {
        if self.sb.metadata_csum() {
            i.update_checksum(self.sb.csum_seed);
        }
        let (b, within) = self.inode_place(i.ino)?;
        let mut block = self.read_block(b)?;
        let slot = block
            .get_mut(within..within + self.sb.inode_size)
            .ok_or_else(|| self.corrupt(format!("inode {} crosses a block", i.ino)))?;
        slot.copy_from_slice(&i.raw);
        self.write_block(b, &block)
    }

    pub fn new_generation(&mut self) -> u32 {
        // xorshift: distinct generations for NFS handles; not a security property.
        let mut x = self.next_generation;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.next_generation = x;
        x
    }

    /// The seed for an inode's extent and directory block checksums.
    pub fn inode_seed(&self, i: &Inode) -> Option<u32> {
        self.sb
            .metadata_csum()
            .then(|| i.csum_seed(self.sb.csum_seed))
    }

    pub fn ctx(&self, ino: u32) -> Ctx<'_> {
        Ctx {
            dev: &self.name,
            ino,
            block_size: self.bs(),
            blocks_count: self.sb.blocks_count,
            first_data_block: self.sb.first_data_block,
        }
    }

    /// Whether the inode's i_block holds a block map or extent tree (not a fast symlink,
    /// a device number or inline data).
    pub fn has_mapping(&self, i: &Inode) -> bool {
        use crate::FileKind as K;
        match i.kind() {
            K::CharDevice | K::BlockDevice | K::Fifo | K::Socket => false,
            K::Symlink if i.is_fast_symlink(self.bs()) => false,
            _ => i.flags() & flags::INLINE_DATA == 0,
        }
    }

    pub fn mapping(&self, i: &Inode) -> Result<Mapping> {
        if !self.has_mapping(i) {
            return Ok(Mapping::default());
        }
        let ctx = self.ctx(i.ino);
        let mut rd = |b: u64| self.read_block(b);
        if i.flags() & flags::EXTENTS != 0 {
            extent_tree::read(&ctx, i.i_block(), &mut rd)
        } else {
            block_map::read(&ctx, i.i_block(), &mut rd)
        }
    }

    /// The map of a file being read. A read-only engine keeps it, so reading a large
    /// block-mapped file piece by piece reads its indirect blocks once, not per piece.
    pub fn read_mapping(&self, i: &Inode) -> Result<Arc<Mapping>> {
        if !self.read_only {
            return Ok(Arc::new(self.mapping(i)?));
        }
        if let Some(m) = self.maps.borrow().0.get(&i.ino) {
            return Ok(m.clone());
        }
        let m = Arc::new(self.mapping(i)?);
        let mut c = self.maps.borrow_mut();
        if c.1 + m.runs.len() > MAP_CACHE_RUNS {
            c.0.clear();
            c.1 = 0;
        }
        if m.runs.len() <= MAP_CACHE_RUNS {
            c.1 += m.runs.len();
            c.0.insert(i.ino, m.clone());
        }
        Ok(m)
    }

    pub fn mark_group(&mut self, g: u32) {
        self.dirty_groups.insert(g);
    }

    /// Writes cached blocks, changed group descriptors and the superblock.
    pub fn flush_meta(&mut self) -> Result<()> {
        self.flush_blocks()?;
        let bs = self.bs();
        let gdt_off = (self.sb.first_data_block + 1) * bs;
        let dirty: Vec<u32> = std::mem::take(&mut self.dirty_groups).into_iter().collect();
        for g in dirty {
            let sb = &self.sb;
            let Some(gd) = self.groups.get_mut(g as usize) else {
                continue;
            };
            gd.update_checksum(sb, g);
            self.dev
                .write_at(&gd.raw, gdt_off + g as u64 * sb.desc_size as u64)?;
            self.sb_dirty = true;
        }
        if self.sb_dirty {
            let raw = self.sb.with_checksum().to_vec();
            self.dev.write_at(&raw, SUPERBLOCK_OFFSET)?;
            self.sb_dirty = false;
        }
        Ok(())
    }

    pub fn sb_changed(&mut self) {
        self.sb_dirty = true;
    }

    /// Runs `f` as one transaction (see the module doc).
    pub fn txn<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        self.undo = Some(Vec::new());
        let r = f(self);
        if r.is_err() {
            // Whatever failed, cached directory contents may be ahead of the disk.
            self.dirs.borrow_mut().clear();
            if let Some(log) = self.undo.take() {
                for u in log.into_iter().rev() {
                    // Undoing only flips bits back that this transaction flipped.
                    let _ = match u {
                        Undo::AllocBlocks(s, n) => self.free_blocks_raw(s, n),
                        Undo::FreeBlocks(s, n) => self.mark_blocks_raw(s, n),
                        Undo::AllocInode(i, d) => self.free_inode_raw(i, d),
                        Undo::FreeInode(i, d) => self.mark_inode_raw(i, d),
                    };
                }
            }
        }
        self.undo = None;
        r
    }

    /// From here on the transaction writes; it is not undone any more.
    pub fn commit_point(&mut self) {
        self.undo = None;
    }

    pub(crate) fn record(&mut self, u: Undo) {
        if let Some(l) = self.undo.as_mut() {
            l.push(u);
        }
    }

    // ---- bitmaps -------------------------------------------------------------------

    pub fn group_of_block(&self, b: u64) -> u32 {
        ((b.saturating_sub(self.sb.first_data_block)) / self.sb.blocks_per_group as u64) as u32
    }

    /// The block bitmap of group `g`, built as mke2fs would for a BLOCK_UNINIT group.
    pub fn load_block_bitmap(&self, g: u32) -> Result<Vec<u8>> {
        let gd = &self.groups[g as usize];
        if !(self.sb.group_csum() && gd.flags() & BLOCK_UNINIT != 0) {
            return self.read_block(gd.block_bitmap());
        }
        let bs = self.bs() as usize;
        let mut bm = vec![0u8; bs];
        let start = self.sb.group_first_block(g);
        let n = self.sb.blocks_in_group(g);
        let mut mark = |b: u64, len: u64| {
            let lo = b.max(start);
            let hi = b.saturating_add(len).min(start + n);
            for x in lo..hi {
                bitmap::set(&mut bm, (x - start) as usize);
            }
        };
        if self.sb.has_super(g) {
            mark(
                start,
                1 + self.sb.gdt_blocks() + self.sb.reserved_gdt_blocks(),
            );
        }
        let itb = self.sb.inode_table_blocks();
        for other in &self.groups {
            mark(other.block_bitmap(), 1);
            mark(other.inode_bitmap(), 1);
            mark(other.inode_table(), itb);
        }
        for i in n as usize..bs * 8 {
            bitmap::set(&mut bm, i);
        }
        let free = (0..n as usize).filter(|&i| !bitmap::test(&bm, i)).count() as u32;
        if free != gd.free_blocks() {
            return Err(Error::Refused {
                dev: self.name.clone(),
                reason: format!(
                    "block group {g} is marked BLOCK_UNINIT but its free count ({}) is not what its layout leaves ({free}); run `e2fsck -f`, then retry",
                    gd.free_blocks()
                ),
            });
        }
        Ok(bm)
    }

    fn store_block_bitmap(&mut self, g: u32, bm: &[u8]) -> Result<()> {
        let b = self.groups[g as usize].block_bitmap();
        self.write_block(b, bm)?;
        let sb = self.sb.clone();
        let gd = &mut self.groups[g as usize];
        gd.set_flags(gd.flags() & !BLOCK_UNINIT);
        if sb.metadata_csum() {
            gd.set_block_bitmap_csum(&sb, bm);
        }
        self.mark_group(g);
        Ok(())
    }

    pub fn load_inode_bitmap(&self, g: u32) -> Result<Vec<u8>> {
        let gd = &self.groups[g as usize];
        if self.sb.group_csum() && gd.flags() & INODE_UNINIT != 0 {
            let bs = self.bs() as usize;
            let mut bm = vec![0u8; bs];
            for i in self.sb.inodes_per_group as usize..bs * 8 {
                bitmap::set(&mut bm, i);
            }
            return Ok(bm);
        }
        self.read_block(gd.inode_bitmap())
    }

    fn store_inode_bitmap(&mut self, g: u32, bm: &[u8]) -> Result<()> {
        let b = self.groups[g as usize].inode_bitmap();
        self.write_block(b, bm)?;
        let sb = self.sb.clone();
        let gd = &mut self.groups[g as usize];
        gd.set_flags(gd.flags() & !INODE_UNINIT);
        if sb.metadata_csum() {
            gd.set_inode_bitmap_csum(&sb, bm);
        }
        self.mark_group(g);
        Ok(())
    }

    // ---- blocks --------------------------------------------------------------------

    pub fn free_block_total(&self) -> u64 {
        self.groups.iter().map(|g| g.free_blocks() as u64).sum()
    }

    /// Allocates `count` blocks, as few runs as the bitmaps allow, starting near `goal`.
    pub fn alloc_blocks(&mut self, goal: u64, count: u64) -> Result<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        if count == 0 {
            return Ok(out);
        }
        if self.free_block_total() < count {
            return Err(Error::NoSpace(format!(
                "{}: {count} blocks needed, {} free",
                self.name,
                self.free_block_total()
            )));
        }
        let ng = self.sb.group_count;
        let g0 = self.group_of_block(goal).min(ng - 1);
        let mut left = count;
        for k in 0..ng {
            if left == 0 {
                break;
            }
            let g = (g0 + k) % ng;
            if self.groups[g as usize].free_blocks() == 0 {
                continue;
            }
            let mut bm = self.load_block_bitmap(g)?;
            let start = self.sb.group_first_block(g);
            let n = self.sb.blocks_in_group(g) as usize;
            let mut from = if k == 0 && goal > start {
                ((goal - start) as usize).min(n)
            } else {
                0
            };
            let mut taken = 0u64;
            let mut wrapped = false;
            loop {
                let Some(i) = bitmap::find_clear(&bm, from, n) else {
                    if !wrapped && from > 0 {
                        wrapped = true;
                        from = 0;
                        continue;
                    }
                    break;
                };
                let run = bitmap::clear_run(&bm, i, n, left as usize);
                for x in i..i + run {
                    bitmap::set(&mut bm, x);
                }
                let s = start + i as u64;
                match out.last_mut() {
                    Some((ps, pl)) if *ps + *pl == s => *pl += run as u64,
                    _ => out.push((s, run as u64)),
                }
                self.record(Undo::AllocBlocks(s, run as u64));
                taken += run as u64;
                left -= run as u64;
                from = i + run;
                if left == 0 {
                    break;
                }
            }
            if taken > 0 {
                self.store_block_bitmap(g, &bm)?;
                let gd = &mut self.groups[g as usize];
                let f = gd.free_blocks();
                gd.set_free_blocks(f.saturating_sub(taken as u32));
                let sf = self.sb.free_blocks();
                self.sb.set_free_blocks(sf.saturating_sub(taken));
                self.sb_dirty = true;
            }
        }
        if left > 0 {
            return Err(Error::NoSpace(format!(
                "{}: {count} blocks needed; the bitmaps hold fewer free blocks than the counts say",
                self.name
            )));
        }
        Ok(out)
    }

    fn for_each_group_run(
        &mut self,
        start: u64,
        len: u64,
        mut f: impl FnMut(&mut Self, u32, &mut Vec<u8>, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.sb.blocks_count && start >= self.sb.first_data_block)
            .ok_or_else(|| {
                self.corrupt(format!("blocks {start}+{len} are outside the filesystem"))
            })?;
        let mut b = start;
        while b < end {
            let g = self.group_of_block(b);
            let gs = self.sb.group_first_block(g);
            let ge = gs + self.sb.blocks_in_group(g);
            let e = end.min(ge);
            let mut bm = self.load_block_bitmap(g)?;
            f(self, g, &mut bm, (b - gs) as usize, (e - gs) as usize)?;
            self.store_block_bitmap(g, &bm)?;
            b = e;
        }
        Ok(())
    }

    fn free_blocks_raw(&mut self, start: u64, len: u64) -> Result<()> {
        self.for_each_group_run(start, len, |e, g, bm, from, to| {
            for i in from..to {
                if !bitmap::test(bm, i) {
                    return Err(e.corrupt(format!(
                        "block {} is freed but already free in the bitmap",
                        e.sb.group_first_block(g) + i as u64
                    )));
                }
            }
            for i in from..to {
                bitmap::clear(bm, i);
            }
            let n = (to - from) as u32;
            let gd = &mut e.groups[g as usize];
            gd.set_free_blocks(gd.free_blocks().saturating_add(n));
            let sf = e.sb.free_blocks();
            e.sb.set_free_blocks(sf.saturating_add(n as u64));
            e.sb_dirty = true;
            Ok(())
        })
    }

    fn mark_blocks_raw(&mut self, start: u64, len: u64) -> Result<()> {
        self.for_each_group_run(start, len, |e, g, bm, from, to| {
            for i in from..to {
                bitmap::set(bm, i);
            }
            let n = (to - from) as u32;
            let gd = &mut e.groups[g as usize];
            gd.set_free_blocks(gd.free_blocks().saturating_sub(n));
            let sf = e.sb.free_blocks();
            e.sb.set_free_blocks(sf.saturating_sub(n as u64));
            e.sb_dirty = true;
            Ok(())
        })
    }

    /// Frees runs of blocks; a block already free means the bitmaps are wrong (Corrupt).
    pub fn free_blocks(&mut self, runs: &[(u64, u64)]) -> Result<()> {
        let mut sorted = runs.to_vec();
        sorted.sort_unstable();
        for w in sorted.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                return Err(self.corrupt(format!("block {} is used twice by one file", w[1].0)));
            }
        }
        for &(s, n) in &sorted {
            if n == 0 {
                continue;
            }
            self.free_blocks_raw(s, n)?;
            self.record(Undo::FreeBlocks(s, n));
        }
        Ok(())
    }

    // ---- inodes --------------------------------------------------------------------

    /// Picks a group for a new inode: a file goes with its directory; a directory goes to
    /// the group with the most free blocks among those with a fair share of free inodes.
    fn inode_group(&self, parent: u32, is_dir: bool) -> u32 {
        let ipg = self.sb.inodes_per_group;
        let pg = (parent.max(1) - 1) / ipg;
        let ng = self.sb.group_count;
        if is_dir && parent != 0 {
            let avg = self
                .groups
                .iter()
                .map(|g| g.free_inodes() as u64)
                .sum::<u64>()
                / ng as u64;
            let mut best: Option<(u32, u32)> = None;
            for g in 0..ng {
                let gd = &self.groups[g as usize];
                if gd.free_inodes() as u64 >= avg.max(1)
                    && best.is_none_or(|(_, fb)| gd.free_blocks() > fb)
                {
                    best = Some((g, gd.free_blocks()));
                }
            }
            if let Some((g, _)) = best {
                return g;
            }
        }
        pg.min(ng - 1)
    }

    pub fn alloc_inode(&mut self, parent: u32, is_dir: bool) -> Result<u32> {
        let ng = self.sb.group_count;
        let ipg = self.sb.inodes_per_group;
        let g0 = self.inode_group(parent, is_dir);
        for k in 0..ng {
            let g = (g0 + k) % ng;
            if self.groups[g as usize].free_inodes() == 0 {
                continue;
            }
            let mut bm = self.load_inode_bitmap(g)?;
            let first = if g == 0 { self.sb.first_ino - 1 } else { 0 } as usize;
            let Some(i) = bitmap::find_clear(&bm, first, ipg as usize) else {
                continue;
            };
            // A group whose block bitmap was never written gets one now, as the kernel
            // does, so inodes never live in a BLOCK_UNINIT group.
            if self.sb.group_csum() && self.groups[g as usize].flags() & BLOCK_UNINIT != 0 {
                let bb = self.load_block_bitmap(g)?;
                self.store_block_bitmap(g, &bb)?;
            }
            bitmap::set(&mut bm, i);
            self.store_inode_bitmap(g, &bm)?;
            let group_csum = self.sb.group_csum();
            let gd = &mut self.groups[g as usize];
            gd.set_free_inodes(gd.free_inodes().saturating_sub(1));
            if is_dir {
                gd.set_used_dirs(gd.used_dirs().saturating_add(1));
            }
            if group_csum {
                let used_end = ipg - gd.itable_unused().min(ipg);
                if i as u32 + 1 > used_end {
                    gd.set_itable_unused(ipg - (i as u32 + 1));
                }
            }
            let fi = self.sb.free_inodes();
            self.sb.set_free_inodes(fi.saturating_sub(1));
            self.sb_dirty = true;
            let ino = g * ipg + i as u32 + 1;
            self.record(Undo::AllocInode(ino, is_dir));
            return Ok(ino);
        }
        Err(Error::NoSpace(format!("{}: no free inodes", self.name)))
    }

    fn inode_bit(&self, ino: u32) -> Result<(u32, usize)> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(self.corrupt(format!("inode number {ino} is out of range")));
        }
        let ipg = self.sb.inodes_per_group;
        Ok(((ino - 1) / ipg, ((ino - 1) % ipg) as usize))
    }

    fn free_inode_raw(&mut self, ino: u32, is_dir: bool) -> Result<()> {
        let (g, i) = self.inode_bit(ino)?;
        let mut bm = self.load_inode_bitmap(g)?;
        if !bitmap::test(&bm, i) {
            return Err(self.corrupt(format!("inode {ino} is freed but already free")));
        }
        bitmap::clear(&mut bm, i);
        self.store_inode_bitmap(g, &bm)?;
        let gd = &mut self.groups[g as usize];
        gd.set_free_inodes(gd.free_inodes().saturating_add(1));
        if is_dir {
            gd.set_used_dirs(gd.used_dirs().saturating_sub(1));
        }
        let fi = self.sb.free_inodes();
        self.sb.set_free_inodes(fi.saturating_add(1));
        self.sb_dirty = true;
        Ok(())
    }

    fn mark_inode_raw(&mut self, ino: u32, is_dir: bool) -> Result<()> {
        let (g, i) = self.inode_bit(ino)?;
        let mut bm = self.load_inode_bitmap(g)?;
        bitmap::set(&mut bm, i);
        self.store_inode_bitmap(g, &bm)?;
        let gd = &mut self.groups[g as usize];
        gd.set_free_inodes(gd.free_inodes().saturating_sub(1));
        if is_dir {
            gd.set_used_dirs(gd.used_dirs().saturating_add(1));
        }
        let fi = self.sb.free_inodes();
        self.sb.set_free_inodes(fi.saturating_sub(1));
        self.sb_dirty = true;
        Ok(())
    }

    pub fn free_inode(&mut self, ino: u32, is_dir: bool) -> Result<()> {
        self.free_inode_raw(ino, is_dir)?;
        self.record(Undo::FreeInode(ino, is_dir));
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A caller that forgot `sync` still leaves a consistent device behind.
        let _ = self.flush_meta();
    }
}

impl Superblock {
    pub fn inode_table_blocks(&self) -> u64 {
        (self.inodes_per_group as u64 * self.inode_size as u64).div_ceil(self.block_size)
    }
}
