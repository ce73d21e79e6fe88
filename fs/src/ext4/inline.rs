//! Inline data (`mke2fs -O inline_data`): a small file, directory or symlink keeps its
//! content in the inode itself, in the 60 bytes of i_block and, past those, in the value
//! of the `system.data` extended attribute stored in the inode's own xattr area (after
//! `128 + i_extra_isize`). The attribute exists, maybe empty, on every inline inode; its
//! value never lives in an xattr block, since the point is to need no block at all.
//!
//! An inline directory has no "." entry and keeps ".." as a bare inode number in the first
//! 4 bytes of i_block; linear entries follow in the other 56 bytes, and continue in the
//! attribute value, each area chained to its own end, without checksum tails.
//!
//! Everything here reads bytes of one inode as `Inode::raw` holds them; offsets and sizes
//! come from the image, so each is checked against the buffer before use.

use super::dir_block;
use super::inode::{Inode, I_BLOCK_LEN};
use super::le::*;

/// The in-inode xattr area starts with this magic number.
const XATTR_MAGIC: u32 = 0xEA02_0000;
/// `EXT4_XATTR_INDEX_SYSTEM`: names in the "system." namespace.
const INDEX_SYSTEM: u8 = 7;
/// Each entry: name length, name index, value offset (u16), value inode (u32), value
/// size (u32), hash (u32), then the name, padded to 4 bytes.
const ENTRY_HEADER: usize = 16;

/// Where the in-inode xattr area (after its magic number) begins, if the inode has one.
fn ibody(raw: &[u8]) -> Option<&[u8]> {
    if raw.len() <= 128 {
        return None;
    }
    let extra = u16_at(raw, 0x80) as usize;
    let start = 128usize.checked_add(extra)?;
    if u32_at(raw, start) != XATTR_MAGIC {
        return None;
    }
    raw.get(start.checked_add(4)?..)
}

/// The value of `system.data` in the inode's own xattr area; None when there is none.
pub fn system_data(raw: &[u8]) -> Result<Option<&[u8]>, String> {
    let Some(area) = ibody(raw) else {
        return Ok(None);
    };
    let mut off = 0usize;
    // Each step moves at least ENTRY_HEADER bytes on, so the walk ends within the area.
    while off + 4 <= area.len() && u32_at(area, off) != 0 {
        let name_len = u8_at(area, off) as usize;
        let index = u8_at(area, off + 1);
        let value_offs = u16_at(area, off + 2) as usize;
        let value_inum = u32_at(area, off + 4);
        let value_size = u32_at(area, off + 8) as usize;
        let name = area
            .get(off + ENTRY_HEADER..off + ENTRY_HEADER + name_len)
            .ok_or_else(|| format!("in-inode xattr entry at offset {off} runs past the inode"))?;
        if index == INDEX_SYSTEM && name == b"data" {
            if value_inum != 0 {
                return Err("system.data is stored in an xattr inode".into());
            }
            if value_size == 0 {
                return Ok(Some(&[]));
            }
            return area
                .get(value_offs..value_offs.saturating_add(value_size))
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "system.data value at offset {value_offs} (+{value_size}) runs past the inode"
                    )
                });
        }
        off += (ENTRY_HEADER + name_len + 3) & !3;
    }
    Ok(None)
}

/// The whole content of an inline regular file or symlink: `i_size` bytes of i_block
/// followed by the system.data value.
pub fn content(i: &Inode) -> Result<Vec<u8>, String> {
    let head = i.i_block();
    let tail = system_data(&i.raw)?.unwrap_or(&[]);
    let size = i.size();
    let held = (head.len() + tail.len()) as u64;
    if size > held {
        return Err(format!(
            "inline data of {size} bytes, but the inode holds {held}"
        ));
    }
    let size = size as usize;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(head.get(..size.min(head.len())).unwrap_or(&[]));
    if size > head.len() {
        out.extend_from_slice(tail.get(..size - head.len()).unwrap_or(&[]));
    }
    Ok(out)
}

