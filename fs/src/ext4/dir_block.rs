//! One block of a linear directory (and the leaf blocks of an htree): a chain of entries
//! covering the block, with, under metadata_csum, a 12-byte fake entry at the end holding
//! the block's checksum.

use super::csum::crc32c;
use super::le::*;

pub const TAIL: usize = 12;
const TAIL_FT: u8 = 0xDE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub off: usize,
    pub rec_len: usize,
    pub inode: u32,
    pub name_len: usize,
    pub file_type: u8,
}

impl Entry {
    pub fn name<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        b.get(self.off + 8..self.off + 8 + self.name_len)
            .unwrap_or(&[])
    }
}

/// Space an entry with a name of `n` bytes takes.
pub fn needed(n: usize) -> usize {
    (8 + n + 3) & !3
}

fn rec_len_from_disk(v: u16, bs: usize) -> usize {
    if bs < 65536 {
        v as usize
    } else if v == 65535 || v == 0 {
        bs
    } else {
        (v as usize & 65532) | ((v as usize & 3) << 16)
    }
}

pub fn rec_len_to_disk(len: usize, bs: usize) -> u16 {
    if bs < 65536 {
        len as u16
    } else if len == 65536 {
        65535
    } else {
        ((len & 65532) | ((len >> 16) & 3)) as u16
    }
}

pub fn has_tail(b: &[u8]) -> bool {
    let Some(t) = b.len().checked_sub(TAIL) else {
        return false;
    };
    u32_at(b, t) == 0
        && u16_at(b, t + 4) == TAIL as u16
        && u8_at(b, t + 6) == 0
        && u8_at(b, t + 7) == TAIL_FT
}

/// The end of the entry chain: before the checksum tail if there is one.
pub fn chain_end(b: &[u8]) -> usize {
    if has_tail(b) {
        b.len() - TAIL
    } else {
        b.len()
    }
}

/// The entries of a block, checked to chain exactly to its end.
pub fn entries(b: &[u8], filetype: bool) -> Result<Vec<Entry>, String> {
    let end = if is_dx_root(b) { b.len() } else { chain_end(b) };
    entries_to(b, filetype, end)
}

/// An htree root: "." then ".." covering the rest of the block (the index). When the
/// kernel turns a linear directory into an htree it rewrites the first block in place
/// and leaves its old checksum tail in the last 12 bytes, where the index's own tail
/// does not reach: the ".." entry then runs over that stale tail, rightly.
fn is_dx_root(b: &[u8]) -> bool {
    let bs = b.len();
    rec_len_from_disk(u16_at(b, 4), bs) == 12
        && u8_at(b, 6) == 1
        && u8_at(b, 8) == b'.'
        && rec_len_from_disk(u16_at(b, 16), bs) == bs.saturating_sub(12)
        && u8_at(b, 18) == 2
        && u16_at(b, 20) == u16::from_le_bytes(*b"..")
}

/// The entries of `b`, checked to chain exactly to `end`: a block's chain stops at its
/// checksum tail, an inline directory's area has none.
pub fn entries_to(b: &[u8], filetype: bool, end: usize) -> Result<Vec<Entry>, String> {
    let end = end.min(b.len());
    let bs = b.len();
    let mut out = Vec::new();
    let mut off = 0;
    while off < end {
        if off + 8 > end {
            return Err(format!("entry at offset {off} runs past the block"));
        }
        let rec_len = rec_len_from_disk(u16_at(b, off + 4), bs);
        let name_len = if filetype {
            u8_at(b, off + 6) as usize
        } else {
            u16_at(b, off + 6) as usize
        };
        if rec_len < 8
            || !rec_len.is_multiple_of(4)
            || off + rec_len > end
            || 8 + name_len > rec_len
        {
            return Err(format!(
                "entry at offset {off} has rec_len {rec_len} and name_len {name_len}"
            ));
        }
        out.push(Entry {
            off,
            rec_len,
            inode: u32_at(b, off),
            name_len,
            file_type: if filetype { u8_at(b, off + 7) } else { 0 },
        });
        off += rec_len;
    }
    Ok(out)
}

#[cfg(test)]
pub fn find(b: &[u8], filetype: bool, name: &[u8]) -> Result<Option<Entry>, String> {
    Ok(entries(b, filetype)?
        .into_iter()
        .find(|e| e.inode != 0 && e.name(b) == name))
}

fn write_entry(
    b: &mut [u8],
    off: usize,
    rec_len: usize,
    ino: u32,
    name: &[u8],
    ft: u8,
    filetype: bool,
) {
    let bs = b.len();
    put_u32(b, off, ino);
    put_u16(b, off + 4, rec_len_to_disk(rec_len, bs));
    if filetype {
        put_u8(b, off + 6, name.len() as u8);
        put_u8(b, off + 7, ft);
    } else {
        put_u16(b, off + 6, name.len() as u16);
    }
    if let Some(s) = b.get_mut(off + 8..off + 8 + name.len()) {
        s.copy_from_slice(name);
    }
}

