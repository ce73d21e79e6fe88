//! qcow2 version 3 output, streamed: guest clusters are appended to the file in the order
//! the copy delivers them, each L2 table right after its last cluster, then the L1 table
//! and the refcount structures at the end, and the header (cluster 0, left blank until
//! then) last, before the fsync and rename. Nothing is ever rewritten, so the output is
//! written once, sequentially.
//!
//! Memory: one L2 table (at most one cluster), the L1 table (8 bytes per L2 table), and
//! two bytes of refcount per host cluster written, i.e. proportional to the data stored,
//! not to the virtual size. Data is never buffered beyond one partial cluster and a small
//! write-combining buffer.
//!
//! Compressed clusters (zlib = raw deflate, or zstd) are packed byte after byte, across
//! host cluster boundaries as qemu does; every host cluster a compressed stream touches
//! holds one reference per stream touching it, so `qemu-img check` finds neither leaks
//! nor errors. An overlay (`backing_file` set) stores only what differs from the backing
//! image given with [`Qcow2Sink::with_backing_dev`].
//!
//! Writing into an existing image (`--in-place`) is [`inplace`]: a writable `BlockDev`.

mod encode;
mod header;
pub mod inplace;
mod l2;
mod refcount;

use super::staged::StagedFile;
use super::writepool::{WritePool, WRITE_THREADS};
use crate::blockdev::{extents_in, BlockDev};
use crate::copy::{Chunk, Encoder, Sink};
use crate::error::{Error, Result};
use encode::{ClusterEncoder, Encoded, Item};
use l2::L2Table;
use refcount::Refcounts;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// How data clusters are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Qcow2Compression {
    #[default]
    None,
    /// Raw deflate streams (qcow2's compression type 0).
    Zlib,
    /// zstd frames (compression type 1, incompatible feature bit 3).
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Options {
    /// A power of two from 512 bytes to 2 MiB.
    pub cluster_size: u64,
    pub compression: Qcow2Compression,
    /// The backing file's name as it goes into the header (relative names are resolved
    /// from the image's folder by readers). Makes the output an overlay.
    pub backing_file: Option<String>,
    /// The backing file's format ("raw", "qcow2", ...), written as a header extension so
    /// readers do not probe it.
    pub backing_format: Option<String>,
}

impl Default for Qcow2Options {
    fn default() -> Self {
        Qcow2Options {
            cluster_size: 64 * 1024,
            compression: Qcow2Compression::None,
            backing_file: None,
            backing_format: None,
        }
    }
}

/// Writes-combining append buffer: every write of this sink goes to the end of the file.
struct Appender {
    file: File,
    buf: Vec<u8>,
    start: u64,
    /// Full buffers are copied into the file by these threads, in any order.
    pool: WritePool,
}

const APPEND_BUF: usize = 4 << 20;

impl Appender {
    fn pos(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    fn push(&mut self, name: &str, b: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= APPEND_BUF {
            self.flush(name)?;
        }
        Ok(())
    }

    fn align(&mut self, name: &str, cs: u64) -> Result<()> {
        let pad = self.pos().next_multiple_of(cs) - self.pos();
        self.buf.resize(self.buf.len() + pad as usize, 0);
        self.push(name, &[])
    }

    fn flush(&mut self, _name: &str) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, self.pool.spare(APPEND_BUF + (2 << 20)));
        let len = full.len() as u64;
        self.pool.write_buf(full, self.start)?;
        self.start += len;
        Ok(())
    }
}

pub struct Qcow2Sink {
    out: StagedFile,
    name: String,
    opts: Qcow2Options,
    cluster_bits: u32,
    cs: u64,
    virtual_size: u64,
    l2_entries: u64,
    enc: Arc<ClusterEncoder>,
    app: Appender,
    refs: Refcounts,
    l1: Vec<u64>,
    l2: Option<L2Table>,
    /// Guest clusters below this one are decided.
    done: u64,
    /// A guest cluster cut by a chunk edge, being assembled: (cluster, bytes).
    pending: Option<(u64, Vec<u8>)>,
    /// Clusters without input data fall through to the backing file (a delta input).
    gaps_unchanged: bool,
}

