//! The ESX "COWD" sparse header (VMFSSPARSE extents: ESX snapshot deltas, vmfsSparse
//! disks). Its grain directory and grain tables hold 32-bit sector numbers, with a fixed 4096
//! entries per table. Only the fields that locate data are read; the rest (geometry, the
//! old-style parent name) is superseded by the descriptor.

use super::layout::{Layout, Style};
use super::le::u32_at;
use super::sparse_header::MAX_GRAIN_SECTORS;
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 4] = b"COWD";
/// Grain table entries per table, fixed by the format.
pub const GTES_PER_GT: u64 = 4096;

pub fn read(file: &dyn BlockDev) -> Result<Layout> {
    let name = file.name();
    let mut b = [0u8; 44];
    if file.len() < b.len() as u64 {
        return Err(Error::corrupt(
            name,
            "vmdk COWD header",
            0,
            format!("the file is {} bytes, shorter than the header", file.len()),
        ));
    }
    file.read_at(&mut b, 0)?;
    if b.get(..4) != Some(MAGIC.as_slice()) {
        return Err(Error::corrupt(
            name,
            "vmdk COWD header",
            0,
            "the magic is not COWD",
        ));
    }
    let version = u32_at(&b, 4);
    let capacity = u64::from(u32_at(&b, 12));
    let grain = u64::from(u32_at(&b, 16));
    let gd_offset = u64::from(u32_at(&b, 20));
    let gd_entries = u64::from(u32_at(&b, 24));
    if version != 1 && version != 2 {
        return Err(Error::unsupported(
            name,
            format!("COWD sparse extent version {version}"),
        ));
    }
    if grain == 0 || grain > MAX_GRAIN_SECTORS {
        return Err(Error::corrupt(
            name,
            "vmdk COWD header",
            16,
            format!("grain size of {grain} sectors is outside 1..={MAX_GRAIN_SECTORS}"),
        ));
    }
    Ok(Layout {
        style: Style::Cowd,
        compressed: false,
        markers: false,
        grain_sectors: grain,
        gtes_per_gt: GTES_PER_GT,
        entry_size: 4,
        capacity_sectors: capacity,
        gd_offset: gd_offset * 512,
        gd_entries: Some(gd_entries),
        rgd_offset: None,
        structure: "vmdk COWD grain directory",
    })
}
