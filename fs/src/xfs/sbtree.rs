//! The per-AG B+trees with 32-bit AG-relative pointers ("short" btrees): free space by
//! block (bnobt) and by size (cntbt), inodes (inobt, finobt), reverse mappings (rmapbt)
//! and reference counts (refcountbt).
//!
//! The writer never edits these trees record by record. It reads a whole tree into
//! memory, changes the record list, and lays the tree out again over the blocks it
//! already had (plus or minus the few the new record count needs): one code path for
//! every tree and every shape, and trees that are always balanced with every non-root
//! block at least half full, as `xfs_repair` wants them. An AG's trees are small (a
//! 4 KiB leaf holds 168 to 505 records), so this costs a few block writes per change.

use super::bytes::{be16, be32, be64, crc_ok, put16, put32, put64, set_crc};
use super::superblock::Superblock;
use super::volume::Volume;
use crate::error::Result;
use std::cmp::Ordering;

pub(crate) const NULL_AGBLOCK: u32 = u32::MAX;

/// A laid-out tree: root block, levels, and each block's number and bytes.
type Built = (u32, u32, Vec<(u32, Vec<u8>)>);
/// Deeper than any real AG tree (a 1 TiB AG of single-block free extents needs 5 levels).
const MAX_LEVELS: u32 = 9;
/// More tree blocks than any AG of a real filesystem has (4 GiB of one tree at 4 KiB).
const MAX_BLOCKS: usize = 1 << 20;

/// Which tree, with its on-disk shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tree {
    Bno,
    Cnt,
    Ino,
    Fino,
    Rmap,
    Refc,
}

impl Tree {
    fn magic(self, crc: bool) -> u32 {
        match (self, crc) {
            (Tree::Bno, false) => 0x4142_5442,
            (Tree::Bno, true) => 0x4142_3342,
            (Tree::Cnt, false) => 0x4142_5443,
            (Tree::Cnt, true) => 0x4142_3343,
            (Tree::Ino, false) => 0x4941_4254,
            (Tree::Ino, true) => 0x4941_4233,
            (Tree::Fino, false) => 0x4649_4254,
            (Tree::Fino, true) => 0x4649_4233,
            (Tree::Rmap, _) => 0x524d_4233,
            (Tree::Refc, _) => 0x5233_4643,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tree::Bno => "free space btree (by block)",
            Tree::Cnt => "free space btree (by size)",
            Tree::Ino => "inode btree",
            Tree::Fino => "free inode btree",
            Tree::Rmap => "reverse mapping btree",
            Tree::Refc => "reference count btree",
        }
    }

    pub fn rec_len(self) -> usize {
        match self {
            Tree::Bno | Tree::Cnt => 8,
            Tree::Ino | Tree::Fino => 16,
            Tree::Rmap => 24,
            Tree::Refc => 12,
        }
    }

    /// Bytes of one node entry's keys (the rmapbt keeps a low and a high key).
    fn keys_len(self) -> usize {
        match self {
            Tree::Bno | Tree::Cnt => 8,
            Tree::Ino | Tree::Fino | Tree::Refc => 4,
            Tree::Rmap => 40,
        }
    }
}

pub(crate) fn hdr_len(sb: &Superblock) -> usize {
    if sb.crc {
        56
    } else {
        16
    }
}

fn block_len(sb: &Superblock) -> usize {
    sb.blocksize as usize
}

pub(crate) fn leaf_max(sb: &Superblock, t: Tree) -> usize {
    (block_len(sb) - hdr_len(sb)) / t.rec_len()
}

fn node_max(sb: &Superblock, t: Tree) -> usize {
    (block_len(sb) - hdr_len(sb)) / (t.keys_len() + 4)
}

/// Blocks per level, leaves first, of a tree of `nrecs` records laid out by [`build`].
fn layout(sb: &Superblock, t: Tree, nrecs: usize) -> Vec<usize> {
    let mut levels = vec![nrecs.div_ceil(leaf_max(sb, t)).max(1)];
    let nmax = node_max(sb, t).max(2);
    while let Some(&n) = levels.last().filter(|&&n| n > 1) {
        levels.push(n.div_ceil(nmax));
    }
    levels
}

