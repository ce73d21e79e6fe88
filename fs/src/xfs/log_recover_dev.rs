//! The filesystem as it is after log recovery, without writing it: the blocks recovery
//! rewrote, held in memory by 512-byte sector (the log's unit of address), over the
//! device as it stands. The input image is never written; readers of the filesystem
//! read through this device instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use transplant_formats::error::check_range;
use transplant_formats::{BlockDev, Extent, ExtentKind};

const SECTOR: u64 = 512;

pub(crate) struct ReplayDev {
    inner: Arc<dyn BlockDev>,
    sectors: BTreeMap<u64, Box<[u8]>>,
}

impl ReplayDev {
    pub fn new(inner: Arc<dyn BlockDev>) -> ReplayDev {
        ReplayDev {
            inner,
            sectors: BTreeMap::new(),
        }
    }

    /// The sectors recovery changed, in order: what a writer must put on the device.
    pub fn changed(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.sectors.iter().map(|(&s, b)| (s * SECTOR, &b[..]))
    }

    /// How many sectors recovery changed.
    #[cfg(test)]
    pub fn changed_sectors(&self) -> usize {
        self.sectors.len()
    }

    /// Replaces whole sectors from `offset` (a multiple of 512; `data` whole sectors).
    pub fn put(&mut self, offset: u64, data: &[u8]) -> crate::error::Result<()> {
        check_range(
            self.inner.name(),
            offset,
            data.len() as u64,
            self.inner.len(),
        )?;
        if !offset.is_multiple_of(SECTOR) || !(data.len() as u64).is_multiple_of(SECTOR) {
            return Err(crate::error::Error::Corrupt {
                dev: self.inner.name().to_string(),
                detail: format!(
                    "XFS log recovery: a write of {} bytes at {offset:#x} is not sector-aligned",
                    data.len()
                ),
            });
        }
        for (i, chunk) in data.chunks(SECTOR as usize).enumerate() {
            self.sectors.insert(
                offset / SECTOR + i as u64,
                chunk.to_vec().into_boxed_slice(),
            );
        }
        Ok(())
    }
}

impl BlockDev for ReplayDev {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> transplant_formats::Result<()> {
        self.inner.read_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        let first = offset / SECTOR;
        let last = end.div_ceil(SECTOR);
        for (&s, data) in self.sectors.range(first..last) {
            let start = s * SECTOR;
            let lo = start.max(offset);
            let hi = (start + SECTOR).min(end);
            if let (Some(dst), Some(src)) = (
                buf.get_mut((lo - offset) as usize..(hi - offset) as usize),
                data.get((lo - start) as usize..(hi - start) as usize),
            ) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> transplant_formats::Result<Extent> {
        let s = offset / SECTOR;
        if self.sectors.contains_key(&s) {
            let mut n = s;
            while self.sectors.contains_key(&(n + 1)) {
                n += 1;
            }
            let end = ((n + 1) * SECTOR).min(self.len());
            return Ok(Extent {
                kind: ExtentKind::Data,
                len: end - offset,
            });
        }
        let mut e = self.inner.extent_at(offset)?;
        if let Some((&next, _)) = self.sectors.range(s..).next() {
            e.len = e.len.min(next * SECTOR - offset);
        }
        Ok(e)
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transplant_formats::MemDev;

    #[test]
    fn reads_see_replayed_sectors_over_the_device() {
        let inner: Arc<dyn BlockDev> = Arc::new(MemDev::new("m", vec![1u8; 4096]));
        let mut d = ReplayDev::new(inner);
        d.put(1024, &[9u8; 512]).unwrap();
        assert!(d.put(1000, &[9u8; 512]).is_err());
        assert!(d.put(4096, &[9u8; 512]).is_err());
        let mut b = vec![0u8; 2048];
        d.read_at(&mut b, 100).unwrap();
        assert_eq!(b[1024 - 100 - 1], 1);
        assert_eq!(b[1024 - 100], 9);
        assert_eq!(b[1536 - 100 - 1], 9);
        assert_eq!(b[1536 - 100], 1);
        let e = d.extent_at(0).unwrap();
        assert_eq!(e.len, 1024);
        let e = d.extent_at(1100).unwrap();
        assert_eq!((e.kind, e.len), (ExtentKind::Data, 436));
        assert_eq!(d.changed_sectors(), 1);
    }
}
