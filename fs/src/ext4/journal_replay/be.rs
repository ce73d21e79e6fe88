//! Big-endian fields, as JBD2 writes them (ext4 itself is little-endian). Offsets come
//! from fixed layouts within buffers the callers sized; one past the end reads as 0.

pub fn be16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_be_bytes)
        .unwrap_or(0)
}

pub fn be32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

pub fn be64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

pub fn put_be32(b: &mut [u8], o: usize, v: u32) {
    if let Some(s) = b.get_mut(o..o + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// The kernel's `crc32_be` (polynomial 0x04C11DB7, most significant bit first, no
/// inversions), which journal checksum v1 uses over each transaction.
pub fn crc32_be(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        let i = ((crc >> 24) ^ b as u32) & 0xFF;
        crc = (crc << 8) ^ CRC32_BE_TABLE[i as usize];
    }
    crc
}

const CRC32_BE_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_be_known_value() {
        // CRC-32/MPEG-2 of "123456789" (init !0, no final xor, not reflected).
        assert_eq!(crc32_be(!0, b"123456789"), 0x0376_E6E7);
    }
}
