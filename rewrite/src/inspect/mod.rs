//! `transplant inspect`: the guest as a migration engineer needs to see it before moving
//! it: OS, kernels and their drivers, initramfs images, bootloader, every device name
//! bound to the old hardware, NICs, display, hypervisor tools, and for each target what
//! blocks the move. [`Inspection`] is also what the conversion consults (usable kernels,
//! the NIC list for the MAC plan), and its JSON is a stable schema (README).

pub mod blockers;
pub mod bootloader;
pub mod devrefs;
pub mod hypervisor;
pub mod initramfs;
pub mod kernels;
pub mod mounts;
pub mod nics;
pub mod os;
pub mod xorg;

use crate::context::{Context, GuestVolume, Target};
use crate::guest_files::GuestFiles;
use serde::Serialize;

pub use blockers::{ext_state, Finding, FsState, TargetVerdict, VolumeState};
pub use bootloader::{BootEntry, Bootloader, EfiLayout, LoaderKind};
pub use devrefs::DeviceRef;
pub use hypervisor::HypervisorTool;
pub use initramfs::{Compression, Generator, InitramfsImage, InitramfsInfo, ListMembers};
pub use kernels::{Driver, DriverState, Kernel};
pub use mounts::MountEntry;
pub use nics::Nic;
pub use os::{Family, OsInfo};
pub use xorg::Display;

/// Everything inspection found. Fields are never removed or renamed; new ones may be
/// added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// The root filesystem inspected (set by the caller, who found it).
    pub root: Option<String>,
    /// Every root filesystem found (more than one: the caller asks for `--root`).
    pub roots: Vec<String>,
    pub os: OsInfo,
    /// The volumes of the source disks, as given.
    pub volumes: Vec<GuestVolume>,
    pub volume_states: Vec<VolumeState>,
    pub mounts: Vec<MountEntry>,
    pub kernels: Vec<Kernel>,
    pub default_kernel: Option<String>,
    pub initramfs: InitramfsInfo,
    pub bootloader: Bootloader,
    pub device_refs: Vec<DeviceRef>,
    pub nics: Vec<Nic>,
    pub display: Display,
    pub hypervisor_tools: Vec<HypervisorTool>,
    /// kvm, kvm-scsi, physical, in that order.
    pub targets: Vec<TargetVerdict>,
    /// Problems met while reading (a file too large, unreadable).
    pub warnings: Vec<String>,
}

impl Inspection {
    pub fn verdict(&self, t: Target) -> Option<&TargetVerdict> {
        self.targets.iter().find(|v| v.target == t)
    }
}

/// Every driver name the initramfs check looks for: what any target loads from it.
fn initramfs_wanted() -> Vec<&'static str> {
    let mut w: Vec<&'static str> = Vec::new();
    for t in [Target::Kvm, Target::KvmScsi, Target::Physical] {
        for m in t.initramfs_modules() {
            if !w.contains(m) {
                w.push(m);
            }
        }
    }
    w
}

/// Inspects the guest. `list_initramfs` lists the member names of an initramfs image's
/// bytes (every concatenated archive, decompressed).
pub fn inspect(
    guest: &dyn GuestFiles,
    volumes: &[GuestVolume],
    list_initramfs: &ListMembers,
) -> Inspection {
    inspect_with(guest, volumes, &[], list_initramfs)
}

