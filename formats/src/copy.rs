//! The copy engine behind `convert`: reads a device's data extents on all cores and hands
//! them, in order, to an output. Holes are never read; zero runs found in data are skipped
//! by the output. Memory is bounded by the number of chunks in flight, whatever the size
//! of the disk, because a batch converts several guests at once on one machine.
//!
//! Shape: a planner walks the extent map and issues chunk jobs, gated by a pool of
//! tokens; workers read (decompressing inside the reader), find zero blocks and encode
//! (compress, for outputs that do); the calling thread reorders and writes, returning a
//! token per chunk written. Readers are `&self` + `Sync`, so workers share one reader.

use crate::blockdev::{extents_in, BlockDev};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};

/// Chunks are aligned to this, so every cluster and grain size up to 2 MiB sees whole
/// clusters in one chunk.
pub const CHUNK: u64 = 2 * 1024 * 1024;

/// Granularity of zero detection: the smallest hole an output will leave (qemu-img's
/// default `-S 4k` too).
pub const ZERO_BLOCK: usize = 4096;

/// A piece of the disk as workers prepared it.
pub struct Chunk {
    /// Offset of `data` in the virtual disk.
    pub offset: u64,
    pub data: PooledBuf,
    /// Ranges of `data` (start, end), at `ZERO_BLOCK` granularity, that hold non-zero bytes.
    pub nonzero: Vec<(usize, usize)>,
    /// What the output's encoder made of it on a worker thread (compressed clusters,
    /// grains, ...), in a shape only that output knows.
    pub encoded: Option<Box<dyn std::any::Any + Send>>,
}

/// Chunk buffers in circulation, reused instead of allocated per chunk: a fresh 2 MiB
/// buffer is a fresh mmap whose every page faults on first touch (qemu-img's copy takes
/// about 5k minor faults for 2 GiB, a buffer per chunk about 65k). At most `cap` idle
/// buffers are kept; more than that in flight are freed on return.
pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    cap: usize,
}

impl BufPool {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(BufPool {
            free: Mutex::new(Vec::with_capacity(cap)),
            cap,
        })
    }

    /// A buffer of `len` bytes, contents unspecified (callers overwrite it whole).
    pub fn get(self: &Arc<Self>, len: usize) -> PooledBuf {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut buf = reused.unwrap_or_default();
        // Within capacity `resize` only fills the grown tail, never reallocates.
        buf.resize(len, 0);
        PooledBuf {
            buf,
            pool: Some(self.clone()),
        }
    }
}

/// A chunk's bytes; goes back to its pool when dropped.
pub struct PooledBuf {
    buf: Vec<u8>,
    pool: Option<Arc<BufPool>>,
}

