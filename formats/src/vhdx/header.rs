//! The two VHDX headers (at 64 KiB and 128 KiB): updates alternate between them, so the
//! valid one with the higher sequence number is current and a torn write of one is survived.

use super::le::{crc_without, u16_at, u32_at, u64_at, Guid};

pub const HEADER_OFFSETS: [u64; 2] = [64 * 1024, 128 * 1024];
pub const HEADER_LEN: usize = 4096;

#[derive(Debug, Clone)]
pub struct Header {
    pub sequence: u64,
    pub data_write_guid: Guid,
    pub log_guid: Guid,
    pub version: u16,
    pub log_length: u32,
    pub log_offset: u64,
}

impl Header {
    pub fn parse(b: &[u8]) -> Result<Header, String> {
        if b.get(..4) != Some(b"head") {
            return Err("no \"head\" signature".into());
        }
        let stored = u32_at(b, 4).ok_or("short")?;
        let computed = crc_without(b.get(..HEADER_LEN).ok_or("short")?, 4);
        if stored != computed {
            return Err(format!(
                "CRC-32C {stored:#010x} does not match the computed {computed:#010x}"
            ));
        }
        Ok(Header {
            sequence: u64_at(b, 8).ok_or("short")?,
            data_write_guid: Guid::at(b, 32).ok_or("short")?,
            log_guid: Guid::at(b, 48).ok_or("short")?,
            version: u16_at(b, 66).ok_or("short")?,
            log_length: u32_at(b, 68).ok_or("short")?,
            log_offset: u64_at(b, 72).ok_or("short")?,
        })
    }
}
