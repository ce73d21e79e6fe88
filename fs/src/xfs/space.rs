//! One allocation group's free space as the writer changes it: the AGF, the free
//! extents of the bnobt/cntbt (one sorted map; the two trees hold the same set in two
//! orders), the AG free list (AGFL) that feeds those trees and the rmapbt their blocks,
//! and the reverse mappings when the filesystem has them.
//!
//! Changes are made to this model only; [`AgSpace::commit`] then lays out the three
//! trees again (see [`super::sbtree`]), moving blocks between the trees and the AGFL,
//! topping the AGFL up from free space (recorded as owned by the AG in the rmapbt) when
//! the trees need more blocks than it holds, and returns every block to write. A caller
//! clones the model before a change and drops the clone if anything fails, so nothing
//! reaches the device until the whole change is known to fit.

use super::bytes::{be32, crc_ok, put32, set_crc};
use super::refcount::Refcounts;
use super::rmap::{RmapSet, OWN_AG, OWN_REFC};
use super::sbtree::{self, Tree, NULL_AGBLOCK};
use super::superblock::Superblock;
use super::volume::Volume;
use crate::error::Result;
use std::collections::BTreeMap;

const AGF_MAGIC: u32 = 0x5841_4746; // "XAGF"
const AGFL_MAGIC: u32 = 0x5841_464c; // "XAFL"
const RO_RMAPBT: u32 = 0x2;
const RO_REFLINK: u32 = 0x4;

/// Free blocks an AG keeps back from file data, so its own trees can always grow (a
/// split per level of three trees, and AGFL refills) and the kernel finds room for its
/// per-AG reservations at the next mount.
fn reserve(sb: &Superblock) -> u64 {
    (u64::from(sb.agblocks) / 64).clamp(16, 1024)
}

#[derive(Clone)]
pub(crate) struct AgSpace {
    pub agno: u32,
    /// Blocks in this AG (the last AG may be short).
    pub length: u32,
    agf: Vec<u8>,
    agf_at: u64,
    agfl_at: u64,
    agfl_raw: Vec<u8>,
    /// Free extents: first block to length.
    free: BTreeMap<u32, u32>,
    bno_blocks: Vec<u32>,
    cnt_blocks: Vec<u32>,
    rmap_blocks: Vec<u32>,
    agfl: Vec<u32>,
    pub rmap: Option<RmapSet>,
    /// The refcountbt's records and blocks, on reflink filesystems.
    pub refc: Option<Refcounts>,
    dirty: bool,
}

fn agfl_hdr(sb: &Superblock) -> usize {
    if sb.crc {
        36
    } else {
        0
    }
}

