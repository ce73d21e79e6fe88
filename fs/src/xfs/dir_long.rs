//! Changing names in leaf and node directories (more entries than one directory block
//! holds), and growing a block directory into a leaf one. The data blocks are edited in
//! place ([`dir_data_write`]): a removed entry leaves free space, a new one goes into
//! the first data block with room, or a new data block at the first unused directory
//! block number. The hash index is then encoded again whole from every entry
//! ([`dir_index_write`]): one leaf block while it fits, else the node form, whose leaf
//! and node blocks reuse the directory's existing index blocks (so a split is only a
//! new block, and the tree is balanced afresh each time), with blocks added or freed
//! as the entry count needs. The directory's block map follows (extents or btree).

use super::bmbt::{self, Extent, Fork};
use super::bmbt_write::{self, MAX_EXTLEN};
use super::bytes::{be32, be64, crc_ok};
use super::dinode::RawInode;
use super::dir2_sf::bad_name;
use super::dir2_sf::RawEntry;
use super::dir_index_write::{self as idx, Place, NULL_OFF};
use super::dir_write::hashname;
use super::inode::{Inode, FMT_BTREE, FMT_EXTENTS};
use super::rmap::F_BMBT;
use super::txn::Txn;
use super::volume::Volume;
use super::{dir_data_write as data, DIR_LEAF_OFFSET};
use crate::error::Result;
use std::collections::BTreeMap;

const DATA_V4: u32 = 0x5844_3244; // "XD2D"
const DATA_V5: u32 = 0x5844_4433; // "XDD3"

/// Byte offset of a node directory's free index blocks.
const DIR_FREE_OFFSET: u64 = 64 << 30;

struct DataBlock {
    b: Vec<u8>,
    dirty: bool,
    /// Not mapped yet: allocated at commit.
    new: bool,
}

/// Where an entry is: directory block number and offset in it, with its inode.
#[derive(Clone, Copy)]
struct Loc {
    db: u64,
    off: usize,
    ino: u64,
    ftype: Option<u8>,
}

/// A leaf or node directory (or a block directory turned into one) being changed.
pub(crate) struct LongDir {
    dir: u64,
    map: Vec<Extent>,
    /// The block-map btree blocks the fork has now (freed when the map is rewritten).
    nodes: Vec<u64>,
    map_dirty: bool,
    data: BTreeMap<u64, DataBlock>,
    /// File blocks (first of each directory block) of the hash index blocks and of
    /// the free index blocks.
    index: Vec<u64>,
    frees: Vec<u64>,
    /// Every entry in block order, "." and ".." included; removed ones are not `live`.
    ents: Vec<Ent>,
}

struct Ent {
    name: Vec<u8>,
    loc: Loc,
    live: bool,
}

fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// Checks a leaf or node directory's data block header (magic, and on v5 its CRC,
/// owner and filesystem).
fn check_data_block(vol: &Volume, b: &[u8], at: u64, owner: u64) -> Result<()> {
    let sb = &vol.sb;
    let c = |d: &str| vol.corrupt("directory data block", at, d);
    let want = if sb.crc { DATA_V5 } else { DATA_V4 };
    if be32(b, 0) != Some(want) {
        return Err(c("bad magic for a leaf or node directory's data block"));
    }
    if sb.crc {
        if !crc_ok(b, 4) {
            return Err(c("CRC mismatch"));
        }
        if be64(b, 40) != Some(owner) {
            return Err(c("owned by another inode"));
        }
        if b.get(24..40) != Some(&sb.meta_uuid[..]) {
            return Err(c("belongs to another filesystem (UUID)"));
        }
    }
    Ok(())
}

fn bsize(vol: &Volume) -> usize {
    (vol.sb.blocksize as usize) << vol.sb.dirblklog
}

fn per(vol: &Volume) -> u64 {
    1u64 << vol.sb.dirblklog
}

