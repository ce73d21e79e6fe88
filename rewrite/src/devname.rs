//! Device names as guests write them, parsed into what they refer to.
//!
//! A guest names its disks in three ways: by the kernel's name on the old bus (`/dev/sda1`,
//! `/dev/xvda1`, `/dev/hda`, `/dev/cciss/c0d0p1`, `/dev/nvme0n1p1`), which breaks on a new
//! bus; by hardware identity (`/dev/disk/by-id/...`, `/dev/disk/by-path/...`), which breaks
//! on new hardware; and by content (`UUID=`, `LABEL=`, `PARTUUID=`, LVM and device-mapper
//! names), which survives any move. Only the first two need rewriting; this module tells
//! them apart and prints kernel names for the new bus.

use std::ops::Range;

/// The bus a kernel device name belongs to (its prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bus {
    /// `sd`: SCSI, SATA, SAS, USB, virtio-scsi, VMware pvscsi/LSI.
    Scsi,
    /// `hd`: old IDE (RHEL <= 5, old SUSE).
    Ide,
    /// `xvd`: Xen PV block front-end.
    Xen,
    /// `vd`: virtio-blk.
    Virtio,
    /// `nvmeNnM`.
    Nvme,
    /// `cciss/cXdY`: HP Smart Array.
    Cciss,
}

impl Bus {
    fn prefix(self) -> &'static str {
        match self {
            Bus::Scsi => "sd",
            Bus::Ide => "hd",
            Bus::Xen => "xvd",
            Bus::Virtio => "vd",
            Bus::Nvme => "nvme",
            Bus::Cciss => "cciss/",
        }
    }
}

/// What a device reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevRef {
    /// A kernel name: disk `disk` (0-based, in the order the guest's disks are given) and
    /// partition `partition` (None for the whole disk).
    Kernel {
        bus: Bus,
        disk: usize,
        partition: Option<u32>,
    },
    Uuid(String),
    Label(String),
    PartUuid(String),
    PartLabel(String),
    /// `/dev/disk/by-id/NAME`: tied to the old disk's model and serial.
    ById(String),
    /// `/dev/disk/by-path/NAME`: tied to the old controller's PCI address.
    ByPath(String),
    /// `/dev/mapper/NAME` (LVM as VG-LV, LUKS, multipath).
    Mapper(String),
    /// `/dev/VG/LV`.
    VgLv(String, String),
    /// `/dev/mdN`, `/dev/md/NAME`.
    Md(String),
    /// A `/dev` path that is none of the above (`/dev/null`, `/dev/ttyS0`, `/dev/loop0`).
    Other(String),
}

impl DevRef {
    /// Whether the reference names old hardware (a kernel name on a bus, by-id, by-path),
    /// so a move may break it. Content names (UUID, LABEL, LVM, md) survive.
    pub fn is_hardware_bound(&self) -> bool {
        matches!(
            self,
            DevRef::Kernel { .. } | DevRef::ById(_) | DevRef::ByPath(_)
        )
    }
}

/// Parses a device spec as fstab, crypttab or a kernel command line write it: a `/dev`
/// path, `UUID=...`, `LABEL=...`, `PARTUUID=...`, `PARTLABEL=...` (values may be quoted).
/// Returns `None` for anything that is not a device reference (`proc`, `tmpfs`, `none`).
pub fn parse(spec: &str) -> Option<DevRef> {
    let unq = |s: &str| s.trim_matches('"').trim_matches('\'').to_string();
    for (key, make) in [
        ("UUID=", DevRef::Uuid as fn(String) -> DevRef),
        ("LABEL=", DevRef::Label),
        ("PARTUUID=", DevRef::PartUuid),
        ("PARTLABEL=", DevRef::PartLabel),
    ] {
        if let Some(v) = spec.strip_prefix(key) {
            return Some(make(unq(v)));
        }
    }
    let path = spec.strip_prefix("/dev/")?;
    for (dir, make) in [
        ("disk/by-uuid/", DevRef::Uuid as fn(String) -> DevRef),
        ("disk/by-label/", DevRef::Label),
        ("disk/by-partuuid/", DevRef::PartUuid),
        ("disk/by-partlabel/", DevRef::PartLabel),
        ("disk/by-id/", DevRef::ById),
        ("disk/by-path/", DevRef::ByPath),
        ("mapper/", DevRef::Mapper),
    ] {
        if let Some(v) = path.strip_prefix(dir) {
            return Some(make(v.to_string()));
        }
    }
    if let Some(r) = kernel(path) {
        return Some(r);
    }
    if path.starts_with("md") {
        return Some(DevRef::Md(path.to_string()));
    }
    if let Some((vg, lv)) = path.split_once('/') {
        if !vg.is_empty()
            && !lv.is_empty()
            && !lv.contains('/')
            && !matches!(
                vg,
                "disk" | "cciss" | "md" | "input" | "pts" | "shm" | "net" | "bus"
            )
        {
            return Some(DevRef::VgLv(vg.to_string(), lv.to_string()));
        }
    }
    Some(DevRef::Other(spec.to_string()))
}