/// Adds an entry where it fits; returns its offset, None if the block is full.
pub fn insert(
    b: &mut [u8],
    filetype: bool,
    ino: u32,
    name: &[u8],
    ft: u8,
) -> Result<Option<usize>, String> {
    let need = needed(name.len());
    for e in entries(b, filetype)? {
        let used = if e.inode == 0 { 0 } else { needed(e.name_len) };
        if e.rec_len < used + need {
            continue;
        }
        if e.inode == 0 {
            write_entry(b, e.off, e.rec_len, ino, name, ft, filetype);
            return Ok(Some(e.off));
        }
        put_u16(b, e.off + 4, rec_len_to_disk(used, b.len()));
        write_entry(b, e.off + used, e.rec_len - used, ino, name, ft, filetype);
        return Ok(Some(e.off + used));
    }
    Ok(None)
}

/// Removes the entry for `name` (merging its space into the one before); returns its inode.
pub fn remove(b: &mut [u8], filetype: bool, name: &[u8]) -> Result<Option<u32>, String> {
    let list = entries(b, filetype)?;
    let Some(i) = list.iter().position(|e| e.inode != 0 && e.name(b) == name) else {
        return Ok(None);
    };
    let e = list[i];
    if i == 0 {
        put_u32(b, e.off, 0);
    } else {
        let p = list[i - 1];
        put_u16(
            b,
            p.off + 4,
            rec_len_to_disk(p.rec_len + e.rec_len, b.len()),
        );
        if let Some(s) = b.get_mut(e.off..e.off + e.rec_len) {
            s.fill(0);
        }
    }
    Ok(Some(e.inode))
}

/// Points the entry at `off` to another inode (rename over an existing name).
pub fn set_inode(b: &mut [u8], off: usize, ino: u32, ft: u8, filetype: bool) {
    put_u32(b, off, ino);
    if filetype {
        put_u8(b, off + 7, ft);
    }
}

fn put_tail(b: &mut [u8]) {
    let t = b.len() - TAIL;
    b[t..].fill(0);
    put_u16(b, t + 4, TAIL as u16);
    put_u8(b, t + 7, TAIL_FT);
}

/// An empty directory block (for a growing directory).
pub fn empty_block(bs: usize, tail: bool) -> Vec<u8> {
    let mut b = vec![0u8; bs];
    let end = if tail { bs - TAIL } else { bs };
    put_u16(&mut b, 4, rec_len_to_disk(end, bs));
    if tail {
        put_tail(&mut b);
    }
    b
}

/// The first block of a new directory: "." and "..".
pub fn dot_block(bs: usize, tail: bool, ino: u32, parent: u32, filetype: bool) -> Vec<u8> {
    let mut b = vec![0u8; bs];
    let end = if tail { bs - TAIL } else { bs };
    write_entry(&mut b, 0, 12, ino, b".", 2, filetype);
    write_entry(&mut b, 12, end - 12, parent, b"..", 2, filetype);
    if tail {
        put_tail(&mut b);
    }
    b
}

/// Recomputes the tail checksum, if the block has a tail.
pub fn set_tail_csum(b: &mut [u8], seed: u32) {
    if has_tail(b) {
        let t = b.len() - TAIL;
        let c = crc32c(seed, &b[..t]);
        put_u32(b, t + 8, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove() {
        let mut b = dot_block(1024, true, 12, 2, true);
        let mut n = 0;
        while insert(&mut b, true, 100 + n, format!("name-{n}").as_bytes(), 1)
            .unwrap()
            .is_some()
        {
            n += 1;
        }
        // (1024 - 12 - 24) / 16 entries of 6-7 byte names.
        assert!(n > 50, "{n}");
        assert!(has_tail(&b));
        let e = find(&b, true, b"name-7").unwrap().unwrap();
        assert_eq!(e.inode, 107);
        assert_eq!(remove(&mut b, true, b"name-7").unwrap(), Some(107));
        assert!(find(&b, true, b"name-7").unwrap().is_none());
        assert!(insert(&mut b, true, 999, b"again", 1).unwrap().is_some());
        assert!(entries(&b, true).unwrap().last().unwrap().off + 12 <= 1012);
        set_tail_csum(&mut b, 5);
        assert!(has_tail(&b));
    }

    #[test]
    fn broken_chains_are_errors() {
        let mut b = empty_block(1024, false);
        put_u16(&mut b, 4, 2000);
        assert!(entries(&b, true).is_err());
        put_u16(&mut b, 4, 0);
        assert!(entries(&b, true).is_err());
    }

    #[test]
    fn htree_root_over_a_stale_tail() {
        // As the kernel leaves block 0 of a directory it indexed (see `is_dx_root`).
        let mut b = dot_block(1024, true, 12, 2, true);
        put_u16(&mut b, 16, 1012);
        assert!(has_tail(&b));
        let l = entries(&b, true).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].rec_len, 1012);
    }

    #[test]
    fn big_blocks_encode_rec_len() {
        let b = empty_block(65536, false);
        assert_eq!(entries(&b, true).unwrap()[0].rec_len, 65536);
    }
}