impl AgSpace {
    pub fn load(vol: &Volume, agno: u32) -> Result<AgSpace> {
        let sb = &vol.sb;
        let ss = u64::from(sb.sectsize);
        let base = sbtree::agb_offset(sb, agno, 0)
            .ok_or_else(|| vol.corrupt("AG number", 0, format!("{agno} out of range")))?;
        let agf_at = base + ss;
        let agf = vol.read(agf_at, ss as usize)?;
        let c = |d: String| vol.corrupt(&format!("AGF of AG {agno}"), agf_at, d);
        if be32(&agf, 0) != Some(AGF_MAGIC) || be32(&agf, 8) != Some(agno) {
            return Err(c("bad magic or sequence number".into()));
        }
        if sb.crc && (!crc_ok(&agf, 216) || agf.get(64..80) != Some(&sb.meta_uuid[..])) {
            return Err(c("CRC or UUID mismatch".into()));
        }
        let f = |o| be32(&agf, o).unwrap_or(0);
        let want_len = (sb.dblocks - u64::from(agno) * u64::from(sb.agblocks))
            .min(u64::from(sb.agblocks)) as u32;
        let length = f(12);
        if length != want_len {
            return Err(c(format!("length {length}, expected {want_len}")));
        }
        let bno = sbtree::read(vol, agno, Tree::Bno, f(16), f(28))?;
        let cnt = sbtree::read(vol, agno, Tree::Cnt, f(20), f(32))?;
        let mut free = BTreeMap::new();
        let mut prev_end = 0u64;
        let mut total = 0u64;
        for r in bno.recs.chunks_exact(8) {
            let (s, l) = (be32(r, 0).unwrap_or(0), be32(r, 4).unwrap_or(0));
            let end = u64::from(s) + u64::from(l);
            if l == 0 || u64::from(s) < prev_end || end > u64::from(length) {
                return Err(c(format!(
                    "free extent {s}+{l} is empty, out of order or past the AG"
                )));
            }
            prev_end = end;
            total += u64::from(l);
            free.insert(s, l);
        }
        let mut by_size: Vec<(u32, u32)> = cnt
            .recs
            .chunks_exact(8)
            .map(|r| (be32(r, 0).unwrap_or(0), be32(r, 4).unwrap_or(0)))
            .collect();
        by_size.sort_unstable();
        if by_size.len() != free.len() || by_size.iter().any(|(s, l)| free.get(s) != Some(l)) {
            return Err(c("the two free space btrees disagree".into()));
        }
        if u64::from(f(52)) != total {
            return Err(c(format!(
                "{} free blocks counted, the btrees hold {total}",
                f(52)
            )));
        }
        let (rmap, rmap_blocks) = if sb.ro_compat & RO_RMAPBT != 0 {
            let t = sbtree::read(vol, agno, Tree::Rmap, f(24), f(36))?;
            let set = RmapSet::from_records(&t.recs)
                .ok_or_else(|| c("the reverse mapping btree repeats a record".into()))?;
            (Some(set), t.blocks)
        } else {
            (None, Vec::new())
        };
        let refc = if sb.ro_compat & RO_REFLINK != 0 {
            let t = sbtree::read(vol, agno, Tree::Refc, f(88), f(92))?;
            if t.blocks.len() as u64 != u64::from(f(84)) {
                return Err(c(format!(
                    "{} reference count btree blocks counted, the tree has {}",
                    f(84),
                    t.blocks.len()
                )));
            }
            Some(Refcounts::from_records(&t.recs, t.blocks).ok_or_else(|| {
                c("reference count records overlap or count fewer than two users".into())
            })?)
        } else {
            None
        };
        let agfl_at = base + 3 * ss;
        let agfl_raw = vol.read(agfl_at, ss as usize)?;
        let cl = |d: &str| vol.corrupt(&format!("AGFL of AG {agno}"), agfl_at, d);
        if sb.crc
            && (be32(&agfl_raw, 0) != Some(AGFL_MAGIC)
                || be32(&agfl_raw, 4) != Some(agno)
                || agfl_raw.get(8..24) != Some(&sb.meta_uuid[..])
                || !crc_ok(&agfl_raw, 32))
        {
            return Err(cl("bad magic, sequence number, UUID or CRC"));
        }
        let size = (ss as usize - agfl_hdr(sb)) / 4;
        let (first, count) = (f(40) as usize, f(48) as usize);
        if first >= size || count > size || f(44) as usize >= size {
            return Err(cl("free list indexes out of range"));
        }
        let mut agfl = Vec::with_capacity(count);
        for i in 0..count {
            let slot = (first + i) % size;
            let b = be32(&agfl_raw, agfl_hdr(sb) + slot * 4).unwrap_or(NULL_AGBLOCK);
            if b >= length {
                return Err(cl("free list block past the AG"));
            }
            agfl.push(b);
        }
        Ok(AgSpace {
            agno,
            length,
            agf,
            agf_at,
            agfl_at,
            agfl_raw,
            free,
            bno_blocks: bno.blocks,
            cnt_blocks: cnt.blocks,
            rmap_blocks,
            agfl,
            rmap,
            refc,
            dirty: false,
        })
    }

    pub fn free_blocks(&self) -> u64 {
        self.free.values().map(|&l| u64::from(l)).sum()
    }

    /// Free blocks file data may take.
    pub fn usable(&self, sb: &Superblock) -> u64 {
        self.free_blocks().saturating_sub(reserve(sb))
    }

