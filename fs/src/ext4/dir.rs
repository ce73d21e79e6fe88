//! Directories as the writer changes them: find, list, add and remove entries across the
//! blocks of a linear or hashed directory, grow it by a block when every block is full,
//! and drop the hash index when a name must be added to an htree (see `htree`).
//!
//! Each directory the writer touches is scanned once into a cache (name -> where its entry
//! is, and the largest free slot of each block), kept current by every change made here,
//! so adding the thousandth name to a directory costs one block write, not a scan.
//! Entries never move once written (inserts split free space, removals merge it into the
//! entry before), which is what keeps the cached locations valid.

use super::dir_block::{self, Entry};
use super::dx_hash;
use super::engine::Engine;
use super::htree;
use super::inode::{flags, Inode};
use super::map_write::MapPlan;
use super::mapping::{Mapping, Run};
use crate::error::{Error, Result};
use crate::{show, FileKind};
use std::collections::HashMap;

/// Past this many cached names (all directories together) the cache starts over.
const CACHE_MAX_NAMES: usize = 1 << 21;

#[derive(Default)]
pub struct DirCache {
    dirs: HashMap<u32, CachedDir>,
    names: usize,
}

impl DirCache {
    pub fn forget(&mut self, dir: u32) {
        if let Some(d) = self.dirs.remove(&dir) {
            self.names = self.names.saturating_sub(d.names.len());
        }
    }
    pub fn clear(&mut self) {
        self.dirs.clear();
        self.names = 0;
    }
}

struct CachedDir {
    names: HashMap<Vec<u8>, DirLoc>,
    /// Largest free slot of each block, by physical block, in logical order.
    room: Vec<(u64, usize)>,
}

/// Where an entry lives.
#[derive(Debug, Clone, Copy)]
pub struct DirLoc {
    pub physical: u64,
    pub entry: Entry,
}

/// Where a new entry will go, decided (and allocated) before the commit point.
pub enum DirPlan {
    Into(u64),
    DropIndex,
    Grow {
        block: u64,
        map: MapPlan,
        data_blocks: u64,
    },
    /// Split the full htree leaf `leaf` by hash into it and the new block `block`
    /// (logical `logical`), adding an index entry to the index block `parent`.
    Split {
        leaf: u64,
        block: u64,
        logical: u32,
        parent: u64,
        level: htree::Level,
        version: u8,
        map: MapPlan,
        data_blocks: u64,
        /// A full index block above the leaf first gets room.
        grow_index: Option<IndexGrow>,
    },
}

/// How a full index block gets room for one more entry, using a new block (physical,
/// logical) at the end of the directory.
pub enum IndexGrow {
    /// The root's entries move to the new node; the root points at it alone.
    AddLevel(u64, u32),
    /// The upper half of the node moves to the new node, with an entry for it in the
    /// index block above (`up`, at physical `up_p`).
    SplitNode {
        new: (u64, u32),
        up_p: u64,
        up: htree::Level,
    },
}

/// A live entry while a leaf is split: (hash, name, inode, file type).
type Item = (u32, Vec<u8>, u32, u8);

pub fn file_type(k: FileKind) -> u8 {
    match k {
        FileKind::File => 1,
        FileKind::Dir => 2,
        FileKind::CharDevice => 3,
        FileKind::BlockDevice => 4,
        FileKind::Fifo => 5,
        FileKind::Socket => 6,
        FileKind::Symlink => 7,
    }
}

impl Engine {
    /// Directories this tool cannot change: inline ones (read, not written), and those
    /// it cannot read by name either.
    pub fn check_dir_writable(&self, dir: &Inode, path: &[u8]) -> Result<()> {
        self.check_dir(dir, path)?;
        if dir.flags() & flags::INLINE_DATA != 0 {
            return Err(Error::Unsupported {
                dev: self.name.clone(),
                feature: format!("writing inline_data directories ({} is one)", show(path)),
            });
        }
        Ok(())
    }

    /// Directories this tool cannot read by name.
    pub fn check_dir(&self, dir: &Inode, path: &[u8]) -> Result<()> {
        if !dir.is_dir() {
            return Err(Error::NotADirectory(show(path)));
        }
        let f = dir.flags();
        let what = if f & flags::ENCRYPT != 0 {
            "encrypt"
        } else if f & flags::CASEFOLD != 0 {
            "casefold"
        } else {
            return Ok(());
        };
        Err(Error::Unsupported {
            dev: self.name.clone(),
            feature: format!("{what} ({} is such a directory)", show(path)),
        })
    }

