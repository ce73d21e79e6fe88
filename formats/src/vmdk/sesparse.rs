//! ESXi "seSparse" extents (space-efficient sparse, the default snapshot format on VMFS 6).
//! VMware does not publish this layout; it is learnt from qemu's reader, which checks every
//! header field strictly, and so do we: a value we have not seen explained is Unsupported
//! rather than guessed at. A journal that still needs replaying is refused the same way.

use super::layout::{Layout, Style};
use super::le::u64_at;
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};

const CONST_MAGIC: u64 = 0xcafe_babe;
const VOLATILE_MAGIC: u64 = 0xcafe_cafe;
const VERSION: u64 = 0x0000_0002_0000_0001;

pub fn read(file: &dyn BlockDev) -> Result<Layout> {
    let name = file.name();
    let len = file.len();
    let corrupt = |at: u64, what: &str, d: String| Error::corrupt(name, what, at, d);
    if len < 512 {
        return Err(corrupt(
            0,
            "vmdk seSparse header",
            format!("the file is {len} bytes, shorter than the header"),
        ));
    }
    let mut h = [0u8; 512];
    file.read_at(&mut h, 0)?;
    if u64_at(&h, 0) != CONST_MAGIC {
        return Err(corrupt(
            0,
            "vmdk seSparse header",
            "the magic is not 0xcafebabe".into(),
        ));
    }
    let version = u64_at(&h, 8);
    if version != VERSION {
        return Err(Error::unsupported(
            name,
            format!("seSparse version {version:#x}"),
        ));
    }
    let capacity = u64_at(&h, 16);
    let grain = u64_at(&h, 24);
    let gt_sectors = u64_at(&h, 32);
    if grain != 8 {
        return Err(Error::unsupported(
            name,
            format!("seSparse grain size of {grain} sectors"),
        ));
    }
    if gt_sectors != 64 {
        return Err(Error::unsupported(
            name,
            format!("seSparse grain table size of {gt_sectors} sectors"),
        ));
    }
    if u64_at(&h, 40) != 0 {
        return Err(Error::unsupported(
            name,
            format!("seSparse flags {:#x}", u64_at(&h, 40)),
        ));
    }
    if (48..80).step_by(8).any(|o| u64_at(&h, o) != 0)
        || h.get(208..).is_some_and(|p| p.iter().any(|&b| b != 0))
    {
        return Err(Error::unsupported(
            name,
            "seSparse header with non-zero reserved fields",
        ));
    }
    let sectors = |o: usize| {
        u64_at(&h, o).checked_mul(512).ok_or_else(|| {
            corrupt(
                o as u64,
                "vmdk seSparse header",
                "an offset overflows".into(),
            )
        })
    };
    let volatile_at = sectors(80)?;
    let gd_offset = sectors(128)?;
    let gd_bytes = sectors(136)?;
    let tables = sectors(144)?;
    let grains = sectors(192)?;
    let mut v = [0u8; 512];
    if volatile_at.checked_add(512).is_none_or(|e| e > len) {
        return Err(corrupt(
            0,
            "vmdk seSparse header",
            format!("the volatile header at {volatile_at:#x} is past the end of the file"),
        ));
    }
    file.read_at(&mut v, volatile_at)?;
    if u64_at(&v, 0) != VOLATILE_MAGIC {
        return Err(corrupt(
            volatile_at,
            "vmdk seSparse volatile header",
            "the magic is not 0xcafecafe".into(),
        ));
    }
    if u64_at(&v, 24) != 0 {
        return Err(Error::unsupported(
            name,
            "a seSparse journal that needs replaying (the snapshot was not closed cleanly); open it once in ESXi first",
        ));
    }
    Ok(Layout {
        style: Style::SeSparse { tables, grains },
        compressed: false,
        markers: false,
        grain_sectors: grain,
        gtes_per_gt: gt_sectors * 512 / 8,
        entry_size: 8,
        capacity_sectors: capacity,
        gd_offset,
        gd_entries: Some(gd_bytes / 8),
        rgd_offset: None,
        structure: "vmdk seSparse grain directory",
    })
}
