//! VHDX, Hyper-V's format: fixed, dynamic and differencing disks built of large payload
//! blocks found through a block allocation table, with sector bitmaps for differencing.
//!
//! Written here, not taken from the `vhdx` crate: that crate opens images read-write,
//! panics on malformed input, has no differencing support, and replays the log by writing
//! into the image — unacceptable for an input we promise not to touch. A non-empty log
//! (an image not closed cleanly) is replayed in memory only (see `log.rs`); reading around
//! it would return stale metadata.

mod header;
mod le;
mod log;
mod metadata;
mod region;

use crate::blockdev::{BlockDev, Extent, ExtentKind};
use crate::error::{check_range, Error, Result};
use crate::image::{Image, ImageInfo};
use crate::open::{host_allocated, OpenCtx};
use crate::probe::Format;
use header::{Header, HEADER_LEN, HEADER_OFFSETS};
use metadata::Metadata;
use region::{BAT_GUID, METADATA_GUID, REGION_LEN, REGION_OFFSETS};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MIB: u64 = 1 << 20;
/// The spec's limit on the virtual size.
const MAX_VIRTUAL: u64 = 64 << 40;
const MAX_METADATA_REGION: u64 = 64 * MIB;

const NOT_PRESENT: u64 = 0;
const UNDEFINED: u64 = 1;
const ZERO: u64 = 2;
const UNMAPPED: u64 = 3;
const FULLY_PRESENT: u64 = 6;
const PARTIALLY_PRESENT: u64 = 7;