impl LongDir {
    /// Reads every block of directory `ino` (leaf or node form). Returns the directory,
    /// its parent and its entries other than "." and "..".
    pub fn load(vol: &Volume, ino: &Inode) -> Result<(LongDir, u64, Vec<RawEntry>)> {
        let sb = &vol.sb;
        let (map, nodes) = bmbt::extents_and_nodes(vol, ino, Fork::Data)?;
        let per = per(vol);
        let leaf_fsb = DIR_LEAF_OFFSET >> sb.blocklog;
        let free_fsb = DIR_FREE_OFFSET >> sb.blocklog;
        let what = format!("directory inode {}", ino.ino);
        let budget = (vol.dev.len() >> sb.blocklog) / per + 1;
        let mut dir = LongDir {
            dir: ino.ino,
            map: Vec::new(),
            nodes,
            map_dirty: false,
            data: BTreeMap::new(),
            index: Vec::new(),
            frees: Vec::new(),
            ents: Vec::new(),
        };
        let mut entries = Vec::new();
        let mut seen = 0u64;
        let mut last: Option<u64> = None;
        for e in &map {
            let (first, end) = (e.off / per, e.end().div_ceil(per));
            for db in first..end {
                if last.is_some_and(|l| db <= l) {
                    continue;
                }
                last = Some(db);
                seen += 1;
                if seen > budget {
                    return Err(vol.corrupt(&what, ino.offset, "maps more blocks than the device"));
                }
                let fo = db * per;
                if fo >= free_fsb {
                    dir.frees.push(fo);
                    continue;
                }
                if fo >= leaf_fsb {
                    dir.index.push(fo);
                    continue;
                }
                let b = bmbt::read_blocks(vol, &map, fo, per, &what)?;
                let at = sb
                    .fsb_offset(e.block + fo.saturating_sub(e.off))
                    .unwrap_or(0);
                check_data_block(vol, &b, at, ino.ino)?;
                let placed = data::entries(sb, &b).ok_or_else(|| {
                    vol.corrupt(&what, at, "data block regions do not tile the block")
                })?;
                for (off, name, ino, ftype) in placed {
                    if !is_dot(name) {
                        if bad_name(name) {
                            return Err(vol.corrupt(&what, at, "an entry with an invalid name"));
                        }
                        entries.push(RawEntry {
                            name: name.to_vec(),
                            ino,
                            ftype,
                        });
                    }
                    dir.ents.push(Ent {
                        name: name.to_vec(),
                        loc: Loc {
                            db,
                            off,
                            ino,
                            ftype,
                        },
                        live: true,
                    });
                }
                dir.data.insert(
                    db,
                    DataBlock {
                        b,
                        dirty: false,
                        new: false,
                    },
                );
            }
        }
        dir.map = map;
        let parent = dir
            .ents
            .iter()
            .find(|e| e.name == b".." && e.loc.db == 0)
            .map(|e| e.loc.ino)
            .ok_or_else(|| vol.corrupt(&what, ino.offset, "no \"..\" in data block 0"))?;
        if dir.index.first() != Some(&leaf_fsb) {
            return Err(vol.corrupt(&what, ino.offset, "no hash index block at 32 GiB"));
        }
        Ok((dir, parent, entries))
    }

