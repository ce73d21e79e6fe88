//! Login consoles. A Xen PV guest runs its getty on the hypervisor console (`hvc0`,
//! `xvc0`), which neither KVM nor a physical machine has. In `/etc/inittab` that getty
//! moves to the target's serial port (KVM) or is disabled (physical); `/etc/securetty`
//! gains the serial port so root may log in there; systemd's enabled
//! `serial-getty@hvc0.service` links are removed (systemd starts a getty on the `console=`
//! of the kernel command line by itself).

use super::disabled;
use super::fields::fields;
use super::is_comment_or_blank;
use crate::context::Context;
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};
use crate::guest_files::GuestFiles;

fn hypervisor_tty(word: &str) -> Option<(&str, &str)> {
    let (prefix, dev) = match word.strip_prefix("/dev/") {
        Some(d) => ("/dev/", d),
        None => ("", word),
    };
    let digits = dev
        .strip_prefix("hvc")
        .or_else(|| dev.strip_prefix("xvc"))?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some((prefix, dev))
}

fn names_tty(body: &str, tty: &str) -> bool {
    let process = body.splitn(4, ':').nth(3).unwrap_or("");
    process
        .split_whitespace()
        .any(|w| w.strip_prefix("/dev/").unwrap_or(w) == tty)
}

/// `/etc/inittab` (`id:runlevels:action:process`).
pub fn patch_inittab(file: &str, text: &str, ctx: &Context) -> Patched {
    let serial = ctx.target.serial_console();
    let mut have_serial = serial.is_some_and(|s| {
        text.lines()
            .any(|l| !is_comment_or_blank(l) && names_tty(l, s))
    });
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        if is_comment_or_blank(body) {
            ed.keep(raw);
            continue;
        }
        let Some(pstart) = body.match_indices(':').nth(2).map(|(i, _)| i + 1) else {
            ed.keep(raw);
            continue;
        };
        let process = &body[pstart..];
        let hits: Vec<(std::ops::Range<usize>, String, String)> = fields(process)
            .into_iter()
            .filter_map(|r| {
                let w = process.get(r.clone())?;
                hypervisor_tty(w).map(|(p, d)| (r, p.to_string(), d.to_string()))
            })
            .collect();
        let Some(dev) = hits.first().map(|h| h.2.clone()) else {
            ed.keep(raw);
            continue;
        };
        match serial {
            Some(s) if !have_serial => {
                // Every mention on the line (`agetty xvc0 ... xvc0`), so none is left for
                // a second pass to find.
                let mut new = body[..pstart].to_string();
                let mut pos = 0;
                for (r, prefix, _) in &hits {
                    new.push_str(process.get(pos..r.start).unwrap_or(""));
                    new.push_str(prefix);
                    new.push_str(s);
                    pos = r.end;
                }
                new.push_str(process.get(pos..).unwrap_or(""));
                have_serial = true;
                ed.replace(
                    n,
                    raw,
                    &new,
                    format!(
                        "{dev} is the Xen PV console; on {} the serial console is {s}",
                        ctx.target.name()
                    ),
                );
            }
            Some(s) => ed.replace(
                n,
                raw,
                &disabled(body),
                format!("{dev} is the Xen PV console; a getty on {s} is already configured"),
            ),
            None => ed.replace(
                n,
                raw,
                &disabled(body),
                format!(
                    "{dev} is the Xen PV console; a physical machine has none, its logins are \
                     on the screen's ttys"
                ),
            ),
        }
    }
    ed.finish()
}

/// `/etc/securetty`: the target's serial console is added when missing.
pub fn patch_securetty(file: &str, text: &str, ctx: &Context) -> Patched {
    let Some(s) = ctx.target.serial_console() else {
        return Patched::unchanged();
    };
    if text
        .lines()
        .any(|l| l.trim() == s || l.trim() == format!("/dev/{s}"))
    {
        return Patched::unchanged();
    }
    let mut ed = LineEditor::new(file);
    let mut last = 0;
    for (n, raw) in lines_with_endings(text) {
        ed.keep(raw);
        last = n;
    }
    ed.insert(
        last,
        s,
        format!("root may log in on the target's serial console {s}"),
    );
    ed.finish()
}

