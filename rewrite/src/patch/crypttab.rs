//! `/etc/crypttab`: the encrypted device (second field) through
//! [`Context::rewrite_device`]; a key file that is itself a device (third field) too, as a
//! path since cryptsetup opens it.

use super::fields::{fields, replace_field};
use super::is_comment_or_blank;
use crate::context::{Context, SpecForm};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        if is_comment_or_blank(body) {
            ed.keep(raw);
            continue;
        }
        let mut line = body.to_string();
        let mut reasons = Vec::new();
        for (idx, form) in [(1, SpecForm::Spec), (2, SpecForm::Path)] {
            let cur = fields(&line);
            let Some(dev) = cur.get(idx).and_then(|r| line.get(r.clone())) else {
                continue;
            };
            if idx == 2 && !dev.starts_with("/dev/") {
                continue;
            }
            match ctx.rewrite_device(dev, form) {
                Ok(Some(r)) if super::splits_field(&r.new) => {
                    ed.warn(Some(n), super::unwritable(dev, &r.new));
                }
                Ok(Some(r)) => {
                    line = replace_field(&line, &cur, idx, &r.new);
                    reasons.push(r.reason);
                }
                Ok(None) => {}
                Err(m) => ed.warn(Some(n), m),
            }
        }
        if reasons.is_empty() {
            ed.keep(raw);
        } else {
            ed.replace(n, raw, &line, reasons.join("; "));
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
    fn device_and_key_device() {
        let t = "# <target name> <source device> <key file> <options>\n\
                 sda3_crypt /dev/sda3 none luks,discard\n\
                 data\t/dev/sda4\t/dev/sda1\tluks,keyscript=/lib/cryptsetup/scripts/passdev\n\
                 swap /dev/sdb2 /dev/urandom swap,cipher=aes-xts-plain64\n\
                 home UUID=1234 none luks\n";
        let c = ctx(Target::Kvm);
        let p = patch("/etc/crypttab", t, &c);
        let out = p.text.unwrap();
        assert!(out
            .contains("sda3_crypt UUID=9e8d7c6b-5a49-4838-a726-151413121110 none luks,discard\n"));
        assert!(out.contains(
            "data\t/dev/vda4\t/dev/disk/by-uuid/0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f\tluks"
        ));
        assert!(out.contains("swap /dev/sdb2 /dev/urandom"));
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.edits.len(), 2);
        assert!(patch("/etc/crypttab", &out, &c).text.is_none());
    }
}
