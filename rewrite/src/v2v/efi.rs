//! UEFI guests. The firmware finds an installed system through a boot entry in its NVRAM
//! (`\EFI\debian\shimx64.efi`), and NVRAM is part of the old machine, not of the disk:
//! on the new one the firmware only tries the removable-media path,
//! `\EFI\BOOT\BOOTX64.EFI`. RHEL's shim package puts a loader there already; Debian and
//! Ubuntu do not unless asked (`grub-install --force-extra-removable`), so such a guest
//! stops at the firmware's boot menu after a move. The conversion copies the vendor's
//! loader there, as `grub-install --removable` would: shim as `BOOTX64.EFI` with the GRUB
//! it chains to (`grubx64.efi`, which shim looks for in its own folder) and the MOK
//! manager, or GRUB itself when there is no shim, and the vendor's `grub.cfg` for GRUB
//! builds that read their configuration from the folder they were started from.

use crate::edit::{Edit, Warning};
use crate::guest_files::GuestFiles;
use crate::inspect::bootloader::{EfiLayout, EfiVendor};
use crate::patch::{Action, FileChange};

/// The largest EFI binary copied (shim and GRUB are 1-4 MiB).
const MAX_LOADER: u64 = 64 << 20;

/// Folders under `EFI/` that are not a Linux vendor's.
const NOT_LINUX: [&str; 3] = ["BOOT", "Microsoft", "tools"];

/// The vendor folder to boot from: the one with a loader (shim preferred), and when
/// several have one, the one named like the guest's OS (`os_id`, as os-release's ID).
fn pick<'a>(efi: &'a EfiLayout, os_id: Option<&str>) -> (Option<&'a EfiVendor>, usize) {
    let usable: Vec<&EfiVendor> = efi
        .vendors
        .iter()
        .filter(|v| !NOT_LINUX.iter().any(|n| v.name.eq_ignore_ascii_case(n)))
        .filter(|v| v.shim || v.grub)
        .collect();
    let named = os_id.and_then(|id| {
        usable.iter().copied().find(|v| {
            v.name.eq_ignore_ascii_case(id)
                || (v.name.eq_ignore_ascii_case("redhat")
                    && matches!(id, "rhel" | "centos" | "rocky" | "almalinux" | "ol"))
                || (v.name.eq_ignore_ascii_case("opensuse") && id.starts_with("opensuse"))
        })
    });
    let best = named.or_else(|| {
        usable
            .iter()
            .copied()
            .find(|v| v.shim)
            .or(usable.first().copied())
    });
    (best, usable.len())
}

fn find<'a>(v: &'a EfiVendor, prefix: &str, suffix: &str) -> Option<&'a String> {
    v.files.iter().find(|f| {
        let l = f.to_ascii_lowercase();
        l.starts_with(prefix) && l.ends_with(suffix)
    })
}

