//! A UEFI guest on a new machine: Debian's installer (without "force extra removable")
//! leaves its loader only in `EFI/debian` and an NVRAM entry pointing at it; the entry
//! stays with the old machine, so under fresh firmware nothing boots. `transplant convert
//! --to kvm` copies the loader to the removable-media path `EFI/BOOT/BOOTX64.EFI`
//! (rewrite/src/v2v/efi.rs); these tests boot the guest in QEMU with OVMF and an empty
//! NVRAM before and after, and check the copy offline with mtools.
//!
//! Run only these: `cargo test --test boot_uefi` (as root: the fixture build uses
//! debootstrap). `TRANSPLANT_BOOT_ACCEL=tcg|kvm` forces the accelerator.

#[path = "boot/mod.rs"]
mod boot;

use boot::{boot_firmware, boot_timeout, have, transplant, uefi_guest, Disk, Firmware, Nic};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// QEMU's default MAC; the guest has no rule for any.
const MAC: &str = "52:54:00:12:34:56";

/// The ESP's offset in the fixture's disk (p1 at sector 2048).
const ESP_OFFSET: u64 = 1024 * 1024;

/// `mtype` of `path` on the ESP of the raw disk `raw`; None when it is not there.
fn esp_file(raw: &Path, path: &str) -> Option<Vec<u8>> {
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{ESP_OFFSET}", raw.display()))
        .arg(format!("::{path}"))
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// `transplant convert IMAGE DIR/kvm.qcow2 -O qcow2 --to kvm`; returns the output.
fn convert(image: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("kvm.qcow2");
    transplant(&[
        OsStr::new("convert"),
        image.as_os_str(),
        out.as_os_str(),
        OsStr::new("-O"),
        OsStr::new("qcow2"),
        OsStr::new("--to"),
        OsStr::new("kvm"),
    ]);
    out
}

#[test]
fn uefi_guest_without_a_removable_loader_does_not_boot_on_new_firmware() {
    let Some(g) = uefi_guest() else {
        return;
    };
    if !have("mtype") {
        return;
    }
    assert!(esp_file(&g.raw, "/EFI/debian/shimx64.efi").is_some());
    assert!(
        esp_file(&g.raw, "/EFI/BOOT/BOOTX64.EFI").is_none(),
        "the fixture must not have a removable-media loader"
    );
    let o = boot_firmware(
        &g.image,
        Disk::Virtio,
        Nic::VirtioNet,
        MAC,
        boot_timeout(),
        Firmware::Uefi,
    );
    assert!(o.no_boot_loader, "OVMF found a loader:\n{}", o.tail(40));
    assert!(!o.reached_marker(), "{}", o.tail(40));
    assert!(!o.log.contains("Welcome to GRUB"), "{}", o.tail(40));
    assert!(!o.timed_out, "{}", o.tail(40));
    eprintln!(
        "uefi before conversion: no loader found in {:?} under {:?}",
        o.elapsed, o.accel
    );
}

#[test]
fn converted_uefi_guest_boots_from_the_removable_path() {
    let Some(g) = uefi_guest() else {
        return;
    };
    if !have("mtype") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = convert(&g.image, dir.path());

    // Offline: the removable-media loader is Debian's signed shim, byte for byte, with
    // the GRUB it chains to beside it; the vendor's folder is untouched.
    let raw = dir.path().join("kvm.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&out)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let shim = std::fs::read(&g.shim).unwrap();
    let copied = esp_file(&raw, "/EFI/BOOT/BOOTX64.EFI").expect("EFI/BOOT/BOOTX64.EFI");
    assert!(copied == shim, "BOOTX64.EFI is not shimx64.efi");
    assert_eq!(
        esp_file(&raw, "/EFI/BOOT/grubx64.efi"),
        esp_file(&raw, "/EFI/debian/grubx64.efi")
    );
    assert_eq!(
        esp_file(&raw, "/EFI/debian/shimx64.efi").as_deref(),
        Some(shim.as_slice())
    );
    if have("fsck.fat") {
        // The ESP alone (p1: 64 MiB at 1 MiB), checked read-only.
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&raw).unwrap();
        f.seek(SeekFrom::Start(ESP_OFFSET)).unwrap();
        let mut esp = vec![0u8; 64 << 20];
        f.read_exact(&mut esp).unwrap();
        let esp_img = dir.path().join("esp.img");
        std::fs::write(&esp_img, &esp).unwrap();
        let fsck = Command::new("fsck.fat")
            .arg("-n")
            .arg(&esp_img)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "fsck.fat: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        std::fs::remove_file(&esp_img).unwrap();
    }
    std::fs::remove_file(&raw).unwrap();

    // The boot: OVMF with an empty NVRAM takes EFI/BOOT/BOOTX64.EFI, shim chains to GRUB,
    // GRUB reads EFI/debian/grub.cfg, which finds the root filesystem's grub.cfg.
    let o = boot_firmware(
        &out,
        Disk::Virtio,
        Nic::VirtioNet,
        MAC,
        boot_timeout(),
        Firmware::Uefi,
    );
    assert!(
        !o.no_boot_loader,
        "OVMF found no loader after conversion:\n{}",
        o.tail(40)
    );
    assert!(o.log.contains("Welcome to GRUB"), "{}", o.tail(40));
    assert_eq!(o.root.as_deref(), Some(g.root), "{}", o.tail(60));
    assert_eq!(o.fields.get("firmware").map(String::as_str), Some("uefi"));
    assert_eq!(o.fields.get("efi").map(String::as_str), Some(g.esp));
    assert_eq!(o.fields.get("kernel"), Some(&g.kernel));
    assert!(o.exited, "the guest powers off after its marker");
    eprintln!(
        "uefi after conversion: booted in {:?} under {:?}",
        o.elapsed, o.accel
    );
}

/// Under Secure Boot with Microsoft's keys (and no boot entry) the copied loader chain still
/// verifies: shim (signed by Microsoft) as BOOTX64.EFI, the Debian-signed GRUB beside it,
/// the Debian-signed kernel. A conversion that put GRUB itself there would stop here.
#[test]
fn converted_uefi_guest_boots_under_secure_boot() {
    let Some(g) = uefi_guest() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = convert(&g.image, dir.path());
    let o = boot_firmware(
        &out,
        Disk::Virtio,
        Nic::VirtioNet,
        MAC,
        boot_timeout(),
        Firmware::UefiSecureBoot,
    );
    assert!(!o.no_boot_loader, "{}", o.tail(40));
    assert_eq!(o.root.as_deref(), Some(g.root), "{}", o.tail(60));
    assert!(
        o.log.contains("Secure boot enabled"),
        "the kernel did not see Secure Boot:\n{}",
        o.tail(60)
    );
    assert!(o.exited, "the guest powers off after its marker");
    eprintln!(
        "uefi secure boot after conversion: booted in {:?} under {:?}",
        o.elapsed, o.accel
    );
}
