//! What a conversion knows before it edits anything: the target, the guest's volumes as
//! found in the source images, and the plan for NICs. Patchers ask it one question each
//! ("what does `/dev/sda1` become here", "what happens to MAC 00:50:56:..") so every
//! file is rewritten by the same rules.

use crate::devname::{self, Bus, DevRef};
use serde::Serialize;

/// Where the guest is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// KVM with virtio-blk disks (`/dev/vdX`) and virtio-net.
    Kvm,
    /// KVM with virtio-scsi disks (names stay `/dev/sdX`) and virtio-net.
    KvmScsi,
    /// Physical hardware: SATA/AHCI or NVMe disks, real NICs, real video.
    Physical,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Kvm => "kvm",
            Target::KvmScsi => "kvm-scsi",
            Target::Physical => "physical",
        }
    }

    /// The bus whose kernel names the target's disks get, when it is known. Physical
    /// hardware may be SATA or NVMe, so there is none and names become UUIDs.
    pub fn disk_bus(self) -> Option<Bus> {
        match self {
            Target::Kvm => Some(Bus::Virtio),
            Target::KvmScsi => Some(Bus::Scsi),
            Target::Physical => None,
        }
    }

    /// Top-level modules the initramfs must hold (or the kernel have built in) to find the
    /// root disk on the target; their dependencies come from `modules.dep`.
    pub fn initramfs_modules(self) -> &'static [&'static str] {
        match self {
            Target::Kvm => &["virtio_pci", "virtio_blk"],
            Target::KvmScsi => &["virtio_pci", "virtio_scsi", "sd_mod"],
            // A generic image: whatever the physical box has (AHCI/SATA, NVMe), and virtio
            // too, so the same disk also boots in a VM for testing.
            Target::Physical => &[
                "ahci",
                "sd_mod",
                "nvme",
                "virtio_pci",
                "virtio_blk",
                "virtio_scsi",
            ],
        }
    }

    /// Modules without which no installed kernel can boot the target: a kernel lacking
    /// one of these (neither built in nor in its modules directory) is not usable.
    pub fn essential_modules(self) -> &'static [&'static str] {
        match self {
            Target::Kvm => &["virtio_pci", "virtio_blk"],
            Target::KvmScsi => &["virtio_pci", "virtio_scsi", "sd_mod"],
            Target::Physical => &["ahci", "sd_mod", "nvme"],
        }
    }

    /// NIC drivers the target uses; missing ones are a warning (no network), not a
    /// blocker.
    pub fn net_modules(self) -> &'static [&'static str] {
        match self {
            Target::Kvm | Target::KvmScsi => &["virtio_net"],
            Target::Physical => &["e1000e", "igb", "ixgbe", "r8169", "tg3", "bnx2", "e1000"],
        }
    }

    /// The serial console the target's kernel command line should use (None: the
    /// physical screen).
    pub fn serial_console(self) -> Option<&'static str> {
        match self {
            Target::Kvm | Target::KvmScsi => Some("ttyS0"),
            Target::Physical => None,
        }
    }

    /// The X.org driver that works on the target's video (QXL, virtio-gpu, most real
    /// cards).
    pub fn xorg_driver(self) -> &'static str {
        "modesetting"
    }

    /// What the disks are called there, for reasons in reports.
    pub fn disk_description(self) -> &'static str {
        match self {
            Target::Kvm => "virtio-blk (/dev/vdX)",
            Target::KvmScsi => "virtio-scsi (/dev/sdX)",
            Target::Physical => "SATA/AHCI (/dev/sdX) or NVMe (/dev/nvmeXn1)",
        }
    }
}

/// How old kernel device names are rewritten (`--device-names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceNaming {
    /// `UUID=` (or `LABEL=`) read from the filesystem itself: survives any bus.
    Uuid,
    /// The same disk order on the target's bus (`/dev/sda1` → `/dev/vda1`).
    Rename,
}

/// What happens to static network settings (`--network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Keep,
    Dhcp,
}

/// One partition, whole disk or LV of the guest as the source images hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GuestVolume {
    /// Disk index in the order the images are given (0 is the first disk: sda, vda, ...);
    /// None for an LV.
    pub disk: Option<usize>,
    /// Partition number; None for a whole disk or an LV.
    pub partition: Option<u32>,
    /// (VG, LV) for a logical volume.
    pub lv: Option<(String, String)>,
    /// As blkid's TYPE (ext4, xfs, swap, ...).
    pub fs_kind: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// The GPT partition GUID (MBR: disk signature + number), for `PARTUUID=`.
    pub partuuid: Option<String>,
}

