//! LILO (`/etc/lilo.conf`). Unlike GRUB, LILO never reads its config at boot: `/sbin/lilo`
//! reads it once, resolves every kernel and initrd to a list of disk sectors and every
//! `root=` to a device, and writes all of that, with the command lines, into its map file
//! (`/boot/map`) and the boot sector. Editing the file offline changes nothing the guest
//! boots until `lilo` runs again, which needs the guest running (or chrooted into from a
//! rescue system) on the new disk. So the file is rewritten — `boot=`, `disk=`, `other=`
//! (device paths), `root=` (a device, or `"UUID=..."` as LILO 22.8 and later accept), and
//! the command lines of `append=`, `addappend=` and `literal=` through
//! [`cmdline::rewrite`] — so that the `lilo` run after the move installs the right thing;
//! the plan adds [`rerun_warning`] when LILO is what boots the guest.
//! Inspection makes a guest that boots with LILO a blocker ([`rerun_message`]).
//!
//! Syntax as lilo.conf(5) gives it: `name`, `name=value`, `name = value` or `name="a b"`
//! items, several to a line if need be (`disk=/dev/sda bios=0x80`); `#` starts a comment
//! outside quotes.

use super::{cmdline, Splice};
use crate::context::{Context, SpecForm, Target};
use crate::edit::{lines_with_endings, split_ending, Patched, Warning};

/// One `name[=value]` item of a line: the name (lowercase), the value's byte range in the
/// line (without quotes) and whether it was quoted.
#[derive(Debug, PartialEq, Eq)]
pub struct Item {
    pub name: String,
    pub value: Option<(std::ops::Range<usize>, bool)>,
}

/// The items of one line (a line body, without its ending).
pub fn items(line: &str) -> Vec<Item> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        match b.get(i) {
            None | Some(b'#') => return out,
            _ => {}
        }
        let start = i;
        while b
            .get(i)
            .is_some_and(|c| !c.is_ascii_whitespace() && *c != b'=' && *c != b'#')
        {
            i += 1;
        }
        let name = line.get(start..i).unwrap_or("").to_ascii_lowercase();
        let j = skip_ws(i);
        if b.get(j) != Some(&b'=') {
            if name.is_empty() {
                // A stray `=`-less symbol such as a lone quote: skip it.
                i += 1;
                continue;
            }
            out.push(Item { name, value: None });
            continue;
        }
        let mut k = skip_ws(j + 1);
        let value = if b.get(k) == Some(&b'"') {
            let vstart = k + 1;
            k = vstart;
            let mut escaped = false;
            while let Some(&c) = b.get(k) {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    break;
                }
                k += 1;
            }
            let r = vstart..k.min(b.len());
            // Past the closing quote (an unclosed one runs to the end of the line).
            k = (k + 1).min(b.len());
            Some((r, true))
        } else {
            let vstart = k;
            while b
                .get(k)
                .is_some_and(|c| !c.is_ascii_whitespace() && *c != b'#')
            {
                k += 1;
            }
            Some((vstart..k, false))
        };
        i = k;
        out.push(Item { name, value });
    }
}

/// Why a LILO guest cannot simply be moved, for the blocker and the warnings.
pub fn rerun_message(config: &str, target: Target) -> String {
    format!(
        "the guest boots with LILO ({config}); LILO does not read its config at boot: \
         /sbin/lilo wrote the kernel's and initrd's sector lists and the command line \
         (root=, append=) into its map and boot sector when it last ran. A disk copy keeps \
         those sectors, but root= inside the map was fixed at install time and names the \
         old disk, and the initrd a conversion rebuilds with the {} drivers lies in sectors \
         the map does not list, so the guest would not find its root disk. transplant \
         rewrites {config} but cannot run lilo offline: convert with --force, then boot the \
         target from a rescue system, mount and chroot into the guest and run `lilo` \
         (or install GRUB) before its first boot",
        target.name()
    )
}

/// The warning a conversion of a LILO guest carries (the plan adds it when inspection
/// finds LILO is the guest's loader, which `--force` let through).
pub fn rerun_warning(file: &str, target: Target) -> Warning {
    Warning::new(Some(file), None, rerun_message(file, target))
}

fn quote_if_needed(new: &str, quoted: bool) -> String {
    if !quoted && (new.contains(char::is_whitespace) || new.contains('=')) {
        format!("\"{new}\"")
    } else {
        new.to_string()
    }
}

