//! The guest's file tree: a root filesystem with others attached where its fstab says,
//! and path resolution that follows symlinks inside that tree only. An absolute link
//! (`/etc/alternatives/x`) resolves from the guest's root; `..` stops at the root; loops
//! end after 40 links, as the kernel does.

use crate::error::{Error, Result};
use crate::{show, DirEntry, FileKind, Filesystem, Metadata, NewNode, SetAttrs};
use std::sync::Arc;

const MAX_LINKS: usize = 40;

pub struct Mount {
    /// Components of the mount point ([] for the root).
    pub at: Vec<Vec<u8>>,
    pub fs: Arc<dyn Filesystem>,
    /// Where it came from, for messages ("disk.vmdk@2").
    pub source: String,
}

pub struct GuestTree {
    mounts: Vec<Mount>,
}

fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| c.to_vec())
        .collect()
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in comps {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

impl GuestTree {
    pub fn new(root: Arc<dyn Filesystem>, source: impl Into<String>) -> Self {
        GuestTree {
            mounts: vec![Mount {
                at: Vec::new(),
                fs: root,
                source: source.into(),
            }],
        }
    }

    /// Attaches `fs` at `mount_point` (a guest path), as the fstab says.
    pub fn attach(
        &mut self,
        mount_point: &[u8],
        fs: Arc<dyn Filesystem>,
        source: impl Into<String>,
    ) {
        self.mounts.push(Mount {
            at: components(mount_point),
            fs,
            source: source.into(),
        });
        // Longest mount point first, so lookups find the innermost mount.
        self.mounts.sort_by_key(|m| std::cmp::Reverse(m.at.len()));
    }

    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The filesystem holding canonical path `comps`, and the path inside it.
    fn locate(&self, comps: &[Vec<u8>]) -> Result<(&dyn Filesystem, Vec<u8>)> {
        for m in &self.mounts {
            if comps.len() >= m.at.len() && comps[..m.at.len()] == m.at[..] {
                return Ok((&*m.fs, join(&comps[m.at.len()..])));
            }
        }
        Err(Error::NotFound(show(&join(comps))))
    }

    /// Resolves a guest path to its canonical components, following symlinks inside the
    /// guest (the last one only if `follow_last`).
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Result<Vec<Vec<u8>>> {
        resolve_with(path, follow_last, |done| {
            let (fs, inner) = self.locate(done)?;
            let m = fs.lstat(&inner)?;
            let target = if m.kind == FileKind::Symlink {
                Some(fs.read_link(&inner)?)
            } else {
                None
            };
            Ok((m.kind, target))
        })
    }

    pub fn stat(&self, path: &[u8], follow: bool) -> Result<Metadata> {
        let c = self.resolve(path, follow)?;
        let (fs, inner) = self.locate(&c)?;
        fs.lstat(&inner)
    }

    pub fn read_dir(&self, path: &[u8]) -> Result<Vec<DirEntry>> {
        let c = self.resolve(path, true)?;
        let (fs, inner) = self.locate(&c)?;
        let mut entries = fs.read_dir(&inner)?;
        // Mount points inside this directory show as directories even if the root
        // filesystem lacks the directory.
        for m in &self.mounts {
            if m.at.len() == c.len() + 1 && m.at[..c.len()] == c[..] {
                let name = m.at[c.len()].clone();
                if !entries.iter().any(|e| e.name == name) {
                    entries.push(DirEntry {
                        name,
                        kind: FileKind::Dir,
                    });
                }
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    pub fn read(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<usize> {
        let c = self.resolve(path, true)?;
        let (fs, inner) = self.locate(&c)?;
        fs.read(&inner, offset, buf)
    }

    pub fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        let c = self.resolve(path, false)?;
        let (fs, inner) = self.locate(&c)?;
        fs.read_link(&inner)
    }

    /// Reads a whole (small) file, bounded by `max` bytes.
    pub fn read_file(&self, path: &[u8], max: u64) -> Result<Vec<u8>> {
        let m = self.stat(path, true)?;
        if m.kind == FileKind::Dir {
            return Err(Error::IsADirectory(show(path)));
        }
        let n = m.size.min(max) as usize;
        let mut buf = vec![0u8; n];
        let got = self.read(path, 0, &mut buf)?;
        buf.truncate(got);
        Ok(buf)
    }
}

/// Writes: the parent directory is resolved inside the guest (symlinks followed, across
/// mounts), then the filesystem holding it does the change. A mount point itself cannot be
/// removed or renamed, and a rename cannot cross filesystems.
impl GuestTree {
    /// The filesystem and inner path of `path` with its parent resolved and its last
    /// component kept as is.
    fn locate_entry(&self, path: &[u8]) -> Result<(&dyn Filesystem, Vec<u8>, usize)> {
        let mut comps = components(path);
        let Some(name) = comps.pop() else {
            return Err(Error::Exists(show(path)));
        };
        if name == b"." || name == b".." {
            return Err(Error::NotFound(show(path)));
        }
        let mut full = self.resolve(&join(&comps), true)?;
        full.push(name);
        for m in &self.mounts {
            if !m.at.is_empty() && m.at == full {
                return Err(Error::Refused {
                    dev: m.source.clone(),
                    reason: format!(
                        "{} is a mount point of the guest; change what is inside it",
                        show(path)
                    ),
                });
            }
        }
        let (fs, inner) = self.locate(&full)?;
        let idx = self
            .mounts
            .iter()
            .position(|m| {
                std::ptr::addr_eq(&*m.fs as *const dyn Filesystem, fs as *const dyn Filesystem)
            })
            .unwrap_or(0);
        Ok((fs, inner, idx))
    }

    /// Whether every filesystem of the tree is open for writing.
    pub fn writable(&self) -> bool {
        self.mounts.iter().all(|m| m.fs.writable())
    }

    /// Replaces a file's content (following a final symlink, as `>` would).
    pub fn write_file(&self, path: &[u8], data: &[u8]) -> Result<()> {
        let c = self.resolve(path, true)?;
        let (fs, inner) = self.locate(&c)?;
        fs.write_file(&inner, data)
    }

    pub fn create(&self, path: &[u8], node: NewNode<'_>, attrs: &SetAttrs) -> Result<()> {
        let (fs, inner, _) = self.locate_entry(path)?;
        fs.create(&inner, node, attrs)
    }

    /// Removes the entry itself (a final symlink is removed, not its target).
    pub fn remove(&self, path: &[u8]) -> Result<()> {
        let (fs, inner, _) = self.locate_entry(path)?;
        fs.remove(&inner)
    }

    pub fn rename(&self, from: &[u8], to: &[u8]) -> Result<()> {
        let (fs, a, i) = self.locate_entry(from)?;
        let (_, b, j) = self.locate_entry(to)?;
        if i != j {
            return Err(Error::Refused {
                dev: self
                    .mounts
                    .get(i)
                    .map(|m| m.source.clone())
                    .unwrap_or_default(),
                reason: format!(
                    "{} and {} are on different filesystems of the guest; copy and remove instead",
                    show(from),
                    show(to)
                ),
            });
        }
        fs.rename(&a, &b)
    }

    /// Changes attributes, following a final symlink (as chmod and chown do).
    pub fn set_attrs(&self, path: &[u8], attrs: &SetAttrs) -> Result<()> {
        let c = self.resolve(path, true)?;
        let (fs, inner) = self.locate(&c)?;
        fs.set_attrs(&inner, attrs)
    }

    /// Syncs every filesystem of the tree.
    pub fn sync(&self) -> Result<()> {
        for m in &self.mounts {
            m.fs.sync()?;
        }
        Ok(())
    }
}

/// Resolves `path` inside one filesystem (no mounts), following its symlinks inside it:
/// absolute targets restart at its root, `..` stops there, more than 40 links is a loop.
/// Returns the canonical path, ready for [`Filesystem`] calls.
pub fn resolve_path(fs: &dyn Filesystem, path: &[u8], follow_last: bool) -> Result<Vec<u8>> {
    let comps = resolve_with(path, follow_last, |done| {
        let inner = join(done);
        let m = fs.lstat(&inner)?;
        let target = if m.kind == FileKind::Symlink {
            Some(fs.read_link(&inner)?)
        } else {
            None
        };
        Ok((m.kind, target))
    })?;
    Ok(join(&comps))
}

/// The walk shared by [`GuestTree::resolve`] and [`resolve_path`]: `probe` gives the kind
/// of a canonical path and, for a symlink, its target; callers decide where paths live.
fn resolve_with(
    path: &[u8],
    follow_last: bool,
    probe: impl Fn(&[Vec<u8>]) -> Result<(FileKind, Option<Vec<u8>>)>,
) -> Result<Vec<Vec<u8>>> {
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut todo: Vec<Vec<u8>> = components(path);
    todo.reverse();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == b"." {
            continue;
        }
        if c == b".." {
            done.pop();
            continue;
        }
        done.push(c);
        let last = todo.is_empty();
        let (kind, target) = probe(&done)?;
        match kind {
            FileKind::Symlink if !last || follow_last => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::Loop(show(path)));
                }
                let target = target.unwrap_or_default();
                done.pop();
                if target.first() == Some(&b'/') {
                    done.clear();
                }
                let mut t = components(&target);
                t.reverse();
                todo.extend(t);
            }
            FileKind::Dir => {}
            _ if !last => return Err(Error::NotADirectory(show(&join(&done)))),
            _ => {}
        }
    }
    Ok(done)
}
