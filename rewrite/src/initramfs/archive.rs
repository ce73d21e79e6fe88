//! An initramfs file as the kernel's `unpack_to_rootfs()` walks it: segments back to
//! back, each either a plain cpio archive (the early microcode one above all) or one
//! compressed stream holding one or more cpio archives, with zero bytes allowed between
//! segments. Each segment keeps its original bytes so one that is not changed is written
//! back byte for byte; bytes after the last segment that are neither zeros nor a known
//! magic are kept as an opaque tail.

use super::compression::{self, Compression, EncodeOptions};
use super::newc::{self, Archive};
use super::InitramfsError;

/// One segment of the file.
#[derive(Debug, Clone)]
pub struct Segment {
    pub compression: Compression,
    /// Where it began in the file.
    pub offset: u64,
    /// Its bytes as read: the stream (or plain archives) and the zero padding after it.
    pub original: Vec<u8>,
    /// The cpio archives inside, in order (several when archives were concatenated
    /// before compressing; each keeps its own trailer so hard-link scopes stay apart).
    pub archives: Vec<Archive>,
    /// Set when members were changed: the segment is then rebuilt on writing.
    pub changed: bool,
}

impl Segment {
    pub fn member_count(&self) -> usize {
        self.archives.iter().map(|a| a.members.len()).sum()
    }
}

/// Splits a decompressed stream (or the plain part of the file) into its archives:
/// archives start 4-aligned and zero bytes may sit between them.
fn read_archives(data: &[u8], base: u64, budget: &mut u64) -> Result<Vec<Archive>, InitramfsError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = data.get(pos..).unwrap_or(&[]);
        let zeros = rest.iter().take_while(|&&b| b == 0).count();
        pos += zeros;
        if pos >= data.len() {
            break;
        }
        let (a, used) = newc::read_archive(&data[pos..], base + pos as u64, budget)?;
        out.push(a);
        pos += used.max(1);
    }
    if out.is_empty() {
        return Err(InitramfsError::corrupt(
            "initramfs segment",
            base,
            "no cpio archive inside",
        ));
    }
    Ok(out)
}

/// What [`split`] found.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Zero bytes before the first segment (the kernel skips them).
    pub lead: usize,
    pub segments: Vec<Segment>,
    /// Bytes after the last segment that are no segment.
    pub tail: Vec<u8>,
}

/// Reads every segment of an initramfs file, decompressing at most `limit` bytes in all.
pub fn split(data: &[u8], limit: u64) -> Result<Layout, InitramfsError> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut lead = 0usize;
    let mut budget = limit;
    let mut pos = 0usize;
    let mut tail = Vec::new();
    loop {
        let zeros = data
            .get(pos..)
            .unwrap_or(&[])
            .iter()
            .take_while(|&&b| b == 0)
            .count();
        // Zero padding belongs to the segment before it.
        if zeros > 0 {
            match segments.last_mut() {
                Some(s) => s.original.extend_from_slice(&data[pos..pos + zeros]),
                None => lead = zeros,
            }
            pos += zeros;
        }
        if pos >= data.len() {
            break;
        }
        let rest = &data[pos..];
        let kind = compression::detect_compression(rest);
        let at = pos as u64;
        match kind {
            Compression::None => {
                let (a, used) = newc::read_archive(rest, at, &mut budget)?;
                let used = used.max(1);
                segments.push(Segment {
                    compression: kind,
                    offset: at,
                    original: rest[..used].to_vec(),
                    archives: vec![a],
                    changed: false,
                });
                pos += used;
            }
            Compression::Unknown => {
                if segments.is_empty() {
                    return Err(InitramfsError::corrupt(
                        "initramfs",
                        0,
                        "neither a cpio archive nor a known compressed stream",
                    ));
                }
                tail.extend_from_slice(rest);
                break;
            }
            _ => {
                let (plain, used) = compression::decode(kind, rest, at, budget)?;
                budget = budget.saturating_sub(plain.len() as u64);
                let mut unbounded = u64::MAX;
                let archives =
                    read_archives(&plain, 0, &mut unbounded).map_err(|e| e.in_segment(kind, at))?;
                let used = used.max(1);
                segments.push(Segment {
                    compression: kind,
                    offset: at,
                    original: rest[..used.min(rest.len())].to_vec(),
                    archives,
                    changed: false,
                });
                pos += used;
            }
        }
    }
    if segments.is_empty() {
        return Err(InitramfsError::corrupt("initramfs", 0, "empty"));
    }
    Ok(Layout {
        lead,
        segments,
        tail,
    })
}

/// Writes the segments back: unchanged ones as read, changed ones rebuilt and
/// recompressed with their own compressor, zero-padded to 4 bytes when something
/// follows (a plain archive after it must start 4-aligned).
pub fn join(layout: &Layout, opts: &EncodeOptions) -> Result<Vec<u8>, InitramfsError> {
    let mut out = vec![0u8; layout.lead];
    let (segments, tail) = (&layout.segments, &layout.tail);
    let n = segments.len();
    for (i, s) in segments.iter().enumerate() {
        if !s.changed {
            out.extend_from_slice(&s.original);
            continue;
        }
        let mut plain = Vec::new();
        for a in &s.archives {
            newc::write_archive(&mut plain, a)?;
        }
        if s.compression == Compression::None {
            // As cpio -o does: a whole number of 512-byte blocks.
            while plain.len() & 511 != 0 {
                plain.push(0);
            }
            out.extend_from_slice(&plain);
        } else {
            let enc = compression::encode(s.compression, &plain, opts)?;
            out.extend_from_slice(&enc);
        }
        if i + 1 < n || !tail.is_empty() {
            while out.len() & 3 != 0 {
                out.push(0);
            }
        }
    }
    out.extend_from_slice(tail);
    Ok(out)
}