pub struct Vhdx {
    file: Arc<dyn BlockDev>,
    path: PathBuf,
    name: String,
    header: Header,
    meta: Metadata,
    bat: Vec<u64>,
    bat_offset: u64,
    block_size: u64,
    chunk_ratio: u64,
    parent: Option<Arc<dyn Image>>,
    parent_reference: Option<String>,
    notes: Vec<String>,
    /// The log was not empty and has been replayed in memory.
    dirty: bool,
    /// Last sector bitmap read (file offset, 1 MiB of bits): differencing reads walk a
    /// chunk's blocks in order, so one cached bitmap serves them all.
    bitmap_cache: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

/// Opens a VHDX image whose host file is `file` (at `path`, for messages and for finding
/// the parent of a differencing disk).
pub fn open(file: Arc<dyn BlockDev>, path: &Path, ctx: &OpenCtx) -> Result<Arc<dyn Image>> {
    Ok(Arc::new(Vhdx::open(file, path, ctx)?))
}

impl Vhdx {
    fn open(file: Arc<dyn BlockDev>, path: &Path, ctx: &OpenCtx) -> Result<Vhdx> {
        let name = path.display().to_string();
        let len = file.len();
        let corrupt = |s: &str, off: u64, d: String| Error::corrupt(&name, s, off, d);
        if len < 1024 * 1024 {
            return Err(corrupt(
                "VHDX file",
                0,
                format!("the file has {len} bytes, too few for the headers and region tables"),
            ));
        }
        let mut sig = [0u8; 8];
        file.read_at(&mut sig, 0)?;
        if &sig != b"vhdxfile" {
            return Err(corrupt(
                "VHDX file identifier",
                0,
                "no \"vhdxfile\" signature".into(),
            ));
        }
        let mut notes = Vec::new();
        let mut replayed = false;
        let mut best: Option<Header> = None;
        let mut errors = Vec::new();
        for off in HEADER_OFFSETS {
            let mut b = vec![0u8; HEADER_LEN];
            file.read_at(&mut b, off)?;
            match Header::parse(&b) {
                Ok(h) => {
                    if best.as_ref().is_none_or(|b| h.sequence > b.sequence) {
                        best = Some(h);
                    }
                }
                Err(e) => errors.push(format!("header at {off:#x}: {e}")),
            }
        }
        let Some(header) = best else {
            return Err(corrupt(
                "VHDX headers",
                HEADER_OFFSETS[0],
                format!("neither header is valid ({})", errors.join("; ")),
            ));
        };
        if !errors.is_empty() {
            notes.push(format!(
                "one header is damaged and the other was used ({})",
                errors.join("; ")
            ));
        }
        if header.version != 1 {
            return Err(Error::unsupported(
                &name,
                format!("VHDX header version {}", header.version),
            ));
        }
        let mut file = file;
        let mut len = len;
        if !header.log_guid.is_zero() {
            let r = log::Replayed::replay(
                file.clone(),
                &name,
                header.log_offset,
                header.log_length as u64,
                &header.log_guid,
            )?;
            notes.push(format!("log replayed in memory ({} entries)", r.entries));
            replayed = true;
            len = r.len();
            file = Arc::new(r);
        }
        let mut regions = None;
        let mut region_errors = Vec::new();
        for off in REGION_OFFSETS {
            let mut b = vec![0u8; REGION_LEN];
            file.read_at(&mut b, off)?;
            match region::parse(&b) {
                Ok(r) => {
                    regions = Some((off, r));
                    break;
                }
                Err(e) => region_errors.push(format!("table at {off:#x}: {e}")),
            }
        }
        let Some((region_off, regions)) = regions else {
            return Err(corrupt(
                "VHDX region table",
                REGION_OFFSETS[0],
                format!("neither copy is valid ({})", region_errors.join("; ")),
            ));
        };
        if !region_errors.is_empty() {
            notes.push(format!(
                "the first region table is damaged; the copy was used ({})",
                region_errors.join("; ")
            ));
        }
        let mut bat_region = None;
        let mut meta_region = None;
        for r in &regions {
            if r.guid == BAT_GUID {
                bat_region = Some(r.clone());
            } else if r.guid == METADATA_GUID {
                meta_region = Some(r.clone());
            } else if r.required {
                return Err(Error::unsupported(
                    &name,
                    format!("unknown required VHDX region {}", r.guid),
                ));
            }
            if r.offset
                .checked_add(r.length as u64)
                .is_none_or(|e| e > len)
                || r.offset % MIB != 0
            {
                return Err(corrupt(
                    "VHDX region table",
                    region_off,
                    format!(
                        "region {} at {:#x}+{:#x} is misaligned or past the end of the file",
                        r.guid, r.offset, r.length
                    ),
                ));
            }
        }
        let (Some(bat_region), Some(meta_region)) = (bat_region, meta_region) else {
            return Err(corrupt(
                "VHDX region table",
                region_off,
                "the BAT or metadata region is missing".into(),
            ));
        };
        if meta_region.length as u64 > MAX_METADATA_REGION {
            return Err(corrupt(
                "VHDX region table",
                region_off,
                format!("a metadata region of {} bytes", meta_region.length),
            ));
        }
        let mut mb = vec![0u8; meta_region.length as usize];
        file.read_at(&mut mb, meta_region.offset)?;
        let meta =
            metadata::parse(&mb).map_err(|(o, d)| match d.starts_with("unknown required") {
                true => Error::unsupported(&name, d),
                false => Error::corrupt(&name, "VHDX metadata", meta_region.offset + o, d),
            })?;
        let bs = meta.block_size as u64;
        if !(MIB..=256 * MIB).contains(&bs) || !bs.is_power_of_two() {
            return Err(corrupt(
                "VHDX metadata",
                meta_region.offset,
                format!("block size {bs} is not a power of two from 1 MiB to 256 MiB"),
            ));
        }
        let ls = meta.logical_sector as u64;
        if ls != 512 && ls != 4096 {
            return Err(corrupt(
                "VHDX metadata",
                meta_region.offset,
                format!("logical sector size {ls} is neither 512 nor 4096"),
            ));
        }
        let vs = meta.virtual_size;
        if vs == 0 || vs > MAX_VIRTUAL || vs % ls != 0 {
            return Err(corrupt(
                "VHDX metadata",
                meta_region.offset,
                format!(
                    "virtual size {vs} is zero, above 64 TiB or not a multiple of the sector size"
                ),
            ));
        }
        let chunk_ratio = (ls << 23) / bs;
        let blocks = vs.div_ceil(bs);
        // Entries up to the last payload block (and its chunk's bitmap entry when
        // differencing).
        let needed = if meta.has_parent {
            blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else {
            blocks + (blocks - 1) / chunk_ratio
        };
        if needed * 8 > bat_region.length as u64 {
            return Err(corrupt(
                "VHDX BAT",
                bat_region.offset,
                format!(
                    "{needed} entries do not fit in a region of {} bytes",
                    bat_region.length
                ),
            ));
        }
        let mut raw = vec![0u8; (needed * 8) as usize];
        file.read_at(&mut raw, bat_region.offset)?;
        let bat: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        for (i, &e) in bat.iter().enumerate() {
            let state = e & 7;
            let off = (e >> 20) << 20;
            let is_bitmap = meta.has_parent && (i as u64 + 1).is_multiple_of(chunk_ratio + 1);
            let span = if is_bitmap { MIB } else { bs };
            let entry_off = bat_region.offset + i as u64 * 8;
            match state {
                FULLY_PRESENT | PARTIALLY_PRESENT if !is_bitmap => {
                    if state == PARTIALLY_PRESENT && !meta.has_parent {
                        return Err(corrupt(
                            "VHDX BAT",
                            entry_off,
                            format!("entry {i} is partially present in a disk without a parent"),
                        ));
                    }
                    if off.checked_add(span).is_none_or(|e| e > len) || off < MIB {
                        return Err(corrupt(
                            "VHDX BAT",
                            entry_off,
                            format!("entry {i} points at {off:#x}, outside the file"),
                        ));
                    }
                }
                FULLY_PRESENT if is_bitmap => {
                    if off.checked_add(span).is_none_or(|e| e > len) || off < MIB {
                        return Err(corrupt(
                            "VHDX BAT",
                            entry_off,
                            format!("sector bitmap entry {i} points at {off:#x}, outside the file"),
                        ));
                    }
                }
                NOT_PRESENT | UNDEFINED | ZERO | UNMAPPED if !is_bitmap => {}
                NOT_PRESENT if is_bitmap => {}
                other => {
                    return Err(corrupt(
                        "VHDX BAT",
                        entry_off,
                        format!("entry {i} has the invalid state {other}"),
                    ));
                }
            }
        }
        let mut v = Vhdx {
            file,
            path: path.to_path_buf(),
            name,
            header,
            meta,
            bat,
            bat_offset: bat_region.offset,
            block_size: bs,
            chunk_ratio,
            parent: None,
            parent_reference: None,
            notes,
            dirty: replayed,
            bitmap_cache: Mutex::new(None),
        };
        if v.meta.has_parent {
            v.open_parent(ctx)?;
        }
        Ok(v)
    }

    fn open_parent(&mut self, ctx: &OpenCtx) -> Result<()> {
        let get = |k: &str| {
            self.meta
                .parent
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let relative = get("relative_path");
        let absolute = get("absolute_win32_path").or_else(|| get("volume_path"));
        // A path on the machine that made the disk: only its file name, looked for here.
        let base_of = |a: &str| {
            let unix = a.replace('\\', "/");
            unix.rsplit('/').next().unwrap_or(&unix).to_string()
        };
        let (shown, parent) = match (relative, absolute) {
            (Some(r), abs) => {
                let unix = r.replace('\\', "/");
                let reference = unix.trim_start_matches("./").to_string();
                match ctx.open_backing(&self.path, &reference, None) {
                    Ok(p) => (r, p),
                    Err(first) => {
                        // The relative path failed (missing, or outside the folder): the
                        // absolute path's file name in this folder is the next guess.
                        let fallback = abs
                            .as_deref()
                            .map(base_of)
                            .filter(|b| !b.is_empty() && *b != reference);
                        match fallback.map(|b| (ctx.open_backing(&self.path, &b, None), b)) {
                            Some((Ok(p), b)) => {
                                self.notes.push(format!(
                                    "parent found by the file name {b} of its absolute path; the relative path {r} failed: {first}"
                                ));
                                (r, p)
                            }
                            _ => return Err(first),
                        }
                    }
                }
            }
            (None, Some(a)) => {
                let reference = base_of(&a);
                (a, ctx.open_backing(&self.path, &reference, None)?)
            }
            (None, None) => {
                return Err(Error::corrupt(
                    &self.name,
                    "VHDX parent locator",
                    0,
                    "a differencing disk whose locator names no parent path",
                ));
            }
        };
        if let Some(linkage) = get("parent_linkage") {
            let pinfo = parent.info();
            if pinfo.format == Format::Vhdx {
                if let Some(dw) = pinfo.details.get("data_write_guid") {
                    let same = |l: &str| {
                        l.trim_matches(|c| c == '{' || c == '}')
                            .eq_ignore_ascii_case(dw)
                    };
                    // parent_linkage2 is the alternate linkage a parent may carry after an
                    // interrupted update.
                    if !same(&linkage) && !get("parent_linkage2").is_some_and(|l| same(&l)) {
                        self.notes.push(format!("the parent's data write GUID {dw} is not the linkage recorded here ({linkage}); the parent may have changed"));
                    }
                }
            }
        }
        self.parent_reference = Some(shown);
        self.parent = Some(parent);
        Ok(())
    }

    fn entry(&self, block: u64) -> u64 {
        let idx = if self.meta.has_parent {
            block / self.chunk_ratio * (self.chunk_ratio + 1) + block % self.chunk_ratio
        } else {
            block + block / self.chunk_ratio
        };
        self.bat.get(idx as usize).copied().unwrap_or(NOT_PRESENT)
    }

    fn bitmap_for(&self, block: u64) -> Result<Option<Arc<Vec<u8>>>> {
        let chunk = block / self.chunk_ratio;
        let idx = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
        let e = self.bat.get(idx as usize).copied().unwrap_or(NOT_PRESENT);
        if e & 7 != FULLY_PRESENT {
            return Ok(None);
        }
        let off = (e >> 20) << 20;
        if let Some((o, b)) = self
            .bitmap_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if *o == off {
                return Ok(Some(b.clone()));
            }
        }
        let mut b = vec![0u8; MIB as usize];
        self.file.read_at(&mut b, off)?;
        let b = Arc::new(b);
        *self.bitmap_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((off, b.clone()));
        Ok(Some(b))
    }

    /// Whether sector `pos` (a virtual offset) of a partially present block is stored
    /// here: one bit per logical sector of the chunk, least significant bit first.
    fn sector_present(&self, bitmap: &[u8], pos: u64) -> bool {
        let ls = self.meta.logical_sector as u64;
        let per_chunk = self.chunk_ratio * self.block_size;
        let s = (pos % per_chunk) / ls;
        bitmap
            .get((s / 8) as usize)
            .is_some_and(|b| b & (1 << (s % 8)) != 0)
    }

    fn read_parent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match &self.parent {
            Some(p) => {
                let avail = p.len().saturating_sub(offset).min(buf.len() as u64) as usize;
                let (head, tail) = buf.split_at_mut(avail);
                if !head.is_empty() {
                    p.read_at(head, offset)?;
                }
                tail.fill(0);
            }
            None => buf.fill(0),
        }
        Ok(())
    }

