//! VHD ("vpc" to qemu), the Virtual PC / Hyper-V format still found in Azure and Citrix
//! exports: fixed (raw data + footer), dynamic (a block table of 2 MiB blocks, each
//! behind a sector bitmap) and differencing (a dynamic disk whose bitmaps say which
//! sectors come from the parent).
//!
//! Written here rather than taken from a crate: the few VHD crates found open by path,
//! panic on short files, and none reads differencing disks through a folder policy.
//! Dynamic disks read whole allocated blocks, ignoring the bitmap, because that is what
//! qemu and Hyper-V return and what a copy must reproduce; differencing disks honour it.

mod be;
mod dynamic_header;
mod footer;

use crate::blockdev::{BlockDev, Extent, ExtentKind};
use crate::error::{check_range, Error, Result};
use crate::image::{Image, ImageInfo};
use crate::open::{host_allocated, OpenCtx};
use crate::probe::Format;
use dynamic_header::{DynamicHeader, MACX, W2KU, W2RU};
use footer::{DiskType, Footer, FooterError, FOOTER_LEN};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest block size accepted: the spec's default is 2 MiB; Hyper-V uses up to 256 MiB.
const MAX_BLOCK: u32 = 256 << 20;
const UNALLOCATED: u32 = 0xffff_ffff;

struct Dynamic {
    block_size: u64,
    /// Bytes of the sector bitmap in front of each block, padded to a sector.
    bitmap_len: u64,
    bat: Vec<u32>,
    header: DynamicHeader,
}

pub struct Vhd {
    file: Arc<dyn BlockDev>,
    path: PathBuf,
    name: String,
    footer: Footer,
    size: u64,
    dynamic: Option<Dynamic>,
    parent: Option<Arc<dyn Image>>,
    parent_reference: Option<String>,
    notes: Vec<String>,
}

/// Opens a VHD image whose host file is `file` (at `path`, for messages and for resolving
/// the parent of a differencing disk).
pub fn open(file: Arc<dyn BlockDev>, path: &Path, ctx: &OpenCtx) -> Result<Arc<dyn Image>> {
    Ok(Arc::new(Vhd::open(file, path, ctx)?))
}

impl Vhd {
    fn open(file: Arc<dyn BlockDev>, path: &Path, ctx: &OpenCtx) -> Result<Vhd> {
        let name = path.display().to_string();
        let len = file.len();
        let mut notes = Vec::new();
        if len < FOOTER_LEN as u64 {
            return Err(Error::corrupt(
                &name,
                "VHD footer",
                0,
                format!("the file has {len} bytes, less than a 512-byte footer"),
            ));
        }
        let mut tail_off = len - FOOTER_LEN as u64;
        let mut tail = vec![0u8; FOOTER_LEN];
        file.read_at(&mut tail, tail_off)?;
        let mut head = vec![0u8; FOOTER_LEN];
        file.read_at(&mut head, 0)?;
        let footer = match Footer::parse(&tail) {
            Ok(f) => f,
            Err(FooterError::UnknownType(t)) => return Err(unknown_type(&name, t)),
            Err(tail_err) => {
                if let Some(f) = old_fixed_footer(&*file, len)? {
                    // Virtual PC before 2004 wrote a footer one byte short; the data ends
                    // where it starts.
                    notes.push("the footer is the 511-byte one of early Virtual PC".into());
                    tail_off = len - (FOOTER_LEN as u64 - 1);
                    f
                } else {
                    match Footer::parse(&head) {
                        Ok(f) if f.disk_type != DiskType::Fixed => {
                            notes.push(format!(
                                "the footer at the end is damaged ({}); the copy at offset 0 was used",
                                tail_err.describe()
                            ));
                            f
                        }
                        Err(FooterError::UnknownType(t)) => return Err(unknown_type(&name, t)),
                        _ => {
                            return Err(Error::corrupt(
                                &name,
                                "VHD footer",
                                tail_off,
                                tail_err.describe(),
                            ));
                        }
                    }
                }
            }
        };
        if footer.saved_state {
            notes.push(
                "saved state is set: the VM was suspended, the disk may be inconsistent".into(),
            );
        }
        let size = footer.virtual_size();
        if footer.chs_size() != footer.current_size {
            notes.push(format!(
                "geometry size {} and footer size {} differ; {} is used, as qemu does",
                footer.chs_size(),
                footer.current_size,
                size
            ));
        }
        let mut vhd = Vhd {
            file,
            path: path.to_path_buf(),
            name,
            footer,
            size,
            dynamic: None,
            parent: None,
            parent_reference: None,
            notes,
        };
        match vhd.footer.disk_type {
            DiskType::Fixed => {
                if size > tail_off {
                    return Err(Error::corrupt(
                        &vhd.name,
                        "VHD footer",
                        tail_off,
                        format!("a fixed disk of {size} bytes needs that much data before the footer, the file has {tail_off}"),
                    ));
                }
            }
            DiskType::Dynamic | DiskType::Differencing => {
                vhd.dynamic = Some(vhd.read_dynamic()?);
                if vhd.footer.disk_type == DiskType::Differencing {
                    vhd.open_parent(ctx)?;
                }
            }
        }
        Ok(vhd)
    }

