//! initramfs-tools' device settings: `RESUME=` in `/etc/initramfs-tools/conf.d/resume` (and
//! `conf/conf.d/resume` inside an initramfs), `ROOT=` where it is set (`initramfs.conf`,
//! the initramfs's `conf/param.conf`). A stale resume device makes every boot wait for a
//! swap device that never appears; a stale root device never boots. `none` and `auto` are
//! kept.

use crate::context::{Context, SpecForm};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let indent = body.len() - body.trim_start().len();
        let t = body.trim_start();
        let Some((key, value)) = ["RESUME", "ROOT"]
            .iter()
            .find_map(|k| Some((*k, t.strip_prefix(k)?.strip_prefix('=')?)))
        else {
            ed.keep(raw);
            continue;
        };
        let (quote, inner) = match value.chars().next() {
            Some(q @ ('"' | '\'')) if value.len() >= 2 && value.ends_with(q) => {
                (Some(q), &value[1..value.len() - 1])
            }
            _ => (None, value.trim_end()),
        };
        match ctx.rewrite_device(inner, SpecForm::Spec) {
            Ok(Some(r)) if super::splits_field(&r.new) => {
                ed.keep(raw);
                ed.warn(Some(n), super::unwritable(inner, &r.new));
            }
            Ok(Some(r)) => {
                let q = quote.map(String::from).unwrap_or_default();
                let new = format!("{}{key}={q}{}{q}", &body[..indent], r.new);
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
    use crate::patch::cmdline::tests::ctx;
    use crate::Target;

    #[test]
    fn resume_forms() {
        let c = ctx(Target::Kvm);
        let p = patch(
            "/etc/initramfs-tools/conf.d/resume",
            "RESUME=/dev/sda2\n",
            &c,
        );
        assert_eq!(
            p.text.as_deref(),
            Some("RESUME=UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d\n")
        );
        let p = patch("r", "# comment\nRESUME=\"/dev/xvda2\"", &c);
        assert_eq!(
            p.text.as_deref(),
            Some("# comment\nRESUME=\"UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d\"")
        );
        for keep in [
            "RESUME=none\n",
            "RESUME=auto\n",
            "RESUME=UUID=x\n",
            "RESUME=\n",
        ] {
            assert!(patch("r", keep, &c).text.is_none(), "{keep}");
        }
        let p = patch("conf/param.conf", "ROOT=\"/dev/sda3\"\n", &c);
        assert_eq!(
            p.text.as_deref(),
            Some("ROOT=\"UUID=9e8d7c6b-5a49-4838-a726-151413121110\"\n")
        );
        assert!(patch("r", "ROOTDELAY=10\nRESUMEX=/dev/sda2\n", &c)
            .text
            .is_none());
        let p = patch("r", "RESUME=/dev/sdc5\n", &c);
        assert!(p.text.is_none());
        assert_eq!(p.warnings.len(), 1);
    }
}
