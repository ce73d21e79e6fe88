//! Shared body of the reader fuzz targets: open the bytes as an image (detached, so no
//! other file can be named), describe it, walk its extent map and read what it says holds
//! data, all within bounds. Any panic, hang or unbounded allocation is a finding.

use std::path::Path;
use std::sync::Arc;
use transplant_formats::{BlockDev, Image, MemDev, OpenCtx, Result};

pub type OpenFn = fn(Arc<dyn BlockDev>, &Path, &OpenCtx) -> Result<Arc<dyn Image>>;

pub fn exercise(data: &[u8], open: OpenFn) {
    let dev: Arc<dyn BlockDev> = Arc::new(MemDev::new("fuzz", data.to_vec()));
    let Ok(img) = open(dev, Path::new("fuzz.img"), &OpenCtx::detached()) else {
        return;
    };
    let _ = img.info();
    let len = img.len();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    let mut steps = 0;
    // Bounded walk: a hostile image may claim exabytes; 4096 extents is plenty to reach
    // every structure of a fuzz-sized input.
    while pos < len && steps < 4096 {
        steps += 1;
        let Ok(e) = img.extent_at(pos) else { break };
        if e.len == 0 {
            panic!("zero-length extent at {pos}");
        }
        if e.kind.has_data() {
            let n = e.len.min(buf.len() as u64) as usize;
            let _ = img.read_at(&mut buf[..n], pos);
        }
        pos = pos.saturating_add(e.len);
    }
    // Reads at both ends and an unaligned one.
    let _ = img.read_at(&mut buf[..512.min(len as usize)], 0);
    if len > 4096 {
        let _ = img.read_at(&mut buf[..4096], len - 4096);
        let _ = img.read_at(&mut buf[..1000], len / 2 + 7);
    }
}
