//! Which tool built an initramfs, from the layout it leaves, and the generators' own
//! configuration, so that a later rebuild inside the guest (a kernel update runs one)
//! keeps the drivers a conversion added.

use super::modules_dep::normalize;
use super::Generator;
use crate::edit::{lines_with_endings, LineEditor, Patched};

/// initramfs-tools leaves conf/initramfs.conf and scripts/; dracut leaves
/// usr/lib/dracut/ (or lib/dracut/ before the usr merge) and, in its early archive,
/// `early_cpio`; SUSE's old mkinitrd leaves run_all.sh and config/*.sh.
pub fn detect<'a>(paths: impl Iterator<Item = &'a str>) -> Generator {
    let (mut tools, mut dracut, mut mkinitrd) = (false, false, false);
    for p in paths {
        match p {
            "conf/initramfs.conf" | "conf/arch.conf" | "scripts/functions" => tools = true,
            "early_cpio" => dracut = true,
            "run_all.sh" => mkinitrd = true,
            _ => {
                if p.starts_with("usr/lib/dracut/") || p.starts_with("lib/dracut/") {
                    dracut = true;
                } else if p.starts_with("config/") && p.ends_with(".sh") {
                    mkinitrd = true;
                }
            }
        }
    }
    if dracut {
        Generator::Dracut
    } else if tools {
        Generator::InitramfsTools
    } else if mkinitrd {
        Generator::Mkinitrd
    } else {
        Generator::Unknown
    }
}

/// Adds the modules missing from an initramfs-tools module list (the guest's
/// /etc/initramfs-tools/modules, or conf/modules inside an image): one name per line,
/// comments with '#', a module may carry arguments after its name. Names already listed
/// ("-" and "_" alike) are left alone, so patching twice changes nothing.
pub fn patch_initramfs_tools_modules(file: &str, text: &str, modules: &[&str]) -> Patched {
    let listed: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            (!l.starts_with('#'))
                .then(|| l.split_whitespace().next())
                .flatten()
                .map(normalize)
        })
        .collect();
    let mut ed = LineEditor::new(file);
    let mut last = 0;
    for (n, raw) in lines_with_endings(text) {
        ed.keep(raw);
        last = n;
    }
    let mut added: Vec<String> = Vec::new();
    for m in modules {
        let n = normalize(m);
        if listed.contains(&n) || added.contains(&n) {
            continue;
        }
        ed.insert(
            last,
            m,
            format!(
                "{m} is a driver the new hardware needs to reach its root disk or network; \
                 listed so every initramfs rebuilt in the guest loads it early"
            ),
        );
        added.push(n);
    }
    ed.finish()
}

/// A dracut configuration file that makes every image dracut builds in the guest carry
/// the drivers: (guest path, content).
pub fn dracut_conf(modules: &[&str]) -> (String, String) {
    let mut names: Vec<&str> = Vec::new();
    for m in modules {
        if !names.contains(m) {
            names.push(m);
        }
    }
    let content = format!(
        "# Written by transplant: drivers the new hardware needs to find the root disk.\n\
         add_drivers+=\" {} \"\n",
        names.join(" ")
    );
    ("/etc/dracut.conf.d/50-transplant.conf".to_string(), content)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "# List of modules that you want to include in your initramfs.\n\
# They will be loaded at boot time in the order below.\n#\n# Syntax:  module_name [args ...]\n\
#\n# You must run update-initramfs(8) to effect this change.\n#\n# Examples:\n#\n# raid1\n# sd_mod\n";

    #[test]
    fn appends_missing_modules_once() {
        let p = patch_initramfs_tools_modules(
            "/etc/initramfs-tools/modules",
            DEBIAN,
            &["virtio_pci", "virtio_blk", "sd_mod", "virtio_pci"],
        );
        let t = p.text.clone().unwrap();
        assert!(t.starts_with(DEBIAN));
        assert!(t.ends_with("\nvirtio_pci\nvirtio_blk\nsd_mod\n"), "{t}");
        assert_eq!(p.edits.len(), 3);
        let again = patch_initramfs_tools_modules("/f", &t, &["virtio_pci", "virtio-blk"]);
        assert_eq!(again.text, None);
    }

    #[test]
    fn keeps_crlf_no_final_newline_and_args() {
        let p = patch_initramfs_tools_modules(
            "/f",
            "dm-mod\r\nahci  foo=1",
            &["dm_mod", "ahci", "nvme"],
        );
        assert_eq!(p.text.as_deref(), Some("dm-mod\r\nahci  foo=1\nnvme\n"));
        let p = patch_initramfs_tools_modules("/f", "", &["nvme"]);
        assert_eq!(p.text.as_deref(), Some("nvme\n"));
    }

    #[test]
    fn dracut_file() {
        let (path, c) = dracut_conf(&["virtio_blk", "virtio_pci", "virtio_blk"]);
        assert_eq!(path, "/etc/dracut.conf.d/50-transplant.conf");
        assert!(c.contains("add_drivers+=\" virtio_blk virtio_pci \"\n"));
    }

    #[test]
    fn detects_generators() {
        let d = |v: &[&str]| detect(v.iter().copied());
        assert_eq!(
            d(&["init", "conf/initramfs.conf"]),
            Generator::InitramfsTools
        );
        assert_eq!(d(&["usr/lib/dracut/modules.txt"]), Generator::Dracut);
        assert_eq!(d(&["run_all.sh", "config/storage.sh"]), Generator::Mkinitrd);
        assert_eq!(d(&["init"]), Generator::Unknown);
    }
}