/// What a NIC binding by MAC address becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacFate {
    /// Bind the same name and configuration to this new MAC.
    Replace(String),
    /// No new MAC is known: drop the binding so the first NIC takes the old name.
    Unbind,
}

/// The form a device reference must take where it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecForm {
    /// fstab, crypttab, `root=`/`resume=`: `UUID=...` or `LABEL=...` are understood.
    Spec,
    /// A path is needed (device.map, mdadm `DEVICE`, scripts): `/dev/disk/by-uuid/...`
    /// or a kernel name on the new bus.
    Path,
}

/// A rewritten device reference and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub new: String,
    pub reason: String,
}

/// Everything a patcher needs to know.
#[derive(Debug, Clone)]
pub struct Context {
    pub target: Target,
    pub naming: DeviceNaming,
    pub network: NetworkMode,
    pub volumes: Vec<GuestVolume>,
    /// Old MAC → new MAC (both lowercase, colon-separated), resolved from `--mac OLD=NEW`
    /// or `--macs NEW,...` against the guest's NICs.
    pub mac_map: Vec<(String, String)>,
}

/// Lowercase, colon-separated: `00-50-56-AB-CD-EF` and `0050.56ab.cdef` become
/// `00:50:56:ab:cd:ef`. None if it is not 6 bytes of hex.
pub fn normalize_mac(s: &str) -> Option<String> {
    let hex: String = s
        .trim()
        .trim_matches('"')
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let lower = hex.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..6).filter_map(|i| lower.get(i * 2..i * 2 + 2)).collect();
    Some(pairs.join(":"))
}

impl Context {
    pub fn new(target: Target) -> Self {
        Context {
            target,
            naming: DeviceNaming::Uuid,
            network: NetworkMode::Keep,
            volumes: Vec::new(),
            mac_map: Vec::new(),
        }
    }

    /// What a NIC bound to `old` becomes.
    pub fn mac_fate(&self, old: &str) -> MacFate {
        let Some(old) = normalize_mac(old) else {
            return MacFate::Unbind;
        };
        self.mac_map
            .iter()
            .find(|(o, _)| *o == old)
            .map(|(_, n)| MacFate::Replace(n.clone()))
            .unwrap_or(MacFate::Unbind)
    }

    /// The volume a kernel name points at, by disk order and partition number.
    pub fn volume_at(&self, disk: usize, partition: Option<u32>) -> Option<&GuestVolume> {
        self.volumes
            .iter()
            .find(|v| v.disk == Some(disk) && v.partition == partition && v.lv.is_none())
    }

    /// What the device reference `old` becomes on the target, written in `form`.
    ///
    /// `Ok(None)`: keep it (content names, LVM, md, names already right for the target).
    /// `Err(message)`: it names old hardware but cannot be rewritten safely (it matches no
    /// disk, or names a disk by serial); the caller warns and leaves it, never guesses.
    pub fn rewrite_device(&self, old: &str, form: SpecForm) -> Result<Option<Rewritten>, String> {
        let Some(r) = devname::parse(old) else {
            return Ok(None);
        };
        match r {
            DevRef::Kernel {
                bus,
                disk,
                partition,
            } => self.rewrite_kernel(old, bus, disk, partition, form),
            DevRef::ById(ref name) => self.rewrite_hardware_name(
                old,
                name,
                "names the old disk by its model and serial",
                form,
            ),
            DevRef::ByPath(ref name) => self.rewrite_hardware_name(
                old,
                name,
                "names the old disk by its controller's address",
                form,
            ),
            _ => Ok(None),
        }
    }

