//! L1 and L2 entries as this writer emits them. Guest clusters arrive in increasing
//! order, so only the L2 table being filled is kept in memory: once a cluster past its
//! range arrives it is final and goes to the file. The L1 table (one entry per L2 table,
//! 8 bytes per 512 MiB of disk at 64 KiB clusters) stays in memory until the end.

use crate::error::{Error, Result};

/// Bit 63 of L1 and standard L2 entries: the cluster's refcount is exactly 1. Everything
/// this writer allocates uncompressed is referenced once.
pub const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
/// Bit 0 (version 3): the cluster reads as zeroes, whatever lies below it.
pub const ZERO: u64 = 1;

/// The descriptor of a compressed cluster stored at `host` bytes, `len` bytes long. The
/// split between offset and sector-count bits depends on the cluster size.
pub fn compressed_entry(file: &str, cluster_bits: u32, host: u64, len: u64) -> Result<u64> {
    let x = 62 - (cluster_bits - 8);
    if host >= 1u64 << x {
        return Err(Error::unsupported(
            file,
            "a compressed qcow2 cluster this far into the file for this cluster size",
        ));
    }
    let extra_sectors = (host + len - 1) / 512 - host / 512;
    if extra_sectors >= 1u64 << (cluster_bits - 8) {
        return Err(Error::unsupported(
            file,
            "a compressed cluster larger than the descriptor can express",
        ));
    }
    Ok(COMPRESSED | (extra_sectors << x) | host)
}

/// The L2 table being filled.
pub struct L2Table {
    pub index: u64,
    pub entries: Vec<u64>,
}

impl L2Table {
    pub fn new(index: u64, entries: u64) -> Self {
        L2Table {
            index,
            entries: vec![0; entries as usize],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|&e| e == 0)
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.entries.iter().flat_map(|e| e.to_be_bytes()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_descriptor_split() {
        // 64 KiB clusters: offset in bits 0..54, extra sectors in 54..62.
        let e = compressed_entry("t", 16, 0x10_0100, 1000).unwrap();
        assert_eq!(e & ((1 << 54) - 1), 0x10_0100);
        // Bytes 0x100..0x4e8 touch sectors 0, 1 and 2: two beyond the first.
        assert_eq!((e >> 54) & 0xff, 2);
        assert_ne!(e & COMPRESSED, 0);
        // 512-byte clusters: a single extra-sector bit.
        let e = compressed_entry("t", 9, 0x3ff, 200).unwrap();
        assert_eq!((e >> 61) & 1, 1);
        assert!(compressed_entry("t", 9, 0, 1025).is_err());
    }
}
