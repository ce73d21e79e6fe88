//! Log recovery in memory, as the kernel does it at mount (`xlog_recover`), for guests
//! that were not shut down cleanly: walk the records from the tail the last record
//! names to the head, restore the bytes the cycle stamps replaced, check each record's
//! CRC (v5; a bad one among the last records in flight is a torn write, and ends the
//! log there), gather committed transactions, then replay them in two passes (the
//! first collects buffer cancellations) into a [`ReplayDev`] over the device. The
//! device itself is never written.
//!
//! Refused (unsupported), with the reason: logs written by a big-endian host, quota
//! items, fork owner changes, and intents left unfinished (deferred work that
//! recovery would have to complete: freeing extents, rmap/refcount/bmap updates,
//! attribute changes, mapping exchanges).

use super::log::{Log, RecHeader, Span, BB, HEADER_CYCLE_SIZE};
use super::log_recover_dev::ReplayDev;
use super::log_recover_items::{order, Replayer, LI_BUF, LI_ICREATE, LI_INODE};
use super::log_recover_record::{Parser, Trans};
use super::volume::Volume;
use crate::error::Result;
use std::collections::HashMap;
use std::sync::Arc;

/// `XLOG_FMT_LINUX_LE`: the record was written by a little-endian host.
const FMT_LINUX_LE: u32 = 1;
/// The last records may have been in flight (partly written) when the system stopped.
const IN_FLIGHT_RECORDS: usize = 8;
/// Header bytes the record CRC covers: `sizeof(xlog_rec_header)` on 64-bit hosts, and
/// on i386 (where it is not padded).
const HEADER_CRC_LENS: [usize; 2] = [328, 324];
const EXT_HEADER_CRC_LEN: usize = 260;

/// What recovery produced: the device as it is after replay, and how much it did.
pub(crate) struct Recovered {
    pub dev: ReplayDev,
    pub transactions: usize,
    /// The log head recovery walked to.
    pub head: u64,
    /// The last records were torn (partly written) and left out.
    pub torn: bool,
}

/// Intent items and their done items: (intent type, done type, what it is).
const INTENTS: &[(u16, u16, &str)] = &[
    (0x1236, 0x1237, "extent-free intent (EFI)"),
    (0x1240, 0x1241, "reverse-mapping update intent (RUI)"),
    (0x1242, 0x1243, "reference-count update intent (CUI)"),
    (0x1244, 0x1245, "block-mapping update intent (BUI)"),
    (0x1246, 0x1247, "extended-attribute intent (ATTRI)"),
    (0x1248, 0x1249, "mapping-exchange intent (XMI)"),
    (0x124a, 0x124b, "realtime extent-free intent"),
    (0x124c, 0x124d, "realtime reverse-mapping intent"),
    (0x124e, 0x124f, "realtime reference-count intent"),
];
const LI_DQUOT: u16 = 0x123d;
const LI_QUOTAOFF: u16 = 0x123e;

/// A record: the byte offset of its header, the header, its data unpacked.
type Record = (u64, RecHeader, Vec<u8>);

/// The records from the tail to the head, and whether the last were torn.
fn records(log: &Log, span: &Span) -> Result<(Vec<Record>, bool)> {
    let vol = log.vol;
    let sb = &vol.sb;
    let dist = (span.head + log.bbs - span.tail) % log.bbs;
    // The headers first: whether a bad record is one of the last in flight (a torn
    // write, where the log ends) or not (corruption) depends on how many follow it.
    let mut heads = Vec::new();
    let mut at = span.tail;
    let mut walked = 0;
    while walked < dist {
        let off = log.start + at * BB;
        let corrupt = |d: String| vol.corrupt("log record", off, d);
        let h = RecHeader::parse(&log.bb(at)?)
            .ok_or_else(|| corrupt(format!("no valid record header at log block {at}")))?;
        if h.fmt != FMT_LINUX_LE {
            return Err(vol.unsupported(format!(
                "replaying an XFS log written by a host of log format {} (only little-endian \
                 Linux logs are replayed)",
                h.fmt
            )));
        }
        if h.uuid != sb.uuid {
            return Err(corrupt("the record belongs to another filesystem".into()));
        }
        let n = h.bbs();
        if walked + n > dist {
            return Err(corrupt(format!(
                "the record ({n} blocks) runs past the log head at block {}",
                span.head
            )));
        }
        heads.push((at, h));
        at = (at + n) % log.bbs;
        walked += n;
    }
    let count = heads.len();
    let mut out = Vec::with_capacity(count);
    for (idx, (at, h)) in heads.into_iter().enumerate() {
        let off = log.start + at * BB;
        let hdrs = log.read(at, h.hblks)?;
        let mut data = log.read(at + h.hblks, u64::from(h.len).div_ceil(BB))?;
        data.truncate(h.len as usize);
        if sb.crc && !crc_matches(&h, &hdrs, &data) {
            if idx + IN_FLIGHT_RECORDS >= count {
                // A torn write among the records in flight when the system stopped:
                // the log ends before it, as the kernel's head verification decides.
                return Ok((out, true));
            }
            return Err(vol.corrupt("log record", off, "CRC mismatch"));
        }
        unpack(&h, &hdrs, &mut data)
            .ok_or_else(|| vol.corrupt("log record", off, "short extended headers"))?;
        out.push((off, h, data));
    }
    Ok((out, false))
}

