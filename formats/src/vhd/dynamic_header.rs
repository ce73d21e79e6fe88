//! The dynamic disk header ("cxsparse"): where the block table lives, the block size, and
//! for differencing disks the parent's identity and locators.

use super::be::{checksum, hex, u32_at, u64_at};

pub const COOKIE: &[u8; 8] = b"cxsparse";
pub const HEADER_LEN: usize = 1024;

#[derive(Debug, Clone)]
pub struct Locator {
    pub code: u32,
    pub data_len: u32,
    pub data_offset: u64,
}

#[derive(Debug, Clone)]
pub struct DynamicHeader {
    pub table_offset: u64,
    pub max_table_entries: u32,
    pub block_size: u32,
    pub parent_unique_id: String,
    pub parent_name: String,
    pub locators: Vec<Locator>,
}

impl DynamicHeader {
    /// Parses the header; the error is the detail for a Corrupt message.
    pub fn parse(b: &[u8]) -> Result<DynamicHeader, String> {
        let b = b.get(..HEADER_LEN).ok_or("shorter than 1024 bytes")?;
        if b.get(..8) != Some(&COOKIE[..]) {
            return Err("no \"cxsparse\" cookie".into());
        }
        let stored = u32_at(b, 36).ok_or("short")?;
        let computed = checksum(b, 36);
        if stored != computed {
            return Err(format!(
                "checksum {stored:#010x} does not match the computed {computed:#010x}"
            ));
        }
        let name_units: Vec<u16> = b
            .get(64..576)
            .ok_or("short")?
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let mut locators = Vec::new();
        for i in 0..8 {
            let base = 576 + i * 24;
            let code = u32_at(b, base).ok_or("short")?;
            if code == 0 {
                continue;
            }
            locators.push(Locator {
                code,
                data_len: u32_at(b, base + 8).ok_or("short")?,
                data_offset: u64_at(b, base + 16).ok_or("short")?,
            });
        }
        Ok(DynamicHeader {
            table_offset: u64_at(b, 16).ok_or("short")?,
            max_table_entries: u32_at(b, 28).ok_or("short")?,
            block_size: u32_at(b, 32).ok_or("short")?,
            parent_unique_id: hex(b.get(40..56).ok_or("short")?),
            parent_name: String::from_utf16_lossy(&name_units),
            locators,
        })
    }
}

/// Platform codes of parent locators.
pub const W2KU: u32 = u32::from_be_bytes(*b"W2ku");
pub const W2RU: u32 = u32::from_be_bytes(*b"W2ru");
pub const MACX: u32 = u32::from_be_bytes(*b"MacX");
