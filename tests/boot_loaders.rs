//! `convert --to kvm` on a guest booted by EXTLINUX that also carries a GRUB 2
//! environment block whose saved_entry is a Xen hypervisor entry, and an Upstart getty on
//! the Xen console. The disk is an MBR disk made by sfdisk holding an ext4 root made by
//! mkfs.ext4 -d; the kernel is a stand-in whose drivers `modules.builtin` lists as built
//! in, so no initramfs is involved. The result is read back with debugfs and checked
//! with e2fsck -fn.

mod common;
use common::*;
use std::path::{Path, PathBuf};

const ROOT_UUID: &str = "4a3b2c1d-0e9f-4a8b-9c7d-6e5f4a3b2c1d";
const KVER: &str = "3.16.0-4-amd64";
const XEN_TITLE: &str = "Debian GNU/Linux, with Xen 4.4-amd64 and Linux 3.16.0-4-amd64";

fn tools() -> bool {
    ["mkfs.ext4", "sfdisk", "debugfs", "e2fsck"]
        .iter()
        .all(|t| have(t))
}

fn write(root: &Path, path: &str, text: &[u8]) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn grubenv(vars: &str) -> Vec<u8> {
    let mut s = format!("# GRUB Environment Block\n{vars}");
    let pad = 1024 - s.len();
    s.push_str(&"#".repeat(pad));
    s.into_bytes()
}

/// The guest disk (raw, MBR, one ext4 partition at 1 MiB).
fn guest(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let w = |p: &str, t: &str| write(&root, p, t.as_bytes());
    w("/etc/fstab", "/dev/sda1 / ext4 errors=remount-ro 0 1\n");
    w(
        "/etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 8 (jessie)\"\nID=debian\nVERSION_ID=\"8\"\n",
    );
    w("/etc/debian_version", "8.11\n");
    w(&format!("/boot/vmlinuz-{KVER}"), "not a real kernel\n");
    let md = format!("/lib/modules/{KVER}");
    w(&format!("{md}/modules.dep"), "");
    w(
        &format!("{md}/modules.builtin"),
        "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n\
         kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/block/virtio_blk.ko\n\
         kernel/drivers/scsi/virtio_scsi.ko\nkernel/drivers/scsi/sd_mod.ko\n\
         kernel/drivers/net/virtio_net.ko\nkernel/drivers/ata/ahci.ko\n\
         kernel/drivers/nvme/host/nvme.ko\n",
    );
    w(
        "/boot/extlinux/extlinux.conf",
        &format!(
            "default linux\ntimeout 50\nlabel linux\n\tkernel /boot/vmlinuz-{KVER}\n\
             \tappend root=/dev/sda1 ro console=hvc0 quiet\n"
        ),
    );
    w(
        "/boot/grub/grub.cfg",
        &format!(
            "set default=\"${{saved_entry}}\"\n\
             menuentry 'Debian GNU/Linux' --id 'gnulinux-simple-4a3b' {{\n\
             \tlinux /boot/vmlinuz-{KVER} root=UUID={ROOT_UUID} ro quiet\n}}\n\
             menuentry '{XEN_TITLE}' --class xen --id 'xen-gnulinux-simple-4a3b' {{\n\
             \tmultiboot /boot/xen-4.4-amd64.gz placeholder\n\
             \tmodule /boot/vmlinuz-{KVER} placeholder root=UUID={ROOT_UUID} ro\n}}\n"
        ),
    );
    write(
        &root,
        "/boot/grub/grubenv",
        &grubenv(&format!("saved_entry={XEN_TITLE}\n")),
    );
    w(
        "/etc/init/hvc0.conf",
        "# hvc0 - getty\n\nstart on stopped rc RUNLEVEL=[2345]\nstop on runlevel [!2345]\n\n\
         respawn\nexec /sbin/getty -8 38400 hvc0\n",
    );
    guest_from(dir, &root)
}

/// The disk made from the tree `root`.
fn guest_from(dir: &Path, root: &Path) -> PathBuf {
    let part = dir.join("root.img");
    sh(&format!(
        "mkfs.ext4 -q -F -L root -U {ROOT_UUID} -E root_owner=0:0 -d {} {} 24M && \
         truncate -s 26M {d}/disk.raw && \
         printf 'start=2048, type=83, bootable\\n' | sfdisk -q {d}/disk.raw && \
         dd if={} of={d}/disk.raw bs=1M seek=1 conv=notrunc,sparse status=none",
        root.display(),
        part.display(),
        part.display(),
        d = dir.display()
    ));
    dir.join("disk.raw")
}

