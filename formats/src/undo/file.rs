//! The undo file on disk. Append-only, so no byte is ever rewritten and a crash while
//! appending can only cut the tail: a header naming the image, one record per saved
//! range (offset, the original bytes, a checksum of them and of the bytes that replace
//! them), an end marker counting the records, then state markers appended as the commit
//! and a later undo progress. A cut or damaged marker reads as absent, which always errs
//! toward "the commit may be half done": undo then restores everything, which is safe.
//!
//! All integers are little-endian. Every piece carries a CRC-32C of its own bytes.
//!
//! ```text
//! header:  magic "TRANSPLANT-UNDO\0" | version u32 = 1 | image size u64 |
//!          name length u32 | name (UTF-8, <= 4096) | crc u32
//! record:  "REC1" | offset u64 | length u32 | crc(old) u32 | crc(new) u32 | old bytes | crc u32
//! end:     "END1" | record count u64 | saved bytes u64 | crc u32
//! markers: "CMT1" | crc u32      (the image holds every new byte, flushed)
//!          "UND1" | crc u32      (every old byte was put back, flushed)
//! ```

use crate::error::{Error, Result};
use std::io::Read;

pub const MAGIC: &[u8; 16] = b"TRANSPLANT-UNDO\0";
pub const VERSION: u32 = 1;
/// Longest image name kept in the header.
pub const MAX_NAME: usize = 4096;
/// Longest record a writer makes; a reader refuses longer ones, which bounds its buffers.
pub const MAX_RECORD: u32 = 1 << 20;

const REC: &[u8; 4] = b"REC1";
const END: &[u8; 4] = b"END1";
pub const COMMITTED: &[u8; 4] = b"CMT1";
pub const UNDONE: &[u8; 4] = b"UND1";

pub fn header(image_size: u64, name: &str) -> Vec<u8> {
    let mut name = name.as_bytes();
    if name.len() > MAX_NAME {
        name = name.get(..MAX_NAME).unwrap_or(name);
    }
    let mut b = Vec::with_capacity(40 + name.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&image_size.to_le_bytes());
    b.extend_from_slice(&(name.len() as u32).to_le_bytes());
    b.extend_from_slice(name);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// The bytes before a record's data; the record's CRC starts over them.
pub fn record_head(offset: u64, len: u32, old_crc: u32, new_crc: u32) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(REC);
    b[4..12].copy_from_slice(&offset.to_le_bytes());
    b[12..16].copy_from_slice(&len.to_le_bytes());
    b[16..20].copy_from_slice(&old_crc.to_le_bytes());
    b[20..24].copy_from_slice(&new_crc.to_le_bytes());
    b
}

pub fn end(count: u64, bytes: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(END);
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(&bytes.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

pub fn marker(tag: &[u8; 4]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(tag);
    b[4..].copy_from_slice(&crc32c::crc32c(tag).to_le_bytes());
    b
}

/// Where one saved range lives in the undo file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordIndex {
    /// Offset in the image.
    pub offset: u64,
    pub len: u32,
    pub old_crc: u32,
    pub new_crc: u32,
    /// Offset of the saved bytes in the undo file.
    pub data_at: u64,
}

/// How far the commit and a later undo got, from the markers after the end marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UndoState {
    /// The undo file is complete but the commit did not say it finished: the image may
    /// hold any mix of old and new bytes in the saved ranges.
    Interrupted,
    /// Every new byte reached the image.
    Committed,
    /// An undo finished: the image holds the old bytes again.
    Undone,
}

#[derive(Debug, Clone)]
pub struct Parsed {
    pub image_size: u64,
    pub image_name: String,
    pub records: Vec<RecordIndex>,
    pub saved_bytes: u64,
    pub state: UndoState,
    /// Length of the file up to the last valid marker: where the next marker goes.
    pub valid_len: u64,
}

/// A reader that counts its position and keeps a running CRC of what it hands out.
struct Cursor<R> {
    inner: R,
    pos: u64,
    crc: u32,
}

