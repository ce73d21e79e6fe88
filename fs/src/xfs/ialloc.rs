//! One AG's inode allocation state: the AGI and the records of its inode btree (every
//! 64-inode chunk with its free mask and, with sparse inodes, its hole mask) and of the
//! free inode btree (the chunks with a free inode). Inodes are taken from and given
//! back to chunks; when every chunk is full the transaction places a new chunk (whole,
//! never sparse) in free space and [`InodeAg::add_chunk`] records it, with
//! [`chunk_buffer`] giving its initialised inodes.
//!
//! Like the free-space trees, both trees are laid out again from their records at
//! commit. Either may need a block more or less, which comes from or goes to the AG's
//! free space, owned in the rmapbt by the inode btrees.

use super::bytes::{be16, be32, be64, crc_ok, put16, put32, put64, set_crc, u8_at};
use super::dinode::NULL_AGINO;
use super::sbtree::{self, Tree};
use super::superblock::Superblock;
use super::volume::Volume;
use crate::error::Result;

const AGI_MAGIC: u32 = 0x5841_4749; // "XAGI"
pub(crate) const RO_FINOBT: u32 = 0x1;
const RO_INOBTCNT: u32 = 0x8;
const INCOMPAT_SPINODES: u32 = 0x2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub startino: u32,
    pub holemask: u16,
    pub count: u8,
    pub freecount: u8,
    pub free: u64,
}

impl Chunk {
    fn decode(r: &[u8], sparse: bool) -> Option<Chunk> {
        Some(if sparse {
            Chunk {
                startino: be32(r, 0)?,
                holemask: be16(r, 4)?,
                count: u8_at(r, 6)?,
                freecount: u8_at(r, 7)?,
                free: be64(r, 8)?,
            }
        } else {
            Chunk {
                startino: be32(r, 0)?,
                holemask: 0,
                count: 64,
                freecount: u8::try_from(be32(r, 4)?).ok()?,
                free: be64(r, 8)?,
            }
        })
    }

    fn encode(&self, sparse: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.startino.to_be_bytes());
        if sparse {
            out.extend_from_slice(&self.holemask.to_be_bytes());
            out.push(self.count);
            out.push(self.freecount);
        } else {
            out.extend_from_slice(&u32::from(self.freecount).to_be_bytes());
        }
        out.extend_from_slice(&self.free.to_be_bytes());
    }

    /// One bit per inode that lies in a hole (is not on disk).
    fn holes(&self) -> u64 {
        (0..16)
            .filter(|i| self.holemask >> i & 1 != 0)
            .fold(0, |m, i| m | 0xf << (i * 4))
    }

    /// The first free inode that is not in a hole, as an index in the chunk.
    fn first_free(&self) -> Option<u32> {
        (0..64).find(|&i| self.free >> i & 1 != 0 && self.holemask >> (i / 4) & 1 == 0)
    }
}

#[derive(Clone)]
pub(crate) struct InodeAg {
    pub agno: u32,
    agi: Vec<u8>,
    agi_at: u64,
    chunks: Vec<Chunk>,
    ino_blocks: Vec<u32>,
    fino_blocks: Vec<u32>,
    finobt: bool,
    sparse: bool,
    dirty: bool,
}

/// What a commit needs from the AG's free space for the finobt.
pub(crate) enum Blocks {
    Enough,
    /// This many more blocks, owned by the inode btrees, before committing again.
    Need(usize),
    /// These blocks are no longer needed: free them.
    Spare(Vec<u32>),
}

