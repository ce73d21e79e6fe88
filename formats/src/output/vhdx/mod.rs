//! VHDX output: dynamic disks, as Hyper-V and Azure Stack take them.
//!
//! Layout: the header section (identifier, two headers, two region tables) in the first
//! MiB, an empty 1 MiB log, the metadata region, the BAT, then payload blocks. A block is
//! allocated when the first non-zero byte for it arrives and is filled by the chunks that
//! follow (chunks are 2 MiB, blocks 1 to 256 MiB); blocks that stay all zero are never
//! allocated. Blocks are allocated in disk order, so only the last one can still be
//! receiving data: nothing per block is kept in memory, and each BAT entry is written when
//! its block is allocated.
//!
//! The virtual size must be a multiple of the logical sector size; any other size is
//! rounded up to it (as qemu-img does), the padding reading as zeroes.
//!
//! Structure: `guid`, `header` (identifier and headers), `region`, `metadata`, `bat`.

mod bat;
mod guid;
mod header;
mod metadata;
mod region;

use crate::copy::{Chunk, Sink};
use crate::error::{Error, Result};
use crate::output::StagedFile;
use bat::BatLayout;
use guid::Guid;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: u64 = 1 << 20;
/// The spec's largest virtual disk.
const MAX_VIRTUAL: u64 = 64 << 40;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LEN: u32 = MIB as u32;
const BAT_OFFSET: u64 = 3 * MIB;

#[derive(Debug, Clone)]
pub struct VhdxOptions {
    /// Payload block size: a power of two from 1 MiB to 256 MiB. 32 MiB by default, what
    /// Hyper-V uses for dynamic disks. (qemu-img picks 8, 16, 32 or 64 MiB by disk size.)
    /// Smaller blocks keep sparse disks smaller; larger ones mean a smaller BAT.
    pub block_size: u32,
    /// 512 (default) or 4096: the sector size the guest sees.
    pub logical_sector: u32,
    /// 512 or 4096 (default): the sector size the guest is told to align to.
    pub physical_sector: u32,
    /// Mark unallocated blocks ZERO instead of NOT_PRESENT. Both read as zeroes in a disk
    /// without parent; qemu-img writes ZERO by default, Hyper-V NOT_PRESENT.
    pub zero_blocks: bool,
}

impl Default for VhdxOptions {
    fn default() -> Self {
        VhdxOptions {
            block_size: 32 << 20,
            logical_sector: 512,
            physical_sector: 4096,
            zero_blocks: false,
        }
    }
}

pub struct VhdxSink {
    out: StagedFile,
    name: String,
    layout: BatLayout,
    /// Where the next block goes (MiB-aligned: blocks are whole MiB).
    next: u64,
    /// The last block allocated and its file offset: the only one data can still reach.
    current: Option<(u64, u64)>,
}