/// An inline directory's entries as the block-based ones list them: (name, inode, file
/// type byte), "." and ".." first, then the live entries of i_block and system.data.
pub fn dir_entries(i: &Inode, filetype: bool) -> Result<Vec<(Vec<u8>, u32, u8)>, String> {
    let head = i.i_block();
    if head.len() < I_BLOCK_LEN {
        return Err("inode too short for i_block".into());
    }
    let parent = u32_at(head, 0);
    let mut out = vec![(b".".to_vec(), i.ino, 2), (b"..".to_vec(), parent, 2)];
    let first = head.get(4..).unwrap_or(&[]);
    let tail = system_data(&i.raw)?.unwrap_or(&[]);
    for (what, area) in [("i_block", first), ("system.data", tail)] {
        if area.is_empty() {
            continue;
        }
        let list = dir_block::entries_to(area, filetype, area.len())
            .map_err(|e| format!("inline directory ({what}): {e}"))?;
        for e in list {
            if e.inode != 0 {
                out.push((e.name(area).to_vec(), e.inode, e.file_type));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::inode::{Inode, I_BLOCK};
    use super::*;

    /// A 256-byte inode with extra_isize 32 and one in-inode xattr, system.data = `value`.
    fn inode_with(value: &[u8], size: u64) -> Inode {
        let mut i = Inode::new(12, 256, 32);
        i.set_size(size);
        let start = 128 + 32;
        put_u32(&mut i.raw, start, XATTR_MAGIC);
        let area = start + 4;
        // One entry, then the 4-byte terminator, then the value at offset 40.
        i.raw[area] = 4;
        i.raw[area + 1] = INDEX_SYSTEM;
        put_u16(&mut i.raw, area + 2, 40);
        put_u32(&mut i.raw, area + 8, value.len() as u32);
        i.raw[area + 16..area + 20].copy_from_slice(b"data");
        i.raw[area + 40..area + 40 + value.len()].copy_from_slice(value);
        i
    }

    #[test]
    fn file_spills_into_system_data() {
        let mut i = inode_with(b"tail!", 65);
        let mut ib = [b'a'; 60];
        ib[59] = b'z';
        i.set_i_block(&ib);
        let c = content(&i).unwrap();
        assert_eq!(c.len(), 65);
        assert_eq!(&c[55..], b"aaaaztail!");
        // A size past what the inode holds is corrupt, not a read of other bytes.
        i.set_size(66);
        assert!(content(&i).is_err());
    }

    #[test]
    fn hostile_offsets_are_errors() {
        let mut i = inode_with(b"x", 61);
        put_u16(&mut i.raw, 128 + 32 + 4 + 2, 0xFFF0);
        assert!(content(&i).is_err());
        let mut j = inode_with(b"", 0);
        j.raw[128 + 32 + 4] = 200; // a name running past the inode
        j.raw[128 + 32 + 4 + 1] = 1;
        assert!(system_data(&j.raw).is_err());
        // Every byte pattern after the magic: no panic.
        for seed in 0..2000u32 {
            let mut k = Inode::new(12, 256, 32);
            put_u32(&mut k.raw, 160, XATTR_MAGIC);
            let mut x = seed.wrapping_mul(2654435761) | 1;
            for b in k.raw[164..].iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            k.set_size((x % 400) as u64);
            let _ = content(&k);
            let _ = dir_entries(&k, true);
        }
    }

    #[test]
    fn directory_lists_parent_and_both_areas() {
        let mut value = vec![0u8; 24];
        // One entry covering the whole value: inode 14, "file".
        put_u32(&mut value, 0, 14);
        put_u16(&mut value, 4, 24);
        value[6] = 4;
        value[7] = 1;
        value[8..12].copy_from_slice(b"file");
        let mut i = inode_with(&value, 84);
        i.set_mode(0x4000 | 0o755);
        let mut ib = [0u8; 60];
        put_u32(&mut ib, 0, 2);
        put_u32(&mut ib, 4, 13);
        put_u16(&mut ib, 8, 56);
        ib[10] = 3;
        ib[11] = 2;
        ib[12..15].copy_from_slice(b"sub");
        i.set_i_block(&ib);
        assert_eq!(u32_at(&i.raw, I_BLOCK + 4), 13);
        let l = dir_entries(&i, true).unwrap();
        let names: Vec<(&[u8], u32)> = l.iter().map(|(n, i, _)| (&n[..], *i)).collect();
        assert_eq!(
            names,
            vec![
                (&b"."[..], 12),
                (&b".."[..], 2),
                (&b"sub"[..], 13),
                (&b"file"[..], 14)
            ]
        );
    }
}
