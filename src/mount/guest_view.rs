//! The default view: the guest's files as its fstab assembles them, read-only like
//! `guestmount -i --ro`, or writable with `--rw`. Inode numbers are handed out per guest path on first lookup; the
//! guest tree does the reading, so symlinks inside paths resolve in the guest, and the
//! mount's nodev/nosuid keep device nodes and setuid bits inert on the host.
//!
//! Writes: the filesystem API replaces whole files, so a file being written is held in
//! memory (read whole at the first write or truncate) and written back through
//! `write_file` on flush, fsync and release. Names (create, mkdir, symlink, unlink, rmdir,
//! rename) and attributes change at once.
use fuser::{
    BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use transplant_fs::{Error, FileKind, GuestTree, Metadata, NewNode, SetAttrs, Time};

/// A file being written: its whole content, and whether it differs from the guest's.
struct Buffer {
    data: Vec<u8>,
    dirty: bool,
}

const TTL: Duration = Duration::from_secs(60);
const MAX_READ: u32 = 4 << 20;

/// Guest paths by inode (ino - 1 indexes the list; the root is ino 1), and back.
type InodeTable = (Vec<Vec<u8>>, HashMap<Vec<u8>, u64>);

pub struct GuestView {
    tree: Arc<GuestTree>,
    inodes: RwLock<InodeTable>,
    rw: bool,
    buffers: Mutex<HashMap<u64, Buffer>>,
}

/// The largest file `mount --rw` holds in memory while it is written (an initramfs is
/// ~100 MiB; a guest's inode may claim anything).
const MAX_RW_FILE: u64 = 1 << 30;

fn errno(e: &Error) -> Errno {
    match e {
        Error::NotFound(_) => Errno::ENOENT,
        Error::NotADirectory(_) => Errno::ENOTDIR,
        Error::IsADirectory(_) => Errno::EISDIR,
        Error::Loop(_) => Errno::ELOOP,
        Error::NotASymlink(_) => Errno::EINVAL,
        Error::Exists(_) => Errno::EEXIST,
        Error::NotEmpty(_) => Errno::ENOTEMPTY,
        Error::NoSpace(_) => Errno::ENOSPC,
        Error::ReadOnly(_) => Errno::EROFS,
        Error::Refused { .. } => Errno::EPERM,
        Error::Unsupported { .. } => Errno::EOPNOTSUPP,
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

fn guest_time(t: SystemTime) -> Time {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        },
        Err(e) => Time {
            secs: -(e.duration().as_secs() as i64),
            nanos: 0,
        },
    }
}

fn time_or_now(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::SpecificTime(t) => guest_time(t),
        TimeOrNow::Now => guest_time(SystemTime::now()),
    }
}

impl GuestView {
    pub fn new(tree: GuestTree) -> Self {
        Self::build(Arc::new(tree), false)
    }

    /// A writable view (the tree's filesystems must be open for writing).
    pub fn new_rw(tree: Arc<GuestTree>) -> Self {
        Self::build(tree, true)
    }

    fn build(tree: Arc<GuestTree>, rw: bool) -> Self {
        let mut map = HashMap::new();
        map.insert(b"/".to_vec(), 1);
        GuestView {
            tree,
            inodes: RwLock::new((vec![b"/".to_vec()], map)),
            rw,
            buffers: Mutex::new(HashMap::new()),
        }
    }

    /// Attributes and names change under a writable mount: cache them briefly only.
    fn ttl(&self) -> Duration {
        if self.rw {
            Duration::from_secs(1)
        } else {
            TTL
        }
    }

