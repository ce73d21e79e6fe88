//! streamOptimized: the layout inside OVAs. Front to back: header (grain directory "at
//! the end"), descriptor, then for each 32 MiB span its deflated grains followed by a
//! grain-table marker and the table, then the grain-directory marker and directory, a
//! footer marker and the footer (the header again, with the directory's real place), and
//! the end-of-stream marker. Nothing is written twice and nothing is written behind the
//! current end, which is what lets ESXi import such a file while it is still arriving.
//! Tables whose grains are all zero are left out (a zero directory entry), as VMware does.

use super::descriptor::{self, DESC_SECTORS};
use super::grains::{has_data, pieces, Pending, Piece};
use super::gt::{Finished, GrainTables, GT_BYTES};
use super::header::{SparseHeader, GD_AT_END};
use super::marker;
use super::SECTOR;
use super::{capacity_sectors, sector_u32, VmdkOptions, GRAIN_BYTES, GRAIN_SECTORS, GTES_PER_GT};
use crate::copy::{Chunk, Encoder, Sink};
use crate::error::{Error, Result};
use crate::output::StagedFile;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Grains start here, one grain in, as in VMware's own streams.
const OVERHEAD_SECTORS: u64 = GRAIN_SECTORS;

pub struct VmdkStreamSink {
    out: StagedFile,
    name: String,
    header: SparseHeader,
    /// Where the next byte goes: the stream only ever appends.
    pos: u64,
    gd: Vec<u32>,
    tables: GrainTables,
    pending: Pending,
    enc: Arc<StreamEncoder>,
}

/// Compresses a chunk's whole grains on the worker threads.
struct StreamEncoder {
    src_len: u64,
    level: i32,
}

/// A chunk's framed grains, back to back, and where each starts in `buf`.
struct Frames {
    buf: Vec<u8>,
    grains: Vec<(u64, usize)>,
}

impl StreamEncoder {
    fn frames(&self, chunk: &Chunk) -> Result<Frames> {
        let mut f = Frames {
            buf: Vec::new(),
            grains: Vec::new(),
        };
        let mut padded: Option<Vec<u8>> = None;
        for p in pieces(chunk.offset, chunk.data.len(), self.src_len) {
            let Piece::Whole { grain, start, end } = p else {
                continue;
            };
            if !has_data(&chunk.nonzero, start, end) {
                continue;
            }
            let Some(data) = chunk.data.get(start..end) else {
                continue;
            };
            let off = f.buf.len();
            if data.len() < GRAIN_BYTES as usize {
                // The disk ends inside this grain: store it whole, zero-padded, so every
                // reader inflates the grain size it expects.
                let pad = padded.get_or_insert_with(|| vec![0u8; GRAIN_BYTES as usize]);
                pad.fill(0);
                pad[..data.len()].copy_from_slice(data);
                marker::append_grain(&mut f.buf, grain * GRAIN_SECTORS, pad, self.level)?;
            } else {
                marker::append_grain(&mut f.buf, grain * GRAIN_SECTORS, data, self.level)?;
            }
            f.grains.push((grain, off));
        }
        Ok(f)
    }
}

impl Encoder for StreamEncoder {
    fn encode(&self, chunk: &mut Chunk) -> Result<()> {
        let f = self.frames(chunk)?;
        chunk.encoded = Some(Box::new(f));
        Ok(())
    }
}

