//! `mdadm.conf` (`/etc/mdadm.conf`, `/etc/mdadm/mdadm.conf`, and the initramfs's copy).
//!
//! `DEVICE` lines limit which devices mdadm scans for array members; a list or glob of old
//! names (`/dev/sd[ab]1`, `/dev/xvd*`) makes it find nothing on the new bus. Such words
//! become `partitions` (scan every partition the kernel lists), which is right on any
//! hardware. `ARRAY ... devices=` names members by kernel name: when the array also carries
//! its `UUID=`, the list is dropped (mdadm finds members by that UUID); otherwise members
//! get their names on the target's bus. Members are not named by filesystem UUID: a RAID
//! member's blkid UUID is the array's, shared by all members, and udev makes no by-uuid
//! link for it.

use super::fields::{fields, remove_field, replace_field};
use super::is_comment_or_blank;
use crate::context::Context;
use crate::devname::{self, Bus, DevRef};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

/// Whether `word` (a path or a glob) names devices by old hardware names: kernel names on a
/// bus other than the target's, by-id, by-path.
fn old_name(word: &str, ctx: &Context) -> bool {
    let stem = word.split(['*', '?', '[']).next().unwrap_or(word);
    if stem.len() == word.len() {
        return match devname::parse(word) {
            Some(DevRef::Kernel { bus, .. }) => Some(bus) != ctx.target.disk_bus(),
            Some(r) => r.is_hardware_bound(),
            None => false,
        };
    }
    // A glob's stem may end before the disk letter (`/dev/sd*`): go by the bus prefix.
    let Some(rest) = stem.strip_prefix("/dev/") else {
        return false;
    };
    if rest.starts_with("disk/by-id/") || rest.starts_with("disk/by-path/") {
        return true;
    }
    let bus = [
        ("xvd", Bus::Xen),
        ("sd", Bus::Scsi),
        ("hd", Bus::Ide),
        ("vd", Bus::Virtio),
        ("nvme", Bus::Nvme),
        ("cciss/", Bus::Cciss),
    ]
    .into_iter()
    .find(|(p, _)| rest.starts_with(p) || p.starts_with(rest) && !rest.is_empty());
    match bus {
        Some((_, bus)) => Some(bus) != ctx.target.disk_bus(),
        None => false,
    }
}

/// A member's name on the target's bus, if the target has one and the disk exists.
fn member_on_target(dev: &str, ctx: &Context) -> Result<Option<String>, String> {
    let r = devname::parse(dev);
    let Some(DevRef::Kernel {
        bus,
        disk,
        partition,
    }) = r
    else {
        return match r {
            Some(DevRef::ById(_) | DevRef::ByPath(_)) => Err(format!(
                "{dev} names the old disk by its hardware; it will not exist on the target"
            )),
            _ => Ok(None),
        };
    };
    let Some(tb) = ctx.target.disk_bus() else {
        return Err(format!(
            "{dev}: physical disks have no fixed kernel name; add UUID= to this ARRAY line \
             (mdadm --detail --scan prints it)"
        ));
    };
    if tb == bus {
        return Ok(None);
    }
    if ctx.volume_at(disk, partition).is_none() {
        return Err(format!("{dev} matches no disk or partition of this guest"));
    }
    Ok(Some(devname::kernel_name(tb, disk, partition)))
}

fn has_uuid(logical: &str) -> bool {
    fields(logical).iter().any(|r| {
        logical.get(r.clone()).is_some_and(|w| {
            w.len() > 5 && w.get(..5).is_some_and(|k| k.eq_ignore_ascii_case("uuid="))
        })
    })
}

