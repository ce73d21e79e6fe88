//! The block allocation table's shape. Entries for payload blocks are interleaved with
//! one sector-bitmap entry after every `chunk_ratio` of them (the blocks one 1 MiB bitmap
//! block describes). A dynamic disk never allocates bitmap blocks, but their entries must
//! still be there, so a differencing conversion needs no reshuffle.

use super::MIB;

// NOT_PRESENT (0, what a zeroed entry says): the block is not in the file; a disk
// without parent reads zeroes there.

/// The block reads as zeroes, explicitly.
pub const ZERO: u64 = 2;
/// The block is stored at the entry's offset.
pub const FULLY_PRESENT: u64 = 6;

#[derive(Debug, Clone, Copy)]
pub struct BatLayout {
    pub block_size: u64,
    pub chunk_ratio: u64,
    pub blocks: u64,
}

impl BatLayout {
    pub fn new(virtual_size: u64, block_size: u64, logical_sector: u64) -> BatLayout {
        BatLayout {
            block_size,
            chunk_ratio: (logical_sector << 23) / block_size,
            blocks: virtual_size.div_ceil(block_size),
        }
    }

    /// Payload entries plus the bitmap entries between them; the table ends with the
    /// last payload entry.
    pub fn entries(&self) -> u64 {
        if self.blocks == 0 {
            0
        } else {
            self.blocks + (self.blocks - 1) / self.chunk_ratio
        }
    }

    /// The entry of payload block `block`.
    pub fn index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    pub fn is_bitmap(&self, index: u64) -> bool {
        (index + 1).is_multiple_of(self.chunk_ratio + 1)
    }

    /// The BAT region's length: whole MiB, at least one.
    pub fn region_len(&self) -> u64 {
        (self.entries() * 8).next_multiple_of(MIB).max(MIB)
    }
}

/// An entry: the state in the low 3 bits, the MiB-aligned file offset above.
pub fn entry(offset: u64, state: u64) -> u64 {
    (offset & !(MIB - 1)) | state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving() {
        // 32 MiB blocks, 512-byte sectors: 128 blocks per bitmap block.
        let l = BatLayout::new(10 << 30, 32 << 20, 512);
        assert_eq!(l.chunk_ratio, 128);
        assert_eq!(l.blocks, 320);
        assert_eq!(l.entries(), 320 + 2);
        assert_eq!(l.index(127), 127);
        assert_eq!(l.index(128), 129);
        assert!(l.is_bitmap(128));
        assert!(!l.is_bitmap(129));
        assert_eq!(l.index(319), 321);
        assert_eq!(l.region_len(), MIB);
        // 1 MiB blocks, 4 KiB sectors.
        let l = BatLayout::new(5000192, 1 << 20, 4096);
        assert_eq!(l.chunk_ratio, 32768);
        assert_eq!(l.blocks, 5);
        assert_eq!(l.entries(), 5);
        assert_eq!(entry(7 << 20, FULLY_PRESENT), (7 << 20) | 6);
    }
}
