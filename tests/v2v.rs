//! `convert --to` end to end on a Debian guest made from real parts: Debian's kernel
//! package (its modules, its vmlinuz), an initramfs built by the real `mkinitramfs` with no
//! virtio drivers, and the configuration a VMware-era guest carries (/dev/sda names, a udev
//! rule binding a VMware MAC to eth0, a static address, X on the vmware driver). The disk is
//! a VMDK made by qemu-img from an MBR disk made by sfdisk, with the root made by mkfs.ext4
//! -d and a swap partition made by mkswap. Every result is read back with independent
//! tools: qemu-img, e2fsck -fn, debugfs, and the decompressor plus `cpio -t` for the
//! initramfs.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const MAC_OLD: &str = "00:50:56:ab:cd:ef";
const MAC_NEW: &str = "52:54:00:12:34:56";
const ROOT_UUID: &str = "2f6c9a4e-1b7d-4c3e-9f00-5a6b7c8d9e0f";
const SWAP_UUID: &str = "8d2e4f60-3a1b-4c5d-8e7f-901a2b3c4d5e";

fn tools() -> bool {
    [
        "qemu-img",
        "mkfs.ext4",
        "sfdisk",
        "mkswap",
        "debugfs",
        "e2fsck",
        "cpio",
        "gzip",
        "mkinitramfs",
        "depmod",
        "lsinitramfs",
    ]
    .iter()
    .all(|t| have(t))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("initramfs-fixtures")
}

/// The real kernel (unpacked once, shared with the rewrite crate's initramfs tests) and
/// an initramfs-tools image of it without virtio: (kernel dir, version, initrd).
fn kernel() -> &'static (PathBuf, String, PathBuf) {
    static K: OnceLock<(PathBuf, String, PathBuf)> = OnceLock::new();
    K.get_or_init(|| {
        let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/initramfs/build.sh");
        let cache = fixtures();
        let kver = sh(&format!("{} kernel {}", build.display(), cache.display()))
            .trim()
            .to_string();
        let initrd = cache.join("v2v-initrd.gz");
        if !initrd.exists() {
            sh(&format!(
                "{} mkinitramfs {} {} gzip",
                build.display(),
                cache.display(),
                initrd.display()
            ));
        }
        (cache.join("kernel"), kver, initrd)
    })
}

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Builds the guest disk as a VMDK (what a VMware export carries) in `dir`.
fn guest(dir: &Path) -> PathBuf {
    let (kdir, kver, initrd) = kernel();
    let root = dir.join("root");
    write(
        &root,
        "/etc/fstab",
        "# /etc/fstab: static file system information.\n\
         /dev/sda1\t/\text4\terrors=remount-ro\t0\t1\n\
         /dev/sda5\tnone\tswap\tsw\t0\t0\n\
         .host:/\t/mnt/hgfs\tfuse.vmhgfs-fuse\tallow_other,defaults\t0\t0\n",
    );
    write(
        &root,
        "/etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
         VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n",
    );
    write(&root, "/etc/debian_version", "12.8\n");
    write(&root, "/etc/hostname", "web01\n");
    write(
        &root,
        "/etc/network/interfaces",
        "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n    \
         address 192.0.2.10/24\n    gateway 192.0.2.1\n",
    );
    write(
        &root,
        "/etc/udev/rules.d/70-persistent-net.rules",
        &format!(
            "# PCI device 0x15ad:0x07b0 (vmxnet3)\nSUBSYSTEM==\"net\", ACTION==\"add\", \
             DRIVERS==\"?*\", ATTR{{address}}==\"{MAC_OLD}\", ATTR{{dev_id}}==\"0x0\", \
             ATTR{{type}}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n"
        ),
    );
    write(
        &root,
        "/etc/X11/xorg.conf",
        "Section \"Device\"\n    Identifier  \"VMware SVGA\"\n    Driver      \"vmware\"\n    \
         BusID       \"PCI:0:15:0\"\nEndSection\n",
    );
    write(
        &root,
        "/etc/default/grub",
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n\
         GRUB_CMDLINE_LINUX=\"root=/dev/sda1 resume=/dev/sda5\"\n",
    );
    write(
        &root,
        "/boot/grub/grub.cfg",
        &format!(
            "menuentry 'Debian GNU/Linux' {{\n    linux /boot/vmlinuz-{kver} root=/dev/sda1 ro \
             quiet resume=/dev/sda5\n    initrd /boot/initrd.img-{kver}\n}}\n"
        ),
    );
    write(&root, "/boot/grub/device.map", "(hd0)\t/dev/sda\n");
    write(
        &root,
        "/etc/initramfs-tools/initramfs.conf",
        "MODULES=list\nCOMPRESS=gzip\n",
    );
    write(
        &root,
        "/etc/initramfs-tools/modules",
        "# List of modules\nmptspi\n",
    );
    write(
        &root,
        "/etc/initramfs-tools/conf.d/resume",
        "RESUME=/dev/sda5\n",
    );
    write(&root, "/usr/sbin/mkinitramfs", "#!/bin/sh\n");
    write(
        &root,
        "/etc/blkid.tab",
        "<device DEVNO=\"0x0801\">/dev/sda1</device>\n",
    );
    std::fs::create_dir_all(root.join("lib/modules")).unwrap();
    sh(&format!(
        "cp -a {}/lib/modules/{kver} {}/lib/modules/ && cp {}/boot/vmlinuz-{kver} {}/boot/ && \
         cp {} {}/boot/initrd.img-{kver}",
        kdir.display(),
        root.display(),
        kdir.display(),
        root.display(),
        initrd.display(),
        root.display()
    ));
    let part = dir.join("root.img");
    let swap = dir.join("swap.img");
    sh(&format!(
        "mkfs.ext4 -q -F -L root -U {ROOT_UUID} -E root_owner=0:0 -d {} {} 400M && \
         truncate -s 32M {} && mkswap -q -U {SWAP_UUID} {} && truncate -s 440M {d}/disk.raw && \
         printf 'start=2048, size=819200, type=83, bootable\\nstart=821248, type=5\\n\
         start=823296, size=65536, type=82\\n' | sfdisk -q {d}/disk.raw && \
         dd if={} of={d}/disk.raw bs=1M seek=1 conv=notrunc,sparse status=none && \
         dd if={} of={d}/disk.raw bs=512 seek=823296 conv=notrunc,sparse status=none && \
         qemu-img convert -O vmdk -o subformat=streamOptimized {d}/disk.raw {d}/web01.vmdk",
        root.display(),
        part.display(),
        swap.display(),
        swap.display(),
        part.display(),
        swap.display(),
        d = dir.display()
    ));
    dir.join("web01.vmdk")
}

