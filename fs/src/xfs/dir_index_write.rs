//! Encoding the hash indexes of leaf and node directories, whole, from the sorted
//! `(hash, address)` list of every entry and each data block's longest free region:
//! the one leaf block of a leaf directory (`xfs_dir2_leaf`, entries, best table and
//! tail), and for a node directory its leaf blocks (`leafn`), the da-btree nodes above
//! them and the free index blocks (`xfs_dir2_free`) at the 64 GiB offset. Written
//! without stale entries, so every index block is as compact as the kernel makes it.

use super::bytes::{put16, put32, put64, set_crc};
use super::superblock::Superblock;

const LEAF1_V4: u16 = 0xd2f1;
const LEAFN_V4: u16 = 0xd2ff;
const NODE_V4: u16 = 0xfebe;
const LEAF1_V5: u16 = 0x3df1;
const LEAFN_V5: u16 = 0x3dff;
const NODE_V5: u16 = 0x3ebe;
const FREE_V4: u32 = 0x5844_3246; // "XD2F"
const FREE_V5: u32 = 0x5844_4633; // "XDF3"
/// A data block that does not exist, in a best-free table.
pub(crate) const NULL_OFF: u16 = 0xffff;

/// Header bytes of leaf and node blocks (`xfs_da3_blkinfo` and counts).
fn da_hdr(sb: &Superblock) -> usize {
    if sb.crc {
        64
    } else {
        16
    }
}

fn free_hdr(sb: &Superblock) -> usize {
    if sb.crc {
        64
    } else {
        16
    }
}

/// Whether `nents` hash entries and `nbests` data blocks fit in one leaf block.
pub(crate) fn leaf1_fits(sb: &Superblock, bsize: usize, nents: usize, nbests: usize) -> bool {
    da_hdr(sb) + 8 * nents + 2 * nbests + 4 <= bsize
}

/// Hash entries per leafn block, and pointers per node block (both 8 bytes).
pub(crate) fn per_index_block(sb: &Superblock, bsize: usize) -> usize {
    (bsize - da_hdr(sb)) / 8
}

/// Data blocks one free index block covers.
pub(crate) fn per_free_block(sb: &Superblock, bsize: usize) -> usize {
    (bsize - free_hdr(sb)) / 2
}

/// Where a block sits and what links it: disk address (sectors), owner, siblings.
pub(crate) struct Place {
    pub daddr: u64,
    pub dir: u64,
    pub forw: u32,
    pub back: u32,
}

fn blkinfo(sb: &Superblock, b: &mut [u8], p: &Place, v4: u16, v5: u16) {
    put32(b, 0, p.forw);
    put32(b, 4, p.back);
    put16(b, 8, if sb.crc { v5 } else { v4 });
    if sb.crc {
        put64(b, 16, p.daddr);
        if let Some(u) = b.get_mut(32..48) {
            u.copy_from_slice(&sb.meta_uuid);
        }
        put64(b, 48, p.dir);
    }
}

fn seal(sb: &Superblock, b: &mut [u8]) {
    if sb.crc {
        set_crc(b, 12);
    }
}

fn put_pairs(b: &mut [u8], at: usize, ents: &[(u32, u32)]) {
    for (i, &(h, a)) in ents.iter().enumerate() {
        put32(b, at + i * 8, h);
        put32(b, at + i * 8 + 4, a);
    }
}

/// The leaf block of a leaf directory; `None` when it does not fit.
pub(crate) fn leaf1(
    sb: &Superblock,
    bsize: usize,
    p: &Place,
    ents: &[(u32, u32)],
    bests: &[u16],
) -> Option<Vec<u8>> {
    if !leaf1_fits(sb, bsize, ents.len(), bests.len()) {
        return None;
    }
    let h = da_hdr(sb);
    let mut b = vec![0u8; bsize];
    blkinfo(sb, &mut b, p, LEAF1_V4, LEAF1_V5);
    put16(&mut b, h - if sb.crc { 8 } else { 4 }, ents.len() as u16);
    put_pairs(&mut b, h, ents);
    let at = bsize - 4 - 2 * bests.len();
    for (i, &v) in bests.iter().enumerate() {
        put16(&mut b, at + 2 * i, v);
    }
    put32(&mut b, bsize - 4, bests.len() as u32);
    seal(sb, &mut b);
    Some(b)
}

/// One leaf block of a node directory; `None` when the entries do not fit.
pub(crate) fn leafn(
    sb: &Superblock,
    bsize: usize,
    p: &Place,
    ents: &[(u32, u32)],
) -> Option<Vec<u8>> {
    if ents.len() > per_index_block(sb, bsize) {
        return None;
    }
    let h = da_hdr(sb);
    let mut b = vec![0u8; bsize];
    blkinfo(sb, &mut b, p, LEAFN_V4, LEAFN_V5);
    put16(&mut b, h - if sb.crc { 8 } else { 4 }, ents.len() as u16);
    put_pairs(&mut b, h, ents);
    seal(sb, &mut b);
    Some(b)
}

