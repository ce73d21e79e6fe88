//! Writing directories in the two forms small directories take: shortform (entries in
//! the inode) and block form (one directory block holding the entries, their hash leaf
//! and a tail). Either is encoded whole from the entry list, so every change yields a
//! directory laid out as the kernel would lay out a fresh one: entries packed from the
//! start, one free region, the leaf sorted by name hash, the best-free table right.
//! Leaf and node directories (more entries than one block holds) are changed in
//! [`super::dir_long`].

use super::bytes::{be64, put16, put32, put64, set_crc, u8_at};
use super::dir2_sf::RawEntry;
use super::superblock::Superblock;

pub(crate) const FT_REG: u8 = 1;
pub(crate) const FT_DIR: u8 = 2;
pub(crate) const FT_SYMLINK: u8 = 7;

/// The directory name hash (`xfs_da_hashname`).
pub(crate) fn hashname(name: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    let mut chunks = name.chunks_exact(4);
    for c in &mut chunks {
        hash = (u32::from(c[0]) << 21)
            ^ (u32::from(c[1]) << 14)
            ^ (u32::from(c[2]) << 7)
            ^ u32::from(c[3])
            ^ hash.rotate_left(7 * 4);
    }
    match *chunks.remainder() {
        [a, b, c] => {
            (u32::from(a) << 14) ^ (u32::from(b) << 7) ^ u32::from(c) ^ hash.rotate_left(7 * 3)
        }
        [a, b] => (u32::from(a) << 7) ^ u32::from(b) ^ hash.rotate_left(7 * 2),
        [a] => u32::from(a) ^ hash.rotate_left(7),
        _ => hash,
    }
}

fn data_hdr(sb: &Superblock) -> usize {
    if sb.crc {
        64
    } else {
        16
    }
}

/// Bytes one entry takes in a data block.
fn entsize(sb: &Superblock, namelen: usize) -> usize {
    (8 + 1 + namelen + usize::from(sb.ftype) + 2).next_multiple_of(8)
}

/// Encodes a shortform directory with parent `parent`; `None` when it cannot be one
/// (over 255 entries).
pub(crate) fn sf_encode(sb: &Superblock, parent: u64, entries: &[RawEntry]) -> Option<Vec<u8>> {
    let count = u8::try_from(entries.len()).ok()?;
    let big = |i: u64| i > u64::from(u32::MAX);
    let i8count =
        u8::try_from(usize::from(big(parent)) + entries.iter().filter(|e| big(e.ino)).count())
            .ok()?;
    let wide = i8count > 0;
    let put_ino = |out: &mut Vec<u8>, i: u64| {
        if wide {
            out.extend_from_slice(&i.to_be_bytes());
        } else {
            out.extend_from_slice(&(i as u32).to_be_bytes());
        }
    };
    let mut out = vec![count, i8count];
    put_ino(&mut out, parent);
    let mut off = data_hdr(sb) + entsize(sb, 1) + entsize(sb, 2);
    for e in entries {
        let n = u8::try_from(e.name.len()).ok()?;
        out.push(n);
        out.extend_from_slice(&u16::try_from(off).ok()?.to_be_bytes());
        out.extend_from_slice(&e.name);
        if sb.ftype {
            out.push(e.ftype.unwrap_or(0));
        }
        put_ino(&mut out, e.ino);
        off += entsize(sb, e.name.len());
    }
    Some(out)
}

/// The parent of a block-form directory block: its ".." entry, second after ".".
pub(crate) fn block_parent(sb: &Superblock, b: &[u8]) -> Option<u64> {
    let at = data_hdr(sb) + entsize(sb, 1);
    let name = b.get(at + 9..at + 11)?;
    (u8_at(b, at + 8) == Some(2) && name == b"..").then(|| be64(b, at))?
}

/// Encodes a block-form directory of `bsize` bytes for directory inode `dir` whose
/// block starts at AG-encoded block `fsb`; `None` when the entries do not fit.
pub(crate) fn block_encode(
    sb: &Superblock,
    dir: u64,
    fsb: u64,
    parent: u64,
    entries: &[RawEntry],
    bsize: usize,
) -> Option<Vec<u8>> {
    let h = data_hdr(sb);
    let all: Vec<(&[u8], u64, u8)> = [(&b"."[..], dir, FT_DIR), (&b".."[..], parent, FT_DIR)]
        .into_iter()
        .chain(
            entries
                .iter()
                .map(|e| (&e.name[..], e.ino, e.ftype.unwrap_or(0))),
        )
        .collect();
    let used: usize = all.iter().map(|e| entsize(sb, e.0.len())).sum();
    let leaf_at = bsize.checked_sub(8 + 8 * all.len())?;
    if h + used > leaf_at {
        return None;
    }
    let mut b = vec![0u8; bsize];
    let mut leaf = Vec::with_capacity(all.len());
    let mut pos = h;
    for (name, ino, ft) in &all {
        put64(&mut b, pos, *ino);
        b[pos + 8] = name.len() as u8;
        b.get_mut(pos + 9..pos + 9 + name.len())?
            .copy_from_slice(name);
        if sb.ftype {
            b[pos + 9 + name.len()] = *ft;
        }
        let size = entsize(sb, name.len());
        put16(&mut b, pos + size - 2, pos as u16);
        leaf.push((hashname(name), (pos / 8) as u32));
        pos += size;
    }
    let free_len = leaf_at - pos;
    let best_at = if sb.crc { 48 } else { 4 };
    if free_len > 0 {
        put16(&mut b, pos, 0xffff);
        put16(&mut b, pos + 2, free_len as u16);
        put16(&mut b, leaf_at - 2, pos as u16);
        put16(&mut b, best_at, pos as u16);
        put16(&mut b, best_at + 2, free_len as u16);
    }
    leaf.sort_by_key(|&(hash, addr)| (hash, addr));
    for (i, (hash, addr)) in leaf.iter().enumerate() {
        put32(&mut b, leaf_at + i * 8, *hash);
        put32(&mut b, leaf_at + i * 8 + 4, *addr);
    }
    put32(&mut b, bsize - 8, all.len() as u32);
    put32(&mut b, bsize - 4, 0);
    if sb.crc {
        put32(&mut b, 0, 0x5844_4233);
        put64(&mut b, 8, sb.fsb_offset(fsb)? >> 9);
        b.get_mut(24..40)?.copy_from_slice(&sb.meta_uuid);
        put64(&mut b, 40, dir);
        set_crc(&mut b, 4);
    } else {
        put32(&mut b, 0, 0x5844_3242);
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes() {
        // Values from xfs_db's "hash" command.
        assert_eq!(hashname(b"."), 0x2e);
        assert_eq!(hashname(b".."), 0x172e);
        assert_eq!(hashname(b"fstab"), hashname(b"fstab"));
        assert_ne!(hashname(b"fstab"), hashname(b"fstac"));
    }
}
