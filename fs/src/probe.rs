//! Which filesystem (or other content) a device holds, by superblock: what `info` shows for
//! every partition and LV, including those we cannot read yet (xfs, btrfs, LUKS, ...).
//! Names follow blkid's TYPE so administrators see familiar words.

use crate::error::Result;
use transplant_formats::BlockDev;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FsProbe {
    pub kind: String,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// Filesystem size and bytes in use, when the superblock says.
    pub size: Option<u64>,
    pub used: Option<u64>,
}

fn le16(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .unwrap_or(0) as u64
}
fn le32(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0) as u64
}
fn be32(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0) as u64
}
fn be64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}
fn text(b: &[u8], o: usize, n: usize) -> Option<String> {
    let s = b.get(o..o + n)?;
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    let t = String::from_utf8_lossy(s.get(..end)?)
        .trim_end()
        .to_string();
    (!t.is_empty()).then_some(t)
}
fn uuid(b: &[u8], o: usize) -> Option<String> {
    let u = b.get(o..o + 16)?;
    if u.iter().all(|&x| x == 0) {
        return None;
    }
    let h: Vec<String> = u.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        h[..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..].concat()
    ))
}

/// Probes `dev`; `None` when nothing known is found.
pub fn probe(dev: &dyn BlockDev) -> Result<Option<FsProbe>> {
    let len = dev.len();
    let mut head = vec![0u8; len.min(0x11000) as usize];
    dev.read_at(&mut head, 0)?;
    let h = &head[..];
    let p = |kind: &str| FsProbe {
        kind: kind.into(),
        label: None,
        uuid: None,
        size: None,
        used: None,
    };
    // ext2/3/4: magic 0xEF53 in the superblock at 1024.
    if le16(h, 1024 + 56) == 0xef53 {
        let sb = 1024;
        let compat = le32(h, sb + 92);
        let incompat = le32(h, sb + 96);
        let ro = le32(h, sb + 100);
        // Features ext3 does not have make it ext4 (as blkid decides).
        let ext4_incompat = 0x40 | 0x80 | 0x200 | 0x100 | 0x8000 | 0x400 | 0x1000 | 0x20000;
        let ext4_ro = 0x8 | 0x10 | 0x20 | 0x40 | 0x400 | 0x200;
        let kind = if incompat & ext4_incompat != 0 || ro & ext4_ro != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let bs = 1024u64
            .checked_shl(le32(h, sb + 24).min(16) as u32)
            .unwrap_or(0);
        let hi = |o: usize| {
            if incompat & 0x80 != 0 {
                le32(h, o) << 32
            } else {
                0
            }
        };
        let blocks = le32(h, sb + 4) | hi(sb + 0x150);
        let free = le32(h, sb + 12) | hi(sb + 0x158);
        return Ok(Some(FsProbe {
            label: text(h, sb + 120, 16),
            uuid: uuid(h, sb + 104),
            size: Some(blocks.saturating_mul(bs)),
            used: Some(blocks.saturating_sub(free).saturating_mul(bs)),
            ..p(kind)
        }));
    }
    if h.starts_with(b"XFSB") {
        let bs = be32(h, 4);
        let blocks = be64(h, 8);
        let free = be64(h, 144);
        return Ok(Some(FsProbe {
            label: text(h, 108, 12),
            uuid: uuid(h, 32),
            size: Some(blocks.saturating_mul(bs)),
            used: Some(blocks.saturating_sub(free).saturating_mul(bs)),
            ..p("xfs")
        }));
    }
    if h.get(0x10040..0x10048) == Some(b"_BHRfS_M") {
        return Ok(Some(FsProbe {
            label: text(h, 0x1012b, 256),
            uuid: uuid(h, 0x10020),
            ..p("btrfs")
        }));
    }
    if h.starts_with(b"LUKS\xba\xbe") {
        let version = h
            .get(6..8)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
            .unwrap_or(0);
        let mut r = FsProbe {
            uuid: text(h, 168, 40),
            ..p("crypto_LUKS")
        };
        if version == 2 {
            r.label = text(h, 24, 48);
        }
        return Ok(Some(r));
    }
    if h.get(3..11) == Some(b"NTFS    ") {
        let serial = h.get(0x48..0x50).map(|s| {
            s.iter()
                .rev()
                .map(|x| format!("{x:02X}"))
                .collect::<String>()
        });
        return Ok(Some(FsProbe {
            uuid: serial,
            ..p("ntfs")
        }));
    }
    if h.get(510..512) == Some(&[0x55, 0xaa]) {
        let serial = |o: usize| {
            h.get(o..o + 4)
                .map(|s| format!("{:02X}{:02X}-{:02X}{:02X}", s[3], s[2], s[1], s[0]))
        };
        if h.get(82..87) == Some(b"FAT32") {
            return Ok(Some(FsProbe {
                label: text(h, 71, 11).filter(|l| l != "NO NAME"),
                uuid: serial(67),
                ..p("vfat")
            }));
        }
        if h.get(54..59) == Some(b"FAT12") || h.get(54..59) == Some(b"FAT16") {
            return Ok(Some(FsProbe {
                label: text(h, 43, 11).filter(|l| l != "NO NAME"),
                uuid: serial(39),
                ..p("vfat")
            }));
        }
    }
    for page in [4096usize, 8192, 16384, 65536] {
        if h.get(page - 10..page) == Some(b"SWAPSPACE2") {
            return Ok(Some(FsProbe {
                label: text(h, 1024 + 28, 16),
                uuid: uuid(h, 1024 + 12),
                ..p("swap")
            }));
        }
    }
    for s in 0..4usize {
        if h.get(s * 512..s * 512 + 8) == Some(b"LABELONE")
            && h.get(s * 512 + 24..s * 512 + 32) == Some(b"LVM2 001")
        {
            return Ok(Some(p("LVM2_member")));
        }
    }
    Ok(None)
}
