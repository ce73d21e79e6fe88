//! Finding a guest's files in a set of images: every partition and LV is probed; the root
//! is the filesystem holding /etc/fstab and an OS release file; the others are attached
//! where that fstab says. Shared by `ls`, `cat` and `mount`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use transplant_formats::layout::{discover, Layout};
use transplant_formats::{open_image, BlockDev, OpenOptions};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::fat::FatFs;
use transplant_fs::xfs::XfsFs;
use transplant_fs::{probe, Filesystem, FsProbe, GuestTree};

/// An image argument: `disk.vmdk`, `disk.vmdk@2`, `disk.vmdk@vg/root`, each optionally
/// followed by `:/guest/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub image: PathBuf,
    pub select: Option<String>,
    pub path: Option<Vec<u8>>,
}

impl Target {
    /// Splits at the first `:` whose left part names an existing file (so image names
    /// containing `:` or `@` still work).
    pub fn parse(arg: &str) -> Target {
        let split_sel = |left: &str| -> Option<(PathBuf, Option<String>)> {
            if Path::new(left).is_file() || left.starts_with("/dev/") && Path::new(left).exists() {
                return Some((PathBuf::from(left), None));
            }
            let (img, sel) = left.rsplit_once('@')?;
            Path::new(img)
                .exists()
                .then(|| (PathBuf::from(img), Some(sel.to_string())))
        };
        for (i, _) in arg.match_indices(':') {
            if let Some((image, select)) = split_sel(&arg[..i]) {
                return Target {
                    image,
                    select,
                    path: Some(arg.as_bytes()[i + 1..].to_vec()),
                };
            }
        }
        match split_sel(arg) {
            Some((image, select)) => Target {
                image,
                select,
                path: None,
            },
            None => Target {
                image: PathBuf::from(arg),
                select: None,
                path: None,
            },
        }
    }
}

/// (name, selector, device, partition number) of a volume to probe.
type Candidate = (String, String, Arc<dyn BlockDev>, Option<u32>);

/// A partition, LV or whole disk that may hold a filesystem.
pub struct Volume {
    /// "disk.vmdk@2", "disk.vmdk@vg/root", or the disk itself.
    pub name: String,
    /// What follows `@` to select it ("2", "vg/root"), or "" for a whole disk.
    pub select: String,
    pub dev: Arc<dyn BlockDev>,
    pub probe: Option<FsProbe>,
    /// Opened when the filesystem is one we read.
    pub fs: Option<Arc<dyn Filesystem>>,
    /// Disk index and partition number, for matching /dev/sdXN names.
    pub disk_index: Option<usize>,
    pub partition: Option<u32>,
}

pub struct Volumes {
    pub layout: Layout,
    pub volumes: Vec<Volume>,
    pub warnings: Vec<String>,
    /// Filesystems that could not be opened for writing (when asked), and why.
    pub refused: Vec<(String, transplant_fs::Error)>,
}

fn open_fs(
    name: &str,
    dev: &Arc<dyn BlockDev>,
    p: &Option<FsProbe>,
    warnings: &mut Vec<String>,
    writable: &mut Option<Vec<(String, transplant_fs::Error)>>,
) -> Option<Arc<dyn Filesystem>> {
    let kind = p.as_ref()?.kind.as_str();
    if matches!(kind, "ext2" | "ext3" | "ext4") {
        if let Some(refused) = writable.as_mut() {
            // Opened for writing where safe; a filesystem that is not is read-only, with why.
            match Ext4Fs::open_rw(dev.clone(), kind) {
                Ok(fs) => return Some(Arc::new(fs)),
                Err(e) => refused.push((name.to_string(), e)),
            }
        }
    }
    if kind == "xfs" {
        if let Some(refused) = writable.as_mut() {
            match XfsFs::open_rw(dev.clone()) {
                Ok(fs) => return Some(Arc::new(fs)),
                Err(e) => refused.push((name.to_string(), e)),
            }
        }
    }
    if kind == "vfat" {
        if let Some(refused) = writable.as_mut() {
            match FatFs::open_rw(dev.clone()) {
                Ok(fs) => return Some(Arc::new(fs)),
                Err(e) => refused.push((name.to_string(), e)),
            }
        }
    }
    let opened: transplant_fs::Result<Arc<dyn Filesystem>> = match kind {
        "ext2" | "ext3" | "ext4" => Ext4Fs::open(dev.clone(), kind).map(|f| Arc::new(f) as _),
        "xfs" => XfsFs::open(dev.clone()).map(|f| Arc::new(f) as _),
        "vfat" => FatFs::open(dev.clone()).map(|f| Arc::new(f) as _),
        _ => return None,
    };
    match opened {
        Ok(fs) => Some(fs),
        Err(e) => {
            warnings.push(format!("{}: {e}", dev.name()));
            None
        }
    }
}

/// Opens the images and lists every volume with what it holds.
pub fn volumes(images: &[PathBuf], opts: &OpenOptions) -> Result<Volumes> {
    let mut opened = Vec::new();
    for p in images {
        let img = open_image(p, opts).with_context(|| format!("cannot open {}", p.display()))?;
        opened.push((p.display().to_string(), img as Arc<dyn BlockDev>));
    }
    volumes_on(opened, false)
}