impl<R: Read> Cursor<R> {
    /// Fills `buf`; `Ok(false)` at a clean or cut end of file.
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => return Ok(false),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += buf.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(true)
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Reads and checks the whole file (every CRC), keeping only the index of its records:
/// memory is 32 bytes per record whatever the saved size. `file_len` bounds the count.
pub fn parse(name: &str, r: impl Read, file_len: u64) -> Result<Parsed> {
    let torn = |at: u64, what: &str| {
        Error::refused(
            name,
            format!(
                "the undo file is incomplete or damaged at offset {at:#x} ({what}). A commit \
                 writes the image only after its undo file is complete, so if this file was \
                 cut while being written the image was not changed; check the image, then \
                 delete this file"
            ),
        )
    };
    let io = |e: std::io::Error| Error::io(name, e);
    let mut c = Cursor {
        inner: std::io::BufReader::with_capacity(1 << 20, r),
        pos: 0,
        crc: 0,
    };
    let mut fixed = [0u8; 32];
    if !c.fill(&mut fixed).map_err(io)? {
        return Err(torn(0, "the file ends inside the header"));
    }
    if fixed.get(..16) != Some(&MAGIC[..]) {
        return Err(Error::refused(
            name,
            "this is not a transplant undo file (bad magic); name the right file with --undo-file",
        ));
    }
    let version = u32_at(&fixed, 16);
    if version != VERSION {
        return Err(Error::unsupported(
            name,
            format!("undo file version {version}"),
        ));
    }
    let image_size = u64_at(&fixed, 20);
    let name_len = u32_at(&fixed, 28) as usize;
    if name_len > MAX_NAME {
        return Err(torn(28, "the image name is longer than any writer makes"));
    }
    let mut nb = vec![0u8; name_len];
    if !c.fill(&mut nb).map_err(io)? {
        return Err(torn(32, "the file ends inside the header"));
    }
    let expect = c.crc;
    let mut crc = [0u8; 4];
    if !c.fill(&mut crc).map_err(io)? || u32::from_le_bytes(crc) != expect {
        return Err(torn(c.pos, "the header checksum does not match"));
    }
    let image_name = String::from_utf8_lossy(&nb).into_owned();

    let mut records = Vec::new();
    let mut saved = 0u64;
    let mut data = vec![0u8; 64 * 1024];
    let (count, bytes) = loop {
        let at = c.pos;
        c.crc = 0;
        let mut tag = [0u8; 4];
        if !c.fill(&mut tag).map_err(io)? {
            return Err(torn(at, "no end marker: the file was cut"));
        }
        if &tag == END {
            let mut rest = [0u8; 16];
            if !c.fill(&mut rest).map_err(io)? {
                return Err(torn(at, "the end marker is cut"));
            }
            let expect = c.crc;
            if !c.fill(&mut crc).map_err(io)? || u32::from_le_bytes(crc) != expect {
                return Err(torn(at, "the end marker's checksum does not match"));
            }
            break (u64_at(&rest, 0), u64_at(&rest, 8));
        }
        if &tag != REC {
            return Err(torn(at, "a record has an unknown tag"));
        }
        let mut h = [0u8; 20];
        if !c.fill(&mut h).map_err(io)? {
            return Err(torn(at, "a record is cut"));
        }
        let offset = u64_at(&h, 0);
        let len = u32_at(&h, 8);
        if len == 0 || len > MAX_RECORD || u64::from(len) > file_len.saturating_sub(c.pos) {
            return Err(torn(at, "a record's length is impossible"));
        }
        let data_at = c.pos;
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(data.len());
            let piece = data.get_mut(..n).unwrap_or(&mut []);
            if !c.fill(piece).map_err(io)? {
                return Err(torn(at, "a record's data is cut"));
            }
            left -= n;
        }
        let expect = c.crc;
        if !c.fill(&mut crc).map_err(io)? || u32::from_le_bytes(crc) != expect {
            return Err(torn(at, "a record's checksum does not match"));
        }
        records.push(RecordIndex {
            offset,
            len,
            old_crc: u32_at(&h, 12),
            new_crc: u32_at(&h, 16),
            data_at,
        });
        saved += u64::from(len);
    };
    if count != records.len() as u64 || bytes != saved {
        return Err(torn(
            c.pos,
            "the end marker counts other records than the file holds",
        ));
    }
    check_ranges(name, image_size, &records)?;

