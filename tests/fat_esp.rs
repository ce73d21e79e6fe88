//! A UEFI guest's EFI system partition end to end: a GPT disk with a FAT32 ESP (made by
//! mkfs.fat and mcopy) and an ext4 root whose fstab mounts it at /boot/efi by its serial.
//! `ls`/`cat` read it alone and through the guest tree, `inspect` sees the vendor folder
//! and the missing fallback loader, and `mkdir`/`write` put EFI/BOOT/BOOTX64.EFI there,
//! which fsck.fat -n and mtype then check.

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

#[test]
fn esp_is_read_and_written_through_the_guest() {
    for t in ["mkfs.fat", "fsck.fat", "mcopy", "mtype", "mke2fs", "sfdisk"] {
        if !have(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let esp = d.join("esp.img");
    sh(Command::new("mkfs.fat")
        .args(["-C", "-F", "32", "-i", "0badcafe", "-n", "EFI"])
        .arg(&esp)
        .arg("40960"));
    let src = d.join("esp");
    std::fs::create_dir_all(src.join("EFI/redhat")).unwrap();
    std::fs::write(src.join("EFI/redhat/shimx64.efi"), vec![0x4d; 12345]).unwrap();
    std::fs::write(src.join("EFI/redhat/grubx64.efi"), vec![0x5a; 54321]).unwrap();
    std::fs::write(
        src.join("EFI/redhat/grub.cfg"),
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
    std::fs::write(root.join("etc/os-release"), "ID=rhel\nVERSION_ID=9.4\n").unwrap();
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