    /// A by-id or by-path name: the target's disk will not have it. Which disk it meant
    /// can only be told when the guest has a single disk, and then `-partN` is that
    /// disk's partition N; with more disks the serial or controller address does not say
    /// which one (the image has neither), so it is left for the administrator.
    fn rewrite_hardware_name(
        &self,
        old: &str,
        name: &str,
        what: &str,
        form: SpecForm,
    ) -> Result<Option<Rewritten>, String> {
        let mut disks = self.volumes.iter().filter_map(|v| v.disk);
        let single = disks.next().is_some_and(|d| disks.all(|e| e == d));
        let partition = name
            .rsplit_once("-part")
            .and_then(|(_, n)| n.parse::<u32>().ok());
        let disk = self.volumes.iter().find_map(|v| v.disk);
        let vol = match (single, partition, disk) {
            (true, Some(p), Some(d)) => self.volume_at(d, Some(p)),
            _ => None,
        };
        let Some(v) = vol else {
            let why = if !single {
                "the guest has several disks and the name does not say which"
            } else if partition.is_none() {
                "it names a whole disk"
            } else {
                "the guest's disk has no such partition"
            };
            return Err(format!(
                "{old} {what}; it will not exist on the target and {why}; replace it by hand \
                 (UUID= of the filesystem is the safe choice)"
            ));
        };
        let named = |kind: &str, value: &str| match form {
            SpecForm::Spec => format!("{}={value}", kind.to_ascii_uppercase()),
            SpecForm::Path => format!("/dev/disk/by-{kind}/{value}"),
        };
        let (new, by) = match (&v.uuid, &v.label) {
            (Some(u), _) => (named("uuid", u), "UUID"),
            (None, Some(l)) => (named("label", l), "label"),
            (None, None) => {
                return Err(format!(
                    "{old} {what}; it will not exist on the target, and its filesystem has no \
                     UUID or label to name it by; replace it by hand"
                ))
            }
        };
        Ok(Some(Rewritten {
            new,
            reason: format!(
                "{old} {what}, which the target's disk will not have; the guest has one \
                 disk, so it is that disk's partition {}: named by the filesystem's {by}",
                partition.unwrap_or_default()
            ),
        }))
    }