/// The root partition of a converted disk, as a raw file for e2fsck and debugfs.
fn root_of(img: &Path, dir: &Path) -> PathBuf {
    let raw = dir.join("check.raw");
    let part = dir.join("check-root.img");
    sh(&format!(
        "qemu-img convert -O raw {} {} && dd if={} of={} bs=1M skip=1 count=400 status=none",
        img.display(),
        raw.display(),
        raw.display(),
        part.display()
    ));
    part
}

fn cat(img: &Path, path: &str) -> String {
    String::from_utf8_lossy(&debugfs(img, &format!("cat {path}"))).into_owned()
}

/// The initramfs's members as initramfs-tools' own `lsinitramfs` lists them (every
/// concatenated archive, decompressed by the tools it uses).
fn initrd_members(part: &Path, kver: &str, dir: &Path) -> String {
    let out = dir.join("initrd.out");
    debugfs_dump(part, &format!("/boot/initrd.img-{kver}"), &out);
    sh(&format!("lsinitramfs {}", out.display()))
}

fn debugfs_dump(img: &Path, path: &str, out: &Path) {
    sh(&format!(
        "debugfs -R 'dump {path} {}' {} 2>/dev/null",
        out.display(),
        img.display()
    ));
    assert!(out.exists(), "debugfs dump {path}");
}