/// The copies to the fallback path, when the guest boots by UEFI without one; a warning
/// when it cannot be made.
pub fn plan(
    guest: &dyn GuestFiles,
    efi: Option<&EfiLayout>,
    os_id: Option<&str>,
) -> (Vec<FileChange>, Vec<Warning>) {
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    let Some(efi) = efi else {
        return (changes, warnings);
    };
    if !efi.readable || efi.fallback_loader {
        return (changes, warnings);
    }
    let (vendor, candidates) = pick(efi, os_id);
    let Some(vendor) = vendor else {
        warnings.push(Warning::new(
            Some(&efi.fallback_path),
            None,
            "UEFI guest without a removable-media loader, and no shim or GRUB found under \
             /boot/efi/EFI to copy there: the new machine's firmware will need a boot entry \
             made by hand",
        ));
        return (changes, warnings);
    };
    let (dir, name) = match efi.fallback_path.rsplit_once('/') {
        Some(x) => x,
        None => return (changes, warnings),
    };
    let src_dir = format!("/boot/efi/EFI/{}", vendor.name);
    let shim = vendor.shim.then(|| find(vendor, "shim", ".efi")).flatten();
    let grub = find(vendor, "grub", ".efi");
    let mut copies: Vec<(String, String, &str)> = Vec::new();
    match (shim, grub) {
        (Some(s), g) => {
            copies.push((s.clone(), name.to_string(), "shim, which the firmware runs"));
            if let Some(g) = g {
                copies.push((
                    g.clone(),
                    g.clone(),
                    "the GRUB shim starts, from shim's folder",
                ));
            }
            if let Some(m) = find(vendor, "mm", ".efi") {
                copies.push((m.clone(), m.clone(), "shim's MOK manager"));
            }
        }
        (None, Some(g)) => {
            copies.push((g.clone(), name.to_string(), "GRUB, which the firmware runs"))
        }
        (None, None) => return (changes, warnings),
    }
    if let Some(cfg) = &vendor.grub_cfg {
        if let Some((_, f)) = cfg.rsplit_once('/') {
            copies.push((f.to_string(), f.to_string(), "GRUB's configuration, for GRUB builds that read it from the folder they started from"));
        }
    }
    for (from, to, what) in copies {
        let src = format!("{src_dir}/{from}");
        let dst = format!("{dir}/{to}");
        if guest.exists(&dst) {
            continue;
        }
        match guest.read(&src, MAX_LOADER) {
            Ok(data) => changes.push(FileChange {
                path: dst.clone(),
                action: Action::Replace(data),
                edits: vec![Edit {
                    file: dst,
                    line: None,
                    before: String::new(),
                    after: format!("copy of {src}"),
                    reason: format!(
                        "{what}: the old machine's NVRAM boot entry does not move with the \
                         disk, and the new machine's firmware runs {} when it has none",
                        efi.fallback_path
                    ),
                }],
            }),
            Err(e) => warnings.push(Warning::new(
                Some(&src),
                None,
                format!("cannot copy it to the removable-media path: {e}"),
            )),
        }
    }
    if candidates > 1 && !changes.is_empty() {
        warnings.push(Warning::new(
            Some(&efi.fallback_path),
            None,
            format!(
                "several boot loaders under /boot/efi/EFI; {} was made the removable-media \
                 loader",
                vendor.name
            ),
        ));
    }
    (changes, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_files::MemGuest;

    fn vendor(name: &str, files: &[&str]) -> EfiVendor {
        EfiVendor {
            name: name.into(),
            files: files.iter().map(|s| s.to_string()).collect(),
            grub_cfg: files
                .iter()
                .find(|f| f.eq_ignore_ascii_case("grub.cfg"))
                .map(|f| format!("/boot/efi/EFI/{name}/{f}")),
            shim: files.iter().any(|f| f.starts_with("shim")),
            grub: files
                .iter()
                .any(|f| f.starts_with("grub") && f.ends_with(".efi")),
        }
    }

    fn layout(vendors: Vec<EfiVendor>, fallback: bool) -> EfiLayout {
        EfiLayout {
            readable: true,
            evidence: vec!["/etc/fstab mounts /boot/efi".into()],
            vendors,
            fallback_loader: fallback,
            fallback_path: "/boot/efi/EFI/BOOT/BOOTX64.EFI".into(),
        }
    }

    fn debian() -> MemGuest {
        MemGuest::new()
            .file("/boot/efi/EFI/debian/shimx64.efi", b"MZshim")
            .file("/boot/efi/EFI/debian/grubx64.efi", b"MZgrub")
            .file("/boot/efi/EFI/debian/mmx64.efi", b"MZmm")
            .file("/boot/efi/EFI/debian/fbx64.efi", b"MZfb")
            .file(
                "/boot/efi/EFI/debian/grub.cfg",
                "search.fs_uuid 1234 root\n",
            )
            .file("/boot/efi/EFI/debian/BOOTX64.CSV", "shimx64.efi,debian,,\n")
    }

    fn debian_layout() -> EfiLayout {
        layout(
            vec![vendor(
                "debian",
                &[
                    "BOOTX64.CSV",
                    "fbx64.efi",
                    "grub.cfg",
                    "grubx64.efi",
                    "mmx64.efi",
                    "shimx64.efi",
                ],
            )],
            false,
        )
    }

    #[test]
    fn debian_shim_becomes_the_fallback() {
        let g = debian();
        let (c, w) = plan(&g, Some(&debian_layout()), Some("debian"));
        assert!(w.is_empty(), "{w:?}");
        let got: Vec<(&str, &[u8])> = c
            .iter()
            .map(|c| match &c.action {
                Action::Replace(d) => (c.path.as_str(), d.as_slice()),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/boot/efi/EFI/BOOT/BOOTX64.EFI", b"MZshim".as_slice()),
                ("/boot/efi/EFI/BOOT/grubx64.efi", b"MZgrub".as_slice()),
                ("/boot/efi/EFI/BOOT/mmx64.efi", b"MZmm".as_slice()),
                (
                    "/boot/efi/EFI/BOOT/grub.cfg",
                    b"search.fs_uuid 1234 root\n".as_slice()
                ),
            ]
        );
        assert!(c[0].edits[0].reason.contains("NVRAM"));
    }

    #[test]
    fn nothing_when_the_fallback_exists_or_no_efi() {
        let g = debian();
        let mut l = debian_layout();
        l.fallback_loader = true;
        assert!(plan(&g, Some(&l), None).0.is_empty());
        assert!(plan(&g, None, None).0.is_empty());
        let mut l = debian_layout();
        l.readable = false;
        assert!(plan(&g, Some(&l), None).0.is_empty());
    }

    #[test]
    fn grub_alone_and_the_os_picks_among_several() {
        let g = MemGuest::new()
            .file("/boot/efi/EFI/ubuntu/grubx64.efi", b"MZubuntu")
            .file("/boot/efi/EFI/redhat/shimx64.efi", b"MZrhshim")
            .file("/boot/efi/EFI/redhat/grubx64.efi", b"MZrhgrub");
        let l = layout(
            vec![
                vendor("Microsoft", &["bootmgfw.efi"]),
                vendor("redhat", &["grubx64.efi", "shimx64.efi"]),
                vendor("ubuntu", &["grubx64.efi"]),
            ],
            false,
        );
        let (c, w) = plan(&g, Some(&l), Some("ubuntu"));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].action, Action::Replace(b"MZubuntu".to_vec()));
        assert_eq!(w.len(), 1, "several loaders: said which");
        let (c, _) = plan(&g, Some(&l), Some("rocky"));
        assert_eq!(c[0].action, Action::Replace(b"MZrhshim".to_vec()));
        let (c, _) = plan(&g, Some(&l), None);
        assert_eq!(
            c[0].action,
            Action::Replace(b"MZrhshim".to_vec()),
            "shim first"
        );
    }

    #[test]
    fn no_loader_is_a_warning() {
        let l = layout(vec![vendor("Microsoft", &["bootmgfw.efi"])], false);
        let (c, w) = plan(&MemGuest::new(), Some(&l), None);
        assert!(c.is_empty());
        assert_eq!(w.len(), 1);
    }
}
