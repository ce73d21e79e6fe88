//! Partition tables as `Slice`s of a disk: MBR (with extended/logical partitions) and GPT
//! (with its backup), for 512- and 4096-byte sectors.
//!
//! Our own parsers rather than the `gpt`/`mbrman` crates: `gpt` needs `Read + Write + Seek`
//! even to read (so a `&self` block device needs an adapter with a shared cursor), and we
//! want every defect of a hostile table to be an error naming the structure and offset,
//! plus the backup-GPT fallback with a warning; both tables are small enough to own.

mod crc32;
pub mod gpt;
pub mod mbr;

use crate::blockdev::BlockDev;
use crate::error::Result;
use crate::slice::Slice;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Mbr,
    Gpt,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "scheme", rename_all = "lowercase")]
pub enum PartitionKind {
    Mbr {
        type_byte: u8,
        bootable: bool,
        logical: bool,
    },
    Gpt {
        type_guid: String,
        unique_guid: String,
        name: String,
        attributes: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Partition {
    /// As Linux numbers them: 1-4 primary, 5+ logical; GPT entry index + 1.
    pub number: u32,
    /// Byte offset on the disk.
    pub start: u64,
    pub size: u64,
    pub type_name: String,
    pub kind: PartitionKind,
}

impl Partition {
    /// The partition as a device, named like "disk.vmdk@2".
    pub fn open(&self, disk: Arc<dyn BlockDev>, disk_name: &str) -> Result<Slice> {
        Slice::new(
            disk,
            self.start,
            self.size,
            format!("{disk_name}@{}", self.number),
        )
    }

    pub fn is_extended(&self) -> bool {
        matches!(self.kind, PartitionKind::Mbr { type_byte, .. } if mbr::is_extended(type_byte))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionTable {
    pub scheme: Scheme,
    pub sector_size: u64,
    pub disk_guid: Option<String>,
    pub partitions: Vec<Partition>,
    pub warnings: Vec<String>,
}

/// Reads the partition table of `dev`; `None` if it has none (a bare filesystem, an empty
/// disk). GPT is tried with 512- then 4096-byte sectors; MBR uses 512.
pub fn read_partitions(dev: &dyn BlockDev) -> Result<Option<PartitionTable>> {
    if dev.len() < 512 {
        return Ok(None);
    }
    let mut s0 = vec![0u8; 512];
    dev.read_at(&mut s0, 0)?;
    let Some(primary) = mbr::entries(&s0) else {
        return Ok(None);
    };
    let mut warnings = Vec::new();
    if primary.iter().any(|e| e.kind == 0xee) {
        for ss in [512u64, 4096] {
            if dev.len() < ss * 3 {
                continue;
            }
            if let Some((guid, partitions)) = gpt::read(dev, ss, &mut warnings)? {
                return Ok(Some(PartitionTable {
                    scheme: Scheme::Gpt,
                    sector_size: ss,
                    disk_guid: Some(guid),
                    partitions,
                    warnings,
                }));
            }
        }
        warnings.push("a protective MBR without a GPT behind it".into());
        return Ok(Some(PartitionTable {
            scheme: Scheme::Gpt,
            sector_size: 512,
            disk_guid: None,
            partitions: Vec::new(),
            warnings,
        }));
    }
    // A filesystem boot sector (FAT, NTFS) also ends in 55 AA; a table whose entries are
    // all empty or nonsensical is not a partition table.
    if primary.iter().all(|e| e.kind == 0) {
        return Ok(None);
    }
    let partitions = mbr::read(dev, &s0, 512, &mut warnings)?;
    let disk_id = u32::from_le_bytes([s0[440], s0[441], s0[442], s0[443]]);
    Ok(Some(PartitionTable {
        scheme: Scheme::Mbr,
        sector_size: 512,
        disk_guid: Some(format!("{disk_id:08x}")),
        partitions,
        warnings,
    }))
}

/// A GUID in its usual mixed-endian text form, lowercase (as blkid and sgdisk print it).
pub fn guid_string(b: &[u8]) -> String {
    let g = |i: usize| b.get(i).copied().unwrap_or(0);
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g(3), g(2), g(1), g(0), g(5), g(4), g(7), g(6), g(8), g(9), g(10), g(11), g(12), g(13), g(14), g(15)
    )
}
