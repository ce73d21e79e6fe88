//! The region table: where the BAT and the metadata live. Unknown regions marked required
//! must stop us, because their meaning could change how every byte reads.

use super::le::{crc_without, u32_at, u64_at, Guid};

pub const REGION_OFFSETS: [u64; 2] = [192 * 1024, 256 * 1024];
pub const REGION_LEN: usize = 64 * 1024;
pub const BAT_GUID: Guid = Guid::from_str_const("2DC27766-F623-4200-9D64-115E9BFD4A08");
pub const METADATA_GUID: Guid = Guid::from_str_const("8B7CA206-4790-4B9A-B8FE-575F050F886E");

#[derive(Debug, Clone)]
pub struct Region {
    pub guid: Guid,
    pub offset: u64,
    pub length: u32,
    pub required: bool,
}

pub fn parse(b: &[u8]) -> Result<Vec<Region>, String> {
    if b.get(..4) != Some(b"regi") {
        return Err("no \"regi\" signature".into());
    }
    let stored = u32_at(b, 4).ok_or("short")?;
    let computed = crc_without(b.get(..REGION_LEN).ok_or("short")?, 4);
    if stored != computed {
        return Err(format!(
            "CRC-32C {stored:#010x} does not match the computed {computed:#010x}"
        ));
    }
    let count = u32_at(b, 8).ok_or("short")?;
    if count > 2047 {
        return Err(format!("{count} entries, more than the 2047 allowed"));
    }
    let mut out = Vec::new();
    for i in 0..count as usize {
        let e = 16 + i * 32;
        out.push(Region {
            guid: Guid::at(b, e).ok_or("short")?,
            offset: u64_at(b, e + 16).ok_or("short")?,
            length: u32_at(b, e + 24).ok_or("short")?,
            required: u32_at(b, e + 28).ok_or("short")? & 1 != 0,
        });
    }
    Ok(out)
}
