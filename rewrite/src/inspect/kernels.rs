//! The installed kernels: each `/boot/vmlinuz-*` (or `vmlinux-*`) with its modules
//! directory, and for every driver some target needs whether it is built in, a module
//! (which file), or missing. Xen-PV-only kernels (the old `-xen`/`xenU` flavours, or a
//! config with `CONFIG_X86_XEN`) cannot boot anywhere but on a Xen PV host.

use crate::context::Target;
use crate::guest_files::GuestFiles;
use serde::Serialize;
use transplant_fs::FileKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverState {
    /// In the kernel image itself (`modules.builtin` or `=y` in its config).
    Builtin,
    /// A module file in the kernel's modules directory.
    Module,
    Missing,
    /// Neither a modules directory nor a config to tell.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Driver {
    pub name: String,
    pub state: DriverState,
    /// The module's path under the modules directory (`kernel/drivers/block/virtio_blk.ko.xz`).
    pub module: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// As `uname -r` says (`6.1.0-18-amd64`).
    pub version: String,
    pub image: String,
    pub modules_dir: Option<String>,
    pub config: Option<String>,
    /// `amd64`, `generic`, `default`, `xen`, `el7.x86_64`, ... (the version's last part).
    pub flavour: Option<String>,
    pub xen_pv_only: bool,
    /// Why it is taken for Xen-PV-only.
    pub xen_reason: Option<String>,
    /// Every driver any target needs, in [`DRIVERS`] order.
    pub drivers: Vec<Driver>,
    /// The bootloader's default (or, without one, the newest).
    pub is_default: bool,
}

impl Kernel {
    pub fn driver(&self, name: &str) -> Option<&Driver> {
        let n = module_name(name);
        self.drivers.iter().find(|d| d.name == n)
    }

    pub fn has(&self, name: &str) -> bool {
        self.driver(name)
            .is_some_and(|d| matches!(d.state, DriverState::Builtin | DriverState::Module))
    }

    /// The essential drivers of `target` this kernel lacks.
    pub fn missing_for(&self, target: Target) -> Vec<String> {
        target
            .essential_modules()
            .iter()
            .filter(|m| !self.has(m))
            .map(|m| m.to_string())
            .collect()
    }

    /// Whether this kernel can boot `target`.
    pub fn usable_for(&self, target: Target) -> bool {
        !self.xen_pv_only && self.missing_for(target).is_empty()
    }
}

/// Drivers checked on every kernel: what each target loads, and their dependencies.
pub const DRIVERS: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "scsi_mod",
    "sd_mod",
    "libahci",
    "ahci",
    "nvme_core",
    "nvme",
    "e1000e",
    "igb",
    "ixgbe",
    "r8169",
    "tg3",
    "bnx2",
    "e1000",
];

/// The config symbol of each driver, for kernels without `modules.builtin` (before
/// 2.6.33).
fn config_symbol(driver: &str) -> Option<&'static str> {
    Some(match driver {
        "virtio" => "CONFIG_VIRTIO",
        "virtio_ring" => "CONFIG_VIRTIO_RING",
        "virtio_pci" => "CONFIG_VIRTIO_PCI",
        "virtio_pci_modern_dev" => "CONFIG_VIRTIO_PCI_LIB",
        "virtio_pci_legacy_dev" => "CONFIG_VIRTIO_PCI_LIB_LEGACY",
        "virtio_blk" => "CONFIG_VIRTIO_BLK",
        "virtio_scsi" => "CONFIG_SCSI_VIRTIO",
        "virtio_net" => "CONFIG_VIRTIO_NET",
        "scsi_mod" => "CONFIG_SCSI",
        "sd_mod" => "CONFIG_BLK_DEV_SD",
        "libahci" | "ahci" => "CONFIG_SATA_AHCI",
        "nvme_core" => "CONFIG_NVME_CORE",
        "nvme" => "CONFIG_BLK_DEV_NVME",
        "e1000e" => "CONFIG_E1000E",
        "igb" => "CONFIG_IGB",
        "ixgbe" => "CONFIG_IXGBE",
        "r8169" => "CONFIG_R8169",
        "tg3" => "CONFIG_TIGON3",
        "bnx2" => "CONFIG_BNX2",
        "e1000" => "CONFIG_E1000",
        _ => return None,
    })
}

