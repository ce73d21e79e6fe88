//! LVM's device filters (`filter`, `global_filter` in `/etc/lvm/lvm.conf` and
//! `lvmlocal.conf`, and the initramfs's copy). A filter that accepts only old names
//! (`"a|^/dev/sda[0-9]*$|", "r|.*|"`) hides the physical volumes on the new bus: the volume
//! group is not found and the root LV never appears. Accept and reject patterns naming
//! `sd`/`hd`/`xvd`/`vd` disks get the target's prefix; names that cannot be translated
//! (by-id, by-path, nvme, cciss), and any old name on physical hardware, become an
//! accept-all `a|.*|` with a warning. By-id names LVM and md create from content
//! (`lvm-pv-uuid-*`, `dm-*`, `md-*`) survive the move and are kept.

use super::{splice, Splice};
use crate::context::{Context, Target};
use crate::devname::{kernel_name, Bus};
use crate::edit::{Patched, Warning};
use std::ops::Range;

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(Range<usize>),
    /// The content of a double-quoted string (without the quotes).
    Str(Range<usize>),
    Punct(u8),
}

fn tokenize(text: &str) -> Vec<Tok> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'#' => {
                while b.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while let Some(&c) = b.get(i) {
                    if c == b'\\' {
                        i += 2;
                        continue;
                    }
                    if c == b'"' {
                        break;
                    }
                    i += 1;
                }
                let end = i.min(b.len());
                out.push(Tok::Str(start..end));
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while b
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'/')
                {
                    i += 1;
                }
                out.push(Tok::Ident(start..i));
            }
            c if c.is_ascii_whitespace() => i += 1,
            c => {
                out.push(Tok::Punct(c));
                i += 1;
            }
        }
    }
    out
}

/// The string values of every `filter`/`global_filter` setting.
fn filter_strings(text: &str) -> Vec<(String, Range<usize>)> {
    let toks = tokenize(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let Some(Tok::Ident(r)) = toks.get(i) else {
            i += 1;
            continue;
        };
        let name = text.get(r.clone()).unwrap_or("");
        let key = name.rsplit('/').next().unwrap_or(name);
        if !matches!(key, "filter" | "global_filter") || toks.get(i + 1) != Some(&Tok::Punct(b'='))
        {
            i += 1;
            continue;
        }
        i += 2;
        match toks.get(i) {
            Some(Tok::Str(s)) => {
                out.push((key.to_string(), s.clone()));
                i += 1;
            }
            Some(Tok::Punct(b'[')) => {
                i += 1;
                while let Some(t) = toks.get(i) {
                    match t {
                        Tok::Str(s) => out.push((key.to_string(), s.clone())),
                        Tok::Punct(b',') => {}
                        _ => break,
                    }
                    i += 1;
                }
            }
            _ => {}
        }
    }
    out
}

const PREFIXES: [(&str, Option<Bus>); 8] = [
    ("xvd", Some(Bus::Xen)),
    ("sd", Some(Bus::Scsi)),
    ("hd", Some(Bus::Ide)),
    ("vd", Some(Bus::Virtio)),
    ("nvme", None),
    ("cciss", None),
    ("disk/by-id/", None),
    ("disk/by-path/", None),
];

/// By-id names made from content, not hardware.
fn content_by_id(rest: &str) -> bool {
    ["lvm-pv-uuid-", "dm-", "md-"]
        .iter()
        .any(|p| rest.starts_with(p))
}

