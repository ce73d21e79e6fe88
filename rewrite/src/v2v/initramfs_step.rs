//! The initramfs part of a conversion: for every image of a kernel that can boot the
//! target, the device references inside are rewritten by the same patchers as the guest's
//! own files, the target's drivers are added from the guest's modules, and the image is
//! rebuilt (untouched segments byte for byte). The generator's configuration gets the
//! drivers too, so the next rebuild inside the guest keeps them.

use super::{Options, V2vError};
use crate::context::Context;
use crate::edit::{Edit, Warning};
use crate::guest_files::GuestFiles;
use crate::initramfs::{self, Initramfs, MemberChange};
use crate::inspect::{Generator, Inspection};
use crate::patch::{self, Action, FileChange};
use serde::Serialize;

/// Largest initramfs read into memory (a 120 MiB image is common; 1 GiB is not).
const MAX_IMAGE: u64 = 1 << 30;

/// What happened to one initramfs image.
#[derive(Debug, Clone, Serialize)]
pub struct InitramfsReport {
    pub path: String,
    pub kernel: String,
    /// Modules added (with their dependencies).
    pub added: Vec<String>,
    pub already_present: Vec<String>,
    pub builtin: Vec<String>,
    pub missing: Vec<String>,
    /// Members whose text was rewritten (device names).
    pub rewritten: Vec<String>,
    /// Every member added, changed or removed.
    pub members: Vec<MemberChange>,
    /// Where the original was kept.
    pub backup: Option<String>,
    /// Why the image was left alone.
    pub skipped: Option<String>,
}

/// RHEL 9's LVM devices file as dracut copies it into a host-only image.
const LVM_DEVICES_MEMBER: &str = "etc/lvm/devices/system.devices";

pub struct Step {
    pub changes: Vec<FileChange>,
    pub warnings: Vec<Warning>,
    pub reports: Vec<InitramfsReport>,
}

/// Which patcher rewrites a member of an initramfs, by its path inside the archive.
fn member_patch(name: &str, text: &str, ctx: &Context, file: &str) -> Option<crate::Patched> {
    let n = name.trim_start_matches("./").trim_start_matches('/');
    let p = match n {
        "etc/fstab" => patch::fstab::patch(file, text, ctx),
        "etc/crypttab" => patch::crypttab::patch(file, text, ctx),
        "etc/mdadm.conf" | "etc/mdadm/mdadm.conf" => patch::mdadm::patch(file, text, ctx),
        "etc/lvm/lvm.conf" => patch::lvm_conf::patch(file, text, ctx),
        "conf/param.conf" => patch::resume::patch(file, text, ctx),
        _ if n.starts_with("conf/conf.d/") => patch::resume::patch(file, text, ctx),
        _ if n.starts_with("etc/cmdline.d/") && n.ends_with(".conf") => {
            patch::cmdline::patch_file(file, text, ctx)
        }
        _ if n.starts_with("etc/udev/rules.d/") && n.ends_with("persistent-net.rules") => {
            crate::net::patch_file(crate::net::ConfigKind::UdevRules, file, text, ctx)?
        }
        _ => return None,
    };
    Some(p)
}

