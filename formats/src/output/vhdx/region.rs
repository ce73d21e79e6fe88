//! The region table (two identical copies at 192 KiB and 256 KiB): where the BAT and the
//! metadata region live. Both are marked required, so a reader that does not know one of
//! them refuses the file instead of misreading it.

use super::guid::Guid;

pub const REGION_OFFSETS: [u64; 2] = [192 * 1024, 256 * 1024];
const REGION_LEN: usize = 64 * 1024;
pub const BAT_GUID: Guid = Guid::new(
    0x2DC27766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
pub const METADATA_GUID: Guid = Guid::new(
    0x8B7CA206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);

/// The 64 KiB table for `regions` (GUID, file offset, length), all required, with its
/// CRC-32C over the whole table.
pub fn table(regions: &[(Guid, u64, u32)]) -> Vec<u8> {
    let mut b = vec![0u8; REGION_LEN];
    b[0..4].copy_from_slice(b"regi");
    b[8..12].copy_from_slice(&(regions.len() as u32).to_le_bytes());
    for (i, (guid, offset, len)) in regions.iter().enumerate() {
        let e = 16 + 32 * i;
        b[e..e + 16].copy_from_slice(&guid.0);
        b[e + 16..e + 24].copy_from_slice(&offset.to_le_bytes());
        b[e + 24..e + 28].copy_from_slice(&len.to_le_bytes());
        b[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}
