//! The primary superblock (sector 0): geometry, the feature words, and the address
//! arithmetic every other structure needs (AG-relative block and inode numbers to byte
//! offsets). Checked hard, since every later bound derives from it: a hostile geometry
//! must fail here rather than overflow later.

use super::bytes::{be16, be32, be64, crc_ok, u8_at};

pub(crate) const MAGIC: u32 = 0x5846_5342; // "XFSB"

// versionnum bits (v4 and v5).
const VERSION_ALIGN: u16 = 0x0080;
const VERSION_DIRV2: u16 = 0x2000;
const VERSION_BORG: u16 = 0x4000; // ascii-ci names
const VERSION_MOREBITS: u16 = 0x8000;
// features2 (v4).
const F2_FTYPE: u32 = 0x200;
// v5 incompat.
const INCOMPAT_FTYPE: u32 = 0x1;
const INCOMPAT_SPINODES: u32 = 0x2;
const INCOMPAT_META_UUID: u32 = 0x4;
const INCOMPAT_BIGTIME: u32 = 0x8;
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
const INCOMPAT_NREXT64: u32 = 0x20;
const INCOMPAT_EXCHRANGE: u32 = 0x40;
const INCOMPAT_PARENT: u32 = 0x80;
const INCOMPAT_KNOWN: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NEEDSREPAIR
    | INCOMPAT_NREXT64
    | INCOMPAT_EXCHRANGE
    | INCOMPAT_PARENT;

/// Why a superblock cannot be used; the caller adds the device name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SbError {
    Corrupt(String),
    Unsupported(String),
    Refused(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    pub version: u8,
    pub blocksize: u32,
    pub blocklog: u8,
    pub dblocks: u64,
    pub uuid: [u8; 16],
    /// The UUID metadata blocks are stamped with (`meta_uuid` when that feature is on).
    pub meta_uuid: [u8; 16],
    pub logstart: u64,
    pub logblocks: u32,
    pub rootino: u64,
    pub agblocks: u32,
    pub agcount: u32,
    pub agblklog: u8,
    pub inodesize: u16,
    pub inopblog: u8,
    pub dirblklog: u8,
    pub label: Option<String>,
    pub ftype: bool,
    pub crc: bool,
    pub nrext64: bool,
    pub sectsize: u16,
    pub versionnum: u16,
    pub features2: u32,
    pub ro_compat: u32,
    pub incompat: u32,
    pub log_incompat: u32,
    pub qflags: u16,
    /// Inode chunk alignment in blocks (0 or 1: none); meaningful with the align bit.
    pub inoalignmt: u32,
    /// Percentage of the filesystem inodes may take (0: no limit).
    pub imax_pct: u8,
    pub inopblock: u16,
}

fn pow2_log(v: u64) -> Option<u8> {
    (v.is_power_of_two()).then(|| v.trailing_zeros() as u8)
}

impl Superblock {
    /// The sector size the superblock claims, so a larger sector can be read whole
    /// before its CRC is checked.
    pub fn sector_size(head: &[u8]) -> Option<u16> {
        (be32(head, 0)? == MAGIC).then(|| be16(head, 102))?
    }