/// A da-btree node of `level` (1: its children are leaf blocks) pointing at children
/// `(greatest hash below, block)`; `None` when they do not fit.
pub(crate) fn node(
    sb: &Superblock,
    bsize: usize,
    p: &Place,
    level: u16,
    kids: &[(u32, u32)],
) -> Option<Vec<u8>> {
    if kids.len() > per_index_block(sb, bsize) {
        return None;
    }
    let h = da_hdr(sb);
    let mut b = vec![0u8; bsize];
    blkinfo(sb, &mut b, p, NODE_V4, NODE_V5);
    let c = h - if sb.crc { 8 } else { 4 };
    put16(&mut b, c, kids.len() as u16);
    put16(&mut b, c + 2, level);
    put_pairs(&mut b, h, kids);
    seal(sb, &mut b);
    Some(b)
}

/// A free index block covering data blocks from `firstdb`, whose longest free regions
/// are `bests` ([`NULL_OFF`] for a block that does not exist); `None` when too many.
pub(crate) fn free(
    sb: &Superblock,
    bsize: usize,
    p: &Place,
    firstdb: u32,
    bests: &[u16],
) -> Option<Vec<u8>> {
    if bests.len() > per_free_block(sb, bsize) {
        return None;
    }
    let nvalid = bests
        .iter()
        .rposition(|&v| v != NULL_OFF)
        .map_or(0, |i| i + 1);
    let nused = bests.iter().filter(|&&v| v != NULL_OFF).count();
    let mut b = vec![0u8; bsize];
    let h = free_hdr(sb);
    if sb.crc {
        put32(&mut b, 0, FREE_V5);
        put64(&mut b, 8, p.daddr);
        b.get_mut(24..40)?.copy_from_slice(&sb.meta_uuid);
        put64(&mut b, 40, p.dir);
    } else {
        put32(&mut b, 0, FREE_V4);
    }
    put32(&mut b, h - 16 + if sb.crc { 0 } else { 4 }, firstdb);
    put32(&mut b, h - 12 + if sb.crc { 0 } else { 4 }, nvalid as u32);
    put32(&mut b, h - 8 + if sb.crc { 0 } else { 4 }, nused as u32);
    for (i, &v) in bests.iter().take(nvalid).enumerate() {
        put16(&mut b, h + 2 * i, v);
    }
    if sb.crc {
        set_crc(&mut b, 4);
    }
    Some(b)
}

/// Splits the sorted hash entries into `n` leaf blocks of at most `cap` entries each,
/// as evenly as it can, never parting entries of one hash (a lookup descends to the
/// first leaf whose greatest hash is not below the one it seeks). Returns each block's
/// end index; `None` when no such split exists.
pub(crate) fn split_leaves(ents: &[(u32, u32)], n: usize, cap: usize) -> Option<Vec<usize>> {
    let total = ents.len();
    if n == 0 || total < n {
        return None;
    }
    let hash = |i: usize| ents.get(i).map(|e| e.0);
    let mut ends = Vec::with_capacity(n);
    let mut s = 0;
    for left in (1..=n).rev() {
        if left == 1 {
            if total - s > cap || total == s {
                return None;
            }
            ends.push(total);
            break;
        }
        let ideal = (total - s).div_ceil(left).min(cap);
        let mut e = s + ideal;
        // Forward to the end of a run of one hash, or back to its start.
        let mut f = e;
        while f < total && hash(f) == hash(f - 1) {
            f += 1;
        }
        if f - s <= cap && total - f >= left - 1 {
            e = f;
        } else {
            while e > s + 1 && hash(e) == hash(e - 1) {
                e -= 1;
            }
            if hash(e) == hash(e - 1) {
                return None;
            }
        }
        if total - e < left - 1 {
            return None;
        }
        ends.push(e);
        s = e;
    }
    Some(ends)
}

/// Node blocks per level (bottom up) above `leaves` leaf blocks; empty for one leaf.
pub(crate) fn node_levels(leaves: usize, per: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut n = leaves;
    while n > 1 {
        n = n.div_ceil(per.max(2));
        out.push(n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        let ents: Vec<(u32, u32)> = [1, 2, 3, 3, 3, 4, 5, 6]
            .iter()
            .enumerate()
            .map(|(i, &h)| (h, i as u32))
            .collect();
        assert_eq!(split_leaves(&ents, 1, 8), Some(vec![8]));
        assert_eq!(split_leaves(&ents, 1, 7), None);
        // The run of 3s stays in one block.
        assert_eq!(split_leaves(&ents, 2, 5), Some(vec![5, 8]));
        assert_eq!(split_leaves(&ents, 3, 3), Some(vec![2, 5, 8]));
        assert_eq!(split_leaves(&ents, 4, 2), None);
        assert_eq!(split_leaves(&ents, 9, 8), None);
        assert_eq!(node_levels(1, 500), Vec::<usize>::new());
        assert_eq!(node_levels(2, 500), vec![1]);
        assert_eq!(node_levels(1001, 500), vec![3, 1]);
    }
}
