//! The three passes of JBD2 recovery, with the kernel's rules (fs/jbd2/recovery.c): a
//! scan from `s_start` that finds where the log ends (the first block whose magic,
//! sequence or commit checksum does not follow on), a pass that collects revoke records
//! with the transaction that wrote them, and a pass that writes every logged block home
//! unless a revoke record of the same or a later transaction covers it. Every pass walks
//! the same blocks, so each stops at the end the scan found.
//!
//! The journal is untrusted: a log that wraps around onto itself forever, tags that run
//! off the block, home blocks past the filesystem, or a checksum mismatch inside a
//! committed transaction all end as Corrupt, never as a hang or a panic.

use super::be::{be16, be32, be64, crc32_be, put_be32};
use super::jsb::{blocktype, feature, JournalSuper, MAGIC};
use crate::error::{Error, Result};
use crate::ext4::csum::crc32c;
use crate::ext4::le::{u16_at, u32_at};
use std::collections::{HashMap, HashSet};

/// Journal blocks by their number within the journal (0 is its superblock).
pub trait Log {
    fn read(&self, n: u32) -> Result<Vec<u8>>;
}

const TAG_ESCAPE: u16 = 0x1;
const TAG_SAME_UUID: u16 = 0x2;
const TAG_LAST: u16 = 0x8;
/// `h_chksum_type` and `h_chksum_size` of a checksum v1 commit block.
const CRC32_CHKSUM: u8 = 1;
const CRC32_CHKSUM_SIZE: u8 = 4;
/// ext4's fast-commit tag that opens a fast commit (`EXT4_FC_TAG_HEAD`).
const FC_TAG_HEAD: u16 = 0x9;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The first transaction in the log.
    pub first_transaction: u32,
    /// The first transaction not in the log (the next one to write is one past it).
    pub end_transaction: u32,
    /// Blocks written home.
    pub replayed: u64,
    /// Logged blocks skipped because a revoke record covers them.
    pub revoked: u64,
    pub revoke_records: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Scan,
    Revoke,
    Replay,
}

struct Tag {
    home: u64,
    flags: u16,
    csum: u32,
}

/// Transaction ids wrap around: `a` is after `b` when the difference is positive.
fn tid_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn tid_geq(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

struct Recovery<'a> {
    log: &'a dyn Log,
    sb: &'a JournalSuper,
    fs_blocks: u64,
    dev: &'a str,
    end: Option<u32>,
    /// Home blocks the log holds, from the scan: only their revoke records matter, which
    /// bounds the revoke table by the log's length.
    logged: HashSet<u64>,
    /// Home block -> the latest transaction that revoked it.
    revokes: HashMap<u64, u32>,
    out: Outcome,
}

