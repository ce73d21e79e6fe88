//! The JBD2 journal superblock (block 0 of the journal, big-endian like everything JBD2
//! writes): where the log starts, which transaction comes first, and the features that
//! decide how every other journal block is laid out. It is checked here once, so the
//! passes can trust its geometry.

use super::be::{be32, put_be32};
use crate::ext4::csum::crc32c;

pub const MAGIC: u32 = 0xC03B_3998;

pub mod blocktype {
    pub const DESCRIPTOR: u32 = 1;
    pub const COMMIT: u32 = 2;
    pub const SUPERBLOCK_V1: u32 = 3;
    pub const SUPERBLOCK_V2: u32 = 4;
    pub const REVOKE: u32 = 5;
}

pub mod feature {
    /// compat: crc32 (big-endian) of each transaction in its commit block (checksum v1).
    pub const COMPAT_CHECKSUM: u32 = 0x1;
    pub const INCOMPAT_REVOKE: u32 = 0x1;
    pub const INCOMPAT_64BIT: u32 = 0x2;
    pub const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
    pub const INCOMPAT_CSUM_V2: u32 = 0x8;
    pub const INCOMPAT_CSUM_V3: u32 = 0x10;
    pub const INCOMPAT_FAST_COMMIT: u32 = 0x20;
    pub const INCOMPAT_KNOWN: u32 = INCOMPAT_REVOKE
        | INCOMPAT_64BIT
        | INCOMPAT_ASYNC_COMMIT
        | INCOMPAT_CSUM_V2
        | INCOMPAT_CSUM_V3
        | INCOMPAT_FAST_COMMIT;
}

/// `s_checksum_type` for crc32c, the only type checksums v2/v3 use.
const CSUM_CRC32C: u8 = 4;
/// Fast-commit blocks reserved when `s_num_fc_blks` is 0 (the kernel's default).
const DEFAULT_FC_BLOCKS: u32 = 256;
pub const SB_BYTES: usize = 1024;

#[derive(Debug, Clone)]
pub struct JournalSuper {
    raw: Vec<u8>,
    pub block_size: usize,
    pub maxlen: u32,
    pub first: u32,
    pub sequence: u32,
    pub start: u32,
    /// An error the journal recorded when it aborted (negative errno), 0 if none.
    pub errno: i32,
    pub compat: u32,
    pub incompat: u32,
    /// One past the last block of the circular log (fast-commit blocks excluded).
    pub last: u32,
    /// The first fast-commit block, with the feature on.
    pub fc_first: Option<u32>,
    /// Seed of every v2/v3 checksum: crc32c of the journal UUID.
    pub csum_seed: u32,
}

