//! qcow2 (versions 2 and 3): the format of KVM and of most converted guests.
//!
//! Our own synchronous reader rather than `qcow2-rs`: that crate is async-only, not
//! `Sync`, opens by path (so extents of an OVA could not be read in place), resolves a
//! relative backing file against the working directory and panics when it is missing, and
//! lacks zstd and extended L2. Here every L1/L2 entry is checked against the file before
//! use, backing files go through the folder policy, and reads run from many threads with
//! only the L2 cache behind a lock.

mod compressed;
mod header;
mod l2_table;

use crate::blockdev::{BlockDev, Extent, ExtentKind};
use crate::error::{check_range, Error, Result};
use crate::image::{Image, ImageInfo};
use crate::open::{host_allocated, OpenCtx};
use crate::probe::Format;
use header::{Compression, Header};
use l2_table::{decode, span, Mapping, OFFSET_MASK};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// L2 tables kept in memory: 32 MiB of them covers 256 GiB of guest at 64 KiB clusters.
const L2_CACHE_BYTES: u64 = 32 << 20;
/// Decompressed clusters kept: sequential readers ask for one cluster in several pieces.
const INFLATED_CACHE: usize = 8;

type Inflated = Arc<Vec<u8>>;

pub struct Qcow2 {
    file: Arc<dyn BlockDev>,
    path: PathBuf,
    name: String,
    h: Header,
    l1: Vec<u64>,
    /// Bytes per L2 entry: 8, or 16 with extended L2.
    entry_len: u64,
    backing: Option<Arc<dyn Image>>,
    backing_reference: Option<String>,
    notes: Vec<String>,
    l2_cache: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    inflated: Mutex<VecDeque<(u64, Inflated)>>,
}

/// Opens a qcow2 image whose host file is `file` (at `path`, for messages and for
/// resolving its backing file).
pub fn open(file: Arc<dyn BlockDev>, path: &Path, ctx: &OpenCtx) -> Result<Arc<dyn Image>> {
    Ok(Arc::new(Qcow2::open(file, path, ctx)?))
}