/// Replays the log described by `sb` (whose `s_start` is not 0), calling `write` for each
/// block to put home, in log order (a later copy of a block overwrites an earlier one).
pub fn replay(
    log: &dyn Log,
    sb: &JournalSuper,
    fs_blocks: u64,
    dev: &str,
    write: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<Outcome> {
    let mut r = Recovery {
        log,
        sb,
        fs_blocks,
        dev,
        end: None,
        logged: HashSet::new(),
        revokes: HashMap::new(),
        out: Outcome {
            first_transaction: sb.sequence,
            ..Default::default()
        },
    };
    r.walk(Pass::Scan, &mut |_, _| Ok(()))?;
    r.check_fast_commits()?;
    r.walk(Pass::Revoke, &mut |_, _| Ok(()))?;
    r.walk(Pass::Replay, write)?;
    r.out.end_transaction = r.end.unwrap_or(sb.sequence);
    Ok(r.out)
}

impl Recovery<'_> {
    fn corrupt(&self, detail: String) -> Error {
        Error::Corrupt {
            dev: self.dev.to_string(),
            detail: format!("journal: {detail}"),
        }
    }

    fn desc_csum_ok(&self, b: &[u8]) -> bool {
        if !self.sb.csum_v2or3() {
            return true;
        }
        let at = b.len().saturating_sub(4);
        let mut c = b.to_vec();
        put_be32(&mut c, at, 0);
        be32(b, at) == crc32c(self.sb.csum_seed, &c)
    }

    fn commit_csum_ok(&self, b: &[u8]) -> bool {
        if !self.sb.csum_v2or3() {
            return true;
        }
        let mut c = b.to_vec();
        put_be32(&mut c, 0x10, 0);
        be32(b, 0x10) == crc32c(self.sb.csum_seed, &c)
    }

    fn tag_csum_ok(&self, t: &Tag, data: &[u8], sequence: u32) -> bool {
        if !self.sb.csum_v2or3() {
            return true;
        }
        let c = crc32c(self.sb.csum_seed, &sequence.to_be_bytes());
        let c = crc32c(c, data);
        if self.sb.csum_v3() {
            t.csum == c
        } else {
            t.csum == c & 0xFFFF
        }
    }

    /// The tags of a descriptor block, as the kernel reads them: fixed-size tags, each
    /// followed by a UUID unless SAME_UUID, up to LAST_TAG or the checksum tail.
    fn tags(&self, b: &[u8]) -> Vec<Tag> {
        let size = self.sb.block_size - self.sb.tail_bytes();
        let tb = self.sb.tag_bytes();
        let mut at = 12;
        let mut out = Vec::new();
        while at + tb <= size {
            let Some(t) = b.get(at..at + tb) else { break };
            let flags = be16(t, 6);
            let mut home = be32(t, 0) as u64;
            if self.sb.is_64bit() {
                home |= (be32(t, 8) as u64) << 32;
            }
            let csum = if self.sb.csum_v3() {
                be32(t, 12)
            } else {
                be16(t, 4) as u32
            };
            out.push(Tag { home, flags, csum });
            at += tb;
            if flags & TAG_SAME_UUID == 0 {
                at += 16;
            }
            if flags & TAG_LAST != 0 {
                break;
            }
        }
        out
    }

    fn read(&self, n: u32) -> Result<Vec<u8>> {
        if n >= self.sb.maxlen {
            return Err(self.corrupt(format!(
                "log block {n} is past the journal's {} blocks",
                self.sb.maxlen
            )));
        }
        let b = self.log.read(n)?;
        if b.len() != self.sb.block_size {
            return Err(self.corrupt(format!("log block {n}: short read")));
        }
        Ok(b)
    }

    fn advance(&self, pos: u32, n: usize) -> u32 {
        // `n` tags fit in one block, so far less than the log; wrap once per block.
        let mut p = pos;
        for _ in 0..n {
            p = self.sb.wrap(p + 1);
        }
        p
    }

    fn walk(&mut self, pass: Pass, write: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        let sb = self.sb;
        let mut next_id = sb.sequence;
        let mut pos = sb.start;
        let mut crc_sum: u32 = !0;
        let mut need_check_commit_time = false;
        let mut last_commit_time: u64 = 0;
        // A log is at most the ring long; twice that (plus the block that ends it) is
        // a log that loops onto itself.
        let limit = 2 * sb.log_len() as u64 + 2;
        let mut walked: u64 = 0;
        loop {
            if pass != Pass::Scan {
                if let Some(end) = self.end {
                    if tid_geq(next_id, end) {
                        break;
                    }
                }
            }
            walked += 1;
            if walked > limit {
                return Err(self.corrupt(format!(
                    "the log runs on past its own length ({} blocks) from block {}: it loops",
                    sb.log_len(),
                    sb.start
                )));
            }
            let at = pos;
            let b = self.read(at)?;
            pos = sb.wrap(pos + 1);
            if be32(&b, 0) != MAGIC || be32(&b, 8) != next_id {
                break;
            }
            match be32(&b, 4) {
                blocktype::DESCRIPTOR => {
                    if !self.desc_csum_ok(&b) {
                        // The scan may meet stale blocks of an older log (lazy journal
                        // init); the commit times tell which. Later passes stop before them.
                        if pass != Pass::Scan {
                            return Err(self.corrupt(format!(
                                "descriptor block {at} (transaction {next_id}): checksum does not match"
                            )));
                        }
                        need_check_commit_time = true;
                    }
                    let tags = self.tags(&b);
                    walked += tags.len() as u64;
                    match pass {
                        Pass::Scan => {
                            for t in &tags {
                                self.logged.insert(t.home);
                            }
                            if sb.csum_v1() && !need_check_commit_time && self.end.is_none() {
                                crc_sum = crc32_be(crc_sum, &b);
                                for _ in &tags {
                                    let d = self.read(pos)?;
                                    pos = sb.wrap(pos + 1);
                                    crc_sum = crc32_be(crc_sum, &d);
                                }
                            } else {
                                pos = self.advance(pos, tags.len());
                            }
                        }
                        Pass::Revoke => pos = self.advance(pos, tags.len()),
                        Pass::Replay => {
                            for t in tags {
                                let io = pos;
                                pos = sb.wrap(pos + 1);
                                let mut d = self.read(io)?;
                                if self.is_revoked(t.home, next_id) {
                                    self.out.revoked += 1;
                                    continue;
                                }
                                if !self.tag_csum_ok(&t, &d, next_id) {
                                    return Err(self.corrupt(format!(
                                        "log block {io} (home block {}, transaction {next_id}): checksum does not match",
                                        t.home
                                    )));
                                }
                                if t.home >= self.fs_blocks {
                                    return Err(self.corrupt(format!(
                                        "log block {io} (transaction {next_id}) belongs at block {}, past the filesystem's {} blocks",
                                        t.home, self.fs_blocks
                                    )));
                                }
                                if t.flags & TAG_ESCAPE != 0 {
                                    put_be32(&mut d, 0, MAGIC);
                                }
                                write(t.home, &d)?;
                                self.out.replayed += 1;
                            }
                        }
                    }
                }
                blocktype::COMMIT => {
                    let commit_time = be64(&b, 0x30);
                    if need_check_commit_time {
                        // A bad descriptor or revoke block before this commit: stale
                        // blocks end the log (commit time went back), else it is corrupt.
                        if commit_time >= last_commit_time {
                            return Err(self.corrupt(format!(
                                "transaction {next_id}: a descriptor or revoke block's checksum does not match"
                            )));
                        }
                        break;
                    }
                    let mut bad = false;
                    if pass == Pass::Scan && sb.csum_v1() {
                        if let Some(end) = self.end {
                            return Err(self.failed_commit(end));
                        }
                        let found = be32(&b, 0x10);
                        let (kind, size) = (b.get(0xC).copied(), b.get(0xD).copied());
                        let matches = crc_sum == found
                            && kind == Some(CRC32_CHKSUM)
                            && size == Some(CRC32_CHKSUM_SIZE);
                        let unused = kind == Some(0) && size == Some(0) && found == 0;
                        bad = !(matches || unused);
                        crc_sum = !0;
                    }
                    if pass == Pass::Scan && (bad || !self.commit_csum_ok(&b)) {
                        if commit_time < last_commit_time {
                            break;
                        }
                        self.end = Some(next_id);
                        if !sb.has(feature::INCOMPAT_ASYNC_COMMIT) {
                            return Err(self.failed_commit(next_id));
                        }
                    }
                    if pass == Pass::Scan {
                        last_commit_time = commit_time;
                    }
                    next_id = next_id.wrapping_add(1);
                }
                blocktype::REVOKE => {
                    if pass == Pass::Scan && !self.desc_csum_ok(&b) {
                        need_check_commit_time = true;
                    }
                    if pass == Pass::Revoke {
                        self.scan_revoke(&b, at, next_id)?;
                    }
                }
                _ => break,
            }
        }
        match (pass, self.end) {
            (Pass::Scan, None) => self.end = Some(next_id),
            (Pass::Scan, Some(_)) => {}
            (_, end) if end == Some(next_id) => {}
            (_, end) => {
                return Err(self.corrupt(format!(
                    "a recovery pass ended at transaction {next_id}, the scan at {}",
                    end.unwrap_or(0)
                )))
            }
        }
        Ok(())
    }

    fn failed_commit(&self, tid: u32) -> Error {
        self.corrupt(format!(
            "the commit block of transaction {tid} has a bad checksum (the kernel refuses to mount this); run `e2fsck` on a copy to see what it recovers"
        ))
    }

    fn scan_revoke(&mut self, b: &[u8], at: u32, tid: u32) -> Result<()> {
        let count = be32(b, 12) as usize;
        if count > self.sb.block_size - self.sb.tail_bytes() {
            return Err(self.corrupt(format!(
                "revoke block {at} (transaction {tid}) claims {count} bytes of records"
            )));
        }
        let len = if self.sb.is_64bit() { 8 } else { 4 };
        let mut off = 16;
        while off + len <= count {
            let block = if len == 8 {
                be64(b, off)
            } else {
                be32(b, off) as u64
            };
            off += len;
            self.out.revoke_records += 1;
            if !self.logged.contains(&block) {
                continue;
            }
            let e = self.revokes.entry(block).or_insert(tid);
            if tid_gt(tid, *e) {
                *e = tid;
            }
        }
        Ok(())
    }

    fn is_revoked(&self, block: u64, tid: u32) -> bool {
        self.revokes.get(&block).is_some_and(|&r| !tid_gt(tid, r))
    }

    /// Fast commits past the last full commit would be replayed by ext4 itself (logical
    /// changes, not blocks); this replay cannot, so a pending one is refused.
    fn check_fast_commits(&self) -> Result<()> {
        let (Some(first), Some(end)) = (self.sb.fc_first, self.end) else {
            return Ok(());
        };
        if first >= self.sb.maxlen {
            return Ok(());
        }
        let b = self.read(first)?;
        let tag = u16_at(&b, 0);
        let tid = u32_at(&b, 8);
        if tag == FC_TAG_HEAD && tid == end {
            return Err(Error::Unsupported {
                dev: self.dev.to_string(),
                feature: format!(
                    "replaying ext4 fast commits (the journal holds fast commits of transaction {end}); mount the filesystem once with Linux or run `e2fsck`, then retry"
                ),
            });
        }
        Ok(())
    }
}