/// `sda1`, `xvdb`, `hdc2`, `vdaa3`, `nvme0n1p2`, `cciss/c0d1p2`.
fn kernel(path: &str) -> Option<DevRef> {
    if let Some(rest) = path.strip_prefix("cciss/c") {
        let (_ctl, rest) = rest.split_once('d')?;
        let (disk, part) = match rest.split_once('p') {
            Some((d, p)) => (d, Some(p.parse().ok()?)),
            None => (rest, None),
        };
        return Some(DevRef::Kernel {
            bus: Bus::Cciss,
            disk: disk.parse().ok()?,
            partition: part,
        });
    }
    if let Some(rest) = path.strip_prefix("nvme") {
        let (ctl, rest) = rest.split_once('n')?;
        let ctl: usize = ctl.parse().ok()?;
        let (ns, part) = match rest.split_once('p') {
            Some((n, p)) => (n, Some(p.parse().ok()?)),
            None => (rest, None),
        };
        let ns: usize = ns.parse().ok()?;
        // One namespace per controller is the rule; a second namespace counts as the
        // next disk.
        let disk = ctl.checked_add(ns.checked_sub(1)?)?;
        return Some(DevRef::Kernel {
            bus: Bus::Nvme,
            disk,
            partition: part,
        });
    }
    for (prefix, bus) in [
        ("xvd", Bus::Xen),
        ("sd", Bus::Scsi),
        ("vd", Bus::Virtio),
        ("hd", Bus::Ide),
    ] {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let letters: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        let digits = &rest[letters.len()..];
        if letters.is_empty() || letters.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let partition = if digits.is_empty() {
            None
        } else {
            Some(digits.parse().ok()?)
        };
        return Some(DevRef::Kernel {
            bus,
            disk: letters_index(&letters)?,
            partition,
        });
    }
    None
}

/// `a` → 0, `z` → 25, `aa` → 26 (the kernel's bijective base 26).
fn letters_index(s: &str) -> Option<usize> {
    let mut n: usize = 0;
    for c in s.bytes() {
        n = n.checked_mul(26)?.checked_add((c - b'a') as usize + 1)?;
    }
    n.checked_sub(1)
}

fn index_letters(mut n: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The kernel name of disk `disk` / partition `partition` on `bus`, as a `/dev` path.
pub fn kernel_name(bus: Bus, disk: usize, partition: Option<u32>) -> String {
    match bus {
        Bus::Nvme => match partition {
            Some(p) => format!("/dev/nvme{disk}n1p{p}"),
            None => format!("/dev/nvme{disk}n1"),
        },
        Bus::Cciss => match partition {
            Some(p) => format!("/dev/cciss/c0d{disk}p{p}"),
            None => format!("/dev/cciss/c0d{disk}"),
        },
        _ => format!(
            "/dev/{}{}{}",
            bus.prefix(),
            index_letters(disk),
            partition.map(|p| p.to_string()).unwrap_or_default()
        ),
    }
}

/// Characters that end a `/dev/...` token in free text (config files, scripts, command
/// lines): whitespace, quotes, separators.
fn ends_token(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | ',' | ';' | ')' | '(' | '`' | '|' | '<' | '>' | '}' | '{' | ']' | '['
        )
}

