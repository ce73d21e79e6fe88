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
use crate::error::{Error, Result};
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
    read_partitions_with(dev, None)
}

/// Like [`read_partitions`], with the logical sector size forced: an MBR carries no
/// sector size, so a 4Kn disk partitioned with MBR needs `Some(4096)` from the caller
/// (a `--sector-size` option), or its partitions come out eight times too small.
pub fn read_partitions_with(
    dev: &dyn BlockDev,
    sector_size: Option<u64>,
) -> Result<Option<PartitionTable>> {
    if let Some(ss) = sector_size {
        if ss != 512 && ss != 4096 {
            return Err(Error::unsupported(
                dev.name(),
                format!("a logical sector size of {ss} bytes (512 and 4096 are)"),
            ));
        }
    }
    let sizes: &[u64] = match sector_size {
        Some(512) => &[512],
        Some(_) => &[4096],
        None => &[512, 4096],
    };
    if dev.len() < 512 {
        return Ok(None);
    }
    let mut s0 = vec![0u8; 512];
    dev.read_at(&mut s0, 0)?;
    let mut warnings = Vec::new();
    let Some(primary) = mbr::entries(&s0) else {
        // No MBR signature: a GPT whose protective MBR was wiped is still a GPT.
        for &ss in sizes {
            if dev.len() < ss * 3 || !has_gpt_signature(dev, ss)? {
                continue;
            }
            warnings.push(
                "the protective MBR is missing; the GPT behind it was read. Repair it with \
                 `sgdisk` before booting the guest"
                    .into(),
            );
            return gpt_table(dev, ss, warnings);
        }
        return Ok(None);
    };
    if primary.iter().any(|e| e.kind == 0xee) {
        for &ss in sizes {
            if dev.len() < ss * 3 {
                continue;
            }
            if let Some(t) = gpt_table(dev, ss, std::mem::take(&mut warnings))? {
                return Ok(Some(t));
            }
        }
        warnings.push("a protective MBR without a GPT behind it".into());
        return Ok(Some(PartitionTable {
            scheme: Scheme::Gpt,
            sector_size: sizes.first().copied().unwrap_or(512),
            disk_guid: None,
            partitions: Vec::new(),
            warnings,
        }));
    }
    // A filesystem boot sector (FAT, NTFS) also ends in 55 AA; a table whose entries are
    // all empty is not a partition table.
    if primary.iter().all(|e| e.kind == 0) {
        return Ok(None);
    }
    let ss = sector_size.unwrap_or(512);
    let partitions = mbr::read(dev, &s0, ss, &mut warnings)?;
    let disk_id = u32::from_le_bytes([s0[440], s0[441], s0[442], s0[443]]);
    Ok(Some(PartitionTable {
        scheme: Scheme::Mbr,
        sector_size: ss,
        disk_guid: Some(format!("{disk_id:08x}")),
        partitions,
        warnings,
    }))
}

fn has_gpt_signature(dev: &dyn BlockDev, ss: u64) -> Result<bool> {
    let mut sig = [0u8; 8];
    dev.read_at(&mut sig, ss)?;
    Ok(&sig == b"EFI PART")
}

fn gpt_table(
    dev: &dyn BlockDev,
    ss: u64,
    mut warnings: Vec<String>,
) -> Result<Option<PartitionTable>> {
    Ok(
        gpt::read(dev, ss, &mut warnings)?.map(|(guid, partitions)| PartitionTable {
            scheme: Scheme::Gpt,
            sector_size: ss,
            disk_guid: Some(guid),
            partitions,
            warnings,
        }),
    )
}

/// A GUID in its usual mixed-endian text form, lowercase (as blkid and sgdisk print it).
pub fn guid_string(b: &[u8]) -> String {
    let g = |i: usize| b.get(i).copied().unwrap_or(0);
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g(3), g(2), g(1), g(0), g(5), g(4), g(7), g(6), g(8), g(9), g(10), g(11), g(12), g(13), g(14), g(15)
    )
}