    fn read_dynamic(&self) -> Result<Dynamic> {
        let off = self.footer.data_offset;
        let len = self.file.len();
        if off.checked_add(1024).is_none_or(|e| e > len) {
            return Err(Error::corrupt(
                &self.name,
                "VHD footer",
                len - 512,
                format!("the dynamic header offset {off:#x} is past the end of the file"),
            ));
        }
        let mut b = vec![0u8; 1024];
        self.file.read_at(&mut b, off)?;
        let header = DynamicHeader::parse(&b)
            .map_err(|d| Error::corrupt(&self.name, "VHD dynamic header", off, d))?;
        let bs = header.block_size;
        if bs < 512 || !bs.is_power_of_two() || bs > MAX_BLOCK {
            return Err(Error::corrupt(
                &self.name,
                "VHD dynamic header",
                off,
                format!("block size {bs} is not a power of two between 512 bytes and 256 MiB"),
            ));
        }
        let block_size = bs as u64;
        let entries = header.max_table_entries as u64;
        if entries
            .checked_mul(block_size)
            .is_none_or(|cap| cap < self.size)
        {
            return Err(Error::corrupt(
                &self.name,
                "VHD dynamic header",
                off,
                format!(
                    "{entries} blocks of {block_size} bytes cannot hold the disk's {} bytes",
                    self.size
                ),
            ));
        }
        // Only the entries the disk needs are read; the table must lie inside the file.
        let needed = self.size.div_ceil(block_size);
        let table_bytes = needed * 4;
        if header
            .table_offset
            .checked_add(table_bytes)
            .is_none_or(|e| e > len)
        {
            return Err(Error::corrupt(
                &self.name,
                "VHD block table",
                header.table_offset,
                format!("{needed} entries run past the end of the file"),
            ));
        }
        let mut raw = vec![0u8; table_bytes as usize];
        self.file.read_at(&mut raw, header.table_offset)?;
        let bat: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let bitmap_len = (block_size / 512).div_ceil(8).div_ceil(512) * 512;
        for (i, &e) in bat.iter().enumerate() {
            if e == UNALLOCATED {
                continue;
            }
            let start = e as u64 * 512;
            // The footer sits after the last block; a block may not overlap it.
            let end = start + bitmap_len + block_size;
            if end > len {
                return Err(Error::corrupt(
                    &self.name,
                    "VHD block table",
                    header.table_offset + i as u64 * 4,
                    format!("entry {i} points to sector {e}, past the end of the file"),
                ));
            }
        }
        Ok(Dynamic {
            block_size,
            bitmap_len,
            bat,
            header,
        })
    }