/// `kernel/drivers/block/virtio_blk.ko.xz` → `virtio_blk` (dashes as underscores, as
/// the kernel compares them).
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = match base.find(".ko") {
        Some(i) => base.get(..i).unwrap_or(base),
        None => base,
    };
    base.replace('-', "_")
}

/// Whether a file name is a kernel module (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`).
pub fn is_module_file(name: &str) -> bool {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// Orders kernel versions as humans do (`5.10` after `5.9`, `-18` after `-9`).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((ld, chunk)) if *ld == d => chunk.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (xs, ys) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xs.len().cmp(&ys.len()).then_with(|| xs.cmp(ys))
            }
            _ => x.1.cmp(&y.1),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Xen-PV-only flavours: SUSE `-xen`, RHEL 5 `el5xen`, Debian `-xen-686`, `xenU`.
fn xen_flavour(version: &str) -> bool {
    let v = version.to_ascii_lowercase();
    v.ends_with("xen")
        || v.ends_with("xenu")
        || v.contains("-xen-")
        || v.ends_with("-xen")
        || v.contains("xenu-")
}

/// Every kernel version in `/boot`, with its image path.
pub fn kernel_images(guest: &dyn GuestFiles) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for n in guest.list("/boot") {
        let Some(v) = n
            .strip_prefix("vmlinuz-")
            .or_else(|| n.strip_prefix("vmlinux-"))
        else {
            continue;
        };
        if v.is_empty() || n.ends_with(".hmac") || n.ends_with(".sig") || n.ends_with(".old") {
            continue;
        }
        let path = format!("/boot/{n}");
        if guest.kind(&path) != Some(FileKind::File) {
            continue;
        }
        // vmlinux-X.gz next to vmlinuz-X (SUSE) is the same kernel.
        let v = v.trim_end_matches(".gz").to_string();
        if !out.iter().any(|(x, _)| *x == v) {
            out.push((v, path));
        }
    }
    out.sort_by(|a, b| version_cmp(&a.0, &b.0));
    out
}

/// The modules directory of a kernel version: `/lib/modules/V` or `/usr/lib/modules/V`;
/// Arch names its image `vmlinuz-linux` and says which directory in `pkgbase`.
fn modules_dir(guest: &dyn GuestFiles, version: &str) -> Option<(String, String)> {
    for base in ["/lib/modules", "/usr/lib/modules"] {
        let d = format!("{base}/{version}");
        if guest.kind(&d) == Some(FileKind::Dir) {
            return Some((d, version.to_string()));
        }
    }
    for base in ["/lib/modules", "/usr/lib/modules"] {
        for v in guest.list(base) {
            let pk = guest.read_text(&format!("{base}/{v}/pkgbase"));
            if pk.as_deref().map(str::trim) == Some(version) {
                return Some((format!("{base}/{v}"), v));
            }
        }
    }
    None
}

/// Module files under `dir` (relative paths), walking at most `limit` entries; used when a
/// kernel has no `modules.dep`.
fn walk_modules(guest: &dyn GuestFiles, dir: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    let mut seen = 0usize;
    while let Some(rel) = stack.pop() {
        let full = if rel.is_empty() {
            dir.to_string()
        } else {
            format!("{dir}/{rel}")
        };
        for n in guest.list(&full) {
            seen += 1;
            if seen > limit {
                return out;
            }
            let r = if rel.is_empty() {
                n.clone()
            } else {
                format!("{rel}/{n}")
            };
            if is_module_file(&n) {
                out.push(r);
            } else if !matches!(n.as_str(), "build" | "source")
                && guest.kind(&format!("{full}/{n}")) == Some(FileKind::Dir)
            {
                stack.push(r);
            }
        }
    }
    out
}