fn patch_device_line(body: &str, ctx: &Context) -> Option<(String, String)> {
    let f = fields(body);
    let words: Vec<&str> = f.iter().filter_map(|r| body.get(r.clone())).collect();
    let mut dropped: Vec<&str> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 && old_name(w, ctx) {
            dropped.push(w);
        }
    }
    if dropped.is_empty() {
        return None;
    }
    // Rebuild: the first old word becomes `partitions` (unless already listed), the others
    // go; everything else keeps its place and spacing.
    let has_partitions = words.iter().skip(1).any(|w| *w == "partitions");
    let mut line = body.to_string();
    let mut placed = has_partitions;
    for i in (1..words.len()).rev() {
        let cur = fields(&line);
        let Some(w) = words.get(i) else { continue };
        if !old_name(w, ctx) {
            continue;
        }
        let first_old = words
            .iter()
            .skip(1)
            .position(|x| old_name(x, ctx))
            .map(|p| p + 1);
        if !placed && first_old == Some(i) {
            line = replace_field(&line, &cur, i, "partitions");
            placed = true;
        } else {
            line = remove_field(&line, &cur, i);
        }
    }
    Some((
        line,
        format!(
            "{} name devices by their old names; `partitions` makes mdadm scan every \
             partition, whatever the bus",
            dropped.join(" ")
        ),
    ))
}

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    let lines: Vec<(usize, &str)> = lines_with_endings(text).collect();
    // Lines beginning with whitespace continue the line before; a logical ARRAY line's UUID
    // may be on any of its physical lines.
    let mut logical_of: Vec<(bool, String)> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        let mut joined = lines.get(i).map_or("", |l| split_ending(l.1).0).to_string();
        i += 1;
        while let Some(&(_, next)) = lines.get(i) {
            let b = split_ending(next).0;
            if b.starts_with([' ', '\t']) && !is_comment_or_blank(b) {
                joined.push(' ');
                joined.push_str(b);
                i += 1;
            } else {
                break;
            }
        }
        let first = fields(&joined)
            .first()
            .and_then(|r| joined.get(r.clone()))
            .unwrap_or("")
            .to_ascii_uppercase();
        for _ in start..i {
            logical_of.push((first.starts_with("ARRAY"), joined.clone()));
        }
        if first.starts_with("DEVICE") {
            // Only the first physical line carries the keyword; continuation lines hold
            // more device words, handled below with the keyword's rule.
            for idx in start + 1..i {
                if let Some(l) = logical_of.get_mut(idx) {
                    l.0 = false;
                }
            }
        }
    }
    let mut in_device = false;
    for (idx, (n, raw)) in lines.iter().enumerate() {
        let (n, raw) = (*n, *raw);
        let body = split_ending(raw).0;
        if is_comment_or_blank(body) {
            ed.keep(raw);
            continue;
        }
        let continuation = body.starts_with([' ', '\t']);
        let first = fields(body)
            .first()
            .and_then(|r| body.get(r.clone()))
            .unwrap_or("")
            .to_ascii_uppercase();
        if !continuation {
            in_device = first.starts_with("DEVICE");
        }
        if in_device {
            let probe = if continuation {
                format!("DEVICE {body}")
            } else {
                body.to_string()
            };
            match patch_device_line(&probe, ctx) {
                Some((new, reason)) => {
                    let new = if continuation {
                        let indent = &body[..body.len() - body.trim_start().len()];
                        let rest = new.strip_prefix("DEVICE").unwrap_or(&new).trim_start();
                        format!("{indent}{rest}")
                    } else {
                        new
                    };
                    ed.replace(n, raw, &new, reason);
                }
                None => ed.keep(raw),
            }
            continue;
        }
        let (is_array, logical) = logical_of
            .get(idx)
            .map(|(a, l)| (*a, l.as_str()))
            .unwrap_or((false, ""));
        if !is_array {
            ed.keep(raw);
            continue;
        }
        let f = fields(body);
        let Some(di) = f.iter().position(|r| {
            body.get(r.clone()).is_some_and(|w| {
                w.get(..8)
                    .is_some_and(|k| k.eq_ignore_ascii_case("devices="))
            })
        }) else {
            ed.keep(raw);
            continue;
        };
        let word = f.get(di).and_then(|r| body.get(r.clone())).unwrap_or("");
        let list = word.get(8..).unwrap_or("");
        let uses_old = list.split(',').any(|d| old_name(d, ctx));
        if !uses_old {
            ed.keep(raw);
            continue;
        }
        if has_uuid(logical) {
            let new = remove_field(body, &f, di);
            ed.replace(
                n,
                raw,
                &new,
                format!(
                    "{word} lists members by their old names; the array is found by its UUID \
                     on this line"
                ),
            );
            continue;
        }
        let mut members = Vec::new();
        let mut failed = false;
        for d in list.split(',') {
            match member_on_target(d, ctx) {
                Ok(Some(m)) => members.push(m),
                Ok(None) => members.push(d.to_string()),
                Err(m) => {
                    ed.warn(Some(n), m);
                    failed = true;
                }
            }
        }
        if failed {
            ed.keep(raw);
            continue;
        }
        let new = replace_field(body, &f, di, &format!("devices={}", members.join(",")));
        ed.replace(
            n,
            raw,
            &new,
            format!(
                "members named on the target's bus ({})",
                ctx.target.disk_description()
            ),
        );
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;
    use crate::{GuestVolume, Target};

    fn two_disks(t: Target) -> Context {
        let mut c = ctx(t);
        for p in [None, Some(1), Some(2)] {
            c.volumes.push(GuestVolume {
                disk: Some(1),
                partition: p,
                ..Default::default()
            });
        }
        c
    }

    #[test]
    fn device_globs_become_partitions() {
        let c = two_disks(Target::Kvm);
        let t = "DEVICE /dev/sd[ab]1 /dev/sd[ab]2\n\
                 DEVICE partitions containers\n\
                 DEVICE /dev/hda* /dev/vd*\n\
                 device /dev/xvda1\n";
        let p = patch("/etc/mdadm.conf", t, &c);
        assert_eq!(
            p.text.as_deref(),
            Some(
                "DEVICE partitions\n\
                 DEVICE partitions containers\n\
                 DEVICE partitions /dev/vd*\n\
                 device partitions\n"
            )
        );
        let again = patch("/etc/mdadm.conf", p.text.as_deref().unwrap(), &c);
        assert!(again.text.is_none());
        // On kvm-scsi /dev/sd* is the target's own bus.
        let c = two_disks(Target::KvmScsi);
        assert!(patch("m", "DEVICE /dev/sd*\n", &c).text.is_none());
        assert!(
            patch("m", "DEVICE /dev/sd*\n", &two_disks(Target::Physical))
                .text
                .is_some()
        );
    }

    #[test]
    fn array_members() {
        let c = two_disks(Target::Kvm);
        let t = "# mdadm.conf written out by anaconda\n\
                 MAILADDR root\n\
                 ARRAY /dev/md0 level=raid1 num-devices=2 devices=/dev/sda1,/dev/sdb1\n\
                 ARRAY /dev/md1 level=raid1 num-devices=2\n   \
                 UUID=3f0e8c1a:1c2b3d4e:5f6a7b8c:9d0e1f2a devices=/dev/sda2,/dev/sdb2\n\
                 ARRAY /dev/md/home metadata=1.2 UUID=0a1b2c3d:4e5f6a7b:8c9d0e1f:2a3b4c5d name=h:home\n";
        let p = patch("/etc/mdadm.conf", t, &c);
        let out = p.text.clone().unwrap();
        assert!(out.contains("devices=/dev/vda1,/dev/vdb1\n"), "{out}");
        assert!(
            out.contains("   UUID=3f0e8c1a:1c2b3d4e:5f6a7b8c:9d0e1f2a\n"),
            "{out}"
        );
        assert!(out.ends_with("name=h:home\n"));
        assert_eq!(p.edits.len(), 2);
        assert!(patch("m", &out, &c).text.is_none());
        let p = patch("m", t, &two_disks(Target::Physical));
        assert_eq!(p.edits.len(), 1);
        assert_eq!(p.warnings.len(), 2);
    }
}