/// Every `/dev/...` reference in `text` that names old hardware (kernel names, by-id,
/// by-path), with its byte range, in order. Content names and `/dev/null`-like paths are
/// left out; so is a `/dev/` that is part of a longer path (`/mnt/dev/sda`).
pub fn find_hardware_refs(text: &str) -> Vec<(Range<usize>, DevRef)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text.get(from..).and_then(|t| t.find("/dev/")) {
        let start = from + pos;
        let prev_ok = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| ends_token(c) || c == '=' || c == ':');
        let len = text[start..]
            .char_indices()
            .find(|&(_, c)| ends_token(c) || c == ':')
            .map(|(i, _)| i)
            .unwrap_or(text.len() - start);
        let end = start + len;
        if prev_ok {
            let tok = text[start..end].trim_end_matches(['.', '*']);
            if let Some(r) = parse(tok) {
                if r.is_hardware_bound() {
                    out.push((start..start + tok.len(), r));
                }
            }
        }
        from = end.max(start + 5);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(bus: Bus, disk: usize, partition: Option<u32>) -> Option<DevRef> {
        Some(DevRef::Kernel {
            bus,
            disk,
            partition,
        })
    }

    #[test]
    fn parses_kernel_names() {
        assert_eq!(parse("/dev/sda1"), k(Bus::Scsi, 0, Some(1)));
        assert_eq!(parse("/dev/xvdb"), k(Bus::Xen, 1, None));
        assert_eq!(parse("/dev/hdc2"), k(Bus::Ide, 2, Some(2)));
        assert_eq!(parse("/dev/sdaa3"), k(Bus::Scsi, 26, Some(3)));
        assert_eq!(parse("/dev/nvme0n1p2"), k(Bus::Nvme, 0, Some(2)));
        assert_eq!(parse("/dev/nvme1n1"), k(Bus::Nvme, 1, None));
        assert_eq!(parse("/dev/cciss/c0d1p2"), k(Bus::Cciss, 1, Some(2)));
    }

    #[test]
    fn parses_content_names() {
        assert_eq!(parse("UUID=\"ab-cd\""), Some(DevRef::Uuid("ab-cd".into())));
        assert_eq!(parse("LABEL=root"), Some(DevRef::Label("root".into())));
        assert_eq!(
            parse("/dev/disk/by-uuid/1234"),
            Some(DevRef::Uuid("1234".into()))
        );
        assert_eq!(
            parse("/dev/mapper/vg-root"),
            Some(DevRef::Mapper("vg-root".into()))
        );
        assert_eq!(
            parse("/dev/vg0/root"),
            Some(DevRef::VgLv("vg0".into(), "root".into()))
        );
        assert_eq!(parse("/dev/md0"), Some(DevRef::Md("md0".into())));
        assert_eq!(parse("/dev/null"), Some(DevRef::Other("/dev/null".into())));
        assert_eq!(
            parse("/dev/sdx-foo"),
            Some(DevRef::Other("/dev/sdx-foo".into()))
        );
        assert_eq!(parse("tmpfs"), None);
        assert!(parse("/dev/disk/by-id/ata-VMware_Virtual_S_1-part1")
            .unwrap()
            .is_hardware_bound());
    }

    #[test]
    fn prints_kernel_names() {
        assert_eq!(kernel_name(Bus::Virtio, 0, Some(1)), "/dev/vda1");
        assert_eq!(kernel_name(Bus::Virtio, 26, None), "/dev/vdaa");
        assert_eq!(kernel_name(Bus::Scsi, 27, Some(2)), "/dev/sdab2");
        assert_eq!(kernel_name(Bus::Nvme, 1, Some(3)), "/dev/nvme1n1p3");
        for n in [0, 25, 26, 51, 52, 701, 702] {
            assert_eq!(letters_index(&index_letters(n)), Some(n));
        }
    }

    #[test]
    fn finds_refs_in_text() {
        let t =
            "linux /vmlinuz root=/dev/sda1 ro resume=/dev/sda5 console=/dev/ttyS0 x=/mnt/dev/sdb";
        let r = find_hardware_refs(t);
        assert_eq!(r.len(), 2);
        assert_eq!(&t[r[0].0.clone()], "/dev/sda1");
        assert_eq!(&t[r[1].0.clone()], "/dev/sda5");
        let t = "(hd0)\t/dev/sda\n\"/dev/xvda2\",/dev/hda1:";
        let r = find_hardware_refs(t);
        let names: Vec<&str> = r.iter().map(|(x, _)| &t[x.clone()]).collect();
        assert_eq!(names, ["/dev/sda", "/dev/xvda2", "/dev/hda1"]);
    }
}
