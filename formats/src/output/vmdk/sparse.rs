//! monolithicSparse: header, descriptor, the redundant grain directory and its tables, the
//! grain directory and its tables, then grains. Both directories and all tables are
//! reserved up front, as VMware and qemu lay them out, so a VM can later allocate grains
//! in place; tables that stay empty are holes in the file. Grains are stored as they are,
//! one after another in disk order; grains of zeroes are not stored.

use super::descriptor::{self, DESC_SECTORS};
use super::grains::{has_data, pieces, Pending, Piece};
use super::gt::{Finished, GrainTables, GT_BYTES};
use super::header::SparseHeader;
use super::SECTOR;
use super::{capacity_sectors, sector_u32, VmdkOptions, GRAIN_BYTES, GRAIN_SECTORS, GTES_PER_GT};
use crate::copy::{Chunk, Sink};
use crate::error::{Error, Result};
use crate::output::StagedFile;
use std::os::unix::fs::FileExt;
use std::path::Path;

const GT_SECTORS: u64 = GT_BYTES as u64 / SECTOR;

pub struct VmdkSparseSink {
    out: StagedFile,
    name: String,
    /// First sector of the redundant tables and of the primary tables.
    rgt_start: u64,
    gt_start: u64,
    /// Byte offset of the next grain.
    next: u64,
    tables: GrainTables,
    pending: Pending,
    src_len: u64,
}

/// A run of consecutive non-zero grains of one chunk, stored back to back.
struct Run {
    start: usize,
    end: usize,
    at: u64,
}

impl VmdkSparseSink {
    /// Starts a monolithicSparse VMDK for a disk of `virtual_size` bytes (rounded up to
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
            "monolithicSparse",
            capacity,
            descriptor::random_cid(),
            opts,
        )?;
        let tables = capacity.div_ceil(GRAIN_SECTORS * GTES_PER_GT);
        let gd_sectors = (tables * 4).div_ceil(SECTOR).max(1);
        let rgd = 1 + DESC_SECTORS;
        let rgt_start = rgd + gd_sectors;
        let gd = rgt_start + tables * GT_SECTORS;
        let gt_start = gd + gd_sectors;
        let overhead = (gt_start + tables * GT_SECTORS).next_multiple_of(GRAIN_SECTORS);
        let header = SparseHeader {
            capacity,
            desc_offset: 1,
            desc_size: DESC_SECTORS,
            rgd_offset: rgd,
            gd_offset: gd,
            overhead,
            stream: false,
        };

        let out = StagedFile::create(dest, overwrite)?;
        let f = out.file()?;
        let io = |e| Error::io(&name, e);
        f.write_all_at(&header.to_bytes(), 0).map_err(io)?;
        f.write_all_at(&desc, SECTOR).map_err(io)?;
        // The directories point at every table from the start; the tables are zeroes
        // (unallocated grains) until filled.
        for (dir, first) in [(rgd, rgt_start), (gd, gt_start)] {
            let mut b = Vec::with_capacity((gd_sectors * SECTOR) as usize);
            for i in 0..tables {
                let s = sector_u32(&name, (first + i * GT_SECTORS) * SECTOR)?;
                b.extend_from_slice(&s.to_le_bytes());
            }
            b.resize((gd_sectors * SECTOR) as usize, 0);
            f.write_all_at(&b, dir * SECTOR).map_err(io)?;
        }
        f.set_len(overhead * SECTOR).map_err(io)?;
        Ok(VmdkSparseSink {
            out,
            name,
            rgt_start,
            gt_start,
            next: overhead * SECTOR,
            tables: GrainTables::new(),
            pending: Pending::new(),
            src_len: virtual_size,
        })
    }

    fn write_at(&self, bytes: &[u8], at: u64) -> Result<()> {
        self.out
            .file()?
            .write_all_at(bytes, at)
            .map_err(|e| Error::io(&self.name, e))
    }

    /// Gives `grain` the next free slot.
    fn allocate(&mut self, grain: u64) -> Result<u64> {
        if let Some(done) = self.tables.open_for(grain) {
            self.write_table(done)?;
        }
        let at = self.next;
        let sector = sector_u32(&self.name, at)?;
        self.tables.set(grain, sector);
        self.next += GRAIN_BYTES;
        Ok(at)
    }

    fn write_table(&mut self, (index, bytes): Finished) -> Result<()> {
        for first in [self.rgt_start, self.gt_start] {
            self.write_at(&bytes, (first + index * GT_SECTORS) * SECTOR)?;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<()> {
        if !self.pending.active {
            return Ok(());
        }
        if self.pending.dirty {
            let at = self.allocate(self.pending.grain)?;
            self.write_at(&self.pending.buf, at)?;
        }
        self.pending.clear();
        Ok(())
    }

    fn write_run(&mut self, run: &mut Option<Run>, chunk: &Chunk) -> Result<()> {
        if let Some(r) = run.take() {
            self.write_at(chunk.data.get(r.start..r.end).unwrap_or(&[]), r.at)?;
        }
        Ok(())
    }
}

impl Sink for VmdkSparseSink {
    fn write(&mut self, chunk: Chunk) -> Result<()> {
        let mut run: Option<Run> = None;
        for p in pieces(chunk.offset, chunk.data.len(), self.src_len) {
            match p {
                Piece::Whole { grain, start, end } if has_data(&chunk.nonzero, start, end) => {
                    // A gathered earlier grain takes its slot first, keeping disk order.
                    self.flush_pending()?;
                    let at = self.allocate(grain)?;
                    match &mut run {
                        Some(r) => r.end = end,
                        None => run = Some(Run { start, end, at }),
                    }
                }
                Piece::Whole { .. } => self.write_run(&mut run, &chunk)?,
                Piece::Part {
                    grain,
                    start,
                    end,
                    at,
                } => {
                    self.write_run(&mut run, &chunk)?;
                    if self.pending.active && self.pending.grain != grain {
                        self.flush_pending()?;
                    }
                    let data = chunk.data.get(start..end).unwrap_or(&[]);
                    let nz = has_data(&chunk.nonzero, start, end);
                    self.pending.add(grain, at, data, nz);
                }
            }
        }
        self.write_run(&mut run, &chunk)
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_pending()?;
        if let Some(done) = self.tables.take() {
            self.write_table(done)?;
        }
        // The last grain may have been written short (the disk ends inside it): the file
        // still holds it whole.
        self.out
            .file()?
            .set_len(self.next)
            .map_err(|e| Error::io(&self.name, e))?;
        self.out.commit()
    }
}
