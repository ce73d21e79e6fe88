//! SUSE's `/etc/sysconfig/kernel`: `INITRD_MODULES="mptspi processor thermal ..."` is the
//! list SLES 10/11 `mkinitrd` puts in every initrd it builds. The old disk controller
//! drivers in it are replaced by the target's (`virtio_pci virtio_blk` on KVM), so an
//! initrd rebuilt inside the guest still finds its root disk. `DOMU_INITRD_MODULES` (used
//! only under Xen) is kept.

use super::modprobe::OLD_DISK_DRIVERS;
use crate::context::Context;
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let wanted = ctx.target.initramfs_modules();
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let t = body.trim_start();
        let Some(value) = t.strip_prefix("INITRD_MODULES=") else {
            ed.keep(raw);
            continue;
        };
        let head = &body[..body.len() - value.len()];
        let (q, inner, tail) = match value.chars().next() {
            Some(q @ ('"' | '\'')) => match value[1..].find(q) {
                Some(e) => (q.to_string(), &value[1..1 + e], &value[2 + e..]),
                None => {
                    ed.keep(raw);
                    continue;
                }
            },
            _ => {
                let e = value.find(char::is_whitespace).unwrap_or(value.len());
                (String::new(), &value[..e], &value[e..])
            }
        };
        let mods: Vec<&str> = inner.split_whitespace().collect();
        let old: Vec<&str> = mods
            .iter()
            .copied()
            .filter(|m| OLD_DISK_DRIVERS.contains(m))
            .collect();
        if old.is_empty() {
            ed.keep(raw);
            continue;
        }
        let mut out: Vec<&str> = Vec::new();
        for m in &mods {
            if OLD_DISK_DRIVERS.contains(m) {
                if Some(m) == old.first() {
                    out.extend(wanted.iter().filter(|w| !mods.contains(w)));
                }
            } else {
                out.push(m);
            }
        }
        let list = out.join(" ");
        let q = if q.is_empty() && out.len() > 1 {
            "\"".to_string()
        } else {
            q
        };
        ed.replace(
            n,
            raw,
            &format!("{head}{q}{list}{q}{tail}"),
            format!(
                "{} drive the old disk controller; mkinitrd must put the target's ({}) in \
                 the initrd",
                old.join(" "),
                wanted.join(" ")
            ),
        );
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;
    use crate::Target;

    #[test]
    fn sles11() {
        let t = "## Type:\t\tstring\n\
                 INITRD_MODULES=\"mptspi processor thermal ata_piix mptbase fan jbd ext3 edd\"\n\
                 DOMU_INITRD_MODULES=\"xennet xenblk\"\n";
        let c = ctx(Target::Kvm);
        let p = patch("/etc/sysconfig/kernel", t, &c);
        let out = p.text.clone().unwrap();
        assert!(out.contains(
            "INITRD_MODULES=\"virtio_pci virtio_blk processor thermal ata_piix fan jbd ext3 edd\"\n"
        ));
        assert!(out.contains("DOMU_INITRD_MODULES=\"xennet xenblk\"\n"));
        assert!(patch("k", &out, &c).text.is_none());
        let p = patch("k", "INITRD_MODULES=xenblk\n", &ctx(Target::KvmScsi));
        assert_eq!(
            p.text.as_deref(),
            Some("INITRD_MODULES=\"virtio_pci virtio_scsi sd_mod\"\n")
        );
        assert!(patch("k", "INITRD_MODULES=\"\"\n", &c).text.is_none());
    }
}
