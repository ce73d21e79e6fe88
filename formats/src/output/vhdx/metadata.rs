//! The metadata region: a table of items (at its start) and the items (from 64 KiB on):
//! file parameters, virtual disk size, page 83 identifier, logical and physical sector
//! sizes. All five are required; a dynamic disk has no parent locator.

use super::guid::Guid;

const FILE_PARAMETERS: Guid = Guid::new(
    0xCAA16737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const VIRTUAL_DISK_SIZE: Guid = Guid::new(
    0x2FA54224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const PAGE_83_DATA: Guid = Guid::new(
    0xBECA12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
const LOGICAL_SECTOR_SIZE: Guid = Guid::new(
    0x8141BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
const PHYSICAL_SECTOR_SIZE: Guid = Guid::new(
    0xCDA348C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);

const IS_VIRTUAL_DISK: u32 = 1 << 1;
const IS_REQUIRED: u32 = 1 << 2;
/// Items start after the table's reserved 64 KiB.
const ITEMS_AT: u32 = 64 * 1024;

pub struct Params {
    pub block_size: u32,
    pub virtual_size: u64,
    pub logical_sector: u32,
    pub physical_sector: u32,
    pub page83: Guid,
}

/// The table and items, `ITEMS_AT` + a few bytes long; the rest of the region is zeroes.
pub fn region(p: &Params) -> Vec<u8> {
    let mut file_params = Vec::new();
    file_params.extend_from_slice(&p.block_size.to_le_bytes());
    // Flags: blocks are not left allocated (dynamic), no parent.
    file_params.extend_from_slice(&0u32.to_le_bytes());
    let items: [(Guid, u32, Vec<u8>); 5] = [
        (FILE_PARAMETERS, IS_REQUIRED, file_params),
        (
            VIRTUAL_DISK_SIZE,
            IS_VIRTUAL_DISK | IS_REQUIRED,
            p.virtual_size.to_le_bytes().to_vec(),
        ),
        (
            PAGE_83_DATA,
            IS_VIRTUAL_DISK | IS_REQUIRED,
            p.page83.0.to_vec(),
        ),
        (
            LOGICAL_SECTOR_SIZE,
            IS_VIRTUAL_DISK | IS_REQUIRED,
            p.logical_sector.to_le_bytes().to_vec(),
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            IS_VIRTUAL_DISK | IS_REQUIRED,
            p.physical_sector.to_le_bytes().to_vec(),
        ),
    ];
    let mut b = vec![0u8; ITEMS_AT as usize];
    b[0..8].copy_from_slice(b"metadata");
    b[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    let mut at = ITEMS_AT;
    for (i, (guid, flags, data)) in items.iter().enumerate() {
        let e = 32 + 32 * i;
        b[e..e + 16].copy_from_slice(&guid.0);
        b[e + 16..e + 20].copy_from_slice(&at.to_le_bytes());
        b[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        b[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
        at += data.len() as u32;
    }
    for (_, _, data) in &items {
        b.extend_from_slice(data);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_follow_the_table() {
        let b = region(&Params {
            block_size: 32 << 20,
            virtual_size: 5000192,
            logical_sector: 512,
            physical_sector: 4096,
            page83: Guid::random(),
        });
        assert_eq!(&b[..8], b"metadata");
        assert_eq!(u16::from_le_bytes([b[10], b[11]]), 5);
        assert_eq!(b.len(), 65536 + 8 + 8 + 16 + 4 + 4);
        // Entry 1: the virtual size at 64 KiB + 8.
        assert_eq!(&b[64..80], &VIRTUAL_DISK_SIZE.0);
        assert_eq!(u32::from_le_bytes(b[80..84].try_into().unwrap()), 65544);
        assert_eq!(
            u64::from_le_bytes(b[65544..65552].try_into().unwrap()),
            5000192
        );
        assert_eq!(
            u32::from_le_bytes(b[65536..65540].try_into().unwrap()),
            32 << 20
        );
    }
}
