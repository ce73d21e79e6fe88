//! The changes of an [`Overlay`] alone, as a device: its extents say "data" only for
//! changed blocks and "unallocated" everywhere else. Copying this view into a qcow2 whose backing
//! file is the original image gives a thin overlay holding only what a rewrite changed,
//! without reading (or comparing) the rest of a 100 GiB disk.

use crate::blockdev::{BlockDev, Extent, ExtentKind};
use crate::error::{check_range, Result};
use crate::overlay::Overlay;
use std::sync::Arc;

pub struct OverlayDelta {
    overlay: Arc<Overlay>,
    name: String,
}

impl OverlayDelta {
    pub fn new(overlay: Arc<Overlay>) -> Self {
        OverlayDelta {
            name: format!("{} (changes)", overlay.base().name()),
            overlay,
        }
    }
}

impl BlockDev for OverlayDelta {
    fn len(&self) -> u64 {
        self.overlay.len()
    }

    /// Reads see the whole rewritten disk, not zeroes where nothing changed: a consumer
    /// that reads whole chunks around a changed block (and compares them with the
    /// backing file) must find the unchanged bytes equal, not blanked.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.overlay.read_at(buf, offset)
    }

    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(&self.name, offset, 1, self.len())?;
        let (changed, run) = self.overlay.changed_run(offset);
        Ok(Extent {
            kind: if changed {
                ExtentKind::Data
            } else {
                ExtentKind::Unallocated
            },
            len: run.max(1),
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
    use crate::overlay::OVERLAY_BLOCK;

    #[test]
    fn only_changed_blocks_are_data() {
        let len = 10 * OVERLAY_BLOCK as usize + 100;
        let base = Arc::new(MemDev::new("base", vec![7u8; len]));
        let ov = Arc::new(Overlay::new(base));
        ov.write_at(b"abc", 3 * OVERLAY_BLOCK + 5).unwrap();
        ov.write_at(b"z", len as u64 - 1).unwrap();
        let d = OverlayDelta::new(ov.clone());
        let e = d.extent_at(0).unwrap();
        assert_eq!(
            (e.kind, e.len),
            (ExtentKind::Unallocated, 3 * OVERLAY_BLOCK)
        );
        let e = d.extent_at(3 * OVERLAY_BLOCK).unwrap();
        assert_eq!((e.kind, e.len), (ExtentKind::Data, OVERLAY_BLOCK));
        let e = d.extent_at(4 * OVERLAY_BLOCK).unwrap();
        assert_eq!(
            (e.kind, e.len),
            (ExtentKind::Unallocated, 6 * OVERLAY_BLOCK)
        );
        let e = d.extent_at(10 * OVERLAY_BLOCK + 1).unwrap();
        assert_eq!((e.kind, e.len), (ExtentKind::Data, 99));
        let mut b = vec![0u8; 8];
        d.read_at(&mut b, 3 * OVERLAY_BLOCK + 4).unwrap();
        assert_eq!(&b, &[7, b'a', b'b', b'c', 7, 7, 7, 7]);
        d.read_at(&mut b, 0).unwrap();
        assert_eq!(b, [7u8; 8]);
    }
}
