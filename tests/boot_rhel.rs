//! The RHEL-shaped guest booted in QEMU before and after `convert --to kvm` (issue 8 part 4).
//!
//! The guest (fixtures/sets/guest-rhel.sh) is Debian's packages in the layout of a RHEL
//! install on VMware: GPT with a BIOS boot partition, /boot on XFS, the VG `rhel` with an
//! XFS root LV and a swap LV, a host-only dracut initramfs without virtio, BLS entry and
//! grubenv, ifcfg-eth0 with the VMware MAC as HWADDR, RHEL 9's LVM devices file (also in
//! the initramfs), SELinux labels on the files a conversion replaces. "Before" proves it boots on its old hardware and not on virtio;
//! "after" converts it and boots the result on virtio-blk and virtio-net, then checks the
//! converted filesystems offline with the XFS tools and the kernel.
//!
//! Run only these: `cargo test --test boot_rhel` (as root). `TRANSPLANT_BOOT_ACCEL=tcg|kvm`
//! forces the accelerator.

#[path = "boot/mod.rs"]
mod boot;

use boot::{boot, boot_timeout, have, rhel_guest, Disk, Nic};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// The MAC of the KVM virtio NIC, as a user would pass with `--mac`.
const NEW_MAC: &str = "52:54:00:ab:cd:02";

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// On VMware's paravirtual SCSI and vmxnet3 with its own MAC: root from the LV through
/// vmw_pvscsi and the host-only initramfs, eth0 configured from ifcfg-eth0 by HWADDR.
#[test]
fn rhel_guest_boots_on_pvscsi_with_its_own_mac() {
    let Some(g) = rhel_guest() else {
        return;
    };
    let o = boot(&g.image, Disk::Pvscsi, Nic::Vmxnet3, g.mac, boot_timeout());
    o.assert_booted(g.root, g.address);
    assert_eq!(o.ifaces, ["eth0"], "{}", o.tail(30));
    assert_eq!(o.drivers["eth0"], "vmxnet3");
    assert_eq!(o.macs["eth0"], g.mac);
    assert_eq!(o.fields["kernel"], g.kernel);
    assert!(o
        .log
        .contains("dracut: Mounted root filesystem /dev/mapper/rhel-root"));
    assert!(o.exited, "the guest powers off after its marker");
    eprintln!("rhel on pvscsi: {:?} under {:?}", o.elapsed, o.accel);
}

/// On KVM's virtio disk the host-only initramfs has no driver for it: dracut never sees
/// the PV, and gives up.
#[test]
fn rhel_guest_on_virtio_does_not_find_root() {
    let Some(g) = rhel_guest() else {
        return;
    };
    let o = boot(
        &g.image,
        Disk::Virtio,
        Nic::VirtioNet,
        NEW_MAC,
        boot_timeout(),
    );
    assert!(o.gave_up_on_root, "{}", o.tail(60));
    assert!(!o.reached_marker());
    assert!(!o.timed_out, "the harness stops a boot that gives up");
    assert!(o.log.contains("Could not boot."), "{}", o.tail(30));
    assert!(!o.log.contains("Scanning devices"), "{}", o.tail(30));
    eprintln!("rhel on virtio: gave up after {:?}", o.elapsed);
}

/// The converted disk as raw, and the byte ranges of /boot and of the root LV in it, from
/// `transplant info --json` (partition table and LVM metadata): the VG is never activated
/// on the host.
struct Layout {
    boot: (u64, u64),
    root: (u64, u64),
}