    /// A block directory `dir` (its block map `map`, btree blocks `nodes` and its one
    /// block `b`) as the first data block of a leaf directory, with no index yet.
    /// `new_map`: the inode's fork does not hold `map` yet (a shortform directory).
    pub fn from_block(
        vol: &Volume,
        dir: u64,
        map: Vec<Extent>,
        nodes: Vec<u64>,
        mut b: Vec<u8>,
        new_map: bool,
    ) -> Result<LongDir> {
        let sb = &vol.sb;
        let what = format!("directory inode {dir}");
        data::from_block_form(sb, &mut b)
            .ok_or_else(|| vol.corrupt(&what, 0, "block directory regions do not parse"))?;
        let mut ents = Vec::new();
        for (off, name, ino, ftype) in data::entries(sb, &b)
            .ok_or_else(|| vol.corrupt(&what, 0, "block directory regions do not parse"))?
        {
            ents.push(Ent {
                name: name.to_vec(),
                loc: Loc {
                    db: 0,
                    off,
                    ino,
                    ftype,
                },
                live: true,
            });
        }
        let mut data = BTreeMap::new();
        data.insert(
            0,
            DataBlock {
                b,
                dirty: true,
                new: false,
            },
        );
        Ok(LongDir {
            dir,
            map,
            nodes,
            map_dirty: new_map,
            data,
            index: Vec::new(),
            frees: Vec::new(),
            ents,
        })
    }

    /// Makes the directory hold `want` (besides "." and ".."): removes the names that
    /// went or changed, adds the new ones. `want` is the list as loaded with names
    /// removed and added at the end, so one walk in step finds what changed (any other
    /// order still ends right, only with more entries rewritten).
    pub fn apply(&mut self, vol: &Volume, want: &[RawEntry]) -> Result<()> {
        let sb = &vol.sb;
        let what = format!("directory inode {}", self.dir);
        let mut j = 0;
        let mut gone = Vec::new();
        for (i, e) in self.ents.iter().enumerate() {
            if !e.live || is_dot(&e.name) {
                continue;
            }
            match want.get(j) {
                Some(w) if w.name == e.name && w.ino == e.loc.ino && w.ftype == e.loc.ftype => {
                    j += 1
                }
                _ => gone.push(i),
            }
        }
        for i in gone {
            let Some(e) = self.ents.get_mut(i) else {
                continue;
            };
            e.live = false;
            let l = e.loc;
            let blk = self
                .data
                .get_mut(&l.db)
                .ok_or_else(|| vol.corrupt(&what, 0, "entry in a missing data block"))?;
            data::remove(sb, &mut blk.b, l.off)
                .ok_or_else(|| vol.corrupt(&what, 0, "entry to remove does not parse"))?;
            blk.dirty = true;
        }
        let leaf_db = (DIR_LEAF_OFFSET >> sb.blocklog) / per(vol);
        for e in want.get(j..).unwrap_or(&[]) {
            if self.ents.iter().any(|x| x.live && x.name == e.name) {
                continue;
            }
            let need = data::entsize(sb, e.name.len());
            let db = match self
                .data
                .iter()
                .find(|(_, d)| usize::from(data::best(sb, &d.b)) >= need)
            {
                Some((&db, _)) => db,
                None => {
                    let db = (0..leaf_db)
                        .find(|db| !self.data.contains_key(db))
                        .ok_or_else(|| vol.unsupported("a directory of 32 GiB of entries"))?;
                    self.data.insert(
                        db,
                        DataBlock {
                            b: data::empty(sb, bsize(vol)),
                            dirty: true,
                            new: true,
                        },
                    );
                    db
                }
            };
            let blk = self
                .data
                .get_mut(&db)
                .ok_or_else(|| vol.corrupt(&what, 0, "data block vanished"))?;
            let off = data::insert(sb, &mut blk.b, &e.name, e.ino, e.ftype)
                .ok_or_else(|| vol.corrupt(&what, 0, "no room where the best-free table says"))?;
            blk.dirty = true;
            self.ents.push(Ent {
                name: e.name.clone(),
                loc: Loc {
                    db,
                    off,
                    ino: e.ino,
                    ftype: e.ftype,
                },
                live: true,
            });
        }
        Ok(())
    }

