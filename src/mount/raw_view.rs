//! The `--raw` view: block devices (the whole disk, its partitions, its LVs) as read-only
//! files in one flat directory, so any host tool (`file`, `sfdisk -l`, `mount -o loop`,
//! `qemu-img`) can open them without knowing the image format.

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use transplant_formats::BlockDev;

const TTL: Duration = Duration::from_secs(60);
/// Reads beyond this are split: the kernel asks for at most 1 MiB anyway.
const MAX_READ: u32 = 4 << 20;

pub struct RawView {
    files: Vec<(String, Arc<dyn BlockDev>)>,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

impl RawView {
    pub fn new(files: Vec<(String, Arc<dyn BlockDev>)>, uid: u32, gid: u32) -> Self {
        RawView {
            files,
            uid,
            gid,
            mtime: SystemTime::now(),
        }
    }

    fn dir_attr(&self) -> FileAttr {
        FileAttr {
            ino: INodeNo::ROOT,
            size: 0,
            blocks: 0,
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }

    fn file_attr(&self, idx: usize) -> Option<FileAttr> {
        let (_, dev) = self.files.get(idx)?;
        Some(FileAttr {
            ino: INodeNo(idx as u64 + 2),
            size: dev.len(),
            blocks: dev.len().div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind: FileType::RegularFile,
            perm: 0o444,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 1 << 20,
        })
    }

    fn index(ino: INodeNo) -> Option<usize> {
        u64::from(ino).checked_sub(2).map(|i| i as usize)
    }
}

impl Filesystem for RawView {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        match self.files.iter().position(|(n, _)| OsStr::new(n) == name) {
            Some(i) => match self.file_attr(i) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            return reply.attr(&TTL, &self.dir_attr());
        }
        match Self::index(ino).and_then(|i| self.file_attr(i)) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if Self::index(ino).and_then(|i| self.files.get(i)).is_none() {
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
        let Some((_, dev)) = Self::index(ino).and_then(|i| self.files.get(i)) else {
            return reply.error(Errno::ENOENT);
        };
        let len = dev.len();
        if offset >= len {
            return reply.data(&[]);
        }
        let n = (size.min(MAX_READ) as u64).min(len - offset) as usize;
        let mut buf = vec![0u8; n];
        match dev.read_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(e) => {
                eprintln!("transplant mount: {e}");
                reply.error(Errno::EIO)
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
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries: Vec<(u64, FileType, &str)> = vec![
            (1, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
        ];
        for (i, (name, _)) in self.files.iter().enumerate() {
            entries.push((i as u64 + 2, FileType::RegularFile, name));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let total: u64 = self.files.iter().map(|(_, d)| d.len()).sum();
        reply.statfs(
            total / 4096,
            0,
            0,
            self.files.len() as u64 + 1,
            0,
            4096,
            255,
            4096,
        );
    }
}
