//! The default view: the guest's files as its fstab assembles them, read-only, like
//! `guestmount -i --ro`. Inode numbers are handed out per guest path on first lookup; the
//! guest tree does the reading, so symlinks inside paths resolve in the guest, and the
//! mount's nodev/nosuid keep device nodes and setuid bits inert on the host.

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use transplant_fs::{Error, FileKind, GuestTree, Metadata};

const TTL: Duration = Duration::from_secs(60);
const MAX_READ: u32 = 4 << 20;

/// Guest paths by inode (ino - 1 indexes the list; the root is ino 1), and back.
type InodeTable = (Vec<Vec<u8>>, HashMap<Vec<u8>, u64>);

pub struct GuestView {
    tree: GuestTree,
    inodes: RwLock<InodeTable>,
}

fn errno(e: &Error) -> Errno {
    match e {
        Error::NotFound(_) => Errno::ENOENT,
        Error::NotADirectory(_) => Errno::ENOTDIR,
        Error::IsADirectory(_) => Errno::EISDIR,
        Error::Loop(_) => Errno::ELOOP,
        Error::NotASymlink(_) => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

fn time(t: transplant_fs::Time) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos.min(999_999_999))
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

impl GuestView {
    pub fn new(tree: GuestTree) -> Self {
        let mut map = HashMap::new();
        map.insert(b"/".to_vec(), 1);
        GuestView {
            tree,
            inodes: RwLock::new((vec![b"/".to_vec()], map)),
        }
    }

    fn path(&self, ino: INodeNo) -> Option<Vec<u8>> {
        let g = self.inodes.read().unwrap_or_else(|p| p.into_inner());
        g.0.get((u64::from(ino)).checked_sub(1)? as usize).cloned()
    }

    fn ino(&self, path: &[u8]) -> u64 {
        if let Some(&i) = self
            .inodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .get(path)
        {
            return i;
        }
        let mut g = self.inodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = g.1.get(path) {
            return i;
        }
        g.0.push(path.to_vec());
        let i = g.0.len() as u64;
        g.1.insert(path.to_vec(), i);
        i
    }

    fn attr(&self, ino: u64, m: &Metadata) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: m.size,
            blocks: m.size.div_ceil(512),
            atime: time(m.atime),
            mtime: time(m.mtime),
            ctime: time(m.mtime),
            crtime: m.crtime.map(time).unwrap_or(UNIX_EPOCH),
            kind: file_type(m.kind),
            perm: (m.mode & 0o7777) as u16,
            nlink: if m.kind == FileKind::Dir { 2 } else { 1 },
            uid: m.uid,
            gid: m.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }

    fn child(dir: &[u8], name: &[u8]) -> Vec<u8> {
        let mut p = dir.to_vec();
        if p.last() != Some(&b'/') {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        p
    }
}

impl Filesystem for GuestView {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.path(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let p = Self::child(&dir, name.as_bytes());
        match self.tree.stat(&p, false) {
            Ok(m) => {
                let ino = self.ino(&p);
                reply.entry(&TTL, &self.attr(ino, &m), Generation(0))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.tree.stat(&p, false) {
            Ok(m) => reply.attr(&TTL, &self.attr(u64::from(ino), &m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.tree.read_link(&p) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.path(ino).is_none() {
            return reply.error(Errno::ENOENT);
        }
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut buf = vec![0u8; size.min(MAX_READ) as usize];
        match self.tree.read(&p, offset, &mut buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => {
                eprintln!("transplant mount: {e}");
                reply.error(errno(&e))
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let entries = match self.tree.read_dir(&p) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut all: Vec<(u64, FileType, Vec<u8>)> = vec![
            (u64::from(ino), FileType::Directory, b".".to_vec()),
            (1, FileType::Directory, b"..".to_vec()),
        ];
        for e in entries {
            let child = Self::child(&p, &e.name);
            all.push((self.ino(&child), file_type(e.kind), e.name));
        }
        for (i, (ino, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }
}
