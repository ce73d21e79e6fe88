//! The VHDX log: metadata and BAT updates are journaled before they reach their place, so
//! an image not closed cleanly holds its newest metadata only in the log. We replay the
//! active sequence in memory, as an overlay of host-file bytes, because the input must
//! never be written.

use super::le::{crc_without, u32_at, u64_at, Guid};
use crate::blockdev::BlockDev;
use crate::error::{check_range, Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

const SECTOR: u64 = 4096;
/// Logs are a few MiB in practice; a larger one is treated as corrupt before we hold it.
pub const MAX_LOG: u64 = 256 << 20;

/// The host file as it would be after replay: replayed 4 KiB sectors and zeroed ranges
/// laid over the bytes on disk, reads past the real end (a log may extend the file)
/// returning zeroes.
pub struct Replayed {
    inner: Arc<dyn BlockDev>,
    len: u64,
    sectors: BTreeMap<u64, Vec<u8>>,
    zeroes: Vec<(u64, u64)>,
    pub entries: usize,
}

struct Entry {
    seq: u64,
    tail: u64,
    len: u64,
    last_file_offset: u64,
    flushed_file_offset: u64,
}

/// Reads `n` bytes of the circular log starting at `off` within it.
fn ring(log: &[u8], off: u64, n: u64) -> Option<Vec<u8>> {
    let l = log.len() as u64;
    if n > l || off >= l {
        return None;
    }
    let mut v = Vec::with_capacity(n as usize);
    let first = n.min(l - off);
    v.extend_from_slice(log.get(off as usize..(off + first) as usize)?);
    v.extend_from_slice(log.get(..(n - first) as usize)?);
    Some(v)
}

/// Parses the entry header at `off` and checks the whole entry's CRC; None if this is not
/// a valid entry of this log.
fn entry_at(log: &[u8], off: u64, guid: &Guid) -> Option<Entry> {
    let h = ring(log, off, 64)?;
    if h.get(..4)? != b"loge" {
        return None;
    }
    let len = u32_at(&h, 8)? as u64;
    let count = u32_at(&h, 24)? as u64;
    if len == 0 || !len.is_multiple_of(SECTOR) || len > log.len() as u64 {
        return None;
    }
    if Guid::at(&h, 32)? != *guid {
        return None;
    }
    // The descriptors must fit in the entry.
    if count.checked_mul(32)?.checked_add(64)? > len {
        return None;
    }
    let whole = ring(log, off, len)?;
    if u32_at(&h, 4)? != crc_without(&whole, 4) {
        return None;
    }
    Some(Entry {
        seq: u64_at(&h, 16)?,
        tail: u32_at(&h, 12)? as u64,
        len,
        flushed_file_offset: u64_at(&h, 48)?,
        last_file_offset: u64_at(&h, 56)?,
    })
}

impl Replayed {
    /// Finds the active sequence of the log at `log_offset` and lays it over `file`.
    pub fn replay(
        file: Arc<dyn BlockDev>,
        name: &str,
        log_offset: u64,
        log_length: u64,
        guid: &Guid,
    ) -> Result<Replayed> {
        let corrupt = |off: u64, d: String| Error::corrupt(name, "VHDX log", off, d);
        let flen = file.len();
        if log_length == 0
            || !log_length.is_multiple_of(1 << 20)
            || log_length > MAX_LOG
            || !log_offset.is_multiple_of(1 << 20)
            || log_offset.checked_add(log_length).is_none_or(|e| e > flen)
        {
            return Err(corrupt(
                log_offset,
                format!("a log of {log_length:#x} bytes at {log_offset:#x} is misaligned, too large or past the end of the file"),
            ));
        }
        let mut log = vec![0u8; log_length as usize];
        file.read_at(&mut log, log_offset)?;
        // Every valid entry, then the longest run of consecutive sequence numbers from
        // each; the run ending at the highest sequence number is active, if its head's
        // tail points back into it.
        let mut valid = BTreeMap::new();
        for off in (0..log_length).step_by(SECTOR as usize) {
            if let Some(e) = entry_at(&log, off, guid) {
                valid.insert(off, e);
            }
        }
        let mut best: Option<Vec<u64>> = None;
        for (&start, e) in &valid {
            let mut run = vec![start];
            let (mut off, mut seq, mut len) = (start, e.seq, e.len);
            // A run cannot hold more entries than the log has sectors.
            while (run.len() as u64) < log_length / SECTOR {
                off = (off + len) % log_length;
                match valid.get(&off) {
                    Some(n) if Some(n.seq) == seq.checked_add(1) => {
                        run.push(off);
                        seq = n.seq;
                        len = n.len;
                    }
                    _ => break,
                }
            }
            let head_seq = |r: &Vec<u64>| r.last().and_then(|o| valid.get(o)).map(|e| e.seq);
            if best.as_ref().is_none_or(|b| head_seq(&run) > head_seq(b)) {
                best = Some(run);
            }
        }
        let Some(run) = best else {
            return Err(corrupt(
                log_offset,
                "the header names a log but no valid log entry was found".into(),
            ));
        };
        let Some(head) = run.last().and_then(|o| valid.get(o)) else {
            return Err(corrupt(log_offset, "empty log sequence".into()));
        };
        let Some(first) = run.iter().position(|&o| o == head.tail) else {
            return Err(Error::unsupported(
                name,
                "VHDX log whose active sequence could not be established; open and close it once in Hyper-V or run `qemu-img check -r all` on a copy",
            ));
        };
        if flen < head.flushed_file_offset {
            return Err(corrupt(
                log_offset,
                format!(
                    "the file has {flen} bytes but the log says {} were flushed",
                    head.flushed_file_offset
                ),
            ));
        }
        let mut r = Replayed {
            len: flen.max(head.last_file_offset),
            inner: file,
            sectors: BTreeMap::new(),
            zeroes: Vec::new(),
            entries: 0,
        };
        for &off in run.get(first..).unwrap_or(&[]) {
            r.apply(&log, off, log_offset, name)?;
            r.entries += 1;
        }
        Ok(r)
    }

    fn apply(&mut self, log: &[u8], off: u64, log_offset: u64, name: &str) -> Result<()> {
        let at = log_offset + off;
        let corrupt = |d: String| Error::corrupt(name, "VHDX log entry", at, d);
        let short = || corrupt("entry shorter than its descriptors".into());
        let h = ring(log, off, 64).ok_or_else(short)?;
        let len = u32_at(&h, 8).ok_or_else(short)? as u64;
        let seq = u64_at(&h, 16).ok_or_else(short)?;
        let count = u32_at(&h, 24).ok_or_else(short)? as u64;
        let entry = ring(log, off, len).ok_or_else(short)?;
        let desc_sectors = (64 + count * 32).div_ceil(SECTOR);
        let mut data_idx = desc_sectors;
        for i in 0..count {
            let d = entry
                .get((64 + i * 32) as usize..(96 + i * 32) as usize)
                .ok_or_else(short)?;
            let fo = u64_at(d, 16).ok_or_else(short)?;
            if u64_at(d, 24) != Some(seq) {
                return Err(corrupt(format!(
                    "descriptor {i} has another sequence number"
                )));
            }
            if fo % SECTOR != 0 || fo < (1 << 20) {
                return Err(corrupt(format!(
                    "descriptor {i} targets {fo:#x}, misaligned or inside the headers"
                )));
            }
            match d.get(..4) {
                Some(b"zero") => {
                    let zl = u64_at(d, 8).ok_or_else(short)?;
                    let end = fo
                        .checked_add(zl)
                        .filter(|_| zl % SECTOR == 0)
                        .ok_or_else(|| corrupt(format!("zero descriptor {i} is malformed")))?;
                    let gone: Vec<u64> = self.sectors.range(fo..end).map(|(&k, _)| k).collect();
                    for k in gone {
                        self.sectors.remove(&k);
                    }
                    self.zeroes.push((fo, end));
                }
                Some(b"desc") => {
                    let s = entry
                        .get((data_idx * SECTOR) as usize..((data_idx + 1) * SECTOR) as usize)
                        .ok_or_else(short)?;
                    data_idx += 1;
                    if s.get(..4) != Some(b"data")
                        || u32_at(s, 4) != Some((seq >> 32) as u32)
                        || u32_at(s, 4092) != Some(seq as u32)
                    {
                        return Err(corrupt(format!(
                            "data sector of descriptor {i} has a bad signature or sequence"
                        )));
                    }
                    let mut sector = Vec::with_capacity(SECTOR as usize);
                    sector.extend_from_slice(d.get(8..16).ok_or_else(short)?);
                    sector.extend_from_slice(s.get(8..4092).ok_or_else(short)?);
                    sector.extend_from_slice(d.get(4..8).ok_or_else(short)?);
                    self.sectors.insert(fo, sector);
                }
                _ => {
                    return Err(Error::unsupported(
                        name,
                        format!(
                            "unknown VHDX log descriptor {i} at {at:#x}; open and close the image once in Hyper-V or run `qemu-img check -r all` on a copy"
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

impl BlockDev for Replayed {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.inner.name(), offset, buf.len() as u64, self.len)?;
        let end = offset + buf.len() as u64;
        let real = self.inner.len();
        let on_disk = end.min(real).saturating_sub(offset) as usize;
        let (disk, past) = buf.split_at_mut(on_disk.min(buf.len()));
        if !disk.is_empty() {
            self.inner.read_at(disk, offset)?;
        }
        past.fill(0);
        for &(zs, ze) in &self.zeroes {
            let (s, e) = (zs.max(offset), ze.min(end));
            if s < e {
                if let Some(b) = buf.get_mut((s - offset) as usize..(e - offset) as usize) {
                    b.fill(0);
                }
            }
        }
        let first = offset - offset % SECTOR;
        for (&so, data) in self.sectors.range(first..end) {
            let (s, e) = (so.max(offset), (so + SECTOR).min(end));
            if s >= e {
                continue;
            }
            let src = data.get((s - so) as usize..(e - so) as usize);
            let dst = buf.get_mut((s - offset) as usize..(e - offset) as usize);
            if let (Some(src), Some(dst)) = (src, dst) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}
