//! `transplant inspect` end to end: the committed demo guest, and guests built here with
//! mkfs.ext4 -d from sample trees (a RHEL-7-like guest with ifcfg and GRUB 2, a Xen-era
//! SLES-like guest with menu.lst and only a -xen kernel, a disk with two roots).

mod common;
use common::have;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(args)
        .output()
        .unwrap()
}

fn tools() -> bool {
    [
        "mkfs.ext4",
        "mkfs.ext3",
        "mkswap",
        "sfdisk",
        "qemu-img",
        "debugfs",
    ]
    .iter()
    .all(|t| have(t))
}

fn json(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes `files` (path, content) under `root`.
fn tree(root: &Path, files: &[(&str, &[u8])]) {
    for (p, c) in files {
        let full = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, c).unwrap();
    }
}

/// A partition to build: a filesystem from a tree, or swap.
enum Part<'a> {
    Fs {
        kind: &'a str,
        label: &'a str,
        uuid: &'a str,
        root: &'a Path,
        mib: u64,
    },
    Swap {
        uuid: &'a str,
        mib: u64,
    },
}

/// An MBR disk holding `parts` in order, starting at 1 MiB, as qcow2.
fn disk(dir: &Path, name: &str, parts: &[Part], edit: impl Fn(usize, &Path)) -> PathBuf {
    let mut layout = String::from("label: dos\n");
    let mut start = 1u64;
    let mut images = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let img = dir.join(format!("{name}-p{}.img", i + 1));
        let mib = match p {
            Part::Fs {
                kind,
                label,
                uuid,
                root,
                mib,
            } => {
                assert!(Command::new(format!("mkfs.{kind}"))
                    .args([
                        "-q",
                        "-F",
                        "-L",
                        label,
                        "-U",
                        uuid,
                        "-E",
                        "root_owner=0:0",
                        "-d"
                    ])
                    .arg(root)
                    .arg(&img)
                    .arg(format!("{mib}M"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap()
                    .success());
                *mib
            }
            Part::Swap { uuid, mib } => {
                std::fs::File::create(&img)
                    .unwrap()
                    .set_len(mib << 20)
                    .unwrap();
                assert!(Command::new("mkswap")
                    .args(["-q", "-U", uuid])
                    .arg(&img)
                    .status()
                    .unwrap()
                    .success());
                *mib
            }
        };
        edit(i + 1, &img);
        let ty = if matches!(p, Part::Swap { .. }) {
            "82"
        } else {
            "83"
        };
        layout.push_str(&format!("start={}M,size={mib}M,type={ty}\n", start));
        images.push((img, start));
        start += mib;
    }
    let raw = dir.join(format!("{name}.raw"));
    std::fs::File::create(&raw)
        .unwrap()
        .set_len((start + 1) << 20)
        .unwrap();
    let mut c = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&raw)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(layout.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
    for (img, seek) in images {
        assert!(Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", raw.display()))
            .args([
                "bs=1M",
                &format!("seek={seek}"),
                "conv=notrunc",
                "status=none"
            ])
            .status()
            .unwrap()
            .success());
    }
    let q = dir.join(format!("{name}.qcow2"));
    assert!(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .status()
        .unwrap()
        .success());
    q
}

fn demo() -> String {
    format!("{}/fixtures/demo/guest.qcow2", env!("CARGO_MANIFEST_DIR"))
}

fn codes(v: &Value, target: usize, what: &str) -> Vec<String> {
    v["targets"][target][what]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn demo_guest() {
    let v = json(&["inspect", "--json", &demo()]);
    assert_eq!(v["os"]["distro"], "debian");
    assert_eq!(v["os"]["version"], "12");
    assert_eq!(v["os"]["family"], "debian");
    assert_eq!(v["root"], format!("{}@1", demo()));
    assert_eq!(
        v["volumes"][0]["uuid"],
        "6f1c2b1e-8f5e-4a7b-9c1d-2e3f4a5b6c7d"
    );
    assert_eq!(v["mounts"][0]["mountpoint"], "/");
    assert_eq!(v["mounts"][0]["volume"], 0);
    assert_eq!(v["mounts"][0]["hardware_bound"], true);
    assert_eq!(v["bootloader"]["kind"], "grub2");
    assert_eq!(
        v["bootloader"]["entries"][0]["cmdline"],
        "root=/dev/sda1 ro quiet"
    );
    let nic = &v["nics"][0];
    assert_eq!(nic["name"], "eth0");
    assert_eq!(nic["mac"], "00:50:56:ab:cd:ef");
    assert_eq!(nic["driver"], "vmxnet3");
    assert_eq!(nic["method"], "static");
    assert_eq!(nic["addresses"][0], "192.0.2.10/24");
    assert_eq!(
        v["display"]["config_files"][0]["devices"][0]["driver"],
        "vmware"
    );
    let refs: Vec<(String, u64)> = v["device_refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["file"].as_str().unwrap().to_string(),
                r["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        [
            ("/etc/fstab".to_string(), 2),
            ("/etc/fstab".to_string(), 3),
            ("/boot/grub/grub.cfg".to_string(), 2),
            ("/boot/grub/device.map".to_string(), 1),
            ("/etc/default/grub".to_string(), 5)
        ]
    );
    assert_eq!(
        v["device_refs"][0]["rewrites"][0]["new"],
        "UUID=6f1c2b1e-8f5e-4a7b-9c1d-2e3f4a5b6c7d"
    );
    assert_eq!(v["targets"][0]["target"], "kvm");
    // The demo carries Debian's 6.1 modules: every target can boot once the initramfs
    // gets its drivers.
    assert_eq!(v["targets"][0]["convertible"], true);
    assert!(codes(&v, 0, "blockers").is_empty());
    assert_eq!(v["targets"][0]["boot_kernel"], "6.1.0-50-amd64");
    let w = codes(&v, 0, "warnings");
    for c in [
        "nic-bound-by-mac",
        "xorg-old-driver",
        "initramfs-lacks-drivers",
    ] {
        assert!(w.iter().any(|x| x == c), "{w:?}");
    }
    // The summary has every section.
    let out = run(&["inspect", &demo()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for s in [
        "OS\n",
        "Mounts (/etc/fstab)",
        "Kernels",
        "Initramfs",
        "Bootloader",
        "Device references to old hardware",
        "NICs",
        "Display",
        "Hypervisor tools",
        "Target kvm: convertible",
        "Target physical:",
    ] {
        assert!(text.contains(s), "{s} missing in:\n{text}");
    }
}

const RHEL_UUID: &str = "8d1e6a3c-4b2f-4e6a-9c7d-1f2e3d4c5b6a";
const SWAP_UUID: &str = "0b6f0b1e-6d2c-4f6b-8a91-3c2b1a0f9e8d";

#[test]
fn rhel7_like_guest() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rhel");
    let kv = "3.10.0-1160.el7.x86_64";
    let md = format!("/lib/modules/{kv}");
    let sh = std::fs::read("/bin/sh").unwrap_or_default();
    let fstab = format!(
        "#\n# /etc/fstab\n# Created by anaconda\n#\nUUID={RHEL_UUID} /                       ext4    defaults        1 1\n/dev/sda2               swap                    swap    defaults        0 0\n"
    );
    let grub = format!(
        "set default=\"0\"\nmenuentry 'CentOS Linux ({kv}) 7 (Core)' --class centos $menuentry_id_option 'gnulinux-{kv}-advanced-{RHEL_UUID}' {{\n\tinsmod ext2\n\tlinux16 /boot/vmlinuz-{kv} root=UUID={RHEL_UUID} ro crashkernel=auto resume=/dev/sda2 rhgb quiet\n\tinitrd16 /boot/initramfs-{kv}.img\n}}\n"
    );
    tree(
        &root,
        &[
            ("/etc/os-release", b"NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\n"),
            ("/etc/redhat-release", b"CentOS Linux release 7.9.2009 (Core)\n"),
            ("/etc/fstab", fstab.as_bytes()),
            ("/etc/default/grub", b"GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"crashkernel=auto resume=/dev/sda2 rhgb quiet\"\n"),
            ("/boot/grub2/grub.cfg", grub.as_bytes()),
            (&format!("/boot/vmlinuz-{kv}"), b"not really a kernel"),
            (&format!("/boot/initramfs-{kv}.img"), &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]),
            (&format!("/boot/config-{kv}"), b"CONFIG_XEN=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_SATA_AHCI=m\n"),
            (&format!("{md}/modules.builtin"), b"kernel/drivers/scsi/sd_mod.ko\n"),
            (&format!("{md}/modules.dep"), b"kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz\nkernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz\nkernel/drivers/virtio/virtio_ring.ko.xz:\nkernel/drivers/virtio/virtio.ko.xz:\nkernel/drivers/scsi/virtio_scsi.ko.xz:\nkernel/drivers/net/virtio_net.ko.xz:\nkernel/drivers/ata/ahci.ko.xz: kernel/drivers/ata/libahci.ko.xz\nkernel/drivers/ata/libahci.ko.xz:\nkernel/drivers/nvme/host/nvme.ko.xz: kernel/drivers/nvme/host/nvme-core.ko.xz\nkernel/drivers/nvme/host/nvme-core.ko.xz:\nkernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.xz:\n"),
            ("/usr/bin/dracut", b"#!/bin/bash\n"),
            ("/etc/sysconfig/network-scripts/ifcfg-ens192", b"TYPE=Ethernet\nBOOTPROTO=none\nNAME=ens192\nDEVICE=ens192\nONBOOT=yes\nHWADDR=00:50:56:9a:bc:de\nIPADDR=192.0.2.20\nPREFIX=24\nGATEWAY=192.0.2.1\n"),
            ("/etc/sysconfig/network-scripts/ifcfg-lo", b"DEVICE=lo\nIPADDR=127.0.0.1\n"),
            ("/usr/bin/vmtoolsd", b"x"),
            ("/usr/lib/systemd/system/vmtoolsd.service", b"[Unit]\n"),
            ("/bin/sh", &sh),
        ],
    );
    let q = disk(
        dir.path(),
        "rhel",
        &[
            Part::Fs {
                kind: "ext4",
                label: "",
                uuid: RHEL_UUID,
                root: &root,
                mib: 24,
            },
            Part::Swap {
                uuid: SWAP_UUID,
                mib: 4,
            },
        ],
        |_, _| {},
    );
    let v = json(&["inspect", "--json", q.to_str().unwrap()]);
    assert_eq!(v["os"]["distro"], "centos");
    assert_eq!(v["os"]["version"], "7.9.2009");
    assert_eq!(v["os"]["family"], "rhel");
    if !sh.is_empty() && std::env::consts::ARCH == "x86_64" {
        assert_eq!(v["os"]["arch"], "x86_64");
        assert_eq!(v["os"]["arch_source"], "/bin/sh");
    }
    assert_eq!(v["mounts"][0]["volume"], 0);
    assert_eq!(v["mounts"][1]["volume"], 1);
    let k = &v["kernels"][0];
    assert_eq!(k["version"], kv);
    assert_eq!(k["is_default"], true);
    assert_eq!(k["xen_pv_only"], false);
    let state = |name: &str| {
        k["drivers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state("virtio_blk"), "module");
    assert_eq!(state("sd_mod"), "builtin");
    assert_eq!(state("igb"), "missing");
    assert_eq!(v["initramfs"]["generator"], "dracut");
    assert_eq!(v["initramfs"]["images"][0]["compression"][0], "gzip");
    assert_eq!(v["bootloader"]["kind"], "grub2");
    assert_eq!(v["bootloader"]["config"], "/boot/grub2/grub.cfg");
    assert_eq!(v["bootloader"]["default_entry"], 0);
    // resume=/dev/sda2 in grub.cfg and /etc/default/grub, the swap line in fstab.
    let refs: Vec<String> = v["device_refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}:{}", r["file"].as_str().unwrap(), r["line"]))
        .collect();
    assert_eq!(
        refs,
        [
            "/etc/fstab:6",
            "/boot/grub2/grub.cfg:4",
            "/etc/default/grub:2"
        ]
    );
    assert_eq!(
        v["device_refs"][0]["rewrites"][0]["new"],
        format!("UUID={SWAP_UUID}")
    );
    let nic = &v["nics"][0];
    assert_eq!(v["nics"].as_array().unwrap().len(), 1);
    assert_eq!(nic["name"], "ens192");
    assert_eq!(nic["mac"], "00:50:56:9a:bc:de");
    assert_eq!(nic["addresses"][0], "192.0.2.20/24");
    assert_eq!(v["hypervisor_tools"][0]["kind"], "open-vm-tools");
    for t in 0..3 {
        assert_eq!(v["targets"][t]["convertible"], true, "{}", v["targets"][t]);
    }
    let w = codes(&v, 0, "warnings");
    assert!(w.contains(&"nic-bound-by-mac".to_string()), "{w:?}");
    assert!(w.contains(&"hypervisor-tools".to_string()), "{w:?}");
    assert_eq!(v["targets"][0]["boot_kernel"], kv);
}

#[test]
fn xen_era_sles_guest() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sles");
    let kv = "2.6.16.60-0.85.1-xen";
    tree(
        &root,
        &[
            ("/etc/SuSE-release", b"SUSE Linux Enterprise Server 10 (x86_64)\nVERSION = 10\nPATCHLEVEL = 4\n"),
            ("/etc/fstab", b"/dev/xvda1           /                    ext3       acl,user_xattr        1 1\nproc                 /proc                proc       defaults              0 0\n"),
            ("/boot/grub/menu.lst", format!("default 0\ntimeout 8\n\ntitle XEN\n    root (hd0,0)\n    kernel /boot/xen.gz\n    module /boot/vmlinuz-{kv} root=/dev/xvda1 console=xvc0\n    module /boot/initrd-{kv}\n").as_bytes()),
            ("/boot/grub/device.map", b"(hd0)\t/dev/xvda\n"),
            (&format!("/boot/vmlinuz-{kv}"), b"k"),
            (&format!("/boot/initrd-{kv}"), &[0x1f, 0x8b, 8, 0]),
            ("/boot/xen.gz", b"x"),
            (&format!("/lib/modules/{kv}/modules.dep"), b"kernel/drivers/xen/blkfront/xenblk.ko:\nkernel/drivers/xen/netfront/xennet.ko:\n"),
            ("/sbin/mkinitrd", b"#!/bin/bash\n"),
            ("/etc/sysconfig/network/ifcfg-eth-id-00:16:3e:12:34:56", b"BOOTPROTO='static'\nIPADDR='192.0.2.30'\nNETMASK='255.255.255.0'\nSTARTMODE='onboot'\n"),
            ("/etc/inittab", b"id:3:initdefault:\nx0:12345:respawn:/sbin/agetty -L 9600 xvc0 xterm\n"),
        ],
    );
    let q = disk(
        dir.path(),
        "sles",
        &[Part::Fs {
            kind: "ext3",
            label: "",
            uuid: "3e1a5c7b-2d4f-4a6b-8c9d-0e1f2a3b4c5d",
            root: &root,
            mib: 16,
        }],
        |_, _| {},
    );
    let v = json(&["inspect", "--json", q.to_str().unwrap()]);
    assert_eq!(v["os"]["distro"], "sles");
    assert_eq!(v["os"]["version"], "10.4");
    assert_eq!(v["os"]["family"], "suse");
    assert_eq!(v["os"]["arch"], "x86_64");
    assert_eq!(v["kernels"][0]["xen_pv_only"], true);
    assert_eq!(v["initramfs"]["generator"], "mkinitrd");
    assert_eq!(v["bootloader"]["kind"], "grub-legacy");
    let e = &v["bootloader"]["entries"][0];
    assert_eq!(e["xen_hypervisor"], true);
    assert_eq!(e["kernel"], format!("/boot/vmlinuz-{kv}"));
    assert_eq!(v["nics"][0]["mac"], "00:16:3e:12:34:56");
    assert_eq!(v["nics"][0]["addresses"][0], "192.0.2.30/24");
    assert_eq!(v["hypervisor_tools"][0]["kind"], "xen-tools");
    for t in 0..3 {
        assert_eq!(v["targets"][t]["convertible"], false);
        assert_eq!(codes(&v, t, "blockers"), ["xen-pv-only"]);
    }
    assert!(codes(&v, 0, "warnings").contains(&"xen-console".to_string()));
    // device.map and menu.lst name the Xen disk.
    let files: Vec<&str> = v["device_refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["/etc/fstab", "/boot/grub/menu.lst", "/boot/grub/device.map"]
    );
    assert_eq!(v["device_refs"][2]["resolves_to"], "disk 0");
}

#[test]
fn two_roots_need_a_choice() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("deb");
    tree(
        &deb,
        &[
            (
                "/etc/os-release",
                b"ID=debian\nVERSION_ID=\"11\"\nPRETTY_NAME=\"Debian GNU/Linux 11 (bullseye)\"\n",
            ),
            ("/etc/fstab", b"/dev/sda1 / ext4 defaults 0 1\n"),
        ],
    );
    let rh = dir.path().join("rh");
    tree(
        &rh,
        &[
            (
                "/etc/redhat-release",
                b"Red Hat Enterprise Linux Server release 6.10 (Santiago)\n",
            ),
            ("/etc/fstab", b"/dev/sda2 / ext4 defaults 0 1\n"),
        ],
    );
    let q = disk(
        dir.path(),
        "two",
        &[
            Part::Fs {
                kind: "ext4",
                label: "deb",
                uuid: "11111111-2222-4333-8444-555555555555",
                root: &deb,
                mib: 8,
            },
            Part::Fs {
                kind: "ext4",
                label: "rh",
                uuid: "66666666-7777-4888-9999-aaaaaaaaaaaa",
                root: &rh,
                mib: 8,
            },
        ],
        // Partition 1 was not cleanly unmounted.
        |n, img| {
            if n == 1 {
                assert!(Command::new("debugfs")
                    .args(["-w", "-R", "ssv state 0"])
                    .arg(img)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap()
                    .success());
            }
        },
    );
    let q = q.to_str().unwrap();
    let out = run(&["inspect", q]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("several root filesystems"), "{err}");
    assert!(
        err.contains("--root 1") && err.contains("--root 2"),
        "{err}"
    );
    assert!(err.contains("Debian GNU/Linux 11"), "{err}");
    let v = json(&["inspect", "--json", "--root", "2", q]);
    assert_eq!(v["os"]["distro"], "rhel");
    assert_eq!(v["os"]["version"], "6.10");
    assert_eq!(v["roots"].as_array().unwrap().len(), 2);
    assert_eq!(v["root"], format!("{q}@2"));
    let v = json(&["inspect", "--json", "--root", "1", q]);
    assert_eq!(v["os"]["distro"], "debian");
    assert_eq!(v["volume_states"][0]["state"], "not-clean");
    assert!(codes(&v, 0, "blockers").contains(&"unclean-filesystem".to_string()));
    let out = run(&["inspect", "--root", "9", q]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such partition"));
}
