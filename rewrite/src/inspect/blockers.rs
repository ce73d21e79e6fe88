//! For each target, what stops a conversion (blockers) and what the administrator should
//! know (warnings), from everything inspection found. Inspection only reports: a blocker
//! here makes `convert --to` refuse, it never makes `inspect` fail.

use super::Inspection;
use crate::context::{GuestVolume, Target};
use crate::devname::{self, DevRef};
use serde::Serialize;

/// The state of a filesystem's superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsState {
    Clean,
    /// The journal holds transactions not yet written (ext3/4 `needs_recovery`).
    NeedsRecovery,
    /// Not cleanly unmounted (still mounted, or the host crashed).
    NotClean,
    /// The kernel recorded errors; e2fsck must run.
    Errors,
}

/// The state of one of the volumes given to inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeState {
    /// Index into the volumes.
    pub volume: usize,
    pub state: FsState,
}

/// The state an ext2/3/4 superblock (the 1024 bytes at offset 1024) records; None if
/// it is not one.
pub fn ext_state(sb: &[u8]) -> Option<FsState> {
    let le16 = |o: usize| sb.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let le32 = |o: usize| {
        sb.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if le16(0x38)? != 0xEF53 {
        return None;
    }
    let state = le16(0x3A)?;
    let incompat = le32(0x60)?;
    Some(if incompat & 0x4 != 0 {
        FsState::NeedsRecovery
    } else if state & 0x2 != 0 {
        FsState::Errors
    } else if state & 0x1 == 0 {
        FsState::NotClean
    } else {
        FsState::Clean
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier (`xen-pv-only`, `missing-drivers`, `nic-bound-by-mac`, ...).
    pub code: String,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<usize>,
}

fn finding(code: &str, message: impl Into<String>) -> Finding {
    Finding {
        code: code.to_string(),
        message: message.into(),
        file: None,
        line: None,
    }
}

fn at(mut f: Finding, file: &str, line: Option<usize>) -> Finding {
    f.file = Some(file.to_string());
    f.line = line;
    f
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetVerdict {
    pub target: Target,
    /// No blockers.
    pub convertible: bool,
    /// Kernel versions that can boot the target, newest last.
    pub usable_kernels: Vec<String>,
    /// The kernel a conversion boots: the default if usable, else the newest usable.
    pub boot_kernel: Option<String>,
    pub blockers: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

/// Whether the guest's root is encrypted: `/` on a LUKS volume, or on a mapper name that
/// `/etc/crypttab` opens.
fn encrypted_root(i: &Inspection, volumes: &[GuestVolume], crypttab: &str) -> Option<String> {
    let root = i.mounts.iter().find(|m| m.mountpoint == "/")?;
    if let Some(v) = root.volume.and_then(|x| volumes.get(x)) {
        if v.fs_kind.as_deref() == Some("crypto_LUKS") {
            return Some(format!("/ ({}) is a LUKS volume", root.spec));
        }
    }
    let name = match devname::parse(&root.spec) {
        Some(DevRef::Mapper(m)) => m,
        _ => return None,
    };
    let opened = crypttab.lines().any(|l| {
        let t = l.trim();
        !t.starts_with('#') && t.split_whitespace().next() == Some(name.as_str())
    });
    (opened || name.starts_with("luks-")).then(|| {
        format!("/ is /dev/mapper/{name}, which /etc/crypttab opens from an encrypted volume")
    })
}

pub fn verdicts(
    i: &Inspection,
    volumes: &[GuestVolume],
    states: &[VolumeState],
    crypttab: &str,
) -> Vec<TargetVerdict> {
    [Target::Kvm, Target::KvmScsi, Target::Physical]
        .into_iter()
        .map(|t| verdict(t, i, volumes, states, crypttab))
        .collect()
}

fn verdict(
    t: Target,
    i: &Inspection,
    volumes: &[GuestVolume],
    states: &[VolumeState],
    crypttab: &str,
) -> TargetVerdict {
    let mut blockers = Vec::new();
    let mut warnings = Vec::new();
    let usable: Vec<&super::kernels::Kernel> =
        i.kernels.iter().filter(|k| k.usable_for(t)).collect();
    let usable_kernels: Vec<String> = usable.iter().map(|k| k.version.clone()).collect();
    let default = i.kernels.iter().find(|k| k.is_default);
    let boot = default
        .filter(|k| k.usable_for(t))
        .or(usable.last().copied());
    if i.kernels.is_empty() {
        blockers.push(finding(
            "no-kernel",
            "no kernel in /boot (vmlinuz-*): nothing to boot (is /boot on a disk not given?)",
        ));
    } else if i.kernels.iter().all(|k| k.xen_pv_only) {
        blockers.push(finding(
            "xen-pv-only",
            format!(
                "only Xen PV kernels are installed ({}): none can boot on {}; install a \
                 non-Xen kernel in the guest first (e.g. kernel-default / kernel)",
                i.kernels
                    .iter()
                    .map(|k| k.version.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                t.name()
            ),
        ));
    } else if usable.is_empty() {
        let per: Vec<String> = i
            .kernels
            .iter()
            .filter(|k| !k.xen_pv_only)
            .map(|k| format!("{} lacks {}", k.version, k.missing_for(t).join(", ")))
            .collect();
        blockers.push(finding(
            "missing-drivers",
            format!(
                "no installed kernel has the drivers {} needs ({}): {}",
                t.name(),
                t.essential_modules().join(", "),
                per.join("; ")
            ),
        ));
    }
    if i.bootloader.kind == super::LoaderKind::Lilo {
        let cfg = i.bootloader.config.as_deref().unwrap_or("/etc/lilo.conf");
        blockers.push(at(
            finding(
                "lilo-needs-rerun",
                crate::patch::lilo::rerun_message(cfg, t),
            ),
            cfg,
            None,
        ));
    }
    if let Some(why) = encrypted_root(i, volumes, crypttab) {
        blockers.push(finding(
            "encrypted-root",
            format!("encrypted root: {why}; inspect shows what is visible, a conversion rewrites nothing inside"),
        ));
    }
    for s in states.iter().filter(|s| s.state != FsState::Clean) {
        let Some(v) = volumes.get(s.volume) else {
            continue;
        };
        let desc = super::mounts::describe_volume(v);
        let mounted: Vec<&str> = i
            .mounts
            .iter()
            .filter(|m| m.volume == Some(s.volume))
            .map(|m| m.mountpoint.as_str())
            .collect();
        let what = match s.state {
            FsState::NeedsRecovery => "its journal needs recovery",
            FsState::Errors => "it has recorded errors",
            _ => "it was not cleanly unmounted",
        };
        let msg = format!(
            "{desc}{}: {what}; boot the guest once on its old host and shut it down cleanly, or \
             run e2fsck on a copy",
            if mounted.is_empty() {
                String::new()
            } else {
                format!(" (mounted at {})", mounted.join(", "))
            }
        );
        if mounted.is_empty() {
            warnings.push(finding("unclean-filesystem", msg));
        } else {
            blockers.push(finding("unclean-filesystem", msg));
        }
    }
    if let (Some(d), Some(b)) = (default, boot) {
        if d.version != b.version {
            let why = if d.xen_pv_only {
                "is Xen PV only".to_string()
            } else {
                format!("lacks {}", d.missing_for(t).join(", "))
            };
            warnings.push(finding(
                "default-kernel-unusable",
                format!(
                    "the default kernel {} {why}; a conversion makes {} the default",
                    d.version, b.version
                ),
            ));
        }
    }
    if let Some(b) = boot {
        if !t.net_modules().iter().any(|m| b.has(m)) {
            warnings.push(finding(
                "net-driver-missing",
                format!(
                    "kernel {} has no {} driver ({}): the guest boots without network",
                    b.version,
                    t.name(),
                    t.net_modules().join(", ")
                ),
            ));
        }
        let img = i
            .initramfs
            .images
            .iter()
            .find(|m| m.kernel_version.as_deref() == Some(b.version.as_str()));
        match img {
            None => {
                let needs = t.initramfs_modules().iter().any(|m| {
                    b.driver(m)
                        .is_some_and(|d| d.state == super::kernels::DriverState::Module)
                });
                if needs {
                    warnings.push(finding(
                        "no-initramfs",
                        format!(
                            "kernel {} has no initramfs in /boot and its disk drivers are modules",
                            b.version
                        ),
                    ));
                }
            }
            Some(m) => {
                if let Some(lacks) = m.lacks(t.initramfs_modules()).filter(|l| !l.is_empty()) {
                    warnings.push(at(
                        finding(
                            "initramfs-lacks-drivers",
                            format!(
                                "{} lacks {}: a conversion adds them from /lib/modules/{}",
                                m.path,
                                lacks.join(", "),
                                b.version
                            ),
                        ),
                        &m.path,
                        None,
                    ));
                }
            }
        }
    }
    if let Some(e) = i
        .bootloader
        .default_entry
        .and_then(|x| i.bootloader.entries.get(x))
    {
        if let Some(v) = e.kernel_version() {
            let present = i
                .kernels
                .iter()
                .any(|k| k.version == v || k.image.ends_with(&format!("-{v}")));
            if !present && !i.kernels.is_empty() {
                warnings.push(at(
                    finding(
                        "default-entry-kernel-missing",
                        format!(
                            "the default boot entry '{}' names {}, which is not in /boot",
                            e.title,
                            e.kernel.as_deref().unwrap_or("?")
                        ),
                    ),
                    &e.file,
                    e.line,
                ));
            }
        }
        let cl = e.cmdline.as_deref().unwrap_or("");
        if cl
            .split_whitespace()
            .any(|w| w == "console=xvc0" || w == "console=hvc0")
        {
            warnings.push(at(
                finding(
                    "xen-console",
                    match t.serial_console() {
                        Some(s) => format!(
                            "the default entry uses the Xen console; a conversion sets console={s}"
                        ),
                        None => "the default entry uses the Xen console; a conversion drops it"
                            .to_string(),
                    },
                ),
                &e.file,
                e.line,
            ));
        }
    }
    for r in i.device_refs.iter().filter(|r| !r.in_comment) {
        if let Some(w) = r
            .rewrites
            .iter()
            .find(|x| x.target == t)
            .and_then(|x| x.warning.clone())
        {
            warnings.push(at(finding("unresolvable-device", w), &r.file, Some(r.line)));
        }
    }
    for m in i.mounts.iter().filter(|m| {
        m.volume.is_none() && !m.hardware_bound && m.note.as_deref() != Some("not a disk")
    }) {
        warnings.push(at(
            finding(
                "unresolved-mount",
                format!(
                    "{} ({}): {}",
                    m.mountpoint,
                    m.spec,
                    m.note.clone().unwrap_or_default()
                ),
            ),
            "/etc/fstab",
            Some(m.line),
        ));
    }
    for n in i.nics.iter().filter(|n| !n.bound_by_mac_in.is_empty()) {
        let name = n.name.as_deref().unwrap_or("a NIC");
        warnings.push(finding(
            "nic-bound-by-mac",
            format!(
                "{name} is bound to MAC {} in {}: give the new MAC with --mac {}=NEW (or \
                 --macs), or a conversion removes the binding so the first NIC takes {name}",
                n.mac.as_deref().unwrap_or("?"),
                n.bound_by_mac_in.join(", "),
                n.mac.as_deref().unwrap_or("OLD")
            ),
        ));
    }
    for c in &i.display.config_files {
        for d in c.devices.iter().filter(|d| d.old_hardware) {
            warnings.push(at(
                finding(
                    "xorg-old-driver",
                    format!(
                        "X uses the {} driver of the old virtual video; a conversion sets {}",
                        d.driver.as_deref().unwrap_or("?"),
                        t.xorg_driver()
                    ),
                ),
                &c.path,
                Some(d.line),
            ));
        }
    }
    if let Some(efi) = &i.bootloader.efi {
        if !efi.readable {
            warnings.push(finding(
                "uefi-esp-unreadable",
                "a UEFI guest whose EFI system partition could not be read (vfat is not read \
                 yet): check that EFI/BOOT/BOOTX64.EFI exists, as NVRAM boot entries do not travel",
            ));
        } else if !efi.fallback_loader {
            warnings.push(finding(
                "uefi-no-fallback",
                format!(
                    "UEFI guest without {}: the firmware on the target has no boot entry for \
                     it; a conversion copies the vendor loader (shim or grub) there",
                    efi.fallback_path
                ),
            ));
        }
    }
    for h in &i.hypervisor_tools {
        warnings.push(finding(
            "hypervisor-tools",
            format!("{} found ({}): {}", h.kind, h.evidence.join(", "), h.advice),
        ));
    }
    for (n, v) in volumes.iter().enumerate() {
        if v.fs_kind.as_deref() == Some("crypto_LUKS")
            && !i
                .mounts
                .iter()
                .any(|m| m.mountpoint == "/" && m.volume == Some(n))
        {
            warnings.push(finding(
                "encrypted-volume",
                format!(
                    "{} is encrypted: its contents are not visible and are not rewritten",
                    super::mounts::describe_volume(v)
                ),
            ));
        }
    }
    TargetVerdict {
        target: t,
        convertible: blockers.is_empty(),
        usable_kernels,
        boot_kernel: boot.map(|k| k.version.clone()),
        blockers,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_states() {
        let mut sb = vec![0u8; 1024];
        sb[0x38] = 0x53;
        sb[0x39] = 0xEF;
        sb[0x3A] = 1;
        assert_eq!(ext_state(&sb), Some(FsState::Clean));
        sb[0x60] = 4;
        assert_eq!(ext_state(&sb), Some(FsState::NeedsRecovery));
        sb[0x60] = 0;
        sb[0x3A] = 3;
        assert_eq!(ext_state(&sb), Some(FsState::Errors));
        sb[0x3A] = 0;
        assert_eq!(ext_state(&sb), Some(FsState::NotClean));
        assert_eq!(ext_state(&sb[..0x39]), None);
        assert_eq!(ext_state(&[0u8; 1024]), None);
    }
}
