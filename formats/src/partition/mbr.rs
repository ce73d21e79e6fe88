//! The MBR: four primary entries, and logical partitions in a chain of EBRs inside an
//! extended partition. The chain comes from disk bytes, so it is bounded and a loop is
//! corrupt rather than endless.

use super::{Partition, PartitionKind};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};

/// Linux stops at a few hundred logical partitions; a longer chain is hostile.
const MAX_LOGICAL: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub bootable: bool,
    pub kind: u8,
    pub start: u32,
    pub sectors: u32,
}

pub fn entries(sector: &[u8]) -> Option<[Entry; 4]> {
    if sector.get(510..512) != Some(&[0x55, 0xaa]) {
        return None;
    }
    let mut out = [Entry {
        bootable: false,
        kind: 0,
        start: 0,
        sectors: 0,
    }; 4];
    for (i, e) in out.iter_mut().enumerate() {
        let b = sector.get(446 + i * 16..446 + i * 16 + 16)?;
        *e = Entry {
            bootable: b.first() == Some(&0x80),
            kind: *b.get(4)?,
            start: u32::from_le_bytes(b.get(8..12)?.try_into().ok()?),
            sectors: u32::from_le_bytes(b.get(12..16)?.try_into().ok()?),
        };
    }
    Some(out)
}

pub fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

pub fn type_name(kind: u8) -> &'static str {
    match kind {
        0x01 => "FAT12",
        0x04 | 0x06 | 0x0e => "FAT16",
        0x05 | 0x0f | 0x85 => "Extended",
        0x07 => "NTFS/exFAT",
        0x0b | 0x0c => "FAT32",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xee => "GPT protective",
        0xef => "EFI System",
        0xfd => "Linux RAID",
        _ => "unknown",
    }
}

/// Reads the MBR partitions of `dev` with `ss`-byte sectors.
pub fn read(
    dev: &dyn BlockDev,
    sector0: &[u8],
    ss: u64,
    warnings: &mut Vec<String>,
) -> Result<Vec<Partition>> {
    let name = dev.name().to_string();
    let Some(primary) = entries(sector0) else {
        return Ok(Vec::new());
    };
    let disk_sectors = dev.len() / ss;
    let mut parts = Vec::new();
    let mut extended: Option<(u64, u64)> = None;
    for (i, e) in primary.iter().enumerate() {
        if e.kind == 0 || e.sectors == 0 {
            continue;
        }
        let number = i as u32 + 1;
        let start = e.start as u64;
        let end = start + e.sectors as u64;
        if end > disk_sectors {
            warnings.push(format!(
                "partition {number} ends at sector {end}, past the disk's {disk_sectors} sectors; it is left out"
            ));
            continue;
        }
        if is_extended(e.kind) {
            if extended.is_some() {
                warnings.push(format!(
                    "partition {number} is a second extended partition; it is left out"
                ));
                continue;
            }
            extended = Some((start, e.sectors as u64));
        }
        parts.push(Partition {
            number,
            start: start * ss,
            size: e.sectors as u64 * ss,
            type_name: type_name(e.kind).to_string(),
            kind: PartitionKind::Mbr {
                type_byte: e.kind,
                bootable: e.bootable,
                logical: false,
            },
        });
    }
    let Some((ext_start, ext_len)) = extended else {
        return Ok(parts);
    };
    let mut ebr = ext_start;
    let mut seen = std::collections::HashSet::new();
    let mut number = 5;
    let mut buf = vec![0u8; ss as usize];
    for step in 0..=MAX_LOGICAL {
        if step == MAX_LOGICAL {
            warnings.push(format!(
                "more than {MAX_LOGICAL} logical partitions; the rest are left out"
            ));
            break;
        }
        if !seen.insert(ebr) {
            return Err(Error::corrupt(
                &name,
                "MBR extended boot record",
                ebr * ss,
                "the chain of logical partitions loops",
            ));
        }
        if ebr >= disk_sectors {
            return Err(Error::corrupt(
                &name,
                "MBR extended boot record",
                ebr * ss,
                "the chain points past the end of the disk",
            ));
        }
        dev.read_at(&mut buf, ebr * ss)?;
        let Some(ents) = entries(&buf) else {
            if ebr != ext_start {
                warnings.push(format!("the extended boot record at sector {ebr} has no signature; the chain ends there"));
            }
            break;
        };
        let [logical, next, ..] = ents;
        if logical.kind != 0 && logical.sectors != 0 {
            let start = ebr + logical.start as u64;
            let end = start + logical.sectors as u64;
            if end > disk_sectors || end > ext_start + ext_len {
                warnings.push(format!(
                    "logical partition {number} ends past its extended partition; it is left out"
                ));
            } else {
                parts.push(Partition {
                    number,
                    start: start * ss,
                    size: logical.sectors as u64 * ss,
                    type_name: type_name(logical.kind).to_string(),
                    kind: PartitionKind::Mbr {
                        type_byte: logical.kind,
                        bootable: logical.bootable,
                        logical: true,
                    },
                });
            }
            number += 1;
        }
        if !is_extended(next.kind) || next.sectors == 0 {
            break;
        }
        ebr = ext_start + next.start as u64;
    }
    Ok(parts)
}
