//! `convert --to kvm` end to end on a RHEL-shaped guest on XFS: /boot (BLS entries, a
//! dracut initramfs made by the real dracut from Debian's kernel, without virtio) on
//! the first partition and / on the second, both made by mkfs.xfs and filled on loop
//! mounts, /dev/sda names in fstab and the boot entry, an ifcfg file, an SELinux label
//! on fstab. The result is checked by `xfs_repair -n` on both filesystems, read back
//! with `transplant cat`, and by the kernel (read-only loop mounts). Needs root.

mod common;
use common::*;
use std::path::Path;

const MAC_OLD: &str = "00:50:56:ab:cd:ef";
const MAC_NEW: &str = "52:54:00:12:34:56";

fn mkfs_xfs(img: &Path, mb: u64, uuid: &str) {
    std::fs::File::create(img)
        .unwrap()
        .set_len(mb << 20)
        .unwrap();
    sh(&format!(
        "TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f -m uuid={uuid} {}",
        img.display()
    ));
}

/// Runs `f` on a read-write (or read-only) loop mount of `img` at `mnt`.
fn mounted(img: &Path, mnt: &Path, ro: bool, f: impl FnOnce(&Path)) {
    std::fs::create_dir_all(mnt).unwrap();
    let lo = sh(&format!(
        "losetup {} -f --show {}",
        if ro { "-r" } else { "" },
        img.display()
    ))
    .trim()
    .to_string();
    struct Undo(String, std::path::PathBuf, bool);
    impl Drop for Undo {
        fn drop(&mut self) {
            if self.2 {
                let _ = std::process::Command::new("umount").arg(&self.1).status();
            }
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let mut undo = Undo(lo.clone(), mnt.to_path_buf(), false);
    sh(&format!(
        "mount -o {} {lo} {}",
        if ro { "ro" } else { "rw" },
        mnt.display()
    ));
    undo.2 = true;
    f(mnt);
    drop(undo);
}

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn repair_clean(img: &Path) {
    let out = std::process::Command::new("xfs_repair")
        .args(["-n", "-f"])
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && !text.contains("would")
            && !text.contains("counted")
            && !text.contains("bad "),
        "xfs_repair -n {}:\n{text}",
        img.display()
    );
}

#[test]
fn rhel_guest_on_xfs_converts_to_kvm() {
    let root = sh("id -u").trim() == "0";
    if std::env::var_os("CI").is_some() {
        assert!(root, "this test needs root (loop mounts) under CI");
    }
    let tools = [
        "mkfs.xfs",
        "xfs_repair",
        "losetup",
        "sfdisk",
        "qemu-img",
        "dracut",
        "depmod",
        "xz",
        "cpio",
        "getfattr",
        "setfattr",
    ];
    if !root || !tools.iter().all(|t| have(t)) {
        return;
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("initramfs-fixtures");
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/initramfs/build.sh");
    let kver = sh(&format!("{} kernel {}", build.display(), cache.display()))
        .trim()
        .to_string();
    let initrd = cache.join("initrd-dracut.xz");
    if !initrd.exists() {
        sh(&format!(
            "{} dracut {} {}",
            build.display(),
            cache.display(),
            initrd.display()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (boot_uuid, root_uuid) = (
        "5b1e0c2a-7d3f-4e9a-b6c1-0a2b3c4d5e6f",
        "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    );
    let boot = d.join("boot.img");
    let rootfs = d.join("root.img");
    mkfs_xfs(&boot, 100, boot_uuid);
    mkfs_xfs(&rootfs, 400, root_uuid);
    mounted(&boot, &d.join("mb"), false, |m| {
        sh(&format!(
            "cp {}/kernel/boot/vmlinuz-{kver} {m}/ && cp {} {m}/initramfs-{kver}.img",
            cache.display(),
            initrd.display(),
            m = m.display()
        ));
        sh(&format!(
            "setfattr -n security.selinux -v system_u:object_r:boot_t:s0 {}/initramfs-{kver}.img",
            m.display()
        ));
        write(
            m,
            &format!("/loader/entries/0123456789abcdef-{kver}.conf"),
            &format!(
                "title Rocky Linux ({kver}) 9.4\nversion {kver}\nlinux /vmlinuz-{kver}\n\
                 initrd /initramfs-{kver}.img\noptions root=/dev/sda2 ro crashkernel=auto\n"
            ),
        );
        write(m, "/grub2/grub.cfg", "set default=0\nblscfg\n");
        write(
            m,
            "/grub2/grubenv",
            &format!(
                "# GRUB Environment Block\nkernelopts=root=/dev/sda2 ro\n{}",
                "#".repeat(1024 - 60)
            ),
        );
    });
    mounted(&rootfs, &d.join("mr"), false, |m| {
        write(
            m,
            "/etc/fstab",
            "/dev/sda2 / xfs defaults 0 0\n/dev/sda1 /boot xfs defaults 0 0\n",
        );
        sh(&format!(
            "setfattr -n security.selinux -v system_u:object_r:etc_t:s0 {}/etc/fstab",
            m.display()
        ));
        write(
            m,
            "/etc/os-release",
            "NAME=\"Rocky Linux\"\nVERSION=\"9.4 (Blue Onyx)\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n\
             VERSION_ID=\"9.4\"\nPRETTY_NAME=\"Rocky Linux 9.4 (Blue Onyx)\"\n",
        );
        write(
            m,
            "/etc/redhat-release",
            "Rocky Linux release 9.4 (Blue Onyx)\n",
        );
        write(
            m,
            "/etc/sysconfig/network-scripts/ifcfg-eth0",
            &format!(
                "DEVICE=eth0\nHWADDR={MAC_OLD}\nBOOTPROTO=static\nIPADDR=192.0.2.10\n\
                 PREFIX=24\nONBOOT=yes\n"
            ),
        );
        write(
            m,
            "/etc/default/grub",
            "GRUB_CMDLINE_LINUX=\"crashkernel=auto\"\n",
        );
        write(
            m,
            "/etc/selinux/config",
            "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
        );
        write(m, "/usr/bin/dracut", "#!/bin/sh\n");
        write(m, "/etc/dracut.conf", "# dracut\n");
        sh(&format!(
            "mkdir -p {m}/lib/modules && cp -a {}/kernel/lib/modules/{kver} {m}/lib/modules/",
            cache.display(),
            m = m.display()
        ));
    });
    let disk = d.join("disk.raw");
    sh(&format!(
        "truncate -s 520M {d} && printf 'start=2048, size=204800, type=83, bootable\\n\
         start=206848, size=819200, type=83\\n' | sfdisk -q {d} && \
         dd if={} of={d} bs=1M seek=1 conv=notrunc,sparse status=none && \
         dd if={} of={d} bs=512 seek=206848 conv=notrunc,sparse status=none",
        boot.display(),
        rootfs.display(),
        d = disk.display()
    ));
    let out = d.join("rocky-kvm.qcow2");
    let o = transplant(&[
        "convert",
        disk.to_str().unwrap(),
        out.to_str().unwrap(),
        "-O",
        "qcow2",
        "--to",
        "kvm",
        "--mac",
        &format!("{MAC_OLD}={MAC_NEW}"),
    ]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(6)),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let fstab = transplant(&["cat", &format!("{}:/etc/fstab", out.display())]);
    ok(&fstab);
    let fstab = String::from_utf8_lossy(&fstab.stdout).into_owned();
    assert!(fstab.contains(&format!("UUID={root_uuid}")), "{fstab}");
    assert!(fstab.contains(&format!("UUID={boot_uuid}")), "{fstab}");
    // Both filesystems clean, read by the kernel.
    let raw = d.join("out.raw");
    sh(&format!(
        "qemu-img convert -O raw {} {r} && dd if={r} of={b} bs=1M skip=1 count=100 status=none && \
         dd if={r} of={ro} bs=512 skip=206848 count=819200 status=none",
        out.display(),
        r = raw.display(),
        b = boot.display(),
        ro = rootfs.display()
    ));
    repair_clean(&boot);
    repair_clean(&rootfs);
    mounted(&rootfs, &d.join("mr"), true, |m| {
        assert_eq!(std::fs::read_to_string(m.join("etc/fstab")).unwrap(), fstab);
        let label = sh(&format!(
            "getfattr --only-values -n security.selinux {}/etc/fstab",
            m.display()
        ));
        assert_eq!(label.trim_end_matches('\0'), "system_u:object_r:etc_t:s0");
        // The initramfs backup is new, so has no label: the first boot relabels.
        assert!(m.join(".autorelabel").exists());
        let ifcfg =
            std::fs::read_to_string(m.join("etc/sysconfig/network-scripts/ifcfg-eth0")).unwrap();
        assert!(
            ifcfg.contains(MAC_NEW) || !ifcfg.contains(MAC_OLD),
            "{ifcfg}"
        );
    });
    mounted(&boot, &d.join("mb"), true, |m| {
        let entry =
            std::fs::read_to_string(m.join(format!("loader/entries/0123456789abcdef-{kver}.conf")))
                .unwrap();
        assert!(entry.contains(&format!("root=UUID={root_uuid}")), "{entry}");
        let members = sh(&format!(
            "xz -dc {}/initramfs-{kver}.img | cpio -t 2>/dev/null",
            m.display()
        ));
        assert!(members.contains("virtio_blk.ko"), "{members}");
        let label = sh(&format!(
            "getfattr --only-values -n security.selinux {}/initramfs-{kver}.img",
            m.display()
        ));
        assert_eq!(label.trim_end_matches('\0'), "system_u:object_r:boot_t:s0");
        assert!(m
            .join(format!("initramfs-{kver}.img.pre-transplant"))
            .exists());
    });
}