fn cat(img: &Path, path: &str) -> String {
    String::from_utf8_lossy(&debugfs(img, &format!("cat {path}"))).into_owned()
}

#[test]
fn extlinux_grubenv_and_upstart_on_kvm() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = guest(d);
    let before = std::fs::read(&disk).unwrap();

    let o = transplant(&[
        "convert",
        disk.to_str().unwrap(),
        "--to",
        "kvm",
        "--dry-run",
    ]);
    ok(&o);
    let diff = String::from_utf8_lossy(&o.stdout);
    assert!(
        diff.contains(&format!(
            "+\tappend root=UUID={ROOT_UUID} ro console=ttyS0 quiet"
        )),
        "{diff}"
    );
    assert!(diff.contains("+saved_entry=Debian GNU/Linux\n"), "{diff}");
    assert!(diff.contains("/etc/init/ttyS0.conf"), "{diff}");
    assert_eq!(std::fs::read(&disk).unwrap(), before);

    let out = d.join("out.raw");
    let o = transplant(&[
        "convert",
        disk.to_str().unwrap(),
        out.to_str().unwrap(),
        "--to",
        "kvm",
    ]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(6)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read(&disk).unwrap(), before);
    let part = d.join("out-root.img");
    sh(&format!(
        "dd if={} of={} bs=1M skip=1 count=24 status=none",
        out.display(),
        part.display()
    ));
    assert_fsck_clean(&part);
    let ext = cat(&part, "/boot/extlinux/extlinux.conf");
    assert!(
        ext.contains(&format!(
            "\tappend root=UUID={ROOT_UUID} ro console=ttyS0 quiet\n"
        )),
        "{ext}"
    );
    let env = debugfs(&part, "cat /boot/grub/grubenv");
    assert_eq!(env.len(), 1024);
    let env = String::from_utf8(env).unwrap();
    assert!(
        env.starts_with("# GRUB Environment Block\nsaved_entry=Debian GNU/Linux\n#"),
        "{env}"
    );
    let job = cat(&part, "/etc/init/ttyS0.conf");
    assert!(job.ends_with("exec /sbin/getty -8 38400 ttyS0\n"), "{job}");
    let old = cat(&part, "/etc/init/hvc0.conf");
    assert!(
        old.contains("# disabled by transplant: start on stopped rc"),
        "{old}"
    );
    assert_eq!(
        cat(&part, "/etc/fstab"),
        format!("UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n")
    );
}

/// A guest booted by LILO is refused (exit 5) with the reason and the way out; with
/// `--force` the dry run shows lilo.conf rewritten and the warning to run lilo.
#[test]
fn lilo_is_refused_unless_forced() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = guest(d);
    // The same guest, booted by LILO instead: a second image with lilo.conf added and
    // the other loaders' configs gone.
    let root = d.join("root");
    std::fs::remove_dir_all(root.join("boot/extlinux")).unwrap();
    std::fs::remove_dir_all(root.join("boot/grub")).unwrap();
    write(
        &root,
        "/etc/lilo.conf",
        format!(
            "lba32\nboot = /dev/sda\nmap = /boot/map\nprompt\ntimeout = 50\n\
             image = /boot/vmlinuz-{KVER}\n  label = Linux\n  root = /dev/sda1\n  read-only\n  \
             append = \"console=hvc0\"\n"
        )
        .as_bytes(),
    );
    std::fs::remove_file(&disk).unwrap();
    let disk = guest_from(d, &root);
    let o = transplant(&[
        "convert",
        disk.to_str().unwrap(),
        "--to",
        "kvm",
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("LILO") && err.contains("run `lilo`"), "{err}");
    let o = transplant(&[
        "convert",
        disk.to_str().unwrap(),
        "--to",
        "kvm",
        "--dry-run",
        "--force",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("+boot = /dev/vda"), "{o:?}");
    assert!(
        out.contains(&format!("+  root = \"UUID={ROOT_UUID}\"")),
        "{out}"
    );
    assert!(out.contains("+  append = \"console=ttyS0\""), "{out}");
    let said = format!("{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(said.contains("run `lilo`"), "{said}");
}
