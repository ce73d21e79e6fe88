//! A volume group from its text metadata: PVs, LVs and their segments, checked once when
//! the VG is assembled so `info` can say which LVs are readable, and why not, before
//! anything is opened.
//!
//! Only `striped` segments (one stripe is linear) are mapped. Everything else (thin,
//! RAID, mirror, cache, VDO, ...) is listed with its reason, and so is the copy-on-write
//! store of an old-style snapshot: its segments look linear, but its bytes are exception
//! tables and chunks, not the snapshot's contents, so mapping it would be a misread.

use super::mapped::{MappedDev, MappedSegment, Stripe};
use super::metadata::{Section, Value};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use std::sync::Arc;

#[derive(Clone, serde::Serialize)]
pub struct PvRef {
    /// The name the metadata uses ("pv0").
    pub name: String,
    pub uuid: String,
    /// Bytes from the start of the PV device to its first extent.
    pub pe_start: u64,
    pub pe_count: u64,
    /// Whether the PV's device was among those given.
    pub present: bool,
    /// The device's name, when present ("disk.vmdk@2").
    pub device: Option<String>,
    #[serde(skip)]
    pub(super) dev: Option<Arc<dyn BlockDev>>,
}

#[derive(Clone, serde::Serialize)]
pub struct Segment {
    pub start_extent: u64,
    pub extent_count: u64,
    /// The metadata's segment type: "striped", "thin", "raid1", ...
    pub kind: String,
    /// Bytes per stripe chunk (0 with one stripe).
    pub stripe_size: u64,
    /// (PV name, first extent on that PV) per stripe.
    pub stripes: Vec<(String, u64)>,
}