impl Qcow2Sink {
    pub fn create(
        dest: &Path,
        virtual_size: u64,
        opts: &Qcow2Options,
        overwrite: bool,
    ) -> Result<Self> {
        let name = dest.display().to_string();
        // qemu counts a qcow2 disk in whole 512-byte sectors and drops a partial one, so
        // the disk is rounded up (as `qemu-img convert` does) and the tail reads as zeroes.
        let virtual_size = virtual_size.next_multiple_of(512);
        let cs = opts.cluster_size;
        if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
            return Err(Error::refused(
                &name,
                format!(
                    "qcow2 cluster size must be a power of two from 512 bytes to 2 MiB, not {cs}"
                ),
            ));
        }
        if opts.backing_file.is_none() && opts.backing_format.is_some() {
            return Err(Error::refused(
                &name,
                "a backing format needs a backing file",
            ));
        }
        let cluster_bits = cs.trailing_zeros();
        let l2_entries = cs / 8;
        let l1_size = virtual_size.div_ceil(cs * l2_entries);
        if l1_size > (32 << 20) / 8 || virtual_size > 1 << 56 {
            return Err(Error::unsupported(
                &name,
                "a qcow2 disk this large for this cluster size (the L1 table would exceed 32 MiB)",
            ));
        }
        // Check now that the header will fit, so a long copy does not fail at the end.
        header::encode(
            &name,
            &Self::header_fields(opts, cluster_bits, virtual_size, 0, 0, 0, 0),
        )?;
        let out = StagedFile::create(dest, overwrite)?;
        let file = out.file()?.try_clone().map_err(|e| Error::io(&name, e))?;
        let pool = WritePool::new(&file, &name, WRITE_THREADS)?;
        let mut refs = Refcounts::default();
        refs.add(&name, 0)?;
        let enc = Arc::new(ClusterEncoder {
            cluster_size: cs,
            virtual_size,
            compression: opts.compression,
            overlay: opts.backing_file.is_some(),
            backing: None,
        });
        Ok(Qcow2Sink {
            out,
            name,
            opts: opts.clone(),
            cluster_bits,
            cs,
            virtual_size,
            l2_entries,
            enc,
            app: Appender {
                pool,
                file,
                buf: Vec::with_capacity(APPEND_BUF + (2 << 20)),
                start: cs,
            },
            refs,
            l1: vec![0; l1_size as usize],
            l2: None,
            done: 0,
            pending: None,
            gaps_unchanged: false,
        })
    }

    /// For an input that holds only changes over the backing image (an overlay's delta):
    /// clusters that receive no data are left to fall through to the backing file, instead
    /// of being marked zero as a complete input's holes must be.
    pub fn with_unchanged_gaps(mut self) -> Self {
        self.gaps_unchanged = true;
        self
    }

    /// The backing image's contents, for an overlay: clusters equal to it are not stored.
    /// Without it an overlay stores every data cluster and marks every other one zero.
    pub fn with_backing_dev(mut self, dev: Arc<dyn BlockDev>) -> Self {
        self.enc = Arc::new(ClusterEncoder {
            cluster_size: self.cs,
            virtual_size: self.virtual_size,
            compression: self.opts.compression,
            overlay: self.opts.backing_file.is_some(),
            backing: Some(dev),
        });
        self
    }

    #[allow(clippy::too_many_arguments)]
    fn header_fields(
        opts: &Qcow2Options,
        cluster_bits: u32,
        virtual_size: u64,
        l1_size: u32,
        l1_offset: u64,
        rt_offset: u64,
        rt_clusters: u32,
    ) -> header::HeaderFields<'_> {
        header::HeaderFields {
            cluster_bits,
            virtual_size,
            l1_size,
            l1_offset,
            refcount_table_offset: rt_offset,
            refcount_table_clusters: rt_clusters,
            zstd: opts.compression == Qcow2Compression::Zstd,
            backing_file: opts.backing_file.as_deref(),
            backing_format: opts.backing_format.as_deref(),
        }
    }

    fn clusters(&self) -> u64 {
        self.virtual_size.div_ceil(self.cs)
    }

    /// Sets the L2 entry of guest cluster `c`, writing out the previous table if `c`
    /// lies past it.
    fn set_l2(&mut self, c: u64, entry: u64) -> Result<()> {
        let idx = c / self.l2_entries;
        if self.l2.as_ref().is_some_and(|t| t.index != idx) {
            self.flush_l2()?;
        }
        let entries = self.l2_entries;
        let t = self.l2.get_or_insert_with(|| L2Table::new(idx, entries));
        t.entries[(c % entries) as usize] = entry;
        Ok(())
    }

    fn flush_l2(&mut self) -> Result<()> {
        let Some(t) = self.l2.take() else {
            return Ok(());
        };
        if t.is_empty() {
            return Ok(());
        }
        let off = self.alloc_clusters(1)?;
        self.app.push(&self.name, &t.bytes())?;
        self.l1[t.index as usize] = off | l2::COPIED;
        Ok(())
    }

    /// Starts `n` new host clusters at the end of the file (counted once each); returns
    /// the offset of the first.
    fn alloc_clusters(&mut self, n: u64) -> Result<u64> {
        self.app.align(&self.name, self.cs)?;
        let off = self.app.pos();
        self.refs.add_range(&self.name, off / self.cs, n)?;
        Ok(off)
    }

    /// Stores guest cluster `c` as decided; `data` is its bytes (short for the last one).
    fn emit(&mut self, c: u64, item: Item, data: &[u8]) -> Result<()> {
        match item {
            Item::Unallocated => Ok(()),
            Item::Zero => self.set_l2(c, l2::ZERO),
            Item::Raw => {
                // The table goes first, so the data cluster's offset is known after it.
                self.set_l2(c, 0)?;
                let off = self.alloc_clusters(1)?;
                self.app.push(&self.name, data)?;
                if (data.len() as u64) < self.cs {
                    self.app.align(&self.name, self.cs)?;
                }
                self.set_l2(c, off | l2::COPIED)
            }
            Item::Compressed(z) => {
                self.set_l2(c, 0)?;
                let off = self.app.pos();
                let len = z.len() as u64;
                let entry = l2::compressed_entry(&self.name, self.cluster_bits, off, len)?;
                let (first, last) = (off / self.cs, (off + len - 1) / self.cs);
                self.refs.add_range(&self.name, first, last - first + 1)?;
                self.app.push(&self.name, &z)?;
                self.set_l2(c, entry)
            }
        }
    }

    /// Guest clusters `[from, to)` received no data at all.
    fn gap(&mut self, from: u64, to: u64) -> Result<()> {
        if from >= to || !self.enc.overlay || self.gaps_unchanged {
            return Ok(());
        }
        match self.enc.backing.clone() {
            // Where the backing has data, the overlay must say "zero".
            Some(b) => {
                let start = from * self.cs;
                let end = (to * self.cs).min(b.len());
                if start >= end {
                    return Ok(());
                }
                for run in extents_in(&*b, start, end) {
                    let (s, e) = run?;
                    if e.kind.has_data() {
                        for c in s / self.cs..(s + e.len).div_ceil(self.cs) {
                            self.set_l2(c, l2::ZERO)?;
                        }
                    }
                }
                Ok(())
            }
            None => {
                for c in from..to {
                    self.set_l2(c, l2::ZERO)?;
                }
                Ok(())
            }
        }
    }

    fn flush_pending(&mut self) -> Result<()> {
        if let Some((c, buf)) = self.pending.take() {
            let item = self.enc.classify_at(c, &buf)?;
            self.emit(c, item, &buf)?;
            self.done = c + 1;
        }
        Ok(())
    }

    fn write_chunk(&mut self, mut chunk: Chunk) -> Result<()> {
        let start = chunk.offset;
        let end = start + chunk.data.len() as u64;
        if end <= start {
            return Ok(());
        }
        if end > self.virtual_size || start / self.cs < self.done {
            return Err(Error::io(
                &self.name,
                std::io::Error::other("qcow2 output: chunks out of order or past the disk's end"),
            ));
        }
        let cs = self.cs;
        let first = start / cs;
        if self.pending.as_ref().is_some_and(|p| p.0 < first) {
            self.flush_pending()?;
        }
        if self.pending.is_none() {
            self.gap(self.done, first)?;
            self.done = first;
        }
        let encoded = match chunk.encoded.take().map(|b| b.downcast::<Encoded>()) {
            Some(Ok(e)) => Some(*e),
            _ => None,
        };
        let mut items = encoded.map(|e| (e.first, e.items.into_iter()));
        let mut c = first;
        while c * cs < end {
            let (cstart, cend) = self.enc.bounds(c);
            let whole = cstart >= start && cend <= end;
            if whole {
                let item = match &mut items {
                    Some((f, it)) if c >= *f => it.next(),
                    _ => None,
                };
                let data = &chunk.data[(cstart - start) as usize..(cend - start) as usize];
                let item = match item {
                    Some(i) => i,
                    None => self.enc.classify_at(c, data)?,
                };
                self.emit(c, item, data)?;
                self.done = c + 1;
            } else {
                let (_, buf) = self
                    .pending
                    .get_or_insert_with(|| (c, vec![0u8; (cend - cstart) as usize]));
                let s = start.max(cstart);
                let e = end.min(cend);
                buf[(s - cstart) as usize..(e - cstart) as usize]
                    .copy_from_slice(&chunk.data[(s - start) as usize..(e - start) as usize]);
                if e == cend {
                    self.flush_pending()?;
                }
            }
            c += 1;
        }
        Ok(())
    }

    fn finish_image(&mut self) -> Result<()> {
        self.flush_pending()?;
        self.gap(self.done, self.clusters())?;
        self.done = self.clusters();
        self.flush_l2()?;
        let cs = self.cs;
        let l1_bytes: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        // An empty disk has an empty L1 table: it takes no cluster (qemu counts none).
        let l1_clusters = (l1_bytes.len() as u64).div_ceil(cs);
        let l1_offset = self.alloc_clusters(l1_clusters)?;
        self.app.push(&self.name, &l1_bytes)?;
        self.app.align(&self.name, cs)?;
        let layout = self.refs.layout(&self.name, self.app.pos() / cs, cs)?;
        debug_assert_eq!(layout.table_cluster * cs, self.app.pos());
        let table = self.refs.table_bytes(&layout, cs);
        self.app.push(&self.name, &table)?;
        for i in 0..layout.blocks {
            let b = self.refs.block_bytes(i, cs);
            self.app.push(&self.name, &b)?;
        }
        self.app.flush(&self.name)?;
        self.app.pool.finish()?;
        let rt_clusters = u32::try_from(layout.table_clusters)
            .map_err(|_| Error::unsupported(&self.name, "a refcount table this large"))?;
        let head = header::encode(
            &self.name,
            &Self::header_fields(
                &self.opts,
                self.cluster_bits,
                self.virtual_size,
                self.l1.len() as u32,
                l1_offset,
                layout.table_cluster * cs,
                rt_clusters,
            ),
        )?;
        self.app
            .file
            .write_all_at(&head, 0)
            .map_err(|e| Error::io(&self.name, e))?;
        self.out.commit()
    }
}

impl Sink for Qcow2Sink {
    fn write(&mut self, chunk: Chunk) -> Result<()> {
        self.write_chunk(chunk)
    }

    fn finish(&mut self) -> Result<()> {
        self.finish_image()
    }

    fn encoder(&self) -> Option<Arc<dyn Encoder>> {
        Some(self.enc.clone())
    }
}