impl VmdkStreamSink {
    /// Starts a stream-optimized VMDK for a disk of `virtual_size` bytes (rounded up to
    /// whole sectors) at `dest`, under a temporary name until `finish`.
    pub fn create(
        dest: &Path,
        virtual_size: u64,
        opts: &VmdkOptions,
        overwrite: bool,
    ) -> Result<Self> {
        let capacity = capacity_sectors(dest, virtual_size)?;
        let name = dest.display().to_string();
        let desc = descriptor::build(
            dest,
            "streamOptimized",
            capacity,
            descriptor::random_cid(),
            opts,
        )?;
        let out = StagedFile::create(dest, overwrite)?;
        let header = SparseHeader {
            capacity,
            desc_offset: 1,
            desc_size: DESC_SECTORS,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: OVERHEAD_SECTORS,
            stream: true,
        };
        let f = out.file()?;
        f.write_all_at(&header.to_bytes(), 0)
            .map_err(|e| Error::io(&name, e))?;
        f.write_all_at(&desc, SECTOR)
            .map_err(|e| Error::io(&name, e))?;
        let tables = capacity.div_ceil(GRAIN_SECTORS * GTES_PER_GT) as usize;
        Ok(VmdkStreamSink {
            out,
            name,
            header,
            pos: OVERHEAD_SECTORS * SECTOR,
            gd: vec![0u32; tables],
            tables: GrainTables::new(),
            pending: Pending::new(),
            enc: Arc::new(StreamEncoder {
                src_len: virtual_size,
                level: opts.compression_level,
            }),
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .file()?
            .write_all_at(bytes, self.pos)
            .map_err(|e| Error::io(&self.name, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Appends framed grains, closing grain tables (marker + table) as their span ends.
    fn write_frames(&mut self, f: &Frames) -> Result<()> {
        let mut seg = 0usize;
        for &(grain, off) in &f.grains {
            if let Some(done) = self.tables.open_for(grain) {
                self.append(f.buf.get(seg..off).unwrap_or(&[]))?;
                seg = off;
                self.write_table(done)?;
            }
            let at = self.pos + (off - seg) as u64;
            let sector = sector_u32(&self.name, at)?;
            self.tables.set(grain, sector);
        }
        self.append(f.buf.get(seg..).unwrap_or(&[]))
    }

    fn write_table(&mut self, (index, bytes): Finished) -> Result<()> {
        let mut b = Vec::with_capacity(512 + GT_BYTES);
        b.extend_from_slice(&marker::metadata(
            (GT_BYTES as u64) / SECTOR,
            marker::GRAIN_TABLE,
        ));
        b.extend_from_slice(&bytes);
        let sector = sector_u32(&self.name, self.pos + SECTOR)?;
        if let Some(e) = self.gd.get_mut(index as usize) {
            *e = sector;
        }
        self.append(&b)
    }

    /// Compresses and appends the gathered grain, if it holds data.
    fn flush_pending(&mut self) -> Result<()> {
        if !self.pending.active {
            return Ok(());
        }
        if self.pending.dirty {
            let grain = self.pending.grain;
            let mut buf = Vec::new();
            marker::append_grain(
                &mut buf,
                grain * GRAIN_SECTORS,
                &self.pending.buf,
                self.enc.level,
            )?;
            self.write_frames(&Frames {
                buf,
                grains: vec![(grain, 0)],
            })?;
        }
        self.pending.clear();
        Ok(())
    }
}

impl Sink for VmdkStreamSink {
    fn write(&mut self, mut chunk: Chunk) -> Result<()> {
        let frames = match chunk.encoded.take().map(|b| b.downcast::<Frames>()) {
            Some(Ok(f)) => *f,
            // Not prepared by our encoder (a caller driving the sink by hand): do it here.
            _ => self.enc.frames(&chunk)?,
        };
        let mut frames_written = false;
        for p in pieces(chunk.offset, chunk.data.len(), self.enc.src_len) {
            match p {
                Piece::Part {
                    grain,
                    start,
                    end,
                    at,
                } => {
                    if self.pending.active && self.pending.grain != grain {
                        self.flush_pending()?;
                    }
                    let data = chunk.data.get(start..end).unwrap_or(&[]);
                    let nz = has_data(&chunk.nonzero, start, end);
                    self.pending.add(grain, at, data, nz);
                }
                Piece::Whole { .. } if !frames_written => {
                    // Anything gathered before belongs to an earlier grain: it goes first.
                    self.flush_pending()?;
                    self.write_frames(&frames)?;
                    frames_written = true;
                }
                Piece::Whole { .. } => {}
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_pending()?;
        if let Some(done) = self.tables.take() {
            self.write_table(done)?;
        }
        let mut gd: Vec<u8> = self.gd.iter().flat_map(|e| e.to_le_bytes()).collect();
        let len = gd
            .len()
            .next_multiple_of(SECTOR as usize)
            .max(SECTOR as usize);
        gd.resize(len, 0);
        self.append(&marker::metadata(
            len as u64 / SECTOR,
            marker::GRAIN_DIRECTORY,
        ))?;
        self.header.gd_offset = self.pos / SECTOR;
        self.append(&gd)?;
        self.append(&marker::metadata(1, marker::FOOTER))?;
        let footer = self.header.to_bytes();
        self.append(&footer)?;
        self.append(&marker::END_OF_STREAM)?;
        self.out
            .file()?
            .set_len(self.pos)
            .map_err(|e| Error::io(&self.name, e))?;
        self.out.commit()
    }

    fn encoder(&self) -> Option<Arc<dyn Encoder>> {
        Some(self.enc.clone())
    }
}
