//! Hashed (htree) directories: the index blocks the writer must recognise. The leaves are
//! ordinary directory blocks; the root (logical block 0, after "." and "..") and internal
//! nodes (a fake empty entry spanning the block) hold (hash, block) pairs.
//!
//! Inserting a name must put it in the leaf its hash selects, so instead of splitting
//! leaves the writer drops the index: the root becomes a plain "."/".." block, nodes become
//! empty blocks, and the inode loses its INDEX flag. e2fsck accepts such a directory as a
//! linear one (and `e2fsck -D` or the kernel may index it again); removals and in-place
//! replacements keep the index, since they never move a name between leaves.

use super::csum::crc32c;
use super::le::*;

/// Index levels below the root the kernel allows (3 with large_dir).
const MAX_LEVELS: u8 = 3;

pub struct Root {
    pub levels: u8,
    /// Offset of the count/limit header.
    pub count_offset: usize,
}

pub fn parse_root(b: &[u8]) -> Result<Root, String> {
    let info_len = u8_at(b, 0x1D) as usize;
    let levels = u8_at(b, 0x1E);
    if u32_at(b, 0x18) != 0 || info_len != 8 || levels >= MAX_LEVELS {
        return Err(format!(
            "htree root has info length {info_len} and {levels} levels"
        ));
    }
    Ok(Root {
        levels,
        count_offset: 0x18 + info_len,
    })
}

/// (count, limit) and the child logical blocks of an index node whose count/limit header
/// is at `co`.
pub fn children(b: &[u8], co: usize) -> Result<Vec<u32>, String> {
    let limit = u16_at(b, co) as usize;
    let count = u16_at(b, co + 2) as usize;
    if count > limit || co + limit * 8 > b.len() {
        return Err(format!("htree node holds {count} of {limit} entries"));
    }
    Ok((0..count).map(|i| u32_at(b, co + i * 8 + 4)).collect())
}

/// Logical blocks of every index node under the root, found by walking the index;
/// `read` gives a directory block by logical number.
pub fn index_nodes(
    root: &[u8],
    read: &mut dyn FnMut(u32) -> Result<Vec<u8>, String>,
) -> Result<Vec<u32>, String> {
    let r = parse_root(root)?;
    let mut nodes = Vec::new();
    let mut level = children(root, r.count_offset)?;
    for _ in 0..r.levels {
        let mut next = Vec::new();
        for &n in &level {
            if n == 0 || nodes.contains(&n) {
                return Err(format!(
                    "htree index points at block {n} twice or at block 0"
                ));
            }
            let b = read(n)?;
            nodes.push(n);
            next.extend(children(&b, 8)?);
        }
        level = next;
    }
    Ok(nodes)
}

/// Recomputes the checksum in a dx tail (metadata_csum) of a root or node block.
pub fn set_dx_csum(b: &mut [u8], co: usize, seed: u32) {
    let limit = u16_at(b, co) as usize;
    let count = u16_at(b, co + 2) as usize;
    let tail = co + limit * 8;
    if tail + 8 > b.len() || count > limit {
        return;
    }
    let mut c = crc32c(seed, &b[..co + count * 8]);
    c = crc32c(c, &b[tail..tail + 4]);
    put_u32(b, tail + 4, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_roots_are_errors() {
        let mut b = vec![0u8; 1024];
        put_u8(&mut b, 0x1D, 8);
        put_u8(&mut b, 0x1E, 9);
        assert!(parse_root(&b).is_err());
        put_u8(&mut b, 0x1E, 1);
        put_u16(&mut b, 0x20, 1);
        put_u16(&mut b, 0x22, 1);
        put_u32(&mut b, 0x24, 1);
        // A node that points back at itself is read once and then refused.
        let node = {
            let mut n = vec![0u8; 1024];
            put_u16(&mut n, 8, 2);
            put_u16(&mut n, 10, 1);
            put_u32(&mut n, 12, 1);
            n
        };
        assert!(index_nodes(&b, &mut |_| Ok(node.clone())).is_ok());
        put_u16(&mut b, 0x20, 2);
        put_u16(&mut b, 0x22, 2);
        put_u32(&mut b, 0x2C, 1);
        assert!(index_nodes(&b, &mut |_| Ok(node.clone())).is_err());
    }
}
