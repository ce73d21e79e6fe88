//! ext2/ext3 indirect block maps: twelve direct pointers, then single, double and triple
//! indirect blocks. Read with holes (a zero pointer); built fresh, like extent trees.

use super::le::*;
use super::mapping::{Ctx, Mapping, Run, MAX_NODES, MAX_RUNS};
use crate::error::Result;

const DIRECT: usize = 12;

fn push(m: &mut Mapping, ctx: &Ctx<'_>, logical: u64, physical: u64) -> Result<()> {
    if let Some(last) = m.runs.last_mut() {
        if last.logical + last.len == logical && last.physical + last.len == physical {
            last.len += 1;
            return Ok(());
        }
    }
    if m.runs.len() >= MAX_RUNS {
        return Err(ctx.corrupt("block map has too many runs"));
    }
    m.runs.push(Run {
        logical,
        physical,
        len: 1,
        uninit: false,
    });
    Ok(())
}

pub fn read(
    ctx: &Ctx<'_>,
    i_block: &[u8],
    read_block: &mut dyn FnMut(u64) -> Result<Vec<u8>>,
) -> Result<Mapping> {
    let mut m = Mapping::default();
    let p = ctx.block_size / 4;
    for i in 0..DIRECT {
        let b = u32_at(i_block, i * 4) as u64;
        if b != 0 {
            ctx.check_block(b, 1, "block pointer")?;
            push(&mut m, ctx, i as u64, b)?;
        }
    }
    let mut nodes = 0usize;
    let mut start = DIRECT as u64;
    for level in 1..=3u32 {
        let b = u32_at(i_block, (DIRECT + level as usize - 1) * 4) as u64;
        if b != 0 {
            walk(ctx, b, level, start, read_block, &mut m, &mut nodes)?;
        }
        start += p.pow(level);
    }
    Ok(m)
}

fn walk(
    ctx: &Ctx<'_>,
    block: u64,
    level: u32,
    start: u64,
    read_block: &mut dyn FnMut(u64) -> Result<Vec<u8>>,
    m: &mut Mapping,
    nodes: &mut usize,
) -> Result<()> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(ctx.corrupt("block map has too many indirect blocks"));
    }
    ctx.check_block(block, 1, "indirect block pointer")?;
    m.meta.push(block);
    let data = read_block(block)?;
    let p = ctx.block_size / 4;
    let span = p.pow(level - 1);
    for i in 0..p {
        let b = u32_at(&data, i as usize * 4) as u64;
        if b == 0 {
            continue;
        }
        let logical = start + i * span;
        if level == 1 {
            ctx.check_block(b, 1, "block pointer")?;
            push(m, ctx, logical, b)?;
        } else {
            walk(ctx, b, level - 1, logical, read_block, m, nodes)?;
        }
    }
    Ok(())
}

/// Indirect blocks a map of `n` blocks from logical 0 needs; None if too large for the
/// scheme.
pub fn blocks_needed(n: u64, block_size: u64) -> Option<u64> {
    let p = block_size / 4;
    let mut rest = n.saturating_sub(DIRECT as u64);
    let mut total = 0;
    for level in 1..=3u32 {
        if rest == 0 {
            return Some(total);
        }
        let cap = p.pow(level);
        let here = rest.min(cap);
        // Tier k of this tree has one block per p^k data blocks.
        for k in 1..=level {
            total += here.div_ceil(p.pow(k));
        }
        rest -= here;
    }
    (rest == 0).then_some(total)
}

/// Builds the map for `blocks` (the physical block of logical 0, 1, ...) using `meta`
/// (exactly `blocks_needed` blocks). Returns i_block and the indirect blocks to write.
pub fn build(blocks: &[u64], meta: &[u64], block_size: u64) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    let p = (block_size / 4) as usize;
    let mut root = [0u8; 60];
    let mut out = Vec::new();
    let mut next_meta = meta.iter().copied();
    for (i, &b) in blocks.iter().take(DIRECT).enumerate() {
        put_u32(&mut root, i * 4, b as u32);
    }
    let mut rest = blocks.get(DIRECT..).unwrap_or(&[]);
    for level in 1..=3u32 {
        if rest.is_empty() {
            break;
        }
        let cap = p.pow(level);
        let here = &rest[..rest.len().min(cap)];
        let top = fill(here, level, p, block_size, &mut next_meta, &mut out);
        put_u32(&mut root, (DIRECT + level as usize - 1) * 4, top as u32);
        rest = &rest[here.len()..];
    }
    (root, out)
}

fn fill(
    blocks: &[u64],
    level: u32,
    p: usize,
    block_size: u64,
    meta: &mut impl Iterator<Item = u64>,
    out: &mut Vec<(u64, Vec<u8>)>,
) -> u64 {
    let me = meta.next().unwrap_or(0);
    let mut buf = vec![0u8; block_size as usize];
    let span = p.pow(level - 1);
    for (i, chunk) in blocks.chunks(span).enumerate() {
        let v = if level == 1 {
            chunk.first().copied().unwrap_or(0)
        } else {
            fill(chunk, level - 1, p, block_size, meta, out)
        };
        put_u32(&mut buf, i * 4, v as u32);
    }
    out.push((me, buf));
    me
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn maps_round_trip_through_every_level() {
        let bs = 1024u64;
        let p = 256u64;
        let ctx = Ctx {
            dev: "t",
            ino: 12,
            block_size: bs,
            blocks_count: 1 << 31,
            first_data_block: 1,
        };
        for n in [
            0,
            5,
            12,
            13,
            12 + p,
            12 + p + 1,
            12 + p + p * p,
            12 + p + p * p + 300,
        ] {
            let blocks: Vec<u64> = (0..n).map(|i| 10 + i * 2).collect();
            let need = blocks_needed(n, bs).unwrap();
            let meta: Vec<u64> = (0..need).map(|i| 1 << 30 | i).collect();
            let (root, written) = build(&blocks, &meta, bs);
            assert_eq!(written.len() as u64, need, "n={n}");
            let store: HashMap<u64, Vec<u8>> = written.into_iter().collect();
            let m = read(&ctx, &root, &mut |b| Ok(store[&b].clone())).unwrap();
            let back: Vec<u64> = m
                .runs
                .iter()
                .flat_map(|r| (0..r.len).map(move |i| r.physical + i))
                .collect();
            assert_eq!(back, blocks, "n={n}");
            assert_eq!(m.meta.len() as u64, need);
        }
    }
}
