//! LVM2 in user space: PV labels, metadata areas, the VG text metadata, and linear or
//! striped LVs as block devices over the PVs (which may come from several images). No
//! device mapper and nothing activated on the host.
//!
//! Written here rather than with `lamlvm` (linear only, `embedded-io` adapters) or `lvm2`
//! (reads past an LV's end). LV types we cannot map — thin, RAID, mirror, snapshot COW,
//! cache, VDO, writecache, integrity — are listed with the reason and refused when
//! opened, never misread.

mod crc;
mod label;
mod mapped;
mod mda;
pub mod metadata;
mod vg;

use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use std::sync::Arc;

pub use label::PvLabel;
pub use vg::{LogicalVolume, PvRef, Segment, VolumeGroup};

/// A device carrying an LVM2 PV label, with the newest metadata found on it.
#[derive(Clone)]
pub struct PhysicalVolume {
    pub uuid: String,
    pub dev: Arc<dyn BlockDev>,
    pub device_size: u64,
    /// (VG name, seqno, metadata text) from this PV's newest metadata area, if any.
    pub metadata: Option<(String, i64, String)>,
    /// The VG's UUID from that metadata: two guests' disks given together may both
    /// hold a VG named "centos", and they must not be mixed.
    pub vg_uuid: Option<String>,
    /// A damaged metadata area when another one on the PV was good.
    pub warnings: Vec<String>,
}

/// Reads a PV label and metadata from `dev`; `None` if it is not a PV. A damaged metadata
/// area is an error only when no other area of the PV is readable.
pub fn scan_pv(dev: Arc<dyn BlockDev>) -> Result<Option<PhysicalVolume>> {
    let Some(l) = label::read(&*dev)? else {
        return Ok(None);
    };
    let mut best: Option<(String, i64, String, String)> = None;
    let mut errors: Vec<Error> = Vec::new();
    for &(start, size) in &l.metadata_areas {
        let text = match mda::read_text(&*dev, start, size) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let root = match metadata::parse(&text) {
            Ok(r) => r,
            Err((o, d)) => {
                errors.push(Error::corrupt(
                    dev.name(),
                    "LVM metadata text",
                    start,
                    format!("at byte {o}: {d}"),
                ));
                continue;
            }
        };
        let Some((vg, sec)) = metadata::vg_section(&root) else {
            continue;
        };
        let seq = sec.int("seqno").unwrap_or(0);
        if best.as_ref().is_none_or(|b| seq > b.1) {
            let id = sec.str("id").unwrap_or("").to_string();
            best = Some((vg.to_string(), seq, text, id));
        }
    }
    if best.is_none() && !errors.is_empty() {
        return Err(errors.remove(0));
    }
    let warnings = errors
        .iter()
        .map(|e| format!("{e}; another metadata area of the PV was used"))
        .collect();
    let (metadata, vg_uuid) = match best {
        Some((name, seq, text, id)) => (Some((name, seq, text)), Some(id)),
        None => (None, None),
    };
    Ok(Some(PhysicalVolume {
        uuid: l.uuid,
        device_size: l.device_size,
        dev,
        metadata,
        vg_uuid,
        warnings,
    }))
}

/// Groups PVs into VGs (by VG UUID) using the newest metadata any of them carries. PVs
/// without metadata areas are found through the VG's list of PV UUIDs.
pub fn assemble(pvs: Vec<PhysicalVolume>) -> Result<Vec<VolumeGroup>> {
    let mut ids: Vec<String> = Vec::new();
    for pv in &pvs {
        if let Some(id) = &pv.vg_uuid {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
    }
    let mut out = Vec::new();
    for id in ids {
        let newest = pvs
            .iter()
            .filter(|p| p.vg_uuid.as_ref() == Some(&id))
            .filter_map(|p| p.metadata.as_ref().map(|m| (p, m)))
            .max_by_key(|(_, m)| m.1);
        let Some((pv, (vg_name, _, text))) = newest else {
            continue;
        };
        out.push(vg::build_vg(vg_name, text, &pvs, pv.dev.name())?);
    }
    Ok(out)
}
