//! An on-disk inode as raw bytes for the writer: the fields a change touches are set in
//! place and everything else (extended attribute fork, project ids, flags, generation,
//! the next-unlinked pointer, the log sequence number) stays exactly as it was, so a
//! replaced file keeps its SELinux label. [`RawInode::finish`] stamps the v3 change
//! count and CRC.

use super::bytes::{be16, be32, be64, put16, put32, put64, set_crc, u8_at};
use super::inode::Inode;
use super::volume::Volume;
use crate::error::Result;
use crate::Time;

const DIFLAG2_REFLINK: u64 = 1 << 1;
pub(crate) const DIFLAG2_BIGTIME: u64 = 1 << 3;
pub(crate) const DIFLAG2_NREXT64: u64 = 1 << 4;
const BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;
pub(crate) const NULL_AGINO: u32 = u32::MAX;

#[derive(Clone)]
pub(crate) struct RawInode {
    pub ino: u64,
    pub offset: u64,
    pub b: Vec<u8>,
    v3: bool,
}

pub(crate) fn now() -> Time {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Time {
        secs: i64::try_from(d.as_secs()).unwrap_or(0),
        nanos: d.subsec_nanos(),
    }
}

impl RawInode {
    /// Reads an inode in use (checked as the reader checks it).
    pub fn read(vol: &Volume, ino: u64) -> Result<RawInode> {
        let parsed = Inode::read(vol, ino)?;
        let b = vol.read(parsed.offset, usize::from(vol.sb.inodesize))?;
        Ok(RawInode {
            ino,
            offset: parsed.offset,
            b,
            v3: vol.sb.crc,
        })
    }

    /// An inode from bytes the writer made itself (a new chunk's).
    pub fn from_bytes(
        ino: u64,
        offset: u64,
        b: Vec<u8>,
        sb: &super::superblock::Superblock,
    ) -> RawInode {
        RawInode {
            ino,
            offset,
            b,
            v3: sb.crc,
        }
    }

    /// The bytes of a free inode slot, to be made into a new inode.
    pub fn read_free(vol: &Volume, ino: u64) -> Result<RawInode> {
        let offset = vol
            .sb
            .ino_offset(ino)
            .ok_or_else(|| vol.corrupt("inode number", 0, format!("{ino} is out of range")))?;
        let b = vol.read(offset, usize::from(vol.sb.inodesize))?;
        if be16(&b, 2).unwrap_or(1) != 0 && be16(&b, 0) == Some(0x494e) {
            return Err(vol.corrupt(
                &format!("inode {ino}"),
                offset,
                "the inode btree calls it free but it is in use",
            ));
        }
        Ok(RawInode {
            ino,
            offset,
            b,
            v3: vol.sb.crc,
        })
    }

    pub fn core_len(&self) -> usize {
        if self.v3 {
            176
        } else {
            100
        }
    }

    /// Bytes of the data fork (up to the attribute fork, if any).
    pub fn dfork_size(&self) -> usize {
        match self.forkoff() {
            0 => self.b.len() - self.core_len(),
            f => f,
        }
    }

    pub fn forkoff(&self) -> usize {
        usize::from(u8_at(&self.b, 82).unwrap_or(0)) * 8
    }

    pub fn mode(&self) -> u16 {
        be16(&self.b, 2).unwrap_or(0)
    }

    pub fn flags2(&self) -> u64 {
        if self.v3 {
            be64(&self.b, 120).unwrap_or(0)
        } else {
            0
        }
    }

    pub fn nblocks(&self) -> u64 {
        be64(&self.b, 64).unwrap_or(0)
    }

    pub fn nlink(&self) -> u32 {
        if u8_at(&self.b, 4) == Some(1) {
            u32::from(be16(&self.b, 6).unwrap_or(0))
        } else {
            be32(&self.b, 16).unwrap_or(0)
        }
    }

    pub fn set_nlink(&mut self, n: u32) {
        if u8_at(&self.b, 4) == Some(1) {
            put16(&mut self.b, 6, n.min(u32::from(u16::MAX)) as u16);
        } else {
            put32(&mut self.b, 16, n);
        }
    }

