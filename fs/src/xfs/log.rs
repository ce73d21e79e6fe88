//! The internal log: where its head and tail are, and whether it is clean. A filesystem
//! Linux did not unmount (a crash, a snapshot of a running VM) has committed metadata in
//! its log that only recovery puts in place; reading around it could show stale
//! directories. The head is found the way the kernel finds it: the point where the
//! cycle number stamped in every 512-byte log block drops, checked against a window of
//! in-flight writes and moved back over a record that was not written whole. The log
//! is clean when the last record before the head is an unmount record ending at it;
//! otherwise [`super::log_recover`] replays it from the tail the last record names.

use super::bytes::{be32, be64, u8_at};
use super::volume::Volume;
use crate::error::Result;

pub(crate) const BB: u64 = 512;
pub(crate) const HEADER_MAGIC: u32 = 0xfeed_babe;
const UNMOUNT_TRANS: u8 = 0x20;
/// Cycle data for this many bytes of a record fits in one header block.
pub(crate) const HEADER_CYCLE_SIZE: u64 = 32 * 1024;
/// The largest log record (256 KiB).
const MAX_RECORD_BBS: u64 = 256 * 1024 / BB;
/// How far back from the head a record header may start: the largest record plus its
/// extended headers.
const MAX_BACK_BBS: u64 = MAX_RECORD_BBS + 16;
/// The kernel keeps up to 8 records in flight, so the last 8 may be partly written.
const IN_FLIGHT_BBS: u64 = 8 * MAX_RECORD_BBS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogState {
    Clean,
    /// Needs recovery; the reason says what was found. Read as it stands (recovery not
    /// applied), only when the caller asked for that.
    Dirty(String),
    /// Needed recovery, and it was replayed in memory (the device was not written):
    /// this many committed transactions.
    Replayed {
        transactions: usize,
    },
    /// The log lives on another device, which we are not given.
    External,
}

/// A log record header (`xlog_rec_header`).
#[derive(Debug, Clone)]
pub(crate) struct RecHeader {
    pub len: u32,
    pub lsn: u64,
    pub tail_lsn: u64,
    pub crc: u32,
    pub num_ops: u32,
    pub fmt: u32,
    pub uuid: [u8; 16],
    /// Header blocks (1, or more with v2 extended headers for records over 32 KiB).
    pub hblks: u64,
}

impl RecHeader {
    /// Parses the header block `b`; `None` unless it carries the header magic and a
    /// plausible version and size.
    pub fn parse(b: &[u8]) -> Option<RecHeader> {
        if be32(b, 0)? != HEADER_MAGIC {
            return None;
        }
        let version = be32(b, 8)?;
        if version != 1 && version != 2 {
            return None;
        }
        let size = u64::from(be32(b, 320)?);
        let hblks = if version == 2 && size > HEADER_CYCLE_SIZE {
            size.div_ceil(HEADER_CYCLE_SIZE)
        } else {
            1
        };
        let len = be32(b, 12)?;
        if size > MAX_RECORD_BBS * BB
            || len == 0
            || u64::from(len) > (hblks * HEADER_CYCLE_SIZE).min(MAX_RECORD_BBS * BB)
        {
            return None;
        }
        Some(RecHeader {
            len,
            lsn: be64(b, 16)?,
            tail_lsn: be64(b, 24)?,
            crc: u32::from_le_bytes(b.get(32..36)?.try_into().ok()?),
            num_ops: be32(b, 40)?,
            fmt: be32(b, 300)?,
            uuid: b.get(304..320)?.try_into().ok()?,
            hblks,
        })
    }

    /// Log blocks the record spans: headers and data.
    pub fn bbs(&self) -> u64 {
        self.hblks + u64::from(self.len).div_ceil(BB)
    }
}

pub(crate) struct Log<'a> {
    pub vol: &'a Volume,
    /// Byte offset of the log on the device.
    pub start: u64,
    /// Length in 512-byte blocks.
    pub bbs: u64,
}