impl VhdxSink {
    /// Starts a dynamic VHDX for a disk of `virtual_size` bytes (rounded up to the logical
    /// sector size) at `dest`, under a temporary name until `finish`.
    pub fn create(
        dest: &Path,
        virtual_size: u64,
        opts: &VhdxOptions,
        overwrite: bool,
    ) -> Result<Self> {
        let name = dest.display().to_string();
        let bs = u64::from(opts.block_size);
        if !bs.is_power_of_two() || !(MIB..=256 * MIB).contains(&bs) {
            return Err(Error::unsupported(
                &name,
                format!("VHDX block size {bs}: it must be a power of two from 1 MiB to 256 MiB"),
            ));
        }
        for (what, v) in [
            ("logical", opts.logical_sector),
            ("physical", opts.physical_sector),
        ] {
            if v != 512 && v != 4096 {
                return Err(Error::unsupported(
                    &name,
                    format!("VHDX {what} sector size {v}: it must be 512 or 4096"),
                ));
            }
        }
        let logical = u64::from(opts.logical_sector);
        let size = virtual_size.next_multiple_of(logical);
        if size == 0 {
            // Hyper-V refuses disks this small, and qemu's reader only opens one with a
            // BAT sized for four billion blocks.
            return Err(Error::unsupported(&name, "a VHDX of zero bytes"));
        }
        if size > MAX_VIRTUAL {
            return Err(Error::unsupported(
                &name,
                format!("a {virtual_size}-byte disk: VHDX holds at most 64 TiB"),
            ));
        }
        let layout = BatLayout::new(size, bs, logical);
        let bat_len = layout.region_len();
        let bat_len32 = u32::try_from(bat_len).map_err(|_| {
            Error::unsupported(&name, "a BAT larger than 4 GiB: choose larger blocks")
        })?;

        let out = StagedFile::create(dest, overwrite)?;
        let f = out.file()?;
        let io = |e| Error::io(&name, e);
        f.write_all_at(&header::identifier(), 0).map_err(io)?;
        let (file_write, data_write) = (Guid::random(), Guid::random());
        for (seq, at) in header::HEADER_OFFSETS.iter().enumerate() {
            f.write_all_at(&header::header(seq as u64 + 1, file_write, data_write), *at)
                .map_err(io)?;
        }
        let regions = region::table(&[
            (region::BAT_GUID, BAT_OFFSET, bat_len32),
            (region::METADATA_GUID, METADATA_OFFSET, METADATA_LEN),
        ]);
        for at in region::REGION_OFFSETS {
            f.write_all_at(&regions, at).map_err(io)?;
        }
        let meta = metadata::region(&metadata::Params {
            block_size: opts.block_size,
            virtual_size: size,
            logical_sector: opts.logical_sector,
            physical_sector: opts.physical_sector,
            page83: Guid::random(),
        });
        f.write_all_at(&meta, METADATA_OFFSET).map_err(io)?;
        if opts.zero_blocks {
            write_zero_states(f, &layout).map_err(io)?;
        }
        let data_start = BAT_OFFSET + bat_len;
        // The log stays zeroes (a hole): with a zero log GUID nothing in it is valid.
        f.set_len(data_start).map_err(io)?;
        Ok(VhdxSink {
            out,
            name,
            layout,
            next: data_start,
            current: None,
        })
    }

    /// The file offset of `block`, allocating it (and recording it in the BAT) on first use.
    fn block_offset(&mut self, block: u64) -> Result<u64> {
        if let Some((b, at)) = self.current {
            if b == block {
                return Ok(at);
            }
        }
        let at = self.next;
        self.next += self.layout.block_size;
        let entry = bat::entry(at, bat::FULLY_PRESENT);
        let pos = BAT_OFFSET + self.layout.index(block) * 8;
        self.out
            .file()?
            .write_all_at(&entry.to_le_bytes(), pos)
            .map_err(|e| Error::io(&self.name, e))?;
        self.current = Some((block, at));
        Ok(at)
    }
}

/// Fills the BAT's payload entries with ZERO, a MiB at a time.
fn write_zero_states(f: &std::fs::File, layout: &BatLayout) -> std::io::Result<()> {
    const PER_WRITE: u64 = MIB / 8;
    let total = layout.entries();
    let mut first = 0u64;
    while first < total {
        let n = PER_WRITE.min(total - first);
        let mut b = Vec::with_capacity((n * 8) as usize);
        for i in first..first + n {
            let state = if layout.is_bitmap(i) { 0 } else { bat::ZERO };
            b.extend_from_slice(&state.to_le_bytes());
        }
        f.write_all_at(&b, BAT_OFFSET + first * 8)?;
        first += n;
    }
    Ok(())
}

impl Sink for VhdxSink {
    fn write(&mut self, chunk: Chunk) -> Result<()> {
        let bs = self.layout.block_size;
        for &(s, e) in &chunk.nonzero {
            let mut v = chunk.offset + s as u64;
            let end = chunk.offset + e as u64;
            while v < end {
                let block = v / bs;
                let stop = ((block + 1) * bs).min(end);
                let base = self.block_offset(block)?;
                let lo = (v - chunk.offset) as usize;
                let hi = (stop - chunk.offset) as usize;
                let data = chunk.data.get(lo..hi).unwrap_or(&[]);
                self.out
                    .file()?
                    .write_all_at(data, base + (v - block * bs))
                    .map_err(|err| Error::io(&self.name, err))?;
                v = stop;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        // Every allocated block lies whole inside the file, the last one included.
        self.out
            .file()?
            .set_len(self.next)
            .map_err(|e| Error::io(&self.name, e))?;
        self.out.commit()
    }
}