    fn map_add(&mut self, off: u64, block: u64, len: u64) {
        let i = self.map.partition_point(|e| e.off < off);
        self.map.insert(
            i,
            Extent {
                off,
                block,
                len,
                unwritten: false,
            },
        );
        // Merge with the neighbours where the extent continues them.
        let joins = |a: &Extent, b: &Extent| {
            !a.unwritten
                && !b.unwritten
                && a.end() == b.off
                && a.block + a.len == b.block
                && a.len + b.len <= MAX_EXTLEN
        };
        if i + 1 < self.map.len() && joins(&self.map[i], &self.map[i + 1]) {
            self.map[i].len += self.map[i + 1].len;
            self.map.remove(i + 1);
        }
        if i > 0 && joins(&self.map[i - 1], &self.map[i]) {
            self.map[i - 1].len += self.map[i].len;
            self.map.remove(i);
        }
        self.map_dirty = true;
    }

    /// Unmaps and frees file blocks `off..off + len`; returns how many were mapped.
    fn map_remove(&mut self, tx: &mut Txn<'_>, off: u64, len: u64) -> Result<u64> {
        let end = off + len;
        let mut out = Vec::with_capacity(self.map.len() + 1);
        let mut freed = 0;
        for e in std::mem::take(&mut self.map) {
            if e.end() <= off || e.off >= end {
                out.push(e);
                continue;
            }
            let (s, t) = (e.off.max(off), e.end().min(end));
            tx.free(e.block + (s - e.off), t - s, self.dir, s)?;
            freed += t - s;
            if e.off < s {
                out.push(Extent {
                    len: s - e.off,
                    ..e
                });
            }
            if e.end() > t {
                out.push(Extent {
                    off: t,
                    block: e.block + (t - e.off),
                    len: e.end() - t,
                    unwritten: e.unwritten,
                });
            }
        }
        self.map = out;
        self.map_dirty = true;
        Ok(freed)
    }

    /// Allocates and maps one directory block at file block `fo`.
    fn grow(&mut self, tx: &mut Txn<'_>, vol: &Volume, fo: u64) -> Result<()> {
        let n = per(vol);
        let fsb = tx.alloc_meta(n as u32, tx.ag_of_ino(self.dir), self.dir, fo)?;
        self.map_add(fo, fsb, n);
        Ok(())
    }

    /// Writes a directory block at file block `fo`, following the map (a directory
    /// block of several filesystem blocks may lie in several extents).
    fn put(&self, tx: &mut Txn<'_>, vol: &Volume, fo: u64, b: Vec<u8>) -> Result<()> {
        let sb = &vol.sb;
        let bs = sb.blocksize as usize;
        let mut i = bmbt::find(&self.map, fo);
        let mut f = fo;
        let end = fo + per(vol);
        let mut done = 0usize;
        while f < end {
            let e = self
                .map
                .get(i)
                .filter(|e| e.off <= f)
                .ok_or_else(|| vol.corrupt("directory", 0, "writing an unmapped block"))?;
            let n = e.end().min(end) - f;
            let at = sb
                .fsb_offset(e.block + (f - e.off))
                .ok_or_else(|| vol.corrupt("directory", 0, "block outside the filesystem"))?;
            let len = n as usize * bs;
            tx.write_meta(at, b.get(done..done + len).unwrap_or(&[]).to_vec());
            done += len;
            f += n;
            i += 1;
        }
        Ok(())
    }

    fn daddr(&self, vol: &Volume, fo: u64) -> u64 {
        let i = bmbt::find(&self.map, fo);
        self.map
            .get(i)
            .filter(|e| e.off <= fo)
            .and_then(|e| vol.sb.fsb_offset(e.block + (fo - e.off)))
            .unwrap_or(0)
            >> 9
    }

