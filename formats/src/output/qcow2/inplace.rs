//! Writing into an existing qcow2 image (`--in-place`): a writable `BlockDev`.
//!
//! New clusters are always appended at the end of the file, never taken from freed
//! space, and every change is ordered so that a crash at any point leaves at worst leaked
//! clusters (which `qemu-img check -r leaks` reclaims), never an entry pointing at
//! unwritten data or at a cluster whose refcount does not count it:
//! 1. the new cluster's refcount is set (its refcount block first, if it has none);
//! 2. the cluster's full contents are written (old bytes copied for a partial write:
//!    a compressed cluster, a zero cluster, or one that falls through to the backing);
//! 3. data is synced, then the L2 entry (a new L2 table likewise: written, counted, then
//!    the L1 entry) is written; a write spanning many clusters does steps 1-2 for up to
//!    `BATCH` of them and then one sync, so the cost is not one fsync per cluster;
//! 4. only then are references to the old host clusters (of a compressed cluster) dropped.
//!
//! Step 1 before 3 is what `qemu-img check` requires: a referenced cluster with refcount 0
//! is an error, an unreferenced one with refcount 1 only a leak.
//!
//! Old contents of clusters not yet stored as plain data are read through the qcow2
//! reader opened beside this writer: those clusters and their L2 entries are exactly the
//! ones this writer has not touched, so the reader's view of them is current.
//!
//! Not handled (refused when opening): internal snapshots (shared clusters), extended L2
//! entries, external data files, encryption, refcount widths other than 16 bits, images
//! marked dirty or corrupt. When the file outgrows its refcount table (qemu's first table
//! covers 16 TiB of file at 64 KiB clusters, only 8 MiB at 512-byte clusters) a larger
//! table is written at the end and the header switched to it last (`grow_table`).

use crate::blockdev::{BlockDev, Extent};
use crate::error::{check_range, Error, Result};
use crate::image::Image;
use crate::open::{open_image, OpenOptions};
use std::fs::{File, OpenOptions as FsOpen};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Incompatible bits this writer accepts: only the compression type (bit 3).
const INCOMPAT_OK: u64 = 1 << 3;

/// A qcow2 image open for writing in place.
pub struct Qcow2InPlace {
    name: String,
    size: u64,
    reader: Arc<dyn Image>,
    state: Mutex<State>,
}

struct State {
    file: File,
    cluster_bits: u32,
    cs: u64,
    l1_offset: u64,
    l1: Vec<u64>,
    rt_offset: u64,
    rt: Vec<u64>,
    /// Next free cluster index at the end of the file.
    eof: u64,
    file_len: u64,
    /// Writes so far, and the one that is made to fail (crash tests).
    writes: u64,
    fail_at: Option<u64>,
}

/// Big-endian fields from image bytes; a short buffer reads as 0 (callers pass fixed-size
/// headers and whole tables, so that never happens, but it must not panic if it did).
fn be64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}
fn be32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

/// Opens `path` for writing in place; backing files follow the default path policy.
pub fn open_writable(path: &Path) -> Result<Qcow2InPlace> {
    open_writable_with(path, &OpenOptions::default())
}

