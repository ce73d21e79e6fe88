//! One kernel command line, rewritten for the target. Every bootloader patcher (GRUB 2
//! `linux` lines, `/etc/default/grub`, BLS `options`, `grubenv`'s `kernelopts`, GRUB legacy
//! `kernel` lines) and the initramfs's stored command lines go through [`rewrite`], so a
//! guest's boot options change by one rule wherever they are written.
//!
//! What changes: `root=` and `resume=` (through [`Context::rewrite_device`]); the Xen PV
//! consoles `hvc0`/`xvc0` become the target's serial port, or on physical hardware all
//! serial and hypervisor consoles go and the screen (`tty0`) stays; options only Xen
//! understands go. Everything else — `rd.lvm.lv=`, `rd.md.uuid=`, `rd.luks.uuid=`, `ro`,
//! `quiet`, variables such as `$kernelopts` — is kept as written, spacing included.

use crate::context::{Context, SpecForm, Target};
use crate::devname;

/// One option changed or dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub before: String,
    /// "" when the option is dropped.
    pub after: String,
    pub reason: String,
}

/// The rewritten line and what changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrite {
    pub line: String,
    pub changes: Vec<Change>,
    /// Options that name old hardware and were left alone (a name matching no disk, a
    /// by-id name, an unknown option holding a device path).
    pub warnings: Vec<String>,
}

