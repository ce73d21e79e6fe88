//! One on-disk inode: its raw `s_inode_size` bytes with accessors for the fields the
//! writer reads or changes, time encoding with the extra (nanosecond, epoch) fields, and
//! the metadata_csum inode checksum.

use super::csum::crc32c;
use super::le::*;
use crate::{FileKind, Time};

pub const ROOT_INO: u32 = 2;

pub mod flags {
    pub const IMMUTABLE: u32 = 0x10;
    pub const APPEND: u32 = 0x20;
    pub const ENCRYPT: u32 = 0x800;
    pub const INDEX: u32 = 0x1000;
    pub const HUGE_FILE: u32 = 0x40000;
    pub const EXTENTS: u32 = 0x80000;
    pub const VERITY: u32 = 0x100000;
    pub const EA_INODE: u32 = 0x200000;
    pub const INLINE_DATA: u32 = 0x1000_0000;
    pub const CASEFOLD: u32 = 0x4000_0000;
}

pub const S_IFMT: u16 = 0xF000;
pub const S_IFREG: u16 = 0x8000;
pub const S_IFDIR: u16 = 0x4000;
pub const S_IFLNK: u16 = 0xA000;

/// Field offsets.
const MODE: usize = 0x0;
const UID: usize = 0x2;
const SIZE: usize = 0x4;
const ATIME: usize = 0x8;
const CTIME: usize = 0xC;
const MTIME: usize = 0x10;
const DTIME: usize = 0x14;
const GID: usize = 0x18;
const LINKS: usize = 0x1A;
const BLOCKS: usize = 0x1C;
const FLAGS: usize = 0x20;
pub const I_BLOCK: usize = 0x28;
pub const I_BLOCK_LEN: usize = 60;
const GENERATION: usize = 0x64;
const FILE_ACL: usize = 0x68;
const SIZE_HIGH: usize = 0x6C;
const BLOCKS_HIGH: usize = 0x74;
const FILE_ACL_HIGH: usize = 0x76;
const UID_HIGH: usize = 0x78;
const GID_HIGH: usize = 0x7A;
const CSUM_LO: usize = 0x7C;
const EXTRA_ISIZE: usize = 0x80;
const CSUM_HI: usize = 0x82;
const CTIME_EXTRA: usize = 0x84;
const MTIME_EXTRA: usize = 0x88;
const ATIME_EXTRA: usize = 0x8C;
const CRTIME: usize = 0x90;
const CRTIME_EXTRA: usize = 0x94;

#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: u32,
    pub raw: Vec<u8>,
}

fn decode_time(secs: u32, extra: Option<u32>) -> Time {
    let base = secs as i32 as i64;
    match extra {
        Some(x) => Time {
            secs: base + (((x & 3) as i64) << 32),
            nanos: (x >> 2).min(999_999_999),
        },
        None => Time {
            secs: base,
            nanos: 0,
        },
    }
}

fn encode_time(t: Time) -> (u32, u32) {
    let lo = t.secs as i32;
    let epoch = ((t.secs - lo as i64) >> 32) as u32 & 3;
    (lo as u32, epoch | (t.nanos.min(999_999_999) << 2))
}

impl Inode {
    /// A zeroed inode of `size` bytes with the extra fields sized for the filesystem.
    pub fn new(ino: u32, size: usize, extra_isize: u16) -> Self {
        let mut raw = vec![0u8; size];
        if size > 128 {
            put_u16(&mut raw, EXTRA_ISIZE, extra_isize.min((size - 128) as u16));
        }
        Inode { ino, raw }
    }

