//! Which format a file holds, decided by magic bytes alone: never by file name, because
//! exports get renamed (`disk.img` that is really qcow2). A file is raw only when nothing
//! else matches, and the caller is told so ("probed as raw"), since writing a guest through a
//! mis-probed header would corrupt it.

use crate::blockdev::BlockDev;
use crate::error::Result;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhdx,
    /// VHD; named as qemu names it so `-f vpc` means the same in both tools.
    Vpc,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vmdk,
        Format::Vhdx,
        Format::Vpc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhdx => "vhdx",
            Format::Vpc => "vpc",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "raw" | "img" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            "vmdk" => Ok(Format::Vmdk),
            "vhdx" => Ok(Format::Vhdx),
            "vpc" | "vhd" => Ok(Format::Vpc),
            other => Err(format!(
                "unknown format '{other}' (known: raw, qcow2, vmdk, vhdx, vpc)"
            )),
        }
    }
}

/// The outcome of probing: the format, and whether raw was chosen only because nothing
/// else matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    pub fallback_raw: bool,
}

const HEAD: usize = 4096;

/// Probes a host file by its first 4 KiB and its last 512 bytes (a fixed VHD has its only
/// footer there; qemu misses that and treats fixed VHDs as raw).
pub fn probe(dev: &dyn BlockDev) -> Result<Probe> {
    let len = dev.len();
    let mut head = vec![0u8; (len.min(HEAD as u64)) as usize];
    dev.read_at(&mut head, 0)?;
    let mut tail = [0u8; 512];
    let tail_ok = len >= 1024 && dev.read_at(&mut tail, len - 512).is_ok();
    Ok(probe_bytes(&head, if tail_ok { Some(&tail) } else { None }))
}

pub fn probe_bytes(head: &[u8], tail: Option<&[u8; 512]>) -> Probe {
    let found = |format| Probe {
        format,
        fallback_raw: false,
    };
    if head.starts_with(b"QFI\xfb") {
        return found(Format::Qcow2);
    }
    if head.starts_with(b"vhdxfile") {
        return found(Format::Vhdx);
    }
    if head.starts_with(b"KDMV") || head.starts_with(b"COWD") {
        return found(Format::Vmdk);
    }
    if head.starts_with(b"conectix") {
        return found(Format::Vpc);
    }
    if is_vmdk_descriptor(head) {
        return found(Format::Vmdk);
    }
    if let Some(t) = tail {
        // The footer ends the file: 512 bytes, or 511 in early Virtual PC fixed disks.
        if t.starts_with(b"conectix") || t.get(1..).is_some_and(|r| r.starts_with(b"conectix")) {
            return found(Format::Vpc);
        }
    }
    Probe {
        format: Format::Raw,
        fallback_raw: true,
    }
}

/// A separate VMDK descriptor is a small text file. Require the descriptor's own header
/// line or a `createType=` line among plain-text bytes, so a raw disk whose first sector
/// happens to contain the words is not taken for one (a boot sector holds binary bytes).
fn is_vmdk_descriptor(head: &[u8]) -> bool {
    let text_len = head.iter().position(|&b| b == 0).unwrap_or(head.len());
    let text = &head[..text_len];
    if text.is_empty()
        || !text
            .iter()
            .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return false;
    }
    let Ok(s) = std::str::from_utf8(text) else {
        return false;
    };
    s.starts_with("# Disk DescriptorFile")
        || s.lines().any(|l| {
            l.trim_start()
                .to_ascii_lowercase()
                .starts_with("createtype")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics() {
        assert_eq!(
            probe_bytes(b"QFI\xfb\0\0\0\x03", None).format,
            Format::Qcow2
        );
        assert_eq!(probe_bytes(b"KDMV\x01", None).format, Format::Vmdk);
        assert_eq!(probe_bytes(b"COWD", None).format, Format::Vmdk);
        assert_eq!(probe_bytes(b"vhdxfile", None).format, Format::Vhdx);
        assert_eq!(probe_bytes(b"conectix", None).format, Format::Vpc);
        let mut t = [0u8; 512];
        t[..8].copy_from_slice(b"conectix");
        assert_eq!(probe_bytes(&[0u8; 512], Some(&t)).format, Format::Vpc);
        let mut old = [0u8; 512];
        old[1..9].copy_from_slice(b"conectix");
        assert_eq!(probe_bytes(&[0u8; 512], Some(&old)).format, Format::Vpc);
        let d = b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n";
        assert_eq!(probe_bytes(d, None).format, Format::Vmdk);
        let raw = probe_bytes(&[0x33, 0xc0, 0x8e, 0xd0, 0], None);
        assert!(raw.fallback_raw);
        assert_eq!(raw.format, Format::Raw);
        // Binary with the word inside is not a descriptor.
        assert!(probe_bytes(b"\x01\x02createType=x", None).fallback_raw);
    }
}