#[test]
fn kvm_conversion_rewrites_and_injects_drivers() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vmdk = guest(d);
    let (_, kver, _) = kernel();
    let before_hash = sh(&format!("sha256sum {}", vmdk.display()));

    // A dry run changes nothing and shows the diffs.
    let o = transplant(&[
        "convert",
        vmdk.to_str().unwrap(),
        "--to",
        "kvm",
        "--dry-run",
    ]);
    ok(&o);
    let diff = String::from_utf8_lossy(&o.stdout);
    assert!(
        diff.contains(&format!("+UUID={ROOT_UUID}\t/\text4")),
        "{diff}"
    );
    assert!(diff.contains("Binary file /boot/initrd.img-"), "{diff}");
    assert!(diff.contains("virtio_blk"), "{diff}");
    assert_eq!(sh(&format!("sha256sum {}", vmdk.display())), before_hash);

    // The conversion.
    let out = d.join("web01.qcow2");
    let report = d.join("report.json");
    let o = transplant(&[
        "convert",
        vmdk.to_str().unwrap(),
        out.to_str().unwrap(),
        "-O",
        "qcow2",
        "--to",
        "kvm",
        "--mac",
        &format!("{MAC_OLD}={MAC_NEW}"),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(6)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(sh(&format!("sha256sum {}", vmdk.display())), before_hash);
    sh(&format!("qemu-img check {}", out.display()));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["target"], "kvm");
    assert!(r["edits"].as_array().unwrap().len() >= 6, "{r}");
    for e in r["edits"].as_array().unwrap() {
        assert!(!e["reason"].as_str().unwrap().is_empty(), "{e}");
    }

    let part = root_of(&out, d);
    assert_fsck_clean(&part);
    let fstab = cat(&part, "/etc/fstab");
    assert!(
        fstab.contains(&format!("UUID={ROOT_UUID}\t/\text4")),
        "{fstab}"
    );
    assert!(fstab.contains(&format!("UUID={SWAP_UUID}")), "{fstab}");
    assert!(fstab.contains("# disabled by transplant"), "{fstab}");
    let grub = cat(&part, "/boot/grub/grub.cfg");
    assert!(grub.contains(&format!("root=UUID={ROOT_UUID}")), "{grub}");
    assert!(grub.contains(&format!("resume=UUID={SWAP_UUID}")), "{grub}");
    let rules = cat(&part, "/etc/udev/rules.d/70-persistent-net.rules");
    assert!(
        rules.contains(MAC_NEW) && !rules.contains(MAC_OLD),
        "{rules}"
    );
    assert!(!rules.contains("vmxnet3\", ATTR"), "{rules}");
    let xorg = cat(&part, "/etc/X11/xorg.conf");
    assert!(
        xorg.contains("\"modesetting\"") && !xorg.contains("BusID"),
        "{xorg}"
    );
    assert!(cat(&part, "/etc/initramfs-tools/modules").contains("virtio_blk"));
    assert_eq!(cat(&part, "/etc/blkid.tab"), "");
    assert!(cat(&part, "/boot/grub/device.map").contains("/dev/vda"));
    // The initramfs now holds the virtio drivers, and names them for early load; the old
    // image is kept beside it.
    let members = initrd_members(&part, kver, d);
    assert!(members.contains("virtio_blk.ko"), "{members}");
    assert!(members.contains("virtio_pci.ko"), "{members}");
    assert!(members.contains("modules.dep.bin"), "{members}");
    let backup = d.join("initrd.pre");
    debugfs_dump(
        &part,
        &format!("/boot/initrd.img-{kver}.pre-transplant"),
        &backup,
    );
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        std::fs::read(&kernel().2).unwrap()
    );
}