/// The regex with old disk prefixes replaced by `new_prefix`; Err if an old name cannot
/// be translated; Ok(None) if it names nothing old.
fn translate(regex: &str, target: Target) -> Result<Option<String>, ()> {
    let target_bus = target.disk_bus();
    let new_prefix = target_bus.map(|b| {
        let n = kernel_name(b, 0, None);
        n.trim_start_matches("/dev/")
            .trim_end_matches('a')
            .to_string()
    });
    let mut out = String::with_capacity(regex.len());
    let mut changed = false;
    let mut i = 0;
    while i < regex.len() {
        let here = &regex[i..];
        let at_start = regex[..i].trim_start_matches('^').is_empty();
        let skip = if here.starts_with("/dev/") {
            5
        } else if at_start {
            0
        } else {
            let c = here.chars().next().map_or(1, char::len_utf8);
            out.push_str(&here[..c]);
            i += c;
            continue;
        };
        let rest = &here[skip..];
        let hit = PREFIXES.iter().find(|(p, _)| rest.starts_with(p));
        match hit {
            Some((p, bus)) if *bus != target_bus || bus.is_none() => {
                if p.starts_with("disk/by-id/") && content_by_id(&rest[p.len()..]) {
                    out.push_str(&here[..skip + p.len()]);
                    i += skip + p.len();
                    continue;
                }
                let (Some(_), Some(np)) = (bus, &new_prefix) else {
                    return Err(());
                };
                out.push_str(&here[..skip]);
                out.push_str(np);
                i += skip + p.len();
                changed = true;
            }
            Some((p, _)) => {
                out.push_str(&here[..skip + p.len()]);
                i += skip + p.len();
            }
            None => {
                let c = if skip > 0 {
                    skip
                } else {
                    here.chars().next().map_or(1, char::len_utf8)
                };
                out.push_str(&here[..c]);
                i += c;
            }
        }
    }
    Ok(changed.then_some(out))
}

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut splices = Vec::new();
    let mut warnings = Vec::new();
    for (key, r) in filter_strings(text) {
        let Some(s) = text.get(r.clone()) else {
            continue;
        };
        if s.contains('\n') {
            continue;
        }
        let line = text[..r.start].matches('\n').count() + 1;
        let mut chars = s.chars();
        let (Some(kind @ ('a' | 'r')), Some(delim)) = (chars.next(), chars.next()) else {
            continue;
        };
        let body = chars.as_str();
        let Some(regex) = body.rfind(delim).map(|e| &body[..e]) else {
            continue;
        };
        match translate(regex, ctx.target) {
            Ok(None) => {}
            Ok(Some(new)) => splices.push(Splice {
                range: r,
                new: format!("{kind}{delim}{new}{delim}"),
                reason: format!(
                    "{key} pattern \"{s}\" names the old disks; on the target they are {}",
                    ctx.target.disk_description()
                ),
            }),
            Err(()) if kind == 'a' => {
                splices.push(Splice {
                    range: r,
                    new: format!("a{delim}.*{delim}"),
                    reason: format!(
                        "{key} accepts only \"{s}\", old disk names with no fixed \
                         equivalent on the target; accept every device so the volume group \
                         is found"
                    ),
                });
                warnings.push(Warning::new(
                    Some(file),
                    Some(line),
                    format!(
                        "LVM {key} pattern \"{s}\" replaced by an accept-all; narrow it again \
                         on the target if it was there to hide devices"
                    ),
                ));
            }
            Err(()) => warnings.push(Warning::new(
                Some(file),
                Some(line),
                format!(
                    "LVM {key} rejects \"{s}\", an old disk name with no fixed equivalent on \
                     the target; left as is: check it hides nothing needed"
                ),
            )),
        }
    }
    splice(file, text, splices, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;

    const LVM_CONF: &str = r#"# This is an example configuration file for the LVM2 system.
devices {
    dir = "/dev"
    scan = [ "/dev" ]
    # filter = [ "a|/dev/sda.*|", "r|.*|" ]
    preferred_names = [ "^/dev/mpath/", "^/dev/mapper/mpath", "^/dev/[hs]d" ]
    filter = [ "a|^/dev/sda[0-9]*$|", "a|/dev/disk/by-id/lvm-pv-uuid-.*|",
               "r|.*|" ]
	global_filter = [ "r|/dev/cdrom|", "a/xvdb/" ]
    cache_dir = "/etc/lvm/cache"
}
"#;

    #[test]
    fn filters_follow_the_bus() {
        let c = ctx(Target::Kvm);
        let p = patch("/etc/lvm/lvm.conf", LVM_CONF, &c);
        let out = p.text.clone().unwrap();
        assert!(out
            .contains(r#"filter = [ "a|^/dev/vda[0-9]*$|", "a|/dev/disk/by-id/lvm-pv-uuid-.*|","#));
        assert!(out.contains(r#"global_filter = [ "r|/dev/cdrom|", "a/vdb/" ]"#));
        // The comment and preferred_names are not filters.
        assert!(out.contains(r#"# filter = [ "a|/dev/sda.*|", "r|.*|" ]"#));
        assert!(out.contains(r#""^/dev/[hs]d" ]"#));
        assert_eq!(p.edits.len(), 2);
        assert_eq!(p.edits[0].line, Some(7));
        assert!(p.warnings.is_empty());
        assert!(patch("/etc/lvm/lvm.conf", &out, &c).text.is_none());
        // kvm-scsi keeps sd, translates xvd.
        let p = patch("l", LVM_CONF, &ctx(Target::KvmScsi));
        assert_eq!(p.edits.len(), 1);
    }

    #[test]
    fn physical_accepts_all() {
        let c = ctx(Target::Physical);
        let p = patch("/etc/lvm/lvm.conf", LVM_CONF, &c);
        let out = p.text.clone().unwrap();
        assert!(out.contains(r#"filter = [ "a|.*|", "a|/dev/disk/by-id/lvm-pv-uuid-.*|","#));
        assert!(out.contains(r#""a/.*/" ]"#));
        assert_eq!(p.warnings.len(), 2);
        assert!(patch("l", &out, &c).text.is_none());
        let p = patch(
            "l",
            "devices { filter = [ \"r|/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:1:0|\" ] }",
            &c,
        );
        assert!(p.text.is_none());
        assert_eq!(p.warnings.len(), 1);
        let p = patch("l", "filter=\"a|/dev/nvme0n1p3|\"", &ctx(Target::Kvm));
        assert_eq!(p.text.as_deref(), Some("filter=\"a|.*|\""));
    }
}