/// How many blocks a tree of `nrecs` records takes.
pub(crate) fn blocks_needed(sb: &Superblock, t: Tree, nrecs: usize) -> usize {
    layout(sb, t, nrecs).iter().sum()
}

/// A whole tree as read: its records (each `rec_len` bytes, concatenated, in key order)
/// and the blocks it occupies.
pub(crate) struct Contents {
    pub recs: Vec<u8>,
    pub blocks: Vec<u32>,
}

/// Reads the tree of `t` rooted at AG block `root` with `levels` levels in AG `agno`.
pub(crate) fn read(vol: &Volume, agno: u32, t: Tree, root: u32, levels: u32) -> Result<Contents> {
    let sb = &vol.sb;
    let at0 = ag_byte(sb, agno, root);
    if levels == 0 || levels > MAX_LEVELS {
        return Err(vol.corrupt(
            t.name(),
            at0,
            format!("AG {agno} says the tree has {levels} levels"),
        ));
    }
    let mut out = Contents {
        recs: Vec::new(),
        blocks: Vec::new(),
    };
    let mut level_blocks = vec![root];
    let mut seen = std::collections::HashSet::new();
    for lvl in (0..levels).rev() {
        let mut next = Vec::new();
        for &bno in &level_blocks {
            if out.blocks.len() >= MAX_BLOCKS || !seen.insert(bno) {
                return Err(vol.corrupt(
                    t.name(),
                    at0,
                    format!("AG {agno} block {bno} is reached twice, or the tree is too big"),
                ));
            }
            let b = read_block(vol, agno, t, bno, lvl)?;
            out.blocks.push(bno);
            let n = usize::from(be16(&b, 6).unwrap_or(0));
            let h = hdr_len(sb);
            if lvl == 0 {
                let len = n * t.rec_len();
                let recs = b
                    .get(h..h + len)
                    .ok_or_else(|| vol.corrupt(t.name(), ag_byte(sb, agno, bno), "short leaf"))?;
                out.recs.extend_from_slice(recs);
            } else {
                let pbase = h + node_max(sb, t) * t.keys_len();
                for i in 0..n {
                    let p = be32(&b, pbase + i * 4).unwrap_or(NULL_AGBLOCK);
                    next.push(p);
                }
            }
        }
        level_blocks = next;
    }
    Ok(out)
}

fn ag_byte(sb: &Superblock, agno: u32, agbno: u32) -> u64 {
    (u64::from(agno) * u64::from(sb.agblocks) + u64::from(agbno)) << sb.blocklog
}

/// Byte offset of AG block `agbno` of AG `agno`, if inside the filesystem.
pub(crate) fn agb_offset(sb: &Superblock, agno: u32, agbno: u32) -> Option<u64> {
    (agno < sb.agcount && agbno < sb.agblocks)
        .then(|| ag_byte(sb, agno, agbno))
        .filter(|&o| o < sb.dblocks << sb.blocklog)
}

fn read_block(vol: &Volume, agno: u32, t: Tree, bno: u32, level: u32) -> Result<Vec<u8>> {
    let sb = &vol.sb;
    let at = agb_offset(sb, agno, bno).ok_or_else(|| {
        vol.corrupt(
            t.name(),
            0,
            format!("AG {agno} block {bno} lies outside the AG"),
        )
    })?;
    let b = vol.read(at, block_len(sb))?;
    let c = |d: String| vol.corrupt(t.name(), at, d);
    if be32(&b, 0) != Some(t.magic(sb.crc)) {
        return Err(c("bad magic".into()));
    }
    if sb.crc {
        if !crc_ok(&b, 52) {
            return Err(c("CRC mismatch".into()));
        }
        if be32(&b, 48) != Some(agno) {
            return Err(c("owned by another AG".into()));
        }
        if b.get(32..48) != Some(&sb.meta_uuid[..]) {
            return Err(c("belongs to another filesystem (UUID)".into()));
        }
    }
    if be16(&b, 4).map(u32::from) != Some(level) {
        return Err(c(format!("level {:?}, expected {level}", be16(&b, 4))));
    }
    let n = usize::from(be16(&b, 6).unwrap_or(0));
    let max = if level == 0 {
        leaf_max(sb, t)
    } else {
        node_max(sb, t)
    };
    if n > max || (level > 0 && n == 0) {
        return Err(c(format!("{n} records (at most {max})")));
    }
    Ok(b)
}

