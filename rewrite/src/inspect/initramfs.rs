//! The initramfs images in `/boot`, which generator built them, how each is compressed,
//! and which of the targets' drivers each holds. A missing disk driver in the initramfs
//! is what makes a moved guest stop at "Gave up waiting for root device".
//!
//! Compression is read from magic bytes here (after any uncompressed early archives,
//! which are walked header by header); the member listing comes from the caller, who has
//! the cpio reader.

use super::kernels::{is_module_file, module_name, version_cmp, Kernel};
use crate::guest_files::GuestFiles;
use serde::Serialize;

/// Lists the member names of an initramfs image's bytes (every concatenated archive,
/// decompressed); the cpio reader provides it.
pub type ListMembers = dyn Fn(&[u8]) -> Result<Vec<String>, String>;

/// The initramfs module's types: one notion of generator and compression for both
/// inspection and rewriting.
pub use crate::initramfs::{detect_compression as compression_of, Compression, Generator};

fn hex8(b: &[u8], at: usize) -> Option<usize> {
    let s = std::str::from_utf8(b.get(at..at + 8)?).ok()?;
    usize::from_str_radix(s, 16).ok()
}

/// Where an uncompressed newc/crc archive starting at `start` ends (after its trailer and
/// any zero padding), walking at most `max_members` headers.
fn skip_cpio(b: &[u8], start: usize, max_members: usize) -> Option<usize> {
    let mut pos = start;
    for _ in 0..max_members {
        let h = b.get(pos..pos.checked_add(110)?)?;
        if !(h.starts_with(b"070701") || h.starts_with(b"070702")) {
            return None;
        }
        let filesize = hex8(h, 54)?;
        let namesize = hex8(h, 94)?;
        let name = b.get(pos + 110..(pos + 110).checked_add(namesize)?)?;
        let name_end = (pos + 110 + namesize).checked_add(3)? & !3;
        let data_end = name_end.checked_add(filesize)?.checked_add(3)? & !3;
        pos = data_end;
        if name.starts_with(b"TRAILER!!!") {
            while b.get(pos) == Some(&0) {
                pos += 1;
            }
            return Some(pos);
        }
    }
    None
}