impl JournalSuper {
    /// Parses journal block 0; `fs_block_size` must be the journal's block size too (an
    /// internal journal shares it) and `log_blocks` is how many blocks the journal inode
    /// maps, which bounds `s_maxlen`.
    pub fn parse(raw: &[u8], fs_block_size: usize, log_blocks: u64) -> Result<Self, String> {
        let raw = raw
            .get(..SB_BYTES)
            .ok_or("journal superblock: short block")?
            .to_vec();
        if be32(&raw, 0) != MAGIC {
            return Err("journal superblock: bad magic number".into());
        }
        let v2 = match be32(&raw, 4) {
            blocktype::SUPERBLOCK_V1 => false,
            blocktype::SUPERBLOCK_V2 => true,
            t => {
                return Err(format!(
                    "journal superblock: block type {t} is not a superblock"
                ))
            }
        };
        let block_size = be32(&raw, 0xC) as usize;
        if block_size != fs_block_size {
            return Err(format!(
                "journal superblock: block size {block_size} differs from the filesystem's {fs_block_size}"
            ));
        }
        let maxlen = be32(&raw, 0x10);
        let first = be32(&raw, 0x14);
        if maxlen as u64 > log_blocks {
            return Err(format!(
                "journal superblock: {maxlen} blocks, but the journal inode maps only {log_blocks}"
            ));
        }
        let (compat, incompat) = if v2 {
            (be32(&raw, 0x24), be32(&raw, 0x28))
        } else {
            (0, 0)
        };
        let mut last = maxlen;
        let mut fc_first = None;
        if incompat & feature::INCOMPAT_FAST_COMMIT != 0 {
            let n = match be32(&raw, 0x54) {
                0 => DEFAULT_FC_BLOCKS,
                n => n,
            };
            last = maxlen.checked_sub(n).ok_or_else(|| {
                format!("journal superblock: {n} fast-commit blocks do not fit in {maxlen}")
            })?;
            fc_first = Some(last + 1);
        }
        if first == 0 || first >= last {
            return Err(format!(
                "journal superblock: log starts at block {first} of {last}"
            ));
        }
        let start = be32(&raw, 0x1C);
        if start != 0 && (start < first || start >= last) {
            return Err(format!(
                "journal superblock: log head {start} is outside the log (blocks {first}..{last})"
            ));
        }
        let mut sb = JournalSuper {
            block_size,
            maxlen,
            first,
            sequence: be32(&raw, 0x18),
            start,
            errno: be32(&raw, 0x20) as i32,
            compat,
            incompat,
            last,
            fc_first,
            csum_seed: 0,
            raw,
        };
        if sb.csum_v2or3() {
            if sb.raw.get(0x50).copied() != Some(CSUM_CRC32C) {
                return Err(format!(
                    "journal superblock: checksum type {} is not crc32c",
                    sb.raw.get(0x50).copied().unwrap_or(0)
                ));
            }
            if be32(&sb.raw, 0xFC) != sb.checksum() {
                return Err("journal superblock: checksum does not match".into());
            }
            sb.csum_seed = crc32c(!0, sb.raw.get(0x30..0x40).unwrap_or(&[]));
        }
        Ok(sb)
    }

    /// Incompatible features this replay does not know, if any.
    pub fn unknown_incompat(&self) -> u32 {
        self.incompat & !feature::INCOMPAT_KNOWN
    }

    pub fn has(&self, incompat: u32) -> bool {
        self.incompat & incompat != 0
    }

    pub fn csum_v2or3(&self) -> bool {
        self.has(feature::INCOMPAT_CSUM_V2 | feature::INCOMPAT_CSUM_V3)
    }

    pub fn csum_v3(&self) -> bool {
        self.has(feature::INCOMPAT_CSUM_V3)
    }

    pub fn csum_v1(&self) -> bool {
        self.compat & feature::COMPAT_CHECKSUM != 0
    }

    pub fn is_64bit(&self) -> bool {
        self.has(feature::INCOMPAT_64BIT)
    }

    /// Bytes of one block tag, without the UUID that may follow it.
    pub fn tag_bytes(&self) -> usize {
        if self.csum_v3() {
            return 16;
        }
        let base = if self.has(feature::INCOMPAT_CSUM_V2) {
            14
        } else {
            12
        };
        if self.is_64bit() {
            base
        } else {
            base - 4
        }
    }

    /// Bytes at the end of descriptor and revoke blocks that hold their checksum.
    pub fn tail_bytes(&self) -> usize {
        if self.csum_v2or3() {
            4
        } else {
            0
        }
    }

    /// Blocks in the circular log.
    pub fn log_len(&self) -> u32 {
        self.last - self.first
    }

    /// The log position after `n`, wrapping to `first` at the end.
    pub fn wrap(&self, n: u32) -> u32 {
        if n >= self.last {
            n - self.log_len()
        } else {
            n
        }
    }

    fn checksum(&self) -> u32 {
        let mut b = self.raw.clone();
        put_be32(&mut b, 0xFC, 0);
        crc32c(!0, &b)
    }

    /// The superblock of an empty journal whose next transaction is `next_sequence`, as
    /// the kernel leaves it after recovery and unmount (`s_start` 0, and any recorded
    /// error moved to the filesystem's superblock, so cleared here).
    pub fn emptied(&self, next_sequence: u32) -> Vec<u8> {
        let mut s = self.clone();
        put_be32(&mut s.raw, 0x18, next_sequence);
        put_be32(&mut s.raw, 0x1C, 0);
        put_be32(&mut s.raw, 0x20, 0);
        if s.csum_v2or3() {
            let c = s.checksum();
            put_be32(&mut s.raw, 0xFC, c);
        }
        s.raw
    }
}