pub fn open_writable_with(path: &Path, options: &OpenOptions) -> Result<Qcow2InPlace> {
    let name = path.display().to_string();
    let file = FsOpen::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(&name, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(&name, e))?.len();
    let mut h = [0u8; 104];
    file.read_exact_at(&mut h, 0)
        .map_err(|_| Error::corrupt(&name, "qcow2 header", 0, "the file ends inside the header"))?;
    let bad = |o: u64, d: &str| Error::corrupt(&name, "qcow2 header", o, d);
    if &h[..4] != b"QFI\xfb" {
        return Err(bad(0, "not a qcow2 image (bad magic)"));
    }
    let version = be32(&h, 4);
    if !(2..=3).contains(&version) {
        return Err(Error::unsupported(
            &name,
            format!("qcow2 version {version}"),
        ));
    }
    let cluster_bits = be32(&h, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(bad(20, "cluster size out of range"));
    }
    let cs = 1u64 << cluster_bits;
    let size = be64(&h, 24);
    let unsupported = |f: &str| Err(Error::unsupported(&name, format!("writing in place: {f}")));
    if be32(&h, 32) != 0 {
        return unsupported("encrypted images");
    }
    let l1_size = be32(&h, 36) as u64;
    let l1_offset = be64(&h, 40);
    let rt_offset = be64(&h, 48);
    let rt_clusters = be32(&h, 56) as u64;
    if be32(&h, 60) != 0 {
        return unsupported("images with internal snapshots");
    }
    if version == 3 {
        let incompat = be64(&h, 72);
        if incompat & 1 != 0 {
            return Err(Error::refused(
                &name,
                "the image is marked dirty; run `qemu-img check -r all` on it first",
            ));
        }
        if incompat & !INCOMPAT_OK != 0 {
            return unsupported(&format!("incompatible features {incompat:#x}"));
        }
        if be32(&h, 96) != 4 {
            return unsupported("refcounts other than 16 bits wide");
        }
    }
    let entries_per_l2 = cs / 8;
    if l1_size < size.div_ceil(cs * entries_per_l2) || l1_size > (32 << 20) / 8 {
        return Err(bad(36, "the L1 table size does not match the disk size"));
    }
    let table_ok = |off: u64, len: u64| {
        off.is_multiple_of(cs) && off != 0 && off.checked_add(len).is_some_and(|e| e <= file_len)
    };
    if !table_ok(l1_offset, l1_size * 8) {
        return Err(bad(40, "the L1 table lies outside the file"));
    }
    if rt_clusters > (64 << 20) / cs || !table_ok(rt_offset, rt_clusters * cs) {
        return Err(bad(48, "the refcount table lies outside the file"));
    }
    let read_table = |off: u64, n: u64| -> Result<Vec<u64>> {
        let mut b = vec![0u8; (n * 8) as usize];
        file.read_exact_at(&mut b, off)
            .map_err(|e| Error::io(&name, e))?;
        Ok(b.chunks_exact(8).map(|c| be64(c, 0)).collect())
    };
    let l1 = read_table(l1_offset, l1_size)?;
    let rt = read_table(rt_offset, rt_clusters * cs / 8)?;
    let reader = open_image(path, options)?;
    Ok(Qcow2InPlace {
        name: name.clone(),
        size,
        reader,
        state: Mutex::new(State {
            file,
            cluster_bits,
            cs,
            l1_offset,
            l1,
            rt_offset,
            rt,
            eof: file_len.div_ceil(cs),
            file_len,
            writes: 0,
            fail_at: None,
        }),
    })
}

impl State {
    fn io(&self, name: &str, e: std::io::Error) -> Error {
        Error::io(name, e)
    }

    fn check_host(&self, name: &str, what: &str, at: u64, off: u64) -> Result<u64> {
        if !off.is_multiple_of(self.cs) || off == 0 || off.saturating_add(self.cs) > self.file_len {
            return Err(Error::corrupt(
                name,
                what,
                at,
                format!("entry points at {off:#x}, outside the file or unaligned"),
            ));
        }
        Ok(off)
    }

    /// The L2 entry of guest cluster `c` and where it lives (0 if no L2 table).
    fn l2_entry(&self, name: &str, c: u64) -> Result<(u64, u64)> {
        let per = self.cs / 8;
        let l1e = self.l1.get((c / per) as usize).copied().unwrap_or(0);
        let l2 = l1e & OFFSET_MASK;
        if l2 == 0 {
            return Ok((0, 0));
        }
        let l2 = self.check_host(name, "qcow2 L1 table", self.l1_offset, l2)?;
        let at = l2 + (c % per) * 8;
        let mut b = [0u8; 8];
        self.file
            .read_exact_at(&mut b, at)
            .map_err(|e| self.io(name, e))?;
        Ok((u64::from_be_bytes(b), at))
    }

    fn write_at(&mut self, name: &str, b: &[u8], off: u64) -> Result<()> {
        if self.fail_at == Some(self.writes) {
            return Err(Error::io(name, std::io::Error::other("injected crash")));
        }
        self.writes += 1;
        self.file
            .write_all_at(b, off)
            .map_err(|e| Error::io(name, e))?;
        self.file_len = self.file_len.max(off + b.len() as u64);
        Ok(())
    }

    fn sync(&self, name: &str) -> Result<()> {
        self.file.sync_data().map_err(|e| self.io(name, e))
    }