    fn open_parent(&mut self, ctx: &OpenCtx) -> Result<()> {
        let Some(d) = &self.dynamic else {
            return Ok(());
        };
        // Relative locators first: they survive the folder being moved.
        let mut candidates: Vec<(u32, String)> = Vec::new();
        for l in &d.header.locators {
            if l.data_len == 0 || l.data_len > 4096 {
                continue;
            }
            let mut buf = vec![0u8; l.data_len as usize];
            if l.data_offset
                .checked_add(l.data_len as u64)
                .is_none_or(|e| e > self.file.len())
            {
                return Err(Error::corrupt(
                    &self.name,
                    "VHD parent locator",
                    l.data_offset,
                    "the locator's data lies past the end of the file",
                ));
            }
            self.file.read_at(&mut buf, l.data_offset)?;
            let text = match l.code {
                W2KU | W2RU => {
                    let units: Vec<u16> = buf
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .take_while(|&u| u != 0)
                        .collect();
                    String::from_utf16_lossy(&units)
                }
                MACX => String::from_utf8_lossy(&buf)
                    .trim_end_matches('\0')
                    .trim_start_matches("file://")
                    .to_string(),
                _ => continue,
            };
            candidates.push((l.code, text));
        }
        candidates.sort_by_key(|(c, _)| if *c == W2RU { 0 } else { 1 });
        if candidates.is_empty() && !d.header.parent_name.is_empty() {
            candidates.push((W2KU, d.header.parent_name.clone()));
        }
        if candidates.is_empty() {
            return Err(Error::corrupt(
                &self.name,
                "VHD dynamic header",
                self.footer.data_offset,
                "a differencing disk without any parent locator",
            ));
        }
        // A locator whose file is missing (an absolute path from another machine) gives way
        // to the next one; a policy refusal or a damaged parent stops here.
        let mut opened = None;
        let mut first_err = None;
        for (code, text) in candidates {
            let unix = text.replace('\\', "/");
            let reference = if code == W2RU {
                unix.trim_start_matches("./").to_string()
            } else {
                // An absolute Windows or Mac path from the machine that made it: look for the
                // file of that name beside this one (the folder policy applies there).
                unix.rsplit('/').next().unwrap_or(&unix).to_string()
            };
            match ctx.open_backing(&self.path, &reference, None) {
                Ok(p) => {
                    opened = Some((p, text));
                    break;
                }
                Err(e) if e.kind() == crate::error::ErrorKind::Io => {
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        let Some((parent, text)) = opened else {
            return Err(first_err.unwrap_or_else(|| {
                Error::corrupt(
                    &self.name,
                    "VHD parent locator",
                    0,
                    "no usable parent locator",
                )
            }));
        };
        if parent.info().format == Format::Vpc {
            if let Some(pid) = parent.info().details.get("unique_id") {
                if *pid != d.header.parent_unique_id {
                    self.notes.push(format!("the parent's unique id {pid} is not the one recorded here ({}); the parent may have changed", d.header.parent_unique_id));
                }
            }
        }
        self.parent_reference = Some(text);
        self.parent = Some(parent);
        Ok(())
    }

    /// Reads from the parent, or zeroes where there is none or it is shorter.
    fn read_parent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match &self.parent {
            Some(p) => {
                let plen = p.len();
                let avail = plen.saturating_sub(offset).min(buf.len() as u64) as usize;
                let (head, tail) = buf.split_at_mut(avail);
                if !head.is_empty() {
                    p.read_at(head, offset)?;
                }
                tail.fill(0);
                Ok(())
            }
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    fn bitmap(&self, d: &Dynamic, entry: u32) -> Result<Vec<u8>> {
        let mut bm = vec![0u8; d.bitmap_len as usize];
        self.file.read_at(&mut bm, entry as u64 * 512)?;
        Ok(bm)
    }
}

/// Disk types 0 (none), 1 and 5 (deprecated) and anything newer are well-formed footers
/// this reader does not handle, not damage.
fn unknown_type(name: &str, t: u32) -> Error {
    Error::unsupported(
        name,
        format!("VHD disk type {t} (only fixed 2, dynamic 3 and differencing 4 are read)"),
    )
}

/// The 511-byte footer of early Virtual PC fixed disks, if the file ends with one.
fn old_fixed_footer(file: &dyn BlockDev, len: u64) -> Result<Option<Footer>> {
    let short = FOOTER_LEN as u64 - 1;
    if len < short {
        return Ok(None);
    }
    // Padding with one zero byte leaves the byte sum, and so the checksum, unchanged.
    let mut b = vec![0u8; FOOTER_LEN];
    if let Some(dst) = b.get_mut(..FOOTER_LEN - 1) {
        file.read_at(dst, len - short)?;
    }
    Ok(Footer::parse(&b)
        .ok()
        .filter(|f| f.disk_type == DiskType::Fixed))
}

fn bit(bm: &[u8], sector: u64) -> bool {
    bm.get((sector / 8) as usize)
        .is_some_and(|b| b & (0x80 >> (sector % 8)) != 0)
}

impl BlockDev for Vhd {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.size)?;
        let Some(d) = &self.dynamic else {
            return self.file.read_at(buf, offset);
        };
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let idx = pos / d.block_size;
            let within = pos % d.block_size;
            let n = ((d.block_size - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            let entry = d.bat.get(idx as usize).copied().unwrap_or(UNALLOCATED);
            if entry == UNALLOCATED {
                self.read_parent(out, pos)?;
            } else {
                let data = entry as u64 * 512 + d.bitmap_len;
                if self.footer.disk_type == DiskType::Differencing {
                    let bm = self.bitmap(d, entry)?;
                    // Runs of sectors from one side at a time.
                    let mut k = 0usize;
                    while k < n {
                        let sec = (within + k as u64) / 512;
                        let here = bit(&bm, sec);
                        let mut end = k + (512 - ((within + k as u64) % 512) as usize);
                        while end < n && bit(&bm, (within + end as u64) / 512) == here {
                            end += 512;
                        }
                        let end = end.min(n);
                        if here {
                            self.file
                                .read_at(&mut out[k..end], data + within + k as u64)?;
                        } else {
                            self.read_parent(&mut out[k..end], pos + k as u64)?;
                        }
                        k = end;
                    }
                } else {
                    self.file.read_at(out, data + within)?;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(&self.name, offset, 1, self.size)?;
        let Some(d) = &self.dynamic else {
            let e = self.file.extent_at(offset)?;
            return Ok(Extent {
                kind: e.kind,
                len: e.len.min(self.size - offset).max(1),
            });
        };
        let idx = offset / d.block_size;
        let block_end = ((idx + 1) * d.block_size).min(self.size);
        let entry = d.bat.get(idx as usize).copied().unwrap_or(UNALLOCATED);
        let parent_extent = |off: u64, limit: u64| -> Result<Extent> {
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
        };
        if entry == UNALLOCATED {
            if self.parent.is_some() {
                return parent_extent(offset, block_end);
            }
            // Merge consecutive unallocated blocks.
            let mut end = block_end;
            let mut i = idx + 1;
            while end < self.size
                && d.bat.get(i as usize).copied().unwrap_or(UNALLOCATED) == UNALLOCATED
            {
                end = ((i + 1) * d.block_size).min(self.size);
                i += 1;
            }
            return Ok(Extent {
                kind: ExtentKind::Unallocated,
                len: end - offset,
            });
        }
        if self.footer.disk_type == DiskType::Differencing {
            let bm = self.bitmap(d, entry)?;
            let within = offset % d.block_size;
            let here = bit(&bm, within / 512);
            let mut end = offset - within + (within / 512 + 1) * 512;
            while end < block_end && bit(&bm, (end % d.block_size) / 512) == here {
                end += 512;
            }
            let end = end.min(block_end);
            return if here {
                Ok(Extent {
                    kind: ExtentKind::Data,
                    len: end - offset,
                })
            } else {
                parent_extent(offset, end)
            };
        }
        let mut end = block_end;
        let mut i = idx + 1;
        while end < self.size
            && d.bat.get(i as usize).copied().unwrap_or(UNALLOCATED) != UNALLOCATED
        {
            end = ((i + 1) * d.block_size).min(self.size);
            i += 1;
        }
        Ok(Extent {
            kind: ExtentKind::Data,
            len: end - offset,
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Image for Vhd {
    fn info(&self) -> ImageInfo {
        let mut i = ImageInfo::new(&self.name, Format::Vpc, self.size);
        i.subformat = Some(
            match self.footer.disk_type {
                DiskType::Fixed => "fixed",
                DiskType::Dynamic => "dynamic",
                DiskType::Differencing => "differencing",
            }
            .into(),
        );
        i.file_bytes = host_allocated(&self.path);
        let f = &self.footer;
        let dt = &mut i.details;
        dt.insert("creator_app".into(), f.creator_app());
        dt.insert(
            "creator_version".into(),
            format!("{:#010x}", f.creator_version),
        );
        dt.insert(
            "creator_host_os".into(),
            String::from_utf8_lossy(&f.creator_os.to_be_bytes()).into_owned(),
        );
        dt.insert(
            "geometry".into(),
            format!("{}/{}/{}", f.cylinders, f.heads, f.sectors),
        );
        dt.insert("geometry_size".into(), f.chs_size().to_string());
        dt.insert("footer_size".into(), f.current_size.to_string());
        dt.insert(
            "disk_type".into(),
            match f.disk_type {
                DiskType::Fixed => "2 (fixed)",
                DiskType::Dynamic => "3 (dynamic)",
                DiskType::Differencing => "4 (differencing)",
            }
            .into(),
        );
        dt.insert("unique_id".into(), f.unique_id.clone());
        dt.insert("saved_state".into(), f.saved_state.to_string());
        if let Some(d) = &self.dynamic {
            i.cluster_size = Some(d.block_size);
            if f.disk_type == DiskType::Differencing {
                dt.insert("parent_unique_id".into(), d.header.parent_unique_id.clone());
            }
        }
        i.notes = self.notes.clone();
        i.backing_reference = self.parent_reference.clone();
        i.backing = self.parent.as_ref().map(|p| Box::new(p.info()));
        i
    }
}
