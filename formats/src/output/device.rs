//! A raw copy onto a host block device (a physical disk for V2P, an iSCSI LUN, a logical
//! volume). Unlike a file, a device cannot appear whole or not at all, so safety comes
//! before the first write: the device must be free (not mounted, swapped on, or held by
//! LVM/dm/md — see [`crate::hostdev`]), it is opened `O_EXCL` so nothing can claim it
//! while we write, and it must be large enough.
//!
//! Only data is written. A device is not a fresh sparse file: where the input has holes
//! or zero blocks the device keeps whatever it held before, which is harmless for a disk
//! whose filesystems track their own free space but wrong for a byte-exact copy. With
//! `zero_fill` those ranges are zeroed too, with `BLKZEROOUT` (the device's own
//! write-zeroes command where it has one, no data crossing the bus) and plain zero writes
//! where the ioctl is refused.

use crate::copy::{Chunk, Sink};
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// `_IO(0x12, 127)`: zero a byte range of a block device.
const BLKZEROOUT: u32 = 0x127f;
/// Alignment of ranges given to `BLKZEROOUT`: whole pages, so the kernel's page-cache
/// invalidation never cuts a page our own buffered writes share.
const ZERO_ALIGN: u64 = 4096;

#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceOptions {
    /// Write zeroes where the input has holes or zero blocks (the device may hold old
    /// data there).
    pub zero_fill: bool,
}

/// Bytes zeroed, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ZeroStats {
    pub zeroed_by_ioctl: u64,
    pub zeroed_by_write: u64,
}

pub struct DeviceSink {
    file: File,
    name: String,
    size: u64,
    zero_fill: bool,
    /// End of the last chunk handled: everything before it is written or zeroed.
    pos: u64,
    /// A zero range waiting to be issued, merged with the next one if they touch.
    pending_zero: Option<(u64, u64)>,
    ioctl_works: bool,
    stats: ZeroStats,
}

impl DeviceSink {
    /// Opens `path` (a block device) for a disk of `size` bytes, refusing it if it is in
    /// use or too small.
    pub fn create(path: &Path, size: u64, opts: &DeviceOptions) -> Result<Self> {
        let name = path.display().to_string();
        if !crate::hostdev::is_block_device(path) {
            return Err(Error::refused(&name, "not a block device"));
        }
        crate::hostdev::check_free(path)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    Error::refused(
                        &name,
                        "the kernel says the device is busy (mounted, or held by LVM, \
                         device-mapper or md); free it first",
                    )
                } else {
                    Error::io(&name, e)
                }
            })?;
        let dev_len = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(&name, e))?;
        if dev_len < size {
            return Err(Error::refused(
                &name,
                format!(
                    "the device holds {dev_len} bytes, the disk needs {size}; use a larger \
                     device"
                ),
            ));
        }
        Ok(DeviceSink {
            file,
            name,
            size,
            zero_fill: opts.zero_fill,
            pos: 0,
            pending_zero: None,
            ioctl_works: true,
            stats: ZeroStats::default(),
        })
    }

    pub fn zero_stats(&self) -> ZeroStats {
        self.stats
    }

    fn zero(&mut self, start: u64, end: u64) -> Result<()> {
        if !self.zero_fill || start >= end {
            return Ok(());
        }
        match self.pending_zero {
            Some((s, e)) if e == start => self.pending_zero = Some((s, end)),
            Some((s, e)) => {
                self.pending_zero = Some((start, end));
                self.issue_zero(s, e)?;
            }
            None => self.pending_zero = Some((start, end)),
        }
        Ok(())
    }

    fn issue_zero(&mut self, start: u64, end: u64) -> Result<()> {
        let a = start.next_multiple_of(ZERO_ALIGN);
        let b = end - end % ZERO_ALIGN;
        if a < b && self.ioctl_works {
            let range: [u64; 2] = [a, b - a];
            // SAFETY: BLKZEROOUT reads two u64s from the pointer; the array outlives the
            // call and the fd is ours.
            let r = unsafe { libc::ioctl(self.file.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) };
            if r == 0 {
                self.stats.zeroed_by_ioctl += b - a;
                self.write_zeroes(start, a)?;
                return self.write_zeroes(b, end);
            }
            // Not every device (or kernel) takes it; plain writes always work.
            self.ioctl_works = false;
        }
        self.write_zeroes(start, end)
    }

    fn write_zeroes(&mut self, start: u64, end: u64) -> Result<()> {
        static ZEROES: [u8; 1 << 16] = [0; 1 << 16];
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(ZEROES.len() as u64) as usize;
            self.file
                .write_all_at(&ZEROES[..n], pos)
                .map_err(|e| Error::io(&self.name, e))?;
            pos += n as u64;
        }
        self.stats.zeroed_by_write += end.saturating_sub(start);
        Ok(())
    }
}

impl Sink for DeviceSink {
    fn write(&mut self, chunk: Chunk) -> Result<()> {
        let base = chunk.offset;
        self.zero(self.pos, base)?;
        let mut at = base;
        for &(s, e) in &chunk.nonzero {
            let data = chunk.data.get(s..e).unwrap_or(&[]);
            self.zero(at, base + s as u64)?;
            self.file
                .write_all_at(data, base + s as u64)
                .map_err(|err| Error::io(&self.name, err))?;
            at = base + e as u64;
        }
        let end = base + chunk.data.len() as u64;
        self.zero(at, end)?;
        self.pos = end;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.zero(self.pos, self.size)?;
        if let Some((s, e)) = self.pending_zero.take() {
            self.issue_zero(s, e)?;
        }
        self.pos = self.size;
        self.file.sync_all().map_err(|e| Error::io(&self.name, e))
    }
}
