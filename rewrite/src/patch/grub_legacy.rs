//! GRUB legacy (`/boot/grub/menu.lst`, `/boot/grub/grub.conf`): RHEL 5/6, SLES 10/11 and
//! the Xen PV guests `pygrub` booted. Each entry's `kernel` command line goes through
//! [`cmdline::rewrite`] (a Xen hypervisor entry's `kernel /xen.gz` line holds the
//! hypervisor's options and is left alone; its `module` kernel line is rewritten like any
//! other). When the default entry boots a kernel that cannot run on the target — a Xen
//! hypervisor entry, a Xen PV (`-xen`, `xenU`) kernel, or a version inspection did not list
//! as usable — `default` moves to the first entry that can.

use super::cmdline;
use super::fields::{fields, replace_field};
use crate::context::Context;
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

struct Entry {
    title: String,
    /// The kernel that boots: the `kernel` line's image, or for a hypervisor entry the
    /// first `module`'s.
    kernel: Option<String>,
    hypervisor: bool,
}

/// The kernel image of a `kernel`/`module` line: the first argument not an option
/// (`--type=...`), without a GRUB device prefix (`(hd0,0)/vmlinuz` → `/vmlinuz`).
fn image(body: &str) -> Option<(usize, String)> {
    let f = fields(body);
    f.iter().enumerate().skip(1).find_map(|(i, r)| {
        let w = body.get(r.clone())?;
        if w.starts_with("--") {
            return None;
        }
        let path = match w.find(')') {
            Some(p) if w.starts_with('(') => &w[p + 1..],
            _ => w,
        };
        Some((i, path.to_string()))
    })
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_xen_hypervisor(path: &str) -> bool {
    let b = basename(path);
    b.starts_with("xen.gz") || (b.starts_with("xen-") && b.ends_with(".gz")) || b == "xen"
}

/// The version in `vmlinuz-VERSION` (None for a bare `vmlinuz` link).
pub fn kernel_version(path: &str) -> Option<&str> {
    let b = basename(path);
    b.strip_prefix("vmlinuz-")
        .or_else(|| b.strip_prefix("vmlinux-"))
        .or_else(|| b.strip_prefix("kernel-"))
}

/// Whether a kernel image is a Xen PV flavour (`2.6.18-398.el5xen`, `3.0.101-63-xen`,
/// `2.6.32-5-xen-amd64`, `xenU`).
pub fn is_xen_kernel(path: &str) -> bool {
    let b = basename(path);
    b.contains("xen")
}

fn entry_usable(e: &Entry, usable: &[String]) -> bool {
    if e.hypervisor {
        return false;
    }
    let Some(k) = &e.kernel else {
        return false;
    };
    if is_xen_kernel(k) {
        return false;
    }
    match kernel_version(k) {
        Some(v) => usable.iter().any(|u| u == v),
        // A bare /boot/vmlinuz link: its version is not written here.
        None => true,
    }
}

/// The command word of a menu line, lowercase (`default` of `default=0`).
fn keyword(body: &str) -> String {
    let t = body.trim_start();
    let end = t
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(t.len());
    t[..end].to_ascii_lowercase()
}

/// `usable_kernels`: versions (as in `vmlinuz-VERSION`, `/lib/modules/VERSION`) that can
/// boot the target, from inspection. When it is empty nothing is known to boot there: the
/// default entry is left and a warning says so.
pub fn patch(file: &str, text: &str, ctx: &Context, usable_kernels: &[String]) -> Patched {
    let lines: Vec<(usize, &str)> = lines_with_endings(text).collect();
    // First pass: entries, and the last global `default` line.
    let mut entries: Vec<Entry> = Vec::new();
    let mut default_line: Option<usize> = None;
    let mut first_title: Option<usize> = None;
    for (idx, (_, raw)) in lines.iter().enumerate() {
        let body = split_ending(raw).0;
        if body.trim_start().starts_with('#') {
            continue;
        }
        let kw = keyword(body);
        match kw.as_str() {
            "title" => {
                first_title.get_or_insert(idx);
                let t = body.trim_start();
                entries.push(Entry {
                    title: t
                        .get(5..)
                        .unwrap_or("")
                        .trim_start_matches(['=', ' ', '\t'])
                        .trim_end()
                        .to_string(),
                    kernel: None,
                    hypervisor: false,
                });
            }
            "default" if entries.is_empty() => default_line = Some(idx),
            "kernel" => {
                if let (Some(e), Some((_, img))) = (entries.last_mut(), image(body)) {
                    e.hypervisor = is_xen_hypervisor(&img);
                    e.kernel = (!e.hypervisor).then_some(img);
                }
            }
            "module" => {
                if let (Some(e), Some((_, img))) = (entries.last_mut(), image(body)) {
                    if e.hypervisor && e.kernel.is_none() {
                        e.kernel = Some(img);
                    }
                }
            }
            _ => {}
        }
    }

    let mut ed = LineEditor::new(file);
    // The default entry's index as written (`default=N`, `default N`; `saved` is kept).
    let default_value = default_line.and_then(|i| {
        let body = split_ending(lines.get(i)?.1).0;
        let f = fields(&body.replace('=', " "));
        let v = f.get(1).and_then(|r| body.get(r.clone()))?;
        Some(v.to_string())
    });
    let mut new_default: Option<(usize, String)> = None;
    if !entries.is_empty() {
        let current = match default_value.as_deref() {
            None => Some(0),
            Some(v) => v.parse::<usize>().ok(),
        };
        let cur = current.map(|c| if c < entries.len() { c } else { 0 });
        let first_ok = entries.iter().position(|e| entry_usable(e, usable_kernels));
        match (cur, first_ok) {
            (None, _) => {
                if default_value.as_deref() == Some("saved") {
                    ed.warn(
                        default_line.map(|i| i + 1),
                        "default=saved: the entry GRUB boots is in /boot/grub/default; check \
                         it boots a kernel that can run on the target",
                    );
                }
            }
            (Some(c), Some(ok)) => {
                if let Some(e) = entries.get(c) {
                    if !entry_usable(e, usable_kernels) && ok != c {
                        let why = if e.hypervisor {
                            "starts the Xen hypervisor".to_string()
                        } else if e.kernel.as_deref().is_some_and(is_xen_kernel) {
                            "boots a Xen PV kernel".to_string()
                        } else {
                            "boots a kernel that lacks the target's drivers".to_string()
                        };
                        let target_title =
                            entries.get(ok).map(|e| e.title.clone()).unwrap_or_default();
                        new_default = Some((
                            ok,
                            format!(
                                "the default entry {c} ({}) {why}, which cannot boot on {}; \
                                 entry {ok} ({target_title}) can",
                                e.title,
                                ctx.target.name()
                            ),
                        ));
                    }
                }
            }
            (Some(_), None) => ed.warn(
                None,
                format!(
                    "no entry of this menu boots a kernel that can run on {}: {}",
                    ctx.target.name(),
                    if usable_kernels.is_empty() {
                        "no installed kernel was found usable"
                    } else {
                        "the usable kernels have no entry here"
                    }
                ),
            ),
        }
    }

    if let (Some((k, reason)), None) = (&new_default, default_line) {
        // No `default` line: GRUB boots entry 0; say which one instead.
        ed.insert(0, &format!("default={k}"), reason.clone());
    }
    let mut in_hypervisor_entry = false;
    for (idx, (n, raw)) in lines.iter().enumerate() {
        let (n, raw) = (*n, *raw);
        let body = split_ending(raw).0;
        if body.trim_start().starts_with('#') {
            ed.keep(raw);
            continue;
        }
        let kw = keyword(body);
        if Some(idx) == default_line {
            if let Some((k, reason)) = &new_default {
                // `default=N`, `default N`, `default = N`: the value is the second word
                // once `=` counts as a separator (same length, so ranges hold for `body`).
                let f = fields(&body.replace('=', " "));
                let new = replace_field(body, &f, 1, &k.to_string());
                ed.replace(n, raw, &new, reason.clone());
                continue;
            }
        }
        match kw.as_str() {
            "title" => {
                in_hypervisor_entry = false;
                ed.keep(raw);
            }
            "kernel" | "module" => {
                let Some((i, img)) = image(body) else {
                    ed.keep(raw);
                    continue;
                };
                if kw == "kernel" {
                    in_hypervisor_entry = is_xen_hypervisor(&img);
                    if in_hypervisor_entry {
                        ed.keep(raw);
                        continue;
                    }
                } else if !in_hypervisor_entry || kernel_version(&img).is_none() {
                    // A module that is not a kernel (an initrd) has no command line.
                    ed.keep(raw);
                    continue;
                }
                let f = fields(body);
                let at = f.get(i).map_or(body.len(), |r| r.end);
                let r = cmdline::rewrite(&body[at..], ctx);
                for w in &r.warnings {
                    ed.warn(Some(n), w.clone());
                }
                if r.changed() {
                    ed.replace(n, raw, &format!("{}{}", &body[..at], r.line), r.reason());
                } else {
                    ed.keep(raw);
                }
            }
            _ => ed.keep(raw),
        }
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;
    use crate::Target;

    const RHEL5: &str = "\
# grub.conf generated by anaconda
#
default=0
timeout=5
splashimage=(hd0,0)/grub/splash.xpm.gz
hiddenmenu
title CentOS (2.6.18-398.el5xen)
\troot (hd0,0)
\tkernel /vmlinuz-2.6.18-398.el5xen ro root=/dev/xvda3 console=xvc0
\tinitrd /initrd-2.6.18-398.el5xen.img
title CentOS (2.6.18-398.el5)
\troot (hd0,0)
\tkernel /vmlinuz-2.6.18-398.el5 ro root=/dev/xvda3
\tinitrd /initrd-2.6.18-398.el5.img
";

    #[test]
    fn rhel5_xen_default_moves() {
        let c = ctx(Target::Kvm);
        let usable = vec!["2.6.18-398.el5".to_string()];
        let p = patch("/boot/grub/grub.conf", RHEL5, &c, &usable);
        let out = p.text.clone().unwrap();
        assert!(out.contains("\ndefault=1\n"));
        assert!(out.contains("\tkernel /vmlinuz-2.6.18-398.el5xen ro root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 console=ttyS0\n"));
        assert!(out.contains(
            "\tkernel /vmlinuz-2.6.18-398.el5 ro root=UUID=9e8d7c6b-5a49-4838-a726-151413121110\n"
        ));
        assert_eq!(p.edits.len(), 3);
        assert!(
            p.edits[0].reason.contains("Xen PV kernel"),
            "{}",
            p.edits[0].reason
        );
        assert!(patch("g", &out, &c, &usable).text.is_none());
        // No usable kernel: warned, default kept.
        let p = patch("g", RHEL5, &c, &[]);
        assert!(p.text.unwrap().contains("\ndefault=0\n"));
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn sles_hypervisor_entry_and_no_default_line() {
        let t = "\
# Modified by YaST2. Last modification on Tue Mar  3 10:00:00 UTC 2015
timeout 8
gfxmenu (hd0,1)/boot/message
###Don't change this comment - YaST2 identifier: Original name: xen###
title Xen -- SUSE Linux Enterprise Server 11 SP3 - 3.0.101-63
    root (hd0,1)
    kernel /boot/xen.gz dom0_mem=1024M
    module /boot/vmlinuz-3.0.101-63-xen root=/dev/sda2 resume=/dev/sda1 splash=silent showopts
    module /boot/initrd-3.0.101-63-xen
###Don't change this comment - YaST2 identifier: Original name: linux###
title SUSE Linux Enterprise Server 11 SP3 - 3.0.101-63
    root (hd0,1)
    kernel (hd0,1)/boot/vmlinuz-3.0.101-63-default root=/dev/sda3 resume=/dev/sda2 splash=silent showopts vga=0x314
    initrd /boot/initrd-3.0.101-63-default
";
        let c = ctx(Target::Kvm);
        let usable = vec!["3.0.101-63-default".to_string()];
        let p = patch("/boot/grub/menu.lst", t, &c, &usable);
        let out = p.text.clone().unwrap();
        assert!(out.starts_with("default=1\n# Modified by YaST2"), "{out}");
        assert!(out.contains("kernel /boot/xen.gz dom0_mem=1024M\n"));
        assert!(out.contains("module /boot/vmlinuz-3.0.101-63-xen root=UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d resume=UUID=0b8a1c2e"), "{out}");
        assert!(out.contains("module /boot/initrd-3.0.101-63-xen\n"));
        assert!(out.contains("kernel (hd0,1)/boot/vmlinuz-3.0.101-63-default root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 resume=UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d splash=silent showopts vga=0x314\n"));
        assert!(p.edits[0].reason.contains("Xen hypervisor"));
        assert!(patch("g", &out, &c, &usable).text.is_none());
    }

    #[test]
    fn default_spaces_and_saved() {
        let c = ctx(Target::Kvm);
        let t = "default 0\ntitle a\nkernel /vmlinuz-2.6-xen\ntitle b\nkernel /vmlinuz-2.6\n";
        let p = patch("g", t, &c, &["2.6".to_string()]);
        assert!(p.text.unwrap().starts_with("default 1\n"));
        let t = "default saved\ntitle a\nkernel /vmlinuz-2.6-xen\n";
        let p = patch("g", t, &c, &["2.6".to_string()]);
        assert!(p.text.is_none());
        assert_eq!(p.warnings.len(), 1);
    }
}
