//! What each guest cluster becomes, decided on the copy's worker threads: left
//! unallocated, a zero cluster, stored as is, or compressed. Compression happens here so it
//! runs on every core; the writer thread only appends the results.
//!
//! For an overlay the comparison with the backing image happens here too: a cluster equal
//! to the backing's is left unallocated (reads fall through), a zero cluster over non-zero
//! backing bytes gets the zero flag.

use super::Qcow2Compression;
use crate::blockdev::BlockDev;
use crate::copy::{is_zero, Chunk, Encoder};
use crate::error::{Error, Result};
use std::cell::RefCell;
use std::sync::Arc;

/// What one guest cluster becomes.
pub enum Item {
    /// Nothing stored: zeroes, or (overlay) the same bytes as the backing.
    Unallocated,
    /// Overlay only: zeroes over a backing that is not zero there.
    Zero,
    /// Stored uncompressed (the bytes are still in the chunk).
    Raw,
    /// Stored compressed: the compressed stream.
    Compressed(Vec<u8>),
}

/// The encoder's result for one chunk: an item per cluster wholly inside it, from
/// cluster `first` on. Clusters cut by the chunk's edges are left to the writer.
pub struct Encoded {
    pub first: u64,
    pub items: Vec<Item>,
}

/// Decides clusters; shared by the workers and the writer (for clusters split between
/// chunks).
pub struct ClusterEncoder {
    pub cluster_size: u64,
    pub virtual_size: u64,
    pub compression: Qcow2Compression,
    /// Set for an overlay: clusters not stored must be marked zero unless the backing
    /// reads as zero there.
    pub overlay: bool,
    /// The backing image, to store only what differs from it.
    pub backing: Option<Arc<dyn BlockDev>>,
}

/// qemu's default levels for both methods.
const ZSTD_LEVEL: i32 = 3;

thread_local! {
    static DEFLATE: RefCell<Option<libdeflater::Compressor>> = const { RefCell::new(None) };
    static ZSTD: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

impl ClusterEncoder {
    /// Guest cluster `c` is `[start, end)` of the disk (the last one may be short).
    pub fn bounds(&self, c: u64) -> (u64, u64) {
        let start = c * self.cluster_size;
        (start, (start + self.cluster_size).min(self.virtual_size))
    }

    /// Reads `[start, start + buf.len())` of the backing image into `buf`, zeroes past its end.
    pub fn read_backing(&self, buf: &mut [u8], start: u64) -> Result<()> {
        buf.fill(0);
        if let Some(b) = &self.backing {
            let blen = b.len();
            if start < blen {
                let n = ((blen - start) as usize).min(buf.len());
                b.read_at(&mut buf[..n], start)?;
            }
        }
        Ok(())
    }

    /// Decides one cluster from its bytes (`data`, up to the cluster's end) and, for an
    /// overlay with a backing device, the backing's bytes over the same range.
    pub fn classify(&self, data: &[u8], backing: Option<&[u8]>) -> Result<Item> {
        let zero = is_zero(data);
        if self.overlay {
            if backing.is_some_and(|b| b == data) {
                return Ok(Item::Unallocated);
            }
            if zero {
                return Ok(Item::Zero);
            }
        } else if zero {
            return Ok(Item::Unallocated);
        }
        self.compress(data)
    }

    /// Compresses a cluster if that saves space: the stream must fit in one byte less
    /// than a cluster, as qemu requires, else the cluster is stored as is.
    fn compress(&self, data: &[u8]) -> Result<Item> {
        let cs = self.cluster_size as usize;
        if self.compression == Qcow2Compression::None {
            return Ok(Item::Raw);
        }
        // The short last cluster is compressed as a whole cluster with zeroes after it.
        let padded;
        let input = if data.len() < cs {
            let mut v = data.to_vec();
            v.resize(cs, 0);
            padded = v;
            &padded[..]
        } else {
            data
        };
        match self.compression {
            Qcow2Compression::None => Ok(Item::Raw),
            Qcow2Compression::Zlib => DEFLATE.with(|c| {
                let mut c = c.borrow_mut();
                let comp = c.get_or_insert_with(|| {
                    libdeflater::Compressor::new(libdeflater::CompressionLvl::default())
                });
                let mut out = vec![0u8; cs - 1];
                Ok(match comp.deflate_compress(input, &mut out) {
                    Ok(n) => {
                        out.truncate(n);
                        Item::Compressed(out)
                    }
                    Err(_) => Item::Raw,
                })
            }),
            Qcow2Compression::Zstd => ZSTD.with(|c| {
                let mut c = c.borrow_mut();
                let comp = match c.as_mut() {
                    Some(comp) => comp,
                    None => c.insert(
                        zstd::bulk::Compressor::new(ZSTD_LEVEL)
                            .map_err(|e| Error::io("zstd compressor", e))?,
                    ),
                };
                let mut out = Vec::with_capacity(cs - 1);
                Ok(match comp.compress_to_buffer(input, &mut out) {
                    Ok(n) if n < cs => {
                        out.truncate(n);
                        Item::Compressed(out)
                    }
                    _ => Item::Raw,
                })
            }),
        }
    }

    /// Decides a cluster the writer assembled from pieces of several chunks.
    pub fn classify_at(&self, c: u64, data: &[u8]) -> Result<Item> {
        if self.overlay && self.backing.is_some() {
            let (start, _) = self.bounds(c);
            let mut b = vec![0u8; data.len()];
            self.read_backing(&mut b, start)?;
            self.classify(data, Some(&b))
        } else {
            self.classify(data, None)
        }
    }
}

impl Encoder for ClusterEncoder {
    fn encode(&self, chunk: &mut Chunk) -> Result<()> {
        let start = chunk.offset;
        let end = start + chunk.data.len() as u64;
        let cs = self.cluster_size;
        let first = start.div_ceil(cs);
        let mut last = first;
        while last * cs < end && self.bounds(last).1 <= end {
            last += 1;
        }
        if last == first {
            chunk.encoded = Some(Box::new(Encoded {
                first,
                items: Vec::new(),
            }));
            return Ok(());
        }
        let whole_start = first * cs;
        let whole_end = self.bounds(last - 1).1;
        let backing = if self.overlay && self.backing.is_some() {
            let mut b = vec![0u8; (whole_end - whole_start) as usize];
            self.read_backing(&mut b, whole_start)?;
            Some(b)
        } else {
            None
        };
        let mut items = Vec::with_capacity((last - first) as usize);
        for c in first..last {
            let (s, e) = self.bounds(c);
            let data = &chunk.data[(s - start) as usize..(e - start) as usize];
            let bk = backing
                .as_ref()
                .map(|b| &b[(s - whole_start) as usize..(e - whole_start) as usize]);
            items.push(self.classify(data, bk)?);
        }
        chunk.encoded = Some(Box::new(Encoded { first, items }));
        Ok(())
    }
}