    /// Free runs file data may use: the reserve is kept at the end of the largest run
    /// (where [`AgSpace::commit`] tops the free list up from), so files fill the
    /// holes before they eat into it.
    fn data_runs(&self, sb: &Superblock) -> impl Iterator<Item = (u32, u32)> + '_ {
        let big = self.largest();
        let r = reserve(sb).min(u64::from(u32::MAX)) as u32;
        self.free.iter().filter_map(move |(&s, &l)| {
            let l = if big.is_some_and(|b| b.0 == s) {
                l.saturating_sub(r)
            } else {
                l
            };
            (l > 0).then_some((s, l))
        })
    }

    /// The smallest run file data may use holding `len` blocks (the lowest such).
    pub fn best_fit_data(&self, sb: &Superblock, len: u32) -> Option<u32> {
        self.data_runs(sb)
            .filter(|&(_, l)| l >= len)
            .min_by_key(|&(s, l)| (l, s))
            .map(|(s, _)| s)
    }

    /// The largest run file data may use.
    pub fn largest_data(&self, sb: &Superblock) -> Option<(u32, u32)> {
        self.data_runs(sb)
            .max_by_key(|&(s, l)| (l, std::cmp::Reverse(s)))
    }

    /// The smallest free extent holding `len` blocks (the lowest such), as its start.
    pub fn best_fit(&self, len: u32) -> Option<u32> {
        self.free
            .iter()
            .filter(|(_, &l)| l >= len)
            .min_by_key(|(&s, &l)| (l, s))
            .map(|(&s, _)| s)
    }

    /// The start of the smallest free extent holding `len` blocks from a multiple of
    /// `align` (the lowest such), aligned.
    pub fn aligned_fit(&self, len: u32, align: u32) -> Option<u32> {
        let align = u64::from(align.max(1));
        self.free
            .iter()
            .filter_map(|(&s, &l)| {
                let a = u64::from(s).div_ceil(align) * align;
                (a + u64::from(len) <= u64::from(s) + u64::from(l)).then_some((l, a as u32))
            })
            .min()
            .map(|(_, a)| a)
    }

    pub fn largest(&self) -> Option<(u32, u32)> {
        self.free
            .iter()
            .max_by_key(|(&s, &l)| (l, std::cmp::Reverse(s)))
            .map(|(&s, &l)| (s, l))
    }

    /// Marks `len` blocks from `start` used; they must lie in one free extent.
    pub fn take(&mut self, start: u32, len: u32) -> bool {
        let Some((&s, &l)) = self.free.range(..=start).next_back() else {
            return false;
        };
        let (end, fend) = (
            u64::from(start) + u64::from(len),
            u64::from(s) + u64::from(l),
        );
        if len == 0 || end > fend {
            return false;
        }
        self.free.remove(&s);
        if start > s {
            self.free.insert(s, start - s);
        }
        if end < fend {
            self.free.insert(end as u32, (fend - end) as u32);
        }
        self.dirty = true;
        true
    }

    /// Returns `len` blocks from `start` to free space, merging with its neighbours;
    /// false when any of them is free already (a double free means corruption).
    pub fn give(&mut self, start: u32, len: u32) -> bool {
        let end = u64::from(start) + u64::from(len);
        if len == 0 || end > u64::from(self.length) {
            return false;
        }
        let (mut s, mut e) = (u64::from(start), end);
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            let pe = u64::from(ps) + u64::from(pl);
            if pe > s {
                return false;
            }
            if pe == s {
                self.free.remove(&ps);
                s = u64::from(ps);
            }
        }
        if let Some((&ns, &nl)) = self.free.range(start..).next() {
            if u64::from(ns) < e {
                return false;
            }
            if u64::from(ns) == e {
                self.free.remove(&ns);
                e += u64::from(nl);
            }
        }
        self.free.insert(s as u32, (e - s) as u32);
        self.dirty = true;
        true
    }

    /// Whether any of the blocks is shared with another file (reflink).
    pub fn is_shared(&self, start: u32, len: u32) -> bool {
        self.refc.as_ref().is_some_and(|r| r.is_shared(start, len))
    }

    /// Whether the refcountbt holds copy-on-write staging extents.
    pub fn has_cow(&self) -> bool {
        self.refc.as_ref().is_some_and(|r| r.has_cow())
    }

    /// Ends one file fork's use of `len` blocks from `start`: shared blocks lose a
    /// reference, the others become free. False when a block to free is free already.
    pub fn release(&mut self, start: u32, len: u32) -> bool {
        let runs = match self.refc.as_mut() {
            Some(r) => {
                let v = r.decrease(start, len);
                self.dirty |= r.dirty;
                v
            }
            None => vec![(start, len)],
        };
        runs.into_iter().all(|(s, l)| self.give(s, l))
    }

    /// Gives the refcountbt the blocks its records need (from free space, owned by it
    /// in the rmapbt) or takes back those it no longer needs.
    fn size_refcount_tree(&mut self, sb: &Superblock) -> Option<()> {
        let (need, have) = match &self.refc {
            Some(r) if r.dirty => (
                sbtree::blocks_needed(sb, Tree::Refc, r.len()),
                r.blocks.len(),
            ),
            _ => return Some(()),
        };
        for _ in have..need {
            let b = self.best_fit(1)?;
            if !self.take(b, 1) {
                return None;
            }
            if let Some(m) = self.rmap.as_mut() {
                m.add(b, 1, OWN_REFC, 0);
            }
            self.refc.as_mut()?.blocks.push(b);
        }
        if have > need {
            let spare = self.refc.as_mut()?.blocks.split_off(need);
            for b in spare {
                if !self.give(b, 1) {
                    return None;
                }
                if let Some(m) = self.rmap.as_mut() {
                    if !m.remove(b, 1, OWN_REFC, 0) {
                        return None;
                    }
                }
            }
        }
        Some(())
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// `freeblks + flcount + btreeblks`: what this AG adds to the superblock's free count.
    pub fn sb_free(&self) -> i64 {
        let f = |o| i64::from(be32(&self.agf, o).unwrap_or(0));
        f(52) + f(48) + f(60)
    }

    /// Lays the trees out again and returns the AGF, AGFL and tree blocks to write, with
    /// byte offsets. `None` when the AG cannot find blocks for its own trees.
    pub fn commit(&mut self, sb: &Superblock) -> Option<Vec<(u64, Vec<u8>)>> {
        let agfl_cap = (usize::from(sb.sectsize) - agfl_hdr(sb)) / 4;
        self.size_refcount_tree(sb)?;
        let mut pool: Vec<u32>;
        let (nb, nc, nr);
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > 64 {
                return None;
            }
            let n = self.free.len();
            let (b, c) = (
                sbtree::blocks_needed(sb, Tree::Bno, n),
                sbtree::blocks_needed(sb, Tree::Cnt, n),
            );
            let r = self
                .rmap
                .as_ref()
                .map(|m| sbtree::blocks_needed(sb, Tree::Rmap, m.len()))
                .unwrap_or(0);
            let have = self.bno_blocks.len()
                + self.cnt_blocks.len()
                + self.rmap_blocks.len()
                + self.agfl.len();
            let need = b + c + r;
            if need > have {
                // Top the free list up from the end of the largest free extent.
                let (s, l) = self.largest()?;
                let k = ((need - have) as u32).min(l);
                let first = s + l - k;
                if !self.take(first, k) {
                    return None;
                }
                self.agfl.extend(first..first + k);
                if let Some(m) = self.rmap.as_mut() {
                    m.add(first, k, OWN_AG, 0);
                }
                continue;
            }
            if have - need > agfl_cap {
                // Too many spare blocks for the free list: give the surplus back.
                let extra = have - need - agfl_cap;
                let mut spare: Vec<u32> = self
                    .bno_blocks
                    .split_off(self.bno_blocks.len().min(b))
                    .into_iter()
                    .chain(self.cnt_blocks.split_off(self.cnt_blocks.len().min(c)))
                    .chain(self.rmap_blocks.split_off(self.rmap_blocks.len().min(r)))
                    .collect();
                spare.append(&mut self.agfl);
                for blk in spare.split_off(spare.len() - extra) {
                    if !self.give(blk, 1) {
                        return None;
                    }
                    if let Some(m) = self.rmap.as_mut() {
                        if !m.remove(blk, 1, OWN_AG, 0) {
                            return None;
                        }
                    }
                }
                self.agfl = spare;
                continue;
            }
            (nb, nc, nr) = (b, c, r);
            break;
        }
        // Each tree keeps what it can of its blocks; the rest come from or go to the pool.
        pool = Vec::new();
        let keep = |v: &mut Vec<u32>, n: usize, pool: &mut Vec<u32>| {
            if v.len() > n {
                pool.extend(v.split_off(n));
            }
        };
        keep(&mut self.bno_blocks, nb, &mut pool);
        keep(&mut self.cnt_blocks, nc, &mut pool);
        keep(&mut self.rmap_blocks, nr, &mut pool);
        pool.extend(self.agfl.drain(..).rev());
        let fill = |v: &mut Vec<u32>, n: usize, pool: &mut Vec<u32>| -> Option<()> {
            while v.len() < n {
                v.push(pool.pop()?);
            }
            Some(())
        };
        fill(&mut self.bno_blocks, nb, &mut pool)?;
        fill(&mut self.cnt_blocks, nc, &mut pool)?;
        fill(&mut self.rmap_blocks, nr, &mut pool)?;
        pool.reverse();
        self.agfl = pool;

        let mut writes = Vec::new();
        let at = |bno: u32| sbtree::agb_offset(sb, self.agno, bno);
        let mut bno_recs = Vec::with_capacity(self.free.len() * 8);
        for (&s, &l) in &self.free {
            bno_recs.extend_from_slice(&s.to_be_bytes());
            bno_recs.extend_from_slice(&l.to_be_bytes());
        }
        let mut by_size: Vec<(u32, u32)> = self.free.iter().map(|(&s, &l)| (l, s)).collect();
        by_size.sort_unstable();
        let mut cnt_recs = Vec::with_capacity(by_size.len() * 8);
        for &(l, s) in &by_size {
            cnt_recs.extend_from_slice(&s.to_be_bytes());
            cnt_recs.extend_from_slice(&l.to_be_bytes());
        }
        let (broot, blev, bblocks) =
            sbtree::build(sb, self.agno, Tree::Bno, &bno_recs, &self.bno_blocks)?;
        let (croot, clev, cblocks) =
            sbtree::build(sb, self.agno, Tree::Cnt, &cnt_recs, &self.cnt_blocks)?;
        put32(&mut self.agf, 16, broot);
        put32(&mut self.agf, 20, croot);
        put32(&mut self.agf, 28, blev);
        put32(&mut self.agf, 32, clev);
        for (b, data) in bblocks.into_iter().chain(cblocks) {
            writes.push((at(b)?, data));
        }
        let mut btreeblks = (nb - 1) + (nc - 1);
        if let Some(m) = &self.rmap {
            let (rroot, rlev, rblocks) =
                sbtree::build(sb, self.agno, Tree::Rmap, &m.encode(), &self.rmap_blocks)?;
            put32(&mut self.agf, 24, rroot);
            put32(&mut self.agf, 36, rlev);
            put32(&mut self.agf, 80, nr as u32);
            btreeblks += nr - 1;
            for (b, data) in rblocks {
                writes.push((at(b)?, data));
            }
        }
        if let Some(r) = self.refc.as_mut().filter(|r| r.dirty) {
            let (root, lev, blocks) =
                sbtree::build(sb, self.agno, Tree::Refc, &r.encode(), &r.blocks)?;
            put32(&mut self.agf, 88, root);
            put32(&mut self.agf, 92, lev);
            put32(&mut self.agf, 84, r.blocks.len() as u32);
            for (b, data) in blocks {
                writes.push((at(b)?, data));
            }
            r.dirty = false;
        }
        let count = self.agfl.len();
        put32(&mut self.agf, 40, 0);
        put32(
            &mut self.agf,
            44,
            if count == 0 {
                agfl_cap as u32 - 1
            } else {
                count as u32 - 1
            },
        );
        put32(&mut self.agf, 48, count as u32);
        let free = self.free_blocks() as u32;
        put32(&mut self.agf, 52, free);
        put32(&mut self.agf, 56, by_size.last().map(|x| x.0).unwrap_or(0));
        put32(&mut self.agf, 60, btreeblks as u32);
        let h = agfl_hdr(sb);
        for i in 0..agfl_cap {
            put32(
                &mut self.agfl_raw,
                h + i * 4,
                self.agfl.get(i).copied().unwrap_or(NULL_AGBLOCK),
            );
        }
        if sb.crc {
            set_crc(&mut self.agf, 216);
            set_crc(&mut self.agfl_raw, 32);
        }
        writes.push((self.agf_at, self.agf.clone()));
        writes.push((self.agfl_at, self.agfl_raw.clone()));
        self.dirty = false;
        Some(writes)
    }
}