/// The low and high keys of a record (equal except for the rmapbt, whose records cover
/// ranges of blocks and file offsets that may overlap).
fn rec_keys(t: Tree, rec: &[u8]) -> (Vec<u8>, Vec<u8>) {
    match t {
        Tree::Bno | Tree::Cnt => {
            let k = rec.get(..8).unwrap_or(&[]).to_vec();
            (k.clone(), k)
        }
        Tree::Ino | Tree::Fino | Tree::Refc => {
            let k = rec.get(..4).unwrap_or(&[]).to_vec();
            (k.clone(), k)
        }
        Tree::Rmap => {
            let r = super::rmap::Rmap::decode(rec).unwrap_or_default();
            (r.low_key(), r.high_key())
        }
    }
}

/// Orders rmapbt keys as the kernel does: block, owner, then offset without its flags.
fn key_cmp(t: Tree, a: &[u8], b: &[u8]) -> Ordering {
    if t == Tree::Rmap {
        let f = |k: &[u8]| {
            (
                be32(k, 0).unwrap_or(0),
                be64(k, 4).unwrap_or(0),
                be64(k, 12).unwrap_or(0) & super::rmap::OFF_MASK,
            )
        };
        f(a).cmp(&f(b))
    } else {
        a.cmp(b)
    }
}

