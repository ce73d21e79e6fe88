//! Fork block maps: the 16-byte extent records of an `extents` fork and the block-map
//! B+tree (BMBT) of a `btree` fork, flattened into one sorted list per fork. Checked as
//! it is built (records in order and not overlapping, inside the filesystem, no more
//! than the inode counts), which also stops a hostile tree that points back at itself.

use super::bytes::{be16, be32, be64, crc_ok};
use super::inode::{Inode, FMT_BTREE, FMT_EXTENTS};
use super::volume::Volume;
use crate::error::Result;

const MAGIC_V4: u32 = 0x424d_4150; // "BMAP"
const MAGIC_V5: u32 = 0x424d_4133; // "BMA3"
/// Largest extent list we build for one fork (128 MiB of memory); real files stay far
/// below (a heavily fragmented multi-GiB database file has some 10^5 extents).
const MAX_EXTENTS: u64 = 1 << 22;
const MAX_LEVELS: u16 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// First file block (in filesystem blocks).
    pub off: u64,
    /// First filesystem block (AG-encoded).
    pub block: u64,
    pub len: u64,
    /// Allocated but never written: reads as zeroes.
    pub unwritten: bool,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.off + self.len
    }
}

pub(crate) fn decode(rec: &[u8]) -> Option<Extent> {
    let l0 = be64(rec, 0)?;
    let l1 = be64(rec, 8)?;
    Some(Extent {
        unwritten: l0 >> 63 != 0,
        off: (l0 >> 9) & ((1 << 54) - 1),
        block: ((l0 & 0x1ff) << 43) | (l1 >> 21),
        len: l1 & ((1 << 21) - 1),
    })
}

/// Which fork of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fork {
    Data,
    Attr,
}

struct Builder<'a> {
    vol: &'a Volume,
    ino: u64,
    limit: u64,
    out: Vec<Extent>,
    nodes: u64,
    /// Every btree block walked (the blocks a rewrite of the fork frees).
    node_blocks: Vec<u64>,
    what: &'static str,
    offset: u64,
}

impl Builder<'_> {
    fn push(&mut self, rec: &[u8], at: u64) -> Result<()> {
        let e = decode(rec).ok_or_else(|| self.vol.corrupt(self.what, at, "short record"))?;
        if e.len == 0 {
            return Err(self.vol.corrupt(self.what, at, "zero-length extent"));
        }
        if let Some(prev) = self.out.last() {
            if e.off < prev.end() {
                return Err(self.vol.corrupt(
                    self.what,
                    at,
                    format!(
                        "extent at file block {} overlaps or precedes the one before",
                        e.off
                    ),
                ));
            }
        }
        if e.off.checked_add(e.len).is_none_or(|x| x >= 1 << 54)
            || !self.vol.sb.fsb_range_ok(e.block, e.len)
        {
            return Err(self.vol.corrupt(
                self.what,
                at,
                format!(
                    "extent of {} blocks at block {} lies outside the filesystem",
                    e.len, e.block
                ),
            ));
        }
        if self.out.len() as u64 >= self.limit {
            return Err(self.vol.corrupt(
                self.what,
                at,
                format!(
                    "more extents than the inode's count of {} (or over {MAX_EXTENTS})",
                    self.limit
                ),
            ));
        }
        self.out.push(e);
        Ok(())
    }

    /// Walks the subtree under `block`, which must be at `level`.
    fn node(&mut self, block: u64, level: u16) -> Result<()> {
        self.nodes += 1;
        if self.nodes > self.limit.saturating_mul(2).saturating_add(64) {
            return Err(self.vol.corrupt(
                self.what,
                self.offset,
                "more tree blocks than its extents need",
            ));
        }
        let sb = &self.vol.sb;
        let b = self.vol.read_fsb(block, 1, self.what)?;
        self.node_blocks.push(block);
        let at = sb.fsb_offset(block).unwrap_or(0);
        let c = |d: &str| self.vol.corrupt("block map btree block", at, d);
        let (magic, hdr) = if sb.crc {
            (MAGIC_V5, 72)
        } else {
            (MAGIC_V4, 24)
        };
        if be32(&b, 0) != Some(magic) {
            return Err(c("bad magic"));
        }
        if sb.crc {
            if !crc_ok(&b, 64) {
                return Err(c("CRC mismatch"));
            }
            if be64(&b, 56) != Some(self.ino) {
                return Err(c("owned by another inode"));
            }
            if b.get(40..56) != Some(&sb.meta_uuid[..]) {
                return Err(c("belongs to another filesystem (UUID)"));
            }
        }
        if be16(&b, 4) != Some(level) {
            return Err(c(&format!("level {:?}, expected {level}", be16(&b, 4))));
        }
        let n = usize::from(be16(&b, 6).unwrap_or(0));
        let space = b.len() - hdr;
        if level == 0 {
            if n == 0 || n > space / 16 {
                return Err(c(&format!("{n} records in a leaf")));
            }
            for i in 0..n {
                let o = hdr + i * 16;
                let rec = b.get(o..o + 16).ok_or_else(|| c("short leaf"))?;
                self.push(rec, at + o as u64)?;
            }
        } else {
            let maxrecs = space / 16;
            if n == 0 || n > maxrecs {
                return Err(c(&format!("{n} pointers in a node")));
            }
            for i in 0..n {
                let p = be64(&b, hdr + maxrecs * 8 + i * 8).ok_or_else(|| c("short node"))?;
                self.node(p, level - 1)?;
            }
        }
        Ok(())
    }
}

