//! GRUB 2: the generated config (`grub.cfg`), the generator's input (`/etc/default/grub`,
//! `/etc/default/grub.d/*.cfg`, RHEL's `/etc/sysconfig/grub`, SUSE's
//! `/etc/sysconfig/bootloader`), BLS entries (`/boot/loader/entries/*.conf`) and the
//! environment block (`grubenv`, where RHEL 8 keeps `kernelopts`). Both the output and the
//! input of `grub-mkconfig` are edited, so a later run inside the guest keeps the change.
//! Every command line goes through [`cmdline::rewrite`]; `search --fs-uuid` and
//! `set root=` name disks the way GRUB finds them and are kept.

use super::cmdline;
use super::fields::fields;
use crate::context::{Context, SpecForm, Target};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched, Warning};
use crate::inspect::bootloader::resolve_default;
use crate::inspect::BootEntry;

fn push_warnings(ed: &mut LineEditor, n: usize, w: Vec<String>) {
    for m in w {
        ed.warn(Some(n), m);
    }
}

/// Rewrites the command line that starts at byte `at` of `body` (to the end of the line).
fn rewrite_tail(ed: &mut LineEditor, n: usize, raw: &str, body: &str, at: usize, ctx: &Context) {
    let (Some(head), Some(tail)) = (body.get(..at), body.get(at..)) else {
        ed.keep(raw);
        return;
    };
    let r = cmdline::rewrite(tail, ctx);
    push_warnings(ed, n, r.warnings.clone());
    if r.changed() {
        ed.replace(n, raw, &format!("{head}{}", r.line), r.reason());
    } else {
        ed.keep(raw);
    }
}

/// A quoted (or bare) shell-style value starting at `at`: (content range, quote char).
pub(crate) fn quoted_value(
    body: &str,
    at: usize,
) -> Option<(std::ops::Range<usize>, Option<char>)> {
    let rest = body.get(at..)?;
    match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let inner = &rest[1..];
            let mut end = None;
            let mut escaped = false;
            for (i, c) in inner.char_indices() {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    end = Some(i);
                    break;
                }
            }
            let e = end?;
            Some((at + 1..at + 1 + e, Some(q)))
        }
        _ => {
            let len = rest
                .find(|c: char| c.is_whitespace() || c == ';' || c == '#')
                .unwrap_or(rest.len());
            Some((at..at + len, None))
        }
    }
}

/// `grub.cfg`: `linux`, `linux16`, `linuxefi` command lines and `set kernelopts="..."`.
pub fn patch_cfg(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let f = fields(body);
        let word = |i: usize| f.get(i).and_then(|r| body.get(r.clone()));
        match word(0) {
            Some("linux" | "linux16" | "linuxefi") if f.len() > 2 => {
                let at = f.get(1).map_or(body.len(), |r| r.end);
                rewrite_tail(&mut ed, n, raw, body, at, ctx);
            }
            Some("set") => {
                let t = body.trim_start();
                let at = body.len() - t.len();
                let Some(after_set) = t.strip_prefix("set") else {
                    ed.keep(raw);
                    continue;
                };
                let ws = after_set.len() - after_set.trim_start().len();
                let assign = after_set.trim_start();
                let Some(v) = assign.strip_prefix("kernelopts=") else {
                    ed.keep(raw);
                    continue;
                };
                let vstart = at + 3 + ws + (assign.len() - v.len());
                match quoted_value(body, vstart) {
                    Some((r, _)) => {
                        let inner = body.get(r.clone()).unwrap_or("");
                        let new = cmdline::rewrite(inner, ctx);
                        push_warnings(&mut ed, n, new.warnings.clone());
                        if new.changed() {
                            let line =
                                format!("{}{}{}", &body[..r.start], new.line, &body[r.end..]);
                            ed.replace(n, raw, &line, new.reason());
                        } else {
                            ed.keep(raw);
                        }
                    }
                    None => ed.keep(raw),
                }
            }
            _ => ed.keep(raw),
        }
    }
    ed.finish()
}

/// Whether a `grub.cfg` only hands over to another one (the EFI stub configs Debian and
/// RHEL put on the ESP: `search ... --set=dev`, `set prefix=...`, `configfile ...`). Such a
/// file holds no command line and needs no change; the plan reports it.
pub fn is_wrapper(text: &str) -> bool {
    let mut configfile = false;
    for l in text.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        match first {
            "configfile" | "source" => configfile = true,
            "linux" | "linux16" | "linuxefi" | "menuentry" | "blscfg" => return false,
            _ => {}
        }
    }
    configfile
}

