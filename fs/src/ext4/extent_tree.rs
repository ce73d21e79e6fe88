//! Extent trees (ext4 `extent` feature): read a tree of any depth into runs, and build a
//! fresh, balanced tree of the needed depth from runs. The writer never edits a tree in
//! place; it rebuilds the whole tree of the file it changes, so splitting and growing are
//! the same code path as a first write, and the result has the shape e2fsck expects
//! (full nodes left to right, index keys equal to the first key below).

use super::csum::crc32c;
use super::le::*;
use super::mapping::{Ctx, Mapping, Run, MAX_NODES, MAX_RUNS};
use crate::error::Result;

pub const MAGIC: u16 = 0xF30A;
const HEADER: usize = 12;
const ENTRY: usize = 12;
/// Longest initialised extent; unwritten ones are one shorter.
pub const MAX_LEN: u64 = 32768;
const MAX_DEPTH: u16 = 5;

/// Entries that fit in a tree block after the header (the 4-byte checksum tail fits in
/// what is left over for every block size).
pub fn per_block(block_size: u64) -> usize {
    (block_size as usize - HEADER) / ENTRY
}

/// Reads the whole tree rooted in i_block.
pub fn read(
    ctx: &Ctx<'_>,
    i_block: &[u8],
    read_block: &mut dyn FnMut(u64) -> Result<Vec<u8>>,
) -> Result<Mapping> {
    let mut m = Mapping::default();
    let mut nodes = 0usize;
    walk(ctx, i_block, None, read_block, &mut m, &mut nodes)?;
    Ok(m)
}

fn walk(
    ctx: &Ctx<'_>,
    node: &[u8],
    want_depth: Option<u16>,
    read_block: &mut dyn FnMut(u64) -> Result<Vec<u8>>,
    m: &mut Mapping,
    nodes: &mut usize,
) -> Result<()> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(ctx.corrupt("extent tree has too many nodes (a loop?)"));
    }
    if u16_at(node, 0) != MAGIC {
        return Err(ctx.corrupt("extent node has a bad magic number"));
    }
    let entries = u16_at(node, 2) as usize;
    let max = u16_at(node, 4) as usize;
    let depth = u16_at(node, 6);
    if entries > max || HEADER + max * ENTRY > node.len() {
        return Err(ctx.corrupt(format!(
            "extent node holds {entries} of {max} entries, more than fit"
        )));
    }
    if depth > MAX_DEPTH || want_depth.is_some_and(|d| d != depth) {
        return Err(ctx.corrupt(format!("extent node depth {depth} is inconsistent")));
    }
    for i in 0..entries {
        let e = HEADER + i * ENTRY;
        let logical = u32_at(node, e) as u64;
        if depth == 0 {
            let raw_len = u16_at(node, e + 4) as u64;
            let (len, uninit) = if raw_len > MAX_LEN {
                (raw_len - MAX_LEN, true)
            } else {
                (raw_len, false)
            };
            let physical = u32_at(node, e + 8) as u64 | (u16_at(node, e + 6) as u64) << 32;
            if len == 0 {
                return Err(ctx.corrupt("extent of length 0"));
            }
            ctx.check_block(physical, len, "extent")?;
            if let Some(last) = m.runs.last() {
                if logical < last.logical + last.len {
                    return Err(
                        ctx.corrupt(format!("extents out of order at logical block {logical}"))
                    );
                }
            }
            if m.runs.len() >= MAX_RUNS {
                return Err(ctx.corrupt("too many extents"));
            }
            m.runs.push(Run {
                logical,
                physical,
                len,
                uninit,
            });
        } else {
            let child = u32_at(node, e + 4) as u64 | (u16_at(node, e + 8) as u64) << 32;
            ctx.check_block(child, 1, "extent index")?;
            let block = read_block(child)?;
            m.meta.push(child);
            walk(ctx, &block, Some(depth - 1), read_block, m, nodes)?;
        }
    }
    Ok(())
}

/// Splits runs into extents no longer than the format allows.
pub fn split_runs(runs: &[Run]) -> Vec<Run> {
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let max = if r.uninit { MAX_LEN - 1 } else { MAX_LEN };
        let mut done = 0;
        while done < r.len {
            let n = (r.len - done).min(max);
            out.push(Run {
                logical: r.logical + done,
                physical: r.physical + done,
                len: n,
                uninit: r.uninit,
            });
            done += n;
        }
    }
    out
}

/// Tree blocks a tree over `n` extents (already split) needs.
pub fn blocks_needed(n: usize, block_size: u64) -> usize {
    let pb = per_block(block_size);
    if n <= 4 {
        return 0;
    }
    let mut cur = n.div_ceil(pb);
    let mut total = cur;
    while cur > 4 {
        cur = cur.div_ceil(pb);
        total += cur;
    }
    total
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put_u16(buf, 0, MAGIC);
    put_u16(buf, 2, entries as u16);
    put_u16(buf, 4, max as u16);
    put_u16(buf, 6, depth);
    put_u32(buf, 8, 0);
}