    pub fn mode(&self) -> u16 {
        u16_at(&self.raw, MODE)
    }
    pub fn set_mode(&mut self, m: u16) {
        put_u16(&mut self.raw, MODE, m)
    }
    pub fn kind(&self) -> FileKind {
        match self.mode() & S_IFMT {
            S_IFDIR => FileKind::Dir,
            S_IFLNK => FileKind::Symlink,
            0x2000 => FileKind::CharDevice,
            0x6000 => FileKind::BlockDevice,
            0x1000 => FileKind::Fifo,
            0xC000 => FileKind::Socket,
            _ => FileKind::File,
        }
    }
    pub fn is_dir(&self) -> bool {
        self.mode() & S_IFMT == S_IFDIR
    }
    pub fn uid(&self) -> u32 {
        u16_at(&self.raw, UID) as u32 | (u16_at(&self.raw, UID_HIGH) as u32) << 16
    }
    pub fn set_uid(&mut self, v: u32) {
        put_u16(&mut self.raw, UID, v as u16);
        put_u16(&mut self.raw, UID_HIGH, (v >> 16) as u16);
    }
    pub fn gid(&self) -> u32 {
        u16_at(&self.raw, GID) as u32 | (u16_at(&self.raw, GID_HIGH) as u32) << 16
    }
    pub fn set_gid(&mut self, v: u32) {
        put_u16(&mut self.raw, GID, v as u16);
        put_u16(&mut self.raw, GID_HIGH, (v >> 16) as u16);
    }
    pub fn size(&self) -> u64 {
        u32_at(&self.raw, SIZE) as u64 | (u32_at(&self.raw, SIZE_HIGH) as u64) << 32
    }
    pub fn set_size(&mut self, v: u64) {
        put_u32(&mut self.raw, SIZE, v as u32);
        put_u32(&mut self.raw, SIZE_HIGH, (v >> 32) as u32);
    }
    pub fn links(&self) -> u16 {
        u16_at(&self.raw, LINKS)
    }
    pub fn set_links(&mut self, v: u16) {
        put_u16(&mut self.raw, LINKS, v)
    }
    pub fn flags(&self) -> u32 {
        u32_at(&self.raw, FLAGS)
    }
    pub fn set_flags(&mut self, v: u32) {
        put_u32(&mut self.raw, FLAGS, v)
    }
    pub fn generation(&self) -> u32 {
        u32_at(&self.raw, GENERATION)
    }
    pub fn set_generation(&mut self, v: u32) {
        put_u32(&mut self.raw, GENERATION, v)
    }
    pub fn file_acl(&self) -> u64 {
        u32_at(&self.raw, FILE_ACL) as u64 | (u16_at(&self.raw, FILE_ACL_HIGH) as u64) << 32
    }
    pub fn set_file_acl(&mut self, v: u64) {
        put_u32(&mut self.raw, FILE_ACL, v as u32);
        put_u16(&mut self.raw, FILE_ACL_HIGH, (v >> 32) as u16);
    }
    /// i_blocks in 512-byte sectors (fs blocks when HUGE_FILE is set on the inode).
    pub fn blocks_raw(&self) -> u64 {
        u32_at(&self.raw, BLOCKS) as u64 | (u16_at(&self.raw, BLOCKS_HIGH) as u64) << 32
    }
    /// Sets i_blocks from a count of filesystem blocks; false if it does not fit.
    pub fn set_fs_blocks(&mut self, blocks: u64, block_size: u64, huge_file: bool) -> bool {
        let sectors = blocks.saturating_mul(block_size / 512);
        let limit = if huge_file { 1u64 << 48 } else { 1u64 << 32 };
        if sectors >= limit {
            return false;
        }
        self.set_flags(self.flags() & !flags::HUGE_FILE);
        put_u32(&mut self.raw, BLOCKS, sectors as u32);
        put_u16(&mut self.raw, BLOCKS_HIGH, (sectors >> 32) as u16);
        true
    }
    pub fn i_block(&self) -> &[u8] {
        self.raw.get(I_BLOCK..I_BLOCK + I_BLOCK_LEN).unwrap_or(&[])
    }
    pub fn set_i_block(&mut self, b: &[u8; I_BLOCK_LEN]) {
        if let Some(s) = self.raw.get_mut(I_BLOCK..I_BLOCK + I_BLOCK_LEN) {
            s.copy_from_slice(b);
        }
    }
    pub fn set_dtime(&mut self, secs: u32) {
        put_u32(&mut self.raw, DTIME, secs)
    }

