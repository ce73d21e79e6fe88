//! Grain directory and grain tables: where each grain of a sparse extent lives. The directory
//! is read whole at open (it is small: 4 bytes per 32 MiB of disk with default grains) and
//! checked entry by entry, so a directory that points past the end of the file is found
//! before any read; a hosted sparse file's redundant copy then stands in. Grain tables are
//! read on demand into a cache bounded in bytes and shared by all reading threads (the lock
//! is never held during I/O).

use super::layout::{Layout, Style};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Grain directories larger than this (entries) are not real images: at the smallest grain
/// and table sizes qemu and VMware write it already covers 8 TB.
const MAX_GD_ENTRIES: u64 = 1 << 24;
/// Grain table cache budget per extent.
const CACHE_BYTES: u64 = 16 << 20;

/// Where one grain's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Unallocated,
    Zero,
    /// Uncompressed at this byte offset of the extent file.
    Data(u64),
    /// A compressed grain (with its marker, if the extent has markers) at this byte offset.
    Compressed(u64),
}

impl Grain {
    /// Same kind for an extent map (data offsets do not matter).
    pub fn same_kind(self, other: Grain) -> bool {
        matches!(
            (self, other),
            (Grain::Unallocated, Grain::Unallocated)
                | (Grain::Zero, Grain::Zero)
                | (
                    Grain::Data(_) | Grain::Compressed(_),
                    Grain::Data(_) | Grain::Compressed(_)
                )
        )
    }
}

struct Cache {
    tables: HashMap<u64, Arc<Vec<u64>>>,
    order: VecDeque<u64>,
    cap: usize,
}

pub struct GrainMap {
    file: Arc<dyn BlockDev>,
    pub layout: Layout,
    pub grain_bytes: u64,
    /// Grains the directory covers.
    grains: u64,
    /// Byte offset of each grain table, 0 where none is allocated.
    gd: Vec<u64>,
    gt_bytes: u64,
    cache: Mutex<Cache>,
}

impl GrainMap {
    /// Reads and checks the grain directory (falling back to the redundant one where the
    /// primary is unusable, with a note).
    pub fn open(file: Arc<dyn BlockDev>, layout: Layout, notes: &mut Vec<String>) -> Result<Self> {
        let name = file.name().to_string();
        let grain_bytes = layout.grain_sectors * 512;
        let grains = layout.capacity_sectors.div_ceil(layout.grain_sectors);
        let needed = grains.div_ceil(layout.gtes_per_gt);
        let bad = |at: u64, d: String| Error::corrupt(&name, layout.structure, at, d);
        if let Some(n) = layout.gd_entries {
            if n < needed {
                return Err(bad(
                    layout.gd_offset,
                    format!(
                        "holds {n} entries, but the capacity of {} sectors needs {needed}",
                        layout.capacity_sectors
                    ),
                ));
            }
        }
        if needed > MAX_GD_ENTRIES {
            return Err(bad(
                layout.gd_offset,
                format!("the capacity of {} sectors needs {needed} directory entries, more than any real image ({MAX_GD_ENTRIES})", layout.capacity_sectors),
            ));
        }
        let gt_bytes = layout.gtes_per_gt * layout.entry_size;
        let primary = read_gd(&*file, &layout, layout.gd_offset, needed, gt_bytes);
        let gd = match primary {
            Ok(gd) => gd,
            Err(e) => match layout.rgd_offset {
                Some(r) => match read_gd(&*file, &layout, r, needed, gt_bytes) {
                    Ok(gd) => {
                        notes.push(format!(
                            "{name}: the primary grain directory is unusable ({e}); reading through the redundant grain directory at {r:#x}"
                        ));
                        gd
                    }
                    Err(_) => return Err(e),
                },
                None => return Err(e),
            },
        };
        let cap = (CACHE_BYTES / (layout.gtes_per_gt * 8)).clamp(4, 4096) as usize;
        Ok(GrainMap {
            file,
            grain_bytes,
            grains,
            gd,
            gt_bytes,
            layout,
            cache: Mutex::new(Cache {
                tables: HashMap::new(),
                order: VecDeque::new(),
                cap,
            }),
        })
    }

    pub fn file(&self) -> &Arc<dyn BlockDev> {
        &self.file
    }

    fn table(&self, gdi: u64) -> Result<Option<Arc<Vec<u64>>>> {
        let Some(&at) = self.gd.get(gdi as usize) else {
            return Ok(None);
        };
        if at == 0 {
            return Ok(None);
        }
        {
            let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = c.tables.get(&at) {
                return Ok(Some(t.clone()));
            }
        }
        // Bounds were checked when the directory was read.
        let mut raw = vec![0u8; self.gt_bytes as usize];
        self.file.read_at(&mut raw, at)?;
        let t: Vec<u64> = if self.layout.entry_size == 8 {
            raw.chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect()
        } else {
            raw.chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        };
        let t = Arc::new(t);
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !c.tables.contains_key(&at) {
            while c.tables.len() >= c.cap {
                match c.order.pop_front() {
                    Some(old) => {
                        c.tables.remove(&old);
                    }
                    None => break,
                }
            }
            c.tables.insert(at, t.clone());
            c.order.push_back(at);
        }
        Ok(Some(t))
    }

    /// Where grain `g` (counted from the start of the extent) lives.
    pub fn grain(&self, g: u64) -> Result<Grain> {
        if g >= self.grains {
            return Ok(Grain::Unallocated);
        }
        let gdi = g / self.layout.gtes_per_gt;
        let i = g % self.layout.gtes_per_gt;
        let Some(t) = self.table(gdi)? else {
            return Ok(Grain::Unallocated);
        };
        let raw = t.get(i as usize).copied().unwrap_or(0);
        let gt_at = self.gd.get(gdi as usize).copied().unwrap_or(0);
        self.decode(raw, gt_at, i)
    }