    fn rewrite_kernel(
        &self,
        old: &str,
        bus: Bus,
        disk: usize,
        partition: Option<u32>,
        form: SpecForm,
    ) -> Result<Option<Rewritten>, String> {
        let target_bus = self.target.disk_bus();
        if target_bus == Some(bus) && self.naming == DeviceNaming::Rename {
            return Ok(None);
        }
        let vol = self.volume_at(disk, partition);
        let by_content = self.naming == DeviceNaming::Uuid || target_bus.is_none();
        if by_content {
            if let Some(v) = vol {
                if let Some(u) = &v.uuid {
                    let new = match form {
                        SpecForm::Spec => format!("UUID={u}"),
                        SpecForm::Path => format!("/dev/disk/by-uuid/{u}"),
                    };
                    return Ok(Some(Rewritten {
                        new,
                        reason: format!(
                            "{old} is a kernel name on the old bus; the target's disks are \
                             {}: named by the filesystem's UUID, which survives any bus",
                            self.target.disk_description()
                        ),
                    }));
                }
                if let Some(l) = &v.label {
                    let new = match form {
                        SpecForm::Spec => format!("LABEL={l}"),
                        SpecForm::Path => format!("/dev/disk/by-label/{l}"),
                    };
                    return Ok(Some(Rewritten {
                        new,
                        reason: format!(
                            "{old} is a kernel name on the old bus; its filesystem has no \
                             UUID, so it is named by its label"
                        ),
                    }));
                }
            }
        }
        let Some(tb) = target_bus else {
            return Err(match vol {
                Some(_) => format!(
                    "{old}: no UUID or label to name it by, and physical disks have no fixed \
                     kernel name; set it by hand on the new machine"
                ),
                None => format!("{old} matches no disk or partition of this guest; left as is"),
            });
        };
        // A whole disk (device.map, grub-install target) has no UUID: rename it.
        let disk_exists = self.volumes.iter().any(|v| v.disk == Some(disk));
        if vol.is_none() && !(partition.is_none() && disk_exists) {
            return Err(format!(
                "{old} matches no disk or partition of this guest; left as is"
            ));
        }
        let new = devname::kernel_name(tb, disk, partition);
        if new == old {
            return Ok(None);
        }
        Ok(Some(Rewritten {
            reason: format!(
                "{old} is a kernel name on the old bus; on the target the same disk is {new} \
                 ({})",
                self.target.disk_description()
            ),
            new,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(target: Target, naming: DeviceNaming) -> Context {
        let mut c = Context::new(target);
        c.naming = naming;
        c.volumes = vec![
            GuestVolume {
                disk: Some(0),
                partition: None,
                ..Default::default()
            },
            GuestVolume {
                disk: Some(0),
                partition: Some(1),
                fs_kind: Some("ext4".into()),
                uuid: Some("6f1c".into()),
                ..Default::default()
            },
            GuestVolume {
                disk: Some(0),
                partition: Some(5),
                fs_kind: Some("swap".into()),
                label: Some("swap0".into()),
                ..Default::default()
            },
            GuestVolume {
                disk: Some(0),
                partition: Some(6),
                ..Default::default()
            },
        ];
        c.mac_map = vec![("00:50:56:ab:cd:ef".into(), "52:54:00:12:34:56".into())];
        c
    }

    fn new(c: &Context, old: &str, form: SpecForm) -> Result<Option<String>, String> {
        c.rewrite_device(old, form).map(|r| r.map(|x| x.new))
    }

    #[test]
    fn uuid_naming() {
        let c = ctx(Target::Kvm, DeviceNaming::Uuid);
        assert_eq!(
            new(&c, "/dev/sda1", SpecForm::Spec),
            Ok(Some("UUID=6f1c".into()))
        );
        assert_eq!(
            new(&c, "/dev/xvda1", SpecForm::Path),
            Ok(Some("/dev/disk/by-uuid/6f1c".into()))
        );
        assert_eq!(
            new(&c, "/dev/sda5", SpecForm::Spec),
            Ok(Some("LABEL=swap0".into()))
        );
        // No filesystem identity: the kernel name on the new bus.
        assert_eq!(
            new(&c, "/dev/sda6", SpecForm::Spec),
            Ok(Some("/dev/vda6".into()))
        );
        assert_eq!(
            new(&c, "/dev/sda", SpecForm::Path),
            Ok(Some("/dev/vda".into()))
        );
        assert!(new(&c, "/dev/sdb1", SpecForm::Spec).is_err());
        assert_eq!(new(&c, "UUID=6f1c", SpecForm::Spec), Ok(None));
        assert_eq!(new(&c, "/dev/mapper/vg-root", SpecForm::Spec), Ok(None));
    }

    #[test]
    fn hardware_names_on_a_single_disk_guest() {
        let c = ctx(Target::Kvm, DeviceNaming::Uuid);
        let vmware = "/dev/disk/by-id/scsi-36000c29f4a8b1e2d3c4b5a697887a6b5-part1";
        assert_eq!(
            new(&c, vmware, SpecForm::Spec),
            Ok(Some("UUID=6f1c".into()))
        );
        assert_eq!(
            new(
                &c,
                "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part5",
                SpecForm::Path
            ),
            Ok(Some("/dev/disk/by-label/swap0".into()))
        );
        let r = c
            .rewrite_device(
                "/dev/disk/by-id/ata-VMware_Virtual_S_01-part1",
                SpecForm::Spec,
            )
            .unwrap()
            .unwrap();
        assert!(r.reason.contains("one disk"), "{}", r.reason);
        // A whole disk, a partition that is not there, one without identity: left.
        let e = new(&c, "/dev/disk/by-id/wwn-0x6000c29f4a8b1e2d", SpecForm::Path).unwrap_err();
        assert!(e.contains("whole disk"), "{e}");
        assert!(new(&c, "/dev/disk/by-id/ata-X-part9", SpecForm::Spec).is_err());
        assert!(new(&c, "/dev/disk/by-id/ata-X-part6", SpecForm::Spec).is_err());
        // Two disks: the serial does not say which.
        let mut two = c.clone();
        two.volumes.push(GuestVolume {
            disk: Some(1),
            partition: Some(1),
            uuid: Some("beef".into()),
            ..Default::default()
        });
        let e = new(&two, vmware, SpecForm::Spec).unwrap_err();
        assert!(e.contains("several disks"), "{e}");
    }

    #[test]
    fn rename_naming() {
        let c = ctx(Target::Kvm, DeviceNaming::Rename);
        assert_eq!(
            new(&c, "/dev/sda1", SpecForm::Spec),
            Ok(Some("/dev/vda1".into()))
        );
        assert_eq!(new(&c, "/dev/vda1", SpecForm::Spec), Ok(None));
        let c = ctx(Target::KvmScsi, DeviceNaming::Rename);
        assert_eq!(new(&c, "/dev/sda1", SpecForm::Spec), Ok(None));
        assert_eq!(
            new(&c, "/dev/hda1", SpecForm::Spec),
            Ok(Some("/dev/sda1".into()))
        );
        // Physical: always by content.
        let c = ctx(Target::Physical, DeviceNaming::Rename);
        assert_eq!(
            new(&c, "/dev/sda1", SpecForm::Spec),
            Ok(Some("UUID=6f1c".into()))
        );
        assert!(new(&c, "/dev/sda6", SpecForm::Spec).is_err());
    }

    #[test]
    fn macs() {
        let c = ctx(Target::Kvm, DeviceNaming::Uuid);
        assert_eq!(
            c.mac_fate("00:50:56:AB:CD:EF"),
            MacFate::Replace("52:54:00:12:34:56".into())
        );
        assert_eq!(c.mac_fate("00:0c:29:00:00:01"), MacFate::Unbind);
        assert_eq!(
            normalize_mac("0050.56ab.cdef").as_deref(),
            Some("00:50:56:ab:cd:ef")
        );
        assert_eq!(normalize_mac("00:50:56"), None);
    }
}
