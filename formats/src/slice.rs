//! A window of another device: a partition of a disk, an extent inside a file, a disk
//! inside an OVA. Offsets are checked once here so layers above cannot reach outside it.

use crate::blockdev::{BlockDev, Extent};
use crate::error::{check_range, Error, Result};
use std::sync::Arc;

pub struct Slice {
    inner: Arc<dyn BlockDev>,
    start: u64,
    len: u64,
    name: String,
}

impl Slice {
    /// Fails if the window does not lie inside `inner`: a partition table that claims more
    /// than the disk holds is corrupt, and saying so beats reading zeroes.
    pub fn new(
        inner: Arc<dyn BlockDev>,
        start: u64,
        len: u64,
        name: impl Into<String>,
    ) -> Result<Self> {
        let name = name.into();
        match start.checked_add(len) {
            Some(end) if end <= inner.len() => {}
            _ => {
                return Err(Error::corrupt(
                    inner.name(),
                    "slice",
                    start,
                    format!(
                        "{name} ({len} bytes at {start:#x}) extends past the end of the device ({} bytes)",
                        inner.len()
                    ),
                ))
            }
        }
        Ok(Slice {
            inner,
            start,
            len,
            name,
        })
    }

    pub fn start(&self) -> u64 {
        self.start
    }
}

impl BlockDev for Slice {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.len)?;
        self.inner.read_at(buf, self.start + offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.len)?;
        self.inner.write_at(buf, self.start + offset)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(&self.name, offset, 1, self.len)?;
        let e = self.inner.extent_at(self.start + offset)?;
        Ok(Extent {
            kind: e.kind,
            len: e.len.clamp(1, self.len - offset),
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemDev;

    #[test]
    fn window_reads_and_bounds() {
        let data: Vec<u8> = (0..=255u8).collect();
        let dev: Arc<dyn BlockDev> = Arc::new(MemDev::new("m", data));
        let s = Slice::new(dev.clone(), 16, 32, "m@1").unwrap();
        let mut b = [0u8; 4];
        s.read_at(&mut b, 0).unwrap();
        assert_eq!(b, [16, 17, 18, 19]);
        assert!(s.read_at(&mut b, 30).is_err());
        assert!(Slice::new(dev, 250, 10, "bad").is_err());
    }
}