    /// Grain `g`'s kind and how many grains from `g` on (at most `max`) share it. Scans
    /// each table once, skips whole unallocated tables without reading them, and stops
    /// (rather than failing) at a damaged entry ahead, which fails when it is reached.
    pub fn run(&self, g: u64, max: u64) -> Result<(Grain, u64)> {
        let first = self.grain(g)?;
        let gtes = self.layout.gtes_per_gt;
        // Bounded scan: an extent map may return shorter runs than the truth.
        let limit = max.clamp(1, 1 << 20);
        let mut n = 1u64;
        while n < limit {
            let next = g + n;
            if next >= self.grains {
                if first == Grain::Unallocated {
                    n = limit;
                }
                break;
            }
            let gdi = next / gtes;
            let table_end = ((gdi + 1) * gtes).min(self.grains);
            let Some(t) = self.table(gdi)? else {
                if first != Grain::Unallocated {
                    break;
                }
                n = (table_end - g).min(limit);
                continue;
            };
            let gt_at = self.gd.get(gdi as usize).copied().unwrap_or(0);
            let mut i = next;
            while i < table_end && n < limit {
                let raw = t.get((i % gtes) as usize).copied().unwrap_or(0);
                match self.decode(raw, gt_at, i % gtes) {
                    Ok(s) if s.same_kind(first) => {}
                    _ => return Ok((first, n)),
                }
                n += 1;
                i += 1;
            }
        }
        Ok((first, n.min(limit)))
    }

    fn decode(&self, raw: u64, gt_at: u64, i: u64) -> Result<Grain> {
        let name = self.file.name();
        let entry_at = gt_at + i * self.layout.entry_size;
        let past_end = |off: u64| {
            Error::corrupt(
                name,
                "vmdk grain table",
                gt_at,
                format!(
                    "entry {i} (at {entry_at:#x}) points to {off:#x}, past the end of the file"
                ),
            )
        };
        let off = match self.layout.style {
            Style::Hosted { .. } => {
                if raw == 0 {
                    return Ok(Grain::Unallocated);
                }
                // Sector 1 is inside the header: as a grain address it can only mean the
                // zeroed-grain marker, with or without the header's flag.
                if raw == 1 {
                    return Ok(Grain::Zero);
                }
                raw * 512
            }
            Style::Cowd => {
                if raw == 0 {
                    return Ok(Grain::Unallocated);
                }
                raw * 512
            }
            Style::SeSparse { grains, .. } => match raw >> 60 {
                0 if raw == 0 => return Ok(Grain::Unallocated),
                1 | 2 => return Ok(Grain::Zero),
                3 => {
                    let idx = ((raw & 0x0fff_0000_0000_0000) >> 48)
                        | ((raw & 0x0000_ffff_ffff_ffff) << 12);
                    idx.checked_mul(self.grain_bytes)
                        .and_then(|b| b.checked_add(grains))
                        .ok_or_else(|| past_end(u64::MAX))?
                }
                _ => {
                    return Err(Error::corrupt(
                        name,
                        "vmdk seSparse grain table",
                        gt_at,
                        format!("entry {i} has the unknown value {raw:#018x}"),
                    ))
                }
            },
        };
        if off >= self.file.len() {
            return Err(past_end(off));
        }
        Ok(if self.layout.compressed {
            Grain::Compressed(off)
        } else {
            Grain::Data(off)
        })
    }
}

/// Reads `needed` directory entries at `at` and turns them into table byte offsets, checking
/// that each table lies inside the file.
fn read_gd(
    file: &dyn BlockDev,
    l: &Layout,
    at: u64,
    needed: u64,
    gt_bytes: u64,
) -> Result<Vec<u64>> {
    let name = file.name();
    let len = file.len();
    let bad = |d: String| Error::corrupt(name, l.structure, at, d);
    if needed == 0 {
        return Ok(Vec::new());
    }
    if at == 0 {
        return Err(bad("the directory offset is 0".into()));
    }
    let bytes = needed * l.entry_size;
    match at.checked_add(bytes) {
        Some(end) if end <= len => {}
        _ => {
            return Err(bad(format!(
                "{needed} entries ({bytes} bytes) reach past the end of the file ({len} bytes)"
            )))
        }
    }
    let mut raw = vec![0u8; bytes as usize];
    file.read_at(&mut raw, at)?;
    let mut gd = Vec::with_capacity(needed as usize);
    for (i, c) in raw.chunks_exact(l.entry_size as usize).enumerate() {
        let v = if l.entry_size == 8 {
            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
        } else {
            u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        };
        let off = match l.style {
            Style::Hosted { .. } | Style::Cowd => v * 512,
            Style::SeSparse { tables, .. } => {
                if v == 0 {
                    0
                } else if v & 0xffff_ffff_0000_0000 != 0x1000_0000_0000_0000 {
                    return Err(bad(format!("entry {i} has the unknown value {v:#018x}")));
                } else {
                    (v & 0xffff_ffff)
                        .checked_mul(gt_bytes)
                        .and_then(|o| o.checked_add(tables))
                        .unwrap_or(u64::MAX)
                }
            }
        };
        if off != 0 && off.checked_add(gt_bytes).is_none_or(|e| e > len) {
            return Err(bad(format!(
                "entry {i} places a grain table at {off:#x}, past the end of the file ({len} bytes)"
            )));
        }
        gd.push(off);
    }
    Ok(gd)
}
