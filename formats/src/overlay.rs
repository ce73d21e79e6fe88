//! Copy-on-write over any device. Every guest rewrite lands here first, so the input image
//! is untouched until a caller chooses to write the changes out (convert), show them
//! (dry-run) or commit them (in-place). Changed blocks live in memory up to a bound, then
//! in an unlinked temporary file: a rewrite that replaces a 120 MiB initramfs must not
//! need 120 MiB of RAM per guest in a batch, nor leave a file behind if we are killed.

use crate::blockdev::{BlockDev, Extent, ExtentKind};
use crate::error::{check_range, Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

/// Granularity of copy-on-write. 64 KiB keeps the block map small for large rewrites while a
/// 3-line fstab edit still copies little.
pub const OVERLAY_BLOCK: u64 = 64 * 1024;

/// Default in-memory bound before spilling to a temporary file.
pub const DEFAULT_MEMORY_BOUND: u64 = 64 * 1024 * 1024;

enum Slot {
    Mem(Box<[u8]>),
    /// A block of a large write kept with its neighbours in one allocation (in huge
    /// pages where the kernel gives them): the run and the block's offset in it.
    Run(Arc<Vec<u8>>, usize),
    Spill(u64),
}

/// Writes of at least this many whole blocks are kept as one run: a 60 MiB file copied
/// into 960 separate 64 KiB blocks spends more time faulting in fresh pages than copying.
const RUN_MIN_BLOCKS: u64 = 32;

struct State {
    blocks: BTreeMap<u64, Slot>,
    mem_bytes: u64,
    spill: Option<File>,
    spill_len: u64,
}

pub struct Overlay {
    base: Arc<dyn BlockDev>,
    name: String,
    bound: u64,
    state: Mutex<State>,
}

impl Overlay {
    pub fn new(base: Arc<dyn BlockDev>) -> Self {
        Self::with_memory_bound(base, DEFAULT_MEMORY_BOUND)
    }

    pub fn with_memory_bound(base: Arc<dyn BlockDev>, bound: u64) -> Self {
        Overlay {
            name: format!("{} (overlay)", base.name()),
            base,
            bound,
            state: Mutex::new(State {
                blocks: BTreeMap::new(),
                mem_bytes: 0,
                spill: None,
                spill_len: 0,
            }),
        }
    }

    pub fn base(&self) -> &Arc<dyn BlockDev> {
        &self.base
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The changed byte ranges, merged, in order: what a commit must write or a diff show.
    pub fn changed_ranges(&self) -> Vec<(u64, u64)> {
        let st = self.lock();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &idx in st.blocks.keys() {
            let start = idx * OVERLAY_BLOCK;
            let len = OVERLAY_BLOCK.min(self.base.len() - start);
            match out.last_mut() {
                Some((s, l)) if *s + *l == start => *l += len,
                _ => out.push((start, len)),
            }
        }
        out
    }

    /// Whether the block holding `offset` is changed, and how many bytes from `offset`
    /// share that state (to the next change of state or the end). Lets a delta view
    /// (a thin overlay output) skip everything the rewrite did not touch.
    pub fn changed_run(&self, offset: u64) -> (bool, u64) {
        let len = self.base.len();
        if offset >= len {
            return (false, 0);
        }
        let idx = offset / OVERLAY_BLOCK;
        let st = self.lock();
        if st.blocks.contains_key(&idx) {
            let mut end = idx + 1;
            while st.blocks.contains_key(&end) {
                end += 1;
            }
            return (true, (end * OVERLAY_BLOCK).min(len) - offset);
        }
        let next = st
            .blocks
            .range(idx + 1..)
            .next()
            .map(|(k, _)| (*k * OVERLAY_BLOCK).min(len))
            .unwrap_or(len);
        (false, next - offset)
    }

    /// Bytes held in memory and in the spill file.
    pub fn usage(&self) -> (u64, u64) {
        let st = self.lock();
        (st.mem_bytes, st.spill_len)
    }

    /// Writes every changed block into the base device and forgets them.
    pub fn commit(&self) -> Result<()> {
        let ranges = self.changed_ranges();
        let mut buf = vec![0u8; OVERLAY_BLOCK as usize];
        for (start, len) in ranges {
            let mut pos = start;
            while pos < start + len {
                let n = OVERLAY_BLOCK.min(start + len - pos) as usize;
                // A block held in memory goes out as it is, without a copy.
                let st = self.lock();
                let held = match st.blocks.get(&(pos / OVERLAY_BLOCK)) {
                    Some(Slot::Mem(b)) => Some(&b[..]),
                    Some(Slot::Run(r, at)) => r.get(*at..at + n),
                    _ => None,
                };
                if let Some(b) = held.filter(|b| b.len() == n) {
                    self.base.write_at(b, pos)?;
                    pos += n as u64;
                    continue;
                }
                drop(st);
                self.read_at(&mut buf[..n], pos)?;
                self.base.write_at(&buf[..n], pos)?;
                pos += n as u64;
            }
        }
        self.base.flush()?;
        let mut st = self.lock();
        st.blocks.clear();
        st.mem_bytes = 0;
        Ok(())
    }

    fn block_len(&self, idx: u64) -> usize {
        let start = idx * OVERLAY_BLOCK;
        OVERLAY_BLOCK.min(self.base.len() - start) as usize
    }

    fn read_slot(&self, st: &State, slot: &Slot, buf: &mut [u8], within: usize) -> Result<()> {
        match slot {
            Slot::Mem(b) => {
                buf.copy_from_slice(&b[within..within + buf.len()]);
                Ok(())
            }
            Slot::Run(r, at) => {
                let lo = at + within;
                buf.copy_from_slice(&r[lo..lo + buf.len()]);
                Ok(())
            }
            Slot::Spill(off) => {
                let f = st.spill.as_ref().ok_or_else(|| {
                    Error::io(
                        &self.name,
                        std::io::Error::other("overlay spill file missing"),
                    )
                })?;
                f.read_exact_at(buf, off + within as u64)
                    .map_err(|e| Error::io(&self.name, e))
            }
        }
    }

    /// How many whole blocks from `idx` a write of `avail` bytes there may keep as one
    /// run: at least [`RUN_MIN_BLOCKS`], none of them spilled, all within the memory
    /// bound; else 0.
    fn run_blocks(&self, st: &State, idx: u64, avail: u64) -> u64 {
        let full = (self.base.len() / OVERLAY_BLOCK).saturating_sub(idx);
        let k = (avail / OVERLAY_BLOCK).min(full);
        if k < RUN_MIN_BLOCKS
            || st.mem_bytes + k * OVERLAY_BLOCK > self.bound
            || st
                .blocks
                .range(idx..idx + k)
                .any(|(_, s)| matches!(s, Slot::Spill(_)))
        {
            return 0;
        }
        k
    }

    fn store(&self, st: &mut State, idx: u64, data: Box<[u8]>) -> Result<()> {
        let len = data.len() as u64;
        if let Some(Slot::Spill(off)) = st.blocks.get(&idx) {
            let off = *off;
            let f = st.spill.as_ref().ok_or_else(|| {
                Error::io(
                    &self.name,
                    std::io::Error::other("overlay spill file missing"),
                )
            })?;
            return f
                .write_all_at(&data, off)
                .map_err(|e| Error::io(&self.name, e));
        }
        if let Some(Slot::Mem(_) | Slot::Run(..)) = st.blocks.get(&idx) {
            st.blocks.insert(idx, Slot::Mem(data));
            return Ok(());
        }
        if st.mem_bytes + len <= self.bound {
            st.mem_bytes += len;
            st.blocks.insert(idx, Slot::Mem(data));
            return Ok(());
        }
        if st.spill.is_none() {
            st.spill = Some(tempfile::tempfile().map_err(|e| Error::io(&self.name, e))?);
        }
        let off = st.spill_len;
        if let Some(f) = st.spill.as_ref() {
            f.write_all_at(&data, off)
                .map_err(|e| Error::io(&self.name, e))?;
        }
        st.spill_len += OVERLAY_BLOCK;
        st.blocks.insert(idx, Slot::Spill(off));
        Ok(())
    }
}

/// A copy of `data` in memory the kernel is asked to back with huge pages.
fn huge_copy(data: &[u8]) -> Vec<u8> {
    const HUGE: usize = 2 << 20;
    let mut v: Vec<u8> = Vec::with_capacity(data.len());
    let p = v.as_mut_ptr() as usize;
    let (start, end) = (p.div_ceil(HUGE) * HUGE, (p + data.len()) / HUGE * HUGE);
    if end > start {
        // SAFETY: advice over whole pages inside the vector's own, still empty,
        // allocation; it changes no contents and hands out no memory.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
    v.extend_from_slice(data);
    v
}

impl BlockDev for Overlay {
    fn len(&self) -> u64 {
        self.base.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let idx = pos / OVERLAY_BLOCK;
            let within = (pos % OVERLAY_BLOCK) as usize;
            let n = (OVERLAY_BLOCK as usize - within).min(buf.len() - done);
            let chunk = &mut buf[done..done + n];
            let st = self.lock();
            match st.blocks.get(&idx) {
                Some(slot) => self.read_slot(&st, slot, chunk, within)?,
                None => {
                    drop(st);
                    // Read the whole run of unchanged blocks from the base in one call.
                    let mut run = n;
                    {
                        let st = self.lock();
                        let next_changed = st
                            .blocks
                            .range(idx + 1..)
                            .next()
                            .map(|(k, _)| *k * OVERLAY_BLOCK)
                            .unwrap_or(u64::MAX);
                        let limit = next_changed
                            .saturating_sub(pos)
                            .min((buf.len() - done) as u64);
                        run = run.max(limit as usize);
                    }
                    self.base.read_at(&mut buf[done..done + run], pos)?;
                    done += run;
                    continue;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let idx = pos / OVERLAY_BLOCK;
            let within = (pos % OVERLAY_BLOCK) as usize;
            let n = (OVERLAY_BLOCK as usize - within).min(buf.len() - done);
            let blen = self.block_len(idx);
            let mut st = self.lock();
            if within == 0 {
                let k = self.run_blocks(&st, idx, (buf.len() - done) as u64);
                if k > 0 {
                    let len = (k * OVERLAY_BLOCK) as usize;
                    let run = Arc::new(huge_copy(&buf[done..done + len]));
                    for j in 0..k {
                        let slot = Slot::Run(run.clone(), (j * OVERLAY_BLOCK) as usize);
                        if st.blocks.insert(idx + j, slot).is_none() {
                            st.mem_bytes += OVERLAY_BLOCK;
                        }
                    }
                    done += len;
                    continue;
                }
            }
            if n == blen {
                // The whole block is new: no need to zero or read it first.
                let block: Box<[u8]> = buf[done..done + n].into();
                self.store(&mut st, idx, block)?;
                done += n;
                continue;
            }
            let mut block = vec![0u8; blen].into_boxed_slice();
            match st.blocks.get(&idx) {
                Some(slot) => self.read_slot(&st, slot, &mut block, 0)?,
                None if n < blen => {
                    drop(st);
                    self.base.read_at(&mut block, idx * OVERLAY_BLOCK)?;
                    st = self.lock();
                }
                None => {}
            }
            block[within..within + n].copy_from_slice(&buf[done..done + n]);
            self.store(&mut st, idx, block)?;
            done += n;
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(&self.name, offset, 1, self.len())?;
        let idx = offset / OVERLAY_BLOCK;
        let st = self.lock();
        if st.blocks.contains_key(&idx) {
            let mut end = (idx + 1) * OVERLAY_BLOCK;
            while st.blocks.contains_key(&(end / OVERLAY_BLOCK)) {
                end += OVERLAY_BLOCK;
            }
            return Ok(Extent {
                kind: ExtentKind::Data,
                len: end.min(self.len()) - offset,
            });
        }
        let next_changed = st
            .blocks
            .range(idx + 1..)
            .next()
            .map(|(k, _)| *k * OVERLAY_BLOCK)
            .unwrap_or(u64::MAX);
        drop(st);
        let e = self.base.extent_at(offset)?;
        Ok(Extent {
            kind: e.kind,
            len: e.len.min(next_changed - offset).max(1),
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

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn writes_stay_in_overlay_until_commit() {
        let base = Arc::new(MemDev::writable("base", pattern(300_000)));
        let ov = Overlay::new(base.clone());
        ov.write_at(b"hello", 65_534).unwrap();
        let mut b = [0u8; 5];
        ov.read_at(&mut b, 65_534).unwrap();
        assert_eq!(&b, b"hello");
        base.read_at(&mut b, 65_534).unwrap();
        assert_ne!(&b, b"hello");
        assert_eq!(ov.changed_ranges(), vec![(0, 2 * OVERLAY_BLOCK)]);
        // Unchanged bytes around the write still come from the base.
        let mut all = vec![0u8; 300_000];
        ov.read_at(&mut all, 0).unwrap();
        let mut expect = pattern(300_000);
        expect[65_534..65_539].copy_from_slice(b"hello");
        assert_eq!(all, expect);
        ov.commit().unwrap();
        base.read_at(&mut b, 65_534).unwrap();
        assert_eq!(&b, b"hello");
        assert!(ov.changed_ranges().is_empty());
    }

    #[test]
    fn large_writes_kept_as_runs_read_rewrite_and_commit() {
        let len = 80 * OVERLAY_BLOCK as usize + 77;
        let base = Arc::new(MemDev::writable("base", vec![1u8; len]));
        let ov = Overlay::new(base.clone());
        let data = pattern(len - 100);
        ov.write_at(&data, 100).unwrap();
        // A small write inside the run, and one across its end.
        ov.write_at(b"abc", 40 * OVERLAY_BLOCK + 10).unwrap();
        ov.write_at(b"tail", len as u64 - 4).unwrap();
        let mut expect = vec![1u8; len];
        expect[100..].copy_from_slice(&data);
        let at = 40 * OVERLAY_BLOCK as usize + 10;
        expect[at..at + 3].copy_from_slice(b"abc");
        expect[len - 4..].copy_from_slice(b"tail");
        let mut back = vec![0u8; len];
        ov.read_at(&mut back, 0).unwrap();
        assert!(back == expect);
        ov.commit().unwrap();
        base.read_at(&mut back, 0).unwrap();
        assert!(back == expect);
        // Past the memory bound, large writes spill as before.
        let small = Overlay::with_memory_bound(base.clone(), 8 * OVERLAY_BLOCK);
        small.write_at(&data, 0).unwrap();
        assert!(small.usage().1 > 0);
        small.read_at(&mut back[..data.len()], 0).unwrap();
        assert!(back[..data.len()] == data[..]);
    }

    #[test]
    fn spills_past_bound_and_reads_back() {
        let len = 20 * OVERLAY_BLOCK as usize + 123;
        let base = Arc::new(MemDev::new("base", vec![0u8; len]));
        let ov = Overlay::with_memory_bound(base, 2 * OVERLAY_BLOCK);
        let data = pattern(len);
        for chunk in (0..len).step_by(10_000) {
            let end = (chunk + 10_000).min(len);
            ov.write_at(&data[chunk..end], chunk as u64).unwrap();
        }
        let (mem, spill) = ov.usage();
        assert!(mem <= 2 * OVERLAY_BLOCK);
        assert!(spill > 0);
        let mut back = vec![0u8; len];
        ov.read_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
        // Rewrite a spilled block in place.
        ov.write_at(b"xyz", (len - 3) as u64).unwrap();
        let mut t = [0u8; 3];
        ov.read_at(&mut t, (len - 3) as u64).unwrap();
        assert_eq!(&t, b"xyz");
    }

    #[test]
    fn extents_report_changed_blocks_as_data() {
        let base = Arc::new(MemDev::new("base", vec![0u8; 10 * OVERLAY_BLOCK as usize]));
        let ov = Overlay::new(base);
        ov.write_at(&[1], 3 * OVERLAY_BLOCK + 5).unwrap();
        let e = ov.extent_at(0).unwrap();
        assert_eq!(e.kind, ExtentKind::Data);
        assert_eq!(e.len, 3 * OVERLAY_BLOCK);
        let e = ov.extent_at(3 * OVERLAY_BLOCK).unwrap();
        assert_eq!(e.len, OVERLAY_BLOCK);
    }
}
