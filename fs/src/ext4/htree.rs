//! Hashed (htree) directories: the index blocks the writer must recognise. The leaves are
//! ordinary directory blocks; the root (logical block 0, after "." and "..") and internal
//! nodes (a fake empty entry spanning the block) hold (hash, block) pairs.
//!
//! Inserting a name puts it in the leaf its hash selects (`dx_hash`); a full leaf is split
//! in two by hash, the upper half going to a new block with an index entry after its
//! sibling's. A full index block above gets room first: a full root over leaves gets a
//! level (its entries move to a new node), a full node is split with an entry in the block
//! above. When that is not possible either (or the hash is unknown), the writer drops the
//! index instead: the root becomes a plain "."/".." block, nodes become empty
//! blocks, and the inode loses its INDEX flag. e2fsck accepts such a directory as a linear
//! one (and `e2fsck -D` may index it again). Removals and in-place replacements keep the
//! index, since they never move a name between leaves.

use super::csum::crc32c;
use super::le::*;

/// Index levels below the root the kernel allows (3 with large_dir).
const MAX_LEVELS: u8 = 3;

pub struct Root {
    pub levels: u8,
    /// Offset of the count/limit header.
    pub count_offset: usize,
}

pub fn parse_root(b: &[u8]) -> Result<Root, String> {
    let info_len = u8_at(b, 0x1D) as usize;
    let levels = u8_at(b, 0x1E);
    if u32_at(b, 0x18) != 0 || info_len != 8 || levels >= MAX_LEVELS {
        return Err(format!(
            "htree root has info length {info_len} and {levels} levels"
        ));
    }
    Ok(Root {
        levels,
        count_offset: 0x18 + info_len,
    })
}

/// (count, limit) and the child logical blocks of an index node whose count/limit header
/// is at `co`.
pub fn children(b: &[u8], co: usize) -> Result<Vec<u32>, String> {
    let limit = u16_at(b, co) as usize;
    let count = u16_at(b, co + 2) as usize;
    if count > limit || co + limit * 8 > b.len() {
        return Err(format!("htree node holds {count} of {limit} entries"));
    }
    Ok((0..count).map(|i| u32_at(b, co + i * 8 + 4)).collect())
}

/// Logical blocks of every index node under the root, found by walking the index;
/// `read` gives a directory block by logical number.
pub fn index_nodes(
    root: &[u8],
    read: &mut dyn FnMut(u32) -> Result<Vec<u8>, String>,
) -> Result<Vec<u32>, String> {
    let r = parse_root(root)?;
    let mut nodes = Vec::new();
    let mut level = children(root, r.count_offset)?;
    for _ in 0..r.levels {
        let mut next = Vec::new();
        for &n in &level {
            if n == 0 || nodes.contains(&n) {
                return Err(format!(
                    "htree index points at block {n} twice or at block 0"
                ));
            }
            let b = read(n)?;
            nodes.push(n);
            next.extend(children(&b, 8)?);
        }
        level = next;
    }
    Ok(nodes)
}

/// One index block on the way from the root to a leaf.
#[derive(Debug, Clone, Copy)]
pub struct Level {
    /// Logical block of the index block (0 for the root).
    pub logical: u32,
    pub count_offset: usize,
    /// The entry followed.
    pub pos: usize,
    pub count: usize,
    pub limit: usize,
    /// Hash bounds of the followed entry: [low, high), high None at the end.
    pub low: u32,
    pub high: Option<u32>,
}

fn entry_hash(b: &[u8], co: usize, i: usize) -> u32 {
    if i == 0 {
        0
    } else {
        u32_at(b, co + i * 8)
    }
}

fn level_in(b: &[u8], logical: u32, co: usize, hash: u32) -> Result<(Level, u32), String> {
    let limit = u16_at(b, co) as usize;
    let count = u16_at(b, co + 2) as usize;
    if count == 0 || count > limit || co + limit * 8 > b.len() {
        return Err(format!(
            "htree node {logical} holds {count} of {limit} entries"
        ));
    }
    let mut pos = 0;
    for i in 1..count {
        if entry_hash(b, co, i) <= hash {
            pos = i;
        } else {
            break;
        }
    }
    let high = (pos + 1 < count).then(|| entry_hash(b, co, pos + 1));
    let l = Level {
        logical,
        count_offset: co,
        pos,
        count,
        limit,
        low: entry_hash(b, co, pos),
        high,
    };
    Ok((l, u32_at(b, co + pos * 8 + 4)))
}

/// The index blocks from the root down, and the leaf (logical block) for `hash`.
pub fn walk(
    root: &[u8],
    hash: u32,
    read: &mut dyn FnMut(u32) -> Result<Vec<u8>, String>,
) -> Result<(Vec<Level>, u32), String> {
    let r = parse_root(root)?;
    let (l, mut next) = level_in(root, 0, r.count_offset, hash)?;
    let mut path = vec![l];
    for _ in 0..r.levels {
        if next == 0 || path.iter().any(|x| x.logical == next) {
            return Err(format!("htree index points at block {next} again"));
        }
        let b = read(next)?;
        let (l, n) = level_in(&b, next, 8, hash)?;
        path.push(l);
        next = n;
    }
    if next == 0 {
        return Err("htree leaf pointer to block 0".into());
    }
    Ok((path, next))
}

