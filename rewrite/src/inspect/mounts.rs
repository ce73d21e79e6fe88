//! The guest's `/etc/fstab`, each entry with the volume of the source disks it names.

use crate::context::GuestVolume;
use crate::devname::{self, DevRef};
use crate::edit::{lines_with_endings, split_ending};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountEntry {
    pub line: usize,
    pub spec: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: String,
    /// The spec names old hardware (a kernel name, by-id, by-path) and breaks on a move.
    pub hardware_bound: bool,
    /// Index into the volumes given to inspection.
    pub volume: Option<usize>,
    /// What it resolves to, in words (`disk 0 partition 1: ext4 UUID=...`).
    pub resolves_to: Option<String>,
    /// Why it does not resolve, or something to know about it.
    pub note: Option<String>,
}

/// Filesystems that are not on a disk.
pub fn is_virtual_fs(fstype: &str) -> bool {
    matches!(
        fstype,
        "proc"
            | "sysfs"
            | "tmpfs"
            | "devpts"
            | "devtmpfs"
            | "usbfs"
            | "securityfs"
            | "debugfs"
            | "cgroup"
            | "cgroup2"
            | "hugetlbfs"
            | "binfmt_misc"
            | "xenfs"
            | "nfs"
            | "nfs4"
            | "cifs"
            | "smbfs"
            | "vmhgfs"
            | "fuse.vmhgfs-fuse"
            | "vboxsf"
            | "none"
            | "rpc_pipefs"
    )
}

/// A volume described for people.
pub fn describe_volume(v: &GuestVolume) -> String {
    let mut s = match (&v.lv, v.disk, v.partition) {
        (Some((vg, lv)), _, _) => format!("LV {vg}/{lv}"),
        (None, Some(d), Some(p)) => format!("disk {d} partition {p}"),
        (None, Some(d), None) => format!("disk {d}"),
        _ => "a volume".to_string(),
    };
    if let Some(k) = &v.fs_kind {
        s.push_str(&format!(": {k}"));
    }
    if let Some(u) = &v.uuid {
        s.push_str(&format!(" UUID={u}"));
    }
    if let Some(l) = &v.label {
        s.push_str(&format!(" LABEL={l}"));
    }
    s
}

/// The volume a device spec names (`UUID=`, `LABEL=`, `PARTUUID=`, a kernel name by disk
/// order, `/dev/mapper/VG-LV`, `/dev/VG/LV`).
pub fn resolve(spec: &str, volumes: &[GuestVolume]) -> Option<usize> {
    let eq = |a: &Option<String>, b: &str| a.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(b));
    match devname::parse(spec)? {
        DevRef::Uuid(u) => volumes.iter().position(|v| eq(&v.uuid, &u)),
        DevRef::Label(l) => volumes
            .iter()
            .position(|v| v.label.as_deref() == Some(l.as_str())),
        DevRef::PartUuid(u) => volumes.iter().position(|v| eq(&v.partuuid, &u)),
        DevRef::Kernel {
            disk, partition, ..
        } => volumes
            .iter()
            .position(|v| v.disk == Some(disk) && v.partition == partition && v.lv.is_none()),
        DevRef::Mapper(m) => {
            let fixed = m.replace("--", "\u{0}");
            let (vg, lv) = fixed.split_once('-')?;
            let (vg, lv) = (vg.replace('\u{0}', "-"), lv.replace('\u{0}', "-"));
            volumes
                .iter()
                .position(|v| v.lv.as_ref().is_some_and(|(a, b)| *a == vg && *b == lv))
        }
        DevRef::VgLv(vg, lv) => volumes
            .iter()
            .position(|v| v.lv.as_ref().is_some_and(|(a, b)| *a == vg && *b == lv)),
        _ => None,
    }
}

/// The fields of an fstab line (None for comments and blank lines).
pub fn fields(line: &str) -> Option<Vec<&str>> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = t.split_whitespace().collect();
    (f.len() >= 2).then_some(f)
}

pub fn parse(text: &str, volumes: &[GuestVolume]) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for (n, raw) in lines_with_endings(text) {
        let Some(f) = fields(split_ending(raw).0) else {
            continue;
        };
        let get = |i: usize| f.get(i).map(|s| s.to_string()).unwrap_or_default();
        let spec = get(0);
        let fstype = get(2);
        let r = devname::parse(&spec);
        let hardware_bound = r.as_ref().is_some_and(DevRef::is_hardware_bound);
        let volume = resolve(&spec, volumes);
        let note = if volume.is_some() {
            None
        } else if is_virtual_fs(&fstype) || r.is_none() {
            Some("not a disk".to_string())
        } else {
            Some(match &r {
                Some(DevRef::ById(_)) => "names the old disk by model and serial".to_string(),
                Some(DevRef::ByPath(_)) => {
                    "names the old disk by its controller's address".to_string()
                }
                Some(DevRef::Mapper(m)) => format!(
                    "/dev/mapper/{m} matches no LV of the disks given (encrypted or multipath?)"
                ),
                _ => "matches no disk or partition given".to_string(),
            })
        };
        out.push(MountEntry {
            line: n,
            spec,
            mountpoint: get(1),
            fstype,
            options: get(3),
            hardware_bound,
            volume,
            resolves_to: volume.and_then(|i| volumes.get(i)).map(describe_volume),
            note,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_entries() {
        let vols = vec![
            GuestVolume {
                disk: Some(0),
                partition: Some(1),
                fs_kind: Some("ext4".into()),
                uuid: Some("6F1C".into()),
                ..Default::default()
            },
            GuestVolume {
                lv: Some(("vg-data".into(), "home".into())),
                fs_kind: Some("xfs".into()),
                ..Default::default()
            },
        ];
        let t = "# c\nUUID=6f1c / ext4 defaults 0 1\n/dev/mapper/vg--data-home /home xfs defaults 0 2\n/dev/sda5 none swap sw 0 0\nproc /proc proc defaults 0 0\n/dev/disk/by-id/scsi-36000c29-part1 /srv ext4 defaults\n";
        let m = parse(t, &vols);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].volume, Some(0));
        assert_eq!(m[0].line, 2);
        assert_eq!(m[1].volume, Some(1));
        assert_eq!(m[1].resolves_to.as_deref(), Some("LV vg-data/home: xfs"));
        assert!(m[2].hardware_bound);
        assert_eq!(m[2].volume, None);
        assert_eq!(m[3].note.as_deref(), Some("not a disk"));
        assert!(m[4].note.as_deref().unwrap().contains("serial"));
    }
}
