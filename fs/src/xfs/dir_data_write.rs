//! Editing one data block of a leaf or node directory in place (`xfs_dir2_data` /
//! `xfs_dir3_data`): an entry goes into the first free region it fits, a removed entry
//! becomes free space merged with its neighbours, and the best-free table is computed
//! again from the regions, so the block stays as the kernel's verifier wants it (no two
//! free regions in a row, the three longest listed longest first). Entries that stay
//! keep their offsets, so only the hash index has to follow.

use super::bytes::{be16, be32, be64, put16, put32, put64, set_crc, u8_at};
use super::superblock::Superblock;

const FREE_TAG: u16 = 0xffff;
const DATA_V4: u32 = 0x5844_3244; // "XD2D"
const DATA_V5: u32 = 0x5844_4433; // "XDD3"

pub(crate) fn hdr_len(sb: &Superblock) -> usize {
    if sb.crc {
        64
    } else {
        16
    }
}

fn bestfree_at(sb: &Superblock) -> usize {
    if sb.crc {
        48
    } else {
        4
    }
}

/// Bytes one entry of a `namelen`-byte name takes.
pub(crate) fn entsize(sb: &Superblock, namelen: usize) -> usize {
    (8 + 1 + namelen + usize::from(sb.ftype) + 2).next_multiple_of(8)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    off: usize,
    len: usize,
    free: bool,
}

/// The regions from the header to `end`; `None` when they do not tile it exactly or a
/// tag is wrong.
fn regions(sb: &Superblock, b: &[u8], end: usize) -> Option<Vec<Region>> {
    let mut pos = hdr_len(sb);
    let mut out = Vec::new();
    while pos < end {
        let (len, free) = if be16(b, pos)? == FREE_TAG {
            (usize::from(be16(b, pos + 2)?), true)
        } else {
            let n = usize::from(u8_at(b, pos + 8)?);
            if n == 0 {
                return None;
            }
            (entsize(sb, n), false)
        };
        if len < 8 || len % 8 != 0 || pos + len > end {
            return None;
        }
        // Both kinds end in a tag holding their own offset.
        if be16(b, pos + len - 2)? != pos as u16 {
            return None;
        }
        out.push(Region {
            off: pos,
            len,
            free,
        });
        pos += len;
    }
    (pos == end).then_some(out)
}

fn write_free(b: &mut [u8], off: usize, len: usize) {
    if let Some(d) = b.get_mut(off..off + len) {
        d.fill(0);
    }
    put16(b, off, FREE_TAG);
    put16(b, off + 2, len as u16);
    put16(b, off + len - 2, off as u16);
}

/// Merges neighbouring free regions, writes their tags and the best-free table.
fn settle(sb: &Superblock, b: &mut [u8], regs: Vec<Region>) {
    let mut merged: Vec<Region> = Vec::with_capacity(regs.len());
    for r in regs {
        if let Some(l) = merged.last_mut().filter(|l| l.free && r.free) {
            l.len += r.len;
            continue;
        }
        merged.push(r);
    }
    let mut frees = Vec::new();
    for r in merged.iter().filter(|r| r.free) {
        write_free(b, r.off, r.len);
        frees.push((r.len, r.off));
    }
    frees.sort_by(|a, c| c.0.cmp(&a.0).then(a.1.cmp(&c.1)));
    let at = bestfree_at(sb);
    for i in 0..3 {
        let (len, off) = frees.get(i).copied().unwrap_or((0, 0));
        put16(b, at + 4 * i, off as u16);
        put16(b, at + 4 * i + 2, len as u16);
    }
}

/// The longest free region of a data block (what the leaf's or free index's best
/// table holds for it).
pub(crate) fn best(sb: &Superblock, b: &[u8]) -> u16 {
    be16(b, bestfree_at(sb) + 2).unwrap_or(0)
}

/// A new, empty data block of `bsize` bytes (header fields other than the best-free
/// table are set by [`seal`]).
pub(crate) fn empty(sb: &Superblock, bsize: usize) -> Vec<u8> {
    let mut b = vec![0u8; bsize];
    let h = hdr_len(sb);
    settle(
        sb,
        &mut b,
        vec![Region {
            off: h,
            len: bsize - h,
            free: true,
        }],
    );
    b
}

/// Turns a block-form directory block into the first data block of a leaf directory
/// (`xfs_dir2_block_to_leaf`): its hash leaf and tail become free space. `None` when
/// the block does not parse.
pub(crate) fn from_block_form(sb: &Superblock, b: &mut [u8]) -> Option<()> {
    let bsize = b.len();
    let count = be32(b, bsize.checked_sub(8)?)? as usize;
    let leaf_at = bsize.checked_sub(count.checked_mul(8)?.checked_add(8)?)?;
    let mut regs = regions(sb, b, leaf_at)?;
    regs.push(Region {
        off: leaf_at,
        len: bsize - leaf_at,
        free: true,
    });
    settle(sb, b, regs);
    Some(())
}

