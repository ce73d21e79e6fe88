//! Extended attributes (the attribute fork): shortform in the inode, a single leaf
//! block, or a dabtree of node and leaf blocks, with values inline or in remote blocks
//! (v5: each with an `xfs_attr3_rmt_hdr`). Enough for SELinux labels and capabilities;
//! names come back as Linux sees them: `security.`, `trusted.`, `user.` prefixes.
//! POSIX ACLs show as `trusted.SGI_ACL_FILE`/`SGI_ACL_DEFAULT` in XFS's own encoding
//! (the kernel translates them to `system.posix_acl_*`; we do not yet). Parent pointers
//! (an internal namespace) and half-written (incomplete) entries are skipped.

use super::bmbt::{self, Extent, Fork};
use super::bytes::{be16, be32, be64, crc_ok, u8_at};
use super::inode::{Inode, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL};
use super::volume::Volume;
use crate::error::Result;
use std::collections::HashSet;

const LEAF_V4: u16 = 0xfbee;
const LEAF_V5: u16 = 0x3bee;
const NODE_V4: u16 = 0xfebe;
const NODE_V5: u16 = 0x3ebe;
const RMT_MAGIC: u32 = 0x5841_524d; // "XARM"
const RMT_HDR: usize = 56;

const F_LOCAL: u8 = 0x1;
const F_ROOT: u8 = 0x2;
const F_SECURE: u8 = 0x4;
const F_PARENT: u8 = 0x8;
const F_INCOMPLETE: u8 = 0x80;
const MAX_VALUE: u32 = 65536;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Inline(Vec<u8>),
    Remote { block: u32, len: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attr {
    /// With its namespace prefix, as `getfattr` shows it.
    pub name: Vec<u8>,
    pub value: Value,
}

fn full_name(flags: u8, name: &[u8]) -> Option<Vec<u8>> {
    if flags & (F_INCOMPLETE | F_PARENT) != 0 {
        return None;
    }
    let prefix: &[u8] = if flags & F_SECURE != 0 {
        b"security."
    } else if flags & F_ROOT != 0 {
        b"trusted."
    } else {
        b"user."
    };
    Some([prefix, name].concat())
}

/// Every attribute of `ino`, values of remote ones not yet read.
pub(crate) fn list(vol: &Volume, ino: &Inode) -> Result<Vec<Attr>> {
    let Some(fork) = &ino.attr_fork else {
        return Ok(Vec::new());
    };
    match ino.aformat {
        FMT_LOCAL => shortform(vol, ino, fork),
        FMT_EXTENTS | FMT_BTREE => {
            let map = bmbt::extents(vol, ino, Fork::Attr)?;
            if map.is_empty() {
                return Ok(Vec::new());
            }
            tree(vol, ino, &map)
        }
        f => Err(vol.corrupt(
            &format!("inode {} attribute fork", ino.ino),
            ino.offset,
            format!("format {f}"),
        )),
    }
}

fn shortform(vol: &Volume, ino: &Inode, b: &[u8]) -> Result<Vec<Attr>> {
    let what = format!("inode {} shortform attributes", ino.ino);
    let c = |d: String| vol.corrupt(&what, ino.offset, d);
    let total = usize::from(be16(b, 0).unwrap_or(0));
    let b = b
        .get(..total)
        .ok_or_else(|| c(format!("size {total} exceeds the fork")))?;
    let count = u8_at(b, 2).unwrap_or(0);
    let mut pos = 4;
    let mut out = Vec::new();
    for i in 0..count {
        let short = || c(format!("entry {i} runs past the fork"));
        let namelen = usize::from(u8_at(b, pos).ok_or_else(short)?);
        let valuelen = usize::from(u8_at(b, pos + 1).ok_or_else(short)?);
        let flags = u8_at(b, pos + 2).ok_or_else(short)?;
        let name = b.get(pos + 3..pos + 3 + namelen).ok_or_else(short)?;
        let value = b
            .get(pos + 3 + namelen..pos + 3 + namelen + valuelen)
            .ok_or_else(short)?;
        if let Some(name) = full_name(flags, name) {
            out.push(Attr {
                name,
                value: Value::Inline(value.to_vec()),
            });
        }
        pos += 3 + namelen + valuelen;
    }
    Ok(out)
}

/// Checks a dabtree block's self-describing header (v5); returns its magic.
fn block_magic(vol: &Volume, ino: &Inode, b: &[u8], at: u64) -> Result<u16> {
    let c = |d: &str| vol.corrupt("attribute block", at, d);
    if vol.sb.crc {
        if !crc_ok(b, 12) {
            return Err(c("CRC mismatch"));
        }
        if be64(b, 48) != Some(ino.ino) {
            return Err(c("owned by another inode"));
        }
        if b.get(32..48) != Some(&vol.sb.meta_uuid[..]) {
            return Err(c("belongs to another filesystem (UUID)"));
        }
    }
    be16(b, 8).ok_or_else(|| c("short block"))
}

fn tree(vol: &Volume, ino: &Inode, map: &[Extent]) -> Result<Vec<Attr>> {
    let (leaf_magic, node_magic, node_hdr, leaf_hdr) = if vol.sb.crc {
        (LEAF_V5, NODE_V5, 64, 80)
    } else {
        (LEAF_V4, NODE_V4, 16, 32)
    };
    let what = format!("inode {} attribute tree", ino.ino);
    let mapped: u64 = map.iter().map(|e| e.len).sum();
    let mut blk: u64 = 0;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    // Down the leftmost path to the first leaf, then along the leaves' forward links.
    let mut level = None;
    loop {
        if !seen.insert(blk) || seen.len() as u64 > mapped {
            return Err(vol.corrupt(&what, ino.offset, "blocks link in a cycle"));
        }
        let b = bmbt::read_blocks(vol, map, blk, 1, &what)?;
        let at = blk << vol.sb.blocklog;
        let magic = block_magic(vol, ino, &b, at)?;
        if magic == node_magic {
            let lvl = be16(&b, node_hdr - if vol.sb.crc { 6 } else { 2 }).unwrap_or(0);
            let count = be16(&b, node_hdr - if vol.sb.crc { 8 } else { 4 }).unwrap_or(0);
            if lvl == 0 || count == 0 || level.is_some_and(|l| lvl >= l) || !out.is_empty() {
                return Err(vol.corrupt(
                    &what,
                    at,
                    format!("node of level {lvl}, {count} entries"),
                ));
            }
            level = Some(lvl);
            blk = be32(&b, node_hdr + 4).map(u64::from).unwrap_or(0);
            continue;
        }
        if magic != leaf_magic {
            return Err(vol.corrupt(&what, at, format!("bad magic {magic:#x}")));
        }
        leaf(vol, &b, at, leaf_hdr, &mut out)?;
        let forw = be32(&b, 0).unwrap_or(0);
        if forw == 0 {
            return Ok(out);
        }
        blk = u64::from(forw);
    }
}

fn leaf(vol: &Volume, b: &[u8], at: u64, hdr: usize, out: &mut Vec<Attr>) -> Result<()> {
    let c = |d: String| vol.corrupt("attribute leaf", at, d);
    let count = usize::from(be16(b, hdr - if vol.sb.crc { 24 } else { 20 }).unwrap_or(0));
    for i in 0..count {
        let e = hdr + i * 8;
        let short = || c(format!("entry {i} runs past the block"));
        let nameidx = usize::from(be16(b, e + 4).ok_or_else(short)?);
        let flags = u8_at(b, e + 6).ok_or_else(short)?;
        if nameidx < hdr {
            return Err(short());
        }
        let (name, value) = if flags & F_LOCAL != 0 {
            let vlen = usize::from(be16(b, nameidx).ok_or_else(short)?);
            let nlen = usize::from(u8_at(b, nameidx + 2).ok_or_else(short)?);
            let name = b.get(nameidx + 3..nameidx + 3 + nlen).ok_or_else(short)?;
            let v = b
                .get(nameidx + 3 + nlen..nameidx + 3 + nlen + vlen)
                .ok_or_else(short)?;
            (name, Value::Inline(v.to_vec()))
        } else {
            let block = be32(b, nameidx).ok_or_else(short)?;
            let len = be32(b, nameidx + 4).ok_or_else(short)?;
            let nlen = usize::from(u8_at(b, nameidx + 8).ok_or_else(short)?);
            let name = b.get(nameidx + 9..nameidx + 9 + nlen).ok_or_else(short)?;
            (name, Value::Remote { block, len })
        };
        if let Some(name) = full_name(flags, name) {
            out.push(Attr { name, value });
        }
    }
    Ok(())
}

/// The bytes of `attr`'s value, reading remote blocks when it has them.
pub(crate) fn value(vol: &Volume, ino: &Inode, attr: &Attr) -> Result<Vec<u8>> {
    let (block, len) = match &attr.value {
        Value::Inline(v) => return Ok(v.clone()),
        Value::Remote { block, len } => (u64::from(*block), *len),
    };
    let what = format!("inode {} remote attribute value", ino.ino);
    if len > MAX_VALUE {
        return Err(vol.corrupt(&what, ino.offset, format!("{len} bytes")));
    }
    let map = bmbt::extents(vol, ino, Fork::Attr)?;
    let bs = vol.sb.blocksize as usize;
    let per = if vol.sb.crc { bs - RMT_HDR } else { bs };
    let len = len as usize;
    let mut out = Vec::with_capacity(len);
    for i in 0..len.div_ceil(per) as u64 {
        let b = bmbt::read_blocks(vol, &map, block + i, 1, &what)?;
        let want = per.min(len - out.len());
        if vol.sb.crc {
            if be32(&b, 0) != Some(RMT_MAGIC)
                || !crc_ok(&b, 12)
                || be32(&b, 4) != Some(out.len() as u32)
                || be32(&b, 8) != Some(want as u32)
                || be64(&b, 32) != Some(ino.ino)
            {
                return Err(vol.corrupt(&what, ino.offset, format!("block {i}: bad header")));
            }
            out.extend_from_slice(b.get(RMT_HDR..RMT_HDR + want).unwrap_or(&[]));
        } else {
            out.extend_from_slice(b.get(..want).unwrap_or(&[]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert_eq!(
            full_name(F_SECURE, b"selinux").unwrap(),
            b"security.selinux"
        );
        assert_eq!(full_name(F_ROOT | F_LOCAL, b"x").unwrap(), b"trusted.x");
        assert_eq!(full_name(0, b"mime").unwrap(), b"user.mime");
        assert_eq!(full_name(F_PARENT, b"p"), None);
        assert_eq!(full_name(F_INCOMPLETE, b"p"), None);
    }
}