/// Builds the tree over `extents` (split, sorted) using `meta` (exactly
/// `blocks_needed(extents.len())` free blocks) for its nodes. Returns the new i_block and
/// the node blocks to write. `csum_seed` is the inode's seed with metadata_csum.
pub fn build(
    extents: &[Run],
    meta: &[u64],
    block_size: u64,
    csum_seed: Option<u32>,
) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    let pb = per_block(block_size);
    let mut root = [0u8; 60];
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let leaf_entry = |buf: &mut [u8], i: usize, r: &Run| {
        let e = HEADER + i * ENTRY;
        put_u32(buf, e, r.logical as u32);
        put_u16(
            buf,
            e + 4,
            (r.len + if r.uninit { MAX_LEN } else { 0 }) as u16,
        );
        put_u16(buf, e + 6, (r.physical >> 32) as u16);
        put_u32(buf, e + 8, r.physical as u32);
    };
    let index_entry = |buf: &mut [u8], i: usize, logical: u64, child: u64| {
        let e = HEADER + i * ENTRY;
        put_u32(buf, e, logical as u32);
        put_u32(buf, e + 4, child as u32);
        put_u16(buf, e + 8, (child >> 32) as u16);
        put_u16(buf, e + 10, 0);
    };
    let finish = |mut buf: Vec<u8>| -> Vec<u8> {
        if let Some(seed) = csum_seed {
            let tail = HEADER + pb * ENTRY;
            let c = crc32c(seed, &buf[..tail]);
            put_u32(&mut buf, tail, c);
        }
        buf
    };
    if extents.len() <= 4 {
        header(&mut root, extents.len(), 4, 0);
        for (i, r) in extents.iter().enumerate() {
            leaf_entry(&mut root, i, r);
        }
        return (root, out);
    }
    let mut next_meta = meta.iter().copied();
    // Level 0: leaves. `level` holds (first logical, block) of each node just built.
    let mut level: Vec<(u64, u64)> = Vec::new();
    for chunk in extents.chunks(pb) {
        let b = next_meta.next().unwrap_or(0);
        let mut buf = vec![0u8; block_size as usize];
        header(&mut buf, chunk.len(), pb, 0);
        for (i, r) in chunk.iter().enumerate() {
            leaf_entry(&mut buf, i, r);
        }
        level.push((chunk.first().map(|r| r.logical).unwrap_or(0), b));
        out.push((b, finish(buf)));
    }
    let mut depth: u16 = 1;
    while level.len() > 4 {
        let mut up = Vec::new();
        for chunk in level.chunks(pb) {
            let b = next_meta.next().unwrap_or(0);
            let mut buf = vec![0u8; block_size as usize];
            header(&mut buf, chunk.len(), pb, depth);
            for (i, &(l, c)) in chunk.iter().enumerate() {
                index_entry(&mut buf, i, l, c);
            }
            up.push((chunk.first().map(|x| x.0).unwrap_or(0), b));
            out.push((b, finish(buf)));
        }
        level = up;
        depth += 1;
    }
    header(&mut root, level.len(), 4, depth);
    for (i, &(l, c)) in level.iter().enumerate() {
        index_entry(&mut root, i, l, c);
    }
    // The first index key of every level must cover logical 0 onwards from the root.
    (root, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ctx() -> Ctx<'static> {
        Ctx {
            dev: "t",
            ino: 12,
            block_size: 1024,
            blocks_count: 1 << 30,
            first_data_block: 1,
        }
    }

    fn round_trip(n: usize) {
        let runs: Vec<Run> = (0..n as u64)
            .map(|i| Run {
                logical: i * 3,
                physical: 1000 + i * 2,
                len: 1,
                uninit: i % 7 == 0,
            })
            .collect();
        let need = blocks_needed(n, 1024);
        let meta: Vec<u64> = (0..need as u64).map(|i| 500_000 + i).collect();
        let (root, blocks) = build(&runs, &meta, 1024, Some(7));
        assert_eq!(blocks.len(), need);
        let store: HashMap<u64, Vec<u8>> = blocks.into_iter().collect();
        let m = read(&ctx(), &root, &mut |b| Ok(store[&b].clone())).unwrap();
        assert_eq!(m.runs, runs);
        assert_eq!(m.meta.len(), need);
    }

    #[test]
    fn trees_of_every_depth_round_trip() {
        for n in [0, 1, 4, 5, 84, 85, 84 * 4, 84 * 4 + 1, 84 * 84 * 4 + 3] {
            round_trip(n);
        }
    }

    #[test]
    fn long_runs_are_split() {
        let r = Run {
            logical: 0,
            physical: 10,
            len: 70000,
            uninit: false,
        };
        let s = split_runs(&[r]);
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].len, 70000 - 2 * 32768);
    }

    #[test]
    fn loops_and_garbage_are_corrupt() {
        let mut root = [0u8; 60];
        header(&mut root, 1, 4, 1);
        put_u32(&mut root, 16, 77);
        let mut node = vec![0u8; 1024];
        header(&mut node, 1, 84, 1);
        put_u32(&mut node, 16, 77);
        // A node pointing at itself with the wrong depth.
        assert!(read(&ctx(), &root, &mut |_| Ok(node.clone())).is_err());
        assert!(read(&ctx(), &[0u8; 60], &mut |_| Ok(vec![])).is_err());
    }
}