impl<'a> Log<'a> {
    /// The internal log of `vol`, or `None` when it is external.
    pub fn open(vol: &'a Volume) -> Result<Option<Log<'a>>> {
        let sb = &vol.sb;
        if sb.logstart == 0 {
            return Ok(None);
        }
        let start = sb
            .fsb_offset(sb.logstart)
            .filter(|_| sb.fsb_range_ok(sb.logstart, u64::from(sb.logblocks)))
            .ok_or_else(|| vol.corrupt("superblock", 0, "the log lies outside the filesystem"))?;
        let bbs = (u64::from(sb.logblocks) << sb.blocklog) / BB;
        if bbs < 2 {
            return Err(vol.corrupt("log", start, "shorter than two blocks"));
        }
        Ok(Some(Log { vol, start, bbs }))
    }

    pub fn bb(&self, i: u64) -> Result<Vec<u8>> {
        self.vol.read(self.start + (i % self.bbs) * BB, BB as usize)
    }

    /// `n` log blocks from block `i`, wrapping at the end of the log.
    pub fn read(&self, i: u64, n: u64) -> Result<Vec<u8>> {
        let i = i % self.bbs;
        let n = n.min(self.bbs);
        let first = n.min(self.bbs - i);
        let mut out = self.vol.read(self.start + i * BB, (first * BB) as usize)?;
        if first < n {
            out.extend(self.vol.read(self.start, ((n - first) * BB) as usize)?);
        }
        Ok(out)
    }

    /// The cycle number of log block `i` (a record header keeps it after its magic).
    pub fn cycle(&self, i: u64) -> Result<u32> {
        let b = self.bb(i)?;
        let w = be32(&b, 0).unwrap_or(0);
        Ok(if w == HEADER_MAGIC {
            be32(&b, 4).unwrap_or(0)
        } else {
            w
        })
    }

    /// The first block in `[from, from + n)` whose cycle is `want`.
    fn find_cycle(&self, from: u64, n: u64, want: u32) -> Result<Option<u64>> {
        for i in from..from + n {
            if self.cycle(i)? == want {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The head: the block the next record would be written to, or `None` for a log
    /// never written since it was zeroed. As `xlog_find_head`: a binary search for the
    /// first block of the older cycle, corrected by a scan of the in-flight window
    /// before it (writes may land out of order), then moved back over a partial record.
    pub fn find_head(&self) -> Result<Option<u64>> {
        let bbs = self.bbs;
        let first = self.cycle(0)?;
        if first == 0 {
            return Ok(None);
        }
        let last = self.cycle(bbs - 1)?;
        let (mut head, stop_on) = if first == last {
            (bbs, last.wrapping_sub(1))
        } else {
            let (mut lo, mut hi) = (0, bbs - 1);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if self.cycle(mid)? == last {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            (hi, last)
        };
        let window = IN_FLIGHT_BBS.min(bbs);
        if head >= window {
            if let Some(b) = self.find_cycle(head - window, window, stop_on)? {
                head = b;
            }
        } else {
            let tail_part = window - head;
            if let Some(b) = self.find_cycle(bbs - tail_part, tail_part, stop_on.wrapping_sub(1))? {
                head = b;
            } else if let Some(b) = self.find_cycle(0, head, stop_on)? {
                head = b;
            }
        }
        // A record must end at the head, or the head is its start.
        if let Some((at, h)) = self.header_before(head)? {
            if (at + h.bbs()) % bbs != head % bbs {
                head = at;
            }
        }
        Ok(Some(head % bbs))
    }

    /// The last record header that starts before block `head` (searching back at most
    /// one record's length, wrapping at the start of the log).
    pub fn header_before(&self, head: u64) -> Result<Option<(u64, RecHeader)>> {
        let bbs = self.bbs;
        for k in 1..=MAX_BACK_BBS.min(bbs) {
            let i = (head + bbs - k) % bbs;
            if let Some(h) = RecHeader::parse(&self.bb(i)?) {
                return Ok(Some((i, h)));
            }
        }
        Ok(None)
    }
}

/// Where recovery starts and ends, for a log that is not clean.
pub(crate) struct Span {
    pub tail: u64,
    pub head: u64,
}

/// The log's state, and for a dirty log the span recovery must walk.
pub(crate) fn examine(vol: &Volume) -> Result<(LogState, Option<Span>)> {
    let Some(log) = Log::open(vol)? else {
        return Ok((LogState::External, None));
    };
    let Some(head) = log.find_head()? else {
        // Never written since it was zeroed: nothing to recover.
        return Ok((LogState::Clean, None));
    };
    let Some((at, h)) = log.header_before(head)? else {
        return Ok((
            LogState::Dirty(format!(
                "no log record header before the head at log block {head}"
            )),
            None,
        ));
    };
    let end = (at + h.bbs()) % log.bbs;
    if h.num_ops == 1 && end == head {
        let data = log.bb(at + h.hblks)?;
        if u8_at(&data, 9).unwrap_or(0) & UNMOUNT_TRANS != 0 {
            return Ok((LogState::Clean, None));
        }
    }
    let tail = h.tail_lsn & 0xffff_ffff;
    let why = format!(
        "the last log record (cycle {}, block {}) is not an unmount record",
        h.lsn >> 32,
        h.lsn & 0xffff_ffff
    );
    if tail >= log.bbs {
        return Err(vol.corrupt(
            "log record header",
            log.start + at * BB,
            format!("tail block {tail} lies outside the log"),
        ));
    }
    Ok((LogState::Dirty(why), Some(Span { tail, head })))
}
