//! One change to the filesystem, built in memory and written at the end: the AGs it
//! touches (cloned from the writer's state, so a failure anywhere drops the clones and
//! nothing was written), the inodes it changes, new metadata blocks and file data.
//! [`Txn::commit`] lays out the changed trees, adjusts the superblock counters by what
//! the AGs gained or lost, and only then writes: file data first, then metadata.

use super::bmbt::{self, Extent, Fork};
use super::bmbt_write::{self, MAX_EXTLEN};
use super::bytes::{be64, put32, put64, set_crc};
use super::dinode::RawInode;
use super::ialloc::{self, Blocks, InodeAg};
use super::inode::{Inode, FMT_BTREE, FMT_EXTENTS};
use super::rmap::{F_ATTR, F_BMBT, F_UNWRITTEN, OWN_INOBT, OWN_INODES};
use super::space::AgSpace;
use super::volume::Volume;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

const SYMLINK_MAGIC: u32 = 0x5853_4c4d; // "XSLM"
const SYMLINK_HDR: usize = 56;

/// What the writer keeps between changes: the AGs it has loaded, as last written.
#[derive(Default)]
pub(crate) struct State {
    pub ags: BTreeMap<u32, AgSpace>,
    pub iags: BTreeMap<u32, InodeAg>,
}

pub(crate) struct Txn<'a> {
    vol: &'a Volume,
    state: &'a mut State,
    ags: BTreeMap<u32, AgSpace>,
    /// Each touched AG's share of the superblock free count before the change.
    sb_free_before: BTreeMap<u32, i64>,
    iags: BTreeMap<u32, InodeAg>,
    pub inodes: BTreeMap<u64, RawInode>,
    meta: Vec<(u64, Vec<u8>)>,
    data: Vec<(u64, &'a [u8])>,
    ifree_delta: i64,
    icount_delta: i64,
    /// Inode chunks made in this change: byte offset and initialised inodes.
    new_chunks: Vec<(u64, u64, Vec<u8>)>,
}

