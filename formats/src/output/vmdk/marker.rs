//! Stream markers. Each compressed grain is framed by a 12-byte marker (its first sector
//! and the deflated size) and padded to a sector; metadata (grain tables, directory,
//! footer) is announced by a whole-sector marker naming its type and length, and a zeroed
//! sector ends the stream. The markers let a reader that cannot seek (an OVA being
//! downloaded) rebuild the disk in one pass.

use super::SECTOR;
use crate::error::{Error, Result};
use libdeflater::{CompressionLvl, Compressor};
use std::cell::RefCell;

pub const GRAIN_TABLE: u32 = 1;
pub const GRAIN_DIRECTORY: u32 = 2;
pub const FOOTER: u32 = 3;

/// A metadata marker: `sectors` of `kind` follow it.
pub fn metadata(sectors: u64, kind: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..8].copy_from_slice(&sectors.to_le_bytes());
    // 8..12: size 0 tells a metadata marker from a grain marker.
    b[12..16].copy_from_slice(&kind.to_le_bytes());
    b
}

/// The end-of-stream marker: a sector of zeroes.
pub const END_OF_STREAM: [u8; 512] = [0u8; 512];

thread_local! {
    /// One compressor per worker thread and level, reused across chunks: building one
    /// allocates its match-finder tables.
    static COMPRESSOR: RefCell<Option<(i32, Compressor)>> = const { RefCell::new(None) };
}

/// Appends to `out` the framed grain for `data` (a whole grain, zero-padded by the caller
/// when the disk ends inside it) starting at sector `lba`: marker, zlib stream, padding to
/// the next sector. Returns the frame's length.
pub fn append_grain(out: &mut Vec<u8>, lba: u64, data: &[u8], level: i32) -> Result<usize> {
    let start = out.len();
    let n = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fresh = !matches!(&*slot, Some((l, _)) if *l == level);
        if fresh {
            let lvl = CompressionLvl::new(level).unwrap_or_default();
            *slot = Some((level, Compressor::new(lvl)));
        }
        let (_, c) = slot.as_mut()?;
        let bound = c.zlib_compress_bound(data.len());
        out.resize(start + 12 + bound, 0);
        c.zlib_compress(data, &mut out[start + 12..]).ok()
    });
    // The bound makes room by construction; a failure would be a libdeflate bug.
    let n = n.filter(|&n| n > 0).ok_or_else(|| {
        Error::io(
            "vmdk",
            std::io::Error::other(format!("deflating the grain at sector {lba} failed")),
        )
    })?;
    out.truncate(start + 12 + n);
    out[start..start + 8].copy_from_slice(&lba.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&(n as u32).to_le_bytes());
    let len = (out.len() - start).next_multiple_of(SECTOR as usize);
    out.resize(start + len, 0);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grain_frame_inflates_back() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut out = vec![7u8; 3];
        let n = append_grain(&mut out, 256, &data, 6).unwrap();
        assert_eq!(out.len(), 3 + n);
        assert_eq!(n % 512, 0);
        let f = &out[3..];
        assert_eq!(u64::from_le_bytes(f[0..8].try_into().unwrap()), 256);
        let size = u32::from_le_bytes(f[8..12].try_into().unwrap()) as usize;
        assert!(size > 0 && 12 + size <= n);
        let mut back = vec![0u8; 65536];
        let got = libdeflater::Decompressor::new()
            .zlib_decompress(&f[12..12 + size], &mut back)
            .unwrap();
        assert_eq!(got, 65536);
        assert_eq!(back, data);
        let m = metadata(4, GRAIN_TABLE);
        assert_eq!(m[0], 4);
        assert_eq!(m[12], 1);
    }
}