fn layout(raw: &Path) -> Layout {
    let o = boot::transplant(&[OsStr::new("info"), raw.as_os_str(), OsStr::new("--json")]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = j["partition_table"]["partitions"].as_array().unwrap();
    let part = |n: u64| {
        let p = parts.iter().find(|p| p["number"] == n).unwrap();
        (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap())
    };
    let vg = j["volume_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "rhel")
        .unwrap();
    let extent = vg["extent_size"].as_u64().unwrap();
    let pe_start = vg["pvs"][0]["pe_start"].as_u64().unwrap();
    let lv = vg["lvs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "root")
        .unwrap();
    let segs = lv["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 1, "one linear segment: {lv}");
    let first = segs[0]["stripes"][0][1].as_u64().unwrap();
    let count = segs[0]["extent_count"].as_u64().unwrap();
    Layout {
        boot: part(2),
        root: (part(3).0 + pe_start + first * extent, count * extent),
    }
}

/// A read-only loop device on part of a file, detached when dropped.
struct Loop(String);

impl Loop {
    fn new(file: &Path, (offset, size): (u64, u64)) -> Loop {
        let dev = sh(&format!(
            "losetup -r -f --show -o {offset} --sizelimit {size} {}",
            file.display()
        ));
        Loop(dev.trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A read-only mount, unmounted when dropped (before its loop device is detached).
struct Mount(std::path::PathBuf);

impl Mount {
    fn new(dev: &Loop, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        sh(&format!(
            "mount -t xfs -o ro,norecovery {} {}",
            dev.0,
            at.display()
        ));
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn repair_clean(dev: &Loop, what: &str) {
    let out = Command::new("xfs_repair")
        .args(["-n", &dev.0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && !text.contains("would")
            && !text.contains("counted")
            && !text.contains("bad "),
        "xfs_repair -n on {what}:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn label(path: &Path) -> String {
    sh(&format!(
        "getfattr --only-values -n security.selinux {}",
        path.display()
    ))
    .trim_end_matches('\0')
    .to_string()
}

/// After `--to kvm --mac OLD=NEW`: root from the LV on the virtio disk, eth0 on virtio-net
/// with the new MAC and the old address; offline, both XFS filesystems are clean, the
/// replaced files kept their SELinux labels, the initramfs holds virtio_blk.
#[test]
fn rhel_guest_converted_to_kvm_boots_on_virtio() {
    let Some(g) = rhel_guest() else {
        return;
    };
    for tool in ["xfs_repair", "getfattr", "lsinitrd", "losetup", "mount"] {
        if !have(tool) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("kvm.qcow2");
    let report = d.join("report.json");
    let o = boot::transplant(&[
        OsStr::new("convert"),
        g.image.as_os_str(),
        out.as_os_str(),
        OsStr::new("-O"),
        OsStr::new("qcow2"),
        OsStr::new("--to"),
        OsStr::new("kvm"),
        OsStr::new("--mac"),
        OsStr::new(&format!("{}={NEW_MAC}", g.mac)),
        OsStr::new("--report"),
        report.as_os_str(),
    ]);
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));

    let b = boot(&out, Disk::Virtio, Nic::VirtioNet, NEW_MAC, boot_timeout());
    b.assert_booted(g.root, g.address);
    assert_eq!(b.drivers["eth0"], "virtio_net");
    assert_eq!(b.macs["eth0"], NEW_MAC);
    assert!(b.log.contains("Scanning devices vda3"), "{}", b.tail(40));
    eprintln!(
        "rhel converted, on virtio: {:?} under {:?}",
        b.elapsed, b.accel
    );

    // Offline: the filesystems as the XFS tools and the kernel see them.
    let raw = d.join("kvm.raw");
    sh(&format!(
        "qemu-img convert -O raw {} {}",
        out.display(),
        raw.display()
    ));
    let l = layout(&raw);
    let boot_dev = Loop::new(&raw, l.boot);
    let root_dev = Loop::new(&raw, l.root);
    repair_clean(&boot_dev, "/boot");
    repair_clean(&root_dev, "the root LV");
    let initrd = format!("initramfs-{}.img", g.kernel);
    {
        let m = Mount::new(&boot_dev, &d.join("boot"));
        assert_eq!(label(&m.0.join(&initrd)), "system_u:object_r:boot_t:s0");
        let list = sh(&format!("lsinitrd {}", m.0.join(&initrd).display()));
        assert!(list.contains("/virtio_blk.ko"), "{list}");
        assert!(list.contains("/vmw_pvscsi.ko"), "the old drivers stay");
        // LVM's devices file names /dev/sda3; left in the image it would hide vda3 from
        // an LVM without search_for_devnames (RHEL 9.0's) or for a WWID entry.
        assert!(!list.contains("etc/lvm/devices/system.devices"), "{list}");
        assert!(list.contains("etc/lvm/lvm.conf"), "{list}");
    }
    let m = Mount::new(&root_dev, &d.join("root"));
    let etc = m.0.join("etc");
    assert_eq!(label(&etc.join("fstab")), "system_u:object_r:etc_t:s0");
    let ifcfg = etc.join("sysconfig/network-scripts/ifcfg-eth0");
    assert_eq!(label(&ifcfg), "system_u:object_r:net_conf_t:s0");
    let text = std::fs::read_to_string(&ifcfg).unwrap();
    assert!(text.contains(&format!("HWADDR={NEW_MAC}")), "{text}");
    assert!(!text.contains(g.mac), "{text}");
    assert!(!etc.join("lvm/devices/system.devices").exists());
    // The conversion created files (dracut snippet, initramfs backup), which carry no
    // label offline: the first boot relabels.
    assert!(m.0.join(".autorelabel").exists());
    let fstab = std::fs::read_to_string(etc.join("fstab")).unwrap();
    assert!(fstab.contains("/dev/mapper/rhel-root"), "{fstab}");
    drop(m);
    drop(root_dev);
    drop(boot_dev);

    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    eprintln!(
        "report: {}",
        serde_json::to_string_pretty(&r["files"]).unwrap()
    );
}