/// Keys of `/etc/default/grub` and SUSE's `/etc/sysconfig/bootloader` that hold a kernel
/// command line.
const CMDLINE_KEYS: [&str; 5] = [
    "GRUB_CMDLINE_LINUX",
    "GRUB_CMDLINE_LINUX_DEFAULT",
    "GRUB_CMDLINE_LINUX_RECOVERY",
    "DEFAULT_APPEND",
    "FAILSAFE_APPEND",
];

/// `/etc/default/grub` and its relatives: `KEY="value"` shell assignments. Command-line
/// keys go through [`cmdline::rewrite`]; `GRUB_DEVICE=` and RHEL 6's `boot=` (the disk
/// `grub-install` writes to) through the device rule; `GRUB_TERMINAL` that sends the menu
/// only to a serial port becomes `console` on physical hardware. Quoting is kept.
pub fn patch_defaults(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let t = body.trim_start();
        let lead = body.len() - t.len();
        let (t, lead) = match t.strip_prefix("export ") {
            Some(x) => {
                let x2 = x.trim_start();
                (x2, lead + (t.len() - x2.len()))
            }
            None => (t, lead),
        };
        let Some((key, _)) = t.split_once('=') else {
            ed.keep(raw);
            continue;
        };
        let vstart = lead + key.len() + 1;
        let Some((r, quote)) = quoted_value(body, vstart) else {
            ed.keep(raw);
            continue;
        };
        let inner = body.get(r.clone()).unwrap_or("");
        let rewrap = |new: &str| {
            let needs_quotes = quote.is_none() && new.contains(char::is_whitespace);
            let q = if needs_quotes { "\"" } else { "" };
            format!("{}{q}{new}{q}{}", &body[..r.start], &body[r.end..])
        };
        match key {
            "GRUB_DEVICE" | "boot" => {
                let form = if key == "boot" {
                    SpecForm::Path
                } else {
                    SpecForm::Spec
                };
                match ctx.rewrite_device(inner, form) {
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
                }
            }
            k if CMDLINE_KEYS.contains(&k) => {
                let new = cmdline::rewrite(inner, ctx);
                push_warnings(&mut ed, n, new.warnings.clone());
                if new.changed() {
                    ed.replace(n, raw, &rewrap(&new.line), new.reason());
                } else {
                    ed.keep(raw);
                }
            }
            "GRUB_TERMINAL" | "GRUB_TERMINAL_OUTPUT" | "GRUB_TERMINAL_INPUT"
                if ctx.target == Target::Physical && inner.trim() == "serial" =>
            {
                ed.replace(
                    n,
                    raw,
                    &rewrap("console"),
                    "the menu went only to a serial port; a physical machine shows it on \
                     its screen",
                );
            }
            _ => ed.keep(raw),
        }
    }
    ed.finish()
}

/// A BLS entry (`/boot/loader/entries/*.conf`): its `options` line.
pub fn patch_bls(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let f = fields(body);
        let is_options = f
            .first()
            .and_then(|r| body.get(r.clone()))
            .is_some_and(|w| w == "options");
        match (is_options, f.first()) {
            (true, Some(r)) => rewrite_tail(&mut ed, n, raw, body, r.end, ctx),
            _ => ed.keep(raw),
        }
    }
    ed.finish()
}

const GRUBENV_HEADER: &str = "# GRUB Environment Block\n";

