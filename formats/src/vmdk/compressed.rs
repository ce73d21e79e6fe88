//! Compressed grains of stream-optimized extents: a marker (the grain's sector number and
//! the compressed size) followed by a zlib stream. Readers often ask for a grain piece by
//! piece (4 KiB FUSE reads inside a 64 KiB grain), so the last few inflated grains are kept.
//! Inflating happens outside the cache lock, so threads decompress in parallel.

use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

const CACHED_GRAINS: usize = 8;
/// Grains larger than this are not kept, so the cache stays within 8 MiB.
const MAX_CACHED_GRAIN_BYTES: u64 = 1 << 20;

thread_local! {
    static INFLATER: RefCell<Option<libdeflater::Decompressor>> = const { RefCell::new(None) };
}

/// (extent key, byte offset) of each recent grain, and its bytes.
type Recent = VecDeque<(usize, u64, Arc<Vec<u8>>)>;

#[derive(Default)]
pub struct GrainCache {
    recent: Mutex<Recent>,
}

impl GrainCache {
    /// The inflated grain at `at` in `file`, `grain_bytes` long (zero-padded when the
    /// stream's last grain is shorter).
    /// `key` tells extents apart in the shared cache.
    pub fn grain(
        &self,
        key: usize,
        file: &dyn BlockDev,
        at: u64,
        grain_bytes: u64,
        markers: bool,
    ) -> Result<Arc<Vec<u8>>> {
        {
            let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, _, g)) = r.iter().find(|(k, o, _)| *k == key && *o == at) {
                return Ok(g.clone());
            }
        }
        let g = Arc::new(inflate(file, at, grain_bytes, markers)?);
        if grain_bytes > MAX_CACHED_GRAIN_BYTES {
            return Ok(g);
        }
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() >= CACHED_GRAINS {
            r.pop_front();
        }
        r.push_back((key, at, g.clone()));
        Ok(g)
    }
}

fn inflate(file: &dyn BlockDev, at: u64, grain_bytes: u64, markers: bool) -> Result<Vec<u8>> {
    let name = file.name();
    let len = file.len();
    let bad = |d: String| Error::corrupt(name, "vmdk compressed grain", at, d);
    // Deflate can grow incompressible data slightly; twice the grain is far beyond that.
    let bound = grain_bytes * 2 + 1024;
    let (data_at, size) = if markers {
        let mut m = [0u8; 12];
        if at.checked_add(12).is_none_or(|e| e > len) {
            return Err(bad("the grain marker lies past the end of the file".into()));
        }
        file.read_at(&mut m, at)?;
        let size = u64::from(u32::from_le_bytes([m[8], m[9], m[10], m[11]]));
        if size == 0 || size > bound {
            return Err(bad(format!(
                "the marker gives a compressed size of {size} bytes; a {grain_bytes}-byte grain compresses to at most {bound}"
            )));
        }
        if (at + 12).checked_add(size).is_none_or(|e| e > len) {
            return Err(bad(format!(
                "the {size} compressed bytes run past the end of the file ({len} bytes)"
            )));
        }
        (at + 12, size)
    } else {
        (at, bound.min(len.saturating_sub(at)))
    };
    let mut src = vec![0u8; size as usize];
    file.read_at(&mut src, data_at)?;
    let mut out = vec![0u8; grain_bytes as usize];
    let n = INFLATER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = slot.get_or_insert_with(libdeflater::Decompressor::new);
        d.zlib_decompress(&src, &mut out)
    });
    // A stream's last grain may stop short of the sector-rounded capacity: the rest of the
    // buffer stays zero, which is what the disk holds there.
    n.map_err(|e| bad(format!("the zlib stream does not inflate: {e}")))?;
    Ok(out)
}
