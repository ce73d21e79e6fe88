//! GRUB's `device.map` (`(hd0) /dev/sda`): which Linux disk is BIOS disk 0 for
//! `grub-install`. Whole disks have no UUID, so the new name is the disk's name on the
//! target's bus; on physical hardware, where that name is not known, a warning says to
//! check it.

use super::fields::{fields, replace_field};
use super::is_comment_or_blank;
use crate::context::{Context, SpecForm};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let f = fields(body);
        let dev = f.get(1).and_then(|r| body.get(r.clone()));
        let (false, Some(dev)) = (is_comment_or_blank(body), dev) else {
            ed.keep(raw);
            continue;
        };
        match ctx.rewrite_device(dev, SpecForm::Path) {
            Ok(Some(r)) if super::splits_field(&r.new) => {
                ed.keep(raw);
                ed.warn(Some(n), super::unwritable(dev, &r.new));
            }
            Ok(Some(r)) => ed.replace(n, raw, &replace_field(body, &f, 1, &r.new), r.reason),
            Ok(None) => ed.keep(raw),
            Err(m) => {
                ed.keep(raw);
                ed.warn(
                    Some(n),
                    format!(
                        "{m} (device.map is only read by grub-install; fix it before running it)"
                    ),
                );
            }
        }
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;
    use crate::Target;

    #[test]
    fn disks_renamed() {
        let t = "(fd0)\t/dev/fd0\n(hd0)\t/dev/sda\n(hd1) /dev/sdb\n";
        let c = ctx(Target::Kvm);
        let p = patch("/boot/grub/device.map", t, &c);
        assert_eq!(
            p.text.as_deref(),
            Some("(fd0)\t/dev/fd0\n(hd0)\t/dev/vda\n(hd1) /dev/sdb\n")
        );
        assert_eq!(p.warnings.len(), 1);
        let p = patch("/boot/grub/device.map", t, &ctx(Target::Physical));
        assert!(p.text.is_none());
        assert_eq!(p.warnings.len(), 2);
        assert!(patch("m", "(hd0) /dev/vda\n", &c).text.is_none());
    }
}
