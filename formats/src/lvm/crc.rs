//! LVM's checksum: the reflected CRC-32 polynomial, started from 0xf597a6cf and without
//! the final inversion, so neither our GPT CRC nor `crc32c` computes it.

pub const INITIAL: u32 = 0xf597_a6cf;

pub fn calc_crc(initial: u32, data: &[u8]) -> u32 {
    let mut crc = initial;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc
}