impl Rewrite {
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }

    /// All changes in one sentence, for an [`Edit`](crate::Edit)'s reason.
    pub fn reason(&self) -> String {
        self.changes
            .iter()
            .map(|c| {
                if c.after.is_empty() {
                    format!("{} dropped: {}", c.before, c.reason)
                } else {
                    format!("{} -> {}: {}", c.before, c.after, c.reason)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// An option and the whitespace before it.
struct Token<'a> {
    lead: &'a str,
    text: &'a str,
}

/// Splits like the kernel does: on whitespace outside double quotes (`opt="a b"` is one
/// option). Returns the options and the whitespace after the last one.
fn tokenize(line: &str) -> (Vec<Token<'_>>, &str) {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        let lead_len = rest.len() - rest.trim_start().len();
        let (lead, after) = rest.split_at(lead_len);
        if after.is_empty() {
            return (out, lead);
        }
        let mut quoted = false;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            if c == '"' {
                quoted = !quoted;
            } else if c.is_whitespace() && !quoted {
                end = i;
                break;
            }
        }
        let (text, next) = after.split_at(end);
        out.push(Token { lead, text });
        rest = next;
    }
}

/// The console device of a `console=` option (`ttyS0` of `ttyS0,115200n8`).
fn console_device(text: &str) -> Option<&str> {
    let v = text.strip_prefix("console=")?;
    let v = v.strip_prefix("/dev/").unwrap_or(v);
    Some(v.split(',').next().unwrap_or(v))
}

fn is_hypervisor_console(dev: &str) -> bool {
    dev.starts_with("hvc") || dev.starts_with("xvc")
}

fn is_serial_console(dev: &str) -> bool {
    dev.starts_with("ttyS") || is_hypervisor_console(dev)
}

fn is_screen_console(dev: &str) -> bool {
    dev.strip_prefix("tty")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Options that only a Xen guest understands.
fn xen_only(text: &str) -> bool {
    let key = text.split('=').next().unwrap_or(text);
    key.starts_with("xen") || text == "clocksource=xen" || text == "earlyprintk=xen"
}

/// What a device-valued option (`root=`, `resume=`) becomes.
fn device_option(
    key: &str,
    value: &str,
    ctx: &Context,
) -> Result<Option<(String, String)>, String> {
    let unquoted = value.trim_matches('"');
    match ctx.rewrite_device(unquoted, SpecForm::Spec) {
        Ok(Some(r)) if super::splits_field(&r.new) => Err(super::unwritable(value, &r.new)),
        Ok(Some(r)) => Ok(Some((format!("{key}={}", r.new), r.reason))),
        Ok(None) => Ok(None),
        Err(m) => Err(format!("{key}={value}: {m}")),
    }
}

/// Rewrites the kernel command line `line` for `ctx.target`.
pub fn rewrite(line: &str, ctx: &Context) -> Rewrite {
    let (tokens, tail) = tokenize(line);
    let serial = ctx.target.serial_console();
    let physical = ctx.target == Target::Physical;
    let mut new: Vec<Option<String>> = Vec::with_capacity(tokens.len());
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    // Whether the target's serial console is already on the line (so a second one is not
    // added), and whether a screen console remains (physical).
    let mut have_serial = tokens
        .iter()
        .any(|t| console_device(t.text).is_some_and(|d| Some(d) == serial));
    let have_screen = tokens
        .iter()
        .any(|t| console_device(t.text).is_some_and(is_screen_console));
    let mut last_dropped_console: Option<usize> = None;

    for t in &tokens {
        let text = t.text;
        let (key, value) = text.split_once('=').unwrap_or((text, ""));
        if matches!(key, "root" | "resume" | "real_root" | "real_resume") && !value.is_empty() {
            match device_option(key, value, ctx) {
                Ok(Some((after, reason))) => {
                    changes.push(Change {
                        before: text.to_string(),
                        after: after.clone(),
                        reason,
                    });
                    new.push(Some(after));
                }
                Ok(None) => new.push(Some(text.to_string())),
                Err(w) => {
                    warnings.push(w);
                    new.push(Some(text.to_string()));
                }
            }
            continue;
        }
        if let Some(dev) = console_device(text) {
            if physical && is_serial_console(dev) {
                changes.push(Change {
                    before: text.to_string(),
                    after: String::new(),
                    reason: format!(
                        "a physical machine's console is its screen; {dev} is a serial or \
                         hypervisor console"
                    ),
                });
                last_dropped_console = Some(new.len());
                new.push(None);
                continue;
            }
            if let (Some(s), true) = (serial, is_hypervisor_console(dev)) {
                if have_serial {
                    changes.push(Change {
                        before: text.to_string(),
                        after: String::new(),
                        reason: format!(
                            "{dev} is the Xen PV console, which {} lacks; console={s} is \
                             already set",
                            ctx.target.name()
                        ),
                    });
                    new.push(None);
                } else {
                    let opts = text
                        .split_once(',')
                        .map(|(_, o)| format!(",{o}"))
                        .unwrap_or_default();
                    let after = format!("console={s}{opts}");
                    changes.push(Change {
                        before: text.to_string(),
                        after: after.clone(),
                        reason: format!(
                            "{dev} is the Xen PV console; on {} the serial console is {s}",
                            ctx.target.name()
                        ),
                    });
                    have_serial = true;
                    new.push(Some(after));
                }
                continue;
            }
            new.push(Some(text.to_string()));
            continue;
        }
        if xen_only(text) {
            changes.push(Change {
                before: text.to_string(),
                after: String::new(),
                reason: "an option only a Xen guest kernel understands".into(),
            });
            new.push(None);
            continue;
        }
        if !devname::find_hardware_refs(text).is_empty() {
            warnings.push(format!(
                "{text} names old hardware; it is not an option transplant rewrites, so it \
                 is left as is: check it on the target"
            ));
        }
        new.push(Some(text.to_string()));
    }

    // Physical: the last dropped console becomes the screen when no screen console is left,
    // so /dev/console still goes somewhere the administrator looks.
    if let (false, Some(i)) = (have_screen, last_dropped_console) {
        if let Some(slot) = new.get_mut(i) {
            *slot = Some("console=tty0".into());
            if let Some(c) = changes
                .iter_mut()
                .rev()
                .find(|c| c.after.is_empty() && c.before.starts_with("console="))
            {
                c.after = "console=tty0".into();
            }
        }
    }

    let mut out = String::with_capacity(line.len());
    let mut pending_lead: Option<&str> = None;
    let mut emitted = false;
    for (t, n) in tokens.iter().zip(&new) {
        match n {
            Some(n) => {
                let lead = if emitted {
                    t.lead
                } else {
                    pending_lead.take().unwrap_or(t.lead)
                };
                out.push_str(lead);
                out.push_str(n);
                emitted = true;
            }
            None => {
                if !emitted && pending_lead.is_none() {
                    pending_lead = Some(t.lead);
                }
            }
        }
    }
    if !emitted {
        if let Some(l) = pending_lead {
            out.push_str(l);
        }
    }
    out.push_str(tail);
    Rewrite {
        line: if changes.is_empty() {
            line.to_string()
        } else {
            out
        },
        changes,
        warnings,
    }
}

/// A file of command lines: `/etc/kernel/cmdline` (what `kernel-install` gives new kernels
/// on RHEL 9, Fedora and systemd-boot guests) and dracut's `etc/cmdline.d/*.conf` inside an
/// initramfs. Every line that is not a comment is a command line.
pub fn patch_file(file: &str, text: &str, ctx: &Context) -> crate::Patched {
    use crate::edit::{lines_with_endings, split_ending, LineEditor};
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        if super::is_comment_or_blank(body) {
            ed.keep(raw);
            continue;
        }
        let r = rewrite(body, ctx);
        for w in &r.warnings {
            ed.warn(Some(n), w.clone());
        }
        if r.changed() {
            ed.replace(n, raw, &r.line, r.reason());
        } else {
            ed.keep(raw);
        }
    }
    ed.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::context::{DeviceNaming, GuestVolume};

    /// A guest with one disk: sda1 /boot (ext4), sda2 swap, sda3 root, sda4 without
    /// identity; and an LV.
    pub(crate) fn ctx(target: Target) -> Context {
        let mut c = Context::new(target);
        let vol = |p: Option<u32>, kind: &str, uuid: Option<&str>| GuestVolume {
            disk: Some(0),
            partition: p,
            fs_kind: (!kind.is_empty()).then(|| kind.to_string()),
            uuid: uuid.map(str::to_string),
            ..Default::default()
        };
        c.volumes = vec![
            vol(None, "", None),
            vol(
                Some(1),
                "ext4",
                Some("0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f"),
            ),
            vol(
                Some(2),
                "swap",
                Some("5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d"),
            ),
            vol(
                Some(3),
                "ext4",
                Some("9e8d7c6b-5a49-4838-a726-151413121110"),
            ),
            vol(Some(4), "", None),
        ];
        c
    }

    pub(crate) fn renaming(target: Target) -> Context {
        let mut c = ctx(target);
        c.naming = DeviceNaming::Rename;
        c
    }

    #[test]
    fn root_resume_and_xen_console_on_kvm() {
        let c = ctx(Target::Kvm);
        let r = rewrite(
            "ro root=/dev/xvda3 resume=/dev/xvda2 console=xvc0 xencons=tty rhgb quiet",
            &c,
        );
        assert_eq!(
            r.line,
            "ro root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 \
             resume=UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d console=ttyS0 rhgb quiet"
        );
        assert_eq!(r.changes.len(), 4);
        assert!(r.reason().contains("xencons=tty dropped"));
        assert_eq!(rewrite(&r.line, &c).changes, vec![]);
    }

    #[test]
    fn keeps_lvm_md_and_spacing() {
        let c = ctx(Target::Kvm);
        let l = "root=/dev/mapper/rhel-root ro crashkernel=auto rd.lvm.lv=rhel/root \
                 rd.md.uuid=3f0e:1c2b rd.lvm.lv=rhel/swap  rhgb quiet ";
        let r = rewrite(l, &c);
        assert!(!r.changed());
        assert_eq!(r.line, l);
        let r = rewrite("  root=/dev/sda3\tquiet  ", &renaming(Target::Kvm));
        assert_eq!(r.line, "  root=/dev/vda3\tquiet  ");
    }

    #[test]
    fn hvc_with_serial_already_set_is_dropped() {
        let c = ctx(Target::KvmScsi);
        let r = rewrite(
            "console=hvc0 console=ttyS0,115200n8 xen_emul_unplug=never",
            &c,
        );
        assert_eq!(r.line, "console=ttyS0,115200n8");
        let r = rewrite("console=hvc0 console=xvc0", &c);
        assert_eq!(r.line, "console=ttyS0");
        let r = rewrite("clocksource=xen console=tty0 console=hvc0", &c);
        assert_eq!(r.line, "console=tty0 console=ttyS0");
    }

    #[test]
    fn physical_drops_serial_and_keeps_screen() {
        let c = ctx(Target::Physical);
        let r = rewrite("root=/dev/sda3 console=tty0 console=ttyS0,115200n8", &c);
        assert_eq!(
            r.line,
            "root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 console=tty0"
        );
        let r = rewrite("console=hvc0 quiet", &c);
        assert_eq!(r.line, "console=tty0 quiet");
        assert!(r.reason().contains("console=hvc0 -> console=tty0"));
        let r = rewrite("console=ttyS0 console=hvc0 quiet", &c);
        assert_eq!(r.line, "console=tty0 quiet");
        assert_eq!(rewrite(&r.line, &c).changes, vec![]);
        assert!(!rewrite("quiet splash", &c).changed());
    }

    #[test]
    fn warns_and_keeps_what_it_cannot_place() {
        let c = ctx(Target::Kvm);
        let r = rewrite(
            "root=/dev/disk/by-id/ata-VMware_Virtual_S_01000000000000000001-part9 \
             resume=/dev/sdb1 md=0,/dev/sda1,/dev/sdb1",
            &c,
        );
        assert!(!r.changed());
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
    }

    #[test]
    fn cmdline_files() {
        let c = ctx(Target::Kvm);
        let p = patch_file(
            "/etc/kernel/cmdline",
            "root=/dev/sda3 ro console=hvc0 rhgb quiet\n",
            &c,
        );
        assert_eq!(
            p.text.as_deref(),
            Some("root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 ro console=ttyS0 rhgb quiet\n")
        );
        assert_eq!(p.edits.len(), 1);
        let p = patch_file(
            "etc/cmdline.d/90lvm.conf",
            "# lvm\n rd.lvm.lv=vg/root \n",
            &c,
        );
        assert!(p.text.is_none());
    }

    #[test]
    fn quoted_options_and_leading_drops() {
        let c = ctx(Target::Kvm);
        let r = rewrite("xencons=xvc  foo=\"a b\" root=/dev/xvda3", &c);
        assert_eq!(
            r.line,
            "foo=\"a b\" root=UUID=9e8d7c6b-5a49-4838-a726-151413121110"
        );
        let r = rewrite(" xencons=xvc ", &c);
        assert_eq!(r.line, "  ");
        assert!(!rewrite("", &c).changed());
        assert!(!rewrite("$kernelopts", &c).changed());
    }
}
