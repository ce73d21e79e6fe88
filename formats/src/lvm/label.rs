//! The PV label ("LABELONE" in one of the first four sectors) and the PV header behind it:
//! the PV's UUID and where its metadata areas are.

use super::crc::{calc_crc, INITIAL};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};

/// Metadata areas per PV: LVM writes one or two.
const MAX_AREAS: usize = 16;

#[derive(Debug, Clone)]
pub struct PvLabel {
    pub uuid: String,
    pub device_size: u64,
    /// (offset, size) of each metadata area, in bytes from the start of the device.
    pub metadata_areas: Vec<(u64, u64)>,
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)?.try_into().ok().map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// LVM prints PV UUIDs in groups 6-4-4-4-4-4-6.
pub fn dashed(uuid: &str) -> String {
    let mut out = String::new();
    let mut pos = 0;
    for (i, n) in [6, 4, 4, 4, 4, 4, 6].iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(uuid.get(pos..pos + n).unwrap_or(""));
        pos += n;
    }
    out
}

pub fn read(dev: &dyn BlockDev) -> Result<Option<PvLabel>> {
    let name = dev.name();
    if dev.len() < 4 * 512 {
        return Ok(None);
    }
    let mut head = vec![0u8; 4 * 512];
    dev.read_at(&mut head, 0)?;
    for s in 0..4usize {
        let sec = head.get(s * 512..(s + 1) * 512).unwrap_or(&[]);
        if sec.get(..8) != Some(b"LABELONE") {
            continue;
        }
        let off = (s * 512) as u64;
        let stored = u32_at(sec, 16).unwrap_or(0);
        let computed = calc_crc(INITIAL, sec.get(20..).unwrap_or(&[]));
        if stored != computed {
            return Err(Error::corrupt(
                name,
                "LVM label",
                off,
                format!("CRC {stored:#010x} does not match the computed {computed:#010x}"),
            ));
        }
        // An intact label records its own sector; one found elsewhere is a stale copy
        // (LVM ignores it too).
        if u64_at(sec, 8) != Some(s as u64) {
            continue;
        }
        if sec.get(24..32) != Some(b"LVM2 001") {
            return Err(Error::unsupported(
                name,
                "an LVM label that is not of type \"LVM2 001\" (LVM1?)",
            ));
        }
        let hdr = u32_at(sec, 20).unwrap_or(0) as usize;
        let pvh = sec.get(hdr..).ok_or_else(|| {
            Error::corrupt(
                name,
                "LVM label",
                off,
                "the PV header offset is outside the sector",
            )
        })?;
        let uuid = pvh
            .get(..32)
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_default();
        let device_size = u64_at(pvh, 32).unwrap_or(0);
        // Two zero-terminated lists of (offset, size): data areas, then metadata areas.
        let mut p = 40usize;
        let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        for list in lists.iter_mut() {
            loop {
                let (Some(o), Some(sz)) = (u64_at(pvh, p), u64_at(pvh, p + 8)) else {
                    return Err(Error::corrupt(
                        name,
                        "LVM PV header",
                        off + hdr as u64,
                        "an area list runs past the label sector",
                    ));
                };
                p += 16;
                if o == 0 && sz == 0 {
                    break;
                }
                if list.len() >= MAX_AREAS {
                    return Err(Error::corrupt(
                        name,
                        "LVM PV header",
                        off + hdr as u64,
                        "too many areas",
                    ));
                }
                list.push((o, sz));
            }
        }
        let [_, metadata_areas] = lists;
        return Ok(Some(PvLabel {
            uuid: dashed(&uuid),
            device_size,
            metadata_areas,
        }));
    }
    Ok(None)
}
