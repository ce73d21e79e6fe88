//! `transplant info` on an export (OVA, OVF, VMX): the guest as the source describes it,
//! then each disk as `info` shows an image, with its partitions and filesystems.

use crate::human;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use transplant_formats::container::{open_export, ExportOptions, GuestDescription};
use transplant_formats::copy::data_bytes;
use transplant_formats::partition::PartitionTable;
use transplant_formats::{BlockDev, ImageInfo, OpenOptions};

#[derive(serde::Serialize)]
struct DiskJson {
    source: String,
    /// "SHA256 pending (checked by convert)", "checked", "not in manifest".
    digest: String,
    info: ImageInfo,
    allocated_bytes: u64,
    partition_table: Option<PartitionTable>,
    filesystems: Vec<FsJson>,
}

#[derive(serde::Serialize)]
struct FsJson {
    device: String,
    device_size: u64,
    #[serde(flatten)]
    probe: Option<transplant_fs::FsProbe>,
}

#[derive(serde::Serialize)]
struct ExportJson {
    filename: String,
    guest: GuestDescription,
    ovf_version: Option<u8>,
    digests_checked: Vec<String>,
    disks: Vec<DiskJson>,
    warnings: Vec<String>,
}

pub fn run(path: &Path, json: bool, open: &OpenOptions) -> Result<()> {
    let export = open_export(
        path,
        &ExportOptions {
            open: open.clone(),
            scratch_dir: None,
        },
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    let opened: Vec<(String, Arc<dyn BlockDev>)> = export
        .disks
        .iter()
        .map(|d| (d.source.clone(), d.image.clone() as Arc<dyn BlockDev>))
        .collect();
    let vols = crate::guest::volumes_of(opened)?;
    let mut disks = Vec::new();
    for (i, d) in export.disks.iter().enumerate() {
        let digest = match &d.check {
            Some(c) => format!("{} pending (checked by convert)", c.entry.algorithm.name()),
            None if export.checked.contains(&d.source) => "checked".into(),
            None => "not checked".into(),
        };
        let filesystems = vols
            .volumes
            .iter()
            .filter(|v| v.disk_index == Some(i))
            .map(|v| FsJson {
                device: v.name.clone(),
                device_size: v.dev.len(),
                probe: v.probe.clone(),
            })
            .collect();
        disks.push(DiskJson {
            source: d.source.clone(),
            digest,
            info: d.image.info(),
            allocated_bytes: data_bytes(&*d.image)?,
            partition_table: vols.layout.disks.get(i).and_then(|x| x.table.clone()),
            filesystems,
        });
    }
    let mut warnings = export.guest.warnings.clone();
    warnings.extend(vols.warnings.iter().cloned());
    let j = ExportJson {
        filename: path.display().to_string(),
        guest: export.guest.clone(),
        ovf_version: export.ovf_version,
        digests_checked: export.checked.clone(),
        disks,
        warnings,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    let g = &j.guest;
    println!("export: {}", j.filename);
    println!(
        "source: {:?}{}",
        g.source,
        j.ovf_version
            .map(|v| format!(" (OVF {})", if v == 2 { "2.0" } else { "1.x" }))
            .unwrap_or_default()
    );
    println!("guest: {}", g.name);
    println!("os type: {}", g.os_type.as_deref().unwrap_or("-"));
    println!(
        "memory: {}",
        g.memory_mib
            .map(|m| format!("{m} MiB"))
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "cpus: {}",
        g.cpus.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
    );
    println!("firmware: {:?}", g.firmware);
    for (i, n) in g.nics.iter().enumerate() {
        println!(
            "nic {i}: mac {}  model {}  network {}",
            n.mac.as_deref().unwrap_or("-"),
            n.virtual_dev.as_deref().unwrap_or("-"),
            n.network.as_deref().unwrap_or("-")
        );
    }
    if !j.digests_checked.is_empty() {
        println!("digests checked: {}", j.digests_checked.join(", "));
    }
    for (i, (d, gd)) in j.disks.iter().zip(&g.disks).enumerate() {
        println!();
        println!(
            "disk {}: {}  on {} {}:{}{}  digest: {}",
            i + 1,
            d.source,
            gd.bus.as_str(),
            gd.controller,
            gd.unit,
            gd.controller_model
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            d.digest
        );
        crate::info::print_info(&d.info, Some(d.allocated_bytes), 1);
        if let Some(t) = &d.partition_table {
            crate::info::print_partitions(t);
        }
        for f in &d.filesystems {
            match &f.probe {
                Some(p) => println!(
                    "  {:<28} {:<12} {:>10}  label {}  uuid {}",
                    f.device,
                    p.kind,
                    human::size(p.size.unwrap_or(f.device_size)),
                    p.label.as_deref().unwrap_or("-"),
                    p.uuid.as_deref().unwrap_or("-")
                ),
                None => println!(
                    "  {:<28} {:<12} {:>10}",
                    f.device,
                    "unknown",
                    human::size(f.device_size)
                ),
            }
        }
    }
    for w in &j.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
