//! SYSLINUX, EXTLINUX and ISOLINUX (`extlinux.conf`, `syslinux.cfg`, `isolinux.cfg`), the
//! loaders of Alpine, of many small appliances and of older Debian and Arch guests. Their
//! kernel command lines are `APPEND` lines (one per `LABEL`, or a global one that every
//! label inherits); each goes through [`cmdline::rewrite`], so `root=`, `resume=` and the
//! Xen consoles change by the same rule as GRUB's. A Xen hypervisor label (`KERNEL
//! mboot.c32`, `APPEND xen.gz ... --- vmlinuz ... --- initrd`) keeps its hypervisor part;
//! the kernel part after the first `---` is rewritten like any other. When `DEFAULT` (or
//! `ONTIMEOUT`) names a label that starts Xen or a Xen PV kernel, it moves to the first
//! label whose kernel can boot the target; with a menu module (`DEFAULT vesamenu.c32`,
//! `UI menu.c32`) the `MENU DEFAULT` mark moves instead.
//!
//! Keywords are case-insensitive and take the rest of the line, as SYSLINUX reads them.
//! The generators' inputs (Alpine's `/etc/update-extlinux.conf`, Debian's
//! `/etc/default/extlinux`) are rewritten too, so the next `update-extlinux` or
//! `extlinux-update` keeps the change.

use super::cmdline;
use super::grub_legacy::{is_xen_kernel, kernel_version};
use crate::context::{Context, SpecForm};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

/// A line's keyword (lowercase) and the byte offset where its argument starts.
fn keyword(body: &str) -> Option<(String, usize)> {
    let t = body.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let lead = body.len() - t.len();
    let end = t.find(char::is_whitespace).unwrap_or(t.len());
    let kw = t.get(..end)?.to_ascii_lowercase();
    let rest = t.get(end..)?;
    let arg = lead + end + (rest.len() - rest.trim_start().len());
    Some((kw, arg))
}

/// The argument of a line (trimmed), given [`keyword`]'s offset.
fn argument(body: &str, at: usize) -> &str {
    body.get(at..).unwrap_or("").trim_end()
}

#[derive(Debug)]
struct Label {
    name: String,
    /// Index of its LABEL line.
    line: usize,
    kernel: Option<String>,
    /// `KERNEL mboot.c32`: the APPEND line starts the Xen hypervisor.
    mboot: bool,
    /// For mboot labels, the kernel image named after the first `---`.
    mboot_kernel: Option<String>,
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn is_mboot(kernel: &str) -> bool {
    basename(kernel).eq_ignore_ascii_case("mboot.c32")
}

/// The part of an mboot APPEND after the first `---` (the kernel and its options):
/// its byte offset in `args`.
fn after_first_separator(args: &str) -> Option<usize> {
    let mut pos = 0;
    for w in args.split_inclusive(char::is_whitespace) {
        if w.trim_end() == "---" {
            return Some(pos + w.len());
        }
        pos += w.len();
    }
    None
}

impl Label {
    fn booted_kernel(&self) -> Option<&str> {
        if self.mboot {
            self.mboot_kernel.as_deref()
        } else {
            self.kernel.as_deref()
        }
    }

    /// Why this label cannot boot the target, or None if it can (or cannot be told).
    fn unusable(&self, usable: &[String]) -> Option<&'static str> {
        if self.mboot {
            return Some("starts the Xen hypervisor (mboot.c32)");
        }
        let k = self.kernel.as_deref()?;
        if is_xen_kernel(k) {
            return Some("boots a Xen PV kernel");
        }
        match kernel_version(k) {
            Some(v) if !usable.is_empty() && !usable.iter().any(|u| u == v) => {
                Some("boots a kernel that lacks the target's drivers")
            }
            _ => None,
        }
    }

    fn usable(&self, usable: &[String]) -> bool {
        let Some(k) = self.booted_kernel() else {
            return false;
        };
        if self.mboot || is_xen_kernel(k) || k.ends_with(".c32") {
            return false;
        }
        match kernel_version(k) {
            Some(v) => usable.iter().any(|u| u == v),
            None => false,
        }
    }
}

