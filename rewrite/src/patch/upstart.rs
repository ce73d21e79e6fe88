//! Upstart jobs (`/etc/init/*.conf`, Ubuntu 9.10–14.10 and RHEL 6) that run a getty on a
//! Xen PV console (`hvc0.conf`, `xvc0.conf` of Xen and EC2 images). The job is named by
//! its file, so instead of making `hvc0.conf` run a getty on another port, the Xen job is
//! disabled and, on KVM, a job for the target's serial port (`ttyS0.conf`) is written from
//! it with the port changed — unless a job already runs a getty there. On physical
//! hardware the job is only disabled; the screen's gettys (`tty1.conf`, ...) stay.
//!
//! A job is disabled by commenting out its `start on` stanza (every line of it: the
//! condition may span lines while its parentheses are open). A job without `start on` is
//! never started by an event, on every Upstart version; `.override` files with `manual`
//! would need Upstart 1.3, which RHEL 6 and Ubuntu 10.04 lack. RHEL 6's
//! `/etc/init/serial.conf` starts a getty on whatever console the kernel's `console=`
//! names (`$DEV`): it names no port and needs no change, the command line's does.

use super::disabled;
use crate::context::Context;
use crate::edit::{lines_with_endings, split_ending, Edit, LineEditor, Patched};

/// A getty program (`/sbin/getty`, `agetty`, `mingetty`, `mgetty`).
fn is_getty(word: &str) -> bool {
    let b = word.rsplit('/').next().unwrap_or(word);
    b.ends_with("getty")
}

/// A Xen PV console name (`hvc0`, `/dev/xvc0`), without `/dev/`.
fn hypervisor_tty(word: &str) -> Option<&str> {
    let dev = word.strip_prefix("/dev/").unwrap_or(word);
    let digits = dev
        .strip_prefix("hvc")
        .or_else(|| dev.strip_prefix("xvc"))?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(dev)
}

fn is_comment(body: &str) -> bool {
    body.trim_start().starts_with('#')
}

/// The line indices (0-based) of the job's active `start on` stanza.
fn start_on_lines(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut depth: i64 = 0;
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        if is_comment(line) {
            continue;
        }
        if !inside {
            let mut w = line.split_whitespace();
            if w.next() == Some("start") && w.next() == Some("on") {
                inside = true;
                depth = 0;
            } else {
                continue;
            }
        }
        out.push(i);
        let code = line.split('#').next().unwrap_or("");
        depth += code.matches('(').count() as i64 - code.matches(')').count() as i64;
        if depth <= 0 {
            inside = false;
        }
    }
    out
}

/// The tty a job runs a getty on, as written (`hvc0`, `ttyS0`), when it is started by an
/// event (has an active `start on`).
pub fn getty_tty(text: &str) -> Option<String> {
    if start_on_lines(text).is_empty() {
        return None;
    }
    text.lines().filter(|l| !is_comment(l)).find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        if !words.iter().any(|w| is_getty(w)) {
            return None;
        }
        words
            .iter()
            .skip_while(|w| !is_getty(w))
            .skip(1)
            .map(|w| w.strip_prefix("/dev/").unwrap_or(w))
            .find(|w| w.starts_with("tty") || hypervisor_tty(w).is_some())
            .map(str::to_string)
    })
}

/// `text` with every Xen console name (as a whole word) replaced by `to`.
fn replace_ttys(text: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if hypervisor_tty(word).is_some() {
            out.push_str(to);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A job file to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub path: String,
    pub text: String,
    pub edit: Edit,
}

/// What happens to one job: its own change, and the job to create beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobPatch {
    pub job: Patched,
    pub new_job: Option<NewJob>,
}

