//! Little-endian fields of on-disk records. Every record is read into a buffer this module's
//! callers sized themselves (a superblock, an inode of `s_inode_size` bytes, one block), so
//! an offset past the end is a bug, not hostile input: reads give 0 and writes do nothing,
//! rather than panicking.

pub fn u8_at(b: &[u8], o: usize) -> u8 {
    b.get(o).copied().unwrap_or(0)
}

pub fn u16_at(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .unwrap_or(0)
}

pub fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

pub fn put_u8(b: &mut [u8], o: usize, v: u8) {
    if let Some(x) = b.get_mut(o) {
        *x = v;
    }
}

pub fn put_u16(b: &mut [u8], o: usize, v: u16) {
    if let Some(s) = b.get_mut(o..o + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

pub fn put_u32(b: &mut [u8], o: usize, v: u32) {
    if let Some(s) = b.get_mut(o..o + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// A 64-bit value split into a low u32 at `lo` and a high u32 at `hi` (group descriptors,
/// superblock counts); `hi` is None where the record is too short to hold it.
pub fn lo_hi_32(b: &[u8], lo: usize, hi: Option<usize>) -> u64 {
    u32_at(b, lo) as u64 | hi.map(|h| (u32_at(b, h) as u64) << 32).unwrap_or(0)
}

pub fn put_lo_hi_32(b: &mut [u8], lo: usize, hi: Option<usize>, v: u64) {
    put_u32(b, lo, v as u32);
    if let Some(h) = hi {
        put_u32(b, h, (v >> 32) as u32);
    }
}

/// As `lo_hi_32` for 16-bit halves (group descriptor counts).
pub fn lo_hi_16(b: &[u8], lo: usize, hi: Option<usize>) -> u32 {
    u16_at(b, lo) as u32 | hi.map(|h| (u16_at(b, h) as u32) << 16).unwrap_or(0)
}

pub fn put_lo_hi_16(b: &mut [u8], lo: usize, hi: Option<usize>, v: u32) {
    put_u16(b, lo, v as u16);
    if let Some(h) = hi {
        put_u16(b, h, (v >> 16) as u16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_never_panic() {
        let mut b = [1u8, 2, 3];
        assert_eq!(u32_at(&b, 1), 0);
        assert_eq!(u16_at(&b, 1), 0x0302);
        put_u32(&mut b, 2, 7);
        assert_eq!(b, [1, 2, 3]);
        assert_eq!(lo_hi_16(&[1, 0, 2, 0], 0, Some(2)), 0x2_0001);
    }
}
