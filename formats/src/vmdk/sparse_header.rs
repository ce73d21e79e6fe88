//! The hosted sparse extent header ("KDMV"): the one structure behind monolithicSparse,
//! twoGbMaxExtentSparse and streamOptimized files. Stream-optimized files written by VMware
//! tools do not know where their grain directory will be when they start writing, so their
//! header says "at the end" and a footer (a second copy of the header, near the end of the
//! file) holds the real offsets.

use super::layout::{Layout, Style};
use super::le::{u16_at, u32_at, u64_at};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 4] = b"KDMV";
pub const GD_AT_END: u64 = u64::MAX;
const FLAG_NL_DETECT: u32 = 1 << 0;
const FLAG_RGD: u32 = 1 << 1;
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
const FLAG_MARKERS: u32 = 1 << 17;
const MARKER_EOS: u32 = 0;
const MARKER_FOOTER: u32 = 3;

/// The header fields we use, in file units (sectors) as stored.
#[derive(Debug, Clone)]
pub struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    pub capacity: u64,
    pub grain_sectors: u64,
    pub desc_offset: u64,
    pub desc_size: u64,
    pub gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub unclean: bool,
    pub nl_bytes: [u8; 4],
    pub compress_algorithm: u16,
}

fn parse_fields(b: &[u8]) -> SparseHeader {
    let mut nl = [0u8; 4];
    if let Some(s) = b.get(73..77) {
        nl.copy_from_slice(s);
    }
    SparseHeader {
        version: u32_at(b, 4),
        flags: u32_at(b, 8),
        capacity: u64_at(b, 12),
        grain_sectors: u64_at(b, 20),
        desc_offset: u64_at(b, 28),
        desc_size: u64_at(b, 36),
        gtes_per_gt: u32_at(b, 44),
        rgd_offset: u64_at(b, 48),
        gd_offset: u64_at(b, 56),
        unclean: b.get(72).copied().unwrap_or(0) != 0,
        nl_bytes: nl,
        compress_algorithm: u16_at(b, 77),
    }
}

/// Reads the header at the start of `file`, and the footer if the header defers to it.
pub fn read(file: &dyn BlockDev) -> Result<SparseHeader> {
    let name = file.name();
    let len = file.len();
    if len < 512 {
        return Err(Error::corrupt(
            name,
            "vmdk sparse header",
            0,
            format!("the file is {len} bytes, shorter than the 512-byte header"),
        ));
    }
    let mut b = [0u8; 512];
    file.read_at(&mut b, 0)?;
    if b.get(..4) != Some(MAGIC.as_slice()) {
        return Err(Error::corrupt(
            name,
            "vmdk sparse header",
            0,
            "the magic is not KDMV",
        ));
    }
    let h = parse_fields(&b);
    if h.gd_offset != GD_AT_END {
        return Ok(h);
    }
    // Footer marker, footer header, end-of-stream marker: the last three sectors.
    if len < 2048 {
        return Err(Error::corrupt(
            name,
            "vmdk stream footer",
            0,
            "the header places the grain directory at the end, but the file is too short to hold a footer",
        ));
    }
    let at = (len / 512) * 512 - 1536;
    let mut f = [0u8; 1536];
    file.read_at(&mut f, at)?;
    let marker_ok = u32_at(&f, 8) == 0 && u32_at(&f, 12) == MARKER_FOOTER;
    let footer = f.get(512..1024).unwrap_or(&[]);
    let eos_ok = u64_at(&f, 1024) == 0 && u32_at(&f, 1032) == 0 && u32_at(&f, 1036) == MARKER_EOS;
    if !marker_ok || footer.get(..4) != Some(MAGIC.as_slice()) || !eos_ok {
        return Err(Error::corrupt(
            name,
            "vmdk stream footer",
            at,
            "the header places the grain directory at the end, but no valid footer (footer marker, KDMV header, end-of-stream marker) ends the file; the stream is incomplete",
        ));
    }
    let fh = parse_fields(footer);
    if fh.gd_offset == GD_AT_END {
        return Err(Error::corrupt(
            name,
            "vmdk stream footer",
            at + 512,
            "the footer also places the grain directory at the end",
        ));
    }
    Ok(fh)
}