impl Qcow2 {
    fn open(file: Arc<dyn BlockDev>, path: &Path, ctx: &OpenCtx) -> Result<Qcow2> {
        let name = path.display().to_string();
        let len = file.len();
        // The header and its extensions live in the first cluster (at most 2 MiB).
        let mut head = vec![0u8; len.min(2 << 20) as usize];
        file.read_at(&mut head, 0)?;
        let h = Header::parse(&name, &head)?;
        let cs = h.cluster_size();
        if h.crypt_method != 0 || h.has_crypto_ext {
            return Err(Error::unsupported(&name, "encrypted qcow2 (AES/LUKS) is not supported; decrypt it with `qemu-img convert --object secret,... --image-opts` first"));
        }
        if h.incompatible & header::INCOMPAT_DATA_FILE != 0 || h.data_file.is_some() {
            return Err(Error::unsupported(
                &name,
                format!(
                    "qcow2 with an external data file ({}); convert it with qemu-img first",
                    h.data_file.as_deref().unwrap_or("unnamed")
                ),
            ));
        }
        if let Some(bits) = h.unknown_incompatible() {
            return Err(Error::unsupported(
                &name,
                format!("unknown qcow2 incompatible feature {bits}"),
            ));
        }
        if h.version == 2 && h.incompatible != 0 {
            return Err(Error::corrupt(
                &name,
                "qcow2 header",
                72,
                "a version 2 header with feature bits",
            ));
        }
        let mut notes = Vec::new();
        if h.incompatible & header::INCOMPAT_DIRTY != 0 {
            notes.push("the dirty bit is set (not closed cleanly): refcounts may be stale; data reads are unaffected".into());
        }
        if h.incompatible & header::INCOMPAT_CORRUPT != 0 {
            notes.push(
                "qemu marked this image corrupt; check it with `qemu-img check` before trusting it"
                    .into(),
            );
        }
        if h.nb_snapshots > 0 {
            notes.push(format!(
                "{} internal snapshot(s); the current state is read",
                h.nb_snapshots
            ));
        }
        let entry_len = if h.extended_l2() { 16 } else { 8 };
        let l2_entries = cs / entry_len;
        let per_l1 = cs.saturating_mul(l2_entries);
        let needed_l1 = h.size.div_ceil(per_l1);
        if (h.l1_size as u64) < needed_l1 {
            return Err(Error::corrupt(
                &name,
                "qcow2 header",
                36,
                format!(
                    "l1_size {} is too small for a {}-byte disk (needs {needed_l1})",
                    h.l1_size, h.size
                ),
            ));
        }
        let l1_bytes = needed_l1 * 8;
        if h.l1_offset % cs != 0 || h.l1_offset.checked_add(l1_bytes).is_none_or(|e| e > len) {
            return Err(Error::corrupt(
                &name,
                "qcow2 L1 table",
                h.l1_offset,
                format!(
                    "{needed_l1} entries at {:#x} lie past the end of the file or are misaligned",
                    h.l1_offset
                ),
            ));
        }
        let mut raw = vec![0u8; l1_bytes as usize];
        file.read_at(&mut raw, h.l1_offset)?;
        let l1: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])) & OFFSET_MASK)
            .collect();
        for (i, &e) in l1.iter().enumerate() {
            if e != 0 && (e % cs != 0 || e.checked_add(cs).is_none_or(|x| x > len)) {
                return Err(Error::corrupt(&name, "qcow2 L1 table", h.l1_offset + i as u64 * 8, format!(
                    "entry {i} points to an L2 table at {e:#x}, past the end of the file or misaligned"
                )));
            }
        }
        let mut q = Qcow2 {
            file,
            path: path.to_path_buf(),
            name,
            h,
            l1,
            entry_len,
            backing: None,
            backing_reference: None,
            notes,
            l2_cache: Mutex::new(HashMap::new()),
            inflated: Mutex::new(VecDeque::new()),
        };
        q.open_backing(ctx, &head)?;
        Ok(q)
    }

    fn open_backing(&mut self, ctx: &OpenCtx, head: &[u8]) -> Result<()> {
        if self.h.backing_offset == 0 || self.h.backing_size == 0 {
            return Ok(());
        }
        let (off, sz) = (self.h.backing_offset, self.h.backing_size as u64);
        if sz > 1023 {
            return Err(Error::corrupt(
                &self.name,
                "qcow2 backing file name",
                off,
                format!("{sz} bytes, more than the 1023 allowed"),
            ));
        }
        let raw = off
            .checked_add(sz)
            .and_then(|e| head.get(off as usize..e as usize))
            .ok_or_else(|| {
                Error::corrupt(
                    &self.name,
                    "qcow2 backing file name",
                    off,
                    "the name lies outside the first cluster",
                )
            })?;
        let reference = String::from_utf8_lossy(raw).into_owned();
        // qemu treats these prefixes as block drivers or network protocols, not files.
        const PROTOCOLS: &[&str] = &[
            "json:",
            "nbd:",
            "nbd+",
            "file:",
            "http:",
            "https:",
            "ftp:",
            "ftps:",
            "ssh:",
            "iscsi:",
            "rbd:",
            "gluster",
            "host_device:",
            "host_cdrom:",
            "nfs:",
            "vvfat:",
        ];
        if reference.contains("://") || PROTOCOLS.iter().any(|p| reference.starts_with(p)) {
            return Err(Error::unsupported(
                &self.name,
                format!("a backing file given as a protocol or JSON ('{reference}')"),
            ));
        }
        let format = match self.h.backing_format.as_deref() {
            Some(f) => f.parse::<Format>().ok(),
            None => None,
        };
        let b = ctx.open_backing(&self.path, &reference, format)?;
        self.backing_reference = Some(reference);
        self.backing = Some(b);
        Ok(())
    }

    /// The L2 table at `off`, from the cache or the file.
    fn l2(&self, off: u64) -> Result<Arc<Vec<u8>>> {
        let cs = self.h.cluster_size();
        {
            let c = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = c.get(&off) {
                return Ok(t.clone());
            }
        }
        let mut t = vec![0u8; cs as usize];
        self.file.read_at(&mut t, off)?;
        let t = Arc::new(t);
        let mut c = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
        if (c.len() as u64 + 1) * cs > L2_CACHE_BYTES {
            c.clear();
        }
        c.insert(off, t.clone());
        Ok(t)
    }

    /// What the guest byte at `pos` maps to, and for how many bytes from there.
    /// The run is extended over following entries only until it covers `want` bytes, so
    /// a small read does not scan the rest of a large table.
    fn map(&self, pos: u64, want: u64) -> Result<(Mapping, u64)> {
        let cb = self.h.cluster_bits;
        let cs = self.h.cluster_size();
        let l2_entries = cs / self.entry_len;
        let cluster = pos >> cb;
        let within = pos & (cs - 1);
        let l1_idx = cluster / l2_entries;
        let l2_idx = cluster % l2_entries;
        let l2_off = self.l1.get(l1_idx as usize).copied().unwrap_or(0);
        if l2_off == 0 {
            // No L2 table: the whole range it would cover is unallocated, so say so in one
            // step (an empty overlay of a 1 TiB disk is 2048 steps, not 16 million).
            let per_l1 = cs * l2_entries;
            return Ok((Mapping::Unallocated, per_l1 - pos % per_l1));
        }
        let t = self.l2(l2_off)?;
        let at = (l2_idx * self.entry_len) as usize;
        let word = |o: usize| {
            t.get(o..o + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
        };
        let entry = word(at);
        let ext = self.h.extended_l2().then(|| word(at + 8));
        let m = decode(entry, ext, within, cb, self.h.version == 3);
        let entry_off = l2_off + at as u64;
        let len = self.file.len();
        let unit = if self.h.extended_l2() { cs >> 5 } else { cs };
        let m = match m {
            Mapping::Data(unit_host) => {
                // The cluster must be aligned, not the header, and inside the file (its last
                // cluster may be short: qemu does not pad it, so compare with the file
                // rounded up to a cluster).
                let base = entry & OFFSET_MASK;
                let what = if base == 0 || !base.is_multiple_of(cs) {
                    Some("a misaligned or zero host offset")
                } else if base
                    .checked_add(cs)
                    .is_none_or(|e| e > len.div_ceil(cs) * cs)
                {
                    Some("past the end of the file")
                } else {
                    None
                };
                if let Some(what) = what {
                    return Err(Error::corrupt(
                        &self.name,
                        "qcow2 L2 table",
                        l2_off,
                        format!("entry {l2_idx} (at {entry_off:#x}) points to {base:#x}, {what}"),
                    ));
                }
                // The exact host byte for `pos`.
                Mapping::Data(unit_host + within % unit)
            }
            Mapping::Compressed(host, _) if host >= len => {
                return Err(Error::corrupt(&self.name, "qcow2 L2 table", l2_off, format!(
                    "entry {l2_idx} (at {entry_off:#x}) points to compressed data at {host:#x}, past the end of the file"
                )));
            }
            other => other,
        };
        let compressed = matches!(m, Mapping::Compressed(..));
        let mut run = span(within, cb, self.h.extended_l2(), compressed);
        if ext.is_none() && !compressed {
            // Extend the run over the following entries of this table that continue it
            // (unallocated, zero, or data right after data in the file): callers then
            // take one step per run, not one per cluster, even on a hostile table.
            let file_end = len.div_ceil(cs) * cs;
            let mut next_host = match m {
                Mapping::Data(h) => h - within + cs,
                _ => 0,
            };
            for i in l2_idx + 1..l2_entries {
                if run >= want {
                    break;
                }
                let m2 = decode(word((i * 8) as usize), None, 0, cb, self.h.version == 3);
                let same = match (m, m2) {
                    (Mapping::Data(_), Mapping::Data(h2)) => {
                        h2 == next_host && h2.checked_add(cs).is_some_and(|e| e <= file_end)
                    }
                    (Mapping::Zero, Mapping::Zero) => true,
                    (Mapping::Unallocated, Mapping::Unallocated) => true,
                    _ => false,
                };
                if !same {
                    break;
                }
                run += cs;
                next_host += cs;
            }
        }
        Ok((m, run))
    }

    /// Bytes to read for a compressed cluster: the stored length, clipped to the file (the
    /// last cluster's sectors may run past its end) and to what one cluster can need.
    fn compressed_len(&self, host: u64, size: u64) -> u64 {
        let cs = self.h.cluster_size();
        self.file
            .len()
            .saturating_sub(host)
            .min(size)
            .min(2 * cs + 4096)
    }

    fn decompress(&self, host: u64, src: &[u8], out: &mut [u8]) -> Result<()> {
        compressed::decompress(self.h.compression, src, out)
            .map_err(|d| Error::corrupt(&self.name, "qcow2 compressed cluster", host, d))
    }

    /// Inflates whole compressed clusters straight into `out` (a multiple of the cluster
    /// size), starting with the one at `first`. Clusters stored one after another in the
    /// file (as `qemu-img convert -c` writes them) are fetched with one read. Returns the
    /// bytes filled: at least one cluster.
    fn read_compressed_run(&self, out: &mut [u8], pos: u64, first: (u64, u64)) -> Result<usize> {
        let cs = self.h.cluster_size();
        let mut run = vec![first];
        let (start, mut end) = (first.0, first.0 + self.compressed_len(first.0, first.1));
        while (run.len() as u64 + 1) * cs <= out.len() as u64 && run.len() < 256 {
            let next = pos + run.len() as u64 * cs;
            match self.map(next, cs)? {
                (Mapping::Compressed(h, size), _)
                    if h >= start && h <= end + 4096 && h - start < 8 << 20 =>
                {
                    end = end.max(h + self.compressed_len(h, size));
                    run.push((h, size));
                }
                _ => break,
            }
        }
        let mut src = vec![0u8; (end - start) as usize];
        self.file.read_at(&mut src, start)?;
        for (i, (h, size)) in run.iter().enumerate() {
            let from = (h - start) as usize;
            let to = from + self.compressed_len(*h, *size) as usize;
            let dst = out
                .get_mut(i * cs as usize..(i + 1) * cs as usize)
                .unwrap_or_default();
            let piece = src.get(from..to).unwrap_or_default();
            self.decompress(*h, piece, dst)?;
        }
        Ok(run.len() * cs as usize)
    }

    fn inflate(&self, host: u64, size: u64) -> Result<Inflated> {
        {
            let c = self.inflated.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, d)) = c.iter().find(|(h, _)| *h == host) {
                return Ok(d.clone());
            }
        }
        let cs = self.h.cluster_size() as usize;
        let mut src = vec![0u8; self.compressed_len(host, size) as usize];
        self.file.read_at(&mut src, host)?;
        let mut out = vec![0u8; cs];
        self.decompress(host, &src, &mut out)?;
        let out = Arc::new(out);
        let mut c = self.inflated.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= INFLATED_CACHE {
            c.pop_front();
        }
        c.push_back((host, out.clone()));
        Ok(out)
    }

    fn read_backing(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        match &self.backing {
            Some(b) => {
                let avail = b.len().saturating_sub(pos).min(buf.len() as u64) as usize;
                let (head, tail) = buf.split_at_mut(avail);
                if !head.is_empty() {
                    b.read_at(head, pos)?;
                }
                tail.fill(0);
            }
            None => buf.fill(0),
        }
        Ok(())
    }
}

