//! Replaying one log item into the recovered device, as the kernel's pass 2 does:
//! buffers (the logged 128-byte chunks copied in; inode buffers only their unlinked
//! pointers; cancelled buffers skipped), inodes (the logged core converted from the
//! logging host's byte order to the on-disk one, then the forks), and inode-chunk
//! creation. Item formats are in the logging host's order (little-endian: the record
//! header's format word was checked); the data they carry is on-disk (big-endian).
//! On v5, metadata already newer on disk than the transaction is left alone, and
//! every rewritten structure gets its LSN and CRC as the kernel's write verifiers
//! would give it.

use super::bytes::{be16, be32, be64, put16, put32, put64, set_crc, u8_at};
use super::log_recover_dev::ReplayDev;
use super::log_recover_record::Item;
use super::volume::Volume;
use crate::error::{Error, Result};
use std::collections::HashMap;
use transplant_formats::BlockDev;

pub(crate) const LI_INODE: u16 = 0x123b;
pub(crate) const LI_BUF: u16 = 0x123c;
pub(crate) const LI_ICREATE: u16 = 0x123f;

const BLF_INODE_BUF: u16 = 0x1;
const BLF_CANCEL: u16 = 0x2;
const BLF_DQUOT_BUFS: u16 = 0x4 | 0x8 | 0x10;
const BLF_CHUNK: usize = 128;
/// Dirty-map words of one buffer format (`XFS_BLF_DATAMAP_SIZE`).
const BLF_MAP_WORDS: usize = 64 * 1024 / BLF_CHUNK / 32 + 1;
/// The largest buffer we accept from the log (an inode cluster of 2 KiB inodes, or a
/// 64 KiB directory block, with room to spare).
const MAX_BUF_BBS: u64 = 256;

const ILOG_CORE: u32 = 0x001;
const ILOG_DDATA: u32 = 0x002;
const ILOG_DEXT: u32 = 0x004;
const ILOG_DBROOT: u32 = 0x008;
const ILOG_DEV: u32 = 0x010;
const ILOG_ADATA: u32 = 0x040;
const ILOG_AEXT: u32 = 0x080;
const ILOG_ABROOT: u32 = 0x100;
const ILOG_DOWNER: u32 = 0x200;
const ILOG_AOWNER: u32 = 0x400;
const ILOG_DFORK: u32 = ILOG_DDATA | ILOG_DEXT | ILOG_DBROOT;
const ILOG_AFORK: u32 = ILOG_ADATA | ILOG_AEXT | ILOG_ABROOT;

const DINODE_MAGIC: u16 = 0x494e;
const DIFLAG2_BIGTIME: u64 = 0x8;
const DIFLAG2_NREXT64: u64 = 0x10;
const NEXT_UNLINKED: usize = 96;
const NULL_AGINO: u32 = u32::MAX;

/// The order items of one transaction replay in (`xlog_recover_reorder_trans`):
/// buffers and inode-chunk creation first, then other items, then inode unlink
/// buffers, cancellations last.
pub(crate) fn order(item: &Item) -> u8 {
    match item.kind() {
        Some(LI_BUF) => {
            let flags = le16(item.regions.first().map(|r| &r[..]).unwrap_or(&[]), 4);
            match flags {
                Some(f) if f & BLF_CANCEL != 0 => 3,
                Some(f) if f & BLF_INODE_BUF != 0 => 2,
                _ => 0,
            }
        }
        Some(LI_ICREATE) => 0,
        _ => 1,
    }
}