/// Lays out `recs` (whole records, in key order) as tree `t` of AG `agno` in the blocks
/// `blocks` (exactly [`blocks_needed`] of them, leaves first in the order given).
/// Returns the root block, the number of levels and every block's bytes.
pub(crate) fn build(
    sb: &Superblock,
    agno: u32,
    t: Tree,
    recs: &[u8],
    blocks: &[u32],
) -> Option<Built> {
    let rl = t.rec_len();
    let nrecs = recs.len() / rl;
    let shape = layout(sb, t, nrecs);
    if blocks.len() != shape.iter().sum::<usize>() {
        return None;
    }
    let h = hdr_len(sb);
    let mut out = Vec::with_capacity(blocks.len());
    let mut next_block = blocks.iter().copied();
    // (low key, high key, block) of each block of the level just built.
    let mut below: Vec<(Vec<u8>, Vec<u8>, u32)> = Vec::new();
    for (lvl, &n) in shape.iter().enumerate() {
        let items = if lvl == 0 { nrecs } else { below.len() };
        let mine: Vec<u32> = next_block.by_ref().take(n).collect();
        let mut level_keys = Vec::with_capacity(n);
        let mut start = 0;
        for (i, &bno) in mine.iter().enumerate() {
            let cnt = items / n + usize::from(i < items % n);
            let mut b = vec![0u8; block_len(sb)];
            put32(&mut b, 0, t.magic(sb.crc));
            put16(&mut b, 4, lvl as u16);
            put16(&mut b, 6, cnt as u16);
            let left = if i == 0 { NULL_AGBLOCK } else { mine[i - 1] };
            let right = mine.get(i + 1).copied().unwrap_or(NULL_AGBLOCK);
            put32(&mut b, 8, left);
            put32(&mut b, 12, right);
            let (lo, hi);
            if lvl == 0 {
                let part = recs.get(start * rl..(start + cnt) * rl)?;
                b.get_mut(h..h + part.len())?.copy_from_slice(part);
                let mut keys = part.chunks(rl).map(|r| rec_keys(t, r));
                let first = keys.next();
                lo = first.as_ref().map(|k| k.0.clone()).unwrap_or_default();
                hi = keys.fold(first.map(|k| k.1).unwrap_or_default(), |m, k| {
                    if key_cmp(t, &k.1, &m) == Ordering::Greater {
                        k.1
                    } else {
                        m
                    }
                });
            } else {
                let part = below.get(start..start + cnt)?;
                let kl = t.keys_len();
                let pbase = h + node_max(sb, t) * kl;
                for (j, (klo, khi, p)) in part.iter().enumerate() {
                    let ko = h + j * kl;
                    if t == Tree::Rmap {
                        b.get_mut(ko..ko + 20)?.copy_from_slice(klo);
                        b.get_mut(ko + 20..ko + 40)?.copy_from_slice(khi);
                    } else {
                        b.get_mut(ko..ko + kl)?.copy_from_slice(klo);
                    }
                    put32(&mut b, pbase + j * 4, *p);
                }
                lo = part.first().map(|k| k.0.clone()).unwrap_or_default();
                hi = part
                    .iter()
                    .map(|k| k.1.clone())
                    .reduce(|m, k| {
                        if key_cmp(t, &k, &m) == Ordering::Greater {
                            k
                        } else {
                            m
                        }
                    })
                    .unwrap_or_default();
            }
            if sb.crc {
                let daddr = ag_byte(sb, agno, bno) >> 9;
                put64(&mut b, 16, daddr);
                b.get_mut(32..48)?.copy_from_slice(&sb.meta_uuid);
                put32(&mut b, 48, agno);
                set_crc(&mut b, 52);
            }
            level_keys.push((lo, hi, bno));
            out.push((bno, b));
            start += cnt;
        }
        below = level_keys;
    }
    let root = below.first()?.2;
    Some((root, shape.len() as u32, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(bs: u32) -> Superblock {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(&0x5846_5342u32.to_be_bytes());
        b[4..8].copy_from_slice(&bs.to_be_bytes());
        b[8..16].copy_from_slice(&4096u64.to_be_bytes());
        b[56..64].copy_from_slice(&128u64.to_be_bytes());
        b[84..88].copy_from_slice(&1024u32.to_be_bytes());
        b[88..92].copy_from_slice(&4u32.to_be_bytes());
        b[100..102].copy_from_slice(&(0xb4b4u16 | 0x2000).to_be_bytes());
        b[102..104].copy_from_slice(&512u16.to_be_bytes());
        b[104..106].copy_from_slice(&256u16.to_be_bytes());
        b[106..108].copy_from_slice(&((bs / 256) as u16).to_be_bytes());
        b[120] = bs.trailing_zeros() as u8;
        b[121] = 9;
        b[122] = 8;
        b[123] = (bs.trailing_zeros() - 8) as u8;
        b[124] = 10;
        Superblock::parse(&b).unwrap()
    }

    #[test]
    fn layouts_are_balanced() {
        let s = sb(1024);
        // 1 KiB v4 blocks: 126 free-space records a leaf, 126 pointers a node.
        assert_eq!(leaf_max(&s, Tree::Bno), 126);
        assert_eq!(layout(&s, Tree::Bno, 0), vec![1]);
        assert_eq!(layout(&s, Tree::Bno, 126), vec![1]);
        assert_eq!(layout(&s, Tree::Bno, 127), vec![2, 1]);
        // 127 leaves under two nodes of up to 84 pointers, under a root.
        assert_eq!(blocks_needed(&s, Tree::Bno, 126 * 127), 127 + 2 + 1);
        let recs: Vec<u8> = (0..300u32)
            .flat_map(|i| [(i * 2).to_be_bytes(), 1u32.to_be_bytes()].concat())
            .collect();
        let blocks: Vec<u32> = (10..14).collect();
        let (root, levels, out) = build(&s, 0, Tree::Bno, &recs, &blocks).unwrap();
        assert_eq!((root, levels, out.len()), (13, 2, 4));
        // Three leaves of 100; every leaf at least half full.
        for (_, b) in &out[..3] {
            assert_eq!(be16(b, 6), Some(100));
        }
        assert_eq!(be32(&out[0].1, 12), Some(11));
        assert_eq!(be32(&out[2].1, 8), Some(11));
        assert!(build(&s, 0, Tree::Bno, &recs, &blocks[..3]).is_none());
    }
}
