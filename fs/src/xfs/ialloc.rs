//! One AG's inode allocation state: the AGI and the records of its inode btree (every
//! 64-inode chunk with its free mask and, with sparse inodes, its hole mask) and of the
//! free inode btree (the chunks with a free inode). Inodes are taken from and given
//! back to chunks that exist; making a new chunk is not done (the caller says so).
//!
//! Like the free-space trees, both trees are laid out again from their records at
//! commit. The inobt keeps its record count (so its blocks); the finobt gains and loses
//! records and may need a block more or less, which comes from or goes to the AG's free
//! space, owned in the rmapbt by the inode btrees.

use super::bytes::{be16, be32, be64, crc_ok, put32, set_crc, u8_at};
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

    /// Whether the finobt has the blocks its records need; adopts `extra` blocks first.
    pub fn blocks(&mut self, sb: &Superblock, extra: &[u32]) -> Blocks {
        self.fino_blocks.extend_from_slice(extra);
        if !self.finobt {
            return Blocks::Enough;
        }
        let n = self.chunks.iter().filter(|c| c.freecount > 0).count();
        let need = sbtree::blocks_needed(sb, Tree::Fino, n);
        let have = self.fino_blocks.len();
        if need > have {
            Blocks::Need(need - have)
        } else if need < have {
            Blocks::Spare(self.fino_blocks.split_off(need))
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