/// The compression of each concatenated segment: early uncompressed archives, then the
/// main one.
pub fn segments(b: &[u8]) -> Vec<Compression> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while out.len() < 16 {
        let Some(rest) = b.get(pos..) else { break };
        if rest.is_empty() {
            break;
        }
        let c = compression_of(rest);
        out.push(c);
        if c != Compression::None {
            break;
        }
        match skip_cpio(b, pos, 1 << 20) {
            Some(end) if end > pos => pos = end,
            _ => break,
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverPresence {
    pub name: String,
    /// In the archive as a module.
    pub in_image: bool,
    /// Built into the kernel this image is for (needs no module).
    pub builtin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitramfsImage {
    pub path: String,
    /// The kernel version its name says it is for.
    pub kernel_version: Option<String>,
    pub size: Option<u64>,
    /// Each concatenated segment's compression, in order (`none` first for an early
    /// microcode archive).
    pub compression: Vec<Compression>,
    /// Number of members, when they could be listed.
    pub members: Option<usize>,
    /// Every driver some target needs: whether the image holds it.
    pub drivers: Vec<DriverPresence>,
    /// Why the members could not be listed.
    pub error: Option<String>,
}

impl InitramfsImage {
    /// Drivers of `wanted` neither in the image nor built in (None: not listed).
    pub fn lacks(&self, wanted: &[&str]) -> Option<Vec<String>> {
        self.members?;
        Some(
            wanted
                .iter()
                .filter(|w| {
                    !self
                        .drivers
                        .iter()
                        .any(|d| d.name == **w && (d.in_image || d.builtin))
                })
                .map(|w| w.to_string())
                .collect(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitramfsInfo {
    pub generator: Generator,
    /// Files that show the generator (`/usr/sbin/mkinitramfs`, `/etc/dracut.conf`, ...).
    pub generator_evidence: Vec<String>,
    pub images: Vec<InitramfsImage>,
}

/// The generator installed in the guest. dracut wins over a `mkinitrd` that is its
/// wrapper (RHEL 6+, SLES 12+).
pub fn generator(guest: &dyn GuestFiles) -> (Generator, Vec<String>) {
    let found = |paths: &[&str]| -> Vec<String> {
        paths
            .iter()
            .filter(|p| guest.exists(p))
            .map(|p| p.to_string())
            .collect()
    };
    for (g, paths) in [
        (
            Generator::Dracut,
            &[
                "/usr/bin/dracut",
                "/sbin/dracut",
                "/usr/sbin/dracut",
                "/etc/dracut.conf",
                "/usr/lib/dracut",
            ][..],
        ),
        (
            Generator::InitramfsTools,
            &[
                "/usr/sbin/mkinitramfs",
                "/usr/sbin/update-initramfs",
                "/etc/initramfs-tools/initramfs.conf",
                "/usr/share/initramfs-tools",
            ][..],
        ),
        (
            Generator::Mkinitcpio,
            &["/usr/bin/mkinitcpio", "/etc/mkinitcpio.conf"][..],
        ),
        (
            Generator::Mkinitrd,
            &[
                "/sbin/mkinitrd",
                "/usr/sbin/mkinitrd",
                "/etc/sysconfig/mkinitrd",
            ][..],
        ),
    ] {
        let f = found(paths);
        if !f.is_empty() {
            return (g, f);
        }
    }
    (Generator::Unknown, Vec::new())
}

/// The kernel version an image's name is for.
pub fn image_version(name: &str) -> Option<String> {
    let v = if let Some(r) = name.strip_prefix("initrd.img-") {
        r
    } else if let Some(r) = name.strip_prefix("initramfs-") {
        r.strip_suffix(".img")?
    } else if let Some(r) = name.strip_prefix("initrd-") {
        r.strip_suffix(".img").unwrap_or(r)
    } else {
        return None;
    };
    (!v.is_empty()).then(|| v.to_string())
}

/// The images of `/boot`, each inspected. `list` gives the member names of an image's
/// bytes (all segments), as the cpio reader reads them.
pub fn find(
    guest: &dyn GuestFiles,
    kernels: &[Kernel],
    list: &ListMembers,
    wanted: &[&str],
) -> InitramfsInfo {
    let (generator, generator_evidence) = generator(guest);
    let mut images = Vec::new();
    for n in guest.list("/boot") {
        let Some(version) = image_version(&n) else {
            continue;
        };
        if n.ends_with(".pre-transplant") || n.ends_with(".bak") || n.ends_with(".old") {
            continue;
        }
        let path = format!("/boot/{n}");
        if guest.kind(&path) != Some(transplant_fs::FileKind::File) {
            continue;
        }
        let size = guest.size(&path);
        let kernel = kernels
            .iter()
            .find(|k| version == k.version || version.starts_with(&format!("{}-", k.version)));
        let mut img = InitramfsImage {
            path: path.clone(),
            kernel_version: Some(version.clone()),
            size,
            compression: Vec::new(),
            members: None,
            drivers: Vec::new(),
            error: None,
        };
        match guest.read(&path, 1 << 30) {
            Ok(bytes) => {
                img.compression = segments(&bytes);
                match list(&bytes) {
                    Ok(names) => {
                        let mods: Vec<String> = names
                            .iter()
                            .filter(|m| is_module_file(m))
                            .map(|m| module_name(m))
                            .collect();
                        img.members = Some(names.len());
                        img.drivers = wanted
                            .iter()
                            .map(|w| DriverPresence {
                                name: w.to_string(),
                                in_image: mods.iter().any(|m| m == w),
                                builtin: kernel.is_some_and(|k| {
                                    k.driver(w).is_some_and(|d| {
                                        d.state == super::kernels::DriverState::Builtin
                                    })
                                }),
                            })
                            .collect();
                    }
                    Err(e) => img.error = Some(e),
                }
            }
            Err(e) => img.error = Some(e),
        }
        images.push(img);
    }
    images.sort_by(|a, b| {
        version_cmp(
            a.kernel_version.as_deref().unwrap_or(""),
            b.kernel_version.as_deref().unwrap_or(""),
        )
    });
    InitramfsInfo {
        generator,
        generator_evidence,
        images,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_files::MemGuest;

    fn newc(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h =
            format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1, 0o100644, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
        )
            .into_bytes();
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        while h.len() % 4 != 0 {
            h.push(0);
        }
        h.extend_from_slice(data);
        while h.len() % 4 != 0 {
            h.push(0);
        }
        h
    }

    #[test]
    fn early_archive_then_compressed() {
        let mut b = newc("kernel/x86/microcode/GenuineIntel.bin", b"ucode");
        b.extend(newc("TRAILER!!!", b""));
        b.resize(512, 0);
        b.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]);
        assert_eq!(segments(&b), [Compression::None, Compression::Zstd]);
        assert_eq!(segments(&[0x1f, 0x8b, 8]), [Compression::Gzip]);
        assert_eq!(segments(b"070701zz"), [Compression::None]);
        assert!(segments(b"").is_empty());
    }

    #[test]
    fn images_and_generator() {
        let g = MemGuest::new()
            .file("/usr/sbin/mkinitramfs", "#!/bin/sh")
            .file("/boot/initrd.img-6.1.0-18-amd64", [0x1f, 0x8b, 8, 0])
            .file(
                "/boot/initrd.img-6.1.0-18-amd64.pre-transplant",
                [0x1f, 0x8b, 8, 0],
            );
        let list = |_: &[u8]| -> Result<Vec<String>, String> {
            Ok(vec![
                "usr/lib/modules/6.1.0-18-amd64/kernel/drivers/ata/ahci.ko".into(),
                "init".into(),
            ])
        };
        let info = find(&g, &[], &list, &["ahci", "virtio_blk"]);
        assert_eq!(info.generator, Generator::InitramfsTools);
        assert_eq!(info.images.len(), 1);
        let i = &info.images[0];
        assert_eq!(i.compression, [Compression::Gzip]);
        assert_eq!(i.members, Some(2));
        assert_eq!(
            i.lacks(&["ahci", "virtio_blk"]),
            Some(vec!["virtio_blk".to_string()])
        );
        assert_eq!(
            image_version("initramfs-3.10.0-1160.el7.x86_64.img").as_deref(),
            Some("3.10.0-1160.el7.x86_64")
        );
        assert_eq!(
            image_version("initrd-2.6.16.60-0.54.5-xen").as_deref(),
            Some("2.6.16.60-0.54.5-xen")
        );
        assert_eq!(image_version("initrd"), None);
    }
}
