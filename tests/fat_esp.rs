//! A UEFI guest's EFI system partition end to end: a GPT disk with a FAT32 ESP (made by
//! mkfs.fat and mcopy) and an ext4 root whose fstab mounts it at /boot/efi by its serial.
//! `ls`/`cat` read it alone and through the guest tree, `inspect` sees the vendor folder
//! and the missing fallback loader, and `mkdir`/`write` put EFI/BOOT/BOOTX64.EFI there,
//! which fsck.fat -n and mtype then check; `convert --to kvm` of a Debian-style guest
//! copies its shim and GRUB to that removable-media path.

mod common;
use common::{have, transplant};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn sh(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn dd(src: &Path, dst: &Path, seek_mib: u32, skip_count: Option<u32>) {
    let mut c = Command::new("dd");
    c.arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .arg("bs=1M")
        .arg("status=none");
    match skip_count {
        None => c.arg(format!("seek={seek_mib}")).arg("conv=notrunc"),
        Some(n) => c.arg(format!("skip={seek_mib}")).arg(format!("count={n}")),
    };
    sh(&mut c);
}

/// A GPT disk (ESP of FAT32 with `EFI/<vendor>/{shimx64,grubx64}.efi` and grub.cfg, then
/// an ext4 root whose fstab mounts the ESP by serial, os-release `ID=<os>`), in `d`.
/// Returns the disk and the folder the ESP was filled from.
fn esp_guest(d: &Path, vendor: &str, os: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let esp = d.join("esp.img");
    sh(Command::new("mkfs.fat")
        .args(["-C", "-F", "32", "-i", "0badcafe", "-n", "EFI"])
        .arg(&esp)
        .arg("40960"));
    let src = d.join("esp");
    std::fs::create_dir_all(src.join(format!("EFI/{vendor}"))).unwrap();
    std::fs::write(
        src.join(format!("EFI/{vendor}/shimx64.efi")),
        vec![0x4d; 12345],
    )
    .unwrap();
    std::fs::write(
        src.join(format!("EFI/{vendor}/grubx64.efi")),
        vec![0x5a; 54321],
    )
    .unwrap();
    std::fs::write(
        src.join(format!("EFI/{vendor}/grub.cfg")),
        "configfile $prefix/grub.cfg\n",
    )
    .unwrap();
    sh(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-s")
        .arg("-i")
        .arg(&esp)
        .arg(src.join("EFI"))
        .arg("::/"));
    let root = d.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("boot/efi")).unwrap();
    std::fs::write(
        root.join("etc/fstab"),
        "/dev/sda2 / ext4 defaults 0 1\nUUID=0BAD-CAFE /boot/efi vfat umask=0077,shortname=winnt 0 2\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/os-release"), format!("ID={os}\n")).unwrap();
    // A stand-in kernel whose drivers are built in, so the guest is convertible.
    let kver = "6.1.0-27-amd64";
    std::fs::create_dir_all(root.join(format!("lib/modules/{kver}"))).unwrap();
    std::fs::write(
        root.join(format!("boot/vmlinuz-{kver}")),
        "not a real kernel\n",
    )
    .unwrap();
    std::fs::write(root.join(format!("lib/modules/{kver}/modules.dep")), "").unwrap();
    std::fs::write(
        root.join(format!("lib/modules/{kver}/modules.builtin")),
        "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/block/virtio_blk.ko\n\
         kernel/drivers/scsi/virtio_scsi.ko\nkernel/drivers/scsi/sd_mod.ko\n\
         kernel/drivers/net/virtio_net.ko\n",
    )
    .unwrap();
    let root_img = d.join("root.img");
    sh(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&root)
        .arg(&root_img)
        .arg("32M"));
    let disk = d.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(80 << 20)
        .unwrap();
    let mut c = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\nstart=2048,size=40M,type=U\nsize=32M,type=L\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    dd(&esp, &disk, 1, None);
    dd(&root_img, &disk, 41, None);
    (disk, src)
}

