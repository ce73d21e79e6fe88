//! `transplant convert --to kvm|kvm-scsi|physical`: rewrite the guest for its new target
//! while converting. The input is opened read-only (or in place with `--in-place`), every
//! change goes into an overlay through the filesystem writers, and the overlay is then
//! shown (`--dry-run`), copied into the output (whole, or with `--backing` only the
//! changed blocks over the original), or committed with an undo log (`--in-place`).

use crate::convert::ConvertArgs;
use crate::export::Target as TargetArg;
use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use transplant_formats::{open_image, BlockDev, OpenOptions, Overlay, OverlayDelta};
use transplant_fs::GuestTree;
use transplant_rewrite::initramfs::Initramfs;
use transplant_rewrite::inspect::{inspect_with, Inspection};
use transplant_rewrite::patch::Action;
use transplant_rewrite::v2v::{self, Conversion, Options, Report, V2vError};
use transplant_rewrite::{diff, DeviceNaming, GuestFiles, NetworkMode, Target};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum NetArg {
    /// Keep addresses as configured.
    Keep,
    /// Turn static addresses into DHCP (a move often changes the subnet).
    Dhcp,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum NamingArg {
    /// Name partitions by their filesystem's UUID= (or LABEL=): survives any bus.
    Uuid,
    /// Keep kernel names, mapped by disk order to the target's prefix (sda1 -> vda1).
    Rename,
}

/// Options of the guest rewrite (with `--to`).
#[derive(Args, Clone, Debug)]
pub struct V2vArgs {
    /// Rewrite the input image itself (raw or qcow2) instead of writing OUTPUT. An undo
    /// log is written and synced first (IMAGE.transplant-undo); `transplant undo IMAGE`
    /// rolls the change back.
    #[arg(long, requires = "to")]
    pub in_place: bool,
    /// Change nothing: print a unified diff of every file the rewrite would change
    /// (binary files such as an initramfs as a list of members added and changed).
    #[arg(long, requires = "to")]
    pub dry_run: bool,
    /// Bind the NIC that had MAC OLD to the new MAC NEW (repeatable). Without new MACs,
    /// bindings by MAC are removed so the first NIC takes the old name.
    #[arg(long = "mac", value_name = "OLD=NEW")]
    pub mac: Vec<String>,
    /// The target's NICs' MACs, in the order of the guest's NICs (eth0, eth1, ...).
    #[arg(long, value_name = "NEW,...", value_delimiter = ',')]
    pub macs: Vec<String>,
    /// What happens to static network settings.
    #[arg(long, value_enum, default_value = "keep")]
    pub network: NetArg,
    /// How hard-coded device names (/dev/sda1, /dev/xvda1) are rewritten. `--to physical`
    /// always uses UUIDs.
    #[arg(long, value_enum, default_value = "uuid")]
    pub device_names: NamingArg,
    /// Write a JSON report of every edit (file, line, before, after, reason), warning,
    /// NIC and initramfs to FILE.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// The root filesystem to convert when the guest has several (as `IMAGE@SEL`: a
    /// partition number or VG/LV).
    #[arg(long, value_name = "SEL")]
    pub root: Option<String>,
    /// Do not keep replaced initramfs images as NAME.pre-transplant.
    #[arg(long)]
    pub no_backup: bool,
    /// Convert despite blockers (a guest inspection says cannot boot on the target).
    #[arg(long)]
    pub force: bool,
    /// Where `--in-place` writes its undo log.
    #[arg(long, value_name = "FILE")]
    pub undo_file: Option<PathBuf>,
}

/// Exit status of a conversion that succeeded with warnings.
pub const EXIT_WARNINGS: u8 = 6;

pub fn target_of(t: TargetArg) -> Target {
    match t {
        TargetArg::Kvm => Target::Kvm,
        TargetArg::KvmScsi => Target::KvmScsi,
        TargetArg::Physical => Target::Physical,
    }
}

/// Lists an initramfs image's members for inspection.
pub fn list_members(b: &[u8]) -> Result<Vec<String>, String> {
    Initramfs::parse(b)
        .map(|i| i.member_names())
        .map_err(|e| e.to_string())
}

/// Opens `disks` (the first is the root's disk unless `--root` says), each under an
/// overlay, and inspects the guest.
pub fn open_guest(
    bases: Vec<(String, Arc<dyn BlockDev>)>,
    root: Option<&str>,
) -> Result<(Vec<Arc<Overlay>>, GuestTree, Inspection)> {
    let overlays: Vec<Arc<Overlay>> = bases
        .iter()
        .map(|(_, b)| Arc::new(Overlay::new(b.clone())))
        .collect();
    let devs = bases
        .iter()
        .zip(&overlays)
        .map(|((n, _), o)| (n.clone(), o.clone() as Arc<dyn BlockDev>))
        .collect();
    let (tree, inspection) = inspect_on(devs, root)?;
    Ok((overlays, tree, inspection))
}

/// Finds the guest on `devs` (which must be writable: overlays), opens its tree for
/// writing and inspects it.
pub fn inspect_on(
    devs: Vec<(String, Arc<dyn BlockDev>)>,
    root: Option<&str>,
) -> Result<(GuestTree, Inspection)> {
    let vols = crate::guest::volumes_on(devs, true)?;
    let roots = crate::guest::roots(&vols);
    let root_vol = match (root, roots.as_slice()) {
        (Some(sel), _) => vols
            .volumes
            .iter()
            .find(|v| v.select == sel || v.name == sel)
            .with_context(|| format!("--root {sel}: no such partition or LV"))?,
        (None, [one]) => *one,
        (None, []) => bail!(
            "no root filesystem found (one holding /etc/fstab and an os-release file); \
             nothing to rewrite"
        ),
        (None, many) => bail!(
            "several root filesystems: {}; choose one with --root",
            many.iter()
                .map(|v| v.select.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let (tree, notes) = crate::guest::tree_for_root(&vols, root_vol)?;
    for n in notes {
        eprintln!("transplant: note: {n}");
    }
    for m in tree.mounts() {
        if !m.fs.writable() {
            let why = vols
                .refused
                .iter()
                .find(|(n, _)| *n == m.source)
                .map(|(_, e)| e.to_string())
                .unwrap_or_else(|| "not a filesystem this tool writes".into());
            if m.at.is_empty() {
                return Err(transplant_formats::Error::refused(
                    m.source.clone(),
                    format!("the root filesystem cannot be written: {why}"),
                )
                .into());
            }
            eprintln!(
                "transplant: warning: /{} ({}) is read-only here: {why}",
                String::from_utf8_lossy(&m.at.join(&b'/')),
                m.source
            );
        }
    }
    let gv = crate::inspect::guest_volumes(&vols);
    let states = crate::inspect::volume_states(&vols);
    let mut inspection = inspect_with(&tree, &gv, &states, &list_members);
    inspection.root = Some(root_vol.name.clone());
    inspection.roots = roots.iter().map(|v| v.name.clone()).collect();
    Ok((tree, inspection))
}

pub fn options_of(a: &V2vArgs, target: Target) -> Result<Options> {
    let mut o = Options::new(target);
    o.naming = match a.device_names {
        NamingArg::Uuid => DeviceNaming::Uuid,
        NamingArg::Rename => DeviceNaming::Rename,
    };
    o.network = match a.network {
        NetArg::Keep => NetworkMode::Keep,
        NetArg::Dhcp => NetworkMode::Dhcp,
    };
    for m in &a.mac {
        let Some((old, new)) = m.split_once('=') else {
            bail!("--mac takes OLD=NEW, got '{m}'");
        };
        o.macs_by_old.push((old.to_string(), new.to_string()));
    }
    o.macs_in_order = a.macs.clone();
    if !o.macs_by_old.is_empty() && !o.macs_in_order.is_empty() {
        bail!("give either --mac OLD=NEW or --macs NEW,..., not both");
    }
    o.backup_initramfs = !a.no_backup;
    o.force = a.force;
    Ok(o)
}

/// Plans the rewrite, printing blockers on refusal.
pub fn plan(
    tree: &GuestTree,
    inspection: &Inspection,
    opts: &Options,
    report_to: Option<&Path>,
) -> Result<Conversion> {
    match v2v::plan(tree, inspection, opts) {
        Ok(c) => Ok(c),
        Err(V2vError::Blocked(b)) => {
            if let Some(p) = report_to {
                let r = Report::refused(opts.target.name(), b.clone());
                write_report(p, &r)?;
            }
            for f in &b {
                eprintln!("transplant: blocker ({}): {}", f.code, f.message);
            }
            Err(transplant_formats::Error::refused(
                inspection.root.clone().unwrap_or_default(),
                format!(
                    "the guest cannot boot on {} as it is ({} blocker{}); see `transplant \
                     inspect`; --force converts anyway",
                    opts.target.name(),
                    b.len(),
                    if b.len() == 1 { "" } else { "s" }
                ),
            )
            .into())
        }
        Err(V2vError::Usage(m)) => Err(anyhow::anyhow!(m)),
        Err(e) => Err(e.into()),
    }
}

/// Prints what `--dry-run` shows: a unified diff per text file, a member list per binary.
pub fn print_dry_run(out: &mut dyn Write, tree: &GuestTree, conv: &Conversion) -> Result<()> {
    for c in &conv.changes {
        match &c.action {
            Action::Replace(new) => {
                let old = GuestFiles::read(tree, &c.path, 1 << 30).ok();
                let old_text = old.as_deref().map(std::str::from_utf8);
                match (old_text, std::str::from_utf8(new)) {
                    (Some(Ok(o)), Ok(n)) => write!(out, "{}", diff::unified(&c.path, o, n))?,
                    (None, Ok(n)) => write!(out, "{}", diff::created(&c.path, n))?,
                    _ => {
                        writeln!(
                            out,
                            "Binary file {} changes ({} -> {} bytes)",
                            c.path,
                            old.as_ref().map(|o| o.len()).unwrap_or(0),
                            new.len()
                        )?;
                        if let Some(r) = conv.initramfs.iter().find(|r| r.path == c.path) {
                            for m in &r.members {
                                writeln!(out, "  {:?} {}", m.kind, m.name)?;
                            }
                        }
                        for e in &c.edits {
                            writeln!(out, "  {} -> {}: {}", e.before, e.after, e.reason)?;
                        }
                    }
                }
            }
            Action::Remove => {
                let old = tree
                    .read_text(&c.path)
                    .unwrap_or_else(|| "(binary)\n".into());
                write!(out, "{}", diff::removed(&c.path, &old))?;
            }
            Action::RemoveLink => {
                let t = GuestFiles::read_link(tree, &c.path).unwrap_or_default();
                writeln!(out, "Removed symlink {} -> {t}", c.path)?;
                for e in &c.edits {
                    writeln!(out, "  ({})", e.reason)?;
                }
            }
        }
    }
    Ok(())
}

fn write_report(path: &Path, r: &Report) -> Result<()> {
    let mut text = serde_json::to_string_pretty(r)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn summary(conv: &Conversion) {
    eprintln!(
        "rewrote the guest for {}: {} file{} changed, {} edit{}, {} warning{}",
        conv.target.name(),
        conv.changes.len(),
        if conv.changes.len() == 1 { "" } else { "s" },
        conv.edit_count(),
        if conv.edit_count() == 1 { "" } else { "s" },
        conv.warnings.len(),
        if conv.warnings.len() == 1 { "" } else { "s" },
    );
    for r in &conv.initramfs {
        match &r.skipped {
            Some(s) => eprintln!("  initramfs {}: {s}", r.path),
            None if !r.added.is_empty() => {
                eprintln!("  initramfs {}: added {}", r.path, r.added.join(", "))
            }
            None => {}
        }
    }
    for n in &conv.nics {
        eprintln!("  NIC {}: {}", n.name.as_deref().unwrap_or("?"), n.becomes);
    }
    for w in &conv.warnings {
        match (&w.file, w.line) {
            (Some(f), Some(l)) => eprintln!("  warning: {f}:{l}: {}", w.message),
            (Some(f), None) => eprintln!("  warning: {f}: {}", w.message),
            _ => eprintln!("  warning: {}", w.message),
        }
    }
}

/// `convert IN [OUT] --to T`: the whole single-image flow.
pub fn run(a: &ConvertArgs, t: TargetArg, open: &OpenOptions) -> Result<()> {
    let start = Instant::now();
    let v = a.v2v();
    let target = target_of(t);
    let input = a.input_path();
    let base: Arc<dyn BlockDev> = if v.in_place {
        crate::edit::open_base(input, open)?
    } else {
        open_image(input, open).with_context(|| format!("cannot open {}", input.display()))?
    };
    let (overlays, tree, inspection) = open_guest(
        vec![(input.display().to_string(), base.clone())],
        v.root.as_deref(),
    )?;
    let overlay = overlays.into_iter().next().context("no disk opened")?;
    let opts = options_of(v, target)?;
    let conv = plan(&tree, &inspection, &opts, v.report.as_deref())?;
    let mut report = Report::from_conversion(&conv, "dry-run");
    report.input = vec![input.display().to_string()];
    report.os = inspection.os.pretty_name.clone();
    if v.dry_run {
        let stdout = std::io::stdout();
        print_dry_run(&mut stdout.lock(), &tree, &conv)?;
        if !a.quiet() {
            summary(&conv);
        }
        report.seconds = start.elapsed().as_secs_f64();
        if let Some(p) = &v.report {
            write_report(p, &report)?;
        }
        return Ok(());
    }
    v2v::apply(&tree, &conv)?;
    tree.sync().context("writing the guest's filesystems")?;
    if v.in_place {
        let undo = v
            .undo_file
            .clone()
            .unwrap_or_else(|| transplant_formats::undo::default_undo_path(input));
        let s = transplant_formats::undo::commit_with_undo(&overlay, &undo)
            .with_context(|| format!("committing the rewrite into {}", input.display()))?;
        eprintln!(
            "rewrote {} in place: {} written; undo log {} (transplant undo {})",
            input.display(),
            crate::human::size(s.bytes),
            undo.display(),
            input.display()
        );
        report.output = Some(input.display().to_string());
    } else {
        let delta = a.backing_path().is_some();
        let source: Arc<dyn BlockDev> = if let Some(b) = &a.backing_path() {
            if !same_file(b, input) {
                bail!(
                    "--backing with --to must name the input ({}): the overlay holds the \
                     rewrite's changes over it",
                    input.display()
                );
            }
            Arc::new(OverlayDelta::new(overlay.clone()))
        } else {
            overlay.clone()
        };
        crate::convert::copy_out(a, source, &*overlay, delta)?;
        report.output = a.output_path().map(|p| p.display().to_string());
    }
    report.result = if conv.warnings.is_empty() {
        "converted".into()
    } else {
        "converted-with-warnings".into()
    };
    report.seconds = start.elapsed().as_secs_f64();
    if !a.quiet() {
        summary(&conv);
    }
    if let Some(p) = &v.report {
        write_report(p, &report)?;
    }
    if !conv.warnings.is_empty() {
        return Err(crate::exit::Warned.into());
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