    /// Maps new blocks, encodes the index, writes every changed block and the block
    /// map into the transaction, and sets the directory inode's size and block count.
    pub fn commit(&mut self, tx: &mut Txn<'_>, vol: &Volume, raw: &mut RawInode) -> Result<()> {
        let sb = &vol.sb;
        let per = per(vol);
        let bsize = bsize(vol);
        let leaf_fsb = DIR_LEAF_OFFSET >> sb.blocklog;
        let free_fsb = DIR_FREE_OFFSET >> sb.blocklog;
        let dir = self.dir;
        let what = format!("directory inode {dir}");
        let mut added = 0u64;
        let mut freed = 0u64;
        // Emptied data blocks go (xfs_repair junks an empty one); block 0 keeps "." and "..".
        let empty = (bsize - data::hdr_len(sb)) as u16;
        let emptied: Vec<u64> = self
            .data
            .iter()
            .filter(|(&db, d)| db != 0 && data::best(sb, &d.b) == empty)
            .map(|(&db, _)| db)
            .collect();
        for db in emptied {
            if self.data.remove(&db).is_some_and(|d| !d.new) {
                freed += self.map_remove(tx, db * per, per)?;
            }
        }
        let new: Vec<u64> = self
            .data
            .iter()
            .filter(|(_, d)| d.new)
            .map(|(&db, _)| db)
            .collect();
        for db in new {
            self.grow(tx, vol, db * per)?;
            added += per;
        }
        // Every entry's hash and address, and each data block's best free region.
        let dshift = sb.blocklog + sb.dirblklog;
        let mut ents = Vec::with_capacity(self.ents.len());
        for Ent { name, loc: l, .. } in self.ents.iter().filter(|e| e.live) {
            let addr = ((l.db << dshift) + l.off as u64) >> 3;
            let addr = u32::try_from(addr).map_err(|_| vol.corrupt(&what, 0, "address"))?;
            ents.push((hashname(name), addr));
        }
        ents.sort_unstable();
        let last_db = self.data.keys().next_back().copied().unwrap_or(0);
        let mut bests = vec![NULL_OFF; last_db as usize + 1];
        for (&db, d) in &self.data {
            if let Some(v) = bests.get_mut(db as usize) {
                *v = data::best(sb, &d.b);
            }
        }
        let node_form = !self.frees.is_empty();
        let mut index_blocks: Vec<(u64, Vec<u8>)> = Vec::new();
        if !node_form && idx::leaf1_fits(sb, bsize, ents.len(), bests.len()) {
            if self.index.is_empty() {
                self.grow(tx, vol, leaf_fsb)?;
                added += per;
                self.index.push(leaf_fsb);
            }
            let p = Place {
                daddr: self.daddr(vol, leaf_fsb),
                dir,
                forw: 0,
                back: 0,
            };
            let b = idx::leaf1(sb, bsize, &p, &ents, &bests)
                .ok_or_else(|| vol.corrupt(&what, 0, "leaf block overflow"))?;
            index_blocks.push((leaf_fsb, b));
        } else {
            let (a, f) = self.node_index(tx, vol, &ents, &mut index_blocks)?;
            added += a;
            freed += f;
            // Free index blocks, one per so many data blocks, at fixed offsets.
            let cap = idx::per_free_block(sb, bsize);
            let nfree = bests.len().div_ceil(cap) as u64;
            for fo in self.frees.clone() {
                if fo >= free_fsb + nfree * per {
                    freed += self.map_remove(tx, fo, per)?;
                    self.frees.retain(|&f| f != fo);
                }
            }
            for (i, chunk) in bests.chunks(cap).enumerate() {
                let fo = free_fsb + i as u64 * per;
                if chunk.iter().all(|&v| v == NULL_OFF) {
                    // A free index block with nothing to index is not kept.
                    if self.frees.contains(&fo) {
                        freed += self.map_remove(tx, fo, per)?;
                        self.frees.retain(|&f| f != fo);
                    }
                    continue;
                }
                if !self.frees.contains(&fo) {
                    self.grow(tx, vol, fo)?;
                    added += per;
                    self.frees.push(fo);
                }
                let p = Place {
                    daddr: self.daddr(vol, fo),
                    dir,
                    forw: 0,
                    back: 0,
                };
                let b = idx::free(sb, bsize, &p, (i * cap) as u32, chunk)
                    .ok_or_else(|| vol.corrupt(&what, 0, "free index overflow"))?;
                index_blocks.push((fo, b));
            }
        }
        if self.map_dirty {
            let (a, f) = self.write_map(tx, vol, raw)?;
            added += a;
            freed += f;
        }
        for (&db, d) in &self.data {
            if d.dirty {
                let fo = db * per;
                let mut b = d.b.clone();
                data::seal(sb, &mut b, self.daddr(vol, fo), dir);
                self.put(tx, vol, fo, b)?;
            }
        }
        for (fo, b) in index_blocks {
            self.put(tx, vol, fo, b)?;
        }
        let size = (last_db + 1) << dshift;
        raw.set_size(size);
        let nb = (raw.nblocks() + added)
            .checked_sub(freed)
            .ok_or_else(|| vol.corrupt(&what, raw.offset, "counts fewer blocks than it maps"))?;
        raw.set_nblocks(nb);
        Ok(())
    }