/// Largest grain: 1 GiB, as qemu; a larger one is not an image anyone wrote.
pub const MAX_GRAIN_SECTORS: u64 = 1 << 21;
/// Largest compressed grain we inflate: 16 MiB (VMware and qemu write 64 KiB ones).
pub const MAX_COMPRESSED_GRAIN_SECTORS: u64 = 1 << 15;
/// VMware always writes 512 entries per grain table; allow more, but bounded so a table stays
/// a small read.
pub const MAX_GTES_PER_GT: u64 = 1 << 16;

impl SparseHeader {
    pub fn has_embedded_descriptor(&self) -> bool {
        self.desc_offset != 0 && self.desc_size != 0
    }

    /// Validates the header and turns it into the layout the grain map reads.
    pub fn layout(&self, file: &dyn BlockDev, notes: &mut Vec<String>) -> Result<Layout> {
        let name = file.name();
        let bad = |detail: String| Error::corrupt(name, "vmdk sparse header", 0, detail);
        if !(1..=3).contains(&self.version) {
            return Err(Error::unsupported(
                name,
                format!("hosted sparse extent version {}", self.version),
            ));
        }
        if self.flags & FLAG_NL_DETECT != 0 && self.nl_bytes != *b"\n \r\n" {
            return Err(bad(
                "the newline check bytes are altered: the file was copied in text mode (FTP ASCII?) and its binary data is damaged".into(),
            ));
        }
        let compressed = match self.compress_algorithm {
            0 => false,
            1 => true,
            other => {
                return Err(Error::unsupported(
                    name,
                    format!("grain compression algorithm {other}"),
                ))
            }
        };
        if self.grain_sectors == 0 || self.grain_sectors > MAX_GRAIN_SECTORS {
            return Err(bad(format!(
                "grain size of {} sectors is outside 1..={MAX_GRAIN_SECTORS}",
                self.grain_sectors
            )));
        }
        if compressed && self.grain_sectors > MAX_COMPRESSED_GRAIN_SECTORS {
            // Inflating needs a whole grain in memory, and a tiny file can claim a huge one.
            return Err(Error::unsupported(
                name,
                format!(
                    "compressed grains of {} sectors (at most {MAX_COMPRESSED_GRAIN_SECTORS} are read; VMware writes 128)",
                    self.grain_sectors
                ),
            ));
        }
        let gtes = u64::from(self.gtes_per_gt);
        if gtes == 0 || gtes > MAX_GTES_PER_GT {
            return Err(bad(format!(
                "{gtes} entries per grain table is outside 1..={MAX_GTES_PER_GT}"
            )));
        }
        if self.unclean {
            notes.push(format!(
                "{name}: the unclean-shutdown flag is set: the virtual machine may have been running or crashed when this copy was made"
            ));
        }
        let rgd = if self.flags & FLAG_RGD != 0 && self.rgd_offset != 0 {
            self.rgd_offset.checked_mul(512)
        } else {
            None
        };
        Ok(Layout {
            style: Style::Hosted {
                zero_grain: self.flags & FLAG_ZERO_GRAIN != 0,
            },
            compressed,
            markers: self.flags & FLAG_MARKERS != 0,
            grain_sectors: self.grain_sectors,
            gtes_per_gt: gtes,
            entry_size: 4,
            capacity_sectors: self.capacity,
            gd_offset: self
                .gd_offset
                .checked_mul(512)
                .ok_or_else(|| bad("the grain directory offset overflows".into()))?,
            gd_entries: None,
            rgd_offset: rgd,
            structure: "vmdk grain directory",
        })
    }
}
