//! Directory data blocks (`xfs_dir2_data` / `xfs_dir3_data`): the blocks below the 32 GiB
//! leaf offset of a block, leaf or node directory, holding the entries themselves among
//! free spaces. A block-form directory has one such block with its hash leaf and tail
//! at the end; leaf and node forms keep their hash indexes in separate blocks, which a
//! full listing does not need, so every form is read by walking its data blocks.

use super::bytes::{be16, be32, be64, crc_ok, u8_at};
use super::dir2_sf::{bad_name, RawEntry};
use super::volume::Volume;
use crate::error::Result;

const BLOCK_V4: u32 = 0x5844_3242; // "XD2B"
const DATA_V4: u32 = 0x5844_3244; // "XD2D"
const BLOCK_V5: u32 = 0x5844_4233; // "XDB3"
const DATA_V5: u32 = 0x5844_4433; // "XDD3"
const FREE_TAG: u16 = 0xffff;

/// Parses one directory block `b` (at byte `at`, of directory inode `owner`), adding its
/// entries other than "." and ".." to `out`. Returns whether it was a block-form block.
pub(crate) fn parse(
    vol: &Volume,
    b: &[u8],
    at: u64,
    owner: u64,
    out: &mut Vec<RawEntry>,
) -> Result<bool> {
    let sb = &vol.sb;
    let c = |d: String| vol.corrupt("directory data block", at, d);
    let magic = be32(b, 0).unwrap_or(0);
    let (block_form, hdr) = match (sb.crc, magic) {
        (false, BLOCK_V4) => (true, 16),
        (false, DATA_V4) => (false, 16),
        (true, BLOCK_V5) => (true, 64),
        (true, DATA_V5) => (false, 64),
        _ => return Err(c(format!("bad magic {magic:#x}"))),
    };
    if sb.crc {
        if !crc_ok(b, 4) {
            return Err(c("CRC mismatch".into()));
        }
        if be64(b, 40) != Some(owner) {
            return Err(c(format!("owned by inode {:?}, not {owner}", be64(b, 40))));
        }
        if b.get(24..40) != Some(&sb.meta_uuid[..]) {
            return Err(c("belongs to another filesystem (UUID)".into()));
        }
    }
    let end = if block_form {
        // Tail: leaf count and stale count; the hash leaf sits just before it.
        let count = be32(b, b.len().saturating_sub(8)).unwrap_or(u32::MAX) as usize;
        count
            .checked_mul(8)
            .and_then(|l| b.len().checked_sub(8 + l))
            .filter(|&e| e >= hdr)
            .ok_or_else(|| c(format!("block tail counts {count} leaf entries")))?
    } else {
        b.len()
    };
    let mut pos = hdr;
    while pos < end {
        if be16(b, pos) == Some(FREE_TAG) {
            let len = usize::from(be16(b, pos + 2).unwrap_or(0));
            if len < 8 || len % 8 != 0 || pos + len > end {
                return Err(c(format!("free space of {len} bytes at {pos:#x}")));
            }
            pos += len;
            continue;
        }
        let short = || c(format!("entry at {pos:#x} runs past the block"));
        let ino = be64(b, pos).ok_or_else(short)?;
        let namelen = usize::from(u8_at(b, pos + 8).ok_or_else(short)?);
        let name = b.get(pos + 9..pos + 9 + namelen).ok_or_else(short)?;
        let ftype = if sb.ftype {
            Some(u8_at(b, pos + 9 + namelen).ok_or_else(short)?)
        } else {
            None
        };
        let size = (9 + namelen + usize::from(sb.ftype) + 2).next_multiple_of(8);
        if namelen == 0 || pos + size > end {
            return Err(short());
        }
        if be16(b, pos + size - 2) != Some(pos as u16) {
            return Err(c(format!("entry at {pos:#x} has a wrong tag")));
        }
        if name != b"." && name != b".." {
            if bad_name(name) {
                return Err(c(format!("entry at {pos:#x} has an invalid name")));
            }
            out.push(RawEntry {
                name: name.to_vec(),
                ino,
                ftype,
            });
        }
        pos += size;
    }
    Ok(block_form)
}