    fn inline_dir(&self, dir: &Inode) -> Result<Vec<(Vec<u8>, u32, u8)>> {
        super::inline::dir_entries(dir, self.sb.filetype())
            .map_err(|e| self.corrupt(format!("directory inode {}: {e}", dir.ino)))
    }

    fn dir_block_err(&self, dir: &Inode, l: u64, e: String) -> Error {
        self.corrupt(format!("directory inode {}, block {l}: {e}", dir.ino))
    }

    /// Calls `f(logical, physical, block)` for each mapped block of a directory.
    fn each_dir_block(
        &self,
        dir: &Inode,
        map: &Mapping,
        mut f: impl FnMut(u64, u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let nblocks = dir.size().div_ceil(self.bs());
        for r in &map.runs {
            for k in 0..r.len {
                let l = r.logical + k;
                if l >= nblocks {
                    return Ok(());
                }
                let b = self.read_block(r.physical + k)?;
                if !f(l, r.physical + k, &b)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Scans `dir` into the cache if it is not there yet.
    fn cache_dir(&self, dir: &Inode) -> Result<()> {
        if self.dirs.borrow().dirs.contains_key(&dir.ino) {
            return Ok(());
        }
        let ft = self.sb.filetype();
        let mut names = HashMap::new();
        let mut room = Vec::new();
        if dir.flags() & flags::INLINE_DATA != 0 {
            // Found by name only, never changed in place (`check_dir_writable`): the
            // location is no block, and the entry carries just the inode.
            for (name, inode, file_type) in self.inline_dir(dir)? {
                let entry = Entry {
                    off: 0,
                    rec_len: 0,
                    inode,
                    name_len: name.len(),
                    file_type,
                };
                names.insert(name, DirLoc { physical: 0, entry });
            }
            return self.store_cached(dir, names, room);
        }
        let map = self.mapping(dir)?;
        self.each_dir_block(dir, &map, |l, p, b| {
            let list = dir_block::entries(b, ft).map_err(|e| self.dir_block_err(dir, l, e))?;
            let mut best = 0;
            for e in list {
                let used = if e.inode == 0 {
                    0
                } else {
                    dir_block::needed(e.name_len)
                };
                best = best.max(e.rec_len.saturating_sub(used));
                if e.inode != 0 {
                    names.insert(
                        e.name(b).to_vec(),
                        DirLoc {
                            physical: p,
                            entry: e,
                        },
                    );
                }
            }
            room.push((p, best));
            Ok(true)
        })?;
        self.store_cached(dir, names, room)
    }

    fn store_cached(
        &self,
        dir: &Inode,
        names: HashMap<Vec<u8>, DirLoc>,
        room: Vec<(u64, usize)>,
    ) -> Result<()> {
        let mut c = self.dirs.borrow_mut();
        if c.names + names.len() > CACHE_MAX_NAMES {
            c.clear();
        }
        c.names += names.len();
        c.dirs.insert(dir.ino, CachedDir { names, room });
        Ok(())
    }

    /// Re-reads what the cache knows of one block of `dir` after a change to it.
    fn recache_block(&self, dir: &Inode, physical: u64, b: &[u8]) {
        let ft = self.sb.filetype();
        let mut c = self.dirs.borrow_mut();
        let Some(d) = c.dirs.get_mut(&dir.ino) else {
            return;
        };
        let Ok(list) = dir_block::entries(b, ft) else {
            c.forget(dir.ino);
            return;
        };
        let before = d.names.len();
        d.names.retain(|_, l| l.physical != physical);
        let mut best = 0;
        for e in list {
            let used = if e.inode == 0 {
                0
            } else {
                dir_block::needed(e.name_len)
            };
            best = best.max(e.rec_len.saturating_sub(used));
            if e.inode != 0 {
                d.names
                    .insert(e.name(b).to_vec(), DirLoc { physical, entry: e });
            }
        }
        match d.room.iter_mut().find(|(p, _)| *p == physical) {
            Some(r) => r.1 = best,
            None => d.room.push((physical, best)),
        }
        let after = d.names.len();
        c.names = (c.names + after).saturating_sub(before);
    }

    pub fn forget_dir(&self, dir: u32) {
        self.dirs.borrow_mut().forget(dir);
    }

    pub fn find_entry(&self, dir: &Inode, name: &[u8]) -> Result<Option<DirLoc>> {
        self.cache_dir(dir)?;
        Ok(self
            .dirs
            .borrow()
            .dirs
            .get(&dir.ino)
            .and_then(|d| d.names.get(name).copied()))
    }

    /// Every live entry: (name, inode, file type byte).
    pub fn list_dir(&self, dir: &Inode) -> Result<Vec<(Vec<u8>, u32, u8)>> {
        if dir.flags() & flags::INLINE_DATA != 0 {
            return self.inline_dir(dir);
        }
        let map = self.mapping(dir)?;
        let ft = self.sb.filetype();
        let mut out = Vec::new();
        self.each_dir_block(dir, &map, |l, _, b| {
            for e in dir_block::entries(b, ft).map_err(|e| self.dir_block_err(dir, l, e))? {
                if e.inode != 0 {
                    out.push((e.name(b).to_vec(), e.inode, e.file_type));
                }
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Whether the directory holds nothing but "." and "..".
    pub fn dir_is_empty(&self, dir: &Inode) -> Result<bool> {
        Ok(self
            .list_dir(dir)?
            .iter()
            .all(|(n, _, _)| n == b"." || n == b".."))
    }

    fn write_dir_block(&self, dir: &Inode, physical: u64, b: &mut [u8]) -> Result<()> {
        if let Some(seed) = self.inode_seed(dir) {
            dir_block::set_tail_csum(b, seed);
        }
        self.write_block(physical, b)?;
        self.recache_block(dir, physical, b);
        Ok(())
    }

    /// Phase one of adding a name: find a block with room, or allocate one.
    pub fn plan_insert(&mut self, dir: &Inode, name: &[u8]) -> Result<DirPlan> {
        if dir.flags() & flags::INDEX != 0 {
            return Ok(match self.plan_htree(dir, name)? {
                Some(p) => p,
                // After dropping the index the root block has room for any name.
                None => DirPlan::DropIndex,
            });
        }
        self.cache_dir(dir)?;
        let need = dir_block::needed(name.len());
        let into = self.dirs.borrow().dirs.get(&dir.ino).and_then(|d| {
            // The last block with room first: a growing directory fills its tail.
            d.room
                .iter()
                .rev()
                .find(|(_, r)| *r >= need)
                .map(|(p, _)| *p)
        });
        if let Some(p) = into {
            return Ok(DirPlan::Into(p));
        }
        let map = self.mapping(dir)?;
        let (block, plan, data_blocks) = self.plan_grow(dir, &map)?;
        Ok(DirPlan::Grow {
            block,
            map: plan,
            data_blocks,
        })
    }

    /// Allocates one more block at the end of a directory and plans its new map.
    fn plan_grow(&mut self, dir: &Inode, map: &Mapping) -> Result<(u64, MapPlan, u64)> {
        let (blocks, plan, data) = self.plan_grow_n(dir, map, 1)?;
        Ok((blocks.first().copied().unwrap_or(0), plan, data))
    }

    /// Allocates `n` more blocks at the end of a directory (logical order) and plans the
    /// new map.
    fn plan_grow_n(
        &mut self,
        dir: &Inode,
        map: &Mapping,
        n: u64,
    ) -> Result<(Vec<u64>, MapPlan, u64)> {
        let nblocks = dir.size().div_ceil(self.bs());
        let goal = map.runs.last().map(|r| r.physical + r.len).unwrap_or(0);
        let blocks = self.alloc_list(goal, n)?;
        let mut runs = map.runs.clone();
        for (k, &block) in blocks.iter().enumerate() {
            let logical = nblocks + k as u64;
            match runs.last_mut() {
                Some(r)
                    if r.logical + r.len == logical && r.physical + r.len == block && !r.uninit =>
                {
                    r.len += 1
                }
                _ => runs.push(Run {
                    logical,
                    physical: block,
                    len: 1,
                    uninit: false,
                }),
            }
        }
        let data_blocks = runs.iter().map(|r| r.len).sum();
        let goal = blocks.last().copied().unwrap_or(goal);
        let plan = self.plan_mapping(dir, &runs, &map.meta, goal)?;
        Ok((blocks, plan, data_blocks))
    }

    /// The hash version a directory's root names, adjusted for unsigned chars.
    fn hash_version(&self, root: &[u8]) -> u8 {
        let v = super::le::u8_at(root, 0x1C);
        if v <= dx_hash::TEA && self.sb.flags & 0x2 != 0 {
            v + dx_hash::UNSIGNED
        } else {
            v
        }
    }

    fn leaf_items(&self, dir: &Inode, b: &[u8], version: u8) -> Result<Vec<Item>> {
        let list = dir_block::entries(b, self.sb.filetype())
            .map_err(|e| self.corrupt(format!("directory inode {}: {e}", dir.ino)))?;
        let mut out = Vec::new();
        for e in list.into_iter().filter(|e| e.inode != 0) {
            let n = e.name(b).to_vec();
            let h = dx_hash::hash(&n, version, self.sb.hash_seed).unwrap_or(0);
            out.push((h, n, e.inode, e.file_type));
        }
        Ok(out)
    }

    fn usable(&self) -> usize {
        self.bs() as usize
            - if self.sb.metadata_csum() {
                dir_block::TAIL
            } else {
                0
            }
    }

    /// Phase one for an htree: the leaf if it has room, a split if the index above has
    /// room, or None (drop the index).
    fn plan_htree(&mut self, dir: &Inode, name: &[u8]) -> Result<Option<DirPlan>> {
        let map = self.mapping(dir)?;
        let bad = |e: String| self.corrupt(format!("directory inode {}: {e}", dir.ino));
        let (root_p, _) = map.lookup(0).ok_or_else(|| bad("no block 0".into()))?;
        let root = self.read_block(root_p)?;
        let version = self.hash_version(&root);
        let Some(h) = dx_hash::hash(name, version, self.sb.hash_seed) else {
            return Ok(None);
        };
        let mut read = |l: u32| -> std::result::Result<Vec<u8>, String> {
            let (p, _) = map
                .lookup(l as u64)
                .ok_or_else(|| format!("htree points at unmapped block {l}"))?;
            self.read_block(p).map_err(|e| e.to_string())
        };
        let (path, leaf_l) = htree::walk(&root, h, &mut read).map_err(bad)?;
        let (leaf_p, _) = map
            .lookup(leaf_l as u64)
            .ok_or_else(|| bad(format!("htree leaf {leaf_l} is not mapped")))?;
        let leaf = self.read_block(leaf_p)?;
        let ft = self.sb.filetype();
        if dir_block::insert(&mut leaf.clone(), ft, 1, name, 0)
            .map_err(|e| bad(format!("block {leaf_l}: {e}")))?
            .is_some()
        {
            return Ok(Some(DirPlan::Into(leaf_p)));
        }
        let Some(level) = path.last().copied() else {
            return Ok(None);
        };
        // A full root over leaves gets one more level (up to what the kernel allows);
        // a full node below the root makes the caller drop the index.
        let max_levels = if self.sb.incompat & super::superblock::incompat::LARGEDIR != 0 {
            3
        } else {
            2
        };
        let full = level.count >= level.limit;
        let up = match path.len() {
            _ if !full => None,
            1 if max_levels > 1 => None,
            n if n >= 2 => match path.get(n - 2) {
                Some(u) if u.count < u.limit => Some(*u),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let mut items = self.leaf_items(dir, &leaf, version)?;
        items.push((h, name.to_vec(), 0, 0));
        items.sort_by_key(|x| x.0);
        let sizes: Vec<(u32, usize)> = items
            .iter()
            .map(|x| (x.0, dir_block::needed(x.1.len())))
            .collect();
        if htree::split_point(&sizes, self.usable(), level.low, level.high).is_none() {
            return Ok(None);
        }
        let Some((parent, _)) = map.lookup(level.logical as u64) else {
            return Ok(None);
        };
        let logical = dir.size().div_ceil(self.bs());
        if logical + 1 > u32::MAX as u64 {
            return Ok(None);
        }
        let up_p = match up {
            Some(u) => match map.lookup(u.logical as u64) {
                Some((p, _)) => Some(p),
                None => return Ok(None),
            },
            None => None,
        };
        let n = if full { 2 } else { 1 };
        let (blocks, plan, data_blocks) = self.plan_grow_n(dir, &map, n)?;
        let (block, grow_index) = match blocks[..] {
            [b] => (b, None),
            [node, b] => {
                let new = (node, logical as u32);
                let g = match (up, up_p) {
                    (Some(up), Some(up_p)) => IndexGrow::SplitNode { new, up_p, up },
                    _ => IndexGrow::AddLevel(node, logical as u32),
                };
                (b, Some(g))
            }
            _ => return Err(self.corrupt("directory growth allocated the wrong count")),
        };
        Ok(Some(DirPlan::Split {
            leaf: leaf_p,
            block,
            logical: (logical + n - 1) as u32,
            parent,
            level,
            version,
            map: plan,
            data_blocks,
            grow_index,
        }))
    }

    /// Moves the full root's entries into a new node block, leaving the root one entry
    /// pointing at it; returns the node's level for the split below.
    fn add_level(
        &mut self,
        dir: &Inode,
        root_p: u64,
        node_p: u64,
        node_l: u32,
        level: htree::Level,
    ) -> Result<htree::Level> {
        let bs = self.bs() as usize;
        let seed = self.inode_seed(dir);
        let mut root = self.read_block(root_p)?;
        let co = level.count_offset;
        let count = level.count;
        let entries = root
            .get(co + 4..co + count * 8)
            .ok_or_else(|| self.corrupt(format!("directory inode {}: htree root", dir.ino)))?
            .to_vec();
        let mut node = vec![0u8; bs];
        super::le::put_u16(&mut node, 4, dir_block::rec_len_to_disk(bs, bs));
        let limit = (bs - 8 - if seed.is_some() { 8 } else { 0 }) / 8;
        super::le::put_u16(&mut node, 8, limit as u16);
        super::le::put_u16(&mut node, 10, count as u16);
        node.get_mut(12..12 + entries.len())
            .ok_or_else(|| self.corrupt(format!("directory inode {}: htree root", dir.ino)))?
            .copy_from_slice(&entries);
        if let Some(s) = seed {
            htree::set_dx_csum(&mut node, 8, s);
        }
        self.write_block(node_p, &node)?;
        super::le::put_u16(&mut root, co + 2, 1);
        super::le::put_u32(&mut root, co + 4, node_l);
        let levels = super::le::u8_at(&root, 0x1E);
        super::le::put_u8(&mut root, 0x1E, levels + 1);
        if let Some(s) = seed {
            htree::set_dx_csum(&mut root, co, s);
        }
        self.write_block(root_p, &root)?;
        Ok(htree::Level {
            logical: node_l,
            count_offset: 8,
            limit,
            ..level
        })
    }

    /// Moves the upper half of a full node to `new`, adding its entry to the block above;
    /// returns where the leaf's entry now is (physical, level).
    fn split_node(
        &mut self,
        dir: &Inode,
        up_p: u64,
        up: htree::Level,
        node_p: u64,
        node: htree::Level,
        new: (u64, u32),
    ) -> Result<(u64, htree::Level)> {
        let bs = self.bs() as usize;
        let seed = self.inode_seed(dir);
        let mut old = self.read_block(node_p)?;
        let count = node.count;
        let half = count / 2;
        let bad = || self.corrupt(format!("directory inode {}: htree node", dir.ino));
        if half == 0 || 8 + count * 8 > old.len() {
            return Err(bad());
        }
        let split_hash = super::le::u32_at(&old, 8 + half * 8);
        let moved = old
            .get(8 + half * 8 + 4..8 + count * 8)
            .ok_or_else(bad)?
            .to_vec();
        let mut nb = vec![0u8; bs];
        super::le::put_u16(&mut nb, 4, dir_block::rec_len_to_disk(bs, bs));
        super::le::put_u16(&mut nb, 8, node.limit as u16);
        super::le::put_u16(&mut nb, 10, (count - half) as u16);
        nb.get_mut(12..12 + moved.len())
            .ok_or_else(bad)?
            .copy_from_slice(&moved);
        super::le::put_u16(&mut old, 10, half as u16);
        if let Some(s) = seed {
            htree::set_dx_csum(&mut nb, 8, s);
            htree::set_dx_csum(&mut old, 8, s);
        }
        self.write_block(new.0, &nb)?;
        self.write_block(node_p, &old)?;
        let mut ub = self.read_block(up_p)?;
        htree::insert_entry(&mut ub, up.count_offset, up.pos, split_hash, new.1);
        if let Some(s) = seed {
            htree::set_dx_csum(&mut ub, up.count_offset, s);
        }
        self.write_block(up_p, &ub)?;
        Ok(if node.pos >= half {
            (
                new.0,
                htree::Level {
                    logical: new.1,
                    pos: node.pos - half,
                    count: count - half,
                    ..node
                },
            )
        } else {
            (
                node_p,
                htree::Level {
                    count: half,
                    ..node
                },
            )
        })
    }

    /// Phase two of a split: both leaves rewritten by hash, the index entry added, the new
    /// name in the half its hash selects.
    #[allow(clippy::too_many_arguments)]
    fn split_leaf(
        &mut self,
        dir: &Inode,
        leaf: u64,
        block: u64,
        logical: u32,
        parent: u64,
        level: htree::Level,
        version: u8,
        new: (&[u8], u32, u8),
    ) -> Result<()> {
        let bs = self.bs() as usize;
        let ft = self.sb.filetype();
        let csum = self.sb.metadata_csum();
        let old = self.read_block(leaf)?;
        let mut items = self.leaf_items(dir, &old, version)?;
        let h = dx_hash::hash(new.0, version, self.sb.hash_seed).unwrap_or(0);
        items.push((h, new.0.to_vec(), new.1, new.2));
        items.sort_by_key(|x| x.0);
        let sizes: Vec<(u32, usize)> = items
            .iter()
            .map(|x| (x.0, dir_block::needed(x.1.len())))
            .collect();
        let (k, split_hash) = htree::split_point(&sizes, self.usable(), level.low, level.high)
            .ok_or_else(|| {
                self.corrupt(format!(
                    "directory inode {}: no split point after all",
                    dir.ino
                ))
            })?;
        for (phys, part) in [(leaf, &items[..k]), (block, &items[k..])] {
            let mut b = dir_block::empty_block(bs, csum);
            for (_, name, ino, t) in part {
                if dir_block::insert(&mut b, ft, *ino, name, *t)
                    .map_err(|e| self.corrupt(e))?
                    .is_none()
                {
                    return Err(
                        self.corrupt(format!("directory inode {}: split half overflows", dir.ino))
                    );
                }
            }
            self.write_dir_block(dir, phys, &mut b)?;
        }
        let mut pb = self.read_block(parent)?;
        htree::insert_entry(&mut pb, level.count_offset, level.pos, split_hash, logical);
        if let Some(seed) = self.inode_seed(dir) {
            htree::set_dx_csum(&mut pb, level.count_offset, seed);
        }
        // Both leaves were re-read into the cache as they were written; index blocks hold
        // no names.
        self.write_block(parent, &pb)?;
        Ok(())
    }

    /// Phase two: writes the entry where the plan says. The caller writes `dir`.
    pub fn apply_insert(
        &mut self,
        dir: &mut Inode,
        plan: DirPlan,
        name: &[u8],
        ino: u32,
        kind: FileKind,
    ) -> Result<()> {
        let ft = self.sb.filetype();
        let tft = if ft { file_type(kind) } else { 0 };
        let physical = match plan {
            DirPlan::Into(p) => p,
            DirPlan::DropIndex => {
                self.drop_index(dir)?;
                self.mapping(dir)?
                    .lookup(0)
                    .map(|(p, _)| p)
                    .ok_or_else(|| {
                        self.corrupt(format!("directory inode {} has no block 0", dir.ino))
                    })?
            }
            DirPlan::Split {
                leaf,
                block,
                logical,
                parent,
                level,
                version,
                map,
                data_blocks,
                grow_index,
            } => {
                let (parent, level, grown) = match grow_index {
                    Some(IndexGrow::AddLevel(np, nl)) => {
                        (np, self.add_level(dir, parent, np, nl, level)?, 2)
                    }
                    Some(IndexGrow::SplitNode { new, up_p, up }) => {
                        let (p, l) = self.split_node(dir, up_p, up, parent, level, new)?;
                        (p, l, 2)
                    }
                    None => (parent, level, 1),
                };
                self.split_leaf(
                    dir,
                    leaf,
                    block,
                    logical,
                    parent,
                    level,
                    version,
                    (name, ino, tft),
                )?;
                map.apply(self, dir, data_blocks)?;
                dir.set_size(dir.size() + grown * self.bs());
                return Ok(());
            }
            DirPlan::Grow {
                block,
                map,
                data_blocks,
            } => {
                let mut b = dir_block::empty_block(self.bs() as usize, self.sb.metadata_csum());
                self.write_dir_block(dir, block, &mut b)?;
                map.apply(self, dir, data_blocks)?;
                dir.set_size(dir.size() + self.bs());
                block
            }
        };
        let mut b = self.read_block(physical)?;
        let ok = dir_block::insert(&mut b, ft, ino, name, tft)
            .map_err(|e| self.corrupt(format!("directory inode {}: {e}", dir.ino)))?;
        if ok.is_none() {
            return Err(self.corrupt(format!(
                "directory inode {}: block {physical} has no room after all",
                dir.ino
            )));
        }
        self.write_dir_block(dir, physical, &mut b)
    }

    pub fn remove_entry(&self, dir: &Inode, name: &[u8], loc: &DirLoc) -> Result<()> {
        let mut b = self.read_block(loc.physical)?;
        dir_block::remove(&mut b, self.sb.filetype(), name)
            .map_err(|e| self.corrupt(format!("directory inode {}: {e}", dir.ino)))?;
        self.write_dir_block(dir, loc.physical, &mut b)
    }

    pub fn set_entry(&self, dir: &Inode, loc: &DirLoc, ino: u32, kind: FileKind) -> Result<()> {
        let mut b = self.read_block(loc.physical)?;
        let ft = self.sb.filetype();
        dir_block::set_inode(&mut b, loc.entry.off, ino, file_type(kind), ft);
        self.write_dir_block(dir, loc.physical, &mut b)
    }

    /// Points ".." of directory `dir` at `parent` (a directory moved elsewhere).
    pub fn set_dotdot(&self, dir: &Inode, parent: u32) -> Result<()> {
        let map = self.mapping(dir)?;
        let (p, _) = map
            .lookup(0)
            .ok_or_else(|| self.corrupt(format!("directory inode {} has no block 0", dir.ino)))?;
        let mut b = self.read_block(p)?;
        let ft = self.sb.filetype();
        let list = dir_block::entries(&b, ft)
            .map_err(|e| self.corrupt(format!("directory inode {}: {e}", dir.ino)))?;
        let dd = list
            .get(1)
            .filter(|e| e.name(&b) == b"..")
            .copied()
            .ok_or_else(|| self.corrupt(format!("directory inode {} has no '..'", dir.ino)))?;
        dir_block::set_inode(&mut b, dd.off, parent, 2, ft);
        if dir.flags() & flags::INDEX != 0 {
            if let Some(seed) = self.inode_seed(dir) {
                let r = htree::parse_root(&b)
                    .map_err(|e| self.corrupt(format!("directory inode {}: {e}", dir.ino)))?;
                htree::set_dx_csum(&mut b, r.count_offset, seed);
            }
            self.forget_dir(dir.ino);
            return self.write_block(p, &b);
        }
        self.write_dir_block(dir, p, &mut b)
    }

    /// Turns an htree directory into a linear one (see `htree`).
    fn drop_index(&self, dir: &mut Inode) -> Result<()> {
        let map = self.mapping(dir)?;
        let bs = self.bs() as usize;
        let bad = |e: String| self.corrupt(format!("directory inode {}: {e}", dir.ino));
        let (root_p, _) = map.lookup(0).ok_or_else(|| bad("no block 0".into()))?;
        let root = self.read_block(root_p)?;
        let mut read = |l: u32| -> std::result::Result<Vec<u8>, String> {
            let (p, _) = map
                .lookup(l as u64)
                .ok_or_else(|| format!("htree points at unmapped block {l}"))?;
            self.read_block(p).map_err(|e| e.to_string())
        };
        let nodes = htree::index_nodes(&root, &mut read).map_err(bad)?;
        let ft = self.sb.filetype();
        let csum = self.sb.metadata_csum();
        let dot = u32_at4(&root, 0);
        let dotdot = u32_at4(&root, 12);
        let mut nb = dir_block::dot_block(bs, csum, dot, dotdot, ft);
        self.write_dir_block(dir, root_p, &mut nb)?;
        for l in nodes {
            if let Some((p, _)) = map.lookup(l as u64) {
                let mut eb = dir_block::empty_block(bs, csum);
                self.write_dir_block(dir, p, &mut eb)?;
            }
        }
        dir.set_flags(dir.flags() & !flags::INDEX);
        self.forget_dir(dir.ino);
        Ok(())
    }
}

fn u32_at4(b: &[u8], o: usize) -> u32 {
    super::le::u32_at(b, o)
}
