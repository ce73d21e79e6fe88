//! What a set of disks holds: partition tables, and the LVM volume groups their PVs form.
//! One discovery shared by `info`, `mount --raw` and guest inspection, so they agree on
//! names (`disk@2`, `VG/LV`), and because a VG may span several images given together.

use crate::blockdev::BlockDev;
use crate::error::Result;
use crate::lvm::{assemble, scan_pv, VolumeGroup};
use crate::partition::{read_partitions, PartitionTable};
use std::sync::Arc;

pub struct Disk {
    pub name: String,
    pub dev: Arc<dyn BlockDev>,
    pub table: Option<PartitionTable>,
    /// Partitions (not extended containers) as devices, with their numbers.
    pub partitions: Vec<(u32, Arc<dyn BlockDev>)>,
}

pub struct Layout {
    pub disks: Vec<Disk>,
    pub vgs: Vec<VolumeGroup>,
    /// Problems worth telling (a PV that could not be read, ...).
    pub warnings: Vec<String>,
}

/// Reads partition tables and LVM metadata of `disks` (name, device).
pub fn discover(disks: Vec<(String, Arc<dyn BlockDev>)>) -> Result<Layout> {
    let mut out = Vec::new();
    let mut pvs = Vec::new();
    let mut warnings = Vec::new();
    for (name, dev) in disks {
        let table = read_partitions(&*dev)?;
        let mut partitions: Vec<(u32, Arc<dyn BlockDev>)> = Vec::new();
        if let Some(t) = &table {
            for p in t.partitions.iter().filter(|p| !p.is_extended()) {
                partitions.push((p.number, Arc::new(p.open(dev.clone(), &name)?)));
            }
        }
        // PVs live on partitions, or on the whole disk when it has no table.
        let candidates: Vec<Arc<dyn BlockDev>> = if table.is_some() {
            partitions.iter().map(|(_, d)| d.clone()).collect()
        } else {
            vec![dev.clone()]
        };
        for c in candidates {
            match scan_pv(c.clone()) {
                Ok(Some(pv)) => {
                    warnings.extend(
                        pv.warnings
                            .iter()
                            .map(|w| format!("LVM on {}: {w}", c.name())),
                    );
                    pvs.push(pv)
                }
                Ok(None) => {}
                Err(e) => warnings.push(format!("LVM on {}: {e}", c.name())),
            }
        }
        out.push(Disk {
            name,
            dev,
            table,
            partitions,
        });
    }
    let vgs = if pvs.is_empty() {
        Vec::new()
    } else {
        assemble(pvs)?
    };
    Ok(Layout {
        disks: out,
        vgs,
        warnings,
    })
}