    // Markers: the last complete one wins; a cut or unknown tail is ignored.
    let mut state = UndoState::Interrupted;
    let mut valid_len = c.pos;
    loop {
        let mut m = [0u8; 8];
        if !c.fill(&mut m).map_err(io)? {
            break;
        }
        let tag: [u8; 4] = [m[0], m[1], m[2], m[3]];
        if m != marker(&tag) {
            break;
        }
        state = match &tag {
            t if t == COMMITTED => UndoState::Committed,
            t if t == UNDONE => UndoState::Undone,
            _ => break,
        };
        valid_len = c.pos;
    }
    Ok(Parsed {
        image_size,
        image_name,
        records,
        saved_bytes: saved,
        state,
        valid_len,
    })
}

/// Records must lie inside the image and not overlap (each byte has one original).
fn check_ranges(name: &str, image_size: u64, records: &[RecordIndex]) -> Result<()> {
    let mut sorted: Vec<(u64, u64)> = records
        .iter()
        .map(|r| (r.offset, u64::from(r.len)))
        .collect();
    sorted.sort_unstable();
    let mut end = 0u64;
    for (off, len) in sorted {
        let e = off.checked_add(len).filter(|&e| e <= image_size);
        let Some(e) = e else {
            return Err(Error::corrupt(
                name,
                "undo record",
                off,
                format!("the range {off:#x}+{len:#x} lies past the end of the image"),
            ));
        };
        if off < end {
            return Err(Error::corrupt(
                name,
                "undo record",
                off,
                "two records save the same bytes",
            ));
        }
        end = e;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[(u64, &[u8])], markers: &[&[u8; 4]]) -> Vec<u8> {
        let mut f = header(1 << 20, "/images/a.raw");
        let mut saved = 0;
        for &(off, d) in records {
            let h = record_head(off, d.len() as u32, crc32c::crc32c(d), 7);
            let crc = crc32c::crc32c_append(crc32c::crc32c(&h), d);
            f.extend_from_slice(&h);
            f.extend_from_slice(d);
            f.extend_from_slice(&crc.to_le_bytes());
            saved += d.len() as u64;
        }
        f.extend_from_slice(&end(records.len() as u64, saved));
        for m in markers {
            f.extend_from_slice(&marker(m));
        }
        f
    }

    #[test]
    fn round_trip_and_states() {
        let f = file(&[(0, b"abc"), (4096, b"defg")], &[]);
        let p = parse("u", &f[..], f.len() as u64).unwrap();
        assert_eq!(p.image_name, "/images/a.raw");
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.records[1].offset, 4096);
        assert_eq!(p.saved_bytes, 7);
        assert_eq!(p.state, UndoState::Interrupted);
        assert_eq!(p.valid_len, f.len() as u64);
        let f = file(&[(0, b"abc")], &[COMMITTED]);
        assert_eq!(
            parse("u", &f[..], f.len() as u64).unwrap().state,
            UndoState::Committed
        );
        let mut f = file(&[(0, b"abc")], &[COMMITTED, UNDONE]);
        assert_eq!(
            parse("u", &f[..], f.len() as u64).unwrap().state,
            UndoState::Undone
        );
        // A cut marker is no marker.
        f.truncate(f.len() - 3);
        let p = parse("u", &f[..], f.len() as u64).unwrap();
        assert_eq!(p.state, UndoState::Committed);
        assert_eq!(p.valid_len, f.len() as u64 - 5);
    }

    #[test]
    fn every_cut_before_the_end_marker_is_refused() {
        let f = file(&[(0, b"abc"), (4096, b"defg")], &[]);
        for cut in 0..f.len() {
            let e = parse("u", &f[..cut], cut as u64).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Refused, "cut at {cut}: {e}");
        }
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(parse("u", &g[..], g.len() as u64).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn overlapping_or_outside_records_are_corrupt() {
        let f = file(&[(0, b"abc"), (2, b"defg")], &[]);
        let e = parse("u", &f[..], f.len() as u64).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
        let f = file(&[((1 << 20) - 2, b"abc")], &[]);
        let e = parse("u", &f[..], f.len() as u64).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
    }
}