    /// Where the refcount of host cluster `hc` is stored, allocating its refcount block
    /// (self-counting, at the end of the file) if there is none.
    fn refcount_slot(&mut self, name: &str, hc: u64) -> Result<u64> {
        let per_block = self.cs / 2;
        let bi = hc / per_block;
        if bi >= self.rt.len() as u64 {
            self.grow_table(name, bi)?;
        }
        let Some(&be) = self.rt.get(bi as usize) else {
            return Err(Error::unsupported(
                name,
                "writing in place: a refcount table this large",
            ));
        };
        let block = if be == 0 {
            // The new block must count itself: put it where its own range starts being
            // used, which is the end of the file, and only if that lies in its range.
            let bc = self.eof;
            if bc / per_block != bi {
                return Err(Error::unsupported(
                    name,
                    "writing in place: a refcount block outside the range it covers",
                ));
            }
            self.eof += 1;
            let mut b = vec![0u8; self.cs as usize];
            let at = ((bc % per_block) * 2) as usize;
            b[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
            let off = bc * self.cs;
            self.write_at(name, &b, off)?;
            self.sync(name)?;
            self.write_at(name, &off.to_be_bytes(), self.rt_offset + bi * 8)?;
            self.rt[bi as usize] = off;
            off
        } else {
            self.check_host(
                name,
                "qcow2 refcount table",
                self.rt_offset,
                be & OFFSET_MASK,
            )?
        };
        Ok(block + (hc % per_block) * 2)
    }

    /// Replaces the refcount table by a larger one covering refcount block `need`, placed
    /// at the end of the file with the new refcount blocks it needs (which count the new
    /// area, themselves included). Crash-safe order: the new blocks and table are written
    /// and counts for the new area raised in existing blocks (only leaks if we stop
    /// there), synced; then the header's two table fields change in one 12-byte write
    /// inside the first sector, synced; only then are the old table's clusters released.
    fn grow_table(&mut self, name: &str, need: u64) -> Result<()> {
        let cs = self.cs;
        let per_block = cs / 2;
        let old_entries = self.rt.len() as u64;
        let want = (need + 2).max(old_entries + old_entries / 2);
        let start = self.eof;
        // Fixed point: the new area [start, end) holds `nb` new blocks then the table of
        // `nt` clusters, and the blocks cover the whole area.
        let (mut nb, mut nt) = (0u64, want.saturating_mul(8).div_ceil(cs));
        let mut new_blocks: Vec<u64>;
        loop {
            let end = start + nb + nt;
            let entries = (nt * cs / 8).max(want);
            let (lo, hi) = (start / per_block, (end - 1) / per_block);
            new_blocks = (lo..=hi)
                .filter(|&bi| {
                    self.rt
                        .get(bi as usize)
                        .is_none_or(|&e| e & OFFSET_MASK == 0)
                })
                .collect();
            let nt2 = entries.max(hi + 2).saturating_mul(8).div_ceil(cs);
            if new_blocks.len() as u64 == nb && nt2 == nt {
                break;
            }
            nb = new_blocks.len() as u64;
            nt = nt2;
        }
        if nt > (64 << 20) / cs {
            return Err(Error::unsupported(
                name,
                "writing in place: a refcount table over 64 MiB",
            ));
        }
        let end = start + nb + nt;
        let table_at = (start + nb) * cs;
        let mut table = self.rt.clone();
        table.resize((nt * cs / 8) as usize, 0);
        // The new blocks: ones for the new area's clusters in their range.
        for (k, &bi) in new_blocks.iter().enumerate() {
            let at = (start + k as u64) * cs;
            let mut b = vec![0u8; cs as usize];
            for c in start.max(bi * per_block)..end.min((bi + 1) * per_block) {
                let i = ((c % per_block) * 2) as usize;
                b[i..i + 2].copy_from_slice(&1u16.to_be_bytes());
            }
            self.write_at(name, &b, at)?;
            if let Some(slot) = table.get_mut(bi as usize) {
                *slot = at;
            }
        }
        // Existing blocks covering part of the new area count it too.
        for c in start..end {
            let bi = c / per_block;
            if new_blocks.contains(&bi) {
                continue;
            }
            let be = self.rt.get(bi as usize).copied().unwrap_or(0) & OFFSET_MASK;
            let be = self.check_host(name, "qcow2 refcount table", self.rt_offset, be)?;
            self.write_at(name, &1u16.to_be_bytes(), be + (c % per_block) * 2)?;
        }
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.write_at(name, &bytes, table_at)?;
        self.sync(name)?;
        let mut h = [0u8; 12];
        h[..8].copy_from_slice(&table_at.to_be_bytes());
        h[8..].copy_from_slice(&(nt as u32).to_be_bytes());
        self.write_at(name, &h, 48)?;
        self.sync(name)?;
        let (old_at, old_clusters) = (self.rt_offset, (old_entries * 8).div_ceil(cs));
        self.rt = table;
        self.rt_offset = table_at;
        self.eof = end;
        for c in 0..old_clusters {
            self.add_ref(name, old_at / cs + c, -1)?;
        }
        Ok(())
    }

    fn add_ref(&mut self, name: &str, hc: u64, delta: i32) -> Result<()> {
        let slot = self.refcount_slot(name, hc)?;
        let mut b = [0u8; 2];
        self.file
            .read_exact_at(&mut b, slot)
            .map_err(|e| self.io(name, e))?;
        let v = i32::from(u16::from_be_bytes(b)) + delta;
        let v = u16::try_from(v).map_err(|_| {
            Error::corrupt(name, "qcow2 refcount block", slot, "refcount out of range")
        })?;
        self.write_at(name, &v.to_be_bytes(), slot)
    }

    /// A new host cluster at the end of the file, already counted once.
    fn alloc(&mut self, name: &str) -> Result<u64> {
        loop {
            let hc = self.eof;
            self.refcount_slot(name, hc)?;
            // A new refcount block may have taken that cluster: then try the next one.
            if self.eof == hc {
                self.eof = hc + 1;
                self.add_ref(name, hc, 1)?;
                return Ok(hc * self.cs);
            }
        }
    }

    /// The L2 table covering guest cluster `c`, allocating an empty one if needed.
    fn l2_table(&mut self, name: &str, c: u64) -> Result<u64> {
        let per = self.cs / 8;
        let i = (c / per) as usize;
        let l1e = self.l1.get(i).copied().unwrap_or(0);
        if l1e & OFFSET_MASK != 0 {
            return self.check_host(name, "qcow2 L1 table", self.l1_offset, l1e & OFFSET_MASK);
        }
        let off = self.alloc(name)?;
        self.write_at(name, &vec![0u8; self.cs as usize], off)?;
        self.sync(name)?;
        let e = off | COPIED;
        self.write_at(name, &e.to_be_bytes(), self.l1_offset + i as u64 * 8)?;
        if let Some(slot) = self.l1.get_mut(i) {
            *slot = e;
        }
        Ok(off)
    }

    /// Host clusters a compressed entry references.
    fn compressed_clusters(&self, e: u64) -> (u64, u64) {
        let x = 62 - (self.cluster_bits - 8);
        let host = e & ((1u64 << x) - 1);
        let sectors = ((e >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
        let end = (host & !511) + sectors * 512;
        (host / self.cs, (end - 1) / self.cs)
    }
}

/// A cluster copied on write whose data is written but not yet referenced.
struct Pending {
    c: u64,
    host: u64,
    table: u64,
    old: u64,
}

impl Qcow2InPlace {
    /// Host writes made so far (metadata and data), for crash tests.
    #[doc(hidden)]
    pub fn host_writes(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).writes
    }

    /// Makes host write number `n` (counting from 0) and every later one fail, as if the
    /// machine stopped there: what is on disk is what a crash at that point leaves.
    #[doc(hidden)]
    pub fn crash_at_write(&self, n: u64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).fail_at = Some(n);
    }
}

/// Copies on write per batch: one sync before the batch's L2 entries instead of one per
/// cluster, which is what makes a multi-MiB commit take milliseconds, not seconds.
const BATCH: usize = 4096;

impl Qcow2InPlace {
    /// Writes within guest cluster `c`: `data` at `within`. A cluster that is not yet
    /// plain data gets a fresh host cluster (counted, then written) and is returned to be
    /// referenced by [`Self::finish`].
    fn write_cluster(
        &self,
        st: &mut State,
        c: u64,
        within: u64,
        data: &[u8],
    ) -> Result<Option<Pending>> {
        let name = &self.name;
        let (entry, _) = st.l2_entry(name, c)?;
        let plain = entry & COMPRESSED == 0 && entry & OFFSET_MASK != 0 && entry & 1 == 0;
        if plain {
            let host = st.check_host(name, "qcow2 L2 table", 0, entry & OFFSET_MASK)?;
            st.write_at(name, data, host + within)?;
            return Ok(None);
        }
        // Copy on write: old contents, new bytes over them, a fresh cluster.
        let cs = st.cs;
        let start = c * cs;
        let len = cs.min(self.size - start) as usize;
        let mut buf = vec![0u8; cs as usize];
        if data.len() < len {
            let zero = entry & COMPRESSED == 0 && entry & 1 == 1;
            if !zero {
                self.reader.read_at(&mut buf[..len], start)?;
            }
        }
        buf[within as usize..within as usize + data.len()].copy_from_slice(data);
        let table = st.l2_table(name, c)?;
        let host = st.alloc(name)?;
        st.write_at(name, &buf, host)?;
        Ok(Some(Pending {
            c,
            host,
            table,
            old: entry,
        }))
    }