impl From<Vec<u8>> for PooledBuf {
    fn from(buf: Vec<u8>) -> Self {
        PooledBuf { buf, pool: None }
    }
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let mut free = pool.free.lock().unwrap_or_else(|p| p.into_inner());
            if free.len() < pool.cap {
                free.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

/// Work an output wants done on the worker threads, in any order.
pub trait Encoder: Send + Sync {
    fn encode(&self, chunk: &mut Chunk) -> Result<()>;
}

/// Where a copy goes. `write` is called from one thread, in order of offset, only for
/// chunks of data extents; everything not written is a hole / reads as zero.
pub trait Sink: Send {
    fn write(&mut self, chunk: Chunk) -> Result<()>;
    /// Called once after the last chunk: flush, fsync, make it appear under its name.
    fn finish(&mut self) -> Result<()>;
    fn encoder(&self) -> Option<Arc<dyn Encoder>> {
        None
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Bytes of data extents processed so far.
    pub done: u64,
    /// Bytes of data extents to process.
    pub total: u64,
    /// Virtual disk size.
    pub disk: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyStats {
    pub virtual_size: u64,
    /// Bytes read from data extents.
    pub data_bytes: u64,
    /// Bytes written out (non-zero blocks).
    pub written_bytes: u64,
}

pub struct CopyOptions {
    pub threads: usize,
    /// Chunks in flight at once; memory is about `inflight * CHUNK`.
    pub inflight: usize,
    /// Set from outside (Ctrl-C) to stop early; the copy then returns a Refused error.
    pub cancel: Arc<AtomicBool>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .min(32);
        CopyOptions {
            threads,
            inflight: (threads * 4).max(8),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Sums the bytes of data extents: the progress bar's total.
pub fn data_bytes(dev: &dyn BlockDev) -> Result<u64> {
    let mut total = 0u64;
    for run in extents_in(dev, 0, dev.len()) {
        let (_, e) = run?;
        if e.kind.has_data() {
            total += e.len;
        }
    }
    Ok(total)
}

/// Finds the `ZERO_BLOCK`-aligned runs of `data` that hold non-zero bytes.
pub fn nonzero_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, block) in data.chunks(ZERO_BLOCK).enumerate() {
        if is_zero(block) {
            continue;
        }
        let start = i * ZERO_BLOCK;
        let end = start + block.len();
        match runs.last_mut() {
            Some(r) if r.1 == start => r.1 = end,
            _ => runs.push((start, end)),
        }
    }
    runs
}

pub fn is_zero(b: &[u8]) -> bool {
    // Compare in 16-byte words: an order of magnitude faster than a byte loop.
    let (words, rest) = b.as_chunks::<16>();
    words.iter().all(|w| u128::from_ne_bytes(*w) == 0) && rest.iter().all(|&x| x == 0)
}

struct Job {
    seq: u64,
    offset: u64,
    len: usize,
}

/// Copies every data extent of `src` into `sink`, calling `progress` from the writing
/// thread. On error or cancel, `sink.finish` is not called (the sink's drop discards it).
pub fn copy(
    src: &dyn BlockDev,
    sink: &mut dyn Sink,
    opts: &CopyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CopyStats> {
    let total = data_bytes(src)?;
    let disk = src.len();
    let threads = opts.threads.max(1);
    let inflight = opts.inflight.max(threads);
    let encoder = sink.encoder();
    let cancel = &opts.cancel;
    let failed = AtomicBool::new(false);

    let (job_tx, job_rx) = sync_channel::<Job>(inflight);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = channel::<(u64, Result<Chunk>)>();
    let (tok_tx, tok_rx) = sync_channel::<()>(inflight);
    // Chunks in flight are bounded by the tokens; a few more finish writing while the
    // next are read.
    let pool = &BufPool::new(inflight + threads);
    for _ in 0..inflight {
        let _ = tok_tx.send(());
    }

    let mut stats = CopyStats {
        virtual_size: disk,
        ..Default::default()
    };
    let mut result: Result<()> = Ok(());

    std::thread::scope(|s| {
        // Planner: issue chunk jobs for data extents, one token each.
        let planner_done_tx = done_tx.clone();
        let failed_ref = &failed;
        s.spawn(move || {
            let mut seq = 0u64;
            for run in extents_in(src, 0, disk) {
                let (start, e) = match run {
                    Ok(r) => r,
                    Err(err) => {
                        let _ = planner_done_tx.send((seq, Err(err)));
                        return;
                    }
                };
                if !e.kind.has_data() {
                    continue;
                }
                let end = start + e.len;
                let mut pos = start;
                while pos < end {
                    if cancel.load(Ordering::Relaxed) || failed_ref.load(Ordering::Relaxed) {
                        return;
                    }
                    let next = ((pos / CHUNK) + 1) * CHUNK;
                    let len = (next.min(end) - pos) as usize;
                    if tok_rx.recv().is_err() || failed_ref.load(Ordering::Relaxed) {
                        return;
                    }
                    // Holding a token means fewer than `inflight` jobs are queued, so this
                    // send never blocks on workers that have stopped.
                    if job_tx
                        .send(Job {
                            seq,
                            offset: pos,
                            len,
                        })
                        .is_err()
                    {
                        return;
                    }
                    seq += 1;
                    pos += len as u64;
                }
            }
            // Tell the writer how many chunks there were.
            let _ = planner_done_tx.send((
                u64::MAX,
                Ok(Chunk {
                    offset: seq,
                    data: Vec::new().into(),
                    nonzero: Vec::new(),
                    encoded: None,
                }),
            ));
        });

        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            let encoder = encoder.clone();
            s.spawn(move || loop {
                let job = {
                    let rx = job_rx.lock().unwrap_or_else(|p| p.into_inner());
                    rx.recv()
                };
                let Ok(job) = job else { return };
                let r = read_chunk(src, &job, encoder.as_deref(), pool);
                if done_tx.send((job.seq, r)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);

        result = write_in_order(
            done_rx, sink, &tok_tx, cancel, &mut stats, total, disk, progress,
        );
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
            // Unblock the planner if it waits for a token.
            for _ in 0..inflight {
                let _ = tok_tx.try_send(());
            }
        }
        // Dropping the receiver side happens at scope end; workers see send errors.
    });
    result?;
    sink.finish()?;
    progress(Progress {
        done: total,
        total,
        disk,
    });
    Ok(stats)
}

fn read_chunk(
    src: &dyn BlockDev,
    job: &Job,
    encoder: Option<&dyn Encoder>,
    pool: &Arc<BufPool>,
) -> Result<Chunk> {
    let mut data = pool.get(job.len);
    src.read_at(&mut data, job.offset)?;
    let nonzero = nonzero_runs(&data);
    let mut chunk = Chunk {
        offset: job.offset,
        data,
        nonzero,
        encoded: None,
    };
    if let Some(enc) = encoder {
        enc.encode(&mut chunk)?;
    }
    Ok(chunk)
}

#[allow(clippy::too_many_arguments)]
fn write_in_order(
    done_rx: Receiver<(u64, Result<Chunk>)>,
    sink: &mut dyn Sink,
    tok_tx: &std::sync::mpsc::SyncSender<()>,
    cancel: &AtomicBool,
    stats: &mut CopyStats,
    total: u64,
    disk: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let mut pending: BTreeMap<u64, Chunk> = BTreeMap::new();
    let mut next = 0u64;
    let mut count: Option<u64> = None;
    loop {
        if count == Some(next) {
            return Ok(());
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::refused(
                "copy",
                "interrupted (a file output is removed; a device keeps what was written)",
            ));
        }
        let (seq, r) = match done_rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(m) => m,
            // Wake up now and then to notice a cancel.
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::io(
                    "copy",
                    std::io::Error::other("copy workers stopped before the last chunk"),
                ))
            }
        };
        let chunk = r?;
        if seq == u64::MAX {
            count = Some(chunk.offset);
            continue;
        }
        pending.insert(seq, chunk);
        while let Some(chunk) = pending.remove(&next) {
            let len = chunk.data.len() as u64;
            stats.data_bytes += len;
            stats.written_bytes += chunk
                .nonzero
                .iter()
                .map(|r| (r.1 - r.0) as u64)
                .sum::<u64>();
            sink.write(chunk)?;
            next += 1;
            let _ = tok_tx.try_send(());
            progress(Progress {
                done: stats.data_bytes,
                total,
                disk,
            });
        }
    }
}
