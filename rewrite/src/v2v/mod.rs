//! A whole conversion, planned before anything is written: inspection's verdict for the
//! target, every text file the patchers change, the network files, every initramfs rebuilt
//! with the target's drivers, and the generator's own configuration. The plan is then
//! shown (`--dry-run`), applied to the guest through the filesystem writers (which write
//! into an overlay, never the input), and reported.
//!
//! Planning first, applying after, is what makes a refusal clean: a blocker or an error
//! in any step stops the conversion before a single guest byte changes.

pub mod apply;
pub mod efi;
pub mod initramfs_step;
pub mod report;
pub mod selinux;

use crate::context::{Context, DeviceNaming, NetworkMode, Target};
use crate::edit::Warning;
use crate::guest_files::GuestFiles;
use crate::inspect::{Finding, Inspection};
use crate::net::plan::NicReport;
use crate::patch::{self, FileChange, PlanOptions};

pub use apply::apply;
pub use initramfs_step::InitramfsReport;
pub use report::Report;

/// What the administrator asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub naming: DeviceNaming,
    pub network: NetworkMode,
    /// `--mac OLD=NEW`, repeatable.
    pub macs_by_old: Vec<(String, String)>,
    /// `--macs NEW,...`: the guest's NICs in order.
    pub macs_in_order: Vec<String>,
    /// Keep each replaced initramfs as `NAME.pre-transplant`.
    pub backup_initramfs: bool,
    /// Go on despite blockers (the result may not boot).
    pub force: bool,
}

impl Options {
    pub fn new(target: Target) -> Self {
        Options {
            target,
            naming: DeviceNaming::Uuid,
            network: NetworkMode::Keep,
            macs_by_old: Vec::new(),
            macs_in_order: Vec::new(),
            backup_initramfs: true,
            force: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum V2vError {
    /// Inspection found what makes the target unbootable.
    #[error("refused: {}", .0.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; "))]
    Blocked(Vec<Finding>),
    /// A user option does not fit the guest (a MAC it does not have, ...).
    #[error("{0}")]
    Usage(String),
    #[error("{file}: {detail}")]
    Initramfs { file: String, detail: String },
    #[error("{file}: {detail}")]
    Write { file: String, detail: String },
}

/// Everything a conversion will do.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub target: Target,
    pub context: Context,
    /// Every file change, text patchers first, then the network, then initramfs images,
    /// then the UEFI removable-media loader, then `/.autorelabel` when SELinux needs it.
    pub changes: Vec<FileChange>,
    pub warnings: Vec<Warning>,
    /// Blockers found (empty unless `force` let them through).
    pub blockers: Vec<Finding>,
    pub nics: Vec<NicReport>,
    pub initramfs: Vec<InitramfsReport>,
    /// The kernel the converted guest boots.
    pub boot_kernel: Option<String>,
}

impl Conversion {
    pub fn edit_count(&self) -> usize {
        self.changes.iter().map(|c| c.edits.len().max(1)).sum()
    }
}

/// Inspection warnings the conversion itself resolves (it injects the drivers, rebinds or
/// unbinds the NICs, fixes the consoles and X, disables the tools) or that the patchers
/// report again at the line they leave alone: not repeated in the conversion's warnings.
const HANDLED: [&str; 7] = [
    "initramfs-lacks-drivers",
    "uefi-no-fallback",
    "xen-console",
    "nic-bound-by-mac",
    "xorg-old-driver",
    "unresolvable-device",
    "hypervisor-tools",
];

/// Plans the conversion of the guest `guest` (as inspected) for `opts.target`.
pub fn plan(
    guest: &dyn GuestFiles,
    inspection: &Inspection,
    opts: &Options,
) -> Result<Conversion, V2vError> {
    let target = opts.target;
    let verdict = inspection.verdict(target);
    let blockers: Vec<Finding> = verdict.map(|v| v.blockers.clone()).unwrap_or_default();
    if !blockers.is_empty() && !opts.force {
        return Err(V2vError::Blocked(blockers));
    }
    let mut ctx = Context::new(target);
    ctx.naming = opts.naming;
    ctx.network = opts.network;
    ctx.volumes = inspection.volumes.clone();
    ctx.mac_map =
        crate::net::plan::resolve_macs(&inspection.nics, &opts.macs_by_old, &opts.macs_in_order)
            .map_err(V2vError::Usage)?;

    let usable: Vec<String> = verdict
        .map(|v| v.usable_kernels.clone())
        .unwrap_or_default();
    let popts = PlanOptions {
        usable_kernels: usable.clone(),
        x_installed: Some(inspection.display.x_installed),
        ..Default::default()
    };
    let mut text = patch::plan(guest, &ctx, &popts);

    let (net_changes, net_warnings, nics) = crate::net::plan::plan_network(guest, &ctx);
    text.changes.extend(net_changes);
    text.warnings.extend(net_warnings);

    let mut changes = text.changes;
    let mut warnings = text.warnings;
    let step = initramfs_step::plan(guest, inspection, &ctx, &usable, opts)?;
    changes.extend(step.changes);
    warnings.extend(step.warnings);
    let (efi_changes, efi_warnings) = efi::plan(
        guest,
        inspection.bootloader.efi.as_ref(),
        inspection.os.distro.as_deref(),
    );
    changes.extend(efi_changes);
    warnings.extend(efi_warnings);
    if let Some(relabel) = selinux::plan(guest, &changes) {
        changes.push(relabel);
    }
    if let Some(v) = verdict {
        for w in v
            .warnings
            .iter()
            .filter(|w| !HANDLED.contains(&w.code.as_str()))
        {
            warnings.push(Warning::new(w.file.as_deref(), w.line, w.message.clone()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    warnings.retain(|w| seen.insert((w.file.clone(), w.line, w.message.clone())));
    Ok(Conversion {
        target,
        context: ctx,
        changes,
        warnings,
        blockers,
        nics,
        initramfs: step.reports,
        boot_kernel: verdict.and_then(|v| v.boot_kernel.clone()),
    })
}
