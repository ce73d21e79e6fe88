//! The on-disk inode (`xfs_dinode`): core fields (type, owners, times, size, extent
//! counts) and the data and attribute forks in its literal area. Version 1 and 2 cores
//! (v4 filesystems) are 100 bytes; version 3 (v5) is 176 bytes with a CRC, its own
//! number and the filesystem UUID, all checked so a misdirected read is not believed.

use super::bytes::{be16, be32, be64, crc_ok, u8_at};
use super::volume::Volume;
use crate::error::Result;
use crate::{FileKind, Time};

pub(crate) const FMT_LOCAL: u8 = 1;
pub(crate) const FMT_EXTENTS: u8 = 2;
pub(crate) const FMT_BTREE: u8 = 3;

const MAGIC: u16 = 0x494e; // "IN"
const DIFLAG_REALTIME: u16 = 0x1;
const DIFLAG2_BIGTIME: u64 = 1 << 3;
const DIFLAG2_NREXT64: u64 = 1 << 4;
/// Seconds between the bigtime epoch and the Unix epoch.
const BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;

#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub ino: u64,
    /// Byte offset of the inode, for messages.
    pub offset: u64,
    pub mode: u16,
    pub format: u8,
    pub aformat: u8,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    pub crtime: Option<Time>,
    pub size: u64,
    pub nextents: u64,
    pub anextents: u64,
    pub flags: u16,
    pub data_fork: Vec<u8>,
    pub attr_fork: Option<Vec<u8>>,
}

fn time(b: &[u8], o: usize, big: bool) -> Time {
    if big {
        let v = be64(b, o).unwrap_or(0);
        Time {
            secs: (v / 1_000_000_000) as i64 - BIGTIME_EPOCH_OFFSET,
            nanos: (v % 1_000_000_000) as u32,
        }
    } else {
        Time {
            secs: be32(b, o).unwrap_or(0) as i32 as i64,
            nanos: be32(b, o + 4).unwrap_or(0).min(999_999_999),
        }
    }
}

impl Inode {
    pub fn read(vol: &Volume, ino: u64) -> Result<Inode> {
        let sb = &vol.sb;
        let offset = sb
            .ino_offset(ino)
            .ok_or_else(|| vol.corrupt("inode number", 0, format!("{ino} is out of range")))?;
        let b = vol.read(offset, sb.inodesize as usize)?;
        Inode::parse(vol, ino, offset, &b)
    }

    pub fn parse(vol: &Volume, ino: u64, offset: u64, b: &[u8]) -> Result<Inode> {
        let sb = &vol.sb;
        let what = format!("inode {ino}");
        let c = |d: &str| vol.corrupt(&what, offset, d);
        let short = || c("short inode");
        if be16(b, 0) != Some(MAGIC) {
            return Err(c("bad magic (not an inode)"));
        }
        let version = u8_at(b, 4).ok_or_else(short)?;
        let want_v3 = sb.crc;
        if (want_v3 && version != 3) || (!want_v3 && !(1..=2).contains(&version)) {
            return Err(c(&format!(
                "inode version {version} on a v{} filesystem",
                sb.version
            )));
        }
        if version == 3 {
            if !crc_ok(b, 100) {
                return Err(c("CRC mismatch"));
            }
            if be64(b, 152) != Some(ino) {
                return Err(c("records another inode number"));
            }
            if b.get(160..176) != Some(&sb.meta_uuid[..]) {
                return Err(c("belongs to another filesystem (UUID)"));
            }
        }
        let mode = be16(b, 2).ok_or_else(short)?;
        if mode == 0 {
            return Err(c("is free (mode 0) but a directory names it"));
        }
        let flags2 = if version == 3 {
            be64(b, 120).ok_or_else(short)?
        } else {
            0
        };
        let big = flags2 & DIFLAG2_BIGTIME != 0;
        let (nextents, anextents) = if flags2 & DIFLAG2_NREXT64 != 0 {
            if !sb.nrext64 {
                return Err(c("64-bit extent counts on a filesystem without nrext64"));
            }
            (
                be64(b, 24).ok_or_else(short)?,
                u64::from(be32(b, 76).ok_or_else(short)?),
            )
        } else {
            (
                u64::from(be32(b, 76).ok_or_else(short)?),
                u64::from(be16(b, 80).ok_or_else(short)?),
            )
        };
        let core = if version == 3 { 176 } else { 100 };
        let lit = b.get(core..).ok_or_else(short)?;
        let forkoff = usize::from(u8_at(b, 82).ok_or_else(short)?) * 8;
        let (data_fork, attr_fork) = if forkoff == 0 {
            (lit.to_vec(), None)
        } else {
            let (d, a) = lit
                .split_at_checked(forkoff)
                .filter(|(_, a)| !a.is_empty())
                .ok_or_else(|| c(&format!("attribute fork offset {forkoff} past the inode")))?;
            (d.to_vec(), Some(a.to_vec()))
        };
        let format = u8_at(b, 5).ok_or_else(short)?;
        let uid = be32(b, 8).ok_or_else(short)?;
        let gid = be32(b, 12).ok_or_else(short)?;
        Ok(Inode {
            ino,
            offset,
            mode,
            format,
            aformat: u8_at(b, 83).ok_or_else(short)?,
            uid,
            gid,
            atime: time(b, 32, big),
            mtime: time(b, 40, big),
            crtime: (version == 3).then(|| time(b, 144, big)),
            size: be64(b, 56).ok_or_else(short)?,
            nextents,
            anextents,
            flags: be16(b, 90).ok_or_else(short)?,
            data_fork,
            attr_fork,
        })
    }

    pub fn kind(&self) -> FileKind {
        kind_of_mode(self.mode)
    }

    pub fn is_realtime(&self) -> bool {
        self.flags & DIFLAG_REALTIME != 0
    }
}

pub(crate) fn kind_of_mode(mode: u16) -> FileKind {
    match mode & 0o170000 {
        0o040000 => FileKind::Dir,
        0o120000 => FileKind::Symlink,
        0o020000 => FileKind::CharDevice,
        0o060000 => FileKind::BlockDevice,
        0o010000 => FileKind::Fifo,
        0o140000 => FileKind::Socket,
        _ => FileKind::File,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(-5i32).to_be_bytes());
        b[4..].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(time(&b, 0, false), Time { secs: -5, nanos: 7 });
        let v: u64 = ((1u64 << 31) + 1_700_000_000) * 1_000_000_000 + 42;
        assert_eq!(
            time(&v.to_be_bytes(), 0, true),
            Time {
                secs: 1_700_000_000,
                nanos: 42
            }
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of_mode(0o100644), FileKind::File);
        assert_eq!(kind_of_mode(0o040755), FileKind::Dir);
        assert_eq!(kind_of_mode(0o120777), FileKind::Symlink);
        assert_eq!(kind_of_mode(0o060600), FileKind::BlockDevice);
    }
}