impl<'a> Txn<'a> {
    pub fn new(vol: &'a Volume, state: &'a mut State) -> Txn<'a> {
        Txn {
            vol,
            state,
            ags: BTreeMap::new(),
            sb_free_before: BTreeMap::new(),
            iags: BTreeMap::new(),
            inodes: BTreeMap::new(),
            meta: Vec::new(),
            data: Vec::new(),
            ifree_delta: 0,
            icount_delta: 0,
            new_chunks: Vec::new(),
        }
    }

    fn no_space(&self, what: &str) -> Error {
        Error::NoSpace(format!("{}: {what}", self.vol.name()))
    }

    pub fn ag(&mut self, agno: u32) -> Result<&mut AgSpace> {
        if !self.ags.contains_key(&agno) {
            let a = match self.state.ags.get(&agno) {
                Some(a) => a.clone(),
                None => AgSpace::load(self.vol, agno)?,
            };
            self.sb_free_before.insert(agno, a.sb_free());
            self.ags.insert(agno, a);
        }
        self.ags
            .get_mut(&agno)
            .ok_or_else(|| self.vol.corrupt("AG", 0, "vanished"))
    }

    fn iag(&mut self, agno: u32) -> Result<&mut InodeAg> {
        if !self.iags.contains_key(&agno) {
            let a = match self.state.iags.get(&agno) {
                Some(a) => a.clone(),
                None => InodeAg::load(self.vol, agno)?,
            };
            self.iags.insert(agno, a);
        }
        self.iags
            .get_mut(&agno)
            .ok_or_else(|| self.vol.corrupt("AGI", 0, "vanished"))
    }

    fn split(&self, fsb: u64) -> (u32, u32) {
        let l = self.vol.sb.agblklog;
        ((fsb >> l) as u32, (fsb & ((1 << l) - 1)) as u32)
    }

    fn fsb(&self, agno: u32, agbno: u32) -> u64 {
        u64::from(agno) << self.vol.sb.agblklog | u64::from(agbno)
    }

    pub fn ag_of_ino(&self, ino: u64) -> u32 {
        let bits = u32::from(self.vol.sb.agblklog) + u32::from(self.vol.sb.inopblog);
        (ino >> bits) as u32
    }

    /// AG numbers, `first` first.
    fn order(&self, first: u32) -> Vec<u32> {
        let n = self.vol.sb.agcount;
        (0..n).map(|i| (first % n + i) % n).collect()
    }

    /// Ends `owner`'s use of `len` blocks from `fsb` at `offset` (with rmap flags): its
    /// reverse mapping goes, shared blocks lose one reference and the rest are freed.
    pub fn free(&mut self, fsb: u64, len: u64, owner: u64, offset: u64) -> Result<()> {
        let (agno, agbno) = self.split(fsb);
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        let vol = self.vol;
        let at = vol.sb.fsb_offset(fsb).unwrap_or(0);
        let ag = self.ag(agno)?;
        if ag.is_shared(agbno, len32) && ag.has_cow() {
            return Err(Error::Refused {
                dev: vol.name().to_string(),
                reason: format!(
                    "inode {owner} shares blocks with another file and AG {agno} holds \
                     copy-on-write staging extents the kernel left behind; mount and unmount \
                     the filesystem once under Linux so it cleans them up"
                ),
            });
        }
        if !ag.release(agbno, len32) {
            return Err(vol.corrupt(
                &format!("extent of inode {owner}"),
                at,
                format!("{len} blocks at AG {agno} block {agbno} are free already or past the AG"),
            ));
        }
        if let Some(m) = ag.rmap.as_mut() {
            if !m.remove(agbno, len32, owner, offset) {
                return Err(vol.corrupt(
                    &format!("reverse mapping btree of AG {agno}"),
                    at,
                    format!("no record of inode {owner} owning {len} blocks at block {agbno}"),
                ));
            }
        }
        Ok(())
    }

    /// Frees every block of one fork of `ino` (its extents and btree blocks); returns
    /// how many.
    pub fn free_fork(&mut self, ino: &Inode, fork: Fork) -> Result<u64> {
        let format = match fork {
            Fork::Data => ino.format,
            Fork::Attr if ino.attr_fork.is_some() => ino.aformat,
            Fork::Attr => return Ok(0),
        };
        if format != FMT_EXTENTS && format != FMT_BTREE {
            return Ok(0);
        }
        let flag = if fork == Fork::Attr { F_ATTR } else { 0 };
        let (exts, nodes) = bmbt::extents_and_nodes(self.vol, ino, fork)?;
        let mut n = 0u64;
        for e in &exts {
            let unw = if e.unwritten { F_UNWRITTEN } else { 0 };
            self.free(e.block, e.len, ino.ino, e.off | flag | unw)?;
            n += e.len;
        }
        for &b in &nodes {
            self.free(b, 1, ino.ino, flag | F_BMBT)?;
            n += 1;
        }
        Ok(n)
    }

    /// Allocates `n` blocks for file data, in as few extents as it can: one extent
    /// where one AG has a free run that long (trying AG `prefer` first), else the
    /// largest free runs first. Pieces are at most one extent record long.
    pub fn alloc_data(&mut self, n: u64, prefer: u32) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        if n == 0 {
            return Ok(out);
        }
        let sb = &self.vol.sb;
        let order = self.order(prefer);
        let mut total = 0u64;
        for &agno in &order {
            let sbc = sb.clone();
            let ag = self.ag(agno)?;
            let usable = ag.usable(&sbc);
            total += usable;
            if let Ok(n32) = u32::try_from(n) {
                if usable >= n {
                    if let Some(s) = ag.best_fit_data(&sbc, n32) {
                        if ag.take(s, n32) {
                            let fsb = self.fsb(agno, s);
                            push_pieces(&mut out, fsb, n);
                            return Ok(out);
                        }
                    }
                }
            }
        }
        if total < n {
            return Err(self.no_space(&format!("{n} blocks wanted, {total} free for file data")));
        }
        let mut left = n;
        while left > 0 {
            let mut best: Option<(u32, u32, u64)> = None;
            for &agno in &order {
                let sbc = sb.clone();
                let ag = self.ag(agno)?;
                let usable = ag.usable(&sbc);
                if let Some((s, l)) = ag.largest_data(&sbc) {
                    let k = u64::from(l).min(usable);
                    if k > 0 && best.is_none_or(|b| k > b.2) {
                        best = Some((agno, s, k));
                    }
                }
            }
            let Some((agno, s, k)) = best else {
                return Err(self.no_space("free space ran out"));
            };
            let k = k.min(left);
            let ag = self.ag(agno)?;
            if !ag.take(s, k as u32) {
                return Err(self.no_space("free space ran out"));
            }
            let fsb = self.fsb(agno, s);
            push_pieces(&mut out, fsb, k);
            left -= k;
        }
        Ok(out)
    }

    /// Allocates `n` contiguous blocks of metadata owned by `owner` at `offset` (rmap
    /// flags included), in AG `prefer` if it can.
    pub fn alloc_meta(&mut self, n: u32, prefer: u32, owner: u64, offset: u64) -> Result<u64> {
        for agno in self.order(prefer) {
            let ag = self.ag(agno)?;
            if ag.free_blocks() < u64::from(n) + 8 {
                continue;
            }
            if let Some(s) = ag.best_fit(n) {
                if ag.take(s, n) {
                    if let Some(m) = ag.rmap.as_mut() {
                        m.add(s, n, owner, offset);
                    }
                    return Ok(self.fsb(agno, s));
                }
            }
        }
        Err(self.no_space(&format!("no run of {n} free blocks for metadata")))
    }

    /// Replaces the data of regular file `raw` (parsed as `old`, or new and empty) with
    /// `data`: frees its blocks, allocates new ones, writes the block map and the size.
    pub fn set_file_data(
        &mut self,
        raw: &mut RawInode,
        old: Option<&Inode>,
        data: &'a [u8],
    ) -> Result<()> {
        let vol = self.vol;
        let sb = &vol.sb;
        let ino = raw.ino;
        let freed = match old {
            Some(i) => self.free_fork(i, Fork::Data)?,
            None => 0,
        };
        let kept = raw.nblocks().checked_sub(freed).ok_or_else(|| {
            vol.corrupt(
                &format!("inode {ino}"),
                raw.offset,
                "counts fewer blocks than its block map holds",
            )
        })?;
        let bs = u64::from(sb.blocksize);
        let nfsb = (data.len() as u64).div_ceil(bs);
        let prefer = self.ag_of_ino(ino);
        let pieces = self.alloc_data(nfsb, prefer)?;
        let mut recs = Vec::with_capacity(pieces.len());
        let mut off = 0u64;
        for &(fsb, len) in &pieces {
            let (agno, agbno) = self.split(fsb);
            if let Some(m) = self.ag(agno)?.rmap.as_mut() {
                m.add(agbno, len as u32, ino, off);
            }
            recs.push(Extent {
                off,
                block: fsb,
                len,
                unwritten: false,
            });
            let at = sb
                .fsb_offset(fsb)
                .ok_or_else(|| vol.corrupt("new extent", 0, "outside the filesystem"))?;
            let lo = (off * bs) as usize;
            let hi = (((off + len) * bs) as usize).min(data.len());
            let full = lo + (hi - lo) / bs as usize * bs as usize;
            if full > lo {
                self.data.push((at, &data[lo..full]));
            }
            if hi > full {
                let mut tail = vec![0u8; bs as usize];
                tail[..hi - full].copy_from_slice(&data[full..hi]);
                self.meta.push((at + (full - lo) as u64, tail));
            }
            off += len;
        }
        let dsize = raw.dfork_size();
        let nb = bmbt_write::blocks_needed(sb, recs.len(), dsize);
        let mut tree = Vec::with_capacity(nb);
        for _ in 0..nb {
            tree.push(self.alloc_meta(1, prefer, ino, F_BMBT)?);
        }
        let (fork, blocks) = bmbt_write::build(sb, ino, &recs, &tree, dsize)
            .ok_or_else(|| vol.unsupported("an XFS block map of this shape"))?;
        let format = if nb == 0 { FMT_EXTENTS } else { FMT_BTREE };
        if !raw.set_data_fork(format, &fork, recs.len() as u64) {
            return Err(
                vol.unsupported(format!("{} extents in inode {ino}'s data fork", recs.len()))
            );
        }
        for (fsb, b) in blocks {
            let at = sb.fsb_offset(fsb).unwrap_or(0);
            self.meta.push((at, b));
        }
        raw.set_size(data.len() as u64);
        raw.set_nblocks(kept + nfsb + nb as u64);
        raw.clear_reflink();
        Ok(())
    }

    /// Puts symbolic link `raw`'s target, too long for the inode, in a block of its own
    /// (on v5 after the `xfs_dsymlink_hdr` with its CRC). A target needing more than
    /// one block (over 968 bytes with 1 KiB v5 blocks) is not written: the kernel puts
    /// one header per mapping but `xfs_repair` reads one per block.
    pub fn set_symlink_blocks(&mut self, raw: &mut RawInode, target: &[u8]) -> Result<()> {
        let vol = self.vol;
        let sb = &vol.sb;
        let ino = raw.ino;
        let hdr = if sb.crc { SYMLINK_HDR } else { 0 };
        let bs = sb.blocksize as usize;
        if target.is_empty() || target.len() > bs - hdr {
            return Err(vol.unsupported(format!(
                "a symbolic link target of {} bytes spread over more than one block",
                target.len()
            )));
        }
        let fsb = self.alloc_meta(1, self.ag_of_ino(ino), ino, 0)?;
        let at = sb
            .fsb_offset(fsb)
            .ok_or_else(|| vol.corrupt("new symlink block", 0, "outside the filesystem"))?;
        let mut b = vec![0u8; bs];
        if sb.crc {
            put32(&mut b, 0, SYMLINK_MAGIC);
            put32(&mut b, 8, target.len() as u32);
            b[16..32].copy_from_slice(&sb.meta_uuid);
            put64(&mut b, 32, ino);
            put64(&mut b, 40, at >> 9);
        }
        b[hdr..hdr + target.len()].copy_from_slice(target);
        if sb.crc {
            set_crc(&mut b, 12);
        }
        self.meta.push((at, b));
        let rec = bmbt_write::encode(&Extent {
            off: 0,
            block: fsb,
            len: 1,
            unwritten: false,
        });
        if !raw.set_data_fork(FMT_EXTENTS, &rec, 1) {
            return Err(vol.unsupported(format!("inode {ino}'s data fork (too small)")));
        }
        raw.set_size(target.len() as u64);
        raw.set_nblocks(raw.nblocks() + 1);
        Ok(())
    }

    /// Takes a free inode, from AG `prefer` if it has one; when every chunk of every
    /// AG is full, makes a new chunk (see [`Txn::new_chunk`]).
    pub fn alloc_inode(&mut self, prefer: u32) -> Result<u64> {
        let sb = self.vol.sb.clone();
        for agno in self.order(prefer) {
            let iag = self.iag(agno)?;
            if iag.free_count() > 0 {
                if let Some(ino) = iag.alloc(&sb) {
                    self.ifree_delta -= 1;
                    return Ok(ino);
                }
            }
        }
        let agno = self.new_chunk(prefer)?;
        let ino = self
            .iag(agno)?
            .alloc(&sb)
            .ok_or_else(|| self.vol.corrupt("new inode chunk", 0, "has no free inode"))?;
        self.ifree_delta -= 1;
        Ok(ino)
    }

    /// Places a new inode chunk as the kernel does (`xfs_ialloc_ag_alloc`): 64 inodes
    /// (or one block's worth, if more), aligned to `sb_inoalignmt`, in AG `prefer` if
    /// it has room, taken from free space and owned in the rmapbt by the inodes; the
    /// inodes are written initialised. Returns the AG. Within `imaxpct`, as the kernel
    /// keeps it. Sparse chunks (for free space too fragmented for a whole aligned
    /// chunk) are not made: that is refused as out of space.
    fn new_chunk(&mut self, prefer: u32) -> Result<u32> {
        let vol = self.vol;
        let sb = &vol.sb;
        let ipc = u32::from(sb.inopblock).max(64);
        let blocks = ipc >> sb.inopblog;
        let align = sb.inoalignmt.max(1);
        if sb.imax_pct > 0 {
            let s = vol.read(0, usize::from(sb.sectsize))?;
            let icount = be64(&s, 128)
                .unwrap_or(0)
                .saturating_add_signed(self.icount_delta);
            let max_blocks = sb.dblocks * u64::from(sb.imax_pct) / 100;
            let max_blocks = max_blocks / u64::from(blocks) * u64::from(blocks);
            let max = max_blocks << sb.inopblog;
            if icount + u64::from(ipc) > max {
                return Err(self.no_space(&format!(
                    "every inode chunk is full and a new one would pass the filesystem's limit \
                     of {}% of its space for inodes (imaxpct; xfs_growfs -m raises it)",
                    sb.imax_pct
                )));
            }
        }
        let agino_bits = u32::from(sb.agblklog) + u32::from(sb.inopblog);
        for agno in self.order(prefer) {
            let ag = self.ag(agno)?;
            if ag.free_blocks() < u64::from(blocks) + 8 {
                continue;
            }
            let Some(s) = ag.aligned_fit(blocks, align) else {
                continue;
            };
            let agino = u64::from(s) << sb.inopblog;
            if agino + u64::from(ipc) > 1u64 << agino_bits || agino == 0 || !ag.take(s, blocks) {
                continue;
            }
            if let Some(m) = ag.rmap.as_mut() {
                m.add(s, blocks, OWN_INODES, 0);
            }
            let agino = agino as u32;
            if !self.iag(agno)?.add_chunk(agino, ipc) {
                return Err(vol.corrupt(
                    &format!("inode btree of AG {agno}"),
                    0,
                    format!("free block {s} lies under a recorded inode chunk"),
                ));
            }
            let first = u64::from(agno) << agino_bits | u64::from(agino);
            let at = sb
                .ino_offset(first)
                .ok_or_else(|| vol.corrupt("new inode chunk", 0, "outside the filesystem"))?;
            let gen = now_gen();
            let buf = ialloc::chunk_buffer(sb, first, ipc, gen);
            self.new_chunks.push((first, at, buf));
            self.icount_delta += i64::from(ipc);
            self.ifree_delta += i64::from(ipc);
            return Ok(agno);
        }
        Err(self.no_space(&format!(
            "every inode chunk is full and no AG has {blocks} free blocks aligned to {align} for \
             a new one (sparse inode chunks are not made)"
        )))
    }

    /// The bytes of free inode `ino` to make a new inode from: from a chunk made in this
    /// change, else from the device.
    pub fn free_slot(&self, ino: u64) -> Result<RawInode> {
        let isz = u64::from(self.vol.sb.inodesize);
        for (first, at, buf) in &self.new_chunks {
            let n = buf.len() as u64 / isz;
            if ino >= *first && ino - first < n {
                let k = ((ino - first) * isz) as usize;
                let b = buf.get(k..k + isz as usize).unwrap_or_default().to_vec();
                return Ok(RawInode::from_bytes(
                    ino,
                    at + (ino - first) * isz,
                    b,
                    &self.vol.sb,
                ));
            }
        }
        RawInode::read_free(self.vol, ino)
    }

    pub fn free_inode(&mut self, ino: u64) -> Result<()> {
        let agno = self.ag_of_ino(ino);
        let bits = u32::from(self.vol.sb.agblklog) + u32::from(self.vol.sb.inopblog);
        let agino = (ino & ((1u64 << bits) - 1)) as u32;
        let vol = self.vol;
        if !self.iag(agno)?.free(agino) {
            return Err(vol.corrupt(
                &format!("inode btree of AG {agno}"),
                0,
                format!("inode {ino} is not recorded as in use"),
            ));
        }
        self.ifree_delta += 1;
        Ok(())
    }

    pub fn write_meta(&mut self, at: u64, b: Vec<u8>) {
        self.meta.push((at, b));
    }

    /// Lays out what changed, fixes the counters and writes everything.
    pub fn commit(mut self) -> Result<()> {
        let vol = self.vol;
        let sb = &vol.sb;
        let nospace = |agno: u32| {
            Error::NoSpace(format!(
                "{}: AG {agno} has no room left for its own btrees",
                vol.name()
            ))
        };
        // The finobt takes or gives blocks first, since that changes free space.
        let dirty: Vec<u32> = self
            .iags
            .iter()
            .filter(|(_, a)| a.is_dirty())
            .map(|(&n, _)| n)
            .collect();
        for agno in dirty {
            let mut extra = Vec::new();
            for _ in 0..8 {
                let blocks = self.iag(agno)?.blocks(sb, &extra);
                extra.clear();
                match blocks {
                    Blocks::Enough => break,
                    Blocks::Need(n) => {
                        let ag = self.ag(agno)?;
                        for _ in 0..n {
                            let s = ag.best_fit(1).ok_or_else(|| nospace(agno))?;
                            ag.take(s, 1);
                            if let Some(m) = ag.rmap.as_mut() {
                                m.add(s, 1, OWN_INOBT, 0);
                            }
                            extra.push(s);
                        }
                    }
                    Blocks::Spare(v) => {
                        let ag = self.ag(agno)?;
                        for b in v {
                            ag.give(b, 1);
                            if let Some(m) = ag.rmap.as_mut() {
                                m.remove(b, 1, OWN_INOBT, 0);
                            }
                        }
                        break;
                    }
                }
            }
        }
        let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
        for (&agno, a) in self.iags.iter_mut().filter(|(_, a)| a.is_dirty()) {
            writes.extend(a.commit(sb).ok_or_else(|| nospace(agno))?);
        }
        let mut fd_delta = 0i64;
        for (&agno, a) in self.ags.iter_mut() {
            if !a.is_dirty() {
                continue;
            }
            writes.extend(a.commit(sb).ok_or_else(|| nospace(agno))?);
            fd_delta += a.sb_free() - self.sb_free_before.get(&agno).copied().unwrap_or(0);
        }
        for raw in self.inodes.values_mut() {
            raw.finish();
            writes.push((raw.offset, raw.b.clone()));
        }
        if fd_delta != 0 || self.ifree_delta != 0 || self.icount_delta != 0 {
            let mut s = vol.read(0, usize::from(sb.sectsize))?;
            let add = |s: &mut Vec<u8>, o: usize, d: i64| {
                let v = be64(s, o).unwrap_or(0).wrapping_add_signed(d);
                put64(s, o, v);
            };
            add(&mut s, 128, self.icount_delta);
            add(&mut s, 136, self.ifree_delta);
            add(&mut s, 144, fd_delta);
            if sb.crc {
                set_crc(&mut s, 224);
            }
            writes.push((0, s));
        }
        for (at, d) in &self.data {
            vol.dev.write_at(d, *at)?;
        }
        for (_, at, d) in &self.new_chunks {
            vol.dev.write_at(d, *at)?;
        }
        for (at, d) in self.meta.iter().chain(writes.iter()) {
            vol.dev.write_at(d, *at)?;
        }
        self.state.ags.append(&mut self.ags);
        self.state.iags.append(&mut self.iags);
        Ok(())
    }
}

fn push_pieces(out: &mut Vec<(u64, u64)>, fsb: u64, n: u64) {
    let mut done = 0;
    while done < n {
        let k = (n - done).min(MAX_EXTLEN);
        out.push((fsb + done, k));
        done += k;
    }
}

/// A generation number for new inodes: the kernel takes a random one.
fn now_gen() -> u32 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_nanos() as u32).wrapping_mul(0x9e37_79b9)
}