/// Lists every volume of disks already opened (the disks of an OVA), named as given.
pub fn volumes_of(opened: Vec<(String, Arc<dyn BlockDev>)>) -> Result<Volumes> {
    volumes_on(opened, false)
}

/// Lists the volumes of opened disks; with `writable`, ext2/3/4 and XFS filesystems are opened for
/// writing where that is safe, and `Volumes::refused` says why where it is not.
pub fn volumes_on(opened: Vec<(String, Arc<dyn BlockDev>)>, writable: bool) -> Result<Volumes> {
    let mut rw: Option<Vec<(String, transplant_fs::Error)>> = writable.then(Vec::new);
    let layout = discover(opened)?;
    let mut warnings = layout.warnings.clone();
    let mut vols = Vec::new();
    for (di, d) in layout.disks.iter().enumerate() {
        let list: Vec<Candidate> = if d.table.is_some() {
            d.partitions
                .iter()
                .map(|(n, dev)| {
                    (
                        format!("{}@{n}", d.name),
                        n.to_string(),
                        dev.clone(),
                        Some(*n),
                    )
                })
                .collect()
        } else {
            vec![(d.name.clone(), String::new(), d.dev.clone(), None)]
        };
        for (name, select, dev, partition) in list {
            let p = probe(&*dev).unwrap_or(None);
            let fs = open_fs(&name, &dev, &p, &mut warnings, &mut rw);
            vols.push(Volume {
                name,
                select,
                dev,
                probe: p,
                fs,
                disk_index: Some(di),
                partition,
            });
        }
    }
    for vg in &layout.vgs {
        for lv in &vg.lvs {
            let sel = format!("{}/{}", vg.name, lv.name);
            match vg.open_lv(&lv.name) {
                Ok(dev) => {
                    let p = probe(&*dev).unwrap_or(None);
                    let fs = open_fs(&sel, &dev, &p, &mut warnings, &mut rw);
                    vols.push(Volume {
                        name: sel.clone(),
                        select: sel,
                        dev,
                        probe: p,
                        fs,
                        disk_index: None,
                        partition: None,
                    });
                }
                Err(e) => warnings.push(format!("{sel}: {e}")),
            }
        }
    }
    Ok(Volumes {
        layout,
        volumes: vols,
        warnings,
        refused: rw.unwrap_or_default(),
    })
}

fn is_root(fs: &dyn Filesystem) -> bool {
    let has = |p: &[u8]| fs.lstat(p).is_ok();
    has(b"/etc/fstab")
        && [
            &b"/etc/os-release"[..],
            b"/usr/lib/os-release",
            b"/etc/redhat-release",
            b"/etc/debian_version",
            b"/etc/SuSE-release",
            b"/etc/lsb-release",
        ]
        .iter()
        .any(|p| has(p))
}

