//! Module aliases (`/etc/modprobe.conf`, `/etc/modprobe.d/*`, `/etc/modules.conf`). Old
//! guests name their NIC and disk controller drivers there (`alias eth0 vmxnet3`, `alias
//! scsi_hostadapter mptspi`), and RHEL 5's `mkinitrd` builds the initramfs from the
//! `scsi_hostadapter` aliases: left alone, the new initramfs lacks the target's disk
//! driver. They become the target's drivers; on physical hardware, where the NIC is not
//! known, a NIC alias is disabled so udev loads the right driver. `install`, `options` and
//! `blacklist` lines are kept.

use super::disabled;
use super::fields::{fields, replace_field};
use crate::context::{Context, Target};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

/// NIC drivers of VMware, Xen, VirtualBox and Hyper-V virtual hardware.
pub const OLD_NIC_DRIVERS: [&str; 9] = [
    "vmxnet3",
    "vmxnet",
    "e1000",
    "pcnet32",
    "xennet",
    "xen-netfront",
    "xen_netfront",
    "hv_netvsc",
    "netvsc",
];

/// Disk controller drivers of the same.
pub const OLD_DISK_DRIVERS: [&str; 10] = [
    "mptspi",
    "mptscsih",
    "mptbase",
    "mptsas",
    "vmw_pvscsi",
    "BusLogic",
    "xenblk",
    "xen-blkfront",
    "xen_blkfront",
    "hv_storvsc",
];

/// The target's disk controller driver, as a `scsi_hostadapter` alias names it.
pub fn disk_driver(target: Target) -> &'static str {
    match target {
        Target::Kvm => "virtio_blk",
        Target::KvmScsi => "virtio_scsi",
        Target::Physical => "ahci",
    }
}

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let f = fields(body);
        let word = |i: usize| f.get(i).and_then(|r| body.get(r.clone()));
        let (Some("alias"), Some(name), Some(driver)) = (word(0), word(1), word(2)) else {
            ed.keep(raw);
            continue;
        };
        if name.starts_with("scsi_hostadapter") && OLD_DISK_DRIVERS.contains(&driver) {
            let new = disk_driver(ctx.target);
            ed.replace(
                n,
                raw,
                &replace_field(body, &f, 2, new),
                format!(
                    "{driver} drives the old disk controller; the target's disks are {} \
                     ({new})",
                    ctx.target.disk_description()
                ),
            );
        } else if OLD_NIC_DRIVERS.contains(&driver) && !name.starts_with("scsi_hostadapter") {
            match ctx.target {
                Target::Kvm | Target::KvmScsi => {
                    let new = ctx
                        .target
                        .net_modules()
                        .first()
                        .copied()
                        .unwrap_or("virtio_net");
                    ed.replace(
                        n,
                        raw,
                        &replace_field(body, &f, 2, new),
                        format!("{driver} drives the old virtual NIC; the target's NIC is {new}"),
                    );
                }
                Target::Physical => ed.replace(
                    n,
                    raw,
                    &disabled(body),
                    format!(
                        "{driver} drives the old virtual NIC; the physical NIC's driver is not \
                         known, and udev loads it by its PCI ID"
                    ),
                ),
            }
        } else {
            ed.keep(raw);
        }
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;

    const RHEL5: &str = "alias eth0 vmxnet3\n\
                         alias eth1 e1000\n\
                         alias scsi_hostadapter mptbase\n\
                         alias scsi_hostadapter1 mptspi\n\
                         alias scsi_hostadapter2 ata_piix\n\
                         options vmxnet3 disable_lro=1\n\
                         install pcspkr /bin/true\n\
                         blacklist e1000\n\
                         alias bond0 bonding\n\
                         #alias eth2 pcnet32\n";

    #[test]
    fn kvm() {
        let c = ctx(Target::Kvm);
        let p = patch("/etc/modprobe.conf", RHEL5, &c);
        let out = p.text.clone().unwrap();
        assert!(out.starts_with(
            "alias eth0 virtio_net\nalias eth1 virtio_net\nalias scsi_hostadapter virtio_blk\n\
             alias scsi_hostadapter1 virtio_blk\nalias scsi_hostadapter2 ata_piix\n\
             options vmxnet3 disable_lro=1\n"
        ));
        assert!(out.contains("blacklist e1000\nalias bond0 bonding\n#alias eth2 pcnet32\n"));
        assert_eq!(p.edits.len(), 4);
        assert!(patch("m", &out, &c).text.is_none());
    }

    #[test]
    fn physical_and_xen() {
        let c = ctx(Target::Physical);
        let t = "alias eth0 xennet\nalias scsi_hostadapter xenblk\n";
        let p = patch("/etc/modprobe.conf", t, &c);
        assert_eq!(
            p.text.as_deref(),
            Some("# disabled by transplant: alias eth0 xennet\nalias scsi_hostadapter ahci\n")
        );
        let p = patch(
            "m",
            "alias  scsi_hostadapter\txen-blkfront  # pv\n",
            &ctx(Target::KvmScsi),
        );
        assert_eq!(
            p.text.as_deref(),
            Some("alias  scsi_hostadapter\tvirtio_scsi   # pv\n")
        );
    }
}