/// [`inspect`], knowing the state of each volume's filesystem (unclean ones are
/// blockers when the guest mounts them).
pub fn inspect_with(
    guest: &dyn GuestFiles,
    volumes: &[GuestVolume],
    states: &[VolumeState],
    list_initramfs: &ListMembers,
) -> Inspection {
    let mut warnings = Vec::new();
    let mut kernels = kernels::find(guest);
    let images: Vec<String> = kernels.iter().map(|k| k.image.clone()).collect();
    let os = os::detect(guest, &images);
    let fstab = guest.read_text("/etc/fstab").unwrap_or_default();
    let mounts = mounts::parse(&fstab, volumes);
    let has_esp = mounts
        .iter()
        .any(|m| m.mountpoint == "/boot/efi" || m.mountpoint == "/efi");
    let bootloader = bootloader::find(guest, has_esp, os.arch.as_deref());
    // The default kernel: the bootloader's default entry, else /vmlinuz, else the newest.
    let from_entry = bootloader
        .default_entry
        .and_then(|i| bootloader.entries.get(i))
        .and_then(BootEntry::kernel_version);
    let from_link = ["/vmlinuz", "/boot/vmlinuz"].iter().find_map(|l| {
        let t = guest.read_link(l)?;
        let base = t.rsplit('/').next()?.to_string();
        base.strip_prefix("vmlinuz-").map(str::to_string)
    });
    let default_kernel = [from_entry, from_link]
        .into_iter()
        .flatten()
        .find(|v| {
            kernels
                .iter()
                .any(|k| k.version == *v || k.image.ends_with(&format!("-{v}")))
        })
        .and_then(|v| {
            kernels
                .iter()
                .find(|k| k.version == v || k.image.ends_with(&format!("-{v}")))
                .map(|k| k.version.clone())
        })
        .or_else(|| kernels.last().map(|k| k.version.clone()));
    for k in &mut kernels {
        k.is_default = default_kernel.as_deref() == Some(k.version.as_str());
    }
    let initramfs = initramfs::find(guest, &kernels, list_initramfs, &initramfs_wanted());
    let mut ctx = Context::new(Target::Kvm);
    ctx.volumes = volumes.to_vec();
    let (device_refs, w) = devrefs::find(guest, &ctx);
    warnings.extend(w);
    let (nics, w) = nics::find(guest);
    warnings.extend(w);
    let display = xorg::find(guest);
    let hypervisor_tools = hypervisor::find(guest);
    let mut ins = Inspection {
        root: None,
        roots: Vec::new(),
        os,
        volumes: volumes.to_vec(),
        volume_states: states.to_vec(),
        mounts,
        kernels,
        default_kernel,
        initramfs,
        bootloader,
        device_refs,
        nics,
        display,
        hypervisor_tools,
        targets: Vec::new(),
        warnings,
    };
    let crypttab = guest.read_text("/etc/crypttab").unwrap_or_default();
    ins.targets = blockers::verdicts(&ins, volumes, states, &crypttab);
    ins
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_files::MemGuest;

    fn no_list(_: &[u8]) -> Result<Vec<String>, String> {
        Err("no cpio reader in this test".into())
    }

    #[test]
    fn xen_only_sles() {
        let g = MemGuest::new()
            .file("/etc/SuSE-release", "SUSE Linux Enterprise Server 10 (x86_64)\nVERSION = 10\nPATCHLEVEL = 4\n")
            .file("/etc/fstab", "/dev/xvda2 / ext3 acl,user_xattr 1 1\n/dev/xvda1 swap swap defaults 0 0\n")
            .file("/boot/vmlinuz-2.6.16.60-0.85.1-xen", "k")
            .file("/boot/initrd-2.6.16.60-0.85.1-xen", [0x1f, 0x8b, 8])
            .file("/lib/modules/2.6.16.60-0.85.1-xen/modules.dep", "kernel/drivers/xen/blkfront/xenblk.ko:\n")
            .file("/boot/grub/menu.lst", "default 0\ntitle Xen\n kernel /boot/vmlinuz-2.6.16.60-0.85.1-xen root=/dev/xvda2 console=xvc0\n initrd /boot/initrd-2.6.16.60-0.85.1-xen\n")
            .file("/sbin/mkinitrd", "x");
        let vols = vec![
            GuestVolume {
                disk: Some(0),
                partition: Some(1),
                fs_kind: Some("swap".into()),
                ..Default::default()
            },
            GuestVolume {
                disk: Some(0),
                partition: Some(2),
                fs_kind: Some("ext3".into()),
                uuid: Some("u2".into()),
                ..Default::default()
            },
        ];
        let i = inspect(&g, &vols, &no_list);
        assert_eq!(i.os.family, Family::Suse);
        assert_eq!(i.default_kernel.as_deref(), Some("2.6.16.60-0.85.1-xen"));
        assert_eq!(i.initramfs.generator, Generator::Mkinitrd);
        assert!(i.initramfs.images[0].error.is_some());
        let v = i.verdict(Target::Kvm).unwrap();
        assert!(!v.convertible);
        assert_eq!(v.blockers[0].code, "xen-pv-only");
        assert!(v.warnings.iter().any(|w| w.code == "xen-console"));
        assert_eq!(i.mounts[0].volume, Some(1));
        assert!(i
            .device_refs
            .iter()
            .any(|r| r.file == "/boot/grub/menu.lst"));
        // The JSON serialises.
        let j = serde_json::to_value(&i).unwrap();
        assert_eq!(j["targets"][0]["target"], "kvm");
        assert_eq!(j["os"]["family"], "suse");
    }
}