#[test]
fn esp_is_read_and_written_through_the_guest() {
    for t in ["mkfs.fat", "fsck.fat", "mcopy", "mtype", "mke2fs", "sfdisk"] {
        if !have(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (disk, src) = esp_guest(d, "redhat", "rhel");
    let s = disk.to_str().unwrap();

    let o = transplant(&["ls", &format!("{s}@1:/EFI/redhat")]);
    ok(&o);
    let names = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        names.contains("shimx64.efi") && names.contains("grub.cfg"),
        "{names}"
    );
    let o = transplant(&["cat", &format!("{s}:/boot/efi/EFI/redhat/grub.cfg")]);
    ok(&o);
    assert_eq!(o.stdout, b"configfile $prefix/grub.cfg\n");
    let o = transplant(&["inspect", s]);
    let report =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(!report.contains("could not be read"), "{report}");
    assert!(
        report.contains("redhat") && report.contains("BOOTX64.EFI"),
        "{report}"
    );

    ok(&transplant(&[
        "mkdir",
        "-p",
        &format!("{s}:/boot/efi/EFI/BOOT"),
    ]));
    let shim = std::fs::read(src.join("EFI/redhat/shimx64.efi")).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(["write", &format!("{s}:/boot/efi/EFI/BOOT/BOOTX64.EFI")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(&shim).unwrap();
    ok(&c.wait_with_output().unwrap());
    let o = transplant(&["cat", &format!("{s}:/boot/efi/efi/boot/bootx64.efi")]);
    ok(&o);
    assert!(o.stdout == shim);

    let back = d.join("esp-back.img");
    dd(&disk, &back, 1, Some(40));
    let o = Command::new("fsck.fat")
        .arg("-n")
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fsck.fat -n: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&back)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .output()
        .unwrap();
    assert!(o.stdout == shim, "mtype reads back what was written");
}

/// `convert --to kvm` of a Debian-style UEFI guest (shim and GRUB only under
/// EFI/debian, as grub-install leaves them without --force-extra-removable) puts shim at
/// the removable-media path with the GRUB it starts and grub.cfg beside it; the ESP stays
/// clean for fsck.fat, and mtools reads the copies back byte for byte.
#[test]
fn convert_gives_a_uefi_guest_its_removable_media_loader() {
    for t in ["mkfs.fat", "fsck.fat", "mcopy", "mtype", "mke2fs", "sfdisk"] {
        if !have(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (disk, src) = esp_guest(d, "debian", "debian");
    let s = disk.to_str().unwrap();
    let out = d.join("kvm.raw");
    let o = transplant(&[
        "convert",
        s,
        out.to_str().unwrap(),
        "--to",
        "kvm",
        "--dry-run",
    ]);
    let dry = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(dry.contains("/boot/efi/EFI/BOOT/BOOTX64.EFI"), "{dry}");
    let o = transplant(&["convert", s, out.to_str().unwrap(), "--to", "kvm"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(6)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let back = d.join("esp-back.img");
    dd(&out, &back, 1, Some(40));
    let o = Command::new("fsck.fat")
        .arg("-n")
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fsck.fat -n: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    for (from, to) in [
        ("shimx64.efi", "BOOTX64.EFI"),
        ("grubx64.efi", "grubx64.efi"),
        ("grub.cfg", "grub.cfg"),
    ] {
        let want = std::fs::read(src.join("EFI/debian").join(from)).unwrap();
        let o = Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&back)
            .arg(format!("::/EFI/BOOT/{to}"))
            .output()
            .unwrap();
        assert!(
            o.stdout == want,
            "EFI/BOOT/{to} is a copy of EFI/debian/{from}"
        );
    }
    // The vendor's own files are untouched, and a second conversion adds nothing.
    let o = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&back)
        .arg("::/EFI/debian/shimx64.efi")
        .output()
        .unwrap();
    assert!(o.stdout == std::fs::read(src.join("EFI/debian/shimx64.efi")).unwrap());
    let o = transplant(&["convert", out.to_str().unwrap(), "--to", "kvm", "--dry-run"]);
    let again = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!again.contains("EFI/BOOT/BOOTX64.EFI"), "{again}");
}
