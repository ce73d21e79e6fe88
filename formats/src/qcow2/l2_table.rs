//! L2 entries: what one cluster (or, with extended L2, each of its 32 subclusters) holds.

/// Bits 9..=55 of an L1 or standard L2 entry: a host offset.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const COMPRESSED: u64 = 1 << 62;
pub const ZERO_FLAG: u64 = 1;

/// What a range of guest bytes maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Stored uncompressed at this host offset.
    Data(u64),
    /// Stored compressed: (host offset, compressed bytes at most).
    Compressed(u64, u64),
    Zero,
    /// Not in this image: the backing file (or zeroes without one).
    Unallocated,
}

/// Decodes a standard L2 entry for the byte at `within` of its cluster. `ext` is the
/// extended-L2 bitmap, if the image has one; returns the mapping and how many bytes from
/// `within` it covers (a subcluster or the rest of the cluster).
pub fn decode(entry: u64, ext: Option<u64>, within: u64, cluster_bits: u32, v3: bool) -> Mapping {
    if entry & COMPRESSED != 0 {
        let x = 62 - (cluster_bits - 8);
        let host = entry & ((1u64 << x) - 1);
        let sectors = ((entry >> x) & ((1u64 << (62 - x)) - 1)) + 1;
        let size = (sectors * 512).saturating_sub(host & 511);
        return Mapping::Compressed(host, size);
    }
    let host = entry & OFFSET_MASK;
    match ext {
        Some(bitmap) => {
            let sc = within >> (cluster_bits - 5);
            if bitmap & (1u64 << (32 + sc)) != 0 {
                Mapping::Zero
            } else if bitmap & (1u64 << sc) != 0 {
                Mapping::Data(host + (sc << (cluster_bits - 5)))
            } else {
                Mapping::Unallocated
            }
        }
        None => {
            if v3 && entry & ZERO_FLAG != 0 {
                Mapping::Zero
            } else if host == 0 {
                Mapping::Unallocated
            } else {
                Mapping::Data(host)
            }
        }
    }
}

/// Bytes from `within` to the end of its unit: a subcluster with extended L2 (except for
/// compressed clusters, which are whole), else the cluster.
pub fn span(within: u64, cluster_bits: u32, ext: bool, compressed: bool) -> u64 {
    let unit = if ext && !compressed {
        1u64 << (cluster_bits - 5)
    } else {
        1u64 << cluster_bits
    };
    unit - within % unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_entries() {
        assert_eq!(decode(0, None, 0, 16, true), Mapping::Unallocated);
        assert_eq!(decode(0x50000, None, 0, 16, true), Mapping::Data(0x50000));
        assert_eq!(decode(0x50000 | 1, None, 0, 16, true), Mapping::Zero);
        // Subcluster 3 allocated, subcluster 4 zero.
        let bm = (1 << 3) | (1u64 << (32 + 4));
        assert_eq!(
            decode(0x50000, Some(bm), 3 * 2048, 16, true),
            Mapping::Data(0x50000 + 3 * 2048)
        );
        assert_eq!(
            decode(0x50000, Some(bm), 4 * 2048 + 5, 16, true),
            Mapping::Zero
        );
        assert_eq!(decode(0x50000, Some(bm), 0, 16, true), Mapping::Unallocated);
        // Compressed: 64 KiB clusters, x = 54; 2 extra sectors at host 0x1234.
        let e = COMPRESSED | (2u64 << 54) | 0x1234;
        assert_eq!(
            decode(e, None, 0, 16, true),
            Mapping::Compressed(0x1234, 3 * 512 - 0x34)
        );
    }
}