pub fn plan(
    guest: &dyn GuestFiles,
    inspection: &Inspection,
    ctx: &Context,
    usable: &[String],
    opts: &Options,
) -> Result<Step, V2vError> {
    let mut step = Step {
        changes: Vec::new(),
        warnings: Vec::new(),
        reports: Vec::new(),
    };
    let wanted = ctx.target.initramfs_modules();
    let mut injected_any = false;
    for img in &inspection.initramfs.images {
        let kernel = img.kernel_version.clone().unwrap_or_default();
        let mut report = InitramfsReport {
            path: img.path.clone(),
            kernel: kernel.clone(),
            added: Vec::new(),
            already_present: Vec::new(),
            builtin: Vec::new(),
            missing: Vec::new(),
            rewritten: Vec::new(),
            members: Vec::new(),
            backup: None,
            skipped: None,
        };
        if img.path.ends_with(".pre-transplant") {
            continue;
        }
        if !usable.contains(&kernel) {
            report.skipped = Some(format!(
                "kernel {kernel} cannot boot the target (see inspect); image left as is"
            ));
            step.reports.push(report);
            continue;
        }
        let data = guest
            .read(&img.path, MAX_IMAGE)
            .map_err(|e| V2vError::Initramfs {
                file: img.path.clone(),
                detail: e,
            })?;
        let before = Initramfs::parse(&data).map_err(|e| V2vError::Initramfs {
            file: img.path.clone(),
            detail: e.to_string(),
        })?;
        let snapshot = before.snapshot();
        let modules_before = before.module_names().len();
        let mut after = before;
        let mut edits: Vec<Edit> = Vec::new();
        let mut warnings: Vec<Warning> = Vec::new();
        let path = img.path.clone();
        report.rewritten = after.rewrite_members(&mut |name, bytes| {
            let text = std::str::from_utf8(bytes).ok()?;
            let file = format!("{path}:{}", name.trim_start_matches("./"));
            let p = member_patch(name, text, ctx, &file)?;
            edits.extend(p.edits);
            warnings.extend(p.warnings);
            p.text.map(String::into_bytes)
        });
        // RHEL 9's devices file names the PV by the old disk's WWID or name; LVM inside the
        // initramfs would then ignore the PV on the new bus and never find root.
        for name in after.remove_members(&|n| {
            n.trim_start_matches("./").trim_start_matches('/') == LVM_DEVICES_MEMBER
        }) {
            let file = format!("{path}:{}", name.trim_start_matches("./"));
            edits.push(Edit {
                file,
                line: None,
                before: "LVM devices file".into(),
                after: "(removed)".into(),
                reason: "it lists the physical volumes by the old disks' IDs, which change \
                         on the new bus, so LVM would ignore them and root would not be \
                         found; without it LVM scans every disk"
                    .into(),
            });
            report.rewritten.push(name);
        }
        let inj =
            after
                .inject_modules(guest, &kernel, wanted)
                .map_err(|e| V2vError::Initramfs {
                    file: img.path.clone(),
                    detail: e.to_string(),
                })?;
        report.added = inj.added.iter().map(|m| m.name.clone()).collect();
        report.already_present = inj.already_present.clone();
        report.builtin = inj.builtin.clone();
        report.missing = inj.missing.clone();
        for w in &inj.warnings {
            warnings.push(Warning::new(Some(&img.path), None, w.clone()));
        }
        if !inj.missing.is_empty() {
            warnings.push(Warning::new(
                Some(&img.path),
                None,
                format!(
                    "modules not found in /lib/modules/{kernel}: {}",
                    inj.missing.join(", ")
                ),
            ));
        }
        injected_any |= !inj.added.is_empty();
        if !inj.changed() && report.rewritten.is_empty() {
            step.reports.push(report);
            step.warnings.extend(warnings);
            continue;
        }
        report.members = after.diff_snapshot(&snapshot);
        let bytes = after.to_bytes().map_err(|e| V2vError::Initramfs {
            file: img.path.clone(),
            detail: e.to_string(),
        })?;
        if !inj.added.is_empty() {
            edits.push(Edit {
                file: img.path.clone(),
                line: None,
                before: format!("{modules_before} modules"),
                after: format!(
                    "{} modules (+{})",
                    after.module_names().len(),
                    report.added.join(", ")
                ),
                reason: format!(
                    "the root disk on {} needs these drivers before the root filesystem is \
                     mounted; added from the guest's /lib/modules/{kernel} with their \
                     dependencies, and named for early load",
                    ctx.target.name()
                ),
            });
        }
        if let Some((file, names)) = &inj.early_load {
            if !names.is_empty() {
                edits.push(Edit {
                    file: format!("{}:{file}", img.path),
                    line: None,
                    before: String::new(),
                    after: names.join(" "),
                    reason: "named for early load, so the root disk's drivers are loaded \
                             before the initramfs looks for the root filesystem"
                        .into(),
                });
            }
        }
        if opts.backup_initramfs {
            let backup = format!("{}.pre-transplant", img.path);
            if !guest.exists(&backup) {
                step.changes.push(FileChange {
                    path: backup.clone(),
                    action: Action::Replace(data),
                    edits: vec![Edit {
                        file: backup.clone(),
                        line: None,
                        before: String::new(),
                        after: format!("copy of {}", img.path),
                        reason: "the original initramfs is kept beside the new one".into(),
                    }],
                });
            }
            report.backup = Some(backup);
        }
        step.changes.push(FileChange {
            path: img.path.clone(),
            action: Action::Replace(bytes),
            edits,
        });
        step.warnings.extend(warnings);
        step.reports.push(report);
    }
    if injected_any {
        generator_config(guest, inspection, wanted, &mut step);
    }
    Ok(step)
}

/// The generator's own config names the drivers, so a rebuild in the guest keeps them.
fn generator_config(
    guest: &dyn GuestFiles,
    inspection: &Inspection,
    wanted: &[&str],
    step: &mut Step,
) {
    match inspection.initramfs.generator {
        Generator::InitramfsTools => {
            let file = "/etc/initramfs-tools/modules";
            let text = guest.read_text(file).unwrap_or_default();
            let p = initramfs::patch_initramfs_tools_modules(file, &text, wanted);
            if let Some(t) = p.text {
                step.changes.push(FileChange {
                    path: file.to_string(),
                    action: Action::Replace(t.into_bytes()),
                    edits: p.edits,
                });
            }
            step.warnings.extend(p.warnings);
        }
        Generator::Dracut => {
            let (path, content) = initramfs::dracut_conf(wanted);
            if guest.read_text(&path).as_deref() != Some(content.as_str()) {
                step.changes.push(FileChange {
                    path: path.clone(),
                    action: Action::Replace(content.clone().into_bytes()),
                    edits: vec![Edit {
                        file: path,
                        line: None,
                        before: String::new(),
                        after: content.trim_end().to_string(),
                        reason: "dracut's configuration names the target's drivers so a \
                                 rebuild inside the guest keeps them"
                            .into(),
                    }],
                });
            }
        }
        _ => {}
    }
}