#[test]
fn thin_overlay_and_in_place_with_undo() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().to_path_buf();
    if std::env::var_os("V2V_KEEP").is_some() {
        eprintln!("KEEP {}", d.display());
        std::mem::forget(dir);
    }
    let vmdk = guest(d);
    // qcow2 input: the thin overlay and in-place paths write qcow2.
    let base = d.join("web01.qcow2");
    sh(&format!(
        "qemu-img convert -O qcow2 {} {}",
        vmdk.display(),
        base.display()
    ));
    let full = d.join("full.qcow2");
    let o = transplant(&[
        "convert",
        base.to_str().unwrap(),
        full.to_str().unwrap(),
        "-O",
        "qcow2",
        "--to",
        "kvm",
    ]);
    assert!(matches!(o.status.code(), Some(0) | Some(6)), "{o:?}");
    let thin = d.join("thin.qcow2");
    let o = transplant(&[
        "convert",
        base.to_str().unwrap(),
        thin.to_str().unwrap(),
        "-O",
        "qcow2",
        "--to",
        "kvm",
        "--backing",
        base.to_str().unwrap(),
    ]);
    assert!(matches!(o.status.code(), Some(0) | Some(6)), "{o:?}");
    sh(&format!("qemu-img check {}", thin.display()));
    let thin_size = std::fs::metadata(&thin).unwrap().len();
    let base_size = std::fs::metadata(&base).unwrap().len();
    assert!(
        thin_size * 4 < base_size,
        "thin overlay {thin_size} bytes vs base {base_size}"
    );
    // The overlay over its base reads like the full conversion, apart from the new
    // files' timestamps: compare what the guest sees.
    let a = root_of(&full, d);
    let fa = cat(&a, "/etc/fstab");
    let b = root_of(&thin, d);
    assert_fsck_clean(&b);
    assert_eq!(cat(&b, "/etc/fstab"), fa);

    // In place, then undo: the image is as before, byte for byte.
    let copy = d.join("inplace.qcow2");
    std::fs::copy(&base, &copy).unwrap();
    let o = transplant(&[
        "convert",
        copy.to_str().unwrap(),
        "--to",
        "kvm",
        "--in-place",
    ]);
    assert!(matches!(o.status.code(), Some(0) | Some(6)), "{o:?}");
    sh(&format!("qemu-img check {}", copy.display()));
    let c = root_of(&copy, d);
    assert_fsck_clean(&c);
    assert_eq!(cat(&c, "/etc/fstab"), fa);
    ok(&transplant(&["undo", copy.to_str().unwrap()]));
    sh(&format!(
        "qemu-img compare {} {}",
        base.display(),
        copy.display()
    ));
}

#[test]
fn refused_without_a_usable_kernel() {
    if !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("root");
    write(&root, "/etc/fstab", "/dev/sda1 / ext4 defaults 0 1\n");
    write(&root, "/etc/os-release", "ID=debian\n");
    let img = d.join("g.img");
    sh(&format!(
        "mkfs.ext4 -q -F -d {} {} 16M",
        root.display(),
        img.display()
    ));
    let report = d.join("r.json");
    let o = transplant(&[
        "convert",
        img.to_str().unwrap(),
        d.join("o.raw").to_str().unwrap(),
        "--to",
        "kvm",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("blocker"));
    assert!(!d.join("o.raw").exists());
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["result"], "refused");
}

/// The rewrite's options reach the patchers: `--device-names rename`, `--network dhcp`
/// and `--macs` (in the guest's NIC order), shown by `--dry-run` on the demo guest; the
/// demo image is left unchanged; contradictory MAC options are refused.
#[test]
fn options_reach_the_rewrite() {
    let demo = format!("{}/fixtures/demo/guest.qcow2", env!("CARGO_MANIFEST_DIR"));
    let before = std::fs::read(&demo).unwrap();
    let o = transplant(&[
        "convert",
        &demo,
        "--to",
        "kvm",
        "--dry-run",
        "--device-names",
        "rename",
        "--network",
        "dhcp",
        "--macs",
        MAC_NEW,
    ]);
    ok(&o);
    let diff = String::from_utf8_lossy(&o.stdout);
    assert!(diff.contains("+/dev/vda1\t/\text4"), "{diff}");
    assert!(diff.contains("iface eth0 inet dhcp"), "{diff}");
    assert!(diff.contains(MAC_NEW), "{diff}");
    assert_eq!(std::fs::read(&demo).unwrap(), before);
    let o = transplant(&[
        "convert",
        &demo,
        "--to",
        "kvm-scsi",
        "--dry-run",
        "--macs",
        MAC_NEW,
        "--mac",
        &format!("{MAC_OLD}={MAC_NEW}"),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not both"),
        "{o:?}"
    );
}