fn le16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn le32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn le64(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A buffer log format (`xfs_buf_log_format`).
struct BufFormat {
    flags: u16,
    bbs: u64,
    daddr: u64,
    map: Vec<u32>,
}

impl BufFormat {
    fn parse(r: &[u8]) -> Option<BufFormat> {
        let map_size = le32(r, 16)? as usize;
        if map_size > BLF_MAP_WORDS {
            return None;
        }
        let map = (0..map_size)
            .map(|i| le32(r, 20 + 4 * i))
            .collect::<Option<Vec<u32>>>()?;
        Some(BufFormat {
            flags: le16(r, 4)?,
            bbs: u64::from(le16(r, 6)?),
            daddr: le64(r, 8)?,
            map,
        })
    }

    fn bit(&self, i: usize) -> bool {
        self.map
            .get(i / 32)
            .is_some_and(|w| w & (1 << (i % 32)) != 0)
    }

    /// The next set bit at or after `from`.
    fn next_bit(&self, from: usize) -> Option<usize> {
        (from..self.map.len() * 32).find(|&i| self.bit(i))
    }

    /// How many bits are set in a row from `from`.
    fn contig(&self, from: usize) -> usize {
        (from..self.map.len() * 32)
            .take_while(|&i| self.bit(i))
            .count()
    }
}

pub(crate) struct Replayer<'a> {
    pub vol: &'a Volume,
    pub dev: ReplayDev,
    /// Cancel records by (daddr, length): buffers not to replay until the last one.
    cancels: HashMap<(u64, u64), u32>,
    /// Buffers rewritten by the regular path, with the LSN of the last transaction
    /// that did: their LSN and CRC are stamped at the end.
    replayed: HashMap<(u64, u64), u64>,
}

