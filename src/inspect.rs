//! `transplant inspect`: what a migration engineer needs to know about a guest before
//! moving it, as a summary or as JSON (schema in the README). It only reports: blockers
//! are printed, the exit status stays 0.

use crate::guest::{roots, tree_for_root, volumes, Volume, Volumes};
use crate::OpenArgs;
use anyhow::{Context as _, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use transplant_formats::partition::PartitionKind;
use transplant_rewrite::inspect::{
    ext_state, inspect_with, DriverState, Inspection, ListMembers, VolumeState,
};
use transplant_rewrite::GuestVolume;

/// Describe a guest for migration: OS, kernels, initramfs, bootloader, device names,
/// NICs, display, hypervisor tools, and what blocks a move to each target.
///
/// IMAGE... are the guest's disks in order (the first is sda/vda/xvda). The root
/// filesystem is found by inspection (it holds /etc/fstab and an OS release file) and
/// the filesystems its fstab names are attached. With several roots, they are listed
/// and `--root` picks one. The exit status is 0 even when a target is blocked.
///
/// Examples: transplant inspect web01.vmdk
///           transplant inspect --json disk1.qcow2 disk2.qcow2 --root 2
#[derive(Args)]
pub struct InspectArgs {
    /// The guest's disk images, in disk order.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// One JSON object (schema in the README) instead of the summary.
    #[arg(long)]
    json: bool,
    /// The root filesystem when there are several: a partition number (`2`), `VG/LV`,
    /// or `IMAGE@N` as listed.
    #[arg(long, value_name = "SEL")]
    root: Option<String>,
    #[command(flatten)]
    open: OpenArgs,
}

/// The lister of initramfs members until the cpio reader is wired in.
fn partuuid(v: &Vols, vol: &Volume) -> Option<String> {
    let disk = v.layout.disks.get(vol.disk_index?)?;
    let table = disk.table.as_ref()?;
    let n = vol.partition?;
    let p = table.partitions.iter().find(|p| p.number == n)?;
    match &p.kind {
        PartitionKind::Gpt { unique_guid, .. } => Some(unique_guid.to_ascii_lowercase()),
        PartitionKind::Mbr { .. } => table
            .disk_guid
            .as_ref()
            .map(|sig| format!("{}-{n:02x}", sig.to_ascii_lowercase())),
    }
}

type Vols = Volumes;

/// The volumes as the rewrite crate sees them, in the same order as `v.volumes`.
pub fn guest_volumes(v: &Vols) -> Vec<GuestVolume> {
    v.volumes
        .iter()
        .map(|vol| GuestVolume {
            disk: vol.disk_index,
            partition: vol.partition,
            lv: if vol.disk_index.is_none() {
                vol.select
                    .split_once('/')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            } else {
                None
            },
            fs_kind: vol.probe.as_ref().map(|p| p.kind.clone()),
            uuid: vol.probe.as_ref().and_then(|p| p.uuid.clone()),
            label: vol.probe.as_ref().and_then(|p| p.label.clone()),
            partuuid: partuuid(v, vol),
        })
        .collect()
}

/// Superblock states of the ext2/3/4 volumes.
pub fn volume_states(v: &Vols) -> Vec<VolumeState> {
    let mut out = Vec::new();
    for (i, vol) in v.volumes.iter().enumerate() {
        let is_ext = vol
            .probe
            .as_ref()
            .is_some_and(|p| matches!(p.kind.as_str(), "ext2" | "ext3" | "ext4"));
        if !is_ext {
            continue;
        }
        let mut sb = vec![0u8; 1024];
        if vol.dev.read_at(&mut sb, 1024).is_err() {
            continue;
        }
        if let Some(state) = ext_state(&sb) {
            out.push(VolumeState { volume: i, state });
        }
    }
    out
}

pub fn run(a: InspectArgs) -> Result<()> {
    let v = volumes(&a.images, &a.open.options())?;
    let found = roots(&v);
    let root_names: Vec<String> = found.iter().map(|r| r.name.clone()).collect();
    let root: &Volume = match &a.root {
        Some(sel) => v
            .volumes
            .iter()
            .find(|x| x.select == *sel || x.name == *sel)
            .with_context(|| {
                format!(
                    "--root {sel}: no such partition or LV (roots found: {})",
                    if root_names.is_empty() {
                        "none".to_string()
                    } else {
                        root_names.join(", ")
                    }
                )
            })?,
        None => match found.as_slice() {
            [one] => one,
            [] => {
                let luks: Vec<&str> = v
                    .volumes
                    .iter()
                    .filter(|x| x.probe.as_ref().is_some_and(|p| p.kind == "crypto_LUKS"))
                    .map(|x| x.name.as_str())
                    .collect();
                anyhow::bail!(
                    "no root filesystem found (one holding /etc/fstab and an OS release file){}; \
                     volumes: {}",
                    if luks.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} is encrypted (LUKS): an encrypted root cannot be inspected \
                             without its key",
                            luks.join(", ")
                        )
                    },
                    v.volumes
                        .iter()
                        .map(|x| format!(
                            "{} ({})",
                            x.name,
                            x.probe.as_ref().map(|p| p.kind.as_str()).unwrap_or("?")
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            many => {
                let mut err = std::io::stderr().lock();
                writeln!(
                    err,
                    "transplant: several root filesystems; choose one with --root:"
                )?;
                for r in many {
                    writeln!(err, "  --root {:<10} {}", r.select, describe_root(r))?;
                }
                std::process::exit(2);
            }
        },
    };
    let (tree, notes) = tree_for_root(&v, root)?;
    let gvols = guest_volumes(&v);
    let states = volume_states(&v);
    let lister: &ListMembers = &crate::v2v::list_members;
    let mut ins = inspect_with(&tree, &gvols, &states, lister);
    ins.root = Some(root.name.clone());
    ins.roots = root_names;
    ins.warnings.extend(v.warnings.iter().cloned());
    ins.warnings.extend(notes);
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    if a.json {
        serde_json::to_writer_pretty(&mut out, &ins)?;
        writeln!(out)?;
    } else {
        human(&mut out, &ins, &v)?;
    }
    Ok(out.flush()?)
}

fn describe_root(r: &Volume) -> String {
    let Some(fs) = r.fs.as_deref() else {
        return String::new();
    };
    let mut buf = vec![0u8; 4096];
    let pretty = fs.read(b"/etc/os-release", 0, &mut buf).ok().and_then(|n| {
        let t = String::from_utf8_lossy(buf.get(..n)?).into_owned();
        t.lines().find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
    });
    let p = r.probe.as_ref();
    format!(
        "{} {}{}",
        p.map(|p| p.kind.as_str()).unwrap_or("?"),
        pretty.unwrap_or_default(),
        p.and_then(|p| p.label.as_ref())
            .map(|l| format!(" (label {l})"))
            .unwrap_or_default()
    )
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn human(out: &mut dyn Write, i: &Inspection, v: &Vols) -> Result<()> {
    let os = &i.os;
    writeln!(out, "OS")?;
    writeln!(
        out,
        "  {} (distro {}, version {}, family {}, arch {})",
        os.pretty_name
            .as_deref()
            .or(os.name.as_deref())
            .unwrap_or("unknown Linux"),
        opt(&os.distro),
        opt(&os.version),
        serde_json::to_value(os.family)?.as_str().unwrap_or("?"),
        opt(&os.arch)
    )?;
    if !os.sources.is_empty() {
        writeln!(out, "  from {}", os.sources.join(", "))?;
    }

    writeln!(out, "\nRoots")?;
    for r in &i.roots {
        let mark = if Some(r) == i.root.as_ref() { "*" } else { " " };
        writeln!(out, " {mark}{r}")?;
    }
    if i.roots.is_empty() {
        writeln!(out, "  {} (chosen with --root)", opt(&i.root))?;
    }

    writeln!(out, "\nVolumes")?;
    for (n, g) in i.volumes.iter().enumerate() {
        let name = v.volumes.get(n).map(|x| x.name.as_str()).unwrap_or("?");
        let state = i
            .volume_states
            .iter()
            .find(|s| s.volume == n)
            .map(|s| {
                format!(
                    " [{}]",
                    serde_json::to_value(s.state)
                        .ok()
                        .and_then(|x| x.as_str().map(str::to_string))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        writeln!(
            out,
            "  {name}: {}{state}",
            transplant_rewrite::inspect::mounts::describe_volume(g)
        )?;
    }

    writeln!(out, "\nMounts (/etc/fstab)")?;
    for m in &i.mounts {
        let to = match (&m.resolves_to, &m.note) {
            (Some(r), _) => format!("-> {r}"),
            (None, Some(n)) => format!("({n})"),
            _ => String::new(),
        };
        writeln!(
            out,
            "  {:<12} {:<40} {:<6} {}{}",
            m.mountpoint,
            m.spec,
            m.fstype,
            to,
            if m.hardware_bound {
                "  [old hardware name]"
            } else {
                ""
            }
        )?;
    }

    writeln!(out, "\nKernels")?;
    if i.kernels.is_empty() {
        writeln!(out, "  none in /boot")?;
    }
    for k in &i.kernels {
        writeln!(
            out,
            "  {}{}{}  ({}; modules {})",
            k.version,
            if k.is_default { " [default]" } else { "" },
            if k.xen_pv_only { " [Xen PV only]" } else { "" },
            k.image,
            opt(&k.modules_dir)
        )?;
        let mut by: Vec<(DriverState, Vec<&str>)> = Vec::new();
        for d in &k.drivers {
            match by.iter_mut().find(|(s, _)| *s == d.state) {
                Some((_, l)) => l.push(&d.name),
                None => by.push((d.state, vec![&d.name])),
            }
        }
        for (s, l) in by {
            writeln!(
                out,
                "      {:<9} {}",
                format!("{s:?}").to_lowercase(),
                l.join(" ")
            )?;
        }
        if let Some(r) = &k.xen_reason {
            writeln!(out, "      {r}")?;
        }
    }

    writeln!(out, "\nInitramfs")?;
    writeln!(
        out,
        "  generator: {}{}",
        serde_json::to_value(i.initramfs.generator)?
            .as_str()
            .unwrap_or("?"),
        if i.initramfs.generator_evidence.is_empty() {
            String::new()
        } else {
            format!(" ({})", i.initramfs.generator_evidence.join(", "))
        }
    )?;
    for m in &i.initramfs.images {
        let comp: Vec<String> = m
            .compression
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(str::to_string))
            .collect();
        writeln!(
            out,
            "  {} ({} bytes, {})",
            m.path,
            m.size.unwrap_or(0),
            if comp.is_empty() {
                "empty".to_string()
            } else {
                comp.join(" + ")
            }
        )?;
        match (&m.members, &m.error) {
            (Some(n), _) => {
                let have: Vec<&str> = m
                    .drivers
                    .iter()
                    .filter(|d| d.in_image || d.builtin)
                    .map(|d| d.name.as_str())
                    .collect();
                writeln!(out, "      {n} members; drivers: {}", have.join(" "))?;
            }
            (None, Some(e)) => writeln!(out, "      members not listed: {e}")?,
            _ => {}
        }
    }

    let b = &i.bootloader;
    writeln!(out, "\nBootloader")?;
    writeln!(
        out,
        "  {}{} {}",
        serde_json::to_value(b.kind)?.as_str().unwrap_or("?"),
        if b.bls { " with BLS entries" } else { "" },
        opt(&b.config)
    )?;
    for (n, e) in b.entries.iter().enumerate() {
        let d = if Some(n) == b.default_entry { "*" } else { " " };
        writeln!(
            out,
            "   {d}{}{}: {} {}",
            e.title,
            if e.xen_hypervisor {
                " [Xen hypervisor]"
            } else {
                ""
            },
            opt(&e.kernel),
            e.cmdline.as_deref().unwrap_or("")
        )?;
    }
    if let Some(s) = &b.default_source {
        writeln!(out, "  default from {s}")?;
    }
    if let Some(efi) = &b.efi {
        writeln!(
            out,
            "  UEFI ({}): {}",
            efi.evidence.join(", "),
            if !efi.readable {
                "the EFI system partition was not read".to_string()
            } else {
                format!(
                    "{}; {} {}",
                    efi.vendors
                        .iter()
                        .map(|x| format!(
                            "EFI/{}{}{}",
                            x.name,
                            if x.shim { " shim" } else { "" },
                            if x.grub { " grub" } else { "" }
                        ))
                        .collect::<Vec<_>>()
                        .join(", "),
                    efi.fallback_path,
                    if efi.fallback_loader {
                        "present"
                    } else {
                        "MISSING"
                    }
                )
            }
        )?;
    }

    writeln!(out, "\nDevice references to old hardware")?;
    let live: Vec<_> = i.device_refs.iter().filter(|r| !r.in_comment).collect();
    if live.is_empty() {
        writeln!(out, "  none")?;
    }
    for r in live {
        let kvm = r.rewrites.first();
        writeln!(
            out,
            "  {}:{}: {} -> {}{}",
            r.file,
            r.line,
            r.text,
            r.resolves_to.as_deref().unwrap_or("matches no disk given"),
            match kvm.and_then(|k| k.new.as_deref()) {
                Some(n) => format!(" (kvm: {n})"),
                None => String::new(),
            }
        )?;
    }

    writeln!(out, "\nNICs")?;
    if i.nics.is_empty() {
        writeln!(out, "  none configured")?;
    }
    for n in &i.nics {
        let method = n
            .method
            .and_then(|m| serde_json::to_value(m).ok()?.as_str().map(str::to_string))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "  {} mac {} driver {} {}{}{}",
            opt(&n.name),
            opt(&n.mac),
            opt(&n.driver),
            method,
            if n.addresses.is_empty() {
                String::new()
            } else {
                format!(" {}", n.addresses.join(" "))
            },
            n.gateway
                .as_ref()
                .map(|g| format!(" via {g}"))
                .unwrap_or_default()
        )?;
        writeln!(out, "      {}", n.config_files.join(", "))?;
    }

    writeln!(out, "\nDisplay")?;
    if !i.display.x_installed && i.display.config_files.is_empty() {
        writeln!(out, "  X is not installed: nothing to do")?;
    } else {
        writeln!(
            out,
            "  X {}",
            if i.display.x_installed {
                "installed"
            } else {
                "not found (config files only)"
            }
        )?;
        for c in &i.display.config_files {
            for d in &c.devices {
                writeln!(
                    out,
                    "  {}:{}: driver {}{}",
                    c.path,
                    d.line,
                    opt(&d.driver),
                    if d.old_hardware {
                        " [old virtual video]"
                    } else {
                        ""
                    }
                )?;
            }
        }
    }

    writeln!(out, "\nHypervisor tools")?;
    if i.hypervisor_tools.is_empty() {
        writeln!(out, "  none found")?;
    }
    for h in &i.hypervisor_tools {
        writeln!(out, "  {}: {}", h.kind, h.evidence.join(", "))?;
    }

    for t in &i.targets {
        writeln!(
            out,
            "\nTarget {}: {}",
            t.target.name(),
            if t.convertible {
                "convertible"
            } else {
                "BLOCKED"
            }
        )?;
        if let Some(k) = &t.boot_kernel {
            writeln!(out, "  boots kernel {k}")?;
        }
        for f in &t.blockers {
            writeln!(out, "  blocker [{}]: {}", f.code, f.message)?;
        }
        for f in &t.warnings {
            let at = match (&f.file, f.line) {
                (Some(p), Some(l)) => format!(" ({p}:{l})"),
                (Some(p), None) => format!(" ({p})"),
                _ => String::new(),
            };
            writeln!(out, "  warning [{}]: {}{at}", f.code, f.message)?;
        }
    }
    if !i.warnings.is_empty() {
        writeln!(out, "\nNotes")?;
        for w in &i.warnings {
            writeln!(out, "  {w}")?;
        }
    }
    Ok(())
}