/// `grubenv`: `kernelopts=` through [`cmdline::rewrite`]. The block keeps its exact size
/// (GRUB reads a fixed block, 1024 bytes as `grub-editenv` writes it): the `#` padding
/// shrinks or grows; if the new line does not fit, nothing changes and a warning says so.
pub fn patch_grubenv(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut warnings = Vec::new();
    let Some(body_end) = text.rfind('\n').map(|i| i + 1) else {
        return Patched::unchanged();
    };
    if !text.starts_with(GRUBENV_HEADER) || !text[body_end..].bytes().all(|b| b == b'#') {
        if text.contains("kernelopts=") {
            warnings.push(Warning::new(
                Some(file),
                None,
                "not a GRUB environment block as grub-editenv writes it; left alone",
            ));
        }
        return Patched {
            warnings,
            ..Patched::unchanged()
        };
    }
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(&text[..body_end]) {
        let body = split_ending(raw).0;
        match body.strip_prefix("kernelopts=") {
            Some(v) => {
                let r = cmdline::rewrite(v, ctx);
                push_warnings(&mut ed, n, r.warnings.clone());
                if r.changed() {
                    ed.replace(n, raw, &format!("kernelopts={}", r.line), r.reason());
                } else {
                    ed.keep(raw);
                }
            }
            None => ed.keep(raw),
        }
    }
    let mut p = ed.finish();
    let Some(new_body) = p.text.take() else {
        return p;
    };
    let Some(pad) = text.len().checked_sub(new_body.len()) else {
        p.warnings.push(Warning::new(
            Some(file),
            None,
            format!(
                "the rewritten kernelopts do not fit in the {}-byte environment block; left \
                 alone: run `grub2-editenv - set kernelopts=...` on the target",
                text.len()
            ),
        ));
        p.edits.clear();
        return p;
    };
    let mut out = new_body;
    out.extend(std::iter::repeat_n('#', pad));
    p.text = Some(out);
    p
}

/// A grubenv value as `grub-editenv` stores it: `\` and newline escaped by a `\`.
fn grubenv_unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut esc = false;
    for c in v.chars() {
        if esc || c != '\\' {
            out.push(c);
            esc = false;
        } else {
            esc = true;
        }
    }
    out
}

fn grubenv_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '\\' || c == '\n' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Why a menu entry cannot boot the target, or None when it can (or cannot be told).
fn entry_unusable(e: &BootEntry, usable: &[String]) -> Option<String> {
    if e.xen_hypervisor {
        return Some("starts the Xen hypervisor".into());
    }
    let k = e.kernel.as_deref()?;
    if super::grub_legacy::is_xen_kernel(k) {
        return Some(format!("boots {k}, a Xen PV kernel"));
    }
    match e.kernel_version() {
        Some(v) if !usable.is_empty() && !usable.contains(&v) => Some(format!(
            "boots kernel {v}, which lacks the target's drivers"
        )),
        _ => None,
    }
}

fn entry_usable(e: &BootEntry, usable: &[String]) -> bool {
    let Some(k) = e.kernel.as_deref() else {
        return false;
    };
    !e.xen_hypervisor
        && !super::grub_legacy::is_xen_kernel(k)
        && e.kernel_version().is_some_and(|v| usable.contains(&v))
}