impl<'a> Replayer<'a> {
    pub fn new(vol: &'a Volume, dev: ReplayDev) -> Replayer<'a> {
        Replayer {
            vol,
            dev,
            cancels: HashMap::new(),
            replayed: HashMap::new(),
        }
    }

    fn corrupt(&self, what: &str, daddr: u64, detail: impl std::fmt::Display) -> Error {
        self.vol.corrupt(
            what,
            daddr.saturating_mul(512),
            format!("in the log: {detail}"),
        )
    }

    fn buf_format(&self, item: &Item) -> Result<BufFormat> {
        item.regions
            .first()
            .and_then(|r| BufFormat::parse(r))
            .ok_or_else(|| self.corrupt("log buffer item", 0, "a malformed buffer format"))
    }

    /// Pass 1: counts the cancel records.
    pub fn pass1(&mut self, item: &Item) -> Result<()> {
        if item.kind() == Some(LI_BUF) {
            let f = self.buf_format(item)?;
            if f.flags & BLF_CANCEL != 0 {
                *self.cancels.entry((f.daddr, f.bbs)).or_default() += 1;
            }
        }
        Ok(())
    }

    fn cancelled(&self, daddr: u64, bbs: u64) -> bool {
        self.cancels.contains_key(&(daddr, bbs))
    }

    fn read(&self, daddr: u64, bbs: u64, what: &str) -> Result<Vec<u8>> {
        let sb = &self.vol.sb;
        let fs_bytes = sb.dblocks.saturating_mul(u64::from(sb.blocksize));
        let end = daddr.checked_add(bbs).and_then(|e| e.checked_mul(512));
        if bbs == 0 || bbs > MAX_BUF_BBS || end.is_none_or(|e| e > fs_bytes) {
            return Err(self.corrupt(
                what,
                daddr,
                format!("a buffer of {bbs} sectors at sector {daddr} does not fit the filesystem"),
            ));
        }
        let mut b = vec![0u8; (bbs * 512) as usize];
        self.dev.read_at(&mut b, daddr * 512)?;
        Ok(b)
    }

    pub fn pass2(&mut self, item: &Item, lsn: u64) -> Result<()> {
        match item.kind() {
            Some(LI_BUF) => self.buffer(item, lsn),
            Some(LI_INODE) => self.inode(item, lsn),
            Some(LI_ICREATE) => self.icreate(item),
            // Intents and their done items change nothing themselves; the caller
            // checked every intent is done.
            _ => Ok(()),
        }
    }

    fn buffer(&mut self, item: &Item, lsn: u64) -> Result<()> {
        let f = self.buf_format(item)?;
        if f.flags & BLF_CANCEL != 0 {
            if let Some(n) = self.cancels.get_mut(&(f.daddr, f.bbs)) {
                *n -= 1;
                if *n == 0 {
                    self.cancels.remove(&(f.daddr, f.bbs));
                }
            }
            return Ok(());
        }
        if self.cancelled(f.daddr, f.bbs) {
            return Ok(());
        }
        if f.flags & BLF_DQUOT_BUFS != 0 {
            return Err(self.vol.unsupported(
                "replaying quota (dquot) buffers from the XFS log; quota is not supported",
            ));
        }
        let mut b = self.read(f.daddr, f.bbs, "log buffer item")?;
        let key = (f.daddr, f.bbs);
        if self.vol.sb.crc && !self.replayed.contains_key(&key) {
            if let Some(disk) = self.buf_lsn(&b) {
                if disk != 0 && disk != u64::MAX && disk >= lsn {
                    return Ok(());
                }
            }
        }
        if f.flags & BLF_INODE_BUF != 0 {
            self.inode_buffer(item, &f, &mut b)?;
        } else {
            self.reg_buffer(item, &f, &mut b)?;
            self.replayed.insert(key, lsn);
        }
        self.dev.put(f.daddr * 512, &b)
    }

    fn reg_buffer(&self, item: &Item, f: &BufFormat, b: &mut [u8]) -> Result<()> {
        let mut bit = 0usize;
        let mut i = 1usize;
        while let Some(start) = f.next_bit(bit) {
            let mut nbits = f.contig(start);
            let region = item.regions.get(i).ok_or_else(|| {
                self.corrupt(
                    "log buffer item",
                    f.daddr,
                    "fewer regions than dirty chunks",
                )
            })?;
            if region.len() < nbits * BLF_CHUNK {
                nbits = region.len() / BLF_CHUNK;
            }
            let n = nbits * BLF_CHUNK;
            let at = start * BLF_CHUNK;
            let dst = b.get_mut(at..at + n).ok_or_else(|| {
                self.corrupt("log buffer item", f.daddr, "dirty chunks past the buffer")
            })?;
            dst.copy_from_slice(&region[..n]);
            i += 1;
            bit = start + nbits;
        }
        Ok(())
    }

    /// Only the unlinked-list pointers of an inode buffer are replayed from it: the
    /// rest of each inode comes from its own inode items.
    fn inode_buffer(&self, item: &Item, f: &BufFormat, b: &mut [u8]) -> Result<()> {
        let isize = usize::from(self.vol.sb.inodesize);
        let per = b.len() / isize;
        let (mut bit, mut nbits, mut reg_off, mut reg_len, mut index) = (0, 0, 0, 0, 0usize);
        for i in 0..per {
            let next = i * isize + NEXT_UNLINKED;
            while next >= reg_off + reg_len {
                bit += nbits;
                let Some(start) = f.next_bit(bit) else {
                    return Ok(());
                };
                bit = start;
                nbits = f.contig(start);
                reg_off = start * BLF_CHUNK;
                reg_len = nbits * BLF_CHUNK;
                index += 1;
            }
            if next < reg_off {
                continue;
            }
            let logged = item
                .regions
                .get(index)
                .and_then(|r| r.get(next - reg_off..next - reg_off + 4))
                .ok_or_else(|| self.corrupt("log inode buffer item", f.daddr, "a short region"))?;
            if logged == [0; 4] {
                return Err(self.corrupt(
                    "log inode buffer item",
                    f.daddr,
                    "an unlinked pointer of zero",
                ));
            }
            let Some(dst) = b.get_mut(next..next + 4) else {
                break;
            };
            dst.copy_from_slice(logged);
            if self.vol.sb.crc {
                if let Some(ino) = b.get_mut(i * isize..(i + 1) * isize) {
                    set_crc(ino, 100);
                }
            }
        }
        Ok(())
    }

    /// The LSN a v5 metadata block carries, found by its magic, as
    /// `xlog_recover_get_buf_lsn` does: `None` for what has none we can trust
    /// (unknown contents, inodes, remote attributes, another filesystem's blocks).
    fn buf_lsn(&self, b: &[u8]) -> Option<u64> {
        let sb = &self.vol.sb;
        let at = |lsn: usize, uuid: usize, want: &[u8; 16]| {
            (b.get(uuid..uuid + 16) == Some(&want[..])).then(|| be64(b, lsn))?
        };
        let magic: [u8; 4] = b.get(..4)?.try_into().ok()?;
        match &magic {
            b"AB3B" | b"AB3C" | b"ABTB" | b"ABTC" | b"RMB3" | b"R3FC" | b"IAB3" | b"IABT" => {
                at(24, 32, &sb.meta_uuid)
            }
            b"BMA3" | b"BMAP" => at(32, 40, &sb.meta_uuid),
            b"XAGF" => at(208, 64, &sb.meta_uuid),
            b"XAFL" => at(24, 8, &sb.meta_uuid),
            b"XAGI" => at(320, 296, &sb.meta_uuid),
            b"XSLM" => at(48, 16, &sb.meta_uuid),
            b"XDB3" | b"XDD3" | b"XDF3" => at(16, 24, &sb.meta_uuid),
            b"XFSB" => {
                let uuid_at = if sb.meta_uuid != sb.uuid { 248 } else { 32 };
                at(240, uuid_at, &sb.meta_uuid)
            }
            _ => match be16(b, 8)? {
                0x3df1 | 0x3dff | 0x3ebe => at(24, 32, &sb.uuid),
                _ => None,
            },
        }
    }

    fn inode(&mut self, item: &Item, lsn: u64) -> Result<()> {
        let r0 = item
            .regions
            .first()
            .ok_or_else(|| self.corrupt("log inode item", 0, "no format region"))?;
        // The 64-bit layout has a pad word after the fork sizes; the 32-bit one not.
        let (ino_at, rdev_at, blkno_at) = match r0.len() {
            56 => (16, 24, 40),
            52 => (12, 20, 36),
            n => {
                return Err(self.corrupt(
                    "log inode item",
                    0,
                    format!("an inode format of {n} bytes"),
                ))
            }
        };
        let bad = || self.corrupt("log inode item", 0, "a short inode format");
        let nregions = le16(r0, 2).ok_or_else(bad)?;
        let fields = le32(r0, 4).ok_or_else(bad)?;
        let ino = le64(r0, ino_at).ok_or_else(bad)?;
        let rdev = le32(r0, rdev_at).ok_or_else(bad)?;
        let daddr = le64(r0, blkno_at).ok_or_else(bad)?;
        let bbs = u64::from(le32(r0, blkno_at + 8).ok_or_else(bad)?);
        let boff = le32(r0, blkno_at + 12).ok_or_else(bad)? as usize;
        if self.cancelled(daddr, bbs) {
            return Ok(());
        }
        let what = format!("log item for inode {ino}");
        if fields & (ILOG_DOWNER | ILOG_AOWNER) != 0 {
            return Err(self.vol.unsupported(format!(
                "replaying an XFS log fork owner change (inode {ino}, after an extent swap)"
            )));
        }
        if fields & ILOG_CORE == 0 {
            return Err(self.corrupt(&what, daddr, "the inode core is not logged"));
        }
        let mut b = self.read(daddr, bbs, &what)?;
        let vol = self.vol;
        let sb = &vol.sb;
        let isize = usize::from(sb.inodesize);
        let dip = b
            .get_mut(boff..boff.saturating_add(isize))
            .ok_or_else(|| self.corrupt(&what, daddr, "the inode lies past its buffer"))?;
        if be16(dip, 0) != Some(DINODE_MAGIC) {
            return Err(self.corrupt(&what, daddr, "the inode it updates has no inode magic"));
        }
        let ld = item
            .regions
            .get(1)
            .ok_or_else(|| self.corrupt(&what, daddr, "no logged inode core"))?;
        let core = if sb.crc { 176 } else { 96 };
        if le16(ld, 0) != Some(DINODE_MAGIC) || ld.len() < core || ld.len() > core {
            return Err(self.corrupt(
                &what,
                daddr,
                format!("a logged inode core of {} bytes", ld.len()),
            ));
        }
        if u8_at(dip, 4).unwrap_or(0) >= 3 {
            let disk = be64(dip, 112).unwrap_or(0);
            if disk != 0 && disk != u64::MAX && disk > lsn {
                return Ok(());
            }
        }
        if !sb.crc {
            let logged = le16(ld, 30).unwrap_or(0);
            let disk = be16(dip, 30).unwrap_or(0);
            if logged < disk && !(disk == u16::MAX && logged < u16::MAX >> 1) {
                return Ok(());
            }
        }
        let forkoff = usize::from(u8_at(ld, 82).unwrap_or(0)) * 8;
        let dsize_core = if sb.crc { 176 } else { 100 };
        let litino = isize - dsize_core;
        if forkoff >= litino {
            return Err(self.corrupt(&what, daddr, format!("a fork offset of {forkoff}")));
        }
        log_dinode_to_disk(ld, dip, lsn);
        if fields & ILOG_DEV != 0 {
            put32(dip, dsize_core, rdev);
        }
        let (dsize, asize) = if forkoff != 0 {
            (forkoff, litino - forkoff)
        } else {
            (litino, 0)
        };
        if nregions > 2 {
            if fields & ILOG_DFORK != 0 {
                let src = item
                    .regions
                    .get(2)
                    .ok_or_else(|| self.corrupt(&what, daddr, "no logged data fork"))?;
                let dst = &mut dip[dsize_core..dsize_core + dsize];
                self.fork(fields & ILOG_DFORK == ILOG_DBROOT, src, dst, &what, daddr)?;
            }
            if fields & ILOG_AFORK != 0 {
                let idx = if fields & ILOG_DFORK != 0 { 3 } else { 2 };
                let src = item
                    .regions
                    .get(idx)
                    .ok_or_else(|| self.corrupt(&what, daddr, "no logged attribute fork"))?;
                let at = dsize_core + forkoff;
                let dst = &mut dip[at..at + asize];
                self.fork(fields & ILOG_AFORK == ILOG_ABROOT, src, dst, &what, daddr)?;
            }
        }
        if sb.crc {
            set_crc(dip, 100);
        }
        self.dev.put(daddr * 512, &b)
    }

    /// Copies a logged fork into the inode; a btree root is logged in its in-memory
    /// form (a full long-format block header, pointers after room for all keys) and
    /// converted to the on-disk root (`xfs_bmbt_to_bmdr`).
    fn fork(&self, broot: bool, src: &[u8], dst: &mut [u8], what: &str, daddr: u64) -> Result<()> {
        if !broot {
            let d = dst
                .get_mut(..src.len())
                .ok_or_else(|| self.corrupt(what, daddr, "a logged fork larger than the fork"))?;
            d.copy_from_slice(src);
            return Ok(());
        }
        let hdr = if self.vol.sb.crc { 72 } else { 24 };
        let numrecs = usize::from(be16(src, 6).unwrap_or(u16::MAX));
        let level = be16(src, 4).unwrap_or(0);
        let rmax = src.len().saturating_sub(hdr) / 16;
        let dmax = dst.len().saturating_sub(4) / 16;
        if src.len() < hdr || numrecs > rmax || numrecs > dmax || level == 0 {
            return Err(self.corrupt(
                what,
                daddr,
                format!("a logged btree root of {numrecs} records at level {level}"),
            ));
        }
        dst.fill(0);
        put16(dst, 0, level);
        put16(dst, 2, numrecs as u16);
        let keys = &src[hdr..hdr + 8 * numrecs];
        let ptrs = &src[hdr + 8 * rmax..hdr + 8 * rmax + 8 * numrecs];
        dst[4..4 + 8 * numrecs].copy_from_slice(keys);
        dst[4 + 8 * dmax..4 + 8 * dmax + 8 * numrecs].copy_from_slice(ptrs);
        Ok(())
    }

    /// An inode chunk created (v5 logs this instead of the initialised buffers).
    fn icreate(&mut self, item: &Item) -> Result<()> {
        let r = item
            .regions
            .first()
            .ok_or_else(|| self.corrupt("log inode create item", 0, "no region"))?;
        let f = |o| be32(r, o);
        let (Some(agno), Some(agbno), Some(count), Some(isize), Some(length), Some(gen)) =
            (f(4), f(8), f(12), f(16), f(20), f(24))
        else {
            return Err(self.corrupt("log inode create item", 0, "a short item"));
        };
        let sb = self.vol.sb.clone();
        let bad = |d: String| self.corrupt("log inode create item", 0, d);
        if agno >= sb.agcount
            || u64::from(agbno) + u64::from(length) > u64::from(sb.agblocks)
            || isize != u32::from(sb.inodesize)
            || length == 0
            || length > 64
            || u64::from(count) != u64::from(length) << sb.inopblog
        {
            return Err(bad(format!(
                "{count} inodes of {isize} bytes in {length} blocks at AG {agno} block {agbno}"
            )));
        }
        let fsb = (u64::from(agno) << sb.agblklog) | u64::from(agbno);
        let start = sb
            .fsb_offset(fsb)
            .ok_or_else(|| bad("outside the filesystem".into()))?;
        let bpb = u64::from(sb.blocksize) / 512;
        let (lo, hi) = (start / 512, start / 512 + u64::from(length) * bpb);
        // A chunk freed and reused later in the log is not re-initialised.
        if self.cancels.keys().any(|&(d, _)| d >= lo && d < hi) {
            return Ok(());
        }
        let mut b = vec![0u8; (u64::from(length) << sb.blocklog) as usize];
        let per_ag_ino = |agino: u64| (u64::from(agno) << (sb.agblklog + sb.inopblog)) | agino;
        let first_agino = u64::from(agbno) << sb.inopblog;
        for (i, ino) in b.chunks_mut(usize::from(sb.inodesize)).enumerate() {
            put16(ino, 0, DINODE_MAGIC);
            ino[4] = if sb.crc { 3 } else { 2 };
            put32(ino, 92, gen);
            put32(ino, NEXT_UNLINKED, NULL_AGINO);
            if sb.crc {
                put64(ino, 152, per_ag_ino(first_agino + i as u64));
                ino[160..176].copy_from_slice(&sb.meta_uuid);
                set_crc(ino, 100);
            }
        }
        self.dev.put(start, &b)
    }

    /// Gives each buffer the regular path rewrote its LSN and CRC, as the write
    /// verifiers would when recovery writes it back.
    pub fn finish(&mut self) -> Result<()> {
        if !self.vol.sb.crc {
            return Ok(());
        }
        let blocksize = self.vol.sb.blocksize as usize;
        let mut done: Vec<_> = self.replayed.iter().map(|(&k, &v)| (k, v)).collect();
        done.sort_unstable();
        for ((daddr, bbs), lsn) in done {
            let mut b = self.read(daddr, bbs, "log buffer item")?;
            let stamp = |b: &mut Vec<u8>, lsn_at: Option<usize>, crc_at: usize| {
                if let Some(l) = lsn_at {
                    put64(b, l, lsn);
                }
                set_crc(b, crc_at);
            };
            let magic: [u8; 4] = b.get(..4).and_then(|m| m.try_into().ok()).unwrap_or([0; 4]);
            match &magic {
                b"AB3B" | b"AB3C" | b"RMB3" | b"R3FC" | b"IAB3" | b"FIB3" => {
                    stamp(&mut b, Some(24), 52)
                }
                b"BMA3" => stamp(&mut b, Some(32), 64),
                b"XAGF" => stamp(&mut b, Some(208), 216),
                b"XAFL" => stamp(&mut b, Some(24), 32),
                b"XAGI" => stamp(&mut b, Some(320), 312),
                b"XSLM" => stamp(&mut b, Some(48), 12),
                b"XDB3" | b"XDD3" | b"XDF3" => stamp(&mut b, Some(16), 4),
                b"XFSB" => stamp(&mut b, Some(240), 224),
                b"XARM" => {
                    for blk in b.chunks_mut(blocksize) {
                        if blk.get(..4) == Some(b"XARM") {
                            set_crc(blk, 12);
                        }
                    }
                }
                _ => match be16(&b, 8) {
                    Some(0x3df1 | 0x3dff | 0x3ebe | 0x3bee) => stamp(&mut b, Some(24), 12),
                    _ => continue,
                },
            }
            self.dev.put(daddr * 512, &b)?;
        }
        Ok(())
    }
}

/// `xfs_log_dinode_to_disk`: the logged core (host order) over the on-disk inode (big
/// endian), keeping the unlinked pointer, with the transaction's LSN.
fn log_dinode_to_disk(ld: &[u8], to: &mut [u8], lsn: u64) {
    let g16 = |o| le16(ld, o).unwrap_or(0);
    let g32 = |o| le32(ld, o).unwrap_or(0);
    let g64 = |o| le64(ld, o).unwrap_or(0);
    let version = u8_at(ld, 4).unwrap_or(0);
    let flags2 = if version >= 3 { g64(120) } else { 0 };
    let bigtime = flags2 & DIFLAG2_BIGTIME != 0;
    let ts = |to: &mut [u8], o: usize| {
        if bigtime {
            put64(to, o, g64(o));
        } else {
            put32(to, o, g32(o));
            put32(to, o + 4, g32(o + 4));
        }
    };
    put16(to, 0, g16(0));
    put16(to, 2, g16(2));
    to[4] = version;
    to[5] = u8_at(ld, 5).unwrap_or(0);
    put16(to, 6, 0);
    put32(to, 8, g32(8));
    put32(to, 12, g32(12));
    put32(to, 16, g32(16));
    put16(to, 20, g16(20));
    put16(to, 22, g16(22));
    ts(to, 32);
    ts(to, 40);
    ts(to, 48);
    put64(to, 56, g64(56));
    put64(to, 64, g64(64));
    put32(to, 72, g32(72));
    to[82] = u8_at(ld, 82).unwrap_or(0);
    to[83] = u8_at(ld, 83).unwrap_or(0);
    put32(to, 84, g32(84));
    put16(to, 88, g16(88));
    put16(to, 90, g16(90));
    put32(to, 92, g32(92));
    if version == 3 && ld.len() >= 176 && to.len() >= 176 {
        put64(to, 104, g64(104));
        ts(to, 144);
        put64(to, 120, flags2);
        put32(to, 128, g32(128));
        put64(to, 152, g64(152));
        put64(to, 112, lsn);
        to[132..144].fill(0);
        to[160..176].copy_from_slice(&ld[160..176]);
        put64(to, 24, 0);
    } else {
        // The flush counter restarts (the kernel resets it on replay).
        to[24..30].fill(0);
        put16(to, 30, 0);
    }
    if version >= 3 && flags2 & DIFLAG2_NREXT64 != 0 {
        put64(to, 24, g64(24));
        put32(to, 76, g32(76));
        put16(to, 80, g16(80));
    } else {
        put32(to, 76, g32(76));
        put16(to, 80, g16(80));
    }
}