    /// Makes a batch of written clusters visible: data synced, then the L2 entries, then
    /// (synced again) the old clusters' references dropped.
    fn finish(&self, st: &mut State, batch: &mut Vec<Pending>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let name = &self.name;
        let cs = st.cs;
        let per = cs / 8;
        st.sync(name)?;
        for p in batch.iter() {
            st.write_at(
                name,
                &(p.host | COPIED).to_be_bytes(),
                p.table + (p.c % per) * 8,
            )?;
        }
        if batch.iter().any(|p| p.old & OFFSET_MASK != 0) {
            st.sync(name)?;
        }
        for p in batch.drain(..) {
            if p.old & COMPRESSED != 0 {
                let (a, b) = st.compressed_clusters(p.old);
                for hc in a..=b {
                    st.add_ref(name, hc, -1)?;
                }
            } else if p.old & OFFSET_MASK != 0 {
                st.add_ref(name, (p.old & OFFSET_MASK) / cs, -1)?;
            }
        }
        Ok(())
    }
}

impl BlockDev for Qcow2InPlace {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.size)?;
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let c = pos / st.cs;
            let within = pos % st.cs;
            let n = ((st.cs - within) as usize).min(buf.len() - done);
            let (entry, _) = st.l2_entry(&self.name, c)?;
            let piece = &mut buf[done..done + n];
            if entry & COMPRESSED == 0 && entry & OFFSET_MASK != 0 && entry & 1 == 0 {
                let host = st.check_host(&self.name, "qcow2 L2 table", 0, entry & OFFSET_MASK)?;
                st.file
                    .read_exact_at(piece, host + within)
                    .map_err(|e| Error::io(&self.name, e))?;
            } else {
                // Untouched by this writer: the reader's view is current.
                self.reader.read_at(piece, pos)?;
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.size)?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = 0usize;
        let mut batch = Vec::new();
        while done < buf.len() {
            let pos = offset + done as u64;
            let c = pos / st.cs;
            let within = pos % st.cs;
            let n = ((st.cs - within) as usize).min(buf.len() - done);
            let r = self.write_cluster(&mut st, c, within, &buf[done..done + n]);
            match r {
                Ok(Some(p)) => batch.push(p),
                Ok(None) => {}
                Err(e) => {
                    // What was written before the failure still becomes visible.
                    let _ = self.finish(&mut st, &mut batch);
                    return Err(e);
                }
            }
            if batch.len() >= BATCH {
                self.finish(&mut st, &mut batch)?;
            }
            done += n;
        }
        self.finish(&mut st, &mut batch)
    }

    fn flush(&self) -> Result<()> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.file.sync_all().map_err(|e| Error::io(&self.name, e))
    }

    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(&self.name, offset, 1, self.size)?;
        let cs = self.state.lock().unwrap_or_else(|p| p.into_inner()).cs;
        Ok(Extent {
            kind: crate::blockdev::ExtentKind::Data,
            len: cs - offset % cs,
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}