    /// Parses and checks the superblock sector `b` (at least `sectsize` bytes).
    pub fn parse(b: &[u8]) -> Result<Superblock, SbError> {
        let c = |s: &str| SbError::Corrupt(format!("superblock at 0x0: {s}"));
        let f32 = |o| be32(b, o).ok_or_else(|| c("short read"));
        let f64 = |o| be64(b, o).ok_or_else(|| c("short read"));
        let f16 = |o| be16(b, o).ok_or_else(|| c("short read"));
        let f8 = |o| u8_at(b, o).ok_or_else(|| c("short read"));
        if f32(0)? != MAGIC {
            return Err(c("bad magic"));
        }
        let versionnum = f16(100)?;
        let version = (versionnum & 0xf) as u8;
        if version != 4 && version != 5 {
            return Err(SbError::Unsupported(format!(
                "XFS superblock version {version} (only 4 and 5 exist)"
            )));
        }
        let blocksize = f32(4)?;
        let blocklog = f8(120)?;
        if !(512..=65536).contains(&blocksize) || pow2_log(blocksize.into()) != Some(blocklog) {
            return Err(c(&format!("block size {blocksize} (log {blocklog})")));
        }
        let sectsize = f16(102)?;
        if !(512..=32768).contains(&sectsize)
            || pow2_log(sectsize.into()) != Some(f8(121)?)
            || b.len() < sectsize as usize
        {
            return Err(c(&format!("sector size {sectsize}")));
        }
        let crc = version == 5;
        if crc && !crc_ok(b.get(..sectsize as usize).unwrap_or(b), 224) {
            return Err(c("CRC mismatch"));
        }
        let inodesize = f16(104)?;
        let inodelog = f8(122)?;
        let min_inode = if crc { 512 } else { 256 };
        if !(min_inode..=2048).contains(&inodesize)
            || pow2_log(inodesize.into()) != Some(inodelog)
            || u32::from(inodesize) > blocksize
        {
            return Err(c(&format!("inode size {inodesize}")));
        }
        let inopblog = f8(123)?;
        if u32::from(inopblog) + u32::from(inodelog) != u32::from(blocklog)
            || u32::from(f16(106)?) != blocksize >> inodelog
        {
            return Err(c("inodes per block disagree with block and inode sizes"));
        }
        let agblocks = f32(84)?;
        let agcount = f32(88)?;
        let agblklog = f8(124)?;
        // agblklog is the log of agblocks rounded up to a power of two.
        let want_log = (u64::from(agblocks).max(1).next_power_of_two()).trailing_zeros();
        if agblocks < 16 || agcount == 0 || u32::from(agblklog) != want_log {
            return Err(c(&format!(
                "allocation groups: {agcount} of {agblocks} blocks (log {agblklog})"
            )));
        }
        if u32::from(agblklog) + u32::from(inopblog) > 32 {
            return Err(c("inode numbers wider than 32 bits within an AG"));
        }
        let dblocks = f64(8)?;
        if dblocks > u64::from(agcount) * u64::from(agblocks) || dblocks == 0 {
            return Err(c(&format!(
                "{dblocks} data blocks do not fit {agcount} AGs of {agblocks}"
            )));
        }
        let dirblklog = f8(192)?;
        if u32::from(blocklog) + u32::from(dirblklog) > 16 {
            return Err(c(&format!("directory block log {dirblklog}")));
        }
        if f8(126)? != 0 {
            return Err(SbError::Refused(
                "mkfs.xfs did not finish on this filesystem (sb_inprogress set); make it again"
                    .into(),
            ));
        }
        if versionnum & VERSION_DIRV2 == 0 && version == 4 {
            return Err(SbError::Unsupported("XFS version 1 directories".into()));
        }
        let _ascii_ci = versionnum & VERSION_BORG != 0;
        let features2 = if versionnum & VERSION_MOREBITS != 0 {
            f32(200)?
        } else {
            0
        };
        let mut ftype = features2 & F2_FTYPE != 0;
        let mut nrext64 = false;
        let mut meta_uuid_on = false;
        if crc {
            let incompat = f32(216)?;
            let unknown = incompat & !INCOMPAT_KNOWN;
            if unknown != 0 {
                return Err(SbError::Unsupported(format!(
                    "XFS incompatible feature bits {unknown:#x}{}",
                    match unknown {
                        0x100 => " (metadir)",
                        0x200 => " (zoned)",
                        _ => "",
                    }
                )));
            }
            if incompat & INCOMPAT_NEEDSREPAIR != 0 {
                return Err(SbError::Refused(
                    "the filesystem is marked as needing repair (needsrepair); run xfs_repair on a copy first".into(),
                ));
            }
            ftype = incompat & INCOMPAT_FTYPE != 0;
            nrext64 = incompat & INCOMPAT_NREXT64 != 0;
            meta_uuid_on = incompat & INCOMPAT_META_UUID != 0;
        }
        let uuid: [u8; 16] = b
            .get(32..48)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| c("short read"))?;
        let meta_uuid = if meta_uuid_on {
            b.get(248..264)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| c("short read"))?
        } else {
            uuid
        };
        let label = b.get(108..120).and_then(|s| {
            let end = s.iter().position(|&x| x == 0).unwrap_or(s.len());
            let t = String::from_utf8_lossy(s.get(..end)?).into_owned();
            (!t.is_empty()).then_some(t)
        });
        let sb = Superblock {
            version,
            blocksize,
            blocklog,
            dblocks,
            uuid,
            meta_uuid,
            logstart: f64(48)?,
            logblocks: f32(96)?,
            rootino: f64(56)?,
            agblocks,
            agcount,
            agblklog,
            inodesize,
            inopblog,
            dirblklog,
            label,
            ftype,
            crc,
            nrext64,
            sectsize,
            versionnum,
            features2,
            ro_compat: if crc { f32(212)? } else { 0 },
            incompat: if crc { f32(216)? } else { 0 },
            log_incompat: if crc { f32(220)? } else { 0 },
            qflags: f16(176)?,
            inoalignmt: if versionnum & VERSION_ALIGN != 0 {
                f32(180)?
            } else {
                0
            },
            imax_pct: f8(127)?,
            inopblock: f16(106)?,
        };
        if sb.ino_offset(sb.rootino).is_none() {
            return Err(c(&format!("root inode {} out of range", sb.rootino)));
        }
        Ok(sb)
    }

    /// Byte offset of AG-encoded filesystem block `fsbno`, if it lies inside the
    /// filesystem.
    pub fn fsb_offset(&self, fsbno: u64) -> Option<u64> {
        let agno = fsbno.checked_shr(self.agblklog.into())?;
        let agbno = fsbno & ((1u64 << self.agblklog) - 1);
        if agno >= u64::from(self.agcount) || agbno >= u64::from(self.agblocks) {
            return None;
        }
        let linear = agno * u64::from(self.agblocks) + agbno;
        if linear >= self.dblocks {
            return None;
        }
        Some(linear << self.blocklog)
    }

    /// Whether `count` blocks from `fsbno` stay inside one AG and the filesystem.
    pub fn fsb_range_ok(&self, fsbno: u64, count: u64) -> bool {
        let agbno = fsbno & ((1u64 << self.agblklog) - 1);
        count > 0
            && self.fsb_offset(fsbno).is_some()
            && agbno
                .checked_add(count)
                .is_some_and(|e| e <= u64::from(self.agblocks))
            && self
                .fsb_offset(fsbno)
                .and_then(|o| o.checked_add(count << self.blocklog))
                .is_some_and(|e| e <= self.dblocks << self.blocklog)
    }

    /// Byte offset of inode `ino`, if its AG and block are in range.
    pub fn ino_offset(&self, ino: u64) -> Option<u64> {
        let agino_bits = u32::from(self.agblklog) + u32::from(self.inopblog);
        let agno = ino.checked_shr(agino_bits)?;
        let agino = ino & ((1u64 << agino_bits) - 1);
        let agbno = agino >> self.inopblog;
        let slot = agino & ((1u64 << self.inopblog) - 1);
        if agno >= u64::from(self.agcount) || agbno >= u64::from(self.agblocks) {
            return None;
        }
        let block = (agno << self.agblklog) | agbno;
        Some(self.fsb_offset(block)? + slot * u64::from(self.inodesize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&4096u32.to_be_bytes());
        b[8..16].copy_from_slice(&4096u64.to_be_bytes());
        b[56..64].copy_from_slice(&128u64.to_be_bytes());
        b[84..88].copy_from_slice(&1024u32.to_be_bytes());
        b[88..92].copy_from_slice(&4u32.to_be_bytes());
        b[100..102].copy_from_slice(&(0xb4b4u16 | 0x2000).to_be_bytes());
        b[102..104].copy_from_slice(&512u16.to_be_bytes());
        b[104..106].copy_from_slice(&256u16.to_be_bytes());
        b[106..108].copy_from_slice(&16u16.to_be_bytes());
        b[120] = 12;
        b[121] = 9;
        b[122] = 8;
        b[123] = 4;
        b[124] = 10;
        b
    }

    #[test]
    fn v4_geometry() {
        let sb = Superblock::parse(&sample()).unwrap();
        assert_eq!(sb.version, 4);
        assert_eq!(sb.ino_offset(128), Some(8 * 4096));
        // AG 1, block 0.
        assert_eq!(sb.fsb_offset(1 << 10), Some(1024 * 4096));
        // agbno beyond agblocks is rejected, as is an AG past agcount.
        assert_eq!(sb.fsb_offset(1 << 11), Some(2048 * 4096));
        assert_eq!(sb.fsb_offset(4 << 10), None);
        assert!(!sb.fsb_range_ok(1020, 8));
        assert!(sb.fsb_range_ok(1016, 8));
    }

    #[test]
    fn hostile_geometry_fails() {
        let mut b = sample();
        b[124] = 40;
        assert!(matches!(Superblock::parse(&b), Err(SbError::Corrupt(_))));
        let mut b = sample();
        b[4..8].copy_from_slice(&3000u32.to_be_bytes());
        assert!(Superblock::parse(&b).is_err());
        let mut b = sample();
        b[126] = 1;
        assert!(matches!(Superblock::parse(&b), Err(SbError::Refused(_))));
        assert!(Superblock::parse(&b[..100]).is_err());
    }
}