#[derive(Clone, serde::Serialize)]
pub struct LogicalVolume {
    pub name: String,
    pub uuid: String,
    /// Bytes.
    pub size: u64,
    pub status: Vec<String>,
    /// Whether LVM shows it (`lvs` without `-a`): sub-LVs such as `pool_tdata`,
    /// `lv_rimage_0` or `snapshot0` are hidden.
    pub visible: bool,
    /// "linear", "striped", "snapshot" (a COW store), or the first unsupported segment type.
    pub kind: String,
    pub segments: Vec<Segment>,
    /// Why it cannot be opened although its metadata is fine: an unsupported type, or a
    /// PV that is not among the given disks (the message names its UUID).
    pub unsupported: Option<String>,
    /// Why its metadata is wrong (segments past a PV's end, a bad stripe list, ...).
    pub corrupt: Option<String>,
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

/// The metadata names LVs, PVs and segments; a VG with more of them is hostile.
const MAX_SEGMENTS: usize = 1 << 16;

fn corrupt(dev: &str, detail: String) -> Error {
    Error::corrupt(dev, "LVM metadata", 0, detail)
}

fn non_negative(s: &Section, key: &str) -> Option<u64> {
    s.int(key).and_then(|v| u64::try_from(v).ok())
}

pub(super) fn build_vg(
    vg_name: &str,
    text: &str,
    pvs: &[super::PhysicalVolume],
    dev_name: &str,
) -> Result<VolumeGroup> {
    let root = super::metadata::parse(text)
        .map_err(|(o, d)| corrupt(dev_name, format!("at byte {o}: {d}")))?;
    let sec = root
        .section(vg_name)
        .ok_or_else(|| corrupt(dev_name, format!("no section for VG {vg_name}")))?;
    let extent_sectors = non_negative(sec, "extent_size")
        .filter(|&e| e > 0)
        .ok_or_else(|| corrupt(dev_name, "extent_size is missing or not positive".into()))?;
    let extent_size = extent_sectors
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
        let pe_start = non_negative(p, "pe_start")
            .and_then(|s| s.checked_mul(512))
            .ok_or_else(|| corrupt(dev_name, format!("PV {name}: bad pe_start")))?;
        refs.push(PvRef {
            name: name.to_string(),
            uuid,
            pe_start,
            pe_count: non_negative(p, "pe_count").unwrap_or(0),
            present: dev.is_some(),
            device: dev.as_ref().map(|d| d.name().to_string()),
            dev,
        });
    }
    let lv_sections: Vec<(&str, &Section)> = sec
        .section("logical_volumes")
        .map(|s| s.sections().collect())
        .unwrap_or_default();
    // Old-style snapshots: which LVs are COW stores, and which origins are being merged.
    let mut cow_of: Vec<(String, String)> = Vec::new();
    let mut merging: Vec<String> = Vec::new();
    for (_, l) in &lv_sections {
        for (_, s) in l.sections() {
            if s.str("type") != Some("snapshot") {
                continue;
            }
            let origin = s.str("origin").unwrap_or("?").to_string();
            if let Some(c) = s.str("cow_store") {
                cow_of.push((c.to_string(), origin));
            } else if let Some(c) = s.str("merging_store") {
                cow_of.push((c.to_string(), origin.clone()));
                merging.push(origin);
            }
        }
    }
    let full = |lv: &str| format!("{vg_name}/{lv}");
    let mut lvs = Vec::new();
    for (name, l) in lv_sections {
        let mut lv = parse_lv(name, l, extent_size);
        if lv.unsupported.is_none() {
            if let Some((_, origin)) = cow_of.iter().find(|(c, _)| c == name) {
                lv.kind = "snapshot".into();
                // LVM shows the COW store under the snapshot's name, though not flagged
                // VISIBLE in the metadata.
                lv.visible = true;
                lv.unsupported = Some(format!(
                    "the copy-on-write store of a snapshot of {origin}: its bytes are not the snapshot's contents"
                ));
            } else if merging.iter().any(|o| o == name) {
                lv.unsupported = Some(
                    "a snapshot is being merged into it; its bytes are half old, half new".into(),
                );
            }
        }
        if lv.unsupported.is_none() && lv.corrupt.is_none() {
            match plan(&full(name), &lv, &refs, extent_size) {
                Ok(_) => {}
                Err(Error::Unsupported { feature, .. }) => lv.unsupported = Some(feature),
                Err(Error::Corrupt { detail, .. }) => lv.corrupt = Some(detail),
                Err(e) => return Err(e),
            }
        }
        lvs.push(lv);
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

/// Reads an LV's segments. Problems are recorded on the LV, never fatal to the VG: one
/// bad LV must not hide the others.
fn parse_lv(name: &str, l: &Section, extent_size: u64) -> LogicalVolume {
    let status = l.strings("status");
    let mut lv = LogicalVolume {
        name: name.to_string(),
        uuid: l.str("id").unwrap_or("").to_string(),
        size: 0,
        visible: status.iter().any(|s| s == "VISIBLE"),
        status,
        kind: "linear".into(),
        segments: Vec::new(),
        unsupported: None,
        corrupt: None,
    };
    let mut problem: Option<String> = None;
    for (seg_name, s) in l.sections() {
        if lv.segments.len() >= MAX_SEGMENTS {
            problem.get_or_insert_with(|| "too many segments".into());
            break;
        }
        let kind = s.str("type").unwrap_or("?").to_string();
        let (Some(start_extent), Some(extent_count)) = (
            non_negative(s, "start_extent"),
            non_negative(s, "extent_count").filter(|&c| c > 0),
        ) else {
            problem.get_or_insert_with(|| {
                format!("{seg_name} has no valid start_extent/extent_count")
            });
            continue;
        };
        let mut stripes = Vec::new();
        let mut stripe_size = 0;
        if kind == "striped" {
            match stripe_list(s) {
                Ok((list, size)) => {
                    stripes = list;
                    stripe_size = size;
                }
                Err(e) => {
                    problem.get_or_insert_with(|| format!("{seg_name}: {e}"));
                }
            }
        } else if lv.unsupported.is_none() {
            lv.kind = kind.clone();
            lv.unsupported = Some(format!(
                "segment type '{kind}' (thin, RAID, mirror, snapshot, cache, VDO, writecache \
                 and integrity volumes are not readable)"
            ));
        }
        lv.segments.push(Segment {
            start_extent,
            extent_count,
            kind,
            stripe_size,
            stripes,
        });
    }
    lv.segments.sort_by_key(|s| s.start_extent);
    // Segments must tile the LV from extent 0, or some offsets would map nowhere.
    let mut next = 0u64;
    for s in &lv.segments {
        if s.start_extent != next {
            problem.get_or_insert_with(|| {
                format!(
                    "segments leave a gap or overlap at extent {next} (next starts at {})",
                    s.start_extent
                )
            });
            break;
        }
        next = next.saturating_add(s.extent_count);
    }
    match next.checked_mul(extent_size) {
        Some(size) => lv.size = size,
        None => {
            problem.get_or_insert_with(|| format!("{next} extents overflow a 64-bit size"));
        }
    }
    if lv.unsupported.is_none() && lv.segments.iter().any(|s| s.stripes.len() > 1) {
        lv.kind = "striped".into();
    }
    if lv.segments.is_empty() {
        problem.get_or_insert_with(|| "no segments".into());
    }
    lv.corrupt = problem;
    lv
}

/// The `stripes = [ "pv0", 0, "pv1", 0 ]` list of a striped segment, checked against
/// `stripe_count` so a malformed pair cannot silently turn two stripes into one.
fn stripe_list(s: &Section) -> std::result::Result<(Vec<(String, u64)>, u64), String> {
    let count = non_negative(s, "stripe_count")
        .filter(|&c| c > 0)
        .ok_or("no valid stripe_count")?;
    let a = s.array("stripes").ok_or("no stripes list")?;
    if a.len() % 2 != 0 || (a.len() / 2) as u64 != count {
        return Err(format!(
            "stripe_count is {count} but the stripes list has {} items",
            a.len()
        ));
    }
    let mut out = Vec::new();
    for pair in a.chunks_exact(2) {
        match pair {
            [Value::Str(pv), Value::Int(first)] if *first >= 0 => {
                out.push((pv.clone(), *first as u64))
            }
            _ => return Err("a stripes entry is not a (PV name, extent) pair".into()),
        }
    }
    let size = if count > 1 {
        non_negative(s, "stripe_size")
            .filter(|&z| z > 0)
            .and_then(|z| z.checked_mul(512))
            .ok_or("several stripes but no valid stripe_size")?
    } else {
        0
    };
    Ok((out, size))
}

/// Where each segment of `lv` lies on which device. Checked at assembly (to list what is
/// readable) and again when opened.
fn plan(
    full: &str,
    lv: &LogicalVolume,
    pvs: &[PvRef],
    extent_size: u64,
) -> Result<Vec<MappedSegment>> {
    let bad = |s: &Segment, d: String| Error::corrupt(full, "LVM segment", s.start_extent, d);
    let mut segs = Vec::new();
    for s in &lv.segments {
        let n = s.stripes.len() as u64;
        if n == 0 || s.extent_count % n != 0 {
            return Err(bad(
                s,
                format!("{} extents do not divide into {n} stripes", s.extent_count),
            ));
        }
        let per_stripe_extents = s.extent_count / n;
        let per_stripe = per_stripe_extents
            .checked_mul(extent_size)
            .ok_or_else(|| bad(s, "the segment size overflows".into()))?;
        if n > 1 && per_stripe % s.stripe_size != 0 {
            return Err(bad(
                s,
                format!(
                    "stripe size {} does not divide the {per_stripe} bytes of each stripe",
                    s.stripe_size
                ),
            ));
        }
        let mut stripes = Vec::new();
        for (pv, first) in &s.stripes {
            let p = pvs
                .iter()
                .find(|p| &p.name == pv)
                .ok_or_else(|| bad(s, format!("it uses an undeclared PV {pv}")))?;
            let Some(dev) = p.dev.clone() else {
                return Err(Error::unsupported(
                    full,
                    format!(
                        "incomplete: its PV {} (UUID {}) is not among the given disks; give every disk of the VG",
                        p.name, p.uuid
                    ),
                ));
            };
            if first
                .checked_add(per_stripe_extents)
                .is_none_or(|e| e > p.pe_count)
            {
                return Err(bad(
                    s,
                    format!(
                        "extents {first}+{per_stripe_extents} lie past the {} extents of PV {pv}",
                        p.pe_count
                    ),
                ));
            }
            let start = first
                .checked_mul(extent_size)
                .and_then(|o| o.checked_add(p.pe_start))
                .ok_or_else(|| bad(s, "extent offset overflows".into()))?;
            if start.checked_add(per_stripe).is_none_or(|e| e > dev.len()) {
                return Err(bad(
                    s,
                    format!("the segment runs past the end of PV {pv} ({})", dev.name()),
                ));
            }
            stripes.push(Stripe { dev, start });
        }
        segs.push(MappedSegment {
            offset: s.start_extent.saturating_mul(extent_size),
            len: s.extent_count.saturating_mul(extent_size),
            stripe_size: s.stripe_size,
            stripes,
        });
    }
    Ok(segs)
}

impl VolumeGroup {
    pub fn lv(&self, name: &str) -> Option<&LogicalVolume> {
        self.lvs.iter().find(|l| l.name == name)
    }

    /// Opens an LV as a device named "VG/LV", writable only where its PV devices are.
    /// Unsupported for the types listed above and for LVs with a missing PV; Corrupt for
    /// bad metadata.
    pub fn open_lv(&self, lv: &str) -> Result<Arc<dyn BlockDev>> {
        let full = format!("{}/{}", self.name, lv);
        let l = self
            .lv(lv)
            .ok_or_else(|| Error::refused(&full, "no such logical volume"))?;
        if let Some(why) = &l.unsupported {
            return Err(Error::unsupported(&full, why.clone()));
        }
        if let Some(why) = &l.corrupt {
            return Err(Error::corrupt(&full, "LVM metadata", 0, why.clone()));
        }
        let segs = plan(&full, l, &self.pvs, self.extent_size)?;
        Ok(Arc::new(MappedDev::new(full, l.size, segs)))
    }
}