impl BlockDev for Qcow2 {
    fn len(&self) -> u64 {
        self.h.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.h.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (m, run) = self.map(pos, (buf.len() - done) as u64)?;
            let mut n = (run as usize).min(buf.len() - done);
            match m {
                Mapping::Data(host) => {
                    // Host-contiguous clusters are read in one go.
                    let mut next_host = host + n as u64;
                    while done + n < buf.len() {
                        match self.map(pos + n as u64, (buf.len() - done - n) as u64)? {
                            (Mapping::Data(h2), run2) if h2 == next_host => {
                                let add = (run2 as usize).min(buf.len() - done - n);
                                n += add;
                                next_host += add as u64;
                            }
                            _ => break,
                        }
                    }
                    let avail = self.file.len().saturating_sub(host).min(n as u64) as usize;
                    let (a, b) = buf[done..done + n].split_at_mut(avail);
                    if !a.is_empty() {
                        self.file.read_at(a, host)?;
                    }
                    b.fill(0);
                }
                Mapping::Compressed(host, size)
                    if pos.is_multiple_of(self.h.cluster_size())
                        && n as u64 == self.h.cluster_size() =>
                {
                    n = self.read_compressed_run(&mut buf[done..], pos, (host, size))?;
                }
                Mapping::Compressed(host, size) => {
                    let data = self.inflate(host, size)?;
                    let within = (pos & (self.h.cluster_size() - 1)) as usize;
                    let src = data.get(within..within + n).ok_or_else(|| {
                        Error::corrupt(
                            &self.name,
                            "qcow2 compressed cluster",
                            host,
                            "short cluster",
                        )
                    })?;
                    buf[done..done + n].copy_from_slice(src);
                }
                Mapping::Zero | Mapping::Unallocated => {
                    // Runs of the same kind become one fill or one backing read.
                    while done + n < buf.len() {
                        match self.map(pos + n as u64, (buf.len() - done - n) as u64)? {
                            (m2, run2) if m2 == m => {
                                n += (run2 as usize).min(buf.len() - done - n);
                            }
                            _ => break,
                        }
                    }
                    if m == Mapping::Zero {
                        buf[done..done + n].fill(0);
                    } else {
                        self.read_backing(&mut buf[done..done + n], pos)?;
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(&self.name, offset, 1, self.h.size)?;
        let kind_of = |m: Mapping| match m {
            Mapping::Data(_) | Mapping::Compressed(..) => Some(ExtentKind::Data),
            Mapping::Zero => Some(ExtentKind::Zero),
            Mapping::Unallocated => None,
        };
        let (m, run) = self.map(offset, u64::MAX)?;
        let size = self.h.size;
        let first = kind_of(m);
        let mut end = (offset + run).min(size);
        // Merge following units of the same kind, up to 64 Ki units per call.
        let mut steps = 0;
        while end < size && steps < 65536 {
            let (m2, r2) = self.map(end, u64::MAX)?;
            if kind_of(m2) != first {
                break;
            }
            end = (end + r2).min(size);
            steps += 1;
        }
        match first {
            Some(kind) => Ok(Extent {
                kind,
                len: end - offset,
            }),
            None => match &self.backing {
                Some(b) if offset < b.len() => {
                    let e = b.extent_at(offset)?;
                    Ok(Extent {
                        kind: e.kind,
                        len: e.len.min(end - offset).max(1),
                    })
                }
                Some(_) => Ok(Extent {
                    kind: ExtentKind::Unallocated,
                    len: end - offset,
                }),
                None => Ok(Extent {
                    kind: ExtentKind::Unallocated,
                    len: end - offset,
                }),
            },
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Image for Qcow2 {
    fn info(&self) -> ImageInfo {
        let mut i = ImageInfo::new(&self.name, Format::Qcow2, self.h.size);
        i.subformat = Some(if self.h.version == 2 {
            "v2".into()
        } else {
            "v3".into()
        });
        i.file_bytes = host_allocated(&self.path);
        i.cluster_size = Some(self.h.cluster_size());
        i.dirty = self.h.incompatible & (header::INCOMPAT_DIRTY | header::INCOMPAT_CORRUPT) != 0;
        let d = &mut i.details;
        d.insert(
            "compat".into(),
            if self.h.version == 2 {
                "0.10".into()
            } else {
                "1.1".into()
            },
        );
        d.insert(
            "refcount_bits".into(),
            (1u64 << self.h.refcount_order.min(6)).to_string(),
        );
        d.insert(
            "compression".into(),
            match self.h.compression {
                Compression::Zlib => "zlib".into(),
                Compression::Zstd => "zstd".into(),
            },
        );
        d.insert("extended_l2".into(), self.h.extended_l2().to_string());
        d.insert("nb_snapshots".into(), self.h.nb_snapshots.to_string());
        d.insert("l1_size".into(), self.h.l1_size.to_string());
        if let Some(f) = &self.h.backing_format {
            d.insert("backing_format".into(), f.clone());
        }
        i.notes = self.notes.clone();
        i.backing_reference = self.backing_reference.clone();
        i.backing = self.backing.as_ref().map(|b| Box::new(b.info()));
        i
    }
}