/// The block map of one fork of `ino`, sorted by file block. Local forks have none.
pub(crate) fn extents(vol: &Volume, ino: &Inode, fork: Fork) -> Result<Vec<Extent>> {
    Ok(extents_and_nodes(vol, ino, fork)?.0)
}

/// The block map of a fork and the blocks of its btree (none unless in btree format).
pub(crate) fn extents_and_nodes(
    vol: &Volume,
    ino: &Inode,
    fork: Fork,
) -> Result<(Vec<Extent>, Vec<u64>)> {
    let (bytes, format, count, what) = match fork {
        Fork::Data => (&ino.data_fork[..], ino.format, ino.nextents, "data fork"),
        Fork::Attr => match &ino.attr_fork {
            Some(a) => (&a[..], ino.aformat, ino.anextents, "attribute fork"),
            None => return Ok((Vec::new(), Vec::new())),
        },
    };
    let mut b = Builder {
        vol,
        ino: ino.ino,
        limit: count.min(MAX_EXTENTS),
        out: Vec::with_capacity(count.min(1024) as usize),
        nodes: 0,
        node_blocks: Vec::new(),
        what,
        offset: ino.offset,
    };
    let c = |d: String| vol.corrupt(&format!("inode {} {what}", ino.ino), ino.offset, d);
    match format {
        FMT_EXTENTS => {
            if count > (bytes.len() / 16) as u64 {
                return Err(c(format!("{count} extents do not fit in the inode")));
            }
            for i in 0..count as usize {
                let rec = bytes.get(i * 16..i * 16 + 16).unwrap_or(&[]);
                b.push(rec, ino.offset)?;
            }
        }
        FMT_BTREE => {
            let level = be16(bytes, 0).unwrap_or(0);
            let n = usize::from(be16(bytes, 2).unwrap_or(0));
            let maxrecs = bytes.len().saturating_sub(4) / 16;
            if level == 0 || level > MAX_LEVELS || n == 0 || n > maxrecs {
                return Err(c(format!("btree root of level {level} with {n} pointers")));
            }
            for i in 0..n {
                let p = be64(bytes, 4 + maxrecs * 8 + i * 8)
                    .ok_or_else(|| c("short btree root".into()))?;
                b.node(p, level - 1)?;
            }
        }
        other => return Err(c(format!("format {other} where a block map belongs"))),
    }
    Ok((b.out, b.node_blocks))
}

/// Index of the first extent ending after file block `fblock`.
pub(crate) fn find(map: &[Extent], fblock: u64) -> usize {
    map.partition_point(|e| e.end() <= fblock)
}

/// Reads `count` file blocks from `fblock` of a metadata fork (directory, attribute,
/// symlink blocks), which may span several extents; a hole there is corruption.
pub(crate) fn read_blocks(
    vol: &Volume,
    map: &[Extent],
    fblock: u64,
    count: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity((count << vol.sb.blocklog).min(1 << 16) as usize);
    let mut f = fblock;
    let end = fblock.saturating_add(count);
    let mut i = find(map, f);
    while f < end {
        let e = map
            .get(i)
            .filter(|e| e.off <= f)
            .ok_or_else(|| vol.corrupt(what, 0, format!("file block {f} is not mapped")))?;
        let n = (e.end().min(end)) - f;
        out.extend_from_slice(&vol.read_fsb(e.block + (f - e.off), n, what)?);
        f += n;
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_bits() {
        // unwritten, startoff 5, startblock 0x1_0000_0003 (spans both words), count 9.
        let startblock: u64 = 0x1_0000_0003;
        let l0 = (1u64 << 63) | (5 << 9) | (startblock >> 43);
        let l1 = ((startblock & ((1 << 43) - 1)) << 21) | 9;
        let mut r = [0u8; 16];
        r[..8].copy_from_slice(&l0.to_be_bytes());
        r[8..].copy_from_slice(&l1.to_be_bytes());
        assert_eq!(
            decode(&r),
            Some(Extent {
                off: 5,
                block: startblock,
                len: 9,
                unwritten: true
            })
        );
        assert_eq!(decode(&r[..15]), None);
    }

    #[test]
    fn find_extent() {
        let e = |off, len| Extent {
            off,
            block: 100,
            len,
            unwritten: false,
        };
        let map = [e(0, 4), e(10, 2)];
        assert_eq!(find(&map, 3), 0);
        assert_eq!(find(&map, 4), 1);
        assert_eq!(find(&map, 11), 1);
        assert_eq!(find(&map, 12), 2);
    }
}
