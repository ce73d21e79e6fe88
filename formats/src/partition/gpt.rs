//! GPT: a header at LBA 1 and an entry array, both CRC-protected, with a backup copy at the
//! end of the disk. A damaged primary is common after careless `dd`; the backup is used
//! then, with a warning, instead of declaring the disk empty.

use super::crc32::crc32;
use super::{guid_string, Partition, PartitionKind};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Entries beyond this are hostile (the spec's minimum array holds 128; tools allow a few
/// thousand at most).
const MAX_ENTRIES: u32 = 16384;

pub struct Header {
    pub current_lba: u64,
    pub backup_lba: u64,
    pub disk_guid: String,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
    entries_crc: u32,
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)?.try_into().ok().map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// Parses a header sector; `Err` is the reason it is unusable.
pub fn parse_header(b: &[u8]) -> std::result::Result<Header, String> {
    if b.get(..8) != Some(&SIGNATURE[..]) {
        return Err("no \"EFI PART\" signature".into());
    }
    let size = u32_at(b, 12).ok_or("short")? as usize;
    if !(92..=b.len()).contains(&size) {
        return Err(format!("header size {size} is out of range"));
    }
    let stored = u32_at(b, 16).ok_or("short")?;
    let mut copy = b.get(..size).ok_or("short")?.to_vec();
    copy.get_mut(16..20).ok_or("short")?.fill(0);
    if crc32(&copy) != stored {
        return Err("header CRC32 mismatch".into());
    }
    let count = u32_at(b, 80).ok_or("short")?;
    let entry_size = u32_at(b, 84).ok_or("short")?;
    if count > MAX_ENTRIES {
        return Err(format!("{count} partition entries"));
    }
    if entry_size < 128 || entry_size % 128 != 0 || entry_size > 4096 {
        return Err(format!(
            "entry size {entry_size} is not a multiple of 128 up to 4096"
        ));
    }
    Ok(Header {
        current_lba: u64_at(b, 24).ok_or("short")?,
        backup_lba: u64_at(b, 32).ok_or("short")?,
        disk_guid: guid_string(b.get(56..72).ok_or("short")?),
        entries_lba: u64_at(b, 72).ok_or("short")?,
        count,
        entry_size,
        entries_crc: u32_at(b, 88).ok_or("short")?,
    })
}

/// Reads and checks the entry array a header names.
pub fn read_entries(
    dev: &dyn BlockDev,
    h: &Header,
    ss: u64,
) -> std::result::Result<Vec<Partition>, String> {
    let bytes = h.count as u64 * h.entry_size as u64;
    let start = h
        .entries_lba
        .checked_mul(ss)
        .ok_or("entry array offset overflows")?;
    if start.checked_add(bytes).is_none_or(|e| e > dev.len()) {
        return Err(format!(
            "the entry array at LBA {} runs past the end of the disk",
            h.entries_lba
        ));
    }
    let mut raw = vec![0u8; bytes as usize];
    dev.read_at(&mut raw, start).map_err(|e| e.to_string())?;
    if crc32(&raw) != h.entries_crc {
        return Err("entry array CRC32 mismatch".into());
    }
    let disk_sectors = dev.len() / ss;
    let mut parts = Vec::new();
    for (i, e) in raw.chunks_exact(h.entry_size as usize).enumerate() {
        let type_guid = e.get(0..16).ok_or("short entry")?;
        if type_guid.iter().all(|&b| b == 0) {
            continue;
        }
        let first = u64_at(e, 32).ok_or("short entry")?;
        let last = u64_at(e, 40).ok_or("short entry")?;
        if last < first || last >= disk_sectors {
            return Err(format!(
                "entry {} spans LBA {first}..{last}, outside the disk's {disk_sectors} sectors",
                i + 1
            ));
        }
        let units: Vec<u16> = e
            .get(56..128)
            .ok_or("short entry")?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let type_guid = guid_string(type_guid);
        parts.push(Partition {
            number: i as u32 + 1,
            start: first * ss,
            size: (last - first + 1) * ss,
            type_name: type_name(&type_guid).to_string(),
            kind: PartitionKind::Gpt {
                type_guid,
                unique_guid: guid_string(e.get(16..32).ok_or("short entry")?),
                name: String::from_utf16_lossy(&units),
                attributes: u64_at(e, 48).ok_or("short entry")?,
            },
        });
    }
    Ok(parts)
}

pub fn type_name(guid: &str) -> &'static str {
    match guid {
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" => "EFI System",
        "21686148-6449-6e6f-744e-656564454649" => "BIOS boot",
        "0fc63daf-8483-4772-8e79-3d69d8477de4" => "Linux filesystem",
        "e6d6d379-f507-44c2-a23c-238f2a3df928" => "Linux LVM",
        "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" => "Linux swap",
        "a19d880f-05fc-4d3b-a006-743f0f84911e" => "Linux RAID",
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" => "Linux root (x86-64)",
        "933ac7e1-2eb4-4f13-b844-0e14e2aef915" => "Linux home",
        "bc13c2ff-59e6-4262-a352-b275fd6f7172" => "Linux extended boot",
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7" => "Microsoft basic data",
        "e3c9e316-0b5c-4db8-817d-f92df00215ae" => "Microsoft reserved",
        "de94bba4-06d1-4d40-a16a-bfd50179d6ac" => "Windows recovery",
        _ => "unknown",
    }
}

/// Reads the GPT of `dev` with `ss`-byte sectors: the primary, or the backup when the
/// primary is damaged (with a warning). `Ok(None)` when neither header exists at all.
pub fn read(
    dev: &dyn BlockDev,
    ss: u64,
    warnings: &mut Vec<String>,
) -> Result<Option<(String, Vec<Partition>)>> {
    let name = dev.name().to_string();
    let sectors = dev.len() / ss;
    if sectors < 3 {
        return Ok(None);
    }
    let mut sec = vec![0u8; ss as usize];
    dev.read_at(&mut sec, ss)?;
    let primary = parse_header(&sec);
    let mut problem = match &primary {
        Ok(h) => match read_entries(dev, h, ss) {
            Ok(p) => return Ok(Some((h.disk_guid.clone(), p))),
            Err(e) => e,
        },
        Err(e) => e.clone(),
    };
    let primary_exists = sec.starts_with(SIGNATURE);
    // The backup: where the primary says, else the last sector.
    let mut candidates = vec![sectors - 1];
    if let Ok(h) = &primary {
        if h.backup_lba < sectors && h.backup_lba != sectors - 1 {
            candidates.insert(0, h.backup_lba);
        }
    }
    for lba in candidates {
        dev.read_at(&mut sec, lba * ss)?;
        match parse_header(&sec) {
            Ok(h) => match read_entries(dev, &h, ss) {
                Ok(p) => {
                    warnings.push(format!(
                        "the primary GPT is damaged ({problem}); the backup at LBA {lba} was used. \
                         Repair it with `sgdisk -e`/`gdisk` before booting the guest"
                    ));
                    return Ok(Some((h.disk_guid.clone(), p)));
                }
                Err(e) => problem = format!("{problem}; backup: {e}"),
            },
            Err(e) if sec.starts_with(SIGNATURE) => problem = format!("{problem}; backup: {e}"),
            Err(_) => {}
        }
    }
    if !primary_exists && !problem.contains("backup") {
        // A protective MBR with no GPT at all at this sector size.
        return Ok(None);
    }
    Err(Error::corrupt(
        &name,
        "GPT header",
        ss,
        format!("neither the primary nor the backup GPT is usable: {problem}"),
    ))
}
