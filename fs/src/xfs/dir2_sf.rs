//! Shortform directories: the entries packed in the inode's data fork (`xfs_dir2_sf`),
//! used while a directory is small. "." is implicit and ".." is the header's parent.

use super::bytes::{be32, be64, u8_at};
use super::inode::Inode;
use super::volume::Volume;
use crate::error::Result;

/// One directory entry as stored: name, inode number and (with the ftype feature) the
/// file type byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub ftype: Option<u8>,
}

/// Names a directory may not hold: empty, ".", "..", or with '/' or NUL in them.
pub(crate) fn bad_name(name: &[u8]) -> bool {
    name.is_empty() || name == b"." || name == b".." || name.iter().any(|&c| c == b'/' || c == 0)
}

/// Parses a shortform directory; returns the parent inode and the entries.
pub(crate) fn parse(vol: &Volume, ino: &Inode) -> Result<(u64, Vec<RawEntry>)> {
    let what = format!("shortform directory of inode {}", ino.ino);
    let c = |d: String| vol.corrupt(&what, ino.offset, d);
    let len = usize::try_from(ino.size)
        .ok()
        .filter(|&l| l <= ino.data_fork.len())
        .ok_or_else(|| c(format!("size {} exceeds the inode's data fork", ino.size)))?;
    let b = &ino.data_fork[..len];
    let count = usize::from(u8_at(b, 0).ok_or_else(|| c("short header".into()))?);
    let wide = u8_at(b, 1).ok_or_else(|| c("short header".into()))? != 0;
    let ino_len = if wide { 8 } else { 4 };
    let get_ino = |o: usize| -> Option<u64> {
        if wide {
            be64(b, o)
        } else {
            be32(b, o).map(u64::from)
        }
    };
    let parent = get_ino(2).ok_or_else(|| c("short header".into()))?;
    let mut pos = 2 + ino_len;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let short = || c(format!("entry {i} runs past the fork"));
        let namelen = usize::from(u8_at(b, pos).ok_or_else(short)?);
        let name = b.get(pos + 3..pos + 3 + namelen).ok_or_else(short)?;
        if bad_name(name) {
            return Err(c(format!("entry {i} has an invalid name")));
        }
        let mut o = pos + 3 + namelen;
        let ftype = if vol.sb.ftype {
            o += 1;
            Some(u8_at(b, o - 1).ok_or_else(short)?)
        } else {
            None
        };
        let child = get_ino(o).ok_or_else(short)?;
        out.push(RawEntry {
            name: name.to_vec(),
            ino: child,
            ftype,
        });
        pos = o + ino_len;
    }
    Ok((parent, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(bad_name(b""));
        assert!(bad_name(b".."));
        assert!(bad_name(b"a/b"));
        assert!(!bad_name(b"..."));
    }
}