/// Adds (hash, logical) after entry `pos` of the index block `b` whose header is at `co`.
pub fn insert_entry(b: &mut [u8], co: usize, pos: usize, hash: u32, logical: u32) {
    let count = u16_at(b, co + 2) as usize;
    let at = co + (pos + 1) * 8;
    let end = co + count * 8;
    if end + 8 > b.len() || at > end {
        return;
    }
    b.copy_within(at..end, at + 8);
    put_u32(b, at, hash);
    put_u32(b, at + 4, logical);
    put_u16(b, co + 2, count as u16 + 1);
}

/// Where to split a full leaf's entries, sorted by hash with their sizes: (index of the
/// first entry moving to the new block, hash for the new index entry), such that both
/// halves fit in `usable` bytes and the new hash lies strictly inside (low, high).
pub fn split_point(
    items: &[(u32, usize)],
    usable: usize,
    low: u32,
    high: Option<u32>,
) -> Option<(usize, u32)> {
    let total: usize = items.iter().map(|x| x.1).sum();
    let mut left = 0usize;
    let mut best: Option<(usize, u32, usize)> = None;
    for k in 1..items.len() {
        left += items[k - 1].1;
        let right = total - left;
        if left > usable || right > usable {
            continue;
        }
        let cont = items[k].0 == items[k - 1].0;
        let h = items[k].0 | u32::from(cont);
        if h <= low || high.is_some_and(|x| h >= x) {
            continue;
        }
        // A clean boundary (no hash shared across it) wins; then balance.
        let score = left.abs_diff(right) + if cont { usable * 4 } else { 0 };
        if best.is_none_or(|(_, _, s)| score < s) {
            best = Some((k, h, score));
        }
    }
    best.map(|(k, h, _)| (k, h))
}

/// Recomputes the checksum in a dx tail (metadata_csum) of a root or node block.
pub fn set_dx_csum(b: &mut [u8], co: usize, seed: u32) {
    let limit = u16_at(b, co) as usize;
    let count = u16_at(b, co + 2) as usize;
    let tail = co + limit * 8;
    if tail + 8 > b.len() || count > limit {
        return;
    }
    let mut c = crc32c(seed, &b[..co + count * 8]);
    c = crc32c(c, &b[tail..tail + 4]);
    // The checksum field itself counts as zero.
    c = crc32c(c, &[0; 4]);
    put_u32(b, tail + 4, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_prefer_clean_balanced_boundaries() {
        let items = [(10, 100), (20, 100), (20, 100), (30, 100)];
        assert_eq!(split_point(&items, 300, 0, None), Some((1, 20)));
        assert_eq!(split_point(&items, 300, 20, Some(40)), Some((3, 30)));
        assert_eq!(split_point(&items, 300, 0, Some(20)), None);
        assert_eq!(
            split_point(&[(5, 100), (5, 100)], 100, 0, None),
            Some((1, 5 | 1))
        );
        assert_eq!(split_point(&[(5, 300)], 1000, 0, None), None);
    }

    #[test]
    fn index_entries_insert_in_order() {
        let mut b = vec![0u8; 64];
        put_u16(&mut b, 8, 6);
        put_u16(&mut b, 10, 2);
        put_u32(&mut b, 12, 1);
        put_u32(&mut b, 16, 100);
        put_u32(&mut b, 20, 2);
        insert_entry(&mut b, 8, 0, 50, 3);
        assert_eq!(u16_at(&b, 10), 3);
        assert_eq!((u32_at(&b, 16), u32_at(&b, 20)), (50, 3));
        assert_eq!((u32_at(&b, 24), u32_at(&b, 28)), (100, 2));
        let (l, leaf) = level_in(&b, 7, 8, 60).unwrap();
        assert_eq!((l.pos, leaf, l.low, l.high), (1, 3, 50, Some(100)));
    }

    #[test]
    fn hostile_roots_are_errors() {
        let mut b = vec![0u8; 1024];
        put_u8(&mut b, 0x1D, 8);
        put_u8(&mut b, 0x1E, 9);
        assert!(parse_root(&b).is_err());
        put_u8(&mut b, 0x1E, 1);
        put_u16(&mut b, 0x20, 1);
        put_u16(&mut b, 0x22, 1);
        put_u32(&mut b, 0x24, 1);
        // A node that points back at itself is read once and then refused.
        let node = {
            let mut n = vec![0u8; 1024];
            put_u16(&mut n, 8, 2);
            put_u16(&mut n, 10, 1);
            put_u32(&mut n, 12, 1);
            n
        };
        assert!(index_nodes(&b, &mut |_| Ok(node.clone())).is_ok());
        put_u16(&mut b, 0x20, 2);
        put_u16(&mut b, 0x22, 2);
        put_u32(&mut b, 0x2C, 1);
        assert!(index_nodes(&b, &mut |_| Ok(node.clone())).is_err());
    }
}