/// Puts an entry in the first free region it fits; returns its offset, `None` when no
/// region is long enough.
pub(crate) fn insert(
    sb: &Superblock,
    b: &mut [u8],
    name: &[u8],
    ino: u64,
    ftype: Option<u8>,
) -> Option<usize> {
    let need = entsize(sb, name.len());
    let mut regs = regions(sb, b, b.len())?;
    let i = regs.iter().position(|r| r.free && r.len >= need)?;
    let r = *regs.get(i)?;
    let off = r.off;
    b.get_mut(off..off + need)?.fill(0);
    put64(b, off, ino);
    *b.get_mut(off + 8)? = name.len() as u8;
    b.get_mut(off + 9..off + 9 + name.len())?
        .copy_from_slice(name);
    if sb.ftype {
        *b.get_mut(off + 9 + name.len())? = ftype.unwrap_or(0);
    }
    put16(b, off + need - 2, off as u16);
    regs[i] = Region {
        off,
        len: need,
        free: false,
    };
    if r.len > need {
        regs.insert(
            i + 1,
            Region {
                off: off + need,
                len: r.len - need,
                free: true,
            },
        );
    }
    settle(sb, b, regs);
    Some(off)
}

/// Frees the entry at `off`; `None` when no entry starts there.
pub(crate) fn remove(sb: &Superblock, b: &mut [u8], off: usize) -> Option<()> {
    let mut regs = regions(sb, b, b.len())?;
    let r = regs.iter_mut().find(|r| r.off == off && !r.free)?;
    r.free = true;
    settle(sb, b, regs);
    Some(())
}

/// One entry of a data block: offset, name, inode, file type.
pub(crate) type Placed<'a> = (usize, &'a [u8], u64, Option<u8>);

/// Every entry of a data block, "." and ".." included; `None` when it does not parse.
pub(crate) fn entries<'a>(sb: &Superblock, b: &'a [u8]) -> Option<Vec<Placed<'a>>> {
    let mut out = Vec::new();
    for r in regions(sb, b, b.len())?.into_iter().filter(|r| !r.free) {
        let n = usize::from(u8_at(b, r.off + 8)?);
        let name = b.get(r.off + 9..r.off + 9 + n)?;
        let ft = if sb.ftype {
            Some(u8_at(b, r.off + 9 + n)?)
        } else {
            None
        };
        out.push((r.off, name, be64(b, r.off)?, ft));
    }
    Some(out)
}

/// Stamps the header of data block `b` of directory `dir` at disk address `daddr`
/// (512-byte sectors) and, on v5, its CRC.
pub(crate) fn seal(sb: &Superblock, b: &mut [u8], daddr: u64, dir: u64) {
    if sb.crc {
        put32(b, 0, DATA_V5);
        put64(b, 8, daddr);
        if let Some(u) = b.get_mut(24..40) {
            u.copy_from_slice(&sb.meta_uuid);
        }
        put64(b, 40, dir);
        set_crc(b, 4);
    } else {
        put32(b, 0, DATA_V4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Superblock {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(&0x5846_5342u32.to_be_bytes());
        b[4..8].copy_from_slice(&4096u32.to_be_bytes());
        b[8..16].copy_from_slice(&4096u64.to_be_bytes());
        b[56..64].copy_from_slice(&128u64.to_be_bytes());
        b[84..88].copy_from_slice(&1024u32.to_be_bytes());
        b[88..92].copy_from_slice(&4u32.to_be_bytes());
        b[100..102].copy_from_slice(&(0xb4b4u16 | 0x2000).to_be_bytes());
        b[102..104].copy_from_slice(&512u16.to_be_bytes());
        b[104..106].copy_from_slice(&256u16.to_be_bytes());
        b[106..108].copy_from_slice(&16u16.to_be_bytes());
        b[120] = 12;
        b[121] = 9;
        b[122] = 8;
        b[123] = 4;
        b[124] = 10;
        Superblock::parse(&b).unwrap()
    }

    #[test]
    fn insert_remove_merge() {
        let sb = sb();
        let mut b = empty(&sb, 4096);
        assert_eq!(best(&sb, &b), 4096 - 16);
        let a = insert(&sb, &mut b, b"alpha", 100, None).unwrap();
        let c = insert(&sb, &mut b, b"beta", 101, None).unwrap();
        let d = insert(&sb, &mut b, b"gamma", 102, None).unwrap();
        assert_eq!((a, c, d), (16, 32, 48));
        remove(&sb, &mut b, c).unwrap();
        assert!(remove(&sb, &mut b, c).is_none());
        let names: Vec<_> = entries(&sb, &b).unwrap().iter().map(|e| e.1).collect();
        assert_eq!(names, [&b"alpha"[..], b"gamma"]);
        // The hole of "beta" and the tail: two free regions, longest first.
        assert_eq!(be16(&b, 4), Some(64));
        assert_eq!(be16(&b, 8), Some(32));
        assert_eq!(be16(&b, 10), Some(16));
        remove(&sb, &mut b, d).unwrap();
        // Merged: one free region from 32 to the end.
        assert_eq!(be16(&b, 4), Some(32));
        assert_eq!(best(&sb, &b), 4096 - 32);
        assert_eq!(be16(&b, 8), Some(0));
        assert_eq!(regions(&sb, &b, 4096).unwrap().len(), 2);
    }
}
