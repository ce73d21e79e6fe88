//! The 512-byte hosted sparse extent header ("KDMV"). A stream-optimized file carries it
//! twice: at the start, where the grain directory's place is not known yet (GD_AT_END),
//! and as the footer near the end, with the real place; readers trust the footer.

use super::{GRAIN_SECTORS, GTES_PER_GT};

pub const GD_AT_END: u64 = u64::MAX;
/// Bytes 73..77 let readers detect a file mangled by a text-mode transfer.
const NEWLINE_CHECK: [u8; 4] = [b'\n', b' ', b'\r', b'\n'];
const FLAG_NL_DETECT: u32 = 1 << 0;
const FLAG_RGD: u32 = 1 << 1;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESS_DEFLATE: u16 = 1;

/// The fields that vary between our layouts; all offsets in sectors.
#[derive(Debug, Clone)]
pub struct SparseHeader {
    pub capacity: u64,
    pub desc_offset: u64,
    pub desc_size: u64,
    /// 0 when there is no redundant directory.
    pub rgd_offset: u64,
    pub gd_offset: u64,
    /// Sectors before the first grain.
    pub overhead: u64,
    /// Deflated grains behind markers: the stream-optimized layout, version 3.
    pub stream: bool,
}

impl SparseHeader {
    pub fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        let (version, flags, algo) = if self.stream {
            (
                3u32,
                FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
                COMPRESS_DEFLATE,
            )
        } else {
            // Version 1: version 3 without compression announces changed-block tracking,
            // which makes qemu open the file read-only.
            (1u32, FLAG_NL_DETECT | FLAG_RGD, 0)
        };
        b[0..4].copy_from_slice(b"KDMV");
        b[4..8].copy_from_slice(&version.to_le_bytes());
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        b[28..36].copy_from_slice(&self.desc_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.desc_size.to_le_bytes());
        b[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        // 72: uncleanShutdown stays 0.
        b[73..77].copy_from_slice(&NEWLINE_CHECK);
        b[77..79].copy_from_slice(&algo.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_where_vmware_reads_them() {
        let h = SparseHeader {
            capacity: 9766,
            desc_offset: 1,
            desc_size: 20,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: 128,
            stream: true,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..4], b"KDMV");
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 3);
        assert_eq!(
            u32::from_le_bytes(b[8..12].try_into().unwrap()),
            0x0003_0001
        );
        assert_eq!(u64::from_le_bytes(b[12..20].try_into().unwrap()), 9766);
        assert_eq!(u64::from_le_bytes(b[56..64].try_into().unwrap()), u64::MAX);
        assert_eq!(u64::from_le_bytes(b[64..72].try_into().unwrap()), 128);
        assert_eq!(&b[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes([b[77], b[78]]), 1);
    }
}
