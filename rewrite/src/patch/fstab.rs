//! `/etc/fstab` (and the copy dracut puts in an initramfs): the device of every mount and
//! swap line through [`Context::rewrite_device`]; hypervisor shared folders (VMware's
//! `vmhgfs`, VirtualBox's `vboxsf`), which have no host on the target, disabled.

use super::fields::{fields, replace_field};
use super::{disabled, is_comment_or_blank};
use crate::context::{Context, SpecForm};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

/// Filesystem types served by the old hypervisor.
fn shared_folder(fs_type: &str) -> Option<&'static str> {
    match fs_type {
        "vmhgfs" | "fuse.vmhgfs-fuse" | "vmblock" => Some("a VMware shared folder"),
        "vboxsf" => Some("a VirtualBox shared folder"),
        _ => None,
    }
}

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        if is_comment_or_blank(body) {
            ed.keep(raw);
            continue;
        }
        let f = fields(body);
        let field = |i: usize| f.get(i).and_then(|r| body.get(r.clone()));
        if let Some(what) = field(2).and_then(shared_folder) {
            ed.replace(
                n,
                raw,
                &disabled(body),
                format!(
                    "{what}: the old hypervisor serves it and the target has none; mounting \
                     it would fail or stall the boot"
                ),
            );
            continue;
        }
        let Some(dev) = field(0) else {
            ed.keep(raw);
            continue;
        };
        match ctx.rewrite_device(dev, SpecForm::Spec) {
            Ok(Some(r)) => {
                // fstab's own escape for whitespace in a field (libmount, fstab(5)).
                let escaped = r.new.replace(' ', "\\040").replace('\t', "\\011");
                let new = replace_field(body, &f, 0, &escaped);
                ed.replace(n, raw, &new, r.reason);
            }
            Ok(None) => ed.keep(raw),
            Err(m) => {
                ed.keep(raw);
                ed.warn(Some(n), m);
            }
        }
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::GuestVolume;
    use crate::patch::cmdline::tests::{ctx, renaming};
    use crate::Target;

    const RHEL5_XEN: &str = "\
/dev/VolGroup00/LogVol00 /                       ext3    defaults        1 1
LABEL=/boot             /boot                   ext3    defaults        1 2
tmpfs                   /dev/shm                tmpfs   defaults        0 0
devpts                  /dev/pts                devpts  gid=5,mode=620  0 0
sysfs                   /sys                    sysfs   defaults        0 0
proc                    /proc                   proc    defaults        0 0
/dev/xvda2              swap                    swap    defaults        0 0
/dev/hdc                /media/cdrom            auto    pamconsole,exec,noauto,managed 0 0
";

    #[test]
    fn rhel5_xen_guest() {
        let c = ctx(Target::Kvm);
        let p = patch("/etc/fstab", RHEL5_XEN, &c);
        let out = p.text.clone().unwrap();
        assert!(out.contains(
            "UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d swap                    swap    defaults        0 0\n"
        ));
        assert_eq!(p.edits.len(), 1);
        assert_eq!(p.edits[0].line, Some(7));
        // /dev/hdc (the old CD-ROM) matches no disk: warned, left alone.
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].line, Some(8));
        assert_eq!(out.lines().count(), RHEL5_XEN.lines().count());
        assert!(patch("/etc/fstab", &out, &c).text.is_none());
    }

    #[test]
    fn debian_vmware_guest_with_shared_folder_crlf_and_no_final_newline() {
        let t = "# /etc/fstab: static file system information.\r\n\
                 #\r\n\
                 # <file system> <mount point>   <type>  <options>       <dump>  <pass>\r\n\
                 /dev/sda3\t/\text4\terrors=remount-ro\t0\t1\r\n\
                 /dev/sda1 /boot ext4 defaults,nofail 0 2\r\n\
                 /dev/sda2       none            swap    sw              0       0\r\n\
                 .host:/ /mnt/hgfs fuse.vmhgfs-fuse allow_other,defaults 0 0\r\n\
                 /dev/sda4 /srv xfs defaults 0 0";
        let c = ctx(Target::Kvm);
        let p = patch("/etc/fstab", t, &c);
        let out = p.text.unwrap();
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines.len(), 8);
        assert_eq!(
            lines[3],
            "UUID=9e8d7c6b-5a49-4838-a726-151413121110\t/\text4\terrors=remount-ro\t0\t1"
        );
        assert_eq!(
            lines[4],
            "UUID=0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f /boot ext4 defaults,nofail 0 2"
        );
        assert!(lines[6].starts_with("# disabled by transplant: .host:/ /mnt/hgfs"));
        // No UUID on sda4: the same disk's name on virtio, no final newline kept.
        assert_eq!(lines[7], "/dev/vda4 /srv xfs defaults 0 0");
        assert_eq!(p.edits.len(), 5);
        assert!(p.edits[3].reason.contains("VMware shared folder"));
        assert!(patch("/etc/fstab", &out, &c).text.is_none());
    }

    #[test]
    fn rename_and_already_converted() {
        let c = renaming(Target::Kvm);
        let t = "/dev/sda1   /boot   ext4   defaults   1 2\n";
        let p = patch("/etc/fstab", t, &c);
        assert_eq!(
            p.text.as_deref(),
            Some("/dev/vda1   /boot   ext4   defaults   1 2\n")
        );
        let done = "UUID=abc / ext4 defaults 0 1\n/dev/mapper/vg-swap none swap sw 0 0\n";
        assert!(patch("/etc/fstab", done, &ctx(Target::Physical))
            .text
            .is_none());
    }

    #[test]
    fn label_with_space_is_escaped() {
        let mut c = ctx(Target::Kvm);
        c.volumes[4].label = Some("my data".into());
        let p = patch("/etc/fstab", "/dev/sda4 /srv ext4 defaults 0 2\n", &c);
        assert_eq!(
            p.text.as_deref(),
            Some("LABEL=my\\040data /srv ext4 defaults 0 2\n")
        );
    }

    #[test]
    fn by_id_is_placed_only_on_a_single_disk_guest() {
        let t = "/dev/disk/by-id/scsi-SATA_VBOX_HARDDISK_VB1234-part3 / ext4 acl,user_xattr 1 1\n";
        let mut c = ctx(Target::Kvm);
        let uuid = c.volumes[3].uuid.clone().unwrap();
        let p = patch("/etc/fstab", t, &c);
        assert_eq!(
            p.text,
            Some(format!("UUID={uuid} / ext4 acl,user_xattr 1 1\n"))
        );
        c.volumes.push(GuestVolume {
            disk: Some(1),
            partition: Some(1),
            uuid: Some("0b7e".into()),
            ..Default::default()
        });
        let p = patch("/etc/fstab", t, &c);
        assert!(p.text.is_none());
        assert_eq!(p.warnings.len(), 1);
    }
}