/// `grubenv`'s `saved_entry` (and a pending one-time `next_entry`), when GRUB boots the
/// saved entry (`GRUB_DEFAULT=saved`, `set default="${saved_entry}"`; the caller tells):
/// an entry that starts the Xen hypervisor, boots a Xen PV kernel or a kernel inspection
/// did not find usable on the target is replaced by the first menu entry that can boot
/// there, named as the old value was (an id for a top-level entry named by id, else the
/// title path `Submenu>Entry` GRUB resolves). `entries` are the menu's, as
/// [`parse_grub2`](crate::inspect::bootloader::parse_grub2) and the BLS reader give them.
/// The block keeps its size, as [`patch_grubenv`] keeps it.
pub fn patch_saved_entry(
    file: &str,
    text: &str,
    ctx: &Context,
    entries: &[BootEntry],
    usable_kernels: &[String],
) -> Patched {
    let Some(body_end) = text.rfind('\n').map(|i| i + 1) else {
        return Patched::unchanged();
    };
    let (Some(body), Some(padding)) = (text.get(..body_end), text.get(body_end..)) else {
        return Patched::unchanged();
    };
    if !text.starts_with(GRUBENV_HEADER) || !padding.bytes().all(|b| b == b'#') {
        return Patched::unchanged();
    }
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(body) {
        let body = split_ending(raw).0;
        let Some((key, value)) = body.split_once('=') else {
            ed.keep(raw);
            continue;
        };
        if !matches!(key, "saved_entry" | "next_entry") || value.is_empty() {
            ed.keep(raw);
            continue;
        }
        let old = grubenv_unescape(value);
        let Some(cur) = resolve_default(entries, &old).and_then(|i| entries.get(i)) else {
            ed.keep(raw);
            continue;
        };
        let Some(why) = entry_unusable(cur, usable_kernels) else {
            ed.keep(raw);
            continue;
        };
        let Some(ok) = entries.iter().find(|e| entry_usable(e, usable_kernels)) else {
            ed.keep(raw);
            ed.warn(
                Some(n),
                format!(
                    "{key} '{old}' {why}, and no menu entry boots a kernel known to run on                      {}; left as is",
                    ctx.target.name()
                ),
            );
            continue;
        };
        let by_id = cur.id.as_deref() == Some(old.as_str());
        let new = match (&ok.id, by_id && !ok.title.contains('>')) {
            (Some(id), true) => id.clone(),
            _ => ok.title.clone(),
        };
        let line = format!("{key}={}", grubenv_escape(&new));
        ed.replace(
            n,
            raw,
            &line,
            format!(
                "{key} '{old}' {why}, which cannot boot on {}; GRUB boots the saved entry, so \
                 it becomes '{new}' ({}), which can",
                ctx.target.name(),
                ok.kernel.as_deref().unwrap_or("?")
            ),
        );
    }
    let mut p = ed.finish();
    let Some(new_body) = p.text.take() else {
        return p;
    };
    let Some(pad) = text.len().checked_sub(new_body.len()) else {
        p.warnings.push(Warning::new(
            Some(file),
            None,
            format!(
                "the new saved_entry does not fit in the {}-byte environment block; left \
                 alone: run `grub-set-default` on the target",
                text.len()
            ),
        ));
        p.edits.clear();
        return p;
    };
    let mut out = new_body;
    out.extend(std::iter::repeat_n('#', pad));
    p.text = Some(out);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;

    const DEBIAN_CFG: &str = "\
insmod part_msdos
insmod ext2
set root='hd0,msdos1'
if [ x$feature_platform_search_hint = xy ]; then
  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,msdos1  0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f
else
  search --no-floppy --fs-uuid --set=root 0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f
fi
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-9e8d' {
\tload_video
\tinsmod gzio
\techo\t'Loading Linux 4.19.0-21-amd64 ...'
\tlinux\t/vmlinuz-4.19.0-21-amd64 root=/dev/sda3 ro  quiet console=hvc0
\techo\t'Loading initial ramdisk ...'
\tinitrd\t/initrd.img-4.19.0-21-amd64
}
";

    #[test]
    fn grub_cfg_linux_lines() {
        let c = ctx(Target::Kvm);
        let p = patch_cfg("/boot/grub/grub.cfg", DEBIAN_CFG, &c);
        let out = p.text.clone().unwrap();
        assert!(out.contains(
            "\tlinux\t/vmlinuz-4.19.0-21-amd64 root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 ro  quiet console=ttyS0\n"
        ));
        assert_eq!(p.edits.len(), 1);
        assert_eq!(p.edits[0].line, Some(13));
        assert!(patch_cfg("g", &out, &c).text.is_none());
    }

    #[test]
    fn rhel8_kernelopts_fallback() {
        let t = "if [ -z \"${kernelopts}\" ]; then\n  set kernelopts=\"root=/dev/sda3 ro crashkernel=auto resume=/dev/sda2 rhgb quiet \"\nfi\n";
        let p = patch_cfg("/boot/grub2/grub.cfg", t, &ctx(Target::Kvm));
        let out = p.text.unwrap();
        assert!(out.contains("  set kernelopts=\"root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 ro crashkernel=auto resume=UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d rhgb quiet \"\n"), "{out}");
    }

    #[test]
    fn wrappers() {
        let w = "search.fs_uuid 0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f root hd0,gpt2\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n";
        assert!(is_wrapper(w));
        assert!(!is_wrapper(DEBIAN_CFG));
    }

    #[test]
    fn default_grub() {
        let t = "# If you change this file, run 'update-grub' afterwards\n\
                 GRUB_DEFAULT=0\n\
                 GRUB_TIMEOUT=5\n\
                 GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n\
                 GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n\
                 GRUB_CMDLINE_LINUX=\"resume=/dev/sda2 console=hvc0 xen_emul_unplug=never\"\n\
                 GRUB_DEVICE=/dev/sda3\n\
                 GRUB_TERMINAL=serial\n\
                 export GRUB_CMDLINE_LINUX_RECOVERY='root=/dev/xvda3 single'\n";
        let c = ctx(Target::Kvm);
        let p = patch_defaults("/etc/default/grub", t, &c);
        let out = p.text.clone().unwrap();
        assert!(out.contains("GRUB_CMDLINE_LINUX=\"resume=UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d console=ttyS0\"\n"), "{out}");
        assert!(out.contains("GRUB_DEVICE=UUID=9e8d7c6b-5a49-4838-a726-151413121110\n"));
        assert!(out.contains("export GRUB_CMDLINE_LINUX_RECOVERY='root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 single'\n"));
        assert!(out.contains("GRUB_TERMINAL=serial\n"));
        assert!(out.contains("`lsb_release -i -s 2> /dev/null || echo Debian`"));
        assert_eq!(p.edits.len(), 3);
        assert!(patch_defaults("d", &out, &c).text.is_none());
        let p = patch_defaults("d", t, &ctx(Target::Physical));
        assert!(p.text.unwrap().contains("GRUB_TERMINAL=console\n"));
    }

    #[test]
    fn rhel6_sysconfig_grub_and_suse_bootloader() {
        let c = ctx(Target::Kvm);
        let p = patch_defaults("/etc/sysconfig/grub", "boot=/dev/sda\nforcelba=0\n", &c);
        assert_eq!(p.text.as_deref(), Some("boot=/dev/vda\nforcelba=0\n"));
        let t = "LOADER_TYPE=\"grub\"\nDEFAULT_APPEND=\"resume=/dev/xvda2 splash=silent showopts\"\nXEN_KERNEL_APPEND=\"console=xvc0\"\n";
        let p = patch_defaults("/etc/sysconfig/bootloader", t, &c);
        let out = p.text.unwrap();
        assert!(out.contains("DEFAULT_APPEND=\"resume=UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d splash=silent showopts\""));
        assert!(out.contains("XEN_KERNEL_APPEND=\"console=xvc0\""));
    }

    #[test]
    fn bls_entry() {
        let t = "title Red Hat Enterprise Linux (4.18.0-513.el8.x86_64) 8.9 (Ootpa)\n\
                 version 4.18.0-513.el8.x86_64\n\
                 linux /vmlinuz-4.18.0-513.el8.x86_64\n\
                 initrd /initramfs-4.18.0-513.el8.x86_64.img $tuned_initrd\n\
                 options root=/dev/sda3 ro resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/swap console=hvc0\n\
                 id rhel-20231012-4.18.0-513.el8.x86_64\n\
                 grub_users $grub_users\n";
        let c = ctx(Target::Kvm);
        let p = patch_bls("/boot/loader/entries/x.conf", t, &c);
        let out = p.text.unwrap();
        assert!(out.contains("options root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 ro resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/swap console=ttyS0\n"));
        assert!(patch_bls("b", "options $kernelopts\n", &c).text.is_none());
    }

    fn grubenv(vars: &str) -> String {
        let mut s = format!("{GRUBENV_HEADER}{vars}");
        let pad = 1024 - s.len();
        s.extend(std::iter::repeat_n('#', pad));
        s
    }

    /// Debian 7 dom0-style menu: the Xen entries that 20_linux_xen writes, then the plain
    /// kernel in a submenu; GRUB_DEFAULT=saved left the Xen one saved.
    const XEN_CFG: &str = "\
set default=\"${saved_entry}\"
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-9e8d' {
\tlinux\t/boot/vmlinuz-3.2.0-4-xen root=/dev/xvda3 ro console=hvc0
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-9e8d' {
\tmenuentry 'Debian GNU/Linux, with Linux 3.2.0-4-amd64' $menuentry_id_option 'gnulinux-3.2.0-4-amd64-advanced-9e8d' {
\t\tlinux\t/boot/vmlinuz-3.2.0-4-amd64 root=/dev/xvda3 ro
\t}
}
menuentry 'Debian GNU/Linux, with Xen 4.1-amd64 and Linux 3.2.0-4-amd64' --class xen $menuentry_id_option 'xen-gnulinux-simple-9e8d' {
\tmultiboot\t/boot/xen-4.1-amd64.gz placeholder dom0_mem=512M
\tmodule\t/boot/vmlinuz-3.2.0-4-amd64 placeholder root=/dev/xvda3 ro
}
";

    #[test]
    fn saved_entry_leaves_xen() {
        let entries = crate::inspect::bootloader::parse_grub2("/boot/grub/grub.cfg", XEN_CFG);
        assert_eq!(entries.len(), 3);
        assert!(entries[2].xen_hypervisor, "{entries:?}");
        let c = ctx(Target::Kvm);
        let usable = vec!["3.2.0-4-amd64".to_string()];
        let t =
            grubenv("saved_entry=Debian GNU/Linux, with Xen 4.1-amd64 and Linux 3.2.0-4-amd64\n");
        let p = patch_saved_entry("/boot/grub/grubenv", &t, &c, &entries, &usable);
        let out = p.text.unwrap();
        assert_eq!(out.len(), 1024);
        assert!(out.starts_with("# GRUB Environment Block\nsaved_entry=Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 3.2.0-4-amd64\n#"), "{out}");
        assert!(
            p.edits[0].reason.contains("Xen hypervisor"),
            "{:?}",
            p.edits
        );
        assert!(patch_saved_entry("e", &out, &c, &entries, &usable)
            .text
            .is_none());
        // By id, and a Xen PV kernel.
        let t = grubenv("saved_entry=gnulinux-simple-9e8d\nnext_entry=\n");
        let p = patch_saved_entry("e", &t, &c, &entries, &usable);
        assert!(p.text.unwrap().contains("\nsaved_entry=Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 3.2.0-4-amd64\nnext_entry=\n#"));
        assert!(p.edits[0].reason.contains("Xen PV kernel"));
        // No usable kernel: warned and kept; an unknown entry: kept.
        let p = patch_saved_entry("e", &t, &c, &entries, &[]);
        assert!(p.text.is_none());
        assert_eq!(p.warnings.len(), 1);
        let t = grubenv("saved_entry=gone\n");
        assert_eq!(
            patch_saved_entry("e", &t, &c, &entries, &usable),
            Patched::unchanged()
        );
        // Does not fit: left with a warning.
        let t = grubenv(&format!("saved_entry=0\n{}\n", "x".repeat(1024 - 40)));
        let p = patch_saved_entry("e", &t, &c, &entries, &usable);
        assert!(p.text.is_none() && p.edits.is_empty() && p.warnings.len() == 1);
    }

    #[test]
    fn saved_entry_bls_id() {
        let mk = |id: &str, k: &str| BootEntry {
            title: format!("RHEL ({k})"),
            kernel: Some(format!("/vmlinuz-{k}")),
            initrd: vec![],
            cmdline: None,
            xen_hypervisor: false,
            file: format!("/boot/loader/entries/{id}.conf"),
            line: None,
            id: Some(id.to_string()),
        };
        let entries = vec![
            mk("abc-5.14.0-1.el9", "5.14.0-1.el9"),
            mk("abc-5.14.0-2.el9", "5.14.0-2.el9"),
        ];
        let t = grubenv("saved_entry=abc-5.14.0-1.el9\\\\x\nboot_success=1\n");
        let c = ctx(Target::Kvm);
        let usable = vec!["5.14.0-2.el9".to_string()];
        assert!(patch_saved_entry("e", &t, &c, &entries, &usable)
            .text
            .is_none());
        let t = grubenv("saved_entry=abc-5.14.0-1.el9\n");
        let out = patch_saved_entry("e", &t, &c, &entries, &usable)
            .text
            .unwrap();
        assert!(out.contains("\nsaved_entry=abc-5.14.0-2.el9\n#"));
        assert_eq!(grubenv_unescape("a\\\\b\\c"), "a\\bc");
        assert_eq!(grubenv_escape("a\\b"), "a\\\\b");
    }

    #[test]
    fn grubenv_keeps_1024_bytes() {
        let t = grubenv("saved_entry=ffd8-4.18.0-513.el8.x86_64\nkernelopts=root=/dev/sda3 ro console=hvc0 \nboot_success=0\n");
        let c = ctx(Target::Kvm);
        let p = patch_grubenv("/boot/grub2/grubenv", &t, &c);
        let out = p.text.unwrap();
        assert_eq!(out.len(), 1024);
        assert!(out.contains("\nkernelopts=root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 ro console=ttyS0 \nboot_success=0\n#"));
        assert_eq!(p.edits.len(), 1);
        assert!(patch_grubenv("e", &out, &c).text.is_none());
        // No room: left alone with a warning.
        let long = format!(
            "kernelopts=root=/dev/sda3 {}\n",
            "x".repeat(1024 - 28 - GRUBENV_HEADER.len())
        );
        let t = grubenv(&long);
        let p = patch_grubenv("e", &t, &c);
        assert!(p.text.is_none());
        assert!(p.edits.is_empty());
        assert_eq!(p.warnings.len(), 1);
    }
}