/// The guest's tree: the selected volume alone, or the root found by inspection with its
/// fstab mounts attached. Returns the tree and notes about mounts that were not attached.
pub fn guest_tree(v: &Volumes, select: Option<&str>) -> Result<(GuestTree, Vec<String>)> {
    if let Some(sel) = select {
        let vol = v
            .volumes
            .iter()
            .find(|x| x.select == sel || x.name == sel)
            .with_context(|| format!("no partition or LV '{sel}' (have: {})", names(v)))?;
        let fs = vol.fs.clone().with_context(|| {
            format!(
                "{} holds {}, which cannot be read as files yet",
                vol.name,
                vol.probe
                    .as_ref()
                    .map(|p| p.kind.as_str())
                    .unwrap_or("no known filesystem")
            )
        })?;
        return Ok((GuestTree::new(fs, vol.name.clone()), Vec::new()));
    }
    let roots = roots(v);
    let root = match roots.as_slice() {
        [one] => *one,
        [] => bail!("no root filesystem found (one holding /etc/fstab and an os-release file); volumes: {}; pick one with IMAGE@N or IMAGE@VG/LV", names(v)),
        many => bail!(
            "several root filesystems: {}; choose one with IMAGE@N or IMAGE@VG/LV",
            many.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    tree_for_root(v, root)
}

/// Every volume that holds a guest root (an /etc/fstab and an OS release file).
pub fn roots(v: &Volumes) -> Vec<&Volume> {
    v.volumes
        .iter()
        .filter(|x| x.fs.as_deref().is_some_and(is_root))
        .collect()
}

/// The guest's tree with `root` as its root filesystem and its fstab mounts attached.
pub fn tree_for_root(v: &Volumes, root: &Volume) -> Result<(GuestTree, Vec<String>)> {
    let Some(root_fs) = root.fs.clone() else {
        bail!("the root filesystem cannot be read")
    };
    let mut tree = GuestTree::new(root_fs, root.name.clone());
    let mut notes = Vec::new();
    let fstab = tree.read_file(b"/etc/fstab", 1 << 20).unwrap_or_default();
    for line in String::from_utf8_lossy(&fstab).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [spec, at, kind, ..] = f[..] else {
            continue;
        };
        if spec.starts_with('#')
            || at == "/"
            || !at.starts_with('/')
            || matches!(
                kind,
                "swap"
                    | "proc"
                    | "sysfs"
                    | "tmpfs"
                    | "devpts"
                    | "nfs"
                    | "nfs4"
                    | "cifs"
                    | "none"
                    | "vmhgfs"
                    | "fuse.vmhgfs-fuse"
            )
        {
            continue;
        }
        match find_volume(v, spec, root) {
            Some(vol) => match &vol.fs {
                Some(fs) => tree.attach(at.as_bytes(), fs.clone(), vol.name.clone()),
                None => notes.push(format!(
                    "{at} ({spec}) is on {}, which holds {}: not attached",
                    vol.name,
                    vol.probe
                        .as_ref()
                        .map(|p| p.kind.as_str())
                        .unwrap_or("nothing known")
                )),
            },
            None => notes.push(format!(
                "{at}: '{spec}' matches no disk given; not attached"
            )),
        }
    }
    Ok((tree, notes))
}

fn names(v: &Volumes) -> String {
    v.volumes
        .iter()
        .map(|x| {
            format!(
                "{} ({})",
                x.name,
                x.probe.as_ref().map(|p| p.kind.as_str()).unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which volume an fstab device names: UUID=, LABEL=, /dev/disk/by-*, /dev/mapper/VG-LV,
/// /dev/VG/LV, or a kernel name (sda1, vdb2, hda1, xvda1, nvme0n1p1) by disk order.
pub fn find_volume<'a>(v: &'a Volumes, spec: &str, root: &Volume) -> Option<&'a Volume> {
    let by =
        |f: &dyn Fn(&FsProbe) -> bool| v.volumes.iter().find(|x| x.probe.as_ref().is_some_and(f));
    let unquote = |s: &str| s.trim_matches('"').to_string();
    if let Some(u) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        let u = unquote(u).to_lowercase();
        return by(&|p| p.uuid.as_deref().map(str::to_lowercase) == Some(u.clone()));
    }
    if let Some(l) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        let l = unquote(l);
        return by(&|p| p.label.as_deref() == Some(l.as_str()));
    }
    if let Some(m) = spec.strip_prefix("/dev/mapper/") {
        // VG-LV with '-' inside names doubled.
        let fixed = m.replace("--", "\u{0}");
        let (vg, lv) = fixed.split_once('-')?;
        let sel = format!("{}/{}", vg.replace('\u{0}', "-"), lv.replace('\u{0}', "-"));
        return v.volumes.iter().find(|x| x.select == sel);
    }
    let dev = spec.strip_prefix("/dev/")?;
    if v.volumes.iter().any(|x| x.select == dev) {
        return v.volumes.iter().find(|x| x.select == dev);
    }
    // Kernel names: letter = disk order, digits = partition.
    let (disk, part) = kernel_name(dev)?;
    let _ = root;
    v.volumes
        .iter()
        .find(|x| x.disk_index == Some(disk) && x.partition == part)
}

fn kernel_name(dev: &str) -> Option<(usize, Option<u32>)> {
    if let Some(rest) = dev.strip_prefix("nvme") {
        // nvme0n1p2: namespace N is disk N-1.
        let (_, after) = rest.split_once('n')?;
        let (ns, part) = match after.split_once('p') {
            Some((n, p)) => (n, Some(p.parse().ok()?)),
            None => (after, None),
        };
        return Some((ns.parse::<usize>().ok()?.checked_sub(1)?, part));
    }
    for prefix in ["xvd", "sd", "vd", "hd"] {
        if let Some(rest) = dev.strip_prefix(prefix) {
            let letter = rest.chars().next()?;
            if !letter.is_ascii_lowercase() {
                return None;
            }
            let digits = &rest[1..];
            let part = if digits.is_empty() {
                None
            } else {
                Some(digits.parse().ok()?)
            };
            return Some(((letter as u8 - b'a') as usize, part));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names() {
        assert_eq!(kernel_name("sda1"), Some((0, Some(1))));
        assert_eq!(kernel_name("xvdb2"), Some((1, Some(2))));
        assert_eq!(kernel_name("hda"), Some((0, None)));
        assert_eq!(kernel_name("nvme0n1p3"), Some((0, Some(3))));
        assert_eq!(kernel_name("loop0"), None);
    }

    #[test]
    fn targets() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("d.img");
        std::fs::write(&img, b"x").unwrap();
        let s = img.to_str().unwrap();
        assert_eq!(
            Target::parse(s),
            Target {
                image: img.clone(),
                select: None,
                path: None
            }
        );
        assert_eq!(
            Target::parse(&format!("{s}@2:/etc/fstab")),
            Target {
                image: img.clone(),
                select: Some("2".into()),
                path: Some(b"/etc/fstab".to_vec())
            }
        );
        assert_eq!(
            Target::parse(&format!("{s}@vg/root")).select.as_deref(),
            Some("vg/root")
        );
        assert_eq!(
            Target::parse(&format!("{s}:/a:b")).path.as_deref(),
            Some(&b"/a:b"[..])
        );
    }
}
