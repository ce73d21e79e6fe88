//! Block group descriptors: where a group's bitmaps and inode table are, its free counts,
//! its UNINIT flags, and the checksums that cover it and its bitmaps. As with the
//! superblock, the raw bytes are kept and only known fields rewritten.

use super::csum::{crc16, crc32c};
use super::le::*;
use super::superblock::Superblock;

pub const INODE_UNINIT: u16 = 0x1;
pub const BLOCK_UNINIT: u16 = 0x2;

#[derive(Debug, Clone)]
pub struct GroupDesc {
    pub raw: Vec<u8>,
    is64: bool,
}

impl GroupDesc {
    pub fn new(raw: Vec<u8>, is64: bool) -> Self {
        GroupDesc { raw, is64 }
    }
    fn hi(&self, o: usize) -> Option<usize> {
        (self.is64 && self.raw.len() >= 64).then_some(o)
    }
    pub fn block_bitmap(&self) -> u64 {
        lo_hi_32(&self.raw, 0x0, self.hi(0x20))
    }
    pub fn inode_bitmap(&self) -> u64 {
        lo_hi_32(&self.raw, 0x4, self.hi(0x24))
    }
    pub fn inode_table(&self) -> u64 {
        lo_hi_32(&self.raw, 0x8, self.hi(0x28))
    }
    pub fn free_blocks(&self) -> u32 {
        lo_hi_16(&self.raw, 0xC, self.hi(0x2C))
    }
    pub fn set_free_blocks(&mut self, v: u32) {
        let h = self.hi(0x2C);
        put_lo_hi_16(&mut self.raw, 0xC, h, v)
    }
    pub fn free_inodes(&self) -> u32 {
        lo_hi_16(&self.raw, 0xE, self.hi(0x2E))
    }
    pub fn set_free_inodes(&mut self, v: u32) {
        let h = self.hi(0x2E);
        put_lo_hi_16(&mut self.raw, 0xE, h, v)
    }
    pub fn used_dirs(&self) -> u32 {
        lo_hi_16(&self.raw, 0x10, self.hi(0x30))
    }
    pub fn set_used_dirs(&mut self, v: u32) {
        let h = self.hi(0x30);
        put_lo_hi_16(&mut self.raw, 0x10, h, v)
    }
    pub fn flags(&self) -> u16 {
        u16_at(&self.raw, 0x12)
    }
    pub fn set_flags(&mut self, v: u16) {
        put_u16(&mut self.raw, 0x12, v)
    }
    pub fn itable_unused(&self) -> u32 {
        lo_hi_16(&self.raw, 0x1C, self.hi(0x32))
    }
    pub fn set_itable_unused(&mut self, v: u32) {
        let h = self.hi(0x32);
        put_lo_hi_16(&mut self.raw, 0x1C, h, v)
    }

    /// Stores the metadata_csum checksums of this group's bitmaps.
    pub fn set_block_bitmap_csum(&mut self, sb: &Superblock, bitmap: &[u8]) {
        let n = (sb.blocks_per_group as usize / 8).min(bitmap.len());
        let c = crc32c(sb.csum_seed, &bitmap[..n]);
        put_u16(&mut self.raw, 0x18, c as u16);
        if sb.desc_size >= 0x3C {
            put_u16(&mut self.raw, 0x38, (c >> 16) as u16);
        }
    }
    pub fn set_inode_bitmap_csum(&mut self, sb: &Superblock, bitmap: &[u8]) {
        let n = (sb.inodes_per_group as usize / 8).min(bitmap.len());
        let c = crc32c(sb.csum_seed, &bitmap[..n]);
        put_u16(&mut self.raw, 0x1A, c as u16);
        if sb.desc_size >= 0x3C {
            put_u16(&mut self.raw, 0x3A, (c >> 16) as u16);
        }
    }

    /// The descriptor checksum for group `g` (crc32c or crc16, whichever the fs uses).
    pub fn checksum(&self, sb: &Superblock, g: u32) -> u16 {
        let n = self.raw.len();
        let body = |b: &[u8]| b.get(..0x1E).unwrap_or(&[]).to_vec();
        if sb.metadata_csum() {
            let mut c = crc32c(sb.csum_seed, &g.to_le_bytes());
            c = crc32c(c, &body(&self.raw));
            c = crc32c(c, &[0, 0]);
            if n > 0x20 {
                c = crc32c(c, &self.raw[0x20..]);
            }
            (c & 0xFFFF) as u16
        } else {
            let mut c = crc16(!0, &sb.uuid);
            c = crc16(c, &g.to_le_bytes());
            c = crc16(c, &body(&self.raw));
            if sb.is_64bit() && n > 0x20 {
                c = crc16(c, &self.raw[0x20..]);
            }
            c
        }
    }

    pub fn update_checksum(&mut self, sb: &Superblock, g: u32) {
        if sb.group_csum() {
            let c = self.checksum(sb, g);
            put_u16(&mut self.raw, 0x1E, c);
        }
    }

    pub fn checksum_ok(&self, sb: &Superblock, g: u32) -> bool {
        !sb.group_csum() || self.checksum(sb, g) == u16_at(&self.raw, 0x1E)
    }
}