/// `/etc/lilo.conf`.
pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut splices: Vec<Splice> = Vec::new();
    let mut warnings: Vec<Warning> = Vec::new();
    let mut offset = 0;
    for (n, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let base = offset;
        offset += raw.len();
        for it in items(body) {
            let Some((r, quoted)) = it.value else {
                continue;
            };
            let Some(value) = body.get(r.clone()) else {
                continue;
            };
            let range = base + r.start..base + r.end;
            let mut warn = |m: String| warnings.push(Warning::new(Some(file), Some(n), m));
            match it.name.as_str() {
                "root" | "boot" | "disk" | "other" => {
                    let form = if it.name == "root" {
                        SpecForm::Spec
                    } else {
                        SpecForm::Path
                    };
                    match ctx.rewrite_device(value, form) {
                        Ok(Some(x)) if super::splits_field(&x.new) => {
                            warn(super::unwritable(value, &x.new));
                        }
                        Ok(Some(x)) => splices.push(Splice {
                            range,
                            new: quote_if_needed(&x.new, quoted),
                            reason: format!("{}={value} -> {}: {}", it.name, x.new, x.reason),
                        }),
                        Ok(None) => {}
                        Err(m) => warn(format!("{}={value}: {m}", it.name)),
                    }
                }
                "append" | "addappend" | "literal" => {
                    let new = cmdline::rewrite(value, ctx);
                    for w in new.warnings.iter().cloned() {
                        warn(w);
                    }
                    if new.changed() {
                        let line = if !quoted && new.line.contains(char::is_whitespace) {
                            format!("\"{}\"", new.line)
                        } else {
                            new.line.clone()
                        };
                        splices.push(Splice {
                            range,
                            new: line,
                            reason: new.reason(),
                        });
                    }
                }
                _ => {}
            }
        }
    }
    super::splice(file, text, splices, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::{ctx, renaming};

    const ROOT: &str = "UUID=9e8d7c6b-5a49-4838-a726-151413121110";
    const SWAP: &str = "UUID=5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d";

    /// Slackware 14 as `liloconfig` writes it, with a Xen console and a second disk
    /// mapping on one line.
    const SLACKWARE: &str = "\
# LILO configuration file
# generated by 'liloconfig'
#
# Start LILO global section
lba32 # Allow booting past 1024th cylinder with a recent BIOS
boot = /dev/sda
#compact        # faster, but won't work on all systems.
# Append any additional kernel parameters:
append=\" vt.default_utf8=0 console=hvc0\"
prompt
timeout = 50
disk=/dev/sda bios=0x80
vga = normal
# End LILO global section
# Linux bootable partition config begins
image = /boot/vmlinuz
  root = /dev/sda3
  label = Linux
  read-only
  initrd = /boot/initrd.gz
  append = \"resume=/dev/sda2\"
# Linux bootable partition config ends
other = /dev/sda4
  label = Other
";

    #[test]
    fn items_of_a_line() {
        let l = "  disk=/dev/sda bios = 0x80 # c";
        let it = items(l);
        assert_eq!(it.len(), 2);
        assert_eq!(it[0].name, "disk");
        assert_eq!(&l[it[0].value.clone().unwrap().0], "/dev/sda");
        assert_eq!(&l[it[1].value.clone().unwrap().0], "0x80");
        let l = "append=\"a \\\" b\" read-only";
        let it = items(l);
        assert_eq!(&l[it[0].value.clone().unwrap().0], "a \\\" b");
        assert_eq!(it[1].value, None);
        assert_eq!(items("append=\"open").len(), 1);
        assert!(items("= = \"").len() <= 3);
    }

    #[test]
    fn slackware() {
        let c = ctx(Target::Kvm);
        let p = patch("/etc/lilo.conf", SLACKWARE, &c);
        let out = p.text.clone().unwrap();
        assert!(out.contains("\nboot = /dev/vda\n"), "{out}");
        assert!(out.contains("\nappend=\" vt.default_utf8=0 console=ttyS0\"\n"));
        assert!(out.contains("\ndisk=/dev/vda bios=0x80\n"));
        assert!(out.contains(&format!("\n  root = \"{ROOT}\"\n")));
        assert!(out.contains(&format!("\n  append = \"resume={SWAP}\"\n")));
        assert!(out.contains("\nother = /dev/vda4\n"), "{out}");
        assert!(out.starts_with("# LILO configuration file\n"));
        assert_eq!(p.edits.len(), 6, "{:?}", p.edits);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(rerun_warning("/etc/lilo.conf", Target::Kvm)
            .message
            .contains("run `lilo`"));
        let again = patch("/etc/lilo.conf", &out, &c);
        assert!(again.text.is_none());
        // Renaming: names on the new bus, no quotes needed.
        let p = patch("/etc/lilo.conf", SLACKWARE, &renaming(Target::Kvm));
        assert!(p.text.unwrap().contains("\n  root = /dev/vda3\n"));
    }

    #[test]
    fn physical_and_unplaceable() {
        let c = ctx(Target::Physical);
        let t = "boot=/dev/disk/by-id/ata-VBOX_HARDDISK_VB1234\nimage=/boot/vmlinuz-2.6.32-5-686\n\tlabel=Linux\n\troot=/dev/sdb1\n\tappend=\"console=ttyS0,115200 quiet\"\n";
        let p = patch("/etc/lilo.conf", t, &c);
        let out = p.text.unwrap();
        assert!(out.contains("\tappend=\"console=tty0 quiet\"\n"), "{out}");
        assert!(out.contains("\troot=/dev/sdb1\n"));
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        // Not a LILO config, nothing to change: nothing said.
        let p = patch("/etc/lilo.conf", "# empty\n", &c);
        assert!(p.text.is_none() && p.warnings.is_empty());
    }
}