fn describe(guest: &dyn GuestFiles, version: &str, image: &str) -> Kernel {
    let md = modules_dir(guest, version);
    let config = [format!("/boot/config-{version}")]
        .into_iter()
        .chain(md.as_ref().map(|(d, _)| format!("{d}/config")))
        .find(|p| guest.exists(p));
    let config_text = config.as_deref().and_then(|p| guest.read_text(p));
    let config_val = |sym: &str| -> Option<char> {
        let t = config_text.as_deref()?;
        t.lines().find_map(|l| {
            let v = l.strip_prefix(sym)?.strip_prefix('=')?;
            v.chars().next()
        })
    };
    let builtin: Option<Vec<String>> = md.as_ref().and_then(|(d, _)| {
        guest
            .read_text(&format!("{d}/modules.builtin"))
            .map(|t| t.lines().map(module_name).collect())
    });
    let modules: Option<Vec<String>> =
        md.as_ref().map(
            |(d, _)| match guest.read_text(&format!("{d}/modules.dep")) {
                Some(t) => t
                    .lines()
                    .filter_map(|l| l.split_once(':').map(|(m, _)| m.trim().to_string()))
                    .collect(),
                None => walk_modules(guest, d, 50_000),
            },
        );
    let drivers = DRIVERS
        .iter()
        .map(|name| {
            let module = modules
                .as_ref()
                .and_then(|ms| ms.iter().find(|m| module_name(m) == *name).cloned());
            let in_builtin = builtin.as_ref().map(|b| b.iter().any(|m| m == name));
            let cfg = config_symbol(name).and_then(config_val);
            let state = if in_builtin == Some(true) || (in_builtin.is_none() && cfg == Some('y')) {
                DriverState::Builtin
            } else if module.is_some() {
                DriverState::Module
            } else if md.is_some() || cfg.is_some() || config_text.is_some() {
                DriverState::Missing
            } else {
                DriverState::Unknown
            };
            Driver {
                name: name.to_string(),
                state,
                module,
            }
        })
        .collect();
    let xen_cfg = ["CONFIG_X86_XEN", "CONFIG_X86_64_XEN"]
        .into_iter()
        .find(|s| config_val(s) == Some('y'));
    let (xen_pv_only, xen_reason) = if xen_flavour(version) {
        (
            true,
            Some(format!(
                "{version} is a Xen PV flavour (it runs only as a Xen PV guest)"
            )),
        )
    } else if let Some(s) = xen_cfg {
        (
            true,
            Some(format!(
                "its config sets {s}=y: a Xen-only (non-pvops) kernel"
            )),
        )
    } else {
        (false, None)
    };
    let flavour = version
        .rsplit(['-', '.'])
        .next()
        .filter(|f| f.chars().any(|c| c.is_ascii_alphabetic()))
        .map(|f| {
            if version.contains(".el") {
                version
                    .rsplit_once(".el")
                    .map(|(_, r)| format!("el{r}"))
                    .unwrap_or_else(|| f.to_string())
            } else {
                f.to_string()
            }
        });
    Kernel {
        version: md
            .as_ref()
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| version.to_string()),
        image: image.to_string(),
        modules_dir: md.map(|(d, _)| d),
        config,
        flavour,
        xen_pv_only,
        xen_reason,
        drivers,
        is_default: false,
    }
}