/// One job file. `serial_job_exists`: some job already runs a getty on the target's
/// serial port (or its file exists), so none is written.
pub fn patch_job(file: &str, text: &str, ctx: &Context, serial_job_exists: bool) -> JobPatch {
    let Some(tty) = getty_tty(text).filter(|t| hypervisor_tty(t).is_some()) else {
        return JobPatch::default();
    };
    let serial = ctx.target.serial_console();
    let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
    let new_job = match serial {
        Some(s) if !serial_job_exists => {
            let path = format!("{dir}/{s}.conf");
            let name = file.rsplit('/').next().unwrap_or(file);
            let body = replace_ttys(text, s);
            let text = format!(
                "# Written by transplant from {name}, which ran a getty on {tty}, the Xen PV \
                 console.\n{body}"
            );
            Some(NewJob {
                edit: Edit {
                    file: path.clone(),
                    line: None,
                    before: String::new(),
                    after: format!("(new job: a getty on {s})"),
                    reason: format!(
                        "{name} ran a getty on {tty}, the Xen PV console; on {} the serial \
                         console is {s}",
                        ctx.target.name()
                    ),
                },
                path,
                text,
            })
        }
        _ => None,
    };
    let why = match (serial, &new_job) {
        (Some(s), Some(j)) => format!(
            "a getty on {tty}, the Xen PV console, which {} lacks; {} runs it on {s}",
            ctx.target.name(),
            j.path
        ),
        (Some(s), None) => format!(
            "a getty on {tty}, the Xen PV console, which {} lacks; a job already runs one \
             on {s}",
            ctx.target.name()
        ),
        (None, _) => format!(
            "a getty on {tty}, the Xen PV console; a physical machine has none, its logins \
             are on the screen's ttys"
        ),
    };
    let stanza = start_on_lines(text);
    let mut ed = LineEditor::new(file);
    for (i, (n, raw)) in lines_with_endings(text).enumerate() {
        let body = split_ending(raw).0;
        if stanza.contains(&i) {
            ed.replace(n, raw, &disabled(body), why.clone());
        } else {
            ed.keep(raw);
        }
    }
    JobPatch {
        job: ed.finish(),
        new_job,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;
    use crate::Target;

    /// Ubuntu 10.04/12.04 EC2 and Xen images.
    const HVC0: &str = "\
# hvc0 - getty
#
# This service maintains a getty on hvc0 from the point the system is
# started until it is shut down again.

start on stopped rc RUNLEVEL=[2345]
stop on runlevel [!2345]

respawn
exec /sbin/getty -8 38400 hvc0
";

    /// Ubuntu 12.04+ tty1.conf style: a start on that spans lines.
    const XVC0: &str = "\
# xvc0 - getty
start on stopped rc RUNLEVEL=[2345] and (
            not-container or
            container CONTAINER=lxc or
            container CONTAINER=lxc-libvirt)
stop on runlevel [!2345]

respawn
exec /sbin/getty -L 9600 /dev/xvc0 vt102 # Xen console
";

    #[test]
    fn kvm_writes_a_serial_job_and_disables_the_xen_one() {
        let c = ctx(Target::Kvm);
        let p = patch_job("/etc/init/hvc0.conf", HVC0, &c, false);
        let out = p.job.text.clone().unwrap();
        assert!(out
            .contains("\n# disabled by transplant: start on stopped rc RUNLEVEL=[2345]\nstop on"));
        assert!(out.ends_with("exec /sbin/getty -8 38400 hvc0\n"));
        let j = p.new_job.unwrap();
        assert_eq!(j.path, "/etc/init/ttyS0.conf");
        assert!(j.text.starts_with("# Written by transplant from hvc0.conf"));
        assert!(j.text.contains("\n# ttyS0 - getty\n"));
        assert!(j.text.contains("\nstart on stopped rc RUNLEVEL=[2345]\n"));
        assert!(j.text.ends_with("exec /sbin/getty -8 38400 ttyS0\n"));
        assert_eq!(getty_tty(&j.text).as_deref(), Some("ttyS0"));
        // Done once: the disabled job is left.
        let again = patch_job("/etc/init/hvc0.conf", &out, &c, true);
        assert_eq!(again, JobPatch::default());
    }

    #[test]
    fn multi_line_start_on_and_existing_serial_job() {
        let c = ctx(Target::Kvm);
        let p = patch_job("/etc/init/xvc0.conf", XVC0, &c, true);
        assert!(p.new_job.is_none());
        let out = p.job.text.unwrap();
        assert_eq!(
            out.matches("# disabled by transplant: ").count(),
            4,
            "{out}"
        );
        assert!(out.contains("\nstop on runlevel [!2345]\n"));
        assert!(p.job.edits[0].reason.contains("already runs one on ttyS0"));
        let p = patch_job("/etc/init/xvc0.conf", XVC0, &c, false);
        assert!(p
            .new_job
            .unwrap()
            .text
            .contains("getty -L 9600 /dev/ttyS0 vt102 # Xen console\n"));
    }

    #[test]
    fn physical_only_disables_and_others_are_left() {
        let p = patch_job("/etc/init/hvc0.conf", HVC0, &ctx(Target::Physical), false);
        assert!(p.new_job.is_none());
        assert_eq!(p.job.edits.len(), 1);
        assert!(p.job.edits[0].reason.contains("physical machine"));
        let c = ctx(Target::Kvm);
        let tty1 = HVC0.replace("hvc0", "tty1");
        assert_eq!(
            patch_job("/etc/init/tty1.conf", &tty1, &c, false),
            JobPatch::default()
        );
        // RHEL 6: the port comes from the kernel's console=.
        let serial = "start on fedora.serial-console-available DEV=* and stopped rc RUNLEVEL=[2345]\nstop on runlevel [S016]\ninstance $DEV\nrespawn\npre-start exec /sbin/securetty $DEV\nexec /sbin/agetty /dev/$DEV $SPEED vt100-nav\n";
        assert_eq!(
            patch_job("/etc/init/serial.conf", serial, &c, false),
            JobPatch::default()
        );
        assert_eq!(getty_tty(&tty1).as_deref(), Some("tty1"));
        assert_eq!(
            replace_ttys("hvc0 xhvc0 hvc0x xvc12.", "S"),
            "S xhvc0 hvc0x S."
        );
    }
}
