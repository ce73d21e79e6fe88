//! The metadata region: block size, virtual size, sector sizes, disk id, parent locator.
//! Items are found by GUID; an unknown item marked required is refused, not skipped.

use super::le::{u16_at, u32_at, u64_at, Guid};

pub const FILE_PARAMETERS: Guid = Guid::from_str_const("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
pub const VIRTUAL_DISK_SIZE: Guid = Guid::from_str_const("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
pub const PAGE83: Guid = Guid::from_str_const("BECA12AB-B2E6-4523-93EF-C309E000C746");
pub const LOGICAL_SECTOR: Guid = Guid::from_str_const("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
pub const PHYSICAL_SECTOR: Guid = Guid::from_str_const("CDA348C7-445D-4471-9CC9-E9885251C556");
pub const PARENT_LOCATOR: Guid = Guid::from_str_const("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");

#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub block_size: u32,
    pub leave_blocks_allocated: bool,
    pub has_parent: bool,
    pub virtual_size: u64,
    pub logical_sector: u32,
    pub physical_sector: u32,
    pub disk_id: Option<Guid>,
    /// Parent locator key/value pairs (keys as written: relative_path, ...).
    pub parent: Vec<(String, String)>,
}

/// Parses the region `b` (the whole metadata region). Errors are (offset within the
/// region, detail).
pub fn parse(b: &[u8]) -> Result<Metadata, (u64, String)> {
    if b.get(..8) != Some(b"metadata") {
        return Err((0, "no \"metadata\" signature".into()));
    }
    let count = u16_at(b, 10).ok_or((0, "short".to_string()))? as usize;
    if count > 2047 {
        return Err((10, format!("{count} entries, more than the 2047 allowed")));
    }
    let mut m = Metadata::default();
    let mut seen = [false; 4];
    for i in 0..count {
        let e = 32 + i * 32;
        let short = || (e as u64, "entry runs past the table".to_string());
        let id = Guid::at(b, e).ok_or_else(short)?;
        let off = u32_at(b, e + 16).ok_or_else(short)? as usize;
        let len = u32_at(b, e + 20).ok_or_else(short)? as usize;
        let flags = u32_at(b, e + 24).ok_or_else(short)?;
        let item = off
            .checked_add(len)
            .and_then(|end| b.get(off..end))
            .ok_or((
                e as u64,
                format!("item at {off:#x}+{len:#x} lies outside the metadata region"),
            ))?;
        let bad = |what: &str| (off as u64, format!("{what} item is too short"));
        if id == FILE_PARAMETERS {
            m.block_size = u32_at(item, 0).ok_or_else(|| bad("file parameters"))?;
            let f = u32_at(item, 4).ok_or_else(|| bad("file parameters"))?;
            m.leave_blocks_allocated = f & 1 != 0;
            m.has_parent = f & 2 != 0;
            seen[0] = true;
        } else if id == VIRTUAL_DISK_SIZE {
            m.virtual_size = u64_at(item, 0).ok_or_else(|| bad("virtual disk size"))?;
            seen[1] = true;
        } else if id == LOGICAL_SECTOR {
            m.logical_sector = u32_at(item, 0).ok_or_else(|| bad("logical sector size"))?;
            seen[2] = true;
        } else if id == PHYSICAL_SECTOR {
            m.physical_sector = u32_at(item, 0).ok_or_else(|| bad("physical sector size"))?;
            seen[3] = true;
        } else if id == PAGE83 {
            m.disk_id = Guid::at(item, 0);
        } else if id == PARENT_LOCATOR {
            m.parent = parse_locator(item).map_err(|d| (off as u64, d))?;
        } else if flags & 4 != 0 {
            return Err((e as u64, format!("unknown required metadata item {id}")));
        }
    }
    let names = [
        "file parameters",
        "virtual disk size",
        "logical sector size",
        "physical sector size",
    ];
    for (s, n) in seen.iter().zip(names) {
        if !s {
            return Err((0, format!("the {n} item is missing")));
        }
    }
    Ok(m)
}

fn parse_locator(item: &[u8]) -> Result<Vec<(String, String)>, String> {
    let count = u16_at(item, 18).ok_or("parent locator too short")? as usize;
    let mut out = Vec::new();
    for i in 0..count.min(256) {
        let e = 20 + i * 12;
        let ko = u32_at(item, e).ok_or("parent locator entry past its item")? as usize;
        let vo = u32_at(item, e + 4).ok_or("parent locator entry past its item")? as usize;
        let kl = u16_at(item, e + 8).ok_or("parent locator entry past its item")? as usize;
        let vl = u16_at(item, e + 10).ok_or("parent locator entry past its item")? as usize;
        let utf16 = |o: usize, l: usize| -> Result<String, String> {
            let raw = item
                .get(o..o + l)
                .ok_or("parent locator string outside its item")?;
            let units: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            Ok(String::from_utf16_lossy(&units))
        };
        out.push((utf16(ko, kl)?, utf16(vo, vl)?));
    }
    Ok(out)
}
