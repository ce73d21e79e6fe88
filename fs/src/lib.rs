//! Guest filesystems behind one trait, so inspection, `ls`/`cat` and the FUSE view never
//! care which filesystem holds a file.
//!
//! The trait is path-based: paths are absolute within one filesystem, as bytes (guest
//! names need not be UTF-8), and callers pass only paths whose directories are real
//! directories — symbolic links are resolved above, by [`GuestTree`], so that an absolute
//! link resolves from the guest's root (across its fstab mounts) and never on the host.

pub mod error;
pub mod ext4;
pub mod fat;
pub mod guest;
pub mod probe;
pub mod xfs;

pub use error::{Error, Result};
pub use guest::{resolve_path, GuestTree};
pub use probe::{probe, FsProbe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (no type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    pub crtime: Option<Time>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub kind: FileKind,
}

/// What `info` shows of a filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FsInfo {
    /// As blkid's TYPE: ext2, ext3, ext4, xfs, ...
    pub kind: String,
    pub label: Option<String>,
    pub uuid: Option<String>,
}

/// Attributes for `create` and `set_attrs`; `None` keeps a field (for `create`: mode 0644
/// files / 0755 dirs / 0777 symlinks, uid/gid 0, times = now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
}

/// What `create` makes: a regular file with this content, an empty directory, or a
/// symbolic link to this target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewNode<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a [u8]),
}

fn read_only(what: &str) -> Error {
    Error::ReadOnly(format!("{what}: this filesystem is open read-only"))
}

/// A guest filesystem: read always; write where `writable()` says so (ext2/3/4 opened with
/// `Ext4Fs::open_rw`), each write call leaving the filesystem consistent.
pub trait Filesystem: Send + Sync {
    fn info(&self) -> FsInfo;
    /// Metadata of `path`, not following a final symlink.
    fn lstat(&self, path: &[u8]) -> Result<Metadata>;
    fn read_dir(&self, path: &[u8]) -> Result<Vec<DirEntry>>;
    /// Reads file bytes at `offset`; returns how many were read (0 at the end).
    fn read(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<usize>;
    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>>;

    fn writable(&self) -> bool {
        false
    }
    /// Replaces the whole content of the existing regular file `path`; the inode, mode, owner
    /// and xattrs (SELinux labels) are kept; mtime/ctime become now.
    fn write_file(&self, path: &[u8], _data: &[u8]) -> Result<()> {
        Err(read_only(&show(path)))
    }
    fn create(&self, path: &[u8], _node: NewNode<'_>, _attrs: &SetAttrs) -> Result<()> {
        Err(read_only(&show(path)))
    }
    /// Unlinks a file, symlink or special file, or removes an empty directory.
    fn remove(&self, path: &[u8]) -> Result<()> {
        Err(read_only(&show(path)))
    }
    /// Renames, atomically replacing `to` if it exists (not a non-empty directory).
    fn rename(&self, from: &[u8], _to: &[u8]) -> Result<()> {
        Err(read_only(&show(from)))
    }
    fn set_attrs(&self, path: &[u8], _attrs: &SetAttrs) -> Result<()> {
        Err(read_only(&show(path)))
    }
    /// Writes cached metadata to the device (call before committing the overlay).
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// The value of extended attribute `name` (with its namespace: `security.selinux`)
    /// of `path`, not following a final symlink; `None` where it is absent or the
    /// filesystem does not read attributes.
    fn get_xattr(&self, _path: &[u8], _name: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

/// Displays guest bytes for messages.
pub fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}