impl InodeAg {
    pub fn load(vol: &Volume, agno: u32) -> Result<InodeAg> {
        let sb = &vol.sb;
        let ss = u64::from(sb.sectsize);
        let base = sbtree::agb_offset(sb, agno, 0)
            .ok_or_else(|| vol.corrupt("AG number", 0, format!("{agno} out of range")))?;
        let agi_at = base + 2 * ss;
        let agi = vol.read(agi_at, ss as usize)?;
        let cs = |d: String| vol.corrupt(&format!("AGI of AG {agno}"), agi_at, d);
        let c = |d: &str| cs(d.to_string());
        if be32(&agi, 0) != Some(AGI_MAGIC) || be32(&agi, 8) != Some(agno) {
            return Err(c("bad magic or sequence number"));
        }
        if sb.crc && (!crc_ok(&agi, 312) || agi.get(296..312) != Some(&sb.meta_uuid[..])) {
            return Err(c("CRC or UUID mismatch"));
        }
        let f = |o| be32(&agi, o).unwrap_or(0);
        let sparse = sb.incompat & INCOMPAT_SPINODES != 0;
        let finobt = sb.ro_compat & RO_FINOBT != 0;
        let ino = sbtree::read(vol, agno, Tree::Ino, f(20), f(24))?;
        let chunks = ino
            .recs
            .chunks_exact(16)
            .map(|r| Chunk::decode(r, sparse))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| c("inode btree record with a free count over 64"))?;
        let mut free = 0u64;
        for ch in &chunks {
            if u32::from(ch.freecount) != (ch.free & !ch.holes()).count_ones() {
                return Err(cs(format!(
                    "inode btree record {ch:?}: the free count disagrees with the mask"
                )));
            }
            free += u64::from(ch.freecount);
        }
        if free != u64::from(f(28)) {
            return Err(c("free inode count disagrees with the inode btree"));
        }
        let count: u64 = chunks.iter().map(|c| u64::from(c.count)).sum();
        if count != u64::from(f(16)) {
            return Err(c("inode count disagrees with the inode btree"));
        }
        let fino_blocks = if finobt {
            sbtree::read(vol, agno, Tree::Fino, f(328), f(332))?.blocks
        } else {
            Vec::new()
        };
        Ok(InodeAg {
            agno,
            agi,
            agi_at,
            chunks,
            ino_blocks: ino.blocks,
            fino_blocks,
            finobt,
            sparse,
            dirty: false,
        })
    }

    pub fn free_count(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.freecount)).sum()
    }

    /// Takes a free inode; returns its number.
    pub fn alloc(&mut self, sb: &Superblock) -> Option<u64> {
        let ch = self.chunks.iter_mut().find(|c| c.freecount > 0)?;
        let i = ch.first_free()?;
        ch.free &= !(1u64 << i);
        ch.freecount -= 1;
        self.dirty = true;
        let agino = u64::from(ch.startino) + u64::from(i);
        let bits = u32::from(sb.agblklog) + u32::from(sb.inopblog);
        Some(u64::from(self.agno) << bits | agino)
    }

    /// Gives inode `agino` back to its chunk; false when it is not in use.
    pub fn free(&mut self, agino: u32) -> bool {
        let Some(ch) = self
            .chunks
            .iter_mut()
            .find(|c| c.startino <= agino && agino - c.startino < 64)
        else {
            return false;
        };
        let i = agino - ch.startino;
        if ch.free >> i & 1 != 0 || ch.holemask >> (i / 4) & 1 != 0 {
            return false;
        }
        ch.free |= 1u64 << i;
        ch.freecount += 1;
        self.dirty = true;
        true
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Records a new chunk of `n` inodes (a multiple of 64) from `startino`, all free.
    /// False when it overlaps a chunk already recorded.
    pub fn add_chunk(&mut self, startino: u32, n: u32) -> bool {
        let Some(end) = startino.checked_add(n) else {
            return false;
        };
        if n == 0 || !n.is_multiple_of(64) {
            return false;
        }
        if self
            .chunks
            .iter()
            .any(|c| c.startino < end && startino < c.startino.saturating_add(64))
        {
            return false;
        }
        for k in 0..n / 64 {
            self.chunks.push(Chunk {
                startino: startino + k * 64,
                holemask: 0,
                count: 64,
                freecount: 64,
                free: u64::MAX,
            });
        }
        self.chunks.sort_unstable_by_key(|c| c.startino);
        put32(&mut self.agi, 32, startino);
        self.dirty = true;
        true
    }

    /// Whether both inode btrees have the blocks their records need; adopts `extra`
    /// blocks first. A tree's surplus feeds the other's shortfall before any block is
    /// asked for or given back.
    pub fn blocks(&mut self, sb: &Superblock, extra: &[u32]) -> Blocks {
        let need_i = sbtree::blocks_needed(sb, Tree::Ino, self.chunks.len());
        let need_f = if self.finobt {
            let n = self.chunks.iter().filter(|c| c.freecount > 0).count();
            sbtree::blocks_needed(sb, Tree::Fino, n)
        } else {
            0
        };
        let mut pool: Vec<u32> = extra.to_vec();
        if self.ino_blocks.len() > need_i {
            pool.extend(self.ino_blocks.split_off(need_i));
        }
        if self.fino_blocks.len() > need_f {
            pool.extend(self.fino_blocks.split_off(need_f));
        }
        pool.reverse();
        while self.ino_blocks.len() < need_i {
            match pool.pop() {
                Some(b) => self.ino_blocks.push(b),
                None => break,
            }
        }
        while self.fino_blocks.len() < need_f {
            match pool.pop() {
                Some(b) => self.fino_blocks.push(b),
                None => break,
            }
        }
        let short = (need_i - self.ino_blocks.len()) + (need_f - self.fino_blocks.len());
        if short > 0 {
            Blocks::Need(short)
        } else if !pool.is_empty() {
            Blocks::Spare(pool)
        } else {
            Blocks::Enough
        }
    }

    /// The AGI and tree blocks to write (after [`InodeAg::blocks`] said `Enough`).
    pub fn commit(&mut self, sb: &Superblock) -> Option<Vec<(u64, Vec<u8>)>> {
        let mut writes = Vec::new();
        let mut recs = Vec::with_capacity(self.chunks.len() * 16);
        let mut frecs = Vec::new();
        for c in &self.chunks {
            c.encode(self.sparse, &mut recs);
            if c.freecount > 0 {
                c.encode(self.sparse, &mut frecs);
            }
        }
        let at = |b: u32| sbtree::agb_offset(sb, self.agno, b);
        let (root, levels, blocks) =
            sbtree::build(sb, self.agno, Tree::Ino, &recs, &self.ino_blocks)?;
        put32(&mut self.agi, 20, root);
        put32(&mut self.agi, 24, levels);
        for (b, d) in blocks {
            writes.push((at(b)?, d));
        }
        if self.finobt {
            let (root, levels, blocks) =
                sbtree::build(sb, self.agno, Tree::Fino, &frecs, &self.fino_blocks)?;
            put32(&mut self.agi, 328, root);
            put32(&mut self.agi, 332, levels);
            if sb.ro_compat & RO_INOBTCNT != 0 {
                put32(&mut self.agi, 340, self.fino_blocks.len() as u32);
            }
            for (b, d) in blocks {
                writes.push((at(b)?, d));
            }
        }
        if sb.ro_compat & RO_INOBTCNT != 0 {
            put32(&mut self.agi, 336, self.ino_blocks.len() as u32);
        }
        let count: u64 = self.chunks.iter().map(|c| u64::from(c.count)).sum();
        put32(&mut self.agi, 16, count as u32);
        let free = self.free_count() as u32;
        put32(&mut self.agi, 28, free);
        if sb.crc {
            set_crc(&mut self.agi, 312);
        }
        writes.push((self.agi_at, self.agi.clone()));
        self.dirty = false;
        Some(writes)
    }
}

/// The inodes of a new chunk as the kernel initialises them (`xfs_ialloc_inode_init`):
/// each free, with its magic, version, a generation, no next-unlinked link and, on v5,
/// its number, the filesystem UUID and its CRC. `n` inodes from inode `first`.
pub(crate) fn chunk_buffer(sb: &Superblock, first: u64, n: u32, gen: u32) -> Vec<u8> {
    let isz = usize::from(sb.inodesize);
    let mut out = Vec::with_capacity(isz * n as usize);
    for i in 0..u64::from(n) {
        let mut b = vec![0u8; isz];
        put16(&mut b, 0, 0x494e);
        b[4] = if sb.crc { 3 } else { 2 };
        put32(&mut b, 92, gen);
        put32(&mut b, 96, NULL_AGINO);
        if sb.crc {
            put64(&mut b, 152, first + i);
            b[160..176].copy_from_slice(&sb.meta_uuid);
            set_crc(&mut b, 100);
        }
        out.extend_from_slice(&b);
    }
    out
}
