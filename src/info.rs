//! `transplant info`: what an image is, for people and (with `--json`) for scripts.

use crate::{human, OpenArgs};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use transplant_formats::lvm::VolumeGroup;
use transplant_formats::partition::{PartitionKind, PartitionTable};
use transplant_formats::{copy::data_bytes, open_image, ImageInfo};

/// Show an image's format, sizes, backing chain or extents, and state.
///
/// The format is found by magic bytes; a file that matches none is reported as raw, with
/// "probed as raw" so a renamed or damaged image does not pass silently.
#[derive(Args)]
pub struct InfoArgs {
    /// The image file (raw, qcow2, vmdk, vhdx, vhd) or block device.
    image: PathBuf,
    /// Print JSON (the schema is documented in the README and stable).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// `info --json` output: the image's own description plus what the extent map says.
#[derive(serde::Serialize)]
struct InfoJson {
    #[serde(flatten)]
    info: ImageInfo,
    /// Bytes of the virtual disk that hold data (this image and its backing chain).
    allocated_bytes: u64,
    /// The partition table, if the disk has one.
    partition_table: Option<PartitionTable>,
    /// LVM volume groups whose PVs are on this disk (LVs on PVs of other disks are listed
    /// with `unsupported` saying which PV is missing).
    volume_groups: Vec<VolumeGroup>,
    /// What each partition, LV (or the bare disk) holds, by superblock.
    filesystems: Vec<FsJson>,
    /// Problems found while reading partitions and volumes.
    warnings: Vec<String>,
}

#[derive(serde::Serialize)]
struct FsJson {
    /// "disk.img@2", "vg/root", or the disk itself.
    device: String,
    device_size: u64,
    #[serde(flatten)]
    probe: Option<transplant_fs::FsProbe>,
}

pub fn run(a: InfoArgs) -> Result<()> {
    if crate::export::is_export_input(&a.image) {
        return crate::export_info::run(&a.image, a.json, &a.open.options());
    }
    let img = open_image(&a.image, &a.open.options())
        .with_context(|| format!("cannot open {}", a.image.display()))?;
    let info = img.info();
    let allocated = data_bytes(&*img)?;
    let vols = crate::guest::volumes(std::slice::from_ref(&a.image), &a.open.options())?;
    let filesystems: Vec<FsJson> = vols
        .volumes
        .iter()
        .map(|v| FsJson {
            device: v.name.clone(),
            device_size: v.dev.len(),
            probe: v.probe.clone(),
        })
        .collect();
    let mut layout = vols.layout;
    let table = layout.disks.pop().and_then(|d| d.table);
    let warnings = vols.warnings;
    if a.json {
        let j = InfoJson {
            info,
            allocated_bytes: allocated,
            partition_table: table,
            volume_groups: layout.vgs,
            filesystems,
            warnings,
        };
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    print_info(&info, Some(allocated), 0);
    if let Some(t) = &table {
        print_partitions(t);
    }
    for vg in &layout.vgs {
        print_vg(vg);
    }
    if !filesystems.is_empty() {
        println!("filesystems:");
        for f in &filesystems {
            match &f.probe {
                Some(p) => println!(
                    "  {:<28} {:<12} {:>10}{}  label {}  uuid {}",
                    f.device,
                    p.kind,
                    human::size(p.size.unwrap_or(f.device_size)),
                    p.used
                        .map(|u| format!(" ({} used)", human::size(u)))
                        .unwrap_or_default(),
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
    for w in &warnings {
        println!("warning: {w}");
    }
    Ok(())
}

fn print_vg(vg: &VolumeGroup) {
    println!(
        "volume group {}: {} extents, seqno {}, PVs: {}",
        vg.name,
        human::size(vg.extent_size),
        vg.seqno,
        vg.pvs
            .iter()
            .map(|p| format!("{}{}", p.name, if p.present { "" } else { " (missing)" }))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for lv in &vg.lvs {
        let mut note = lv
            .unsupported
            .as_deref()
            .map(|u| format!("  unsupported: {u}"))
            .unwrap_or_default();
        if let Some(c) = &lv.corrupt {
            note.push_str(&format!("  corrupt: {c}"));
        }
        if !lv.visible {
            note.push_str("  (hidden)");
        }
        println!(
            "  {:<20} {:>12}  {:<8}{note}",
            format!("{}/{}", vg.name, lv.name),
            human::size(lv.size),
            lv.kind
        );
    }
}

pub(crate) fn print_partitions(t: &PartitionTable) {
    let scheme = match t.scheme {
        transplant_formats::partition::Scheme::Mbr => "MBR",
        transplant_formats::partition::Scheme::Gpt => "GPT",
    };
    println!(
        "partitions: {scheme}, {}-byte sectors{}",
        t.sector_size,
        t.disk_guid
            .as_deref()
            .map(|g| format!(", disk id {g}"))
            .unwrap_or_default()
    );
    for p in &t.partitions {
        let extra = match &p.kind {
            PartitionKind::Mbr {
                type_byte,
                bootable,
                ..
            } => {
                format!(
                    "type 0x{type_byte:02x}{}",
                    if *bootable { ", bootable" } else { "" }
                )
            }
            PartitionKind::Gpt {
                name, unique_guid, ..
            } => format!("\"{name}\" {unique_guid}"),
        };
        println!(
            "  {:>3}  {:>12} at {:>12}  {:<20} {extra}",
            p.number,
            human::size(p.size),
            p.start,
            p.type_name
        );
    }
    for w in &t.warnings {
        println!("  warning: {w}");
    }
}

pub(crate) fn print_info(i: &ImageInfo, allocated: Option<u64>, depth: usize) {
    let pad = "    ".repeat(depth);
    println!("{pad}image: {}", i.filename);
    let sub = i
        .subformat
        .as_deref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let probed = if i.probed_as_raw {
        ", probed as raw"
    } else {
        ""
    };
    println!("{pad}file format: {}{sub}{probed}", i.format);
    println!(
        "{pad}virtual size: {} ({} bytes)",
        human::size(i.virtual_size),
        i.virtual_size
    );
    println!("{pad}disk size: {}", human::size(i.file_bytes));
    if let Some(a) = allocated {
        println!(
            "{pad}allocated: {} ({a} bytes of guest data)",
            human::size(a)
        );
    }
    if let Some(c) = i.cluster_size {
        println!("{pad}cluster size: {c}");
    }
    if i.dirty {
        println!("{pad}dirty: yes");
    }
    for (k, v) in &i.details {
        println!("{pad}{k}: {v}");
    }
    if !i.extents.is_empty() {
        println!("{pad}extents:");
        for e in &i.extents {
            println!(
                "{pad}  {:<10} {:>14} at {:>14}  {}{}",
                e.kind,
                e.virtual_size,
                e.virtual_offset,
                e.filename.as_deref().unwrap_or("-"),
                if e.file_offset != 0 {
                    format!(" (file offset {})", e.file_offset)
                } else {
                    String::new()
                }
            );
        }
    }
    for n in &i.notes {
        println!("{pad}note: {n}");
    }
    if let Some(r) = &i.backing_reference {
        println!("{pad}backing file: {r}");
    }
    if let Some(b) = &i.backing {
        println!("{pad}backing image:");
        print_info(b, None, depth + 1);
    }
}
