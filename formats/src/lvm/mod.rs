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

use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use mapped::{MappedDev, MappedSegment, Stripe};
use metadata::{Section, Value};
use std::sync::Arc;

pub use label::PvLabel;

/// A device carrying an LVM2 PV label, with the newest metadata found on it.
#[derive(Clone)]
pub struct PhysicalVolume {
    pub uuid: String,
    pub dev: Arc<dyn BlockDev>,
    pub device_size: u64,
    /// (VG name, seqno, metadata text) from this PV's newest metadata area, if any.
    pub metadata: Option<(String, i64, String)>,
}

/// Reads a PV label and metadata from `dev`; `None` if it is not a PV.
pub fn scan_pv(dev: Arc<dyn BlockDev>) -> Result<Option<PhysicalVolume>> {
    let Some(l) = label::read(&*dev)? else {
        return Ok(None);
    };
    let mut best: Option<(String, i64, String)> = None;
    for &(start, size) in &l.metadata_areas {
        let Some(text) = mda::read_text(&*dev, start, size)? else {
            continue;
        };
        let root = metadata::parse(&text).map_err(|(o, d)| {
            Error::corrupt(
                dev.name(),
                "LVM metadata text",
                start,
                format!("at byte {o}: {d}"),
            )
        })?;
        let Some((vg, sec)) = metadata::vg_section(&root) else {
            continue;
        };
        let seq = sec.int("seqno").unwrap_or(0);
        if best.as_ref().is_none_or(|b| seq > b.1) {
            best = Some((vg.to_string(), seq, text));
        }
    }
    Ok(Some(PhysicalVolume {
        uuid: l.uuid,
        device_size: l.device_size,
        dev,
        metadata: best,
    }))
}

#[derive(Clone, serde::Serialize)]
pub struct PvRef {
    pub name: String,
    pub uuid: String,
    pub pe_start: u64,
    pub pe_count: u64,
    /// Whether the PV's device was among those given.
    pub present: bool,
    #[serde(skip)]
    dev: Option<Arc<dyn BlockDev>>,
}

#[derive(Clone, serde::Serialize)]
pub struct Segment {
    pub start_extent: u64,
    pub extent_count: u64,
    pub kind: String,
    pub stripe_size: u64,
    /// (PV name, first extent on that PV) per stripe.
    pub stripes: Vec<(String, u64)>,
}

#[derive(Clone, serde::Serialize)]
pub struct LogicalVolume {
    pub name: String,
    pub uuid: String,
    pub size: u64,
    pub status: Vec<String>,
    /// "linear", "striped", or the unsupported segment type.
    pub kind: String,
    pub segments: Vec<Segment>,
    /// Why it cannot be opened, if it cannot.
    pub unsupported: Option<String>,
}

#[derive(Clone, serde::Serialize)]
pub struct VolumeGroup {
    pub name: String,
    pub uuid: String,
    pub seqno: i64,
    /// Bytes per extent.
    pub extent_size: u64,
    pub pvs: Vec<PvRef>,
    pub lvs: Vec<LogicalVolume>,
}

const SUPPORTED: [&str; 2] = ["striped", "linear"];

/// Groups PVs into VGs by the newest metadata any of them carries.
pub fn assemble(pvs: Vec<PhysicalVolume>) -> Result<Vec<VolumeGroup>> {
    let mut names: Vec<String> = Vec::new();
    for pv in &pvs {
        if let Some((vg, _, _)) = &pv.metadata {
            if !names.contains(vg) {
                names.push(vg.clone());
            }
        }
    }
    let mut out = Vec::new();
    for vg_name in names {
        let Some(newest) = pvs
            .iter()
            .filter_map(|p| {
                p.metadata
                    .as_ref()
                    .filter(|m| m.0 == vg_name)
                    .map(|m| (p, m))
            })
            .max_by_key(|(_, m)| m.1)
        else {
            continue;
        };
        let (pv, (_, _, text)) = newest;
        out.push(build_vg(&vg_name, text, &pvs, pv.dev.name())?);
    }
    Ok(out)
}

fn corrupt(dev: &str, detail: String) -> Error {
    Error::corrupt(dev, "LVM metadata", 0, detail)
}

fn build_vg(
    vg_name: &str,
    text: &str,
    pvs: &[PhysicalVolume],
    dev_name: &str,
) -> Result<VolumeGroup> {
    let root =
        metadata::parse(text).map_err(|(o, d)| corrupt(dev_name, format!("at byte {o}: {d}")))?;
    let sec = root
        .section(vg_name)
        .ok_or_else(|| corrupt(dev_name, format!("no section for VG {vg_name}")))?;
    let extent_sectors = sec
        .int("extent_size")
        .filter(|&e| e > 0)
        .ok_or_else(|| corrupt(dev_name, "extent_size is missing or not positive".into()))?;
    let extent_size = (extent_sectors as u64)
        .checked_mul(512)
        .ok_or_else(|| corrupt(dev_name, "extent_size overflows".into()))?;
    let mut refs = Vec::new();
    for (name, p) in sec
        .section("physical_volumes")
        .map(|s| s.sections().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let uuid = p.str("id").unwrap_or("").to_string();
        let dev = pvs.iter().find(|x| x.uuid == uuid).map(|x| x.dev.clone());
        refs.push(PvRef {
            name: name.to_string(),
            uuid,
            pe_start: (p.int("pe_start").unwrap_or(0).max(0) as u64).saturating_mul(512),
            pe_count: p.int("pe_count").unwrap_or(0).max(0) as u64,
            present: dev.is_some(),
            dev,
        });
    }
    let mut lvs = Vec::new();
    for (name, l) in sec
        .section("logical_volumes")
        .map(|s| s.sections().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        lvs.push(build_lv(name, l, &refs, extent_size, dev_name)?);
    }
    Ok(VolumeGroup {
        name: vg_name.to_string(),
        uuid: sec.str("id").unwrap_or("").to_string(),
        seqno: sec.int("seqno").unwrap_or(0),
        extent_size,
        pvs: refs,
        lvs,
    })
}

