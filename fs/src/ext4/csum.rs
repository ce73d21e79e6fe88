//! The two checksums ext4 uses. `metadata_csum` is crc32c without the final inversion
//! (the kernel's `ext4_chksum`), seeded per filesystem and chained per object (inode
//! number, generation); `gdt_csum`/uninit_bg is the ANSI crc16 over the descriptor.

/// crc32c continued from `seed` with no pre- or post-inversion, as the kernel chains it.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    // The crate works on finished CRCs (inverted in and out); undo both inversions.
    !crc32c::crc32c_append(!seed, data)
}

const fn crc16_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xA001
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC16: [u16; 256] = crc16_table();

/// CRC-16 (polynomial 0x8005, reflected), continued from `crc`.
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc = (crc >> 8) ^ CRC16[((crc ^ b as u16) & 0xff) as usize];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // CRC-32C check value of "123456789" is 0xE3069283 (inverted in and out).
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        // CRC-16/ARC check value is 0xBB3D (init 0).
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
        // Chaining equals one pass.
        assert_eq!(
            crc32c(crc32c(5, b"1234"), b"56789"),
            crc32c(5, b"123456789")
        );
    }
}