/// `extlinux.conf`, `syslinux.cfg`, `isolinux.cfg`. `usable_kernels` as for GRUB legacy:
/// versions inspection found able to boot the target.
pub fn patch(file: &str, text: &str, ctx: &Context, usable_kernels: &[String]) -> Patched {
    let lines: Vec<(usize, &str)> = lines_with_endings(text).collect();
    let mut labels: Vec<Label> = Vec::new();
    // Global `DEFAULT`/`ONTIMEOUT` lines (before the first LABEL): line index, value.
    let mut defaults: Vec<(usize, String)> = Vec::new();
    // `MENU DEFAULT` inside a label (menu.c32/vesamenu.c32): label index, line index.
    let mut menu_default: Option<(usize, usize)> = None;
    for (idx, (_, raw)) in lines.iter().enumerate() {
        let body = split_ending(raw).0;
        let Some((kw, at)) = keyword(body) else {
            continue;
        };
        let arg = argument(body, at);
        match kw.as_str() {
            "label" => labels.push(Label {
                name: arg.to_string(),
                line: idx,
                kernel: None,
                mboot: false,
                mboot_kernel: None,
            }),
            "default" | "ontimeout" if labels.is_empty() => defaults.push((idx, arg.to_string())),
            "menu" if arg.eq_ignore_ascii_case("default") => {
                menu_default = labels.len().checked_sub(1).map(|l| (l, idx));
            }
            "kernel" | "linux" => {
                if let Some(l) = labels.last_mut() {
                    let img = arg.split_whitespace().next().unwrap_or("");
                    l.mboot = is_mboot(img);
                    l.kernel = Some(img.to_string());
                }
            }
            "append" => {
                if let Some(l) = labels.last_mut().filter(|l| l.mboot) {
                    l.mboot_kernel = after_first_separator(arg)
                        .and_then(|i| arg.get(i..))
                        .and_then(|r| r.split_whitespace().next())
                        .map(str::to_string);
                }
            }
            _ => {}
        }
    }

    let mut ed = LineEditor::new(file);
    // Which label each default names, and where it moves.
    let first_ok = labels.iter().position(|l| l.usable(usable_kernels));
    let mut new_defaults: Vec<(usize, String, String)> = Vec::new();
    for (idx, value) in &defaults {
        // `DEFAULT vesamenu.c32` selects a menu module, not a label.
        if value.ends_with(".c32") {
            continue;
        }
        let Some(cur) = labels.iter().find(|l| l.name == *value) else {
            continue;
        };
        let Some(why) = cur.unusable(usable_kernels) else {
            continue;
        };
        match first_ok.and_then(|i| labels.get(i)) {
            Some(ok) => new_defaults.push((
                *idx,
                ok.name.clone(),
                format!(
                    "label {} {why}, which cannot boot on {}; label {} can",
                    cur.name,
                    ctx.target.name(),
                    ok.name
                ),
            )),
            None => ed.warn(
                Some(idx + 1),
                format!(
                    "label {} {why}, and no label boots a kernel known to run on {}; left as is",
                    cur.name,
                    ctx.target.name()
                ),
            ),
        }
    }

    // With a menu module, the label marked `MENU DEFAULT` is the default: the mark moves.
    let by_label = defaults
        .iter()
        .any(|(_, v)| !v.ends_with(".c32") && labels.iter().any(|l| l.name == *v));
    let mut menu_move: Option<(usize, usize, String)> = None;
    if let (false, Some((li, line))) = (by_label, menu_default) {
        let cur = labels.get(li);
        if let Some((cur, why)) = cur.and_then(|c| Some((c, c.unusable(usable_kernels)?))) {
            match first_ok.and_then(|i| labels.get(i)) {
                Some(ok) => {
                    menu_move = Some((
                        line,
                        ok.line,
                        format!(
                            "label {} {why}, which cannot boot on {}; MENU DEFAULT moves to \
                             label {}, which can",
                            cur.name,
                            ctx.target.name(),
                            ok.name
                        ),
                    ))
                }
                None => ed.warn(
                    Some(line + 1),
                    format!(
                        "label {} {why}, and no label boots a kernel known to run on {}; \
                         left as is",
                        cur.name,
                        ctx.target.name()
                    ),
                ),
            }
        }
    }
    let menu_indent = menu_move
        .as_ref()
        .and_then(|(l, _, _)| lines.get(*l))
        .map(|(_, raw)| {
            let b = split_ending(raw).0;
            b.get(..b.len() - b.trim_start().len())
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();

    let mut in_mboot = false;
    for (idx, (n, raw)) in lines.iter().enumerate() {
        let (n, raw) = (*n, *raw);
        let body = split_ending(raw).0;
        let Some((kw, at)) = keyword(body) else {
            ed.keep(raw);
            continue;
        };
        if let Some((_, label, reason)) = new_defaults.iter().find(|d| d.0 == idx) {
            let end = at + argument(body, at).len();
            let new = format!(
                "{}{label}{}",
                body.get(..at).unwrap_or(""),
                body.get(end..).unwrap_or("")
            );
            ed.replace(n, raw, &new, reason.clone());
            continue;
        }
        if let Some((_, _, reason)) = menu_move.as_ref().filter(|m| m.0 == idx) {
            ed.remove(n, raw, reason.clone());
            continue;
        }
        match kw.as_str() {
            "label" => {
                in_mboot = false;
                ed.keep(raw);
                if let Some((_, _, reason)) = menu_move.as_ref().filter(|m| m.1 == idx) {
                    ed.insert(n, &format!("{menu_indent}MENU DEFAULT"), reason.clone());
                }
            }
            "kernel" | "linux" => {
                in_mboot = is_mboot(argument(body, at).split_whitespace().next().unwrap_or(""));
                ed.keep(raw);
            }
            "append" => {
                let start = if in_mboot {
                    match after_first_separator(argument(body, at)) {
                        Some(i) => at + i,
                        // No kernel part: the whole line is the hypervisor's.
                        None => {
                            ed.keep(raw);
                            continue;
                        }
                    }
                } else {
                    at
                };
                let (Some(head), Some(tail)) = (body.get(..start), body.get(start..)) else {
                    ed.keep(raw);
                    continue;
                };
                // `APPEND -` clears an inherited global APPEND: nothing to rewrite.
                if tail.trim() == "-" {
                    ed.keep(raw);
                    continue;
                }
                let r = cmdline::rewrite(tail, ctx);
                for w in &r.warnings {
                    ed.warn(Some(n), w.clone());
                }
                if r.changed() {
                    ed.replace(n, raw, &format!("{head}{}", r.line), r.reason());
                } else {
                    ed.keep(raw);
                }
            }
            _ => ed.keep(raw),
        }
    }
    ed.finish()
}

/// The generators' inputs: Alpine's `/etc/update-extlinux.conf` (`default_kernel_opts=`,
/// `root=`) and Debian's `/etc/default/extlinux` (`EXTLINUX_PARAMETERS=`,
/// `EXTLINUX_ROOT=`). Shell assignments, quoting kept.
pub fn patch_generator(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let t = body.trim_start();
        let lead = body.len() - t.len();
        let Some((key, _)) = t.split_once('=') else {
            ed.keep(raw);
            continue;
        };
        if key.starts_with('#') || key.contains(char::is_whitespace) {
            ed.keep(raw);
            continue;
        }
        let vstart = lead + key.len() + 1;
        let Some((r, quote)) = super::grub2::quoted_value(body, vstart) else {
            ed.keep(raw);
            continue;
        };
        let inner = body.get(r.clone()).unwrap_or("");
        let rewrap = |new: &str| {
            let q = if quote.is_none() && new.contains(char::is_whitespace) {
                "\""
            } else {
                ""
            };
            format!(
                "{}{q}{new}{q}{}",
                body.get(..r.start).unwrap_or(""),
                body.get(r.end..).unwrap_or("")
            )
        };
        match key {
            "default_kernel_opts" | "EXTLINUX_PARAMETERS" | "EXTLINUX_ROOT" => {
                let new = cmdline::rewrite(inner, ctx);
                for w in &new.warnings {
                    ed.warn(Some(n), w.clone());
                }
                if new.changed() {
                    ed.replace(n, raw, &rewrap(&new.line), new.reason());
                } else {
                    ed.keep(raw);
                }
            }
            // Alpine's root device, given without `root=`.
            "root" => match ctx.rewrite_device(inner, SpecForm::Spec) {
                Ok(Some(x)) if super::splits_field(&x.new) => {
                    ed.keep(raw);
                    ed.warn(Some(n), super::unwritable(inner, &x.new));
                }
                Ok(Some(x)) => ed.replace(n, raw, &rewrap(&x.new), x.reason),
                Ok(None) => ed.keep(raw),
                Err(m) => {
                    ed.keep(raw);
                    ed.warn(Some(n), m);
                }
            },
            _ => ed.keep(raw),
        }
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::{ctx, renaming};
    use crate::Target;

    const ROOT: &str = "UUID=9e8d7c6b-5a49-4838-a726-151413121110";
    const SWAP: &str = "UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d";

    /// Alpine 3.x as `setup-disk` writes /boot/extlinux.conf (update-extlinux output).
    const ALPINE: &str = "\
# Generated by update-extlinux 6.04_pre1-r15
DEFAULT menu.c32
PROMPT 0
MENU TITLE Alpine/Linux Boot Menu
MENU HIDDEN
MENU AUTOBOOT Alpine will be booted automatically in # seconds.
TIMEOUT 10
LABEL lts
  MENU DEFAULT
  MENU LABEL Linux lts
  LINUX vmlinuz-lts
  INITRD initramfs-lts
  APPEND root=/dev/sda3 modules=sd-mod,usb-storage,ext4 quiet rootfstype=ext4

MENU SEPARATOR
";

    #[test]
    fn alpine_append() {
        let c = ctx(Target::Kvm);
        let p = patch("/boot/extlinux.conf", ALPINE, &c, &[]);
        let out = p.text.clone().unwrap();
        assert!(out.contains(&format!(
            "  APPEND root={ROOT} modules=sd-mod,usb-storage,ext4 quiet rootfstype=ext4\n"
        )));
        assert_eq!(p.edits.len(), 1);
        assert_eq!(p.edits[0].line, Some(13));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(patch("f", &out, &c, &[]).text.is_none());
        let p = patch("f", ALPINE, &renaming(Target::Kvm), &[]);
        assert!(p.text.unwrap().contains("APPEND root=/dev/vda3 modules"));
    }

    /// An old Debian/Xen PV guest booted by extlinux: a global APPEND, lowercase keywords,
    /// an mboot.c32 hypervisor label as default and a plain kernel label.
    const XEN: &str = "\
## /boot/extlinux/extlinux.conf
## IMPORTANT WARNING
## The configuration of this file is generated automatically.
default xen
timeout 50
append ro console=hvc0 xencons=tty
label xen
\tkernel /boot/mboot.c32
\tappend /boot/xen-4.1-amd64.gz dom0_mem=512M console=com1 --- /boot/vmlinuz-3.2.0-4-amd64 root=/dev/xvda3 ro console=hvc0 --- /boot/initrd.img-3.2.0-4-amd64
label linux
\tkernel /boot/vmlinuz-3.2.0-4-amd64
\tappend initrd=/boot/initrd.img-3.2.0-4-amd64 root=/dev/xvda3 resume=/dev/xvda2 ro
label rescue
\tkernel /boot/vmlinuz-3.2.0-4-amd64
\tappend -
";

    #[test]
    fn xen_label_default_moves_and_hypervisor_part_kept() {
        let c = ctx(Target::Kvm);
        let usable = vec!["3.2.0-4-amd64".to_string()];
        let p = patch("/boot/extlinux/extlinux.conf", XEN, &c, &usable);
        let out = p.text.clone().unwrap();
        assert!(out.contains("\ndefault linux\n"), "{out}");
        assert!(out.contains("\nappend ro console=ttyS0\n"), "{out}");
        assert!(out.contains(&format!(
            "\tappend /boot/xen-4.1-amd64.gz dom0_mem=512M console=com1 --- /boot/vmlinuz-3.2.0-4-amd64 root={ROOT} ro console=ttyS0 --- /boot/initrd.img-3.2.0-4-amd64\n"
        )), "{out}");
        assert!(out.contains(&format!(
            "\tappend initrd=/boot/initrd.img-3.2.0-4-amd64 root={ROOT} resume={SWAP} ro\n"
        )));
        assert!(out.ends_with("\tappend -\n"));
        assert_eq!(p.edits.len(), 4);
        assert!(
            p.edits[0].reason.contains("Xen hypervisor"),
            "{:?}",
            p.edits
        );
        assert!(patch("f", &out, &c, &usable).text.is_none());
        // No kernel known to be usable: the default stays, with a warning.
        let p = patch("f", XEN, &c, &[]);
        assert!(p.text.unwrap().contains("\ndefault xen\n"));
        assert_eq!(p.warnings.len(), 1);
        // Physical: the Xen console goes, the screen stays.
        let p = patch("f", XEN, &ctx(Target::Physical), &usable);
        assert!(p.text.unwrap().contains("\nappend ro console=tty0\n"));
    }

    #[test]
    fn menu_default_moves_off_xen() {
        let t = "UI menu.c32\nLABEL xen\n  MENU LABEL Xen\n  MENU DEFAULT\n  KERNEL mboot.c32\n  APPEND xen.gz --- vmlinuz-3.2.0-4-amd64 root=UUID=x --- initrd.img\nLABEL linux\n  KERNEL vmlinuz-3.2.0-4-amd64\n  APPEND root=UUID=x\n";
        let c = ctx(Target::Kvm);
        let usable = vec!["3.2.0-4-amd64".to_string()];
        let p = patch("/boot/syslinux/syslinux.cfg", t, &c, &usable);
        let out = p.text.clone().unwrap();
        assert_eq!(
            out,
            t.replace("  MENU DEFAULT\n", "")
                .replace("LABEL linux\n", "LABEL linux\n  MENU DEFAULT\n")
        );
        assert_eq!(p.edits.len(), 2);
        assert!(p.edits[0]
            .reason
            .contains("MENU DEFAULT moves to label linux"));
        assert!(patch("f", &out, &c, &usable).text.is_none());
        let p = patch("f", t, &c, &[]);
        assert!(p.text.is_none());
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn isolinux_style_and_odd_lines() {
        let c = ctx(Target::Kvm);
        let t = "UI vesamenu.c32\nDEFAULT vesamenu.c32\nLABEL a\n  KERNEL vmlinuz\n  APPEND\nAPPEND root=/dev/sda3\r\n   \n# APPEND root=/dev/sda3\nlabel\nappend   root=/dev/sdb1";
        let p = patch("/isolinux/isolinux.cfg", t, &c, &[]);
        let out = p.text.clone().unwrap();
        assert!(out.contains(&format!("APPEND root={ROOT}\r\n")));
        assert!(out.contains("# APPEND root=/dev/sda3\n"));
        assert!(out.ends_with("append   root=/dev/sdb1"));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(patch("f", "", &c, &[]).text.is_none());
        assert!(patch(
            "f",
            "label x\nkernel mboot.c32\nappend xen.gz console=hvc0\n",
            &c,
            &[]
        )
        .text
        .is_none());
    }

    #[test]
    fn generators() {
        let c = ctx(Target::Kvm);
        let t = "overwrite=1\nvesa_menu=0\ndefault_kernel_opts=\"quiet console=hvc0\"\nmodules=sd-mod,usb-storage,ext4\nroot=/dev/sda3\n# root=/dev/sda1\nxen_opts=dom0_mem=384M\n";
        let p = patch_generator("/etc/update-extlinux.conf", t, &c);
        let out = p.text.clone().unwrap();
        assert!(out.contains("default_kernel_opts=\"quiet console=ttyS0\"\n"));
        assert!(out.contains(&format!("\nroot={ROOT}\n")));
        assert!(out.contains("# root=/dev/sda1\n"));
        assert!(patch_generator("f", &out, &c).text.is_none());
        let t = "EXTLINUX_PARAMETERS=\"ro quiet\"\nEXTLINUX_ROOT=\"root=/dev/xvda3\"\n";
        let p = patch_generator("/etc/default/extlinux", t, &c);
        assert!(p
            .text
            .unwrap()
            .contains(&format!("EXTLINUX_ROOT=\"root={ROOT}\"\n")));
    }
}