    fn extra_isize(&self) -> usize {
        if self.raw.len() > 128 {
            (u16_at(&self.raw, EXTRA_ISIZE) as usize).min(self.raw.len() - 128)
        } else {
            0
        }
    }
    /// Whether the extra field at `off` (ending at off+4) lies inside i_extra_isize.
    fn has_extra(&self, off: usize) -> bool {
        off + 4 <= 128 + self.extra_isize()
    }
    fn time(&self, base: usize, extra: usize) -> Time {
        let x = self.has_extra(extra).then(|| u32_at(&self.raw, extra));
        decode_time(u32_at(&self.raw, base), x)
    }
    fn set_time(&mut self, base: usize, extra: usize, t: Time) {
        let (lo, x) = encode_time(t);
        put_u32(&mut self.raw, base, lo);
        if self.has_extra(extra) {
            put_u32(&mut self.raw, extra, x);
        }
    }
    pub fn atime(&self) -> Time {
        self.time(ATIME, ATIME_EXTRA)
    }
    pub fn mtime(&self) -> Time {
        self.time(MTIME, MTIME_EXTRA)
    }
    pub fn crtime(&self) -> Option<Time> {
        self.has_extra(CRTIME)
            .then(|| self.time(CRTIME, CRTIME_EXTRA))
    }
    pub fn set_atime(&mut self, t: Time) {
        self.set_time(ATIME, ATIME_EXTRA, t)
    }
    pub fn set_mtime(&mut self, t: Time) {
        self.set_time(MTIME, MTIME_EXTRA, t)
    }
    pub fn set_ctime(&mut self, t: Time) {
        self.set_time(CTIME, CTIME_EXTRA, t)
    }
    pub fn set_crtime(&mut self, t: Time) {
        if self.has_extra(CRTIME) {
            self.set_time(CRTIME, CRTIME_EXTRA, t)
        }
    }

    /// The seed that chains this inode's other checksums (extent blocks, directory blocks).
    pub fn csum_seed(&self, fs_seed: u32) -> u32 {
        let c = crc32c(fs_seed, &self.ino.to_le_bytes());
        crc32c(c, &self.generation().to_le_bytes())
    }

    fn checksum(&self, fs_seed: u32) -> u32 {
        let r = &self.raw;
        let mut c = self.csum_seed(fs_seed);
        c = crc32c(c, r.get(..CSUM_LO).unwrap_or(&[]));
        c = crc32c(c, &[0, 0]);
        c = crc32c(c, r.get(CSUM_LO + 2..128).unwrap_or(&[]));
        if r.len() > 128 {
            if self.extra_isize() >= 4 {
                c = crc32c(c, r.get(128..CSUM_HI).unwrap_or(&[]));
                c = crc32c(c, &[0, 0]);
                c = crc32c(c, r.get(CSUM_HI + 2..).unwrap_or(&[]));
            } else {
                c = crc32c(c, r.get(128..).unwrap_or(&[]));
            }
        }
        c
    }

    pub fn update_checksum(&mut self, fs_seed: u32) {
        let c = self.checksum(fs_seed);
        put_u16(&mut self.raw, CSUM_LO, c as u16);
        if self.extra_isize() >= 4 {
            put_u16(&mut self.raw, CSUM_HI, (c >> 16) as u16);
        }
    }

    pub fn checksum_ok(&self, fs_seed: u32) -> bool {
        let c = self.checksum(fs_seed);
        let lo_ok = u16_at(&self.raw, CSUM_LO) == c as u16;
        if self.extra_isize() >= 4 {
            lo_ok && u16_at(&self.raw, CSUM_HI) == (c >> 16) as u16
        } else {
            lo_ok
        }
    }

    /// A fast symlink keeps its target in i_block: the kernel's test, no data blocks
    /// charged beyond an xattr block.
    pub fn is_fast_symlink(&self, block_size: u64) -> bool {
        let ea = if self.file_acl() != 0 {
            block_size / 512
        } else {
            0
        };
        self.kind() == FileKind::Symlink
            && self.flags() & flags::INLINE_DATA == 0
            && self.blocks_raw() == ea
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_past_2038() {
        let mut i = Inode::new(12, 256, 32);
        let t = Time {
            secs: 5_000_000_000,
            nanos: 123_456_789,
        };
        i.set_mtime(t);
        assert_eq!(i.mtime(), t);
        let neg = Time {
            secs: -100,
            nanos: 0,
        };
        i.set_atime(neg);
        assert_eq!(i.atime(), neg);
        let small = Inode::new(12, 128, 32);
        assert_eq!(small.crtime(), None);
    }

    #[test]
    fn checksum_round_trip() {
        let mut i = Inode::new(12, 256, 32);
        i.set_mode(S_IFREG | 0o644);
        i.update_checksum(0x1234);
        assert!(i.checksum_ok(0x1234));
        i.set_uid(5);
        assert!(!i.checksum_ok(0x1234));
    }
}