/// Every kernel in `/boot`, oldest first.
pub fn find(guest: &dyn GuestFiles) -> Vec<Kernel> {
    kernel_images(guest)
        .into_iter()
        .map(|(v, img)| describe(guest, &v, &img))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_kernel_with_modules() {
        let d = "/lib/modules/6.1.0-18-amd64";
        let g = crate::guest_files::MemGuest::new()
            .file("/boot/vmlinuz-6.1.0-18-amd64", b"k")
            .file("/boot/vmlinuz-5.10.0-9-amd64", b"k")
            .file(&format!("{d}/modules.builtin"), "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/scsi/scsi_mod.ko\n")
            .file(&format!("{d}/modules.dep"), "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio_pci.ko.xz:\nkernel/drivers/scsi/sd_mod.ko.xz:\nkernel/drivers/ata/ahci.ko.xz: kernel/drivers/ata/libahci.ko.xz\nkernel/drivers/ata/libahci.ko.xz:\nkernel/drivers/nvme/host/nvme.ko.xz: kernel/drivers/nvme/host/nvme-core.ko.xz\nkernel/drivers/nvme/host/nvme-core.ko.xz:\n");
        let ks = find(&g);
        assert_eq!(ks.len(), 2);
        assert_eq!(ks[1].version, "6.1.0-18-amd64");
        assert_eq!(ks[1].flavour.as_deref(), Some("amd64"));
        let k = &ks[1];
        assert_eq!(k.driver("virtio").unwrap().state, DriverState::Builtin);
        assert_eq!(
            k.driver("virtio_blk").unwrap().module.as_deref(),
            Some("kernel/drivers/block/virtio_blk.ko.xz")
        );
        assert!(k.has("nvme_core"));
        assert_eq!(k.driver("virtio_scsi").unwrap().state, DriverState::Missing);
        assert!(k.usable_for(Target::Kvm));
        assert!(k.usable_for(Target::Physical));
        assert!(!k.usable_for(Target::KvmScsi));
        // No modules directory, no config: unknown, so not usable.
        assert_eq!(
            ks[0].driver("virtio_blk").unwrap().state,
            DriverState::Unknown
        );
        assert!(!ks[0].usable_for(Target::Kvm));
    }

    #[test]
    fn xen_kernels() {
        let g = crate::guest_files::MemGuest::new()
            .file("/boot/vmlinuz-2.6.16.60-0.54.5-xen", b"k")
            .file(
                "/lib/modules/2.6.16.60-0.54.5-xen/modules.dep",
                "kernel/drivers/xen/blkfront/xenblk.ko:\n",
            )
            .file("/boot/vmlinuz-2.6.18-398.el5", b"k")
            .file(
                "/boot/config-2.6.18-398.el5",
                "CONFIG_X86_XEN=y\nCONFIG_VIRTIO_BLK=m\n",
            )
            .file("/boot/vmlinuz-3.10.0-1160.el7.x86_64", b"k")
            .file(
                "/boot/config-3.10.0-1160.el7.x86_64",
                "CONFIG_XEN=y\nCONFIG_VIRTIO_BLK=m\n",
            );
        let ks = find(&g);
        assert_eq!(ks.len(), 3);
        assert!(ks[0].xen_pv_only, "{:?}", ks[0]);
        assert!(ks[1].xen_pv_only);
        assert!(ks[1]
            .xen_reason
            .as_deref()
            .unwrap()
            .contains("CONFIG_X86_XEN"));
        assert!(!ks[2].xen_pv_only);
        assert_eq!(ks[2].flavour.as_deref(), Some("el7.x86_64"));
        // Config says module, but there is no modules directory: missing.
        assert_eq!(
            ks[2].driver("virtio_blk").unwrap().state,
            DriverState::Missing
        );
    }

    #[test]
    fn orders_versions() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("5.10.0-9", "5.9.0-18"), Greater);
        assert_eq!(version_cmp("6.1.0-18-amd64", "6.1.0-9-amd64"), Greater);
        assert_eq!(version_cmp("1.0", "1.0"), Equal);
        assert_eq!(module_name("a/nvme-core.ko.zst"), "nvme_core");
    }
}