    pub fn set_mode(&mut self, mode: u16) {
        put16(&mut self.b, 2, mode);
    }

    pub fn set_owner(&mut self, uid: u32, gid: u32) {
        put32(&mut self.b, 8, uid);
        put32(&mut self.b, 12, gid);
    }

    pub fn set_size(&mut self, size: u64) {
        put64(&mut self.b, 56, size);
    }

    pub fn set_nblocks(&mut self, n: u64) {
        put64(&mut self.b, 64, n);
    }

    /// Replaces the data fork: its format, its bytes (the rest of the fork zeroed) and
    /// its extent count. False when the bytes do not fit.
    pub fn set_data_fork(&mut self, format: u8, bytes: &[u8], nextents: u64) -> bool {
        let (core, size) = (self.core_len(), self.dfork_size());
        if bytes.len() > size {
            return false;
        }
        let Some(fork) = self.b.get_mut(core..core + size) else {
            return false;
        };
        fork.fill(0);
        fork[..bytes.len()].copy_from_slice(bytes);
        self.b[5] = format;
        if self.flags2() & DIFLAG2_NREXT64 != 0 {
            put64(&mut self.b, 24, nextents);
        } else {
            let Ok(n) = u32::try_from(nextents) else {
                return false;
            };
            put32(&mut self.b, 76, n);
        }
        true
    }

    fn put_time(&mut self, at: usize, t: Time) {
        if self.flags2() & DIFLAG2_BIGTIME != 0 {
            let v = (t.secs.saturating_add(BIGTIME_EPOCH_OFFSET).max(0) as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::from(t.nanos));
            put64(&mut self.b, at, v);
        } else {
            let s = t.secs.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
            put32(&mut self.b, at, s as u32);
            put32(&mut self.b, at + 4, t.nanos);
        }
    }

    pub fn set_atime(&mut self, t: Time) {
        self.put_time(32, t);
    }

    pub fn set_mtime(&mut self, t: Time) {
        self.put_time(40, t);
    }

    pub fn set_ctime(&mut self, t: Time) {
        self.put_time(48, t);
    }

    pub fn set_crtime(&mut self, t: Time) {
        if self.v3 {
            self.put_time(144, t);
        }
    }

    /// A rewritten file shares no blocks any more.
    pub fn clear_reflink(&mut self) {
        if self.v3 {
            let f = self.flags2() & !DIFLAG2_REFLINK;
            put64(&mut self.b, 120, f);
        }
    }

    /// Makes the slot a fresh inode of `mode`: an empty extents fork and no attributes,
    /// keeping the generation (bumped), the inode number and the UUID stamp.
    pub fn init(&mut self, mode: u16, sb_flags2: u64, uuid: &[u8; 16]) {
        let gen = be32(&self.b, 92).unwrap_or(0).wrapping_add(1);
        let keep_lsn = be64(&self.b, 112).unwrap_or(0);
        self.b.fill(0);
        put16(&mut self.b, 0, 0x494e);
        put16(&mut self.b, 2, mode);
        self.b[4] = if self.v3 { 3 } else { 2 };
        self.b[5] = super::inode::FMT_EXTENTS;
        self.b[83] = super::inode::FMT_EXTENTS;
        put32(&mut self.b, 92, gen);
        put32(&mut self.b, 96, NULL_AGINO);
        if self.v3 {
            put64(&mut self.b, 112, keep_lsn);
            put64(&mut self.b, 120, sb_flags2);
            put64(&mut self.b, 152, self.ino);
            self.b[160..176].copy_from_slice(uuid);
        }
    }

    /// Makes the slot free again, as the kernel leaves a freed inode.
    pub fn clear(&mut self, uuid: &[u8; 16]) {
        self.init(0, 0, uuid);
    }

    /// Bumps the change count and stamps the CRC; call once, last.
    pub fn finish(&mut self) {
        if self.v3 {
            let c = be64(&self.b, 104).unwrap_or(0).wrapping_add(1);
            put64(&mut self.b, 104, c);
            set_crc(&mut self.b, 100);
        }
    }
}