    fn buffers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Buffer>> {
        self.buffers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the file's buffer, loading it first.
    fn with_buffer<R>(
        &self,
        ino: u64,
        path: &[u8],
        f: impl FnOnce(&mut Buffer) -> R,
    ) -> Result<R, Error> {
        let mut b = self.buffers();
        let buf = match b.entry(ino) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let m = self.tree.stat(path, true)?;
                // The size is the guest's word: bound it before allocating the buffer.
                if m.size > MAX_RW_FILE {
                    return Err(Error::Unsupported {
                        dev: self.tree.mounts().first().map(|m| m.source.clone()).unwrap_or_default(),
                        feature: format!(
                            "{}: writing through the mount a file of {} bytes (at most {MAX_RW_FILE}); use transplant write",
                            transplant_fs::show(path),
                            m.size
                        ),
                    });
                }
                let mut data = vec![0u8; m.size as usize];
                let n = self.tree.read(path, 0, &mut data)?;
                data.truncate(n);
                v.insert(Buffer { data, dirty: false })
            }
        };
        Ok(f(buf))
    }

    /// flush, fsync and release: write a buffered file back and answer the kernel.
    fn write_back_reply(&self, ino: INodeNo, forget: bool, reply: ReplyEmpty) {
        let Some(p) = self.path(ino) else {
            return reply.ok();
        };
        match self.write_back(u64::from(ino), &p, forget) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Writes a dirty buffer back into the guest.
    fn write_back(&self, ino: u64, path: &[u8], forget: bool) -> Result<(), Error> {
        let mut b = self.buffers();
        if let Some(buf) = b.get_mut(&ino) {
            if buf.dirty {
                self.tree.write_file(path, &buf.data)?;
                buf.dirty = false;
            }
        }
        if forget {
            b.remove(&ino);
        }
        Ok(())
    }

    fn stat_attr(&self, path: &[u8]) -> Result<FileAttr, Error> {
        let m = self.tree.stat(path, false)?;
        let ino = self.ino(path);
        let mut a = self.attr(ino, &m);
        if let Some(buf) = self.buffers().get(&ino) {
            a.size = buf.data.len() as u64;
            a.blocks = a.size.div_ceil(512);
        }
        Ok(a)
    }

    fn new_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        node: NewNode<'_>,
        mode: Option<u32>,
    ) -> Result<(Vec<u8>, FileAttr), Errno> {
        if !self.rw {
            return Err(Errno::EROFS);
        }
        let dir = self.path(parent).ok_or(Errno::ENOENT)?;
        let p = Self::child(&dir, name.as_bytes());
        let attrs = SetAttrs {
            mode,
            uid: Some(req.uid()),
            gid: Some(req.gid()),
            ..Default::default()
        };
        self.tree.create(&p, node, &attrs).map_err(|e| errno(&e))?;
        let a = self.stat_attr(&p).map_err(|e| errno(&e))?;
        Ok((p, a))
    }

    /// After a rename, paths under `from` live under `to`.
    fn moved(&self, from: &[u8], to: &[u8]) {
        let mut g = self.inodes.write().unwrap_or_else(|p| p.into_inner());
        let (paths, map) = &mut *g;
        if let Some(old) = map.remove(to) {
            // The replaced file's inode number now names nothing.
            if let Some(p) = paths.get_mut(old as usize - 1) {
                *p = b"/\0replaced".to_vec();
            }
        }
        for (i, p) in paths.iter_mut().enumerate() {
            let under =
                p.starts_with(from) && (p.len() == from.len() || p.get(from.len()) == Some(&b'/'));
            if !under {
                continue;
            }
            let mut n = to.to_vec();
            n.extend_from_slice(&p[from.len()..]);
            map.remove(p.as_slice());
            map.insert(n.clone(), i as u64 + 1);
            *p = n;
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

    fn remove_entry(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        if !self.rw {
            return reply.error(Errno::EROFS);
        }
        let Some(d) = self.path(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let p = Self::child(&d, name.as_bytes());
        match self.tree.stat(&p, false) {
            Ok(m) if dir && m.kind != FileKind::Dir => return reply.error(Errno::ENOTDIR),
            Ok(m) if !dir && m.kind == FileKind::Dir => return reply.error(Errno::EISDIR),
            Ok(_) => {}
            Err(e) => return reply.error(errno(&e)),
        }
        match self.tree.remove(&p) {
            Ok(()) => {
                let ino = self.ino(&p);
                self.buffers().remove(&ino);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
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
                reply.entry(&self.ttl(), &self.attr(ino, &m), Generation(0))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.stat_attr(&p) {
            Ok(a) => reply.attr(&self.ttl(), &a),
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
            if !self.rw {
                return reply.error(Errno::EROFS);
            }
            let Some(p) = self.path(ino) else {
                return reply.error(Errno::ENOENT);
            };
            let trunc = flags.0 & libc::O_TRUNC != 0;
            let r = self.with_buffer(u64::from(ino), &p, |b| {
                if trunc && !b.data.is_empty() {
                    b.data.clear();
                    b.dirty = true;
                }
            });
            if let Err(e) = r {
                return reply.error(errno(&e));
            }
            return reply.opened(FileHandle(0), FopenFlags::empty());
        }
        reply.opened(
            FileHandle(0),
            if self.rw {
                FopenFlags::empty()
            } else {
                FopenFlags::FOPEN_KEEP_CACHE
            },
        );
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
        if let Some(b) = self.buffers().get(&u64::from(ino)) {
            let start = (offset as usize).min(b.data.len());
            let end = (start + size.min(MAX_READ) as usize).min(b.data.len());
            return reply.data(&b.data[start..end]);
        }
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

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if !self.rw {
            return reply.error(Errno::EROFS);
        }
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(end) = (offset as usize).checked_add(data.len()) else {
            return reply.error(Errno::EFBIG);
        };
        let r = self.with_buffer(u64::from(ino), &p, |b| {
            if b.data.len() < end {
                b.data.resize(end, 0);
            }
            b.data[offset as usize..end].copy_from_slice(data);
            b.dirty = true;
        });
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.write_back_reply(ino, false, reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.write_back_reply(ino, false, reply);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.write_back_reply(ino, true, reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(p) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if !self.rw {
            return reply.error(Errno::EROFS);
        }
        if let Some(n) = size {
            let i = u64::from(ino);
            let open = self.buffers().contains_key(&i);
            let r = self
                .with_buffer(i, &p, |b| {
                    b.data.resize(n as usize, 0);
                    b.dirty = true;
                })
                .and_then(|()| {
                    if open {
                        Ok(())
                    } else {
                        self.write_back(i, &p, true)
                    }
                });
            if let Err(e) = r {
                return reply.error(errno(&e));
            }
        }
        let attrs = SetAttrs {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            atime: atime.map(time_or_now),
            mtime: mtime.map(time_or_now),
        };
        if attrs != SetAttrs::default() {
            // The guest tree follows symlinks for attributes; the kernel sends setattr on
            // the link itself only for lchown, which changes the target here.
            if let Err(e) = self.tree.set_attrs(&p, &attrs) {
                return reply.error(errno(&e));
            }
        }
        match self.stat_attr(&p) {
            Ok(a) => reply.attr(&self.ttl(), &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.new_entry(
            req,
            parent,
            name,
            NewNode::File(&[]),
            Some(mode & !umask & 0o7777),
        ) {
            Ok((_, a)) => reply.created(
                &self.ttl(),
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.new_entry(
            req,
            parent,
            name,
            NewNode::Dir,
            Some(mode & !umask & 0o7777),
        ) {
            Ok((_, a)) => reply.entry(&self.ttl(), &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let t = target.as_os_str().as_bytes();
        match self.new_entry(req, parent, link_name, NewNode::Symlink(t), None) {
            Ok((_, a)) => reply.entry(&self.ttl(), &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_entry(parent, name, false, reply)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_entry(parent, name, true, reply)
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !self.rw {
            return reply.error(Errno::EROFS);
        }
        let (Some(a), Some(b)) = (self.path(parent), self.path(newparent)) else {
            return reply.error(Errno::ENOENT);
        };
        let from = Self::child(&a, name.as_bytes());
        let to = Self::child(&b, newname.as_bytes());
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return reply.error(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && self.tree.stat(&to, false).is_ok() {
            return reply.error(Errno::EEXIST);
        }
        // Pending writes to the file go under its old name first.
        let fino = self.ino(&from);
        if let Err(e) = self.write_back(fino, &from, false) {
            return reply.error(errno(&e));
        }
        match self.tree.rename(&from, &to) {
            Ok(()) => {
                self.moved(&from, &to);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }
}
