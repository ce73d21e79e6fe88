//! Byte-for-byte comparison of two devices (`convert --verify`): the output read back
//! through its own reader against the input. Chunks are compared on all cores; a chunk
//! both extent maps call holes is not read, since both readers promise zeroes there.
//! The answer is the first differing offset, found exactly even though chunks finish
//! out of order: a mismatch lowers a shared bound, and chunks past it are skipped.

use crate::blockdev::{extents_in, BlockDev};
use crate::copy::{CopyOptions, CHUNK, ZERO_BLOCK};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Compare only where the input holds non-zero blocks (`ZERO_BLOCK` granularity):
    /// for outputs that keep old bytes elsewhere (a block device written without
    /// zero-fill).
    pub input_data_only: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyStats {
    /// Bytes read from each side.
    pub compared_bytes: u64,
    /// Bytes both sides called holes, not read.
    pub skipped_bytes: u64,
}

/// Whether `[start, end)` holds no data extent.
fn all_holes(dev: &dyn BlockDev, start: u64, end: u64) -> Result<bool> {
    for run in extents_in(dev, start, end) {
        if run?.1.kind.has_data() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Compares `input` and `output` (which must have the same length, or `output` may be
/// longer: a device larger than the disk); returns the offset of the first differing
/// byte, or `None` if they agree. Cancels like a copy.
pub fn compare(
    input: &dyn BlockDev,
    output: &dyn BlockDev,
    copts: &CopyOptions,
    vopts: &VerifyOptions,
) -> Result<(Option<u64>, VerifyStats)> {
    let len = input.len();
    if output.len() < len {
        return Ok((Some(output.len()), VerifyStats::default()));
    }
    let chunks = len.div_ceil(CHUNK);
    let next = AtomicU64::new(0);
    let first_diff = AtomicU64::new(u64::MAX);
    let compared = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let error: Mutex<Option<Error>> = Mutex::new(None);
    let threads = copts.threads.max(1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut a = vec![0u8; CHUNK as usize];
                let mut b = vec![0u8; CHUNK as usize];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks || copts.cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let start = i * CHUNK;
                    if start >= first_diff.load(Ordering::Relaxed) {
                        return;
                    }
                    let end = (start + CHUNK).min(len);
                    let n = (end - start) as usize;
                    match diff_chunk(input, output, start, end, &mut a[..n], &mut b[..n], vopts) {
                        Ok(Some((d, read))) => {
                            first_diff.fetch_min(d, Ordering::Relaxed);
                            compared.fetch_add(read, Ordering::Relaxed);
                        }
                        Ok(None) => {
                            skipped.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            let mut g = error.lock().unwrap_or_else(|p| p.into_inner());
                            g.get_or_insert(e);
                            first_diff.store(0, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    if copts.cancel.load(Ordering::Relaxed) {
        return Err(Error::refused("verify", "interrupted"));
    }
    let stats = VerifyStats {
        compared_bytes: compared.load(Ordering::Relaxed),
        skipped_bytes: skipped.load(Ordering::Relaxed),
    };
    let d = first_diff.load(Ordering::Relaxed);
    Ok(((d != u64::MAX).then_some(d), stats))
}

/// `Ok(None)`: skipped as holes on both sides. `Ok(Some((offset, bytes read)))` with
/// `offset == u64::MAX` when equal.
fn diff_chunk(
    input: &dyn BlockDev,
    output: &dyn BlockDev,
    start: u64,
    end: u64,
    a: &mut [u8],
    b: &mut [u8],
    vopts: &VerifyOptions,
) -> Result<Option<(u64, u64)>> {
    let in_holes = all_holes(input, start, end)?;
    if in_holes && (vopts.input_data_only || all_holes(output, start, end)?) {
        return Ok(None);
    }
    input.read_at(a, start)?;
    output.read_at(b, start)?;
    let read = a.len() as u64;
    for (k, (x, y)) in a.chunks(ZERO_BLOCK).zip(b.chunks(ZERO_BLOCK)).enumerate() {
        if x == y || (vopts.input_data_only && crate::copy::is_zero(x)) {
            continue;
        }
        let within = x.iter().zip(y).position(|(p, q)| p != q).unwrap_or(0);
        return Ok(Some((start + (k * ZERO_BLOCK + within) as u64, read)));
    }
    Ok(Some((u64::MAX, read)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemDev;

    #[test]
    fn finds_the_first_difference() {
        let n = 9 * CHUNK as usize + 77;
        let a: Vec<u8> = (0..n).map(|i| (i % 249) as u8).collect();
        let opts = CopyOptions::default();
        let same = compare(
            &MemDev::new("a", a.clone()),
            &MemDev::new("b", a.clone()),
            &opts,
            &VerifyOptions::default(),
        )
        .unwrap();
        assert_eq!(same.0, None);
        let mut b = a.clone();
        b[n - 5] ^= 1;
        b[3 * CHUNK as usize + 4099] ^= 1;
        b[7 * CHUNK as usize] ^= 1;
        let (d, _) = compare(
            &MemDev::new("a", a.clone()),
            &MemDev::new("b", b),
            &opts,
            &VerifyOptions::default(),
        )
        .unwrap();
        assert_eq!(d, Some(3 * CHUNK + 4099));
        // Only the input's data blocks: old bytes behind zero blocks do not count.
        let mut z = a.clone();
        z[..8192].fill(0);
        let mut old = z.clone();
        old[100] = 1;
        let (d, _) = compare(
            &MemDev::new("a", z.clone()),
            &MemDev::new("b", old.clone()),
            &opts,
            &VerifyOptions {
                input_data_only: true,
            },
        )
        .unwrap();
        assert_eq!(d, None);
        let (d, _) = compare(
            &MemDev::new("a", z),
            &MemDev::new("b", old),
            &opts,
            &VerifyOptions::default(),
        )
        .unwrap();
        assert_eq!(d, Some(100));
    }
}
