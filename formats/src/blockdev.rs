//! The one abstraction every layer sees: bytes addressed by offset. `&self` everywhere,
//! because a FUSE mount and a parallel copy read from many threads at once; each
//! implementation keeps its caches behind its own locks.

use crate::error::{check_range, Error, Result};
use std::sync::Arc;

/// What lies at an offset of a device, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtentKind {
    /// Bytes are stored (in this image or one it falls through to): they must be read.
    Data,
    /// Known to read as zeroes (qcow2 zero cluster, VMDK ZERO extent, ...): nothing to read.
    Zero,
    /// Nothing is stored anywhere in the chain; reads as zeroes. Copies leave a hole.
    Unallocated,
}

impl ExtentKind {
    /// Whether a copy must read these bytes.
    pub fn has_data(self) -> bool {
        self == ExtentKind::Data
    }
}

/// A run starting at the queried offset: `len` bytes of one kind. Always `len >= 1` and never
/// past the device's end. Implementations may return shorter runs than the truth (callers
/// loop); they must never claim `Zero`/`Unallocated` for bytes that read as non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Extent {
    pub kind: ExtentKind,
    pub len: u64,
}

/// A virtual disk, a partition, a logical volume: bytes addressed by offset.
pub trait BlockDev: Send + Sync {
    /// Size in bytes.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`. Reading past the end is an `OutOfRange` error, never a
    /// short read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Writes `buf` at `offset`. Devices are read-only unless opened otherwise.
    fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<()> {
        Err(Error::ReadOnly {
            file: self.name().to_string(),
        })
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// What lies at `offset` (which must be `< len()`), and for how long.
    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(self.name(), offset, 1, self.len())?;
        Ok(Extent {
            kind: ExtentKind::Data,
            len: self.len() - offset,
        })
    }

    /// A short name for messages: the file name, or "disk.vmdk@2" for a partition.
    fn name(&self) -> &str;
}

macro_rules! forward_blockdev {
    ($t:ty) => {
        impl<T: BlockDev + ?Sized> BlockDev for $t {
            fn len(&self) -> u64 {
                (**self).len()
            }
            fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
                (**self).read_at(buf, offset)
            }
            fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
                (**self).write_at(buf, offset)
            }
            fn flush(&self) -> Result<()> {
                (**self).flush()
            }
            fn extent_at(&self, offset: u64) -> Result<Extent> {
                (**self).extent_at(offset)
            }
            fn name(&self) -> &str {
                (**self).name()
            }
        }
    };
}

forward_blockdev!(Arc<T>);
forward_blockdev!(Box<T>);
forward_blockdev!(&T);

/// Walks the extents of `dev` over `[start, end)`, merging neighbours of the same kind.
/// `map` and copies use it; bounded by the device's own extent granularity.
pub fn extents_in(dev: &dyn BlockDev, start: u64, end: u64) -> ExtentIter<'_> {
    ExtentIter {
        dev,
        pos: start,
        end: end.min(dev.len()),
    }
}

pub struct ExtentIter<'a> {
    dev: &'a dyn BlockDev,
    pos: u64,
    end: u64,
}

/// One merged run: `(offset, extent)`.
impl Iterator for ExtentIter<'_> {
    type Item = Result<(u64, Extent)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let start = self.pos;
        let mut merged: Option<Extent> = None;
        while self.pos < self.end {
            let e = match self.dev.extent_at(self.pos) {
                Ok(e) => e,
                Err(err) => {
                    self.pos = self.end;
                    return Some(Err(err));
                }
            };
            if e.len == 0 {
                self.pos = self.end;
                return Some(Err(Error::corrupt(
                    self.dev.name(),
                    "extent map",
                    start,
                    "an extent of zero length was reported",
                )));
            }
            let len = e.len.min(self.end - self.pos);
            match &mut merged {
                None => merged = Some(Extent { kind: e.kind, len }),
                Some(m) if m.kind == e.kind => m.len += len,
                Some(_) => break,
            }
            self.pos += len;
        }
        merged.map(|m| Ok((start, m)))
    }
}