fn build_lv(
    name: &str,
    l: &Section,
    pvs: &[PvRef],
    extent_size: u64,
    dev_name: &str,
) -> Result<LogicalVolume> {
    let mut segments = Vec::new();
    let mut unsupported = None;
    let mut total_extents = 0u64;
    for (_, s) in l.sections() {
        let kind = s.str("type").unwrap_or("?").to_string();
        let start_extent = s.int("start_extent").unwrap_or(-1);
        let extent_count = s.int("extent_count").unwrap_or(-1);
        if start_extent < 0 || extent_count <= 0 {
            return Err(corrupt(
                dev_name,
                format!("LV {name}: a segment without a valid start_extent/extent_count"),
            ));
        }
        let mut stripes = Vec::new();
        if let Some(a) = s.array("stripes") {
            for pair in a.chunks(2) {
                if let [Value::Str(pv), Value::Int(first)] = pair {
                    stripes.push((pv.clone(), (*first).max(0) as u64));
                }
            }
        }
        if !SUPPORTED.contains(&kind.as_str()) && unsupported.is_none() {
            unsupported = Some(format!("segment type '{kind}' (thin, RAID, mirror, snapshot, cache and VDO volumes are not readable)"));
        }
        total_extents = total_extents.saturating_add(extent_count as u64);
        segments.push(Segment {
            start_extent: start_extent as u64,
            extent_count: extent_count as u64,
            kind,
            stripe_size: (s.int("stripe_size").unwrap_or(0).max(0) as u64).saturating_mul(512),
            stripes,
        });
    }
    let size = total_extents
        .checked_mul(extent_size)
        .ok_or_else(|| corrupt(dev_name, format!("LV {name}: size overflows")))?;
    if unsupported.is_none() {
        for seg in &segments {
            for (pv, _) in &seg.stripes {
                match pvs.iter().find(|p| &p.name == pv) {
                    None => {
                        return Err(corrupt(
                            dev_name,
                            format!("LV {name} uses an undeclared PV {pv}"),
                        ))
                    }
                    Some(p) if !p.present => {
                        unsupported = Some(format!("its PV {} ({}) is not among the given disks; give every disk of the VG", p.name, p.uuid));
                    }
                    _ => {}
                }
            }
        }
    }
    let kind = match segments
        .iter()
        .find(|s| !SUPPORTED.contains(&s.kind.as_str()))
    {
        Some(s) => s.kind.clone(),
        None if segments.iter().any(|s| s.stripes.len() > 1) => "striped".into(),
        None => "linear".into(),
    };
    Ok(LogicalVolume {
        name: name.to_string(),
        uuid: l.str("id").unwrap_or("").to_string(),
        size,
        status: l.strings("status"),
        kind,
        segments,
        unsupported,
    })
}

impl VolumeGroup {
    /// Opens an LV as a device named "VG/LV".
    pub fn open_lv(&self, lv: &str) -> Result<Arc<dyn BlockDev>> {
        let full = format!("{}/{}", self.name, lv);
        let l = self
            .lvs
            .iter()
            .find(|l| l.name == lv)
            .ok_or_else(|| Error::refused(&full, "no such logical volume"))?;
        if let Some(why) = &l.unsupported {
            return Err(Error::unsupported(&full, why.clone()));
        }
        let mut segs = Vec::new();
        for s in &l.segments {
            let n = s.stripes.len() as u64;
            if n == 0 || s.extent_count % n != 0 || (n > 1 && s.stripe_size == 0) {
                return Err(Error::corrupt(
                    &full,
                    "LVM segment",
                    s.start_extent,
                    "stripe count and size do not divide the segment",
                ));
            }
            let per_stripe = s.extent_count / n * self.extent_size;
            let mut stripes = Vec::new();
            for (pv, first) in &s.stripes {
                let p = self
                    .pvs
                    .iter()
                    .find(|p| &p.name == pv)
                    .and_then(|p| p.dev.clone().map(|d| (p, d)));
                let Some((p, dev)) = p else {
                    return Err(Error::unsupported(&full, format!("PV {pv} is missing")));
                };
                let start = first
                    .checked_mul(self.extent_size)
                    .and_then(|o| o.checked_add(p.pe_start))
                    .ok_or_else(|| {
                        Error::corrupt(
                            &full,
                            "LVM segment",
                            s.start_extent,
                            "extent offset overflows",
                        )
                    })?;
                if start.checked_add(per_stripe).is_none_or(|e| e > dev.len()) {
                    return Err(Error::corrupt(
                        &full,
                        "LVM segment",
                        s.start_extent,
                        format!("the segment runs past the end of PV {pv} ({})", dev.name()),
                    ));
                }
                stripes.push(Stripe { dev, start });
            }
            segs.push(MappedSegment {
                offset: s.start_extent.saturating_mul(self.extent_size),
                len: s.extent_count.saturating_mul(self.extent_size),
                stripe_size: s.stripe_size,
                stripes,
            });
        }
        Ok(Arc::new(MappedDev::new(full, l.size, segs)))
    }
}
