//! Reads through the writer's own engine, used when the filesystem is open for writing so
//! that reads see the writes (ext4-view's instances would cache stale state). Paths name
//! real directories (the `Filesystem` contract); the last component is not followed.

use super::engine::Engine;
use super::inode::{flags, Inode, ROOT_INO};
use super::mapping::Mapping;
use crate::error::{Error, Result};
use crate::{show, DirEntry, FileKind, Metadata};
use std::sync::Arc;

/// Longest file name ext4 stores.
pub const NAME_MAX: usize = 255;

pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Splits `path` into its parent and last name; the name must be one ext4 can hold.
pub fn split_parent(path: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let comps: Vec<&[u8]> = components(path).collect();
    let Some((name, dirs)) = comps.split_last() else {
        return Err(Error::Exists(format!("{}: the root directory", show(path))));
    };
    if *name == b".." || name.len() > NAME_MAX || name.contains(&0) {
        return Err(Error::NotFound(format!(
            "{}: not a name a directory entry can hold",
            show(path)
        )));
    }
    let mut parent = Vec::new();
    for d in dirs {
        parent.push(b'/');
        parent.extend_from_slice(d);
    }
    if parent.is_empty() {
        parent.push(b'/');
    }
    Ok((parent, name.to_vec()))
}

impl Engine {
    /// The inode number of `path`.
    pub fn lookup_path(&self, path: &[u8]) -> Result<u32> {
        let mut ino = ROOT_INO;
        let mut walked: Vec<u8> = Vec::new();
        for c in components(path) {
            let dir = self.read_inode(ino)?;
            self.check_dir(&dir, if walked.is_empty() { b"/" } else { &walked })?;
            walked.push(b'/');
            walked.extend_from_slice(c);
            match self.find_entry(&dir, c)? {
                Some(loc) => ino = loc.entry.inode,
                None => return Err(Error::NotFound(show(&walked))),
            }
        }
        Ok(ino)
    }

    pub fn inode_of(&self, path: &[u8]) -> Result<Inode> {
        let ino = self.lookup_path(path)?;
        self.read_inode(ino)
    }

    pub fn stat(&self, path: &[u8]) -> Result<Metadata> {
        let i = self.inode_of(path)?;
        Ok(Metadata {
            kind: i.kind(),
            mode: (i.mode() & 0o7777) as u32,
            uid: i.uid(),
            gid: i.gid(),
            size: i.size(),
            atime: i.atime(),
            mtime: i.mtime(),
            crtime: i.crtime(),
        })
    }

    pub fn read_dir_entries(&self, path: &[u8]) -> Result<Vec<DirEntry>> {
        let dir = self.inode_of(path)?;
        self.check_dir(&dir, path)?;
        let mut out = Vec::new();
        for (name, ino, ft) in self.list_dir(&dir)? {
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match ft {
                1 => FileKind::File,
                2 => FileKind::Dir,
                3 => FileKind::CharDevice,
                4 => FileKind::BlockDevice,
                5 => FileKind::Fifo,
                6 => FileKind::Socket,
                7 => FileKind::Symlink,
                _ => self.read_inode(ino)?.kind(),
            };
            out.push(DirEntry { name, kind });
        }
        Ok(out)
    }

    fn check_data_readable(&self, i: &Inode, path: &[u8]) -> Result<()> {
        if i.flags() & flags::ENCRYPT == 0 {
            return Ok(());
        }
        Err(Error::Unsupported {
            dev: self.name.clone(),
            feature: format!("encrypt ({} uses it)", show(path)),
        })
    }

    /// The content of an inline_data file or symlink.
    fn inline_content(&self, i: &Inode) -> Result<Vec<u8>> {
        super::inline::content(i).map_err(|e| self.corrupt(format!("inode {}: {e}", i.ino)))
    }

    /// What reading `path` needs once its inode is found. A read-only engine's device
    /// never differs from what it caches, so with this the bytes can be read without
    /// holding the engine (see `fill`).
    pub fn read_source(&self, path: &[u8]) -> Result<Source> {
        let i = self.inode_of(path)?;
        if i.is_dir() {
            return Err(Error::IsADirectory(show(path)));
        }
        self.check_data_readable(&i, path)?;
        if i.flags() & flags::INLINE_DATA != 0 {
            return Ok(Source::Inline(self.inline_content(&i)?));
        }
        Ok(Source::Mapped {
            map: self.read_mapping(&i)?,
            size: i.size(),
            block_size: self.bs(),
        })
    }

    pub fn read_data(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<usize> {
        let src = self.read_source(path)?;
        fill(&src, offset, buf, |b, off| self.read_bytes(b, off))
    }

    pub fn read_link_target(&self, path: &[u8]) -> Result<Vec<u8>> {
        let i = self.inode_of(path)?;
        if i.kind() != FileKind::Symlink {
            return Err(Error::NotASymlink(show(path)));
        }
        let size = i.size() as usize;
        if i.flags() & flags::INLINE_DATA != 0 {
            return self.inline_content(&i);
        }
        if i.is_fast_symlink(self.bs()) {
            return i
                .i_block()
                .get(..size)
                .map(|s| s.to_vec())
                .ok_or_else(|| self.corrupt(format!("symlink inode {}: size {size}", i.ino)));
        }
        self.check_data_readable(&i, path)?;
        if size as u64 >= self.bs() {
            return Err(self.corrupt(format!("symlink inode {}: size {size}", i.ino)));
        }
        let mut buf = vec![0u8; size];
        self.read_data(path, 0, &mut buf)?;
        Ok(buf)
    }
}

/// A file's bytes as `Engine::read_source` finds them.
pub enum Source {
    /// Exactly i_size bytes, from the inode.
    Inline(Vec<u8>),
    Mapped {
        map: Arc<Mapping>,
        size: u64,
        block_size: u64,
    },
}

/// Reads from `offset` into `buf` what `src` says lies there (zeroes in holes and
/// unwritten extents), through `read(buf, device_offset)`; returns the bytes read, short
/// only at the end of the file.
pub fn fill(
    src: &Source,
    offset: u64,
    buf: &mut [u8],
    mut read: impl FnMut(&mut [u8], u64) -> Result<()>,
) -> Result<usize> {
    let (map, size, bs) = match src {
        Source::Inline(data) => {
            let Some(rest) = usize::try_from(offset).ok().and_then(|o| data.get(o..)) else {
                return Ok(0);
            };
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            return Ok(n);
        }
        Source::Mapped {
            map,
            size,
            block_size,
        } => (map, *size, *block_size),
    };
    if offset >= size || buf.is_empty() {
        return Ok(0);
    }
    let n = (size - offset).min(buf.len() as u64) as usize;
    let mut done = 0usize;
    while done < n {
        let pos = offset + done as u64;
        let l = pos / bs;
        let within = pos % bs;
        let left = (n - done) as u64;
        match map.lookup(l) {
            Some((p, run)) => {
                let avail = (run * bs - within).min(left) as usize;
                read(&mut buf[done..done + avail], p * bs + within)?;
                done += avail;
            }
            None => {
                // A hole or an unwritten extent, up to the next mapped block.
                let upto = map
                    .next_mapped(l)
                    .map_or(u64::MAX, |b| b.saturating_mul(bs));
                let avail = upto.saturating_sub(pos).clamp(1, left) as usize;
                buf[done..done + avail].fill(0);
                done += avail;
            }
        }
    }
    Ok(n)
}