/// Enabled systemd getty units on a hypervisor console: (link path, reason).
pub fn stale_getty_links(guest: &dyn GuestFiles, wants_dirs: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in wants_dirs {
        for name in guest.list(dir) {
            let Some(tty) = name
                .strip_prefix("serial-getty@")
                .or_else(|| name.strip_prefix("getty@"))
                .and_then(|r| r.strip_suffix(".service"))
            else {
                continue;
            };
            if hypervisor_tty(tty).is_none() {
                continue;
            }
            let path = format!("{dir}/{name}");
            if guest.read_link(&path).is_some() {
                out.push((
                    path,
                    format!(
                        "a getty on {tty}, the Xen PV console, which the target lacks; systemd \
                         starts one on the kernel's console= by itself"
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;
    use crate::{MemGuest, Target};

    const INITTAB: &str = "\
id:3:initdefault:
si::sysinit:/etc/rc.d/rc.sysinit
1:2345:respawn:/sbin/mingetty tty1
2:2345:respawn:/sbin/mingetty tty2
co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav
";

    #[test]
    fn inittab() {
        let c = ctx(Target::Kvm);
        let p = patch_inittab("/etc/inittab", INITTAB, &c);
        let out = p.text.clone().unwrap();
        assert!(out.ends_with("co:2345:respawn:/sbin/agetty ttyS0 9600 vt100-nav\n"));
        assert!(patch_inittab("i", &out, &c).text.is_none());
        let p = patch_inittab("i", INITTAB, &ctx(Target::Physical));
        assert!(p.text.unwrap().ends_with(
            "# disabled by transplant: co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n"
        ));
        let both = format!("{INITTAB}S0:2345:respawn:/sbin/agetty -L 115200 ttyS0 vt102\n");
        let p = patch_inittab("i", &both, &c);
        assert!(p.text.unwrap().contains("# disabled by transplant: co:"));
        // Found by fuzzing: two mentions on one line, both rewritten at once.
        let twice = "co:2345:respawn:/sbin/agetty xvc0 9600 -- xvc0\n";
        let p = patch_inittab("i", twice, &c);
        let out = p.text.unwrap();
        assert_eq!(out, "co:2345:respawn:/sbin/agetty ttyS0 9600 -- ttyS0\n");
        assert!(patch_inittab("i", &out, &c).text.is_none());
        let hvc = "h0:2345:respawn:/sbin/agetty -L 38400 /dev/hvc0\n";
        let p = patch_inittab("i", hvc, &c);
        assert_eq!(
            p.text.as_deref(),
            Some("h0:2345:respawn:/sbin/agetty -L 38400 /dev/ttyS0\n")
        );
    }

    #[test]
    fn securetty() {
        let c = ctx(Target::Kvm);
        let p = patch_securetty("/etc/securetty", "console\nvc/1\ntty1\nxvc0", &c);
        assert_eq!(
            p.text.as_deref(),
            Some("console\nvc/1\ntty1\nxvc0\nttyS0\n")
        );
        assert!(patch_securetty("s", "tty1\nttyS0\n", &c).text.is_none());
        assert!(patch_securetty("s", "tty1\n", &ctx(Target::Physical))
            .text
            .is_none());
    }

    #[test]
    fn getty_links() {
        let g = MemGuest::new()
            .link(
                "/etc/systemd/system/getty.target.wants/serial-getty@hvc0.service",
                "/lib/systemd/system/serial-getty@.service",
            )
            .link(
                "/etc/systemd/system/getty.target.wants/getty@tty1.service",
                "/lib/systemd/system/getty@.service",
            );
        let l = stale_getty_links(&g, &["/etc/systemd/system/getty.target.wants".into()]);
        assert_eq!(l.len(), 1);
        assert!(l[0].0.ends_with("serial-getty@hvc0.service"));
    }
}
