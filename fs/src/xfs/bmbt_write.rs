//! Writing a fork's block map: the 16-byte extent records, packed in the inode while
//! they fit (`extents` format), else a block-map B+tree laid out whole over blocks the
//! caller allocated, its root in the inode (`btree` format). Leaves are filled evenly so
//! every block but the root is at least half full.

use super::bmbt::Extent;
use super::bytes::{put16, put32, put64, set_crc};
use super::superblock::Superblock;

/// Longest extent one record holds (21 bits of length).
pub(crate) const MAX_EXTLEN: u64 = (1 << 21) - 1;
pub(crate) const NULL_FSBLOCK: u64 = u64::MAX;

/// Tree blocks to write: block number and bytes.
type Blocks = Vec<(u64, Vec<u8>)>;

pub(crate) fn encode(e: &Extent) -> [u8; 16] {
    let l0 = (u64::from(e.unwritten) << 63) | ((e.off & ((1 << 54) - 1)) << 9) | (e.block >> 43);
    let l1 = ((e.block & ((1 << 43) - 1)) << 21) | (e.len & MAX_EXTLEN);
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&l0.to_be_bytes());
    r[8..].copy_from_slice(&l1.to_be_bytes());
    r
}

fn hdr(sb: &Superblock) -> usize {
    if sb.crc {
        72
    } else {
        24
    }
}

fn per_block(sb: &Superblock) -> usize {
    (sb.blocksize as usize - hdr(sb)) / 16
}

/// Blocks per level below the inode root, leaves first; empty when the records fit in
/// the inode (`dfork` bytes).
fn layout(sb: &Superblock, nrecs: usize, dfork: usize) -> Vec<usize> {
    if nrecs <= dfork / 16 {
        return Vec::new();
    }
    let root_max = (dfork.saturating_sub(4) / 16).max(1);
    let per = per_block(sb).max(2);
    let mut levels = vec![nrecs.div_ceil(per)];
    while let Some(&n) = levels.last().filter(|&&n| n > root_max) {
        levels.push(n.div_ceil(per));
    }
    levels
}

/// Tree blocks `nrecs` extents need beyond a `dfork`-byte inode fork (0: they fit).
pub(crate) fn blocks_needed(sb: &Superblock, nrecs: usize, dfork: usize) -> usize {
    layout(sb, nrecs, dfork).iter().sum()
}

/// The fork's bytes (records or tree root) and the tree blocks to write, for the
/// extents `recs` of inode `ino` over the `blocks` allocated for the tree (exactly
/// [`blocks_needed`], AG-encoded block numbers).
pub(crate) fn build(
    sb: &Superblock,
    ino: u64,
    recs: &[Extent],
    blocks: &[u64],
    dfork: usize,
) -> Option<(Vec<u8>, Blocks)> {
    let shape = layout(sb, recs.len(), dfork);
    if blocks.len() != shape.iter().sum::<usize>() {
        return None;
    }
    if shape.is_empty() {
        return Some((recs.iter().flat_map(encode).collect(), Vec::new()));
    }
    let h = hdr(sb);
    let per = per_block(sb);
    let mut out = Vec::new();
    let mut next = blocks.iter().copied();
    // (first file offset, block) of each block of the level just built.
    let mut below: Vec<(u64, u64)> = Vec::new();
    for (lvl, &n) in shape.iter().enumerate() {
        let items = if lvl == 0 { recs.len() } else { below.len() };
        let mine: Vec<u64> = next.by_ref().take(n).collect();
        let mut keys = Vec::with_capacity(n);
        let mut start = 0;
        for (i, &fsb) in mine.iter().enumerate() {
            let cnt = items / n + usize::from(i < items % n);
            let mut b = vec![0u8; sb.blocksize as usize];
            put32(&mut b, 0, if sb.crc { 0x424d_4133 } else { 0x424d_4150 });
            put16(&mut b, 4, lvl as u16);
            put16(&mut b, 6, cnt as u16);
            put64(&mut b, 8, if i == 0 { NULL_FSBLOCK } else { mine[i - 1] });
            put64(&mut b, 16, mine.get(i + 1).copied().unwrap_or(NULL_FSBLOCK));
            let first;
            if lvl == 0 {
                let part = recs.get(start..start + cnt)?;
                first = part.first()?.off;
                for (j, e) in part.iter().enumerate() {
                    b.get_mut(h + j * 16..h + j * 16 + 16)?
                        .copy_from_slice(&encode(e));
                }
            } else {
                let part = below.get(start..start + cnt)?;
                first = part.first()?.0;
                for (j, &(k, p)) in part.iter().enumerate() {
                    put64(&mut b, h + j * 8, k);
                    put64(&mut b, h + per * 8 + j * 8, p);
                }
            }
            if sb.crc {
                let daddr = sb.fsb_offset(fsb)? >> 9;
                put64(&mut b, 24, daddr);
                b.get_mut(40..56)?.copy_from_slice(&sb.meta_uuid);
                put64(&mut b, 56, ino);
                set_crc(&mut b, 64);
            }
            keys.push((first, fsb));
            out.push((fsb, b));
            start += cnt;
        }
        below = keys;
    }
    let root_max = (dfork - 4) / 16;
    let mut root = vec![0u8; dfork];
    put16(&mut root, 0, shape.len() as u16);
    put16(&mut root, 2, below.len() as u16);
    for (j, &(k, p)) in below.iter().enumerate() {
        put64(&mut root, 4 + j * 8, k);
        put64(&mut root, 4 + root_max * 8 + j * 8, p);
    }
    Some((root, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(&0x5846_5342u32.to_be_bytes());
        b[4..8].copy_from_slice(&4096u32.to_be_bytes());
        b[8..16].copy_from_slice(&4096u64.to_be_bytes());
        b[56..64].copy_from_slice(&128u64.to_be_bytes());
        b[84..88].copy_from_slice(&1024u32.to_be_bytes());
        b[88..92].copy_from_slice(&4u32.to_be_bytes());
        b[100..102].copy_from_slice(&(0xb4b4u16 | 0x2000).to_be_bytes());
        b[102..104].copy_from_slice(&512u16.to_be_bytes());
        b[104..106].copy_from_slice(&256u16.to_be_bytes());
        b[106..108].copy_from_slice(&16u16.to_be_bytes());
        b[120] = 12;
        b[121] = 9;
        b[122] = 8;
        b[123] = 4;
        b[124] = 10;
        let sb = Superblock::parse(&b).unwrap();
        // 156-byte v4 fork: 9 records inline; 254 per leaf.
        assert_eq!(blocks_needed(&sb, 9, 156), 0);
        assert_eq!(blocks_needed(&sb, 10, 156), 1);
        assert_eq!(blocks_needed(&sb, 254 * 9, 156), 9);
        assert_eq!(blocks_needed(&sb, 254 * 9 + 1, 156), 10 + 1);
        let e = Extent {
            off: 3,
            block: 0x1_0000_0003,
            len: 9,
            unwritten: true,
        };
        let r = encode(&e);
        let back = super::super::bmbt::decode(&r);
        assert_eq!(back, Some(e));
    }
}