fn crc_matches(h: &RecHeader, hdrs: &[u8], data: &[u8]) -> bool {
    // Under cargo-fuzz mutated records must reach the parsers behind the CRC.
    if cfg!(fuzzing) {
        return true;
    }
    HEADER_CRC_LENS.iter().any(|&hl| {
        let Some(head) = hdrs.get(..hl) else {
            return false;
        };
        let mut c = crc32c::crc32c(&head[..32]);
        c = crc32c::crc32c_append(c, &[0; 4]);
        c = crc32c::crc32c_append(c, &head[36..]);
        // Extended headers as far as the data needs them (not all of them).
        let xheads = (u64::from(h.len).div_ceil(HEADER_CYCLE_SIZE)).min(h.hblks) as usize;
        for j in 1..xheads {
            let Some(x) = hdrs.get(j * BB as usize..j * BB as usize + EXT_HEADER_CRC_LEN) else {
                return false;
            };
            c = crc32c::crc32c_append(c, x);
        }
        crc32c::crc32c_append(c, data) == h.crc
    })
}

/// Puts back the first word of every data block, which the cycle stamp replaced and
/// the header (or extended header) kept.
fn unpack(h: &RecHeader, hdrs: &[u8], data: &mut [u8]) -> Option<()> {
    let per_header = (HEADER_CYCLE_SIZE / BB) as usize;
    for (i, block) in data.chunks_mut(BB as usize).enumerate() {
        let (j, k) = (i / per_header, i % per_header);
        let src = if j == 0 {
            44 + 4 * k
        } else {
            j * BB as usize + 4 + 4 * k
        };
        if j as u64 >= h.hblks {
            return None;
        }
        let word = hdrs.get(src..src + 4)?;
        let n = block.len().min(4);
        block[..n].copy_from_slice(&word[..n]);
    }
    Some(())
}

/// Refuses what recovery cannot do, before anything is replayed.
fn check_items(vol: &Volume, trans: &[Trans]) -> Result<()> {
    let mut open: HashMap<(u16, u64), &str> = HashMap::new();
    for t in trans {
        for item in &t.items {
            let Some(kind) = item.kind() else {
                continue;
            };
            let id = item
                .regions
                .first()
                .and_then(|r| r.get(8..16))
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes);
            match kind {
                LI_BUF | LI_INODE | LI_ICREATE => {}
                LI_DQUOT | LI_QUOTAOFF => return Err(vol.unsupported(
                    "replaying quota items from the XFS log (quota accounting is not supported)",
                )),
                k => {
                    if let Some(&(i, _, name)) = INTENTS.iter().find(|e| e.0 == k) {
                        open.insert((i, id.unwrap_or(0)), name);
                    } else if let Some(&(i, _, _)) = INTENTS.iter().find(|e| e.1 == k) {
                        open.remove(&(i, id.unwrap_or(0)));
                    } else {
                        let be = k.swap_bytes();
                        return Err(vol.unsupported(if (0x1236..=0x124f).contains(&be) {
                            "replaying an XFS log written by a big-endian host".to_string()
                        } else {
                            format!("replaying XFS log item type {k:#x}")
                        }));
                    }
                }
            }
        }
    }
    if let Some(name) = open.values().next() {
        return Err(vol.unsupported(format!(
            "the XFS log holds an unfinished {name} ({} unfinished in all): finishing deferred \
             work in log recovery is not implemented; mount the filesystem once under Linux \
             (on a copy) to replay it, or read it as it stands",
            open.len()
        )));
    }
    Ok(())
}

/// Replays the log span of `vol` over its device, in memory.
pub(crate) fn recover(vol: &Volume, span: &Span) -> Result<Recovered> {
    let Some(log) = Log::open(vol)? else {
        return Err(vol.unsupported("recovering an external XFS log"));
    };
    let mut parser = Parser::default();
    let (recs, torn) = records(&log, span)?;
    for (off, h, data) in recs {
        parser
            .record(&data, h.num_ops, h.lsn)
            .map_err(|d| vol.corrupt("log record", off, d))?;
    }
    let mut trans = parser.committed;
    check_items(vol, &trans)?;
    for t in &mut trans {
        t.items.sort_by_key(order);
    }
    let dev: Arc<dyn transplant_formats::BlockDev> = vol.dev.clone();
    let mut r = Replayer::new(vol, ReplayDev::new(dev));
    for t in &trans {
        for item in &t.items {
            r.pass1(item)?;
        }
    }
    for t in &trans {
        for item in &t.items {
            r.pass2(item, t.lsn)?;
        }
    }
    r.finish()?;
    Ok(Recovered {
        dev: r.dev,
        transactions: trans.len(),
        head: span.head,
        torn,
    })
}
