//! Whether the internal log is clean. A filesystem Linux did not unmount (a crash, a
//! snapshot of a running VM) has committed metadata in its log that only recovery puts
//! in place; reading around it could show stale directories. We do not replay it yet,
//! so we find the log head the way the kernel does (the point where the cycle number
//! stamped in every 512-byte log block drops), look at the last record before it, and
//! call the log clean only when that record is an unmount record.

use super::bytes::{be32, be64, u8_at};
use super::volume::Volume;
use crate::error::Result;

const BB: u64 = 512;
const HEADER_MAGIC: u32 = 0xfeed_babe;
const UNMOUNT_TRANS: u8 = 0x20;
/// How far back from the head a record header may start: the largest log record
/// (256 KiB) plus its extended headers.
const MAX_RECORD_BBS: u64 = 256 * 1024 / BB + 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogState {
    Clean,
    /// Needs recovery; the reason says what was found.
    Dirty(String),
    /// The log lives on another device, which we are not given.
    External,
}

struct Log<'a> {
    vol: &'a Volume,
    start: u64,
    bbs: u64,
}

impl Log<'_> {
    fn bb(&self, i: u64) -> Result<Vec<u8>> {
        self.vol.read(self.start + (i % self.bbs) * BB, BB as usize)
    }

    /// The cycle number of log block `i` (a record header keeps it after its magic).
    fn cycle(&self, i: u64) -> Result<u32> {
        let b = self.bb(i)?;
        let w = be32(&b, 0).unwrap_or(0);
        Ok(if w == HEADER_MAGIC {
            be32(&b, 4).unwrap_or(0)
        } else {
            w
        })
    }
}

pub(crate) fn state(vol: &Volume) -> Result<LogState> {
    let sb = &vol.sb;
    if sb.logstart == 0 {
        return Ok(LogState::External);
    }
    let start = sb
        .fsb_offset(sb.logstart)
        .filter(|_| sb.fsb_range_ok(sb.logstart, u64::from(sb.logblocks)))
        .ok_or_else(|| vol.corrupt("superblock", 0, "the log lies outside the filesystem"))?;
    let bbs = (u64::from(sb.logblocks) << sb.blocklog) / BB;
    if bbs < 2 {
        return Err(vol.corrupt("log", start, "shorter than two blocks"));
    }
    let log = Log { vol, start, bbs };
    let first = log.cycle(0)?;
    if first == 0 {
        // Never written since it was zeroed: nothing to recover.
        return Ok(LogState::Clean);
    }
    let last = log.cycle(bbs - 1)?;
    // Blocks before the head carry the current cycle, those after it the previous one.
    let head = if first == last {
        bbs
    } else {
        let (mut lo, mut hi) = (0, bbs - 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if log.cycle(mid)? == last {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    };
    let mut found = None;
    for k in 1..=MAX_RECORD_BBS.min(bbs) {
        let i = (head + bbs - k) % bbs;
        let b = log.bb(i)?;
        if be32(&b, 0) == Some(HEADER_MAGIC) {
            found = Some((i, b));
            break;
        }
    }
    let Some((at, h)) = found else {
        return Ok(LogState::Dirty(format!(
            "no log record header before the head at log block {head}"
        )));
    };
    let version = be32(&h, 8).unwrap_or(0);
    let len = u64::from(be32(&h, 12).unwrap_or(0));
    let ops = be32(&h, 40).unwrap_or(0);
    let size = u64::from(be32(&h, 320).unwrap_or(0));
    let hblks = if version == 2 && size > 32768 {
        size.div_ceil(32768)
    } else {
        1
    };
    let lsn = be64(&h, 16).unwrap_or(0);
    let end = (at + hblks + len.div_ceil(BB)) % bbs;
    if ops == 1 {
        let data = log.bb(at + hblks)?;
        if u8_at(&data, 9).unwrap_or(0) & UNMOUNT_TRANS != 0 && end == head % bbs {
            return Ok(LogState::Clean);
        }
    }
    Ok(LogState::Dirty(format!(
        "the last log record (cycle {}, block {}) is not an unmount record",
        lsn >> 32,
        lsn & 0xffff_ffff
    )))
}
