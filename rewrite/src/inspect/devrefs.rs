//! Every reference to old hardware by device name (`/dev/sda1`, `/dev/xvda`,
//! `/dev/disk/by-id/...`) in the files a conversion rewrites (V2V checklist sections 1-3),
//! with file and line, and what each resolves to on the source disks.

use super::mounts::describe_volume;
use crate::context::{Context, SpecForm, Target};
use crate::devname::{find_hardware_refs, DevRef};
use crate::edit::{lines_with_endings, split_ending};
use crate::guest_files::GuestFiles;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetRewrite {
    pub target: Target,
    /// What it becomes with the default naming (`UUID=`); None: kept.
    pub new: Option<String>,
    /// Why it cannot be rewritten safely.
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRef {
    pub file: String,
    pub line: usize,
    /// The reference as written.
    pub text: String,
    /// `kernel` (a bus name like sda, xvda, hda), `by-id` or `by-path`.
    pub kind: String,
    /// The line is a comment: reported, never a problem.
    pub in_comment: bool,
    /// Index into the volumes given to inspection.
    pub volume: Option<usize>,
    pub resolves_to: Option<String>,
    pub rewrites: Vec<TargetRewrite>,
}

/// The files of checklist sections 1-3 (storage, bootloader, initramfs generator input).
pub fn files(guest: &dyn GuestFiles) -> Vec<String> {
    let mut out: Vec<String> = [
        "/etc/fstab",
        "/etc/crypttab",
        "/etc/mdadm.conf",
        "/etc/mdadm/mdadm.conf",
        "/etc/lvm/lvm.conf",
        "/etc/initramfs-tools/conf.d/resume",
        "/etc/uswsusp.conf",
        "/etc/sysconfig/kernel",
        "/etc/sysconfig/mkinitrd",
        "/etc/dracut.conf",
        "/etc/multipath.conf",
    ]
    .iter()
    .filter(|p| guest.exists(p))
    .map(|p| p.to_string())
    .collect();
    for d in ["/etc/dracut.conf.d", "/etc/initramfs-tools/conf.d"] {
        for n in guest.list(d) {
            let p = format!("{d}/{n}");
            if !out.contains(&p) && guest.kind(&p) == Some(transplant_fs::FileKind::File) {
                out.push(p);
            }
        }
    }
    for p in super::bootloader::bootloader_files(guest) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

pub fn find(guest: &dyn GuestFiles, ctx: &Context) -> (Vec<DeviceRef>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let targets = [Target::Kvm, Target::KvmScsi, Target::Physical];
    let ctxs: Vec<Context> = targets
        .iter()
        .map(|t| {
            let mut c = ctx.clone();
            c.target = *t;
            c
        })
        .collect();
    for file in files(guest) {
        let text = match guest.read(&file, 4 << 20) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                warnings.push(format!("{file}: {e}"));
                continue;
            }
        };
        for (n, raw) in lines_with_endings(&text) {
            let line = split_ending(raw).0;
            let in_comment = line.trim_start().starts_with('#');
            for (range, r) in find_hardware_refs(line) {
                let tok = line.get(range).unwrap_or("").to_string();
                let (kind, volume) = match r {
                    DevRef::Kernel {
                        disk, partition, ..
                    } => (
                        "kernel",
                        ctx.volumes.iter().position(|v| {
                            v.disk == Some(disk) && v.partition == partition && v.lv.is_none()
                        }),
                    ),
                    DevRef::ById(_) => ("by-id", None),
                    _ => ("by-path", None),
                };
                let rewrites = ctxs
                    .iter()
                    .map(|c| match c.rewrite_device(&tok, SpecForm::Spec) {
                        Ok(r) => TargetRewrite {
                            target: c.target,
                            new: r.map(|x| x.new),
                            warning: None,
                        },
                        Err(w) => TargetRewrite {
                            target: c.target,
                            new: None,
                            warning: Some(w),
                        },
                    })
                    .collect();
                let disk_only = match r {
                    DevRef::Kernel {
                        disk,
                        partition: None,
                        ..
                    } => ctx
                        .volumes
                        .iter()
                        .any(|v| v.disk == Some(disk))
                        .then(|| format!("disk {disk}")),
                    _ => None,
                };
                out.push(DeviceRef {
                    file: file.clone(),
                    line: n,
                    text: tok,
                    kind: kind.to_string(),
                    in_comment,
                    volume,
                    resolves_to: volume
                        .and_then(|i| ctx.volumes.get(i))
                        .map(describe_volume)
                        .or(disk_only),
                    rewrites,
                });
            }
        }
    }
    (out, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::GuestVolume;
    use crate::guest_files::MemGuest;

    #[test]
    fn extlinux_and_lilo_refs() {
        let g = MemGuest::new()
            .file(
                "/boot/extlinux/extlinux.conf",
                "LABEL l\n  LINUX /vmlinuz\n  APPEND root=/dev/sda1 resume=/dev/sda2\n",
            )
            .file("/etc/update-extlinux.conf", "root=/dev/sda1\n")
            .file(
                "/etc/lilo.conf",
                "boot=/dev/sda\ndisk=/dev/sda bios=0x80\nimage=/vmlinuz\n root=/dev/sda1\n",
            );
        let mut ctx = Context::new(Target::Kvm);
        ctx.volumes = vec![GuestVolume {
            disk: Some(0),
            partition: Some(1),
            fs_kind: Some("ext4".into()),
            uuid: Some("6f1c".into()),
            ..Default::default()
        }];
        let (r, _) = find(&g, &ctx);
        let at: Vec<(&str, usize, &str)> = r
            .iter()
            .map(|x| (x.file.as_str(), x.line, x.text.as_str()))
            .collect();
        assert_eq!(
            at,
            [
                ("/etc/lilo.conf", 1, "/dev/sda"),
                ("/etc/lilo.conf", 2, "/dev/sda"),
                ("/etc/lilo.conf", 4, "/dev/sda1"),
                ("/etc/update-extlinux.conf", 1, "/dev/sda1"),
                ("/boot/extlinux/extlinux.conf", 3, "/dev/sda1"),
                ("/boot/extlinux/extlinux.conf", 3, "/dev/sda2"),
            ]
        );
        assert_eq!(r[2].rewrites[0].new.as_deref(), Some("UUID=6f1c"));
    }

    #[test]
    fn finds_and_resolves() {
        let g = MemGuest::new()
            .file("/etc/fstab", "# /dev/sda1 was here\n/dev/sda1 / ext4 defaults 0 1\n/dev/sdb1 /srv ext4 defaults 0 2\n")
            .file("/boot/grub/grub.cfg", "menuentry 'x' {\n linux /vmlinuz root=/dev/sda1 resume=/dev/disk/by-id/ata-X-part2\n}\n")
            .file("/boot/grub/device.map", "(hd0)\t/dev/sda\n");
        let mut ctx = Context::new(Target::Kvm);
        ctx.volumes = vec![GuestVolume {
            disk: Some(0),
            partition: Some(1),
            fs_kind: Some("ext4".into()),
            uuid: Some("6f1c".into()),
            ..Default::default()
        }];
        let (r, w) = find(&g, &ctx);
        assert!(w.is_empty());
        assert_eq!(r.len(), 6);
        assert!(r[0].in_comment);
        assert_eq!(r[1].line, 2);
        assert_eq!(r[1].volume, Some(0));
        assert_eq!(r[1].rewrites[0].new.as_deref(), Some("UUID=6f1c"));
        assert_eq!(r[2].volume, None);
        assert!(r[2].rewrites[0].warning.is_some());
        let files: Vec<&str> = r.iter().map(|x| x.file.as_str()).collect();
        assert_eq!(
            files[3..],
            [
                "/boot/grub/grub.cfg",
                "/boot/grub/grub.cfg",
                "/boot/grub/device.map"
            ]
        );
        assert_eq!(r[4].kind, "by-id");
        assert_eq!(r[5].resolves_to.as_deref(), Some("disk 0"));
    }
}