    /// Lays out the node form's leaf and node blocks over the existing index blocks
    /// (adding or freeing blocks as the entries need) and encodes them into `out`.
    /// Returns the blocks added and freed.
    fn node_index(
        &mut self,
        tx: &mut Txn<'_>,
        vol: &Volume,
        ents: &[(u32, u32)],
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(u64, u64)> {
        let sb = &vol.sb;
        let per = per(vol);
        let bsize = bsize(vol);
        let leaf_fsb = DIR_LEAF_OFFSET >> sb.blocklog;
        let free_fsb = DIR_FREE_OFFSET >> sb.blocklog;
        let cap = idx::per_index_block(sb, bsize);
        let total = |l: usize| l + idx::node_levels(l, cap).iter().sum::<usize>();
        let pool = self.index.len().max(1);
        let need = ents.len().div_ceil(cap).max(1);
        // Reuse every block the index has while each leaf still gets an entry.
        let reuse = (1..=pool.min(ents.len()))
            .rev()
            .find(|&l| total(l) <= pool)
            .unwrap_or(1);
        let mut leaves = need.max(reuse);
        let mut ends = None;
        for _ in 0..4 {
            ends = idx::split_leaves(ents, leaves, cap);
            if ends.is_some() || leaves >= ents.len() {
                break;
            }
            leaves += 1;
        }
        let ends = ends.ok_or_else(|| {
            vol.unsupported(format!(
                "splitting the hash index of XFS directory inode {} (too many names of one hash)",
                self.dir
            ))
        })?;
        let levels = idx::node_levels(leaves, cap);
        if levels.len() > 4 {
            return Err(vol.unsupported("a directory hash index deeper than 5 levels"));
        }
        let want = total(leaves);
        let (mut added, mut freed) = (0, 0);
        // The root stays at 32 GiB; the other blocks in file order.
        let mut blocks: Vec<u64> = vec![leaf_fsb];
        blocks.extend(self.index.iter().copied().filter(|&f| f != leaf_fsb));
        if !self.index.contains(&leaf_fsb) {
            self.grow(tx, vol, leaf_fsb)?;
            added += per;
        }
        let mut next = leaf_fsb;
        while blocks.len() < want {
            while blocks.contains(&next) {
                next += per;
            }
            if next >= free_fsb {
                return Err(vol.unsupported("a directory hash index past 64 GiB"));
            }
            self.grow(tx, vol, next)?;
            added += per;
            blocks.push(next);
        }
        for fo in blocks.split_off(want) {
            freed += self.map_remove(tx, fo, per)?;
        }
        self.index = blocks.clone();
        // Roles: with one leaf it is the root; else the root is the top node, the
        // leaves come next, then the lower node levels.
        let dablk = |fo: u64| fo as u32;
        let leaf_blocks: Vec<u64> = if leaves == 1 {
            vec![leaf_fsb]
        } else {
            blocks[1..=leaves].to_vec()
        };
        let mut below: Vec<(u32, u64)> = Vec::with_capacity(leaves);
        let mut s = 0;
        for (i, (&fo, &e)) in leaf_blocks.iter().zip(&ends).enumerate() {
            let part = ents.get(s..e).unwrap_or(&[]);
            let p = Place {
                daddr: self.daddr(vol, fo),
                dir: self.dir,
                forw: leaf_blocks.get(i + 1).map_or(0, |&f| dablk(f)),
                back: if i == 0 { 0 } else { dablk(leaf_blocks[i - 1]) },
            };
            let b = idx::leafn(sb, bsize, &p, part)
                .ok_or_else(|| vol.corrupt("directory", 0, "leaf overflow"))?;
            below.push((part.last().map_or(0, |x| x.0), fo));
            out.push((fo, b));
            s = e;
        }
        let mut spare = blocks.get(leaves + 1..).unwrap_or(&[]).iter().copied();
        for (lvl, &n) in levels.iter().enumerate() {
            let top = lvl + 1 == levels.len();
            let mine: Vec<u64> = if top {
                vec![leaf_fsb]
            } else {
                spare.by_ref().take(n).collect()
            };
            let mut up = Vec::with_capacity(n);
            let mut start = 0;
            for (i, &fo) in mine.iter().enumerate() {
                let cnt = below.len() / n + usize::from(i < below.len() % n);
                let kids: Vec<(u32, u32)> = below
                    .get(start..start + cnt)
                    .unwrap_or(&[])
                    .iter()
                    .map(|&(h, f)| (h, dablk(f)))
                    .collect();
                start += cnt;
                let p = Place {
                    daddr: self.daddr(vol, fo),
                    dir: self.dir,
                    forw: mine.get(i + 1).map_or(0, |&f| dablk(f)),
                    back: if i == 0 { 0 } else { dablk(mine[i - 1]) },
                };
                let b = idx::node(sb, bsize, &p, lvl as u16 + 1, &kids)
                    .ok_or_else(|| vol.corrupt("directory", 0, "node overflow"))?;
                up.push((kids.last().map_or(0, |x| x.0), fo));
                out.push((fo, b));
            }
            below = up;
        }
        Ok((added, freed))
    }

    /// Writes the block map into the inode (extents, or a btree over new blocks, the
    /// old btree blocks freed). Returns the blocks added and freed.
    fn write_map(
        &mut self,
        tx: &mut Txn<'_>,
        vol: &Volume,
        raw: &mut RawInode,
    ) -> Result<(u64, u64)> {
        let sb = &vol.sb;
        let dir = self.dir;
        let old = std::mem::take(&mut self.nodes);
        for &b in &old {
            tx.free(b, 1, dir, F_BMBT)?;
        }
        let dsize = raw.dfork_size();
        let nb = bmbt_write::blocks_needed(sb, self.map.len(), dsize);
        let mut tree = Vec::with_capacity(nb);
        for _ in 0..nb {
            tree.push(tx.alloc_meta(1, tx.ag_of_ino(dir), dir, F_BMBT)?);
        }
        let (fork, blocks) = bmbt_write::build(sb, dir, &self.map, &tree, dsize)
            .ok_or_else(|| vol.unsupported("an XFS block map of this shape"))?;
        let format = if nb == 0 { FMT_EXTENTS } else { FMT_BTREE };
        if !raw.set_data_fork(format, &fork, self.map.len() as u64) {
            return Err(vol.unsupported(format!(
                "{} extents in directory inode {dir}'s data fork",
                self.map.len()
            )));
        }
        for (fsb, b) in blocks {
            let at = sb.fsb_offset(fsb).unwrap_or(0);
            tx.write_meta(at, b);
        }
        self.nodes = tree;
        self.map_dirty = false;
        Ok((nb as u64, old.len() as u64))
    }
}
