//! A metadata area: a 512-byte header and a circular buffer holding the VG's text
//! metadata. The current copy may wrap around the buffer's end.

use super::crc::{calc_crc, INITIAL};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};

const MAGIC: &[u8; 16] = b"\x20LVM2\x20x[5A%r0N*>";
const HEADER: u64 = 512;
/// `pvchange --metadataignore y`: the area exists but LVM neither reads nor updates it, so
/// its copy may be stale.
const RAW_LOCN_IGNORED: u32 = 1;
/// LVM's own limit on metadata text is far below this; a larger claim is hostile.
const MAX_TEXT: u64 = 64 << 20;

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)?.try_into().ok().map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// Reads the current metadata text of the area at `(start, size)`; `None` if it is empty.
pub fn read_text(dev: &dyn BlockDev, start: u64, size: u64) -> Result<Option<String>> {
    let name = dev.name();
    if start.checked_add(size).is_none_or(|e| e > dev.len()) || size <= HEADER {
        return Err(Error::corrupt(
            name,
            "LVM metadata area",
            start,
            format!("{size} bytes at {start:#x} do not fit the device"),
        ));
    }
    let mut h = vec![0u8; HEADER as usize];
    dev.read_at(&mut h, start)?;
    let stored = u32_at(&h, 0).unwrap_or(0);
    let computed = calc_crc(INITIAL, h.get(4..).unwrap_or(&[]));
    if stored != computed {
        return Err(Error::corrupt(
            name,
            "LVM metadata area header",
            start,
            "checksum mismatch",
        ));
    }
    if h.get(4..20) != Some(&MAGIC[..]) {
        return Err(Error::corrupt(
            name,
            "LVM metadata area header",
            start,
            "bad magic",
        ));
    }
    let version = u32_at(&h, 20).unwrap_or(0);
    if version != 1 {
        return Err(Error::unsupported(
            name,
            format!("LVM metadata area header version {version}"),
        ));
    }
    // The header records where its area starts; a copy of an area elsewhere (or a label
    // pointing at the wrong place) would otherwise be believed.
    let recorded = u64_at(&h, 24).unwrap_or(0);
    if recorded != start {
        return Err(Error::corrupt(
            name,
            "LVM metadata area header",
            start,
            format!("it says it starts at {recorded:#x}"),
        ));
    }
    let off = u64_at(&h, 40).unwrap_or(0);
    let len = u64_at(&h, 48).unwrap_or(0);
    let crc = u32_at(&h, 56).unwrap_or(0);
    let flags = u32_at(&h, 60).unwrap_or(0);
    if (off == 0 && len == 0) || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    if len > MAX_TEXT || len > size - HEADER || off < HEADER || off >= size {
        return Err(Error::corrupt(
            name,
            "LVM metadata area header",
            start,
            format!("metadata of {len} bytes at {off:#x} does not fit an area of {size} bytes"),
        ));
    }
    let mut text = vec![0u8; len as usize];
    let first = len.min(size - off) as usize;
    let (a, b) = text.split_at_mut(first);
    dev.read_at(a, start + off)?;
    if !b.is_empty() {
        // Wrapped: the rest follows the header.
        dev.read_at(b, start + HEADER)?;
    }
    if calc_crc(INITIAL, &text) != crc {
        return Err(Error::corrupt(
            name,
            "LVM metadata",
            start + off,
            "the metadata text's checksum does not match",
        ));
    }
    let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
    text.truncate(end);
    Ok(Some(String::from_utf8_lossy(&text).into_owned()))
}