    fn parent_extent(&self, off: u64, limit: u64) -> Result<Extent> {
        match &self.parent {
            Some(p) if off < p.len() => {
                let e = p.extent_at(off)?;
                Ok(Extent {
                    kind: e.kind,
                    len: e.len.min(limit - off).max(1),
                })
            }
            _ => Ok(Extent {
                kind: ExtentKind::Unallocated,
                len: limit - off,
            }),
        }
    }
}

impl BlockDev for Vhdx {
    fn len(&self) -> u64 {
        self.meta.virtual_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.len())?;
        let ls = self.meta.logical_sector as u64;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / self.block_size;
            let within = pos % self.block_size;
            let n = ((self.block_size - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            let e = self.entry(block);
            let host = ((e >> 20) << 20) + within;
            match e & 7 {
                FULLY_PRESENT => self.file.read_at(out, host)?,
                PARTIALLY_PRESENT => match self.bitmap_for(block)? {
                    None => self.read_parent(out, pos)?,
                    Some(bm) => {
                        let mut k = 0usize;
                        while k < n {
                            let p = pos + k as u64;
                            let here = self.sector_present(&bm, p);
                            let mut end = k + (ls - p % ls) as usize;
                            while end < n && self.sector_present(&bm, pos + end as u64) == here {
                                end += ls as usize;
                            }
                            let end = end.min(n);
                            if here {
                                self.file.read_at(&mut out[k..end], host + k as u64)?;
                            } else {
                                self.read_parent(&mut out[k..end], p)?;
                            }
                            k = end;
                        }
                    }
                },
                NOT_PRESENT if self.meta.has_parent => self.read_parent(out, pos)?,
                _ => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(&self.name, offset, 1, self.len())?;
        let size = self.len();
        let block = offset / self.block_size;
        let block_end = ((block + 1) * self.block_size).min(size);
        let state = self.entry(block) & 7;
        let kind_of = |s: u64| match s {
            FULLY_PRESENT => Some(ExtentKind::Data),
            NOT_PRESENT => None,
            PARTIALLY_PRESENT => None,
            _ => Some(ExtentKind::Zero),
        };
        match (state, kind_of(state)) {
            (PARTIALLY_PRESENT, _) => {
                let Some(bm) = self.bitmap_for(block)? else {
                    return self.parent_extent(offset, block_end);
                };
                let ls = self.meta.logical_sector as u64;
                let here = self.sector_present(&bm, offset);
                let mut end = offset - offset % ls + ls;
                while end < block_end && self.sector_present(&bm, end) == here {
                    end += ls;
                }
                let end = end.min(block_end);
                if here {
                    Ok(Extent {
                        kind: ExtentKind::Data,
                        len: end - offset,
                    })
                } else {
                    self.parent_extent(offset, end)
                }
            }
            (_, None) if self.meta.has_parent => self.parent_extent(offset, block_end),
            (_, kind) => {
                let kind = kind.unwrap_or(ExtentKind::Unallocated);
                // Merge following blocks of the same kind (never across a parent lookup).
                let mut end = block_end;
                let mut b = block + 1;
                while end < size {
                    let s = self.entry(b) & 7;
                    let k = if s == NOT_PRESENT && !self.meta.has_parent {
                        Some(ExtentKind::Unallocated)
                    } else {
                        kind_of(s)
                    };
                    if k != Some(kind) || s == PARTIALLY_PRESENT {
                        break;
                    }
                    end = ((b + 1) * self.block_size).min(size);
                    b += 1;
                }
                Ok(Extent {
                    kind,
                    len: end - offset,
                })
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Image for Vhdx {
    fn info(&self) -> ImageInfo {
        let mut i = ImageInfo::new(&self.name, Format::Vhdx, self.len());
        let sub = if self.meta.has_parent {
            "differencing"
        } else if self.meta.leave_blocks_allocated {
            "fixed"
        } else {
            "dynamic"
        };
        i.subformat = Some(sub.into());
        i.file_bytes = host_allocated(&self.path);
        i.cluster_size = Some(self.block_size);
        i.dirty = self.dirty;
        let d = &mut i.details;
        d.insert("block_size".into(), self.block_size.to_string());
        d.insert(
            "logical_sector_size".into(),
            self.meta.logical_sector.to_string(),
        );
        d.insert(
            "physical_sector_size".into(),
            self.meta.physical_sector.to_string(),
        );
        if let Some(g) = self.meta.disk_id {
            d.insert("disk_id".into(), g.to_string());
        }
        d.insert(
            "data_write_guid".into(),
            self.header.data_write_guid.to_string(),
        );
        d.insert("header_sequence".into(), self.header.sequence.to_string());
        d.insert(
            "log".into(),
            format!(
                "{} ({} bytes at {:#x})",
                if self.dirty {
                    "replayed in memory"
                } else {
                    "empty"
                },
                self.header.log_length,
                self.header.log_offset
            ),
        );
        d.insert("bat_offset".into(), format!("{:#x}", self.bat_offset));
        i.notes = self.notes.clone();
        i.backing_reference = self.parent_reference.clone();
        i.backing = self.parent.as_ref().map(|p| Box::new(p.info()));
        i
    }
}
