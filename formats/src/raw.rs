//! A host file or block device as a `BlockDev`. Every image format reads its host files
//! through this, so positioned I/O (`pread`, no shared cursor) is what makes parallel reads
//! of one image safe. Holes are found with `SEEK_DATA`/`SEEK_HOLE`, so sparse raw images
//! copy in time proportional to their data, not their size.

use crate::blockdev::{BlockDev, Extent, ExtentKind};
use crate::error::{check_range, Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub struct RawFile {
    file: File,
    name: String,
    len: u64,
    writable: bool,
    block_device: bool,
}

impl RawFile {
    pub fn open(path: &Path, writable: bool) -> Result<Self> {
        let name = path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| Error::io(&name, e))?;
        let meta = file.metadata().map_err(|e| Error::io(&name, e))?;
        let block_device = meta.file_type().is_block_device();
        if meta.is_dir() {
            return Err(Error::refused(
                &name,
                "this is a directory, not a disk image",
            ));
        }
        // A block device reports 0 in its metadata; its size is where seeking to the end lands.
        let len = if block_device {
            file.seek(SeekFrom::End(0))
                .map_err(|e| Error::io(&name, e))?
        } else {
            meta.len()
        };
        Ok(RawFile {
            file,
            name,
            len,
            writable,
            block_device,
        })
    }

    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// Bytes the host really stores for this file (`st_blocks`), what qemu-img calls
    /// "disk size".
    pub fn allocated_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        match self.file.metadata() {
            Ok(m) if !self.block_device => m.blocks().saturating_mul(512),
            _ => self.len,
        }
    }

    /// Reads like `read_at`, but bytes past the end of the file read as zeroes. Formats whose
    /// files may legitimately be shorter than their last structure (a VHD dynamic image's
    /// last block, a truncated-by-design flat extent) use it; callers that must detect
    /// truncation use `read_at`.
    pub fn read_at_zero_fill(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let avail = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        if !head.is_empty() {
            self.read_at(head, offset)?;
        }
        tail.fill(0);
        Ok(())
    }

    fn seek_data_hole(&self, offset: u64) -> Option<Extent> {
        if self.block_device {
            return None;
        }
        let fd = self.file.as_raw_fd();
        let off = i64::try_from(offset).ok()?;
        // SAFETY: lseek on an fd we own; the cursor it moves is never used (we use pread).
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            return if err.raw_os_error() == Some(libc::ENXIO) {
                Some(Extent {
                    kind: ExtentKind::Unallocated,
                    len: self.len - offset,
                })
            } else {
                None
            };
        }
        let data = data as u64;
        if data > offset {
            return Some(Extent {
                kind: ExtentKind::Unallocated,
                len: data.min(self.len) - offset,
            });
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
        if hole < 0 {
            return None;
        }
        let hole = (hole as u64).min(self.len);
        if hole <= offset {
            return None;
        }
        Some(Extent {
            kind: ExtentKind::Data,
            len: hole - offset,
        })
    }
}

impl BlockDev for RawFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.len)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(&self.name, e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                file: self.name.clone(),
            });
        }
        check_range(&self.name, offset, buf.len() as u64, self.len)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io(&self.name, e))
    }

    fn flush(&self) -> Result<()> {
        if self.writable {
            self.file
                .sync_data()
                .map_err(|e| Error::io(&self.name, e))?;
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(&self.name, offset, 1, self.len)?;
        Ok(self.seek_data_hole(offset).unwrap_or(Extent {
            kind: ExtentKind::Data,
            len: self.len - offset,
        }))
    }

    fn name(&self) -> &str {
        &self.name
    }
}
