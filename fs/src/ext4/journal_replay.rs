//! Journal recovery, so a filesystem whose guest was not shut down cleanly (a VMware
//! export or snapshot of a running guest) can be written like the kernel would after a
//! mount: replay the committed transactions of the internal JBD2 journal into their home
//! blocks, mark the journal empty, clear needs_recovery. What it leaves is what a kernel
//! mount and unmount leaves (as far as recovery goes): `s_start` 0, `s_sequence` one past
//! the first transaction not in the log, the ext4 superblock's free counts summed from
//! the group descriptors (the kernel keeps them in per-CPU counters and writes those out).
//!
//! The replay writes into the device it is given. Callers give an `Overlay` (see
//! `Ext4Fs::open_rw`), and apply it only once the replayed filesystem passes the
//! writer's checks, so a refusal leaves the device as it was.

mod be;
mod jsb;
mod passes;
#[cfg(test)]
mod tests;

use super::engine::Engine;
use super::le::{put_u32, u32_at};
use super::mapping::Mapping;
use super::superblock::{incompat, ro_compat, SUPERBLOCK_OFFSET};
use crate::error::{Error, Result};
use jsb::JournalSuper;
pub use passes::Outcome;
use std::collections::BTreeMap;
use std::sync::Arc;
use transplant_formats::{BlockDev, Overlay};

/// What a recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The replay itself (none when the journal was already empty: only the flag stale).
    pub outcome: Option<Outcome>,
}

/// A copy-on-write view of a device for the replay to write into, going by the device's
/// own name, so that what is found wrong in the replayed filesystem names the device the
/// user gave (an `Overlay` names itself "NAME (overlay)").
pub struct ReplayView {
    overlay: Overlay,
    name: String,
}

impl ReplayView {
    pub fn new(dev: Arc<dyn BlockDev>) -> ReplayView {
        ReplayView {
            name: dev.name().to_string(),
            overlay: Overlay::new(dev),
        }
    }

    /// Writes the replay into the device under the view.
    pub fn commit(&self) -> Result<()> {
        Ok(self.overlay.commit()?)
    }
}

impl BlockDev for ReplayView {
    fn len(&self) -> u64 {
        self.overlay.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> transplant_formats::Result<()> {
        self.overlay.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> transplant_formats::Result<()> {
        self.overlay.write_at(buf, offset)
    }
    fn flush(&self) -> transplant_formats::Result<()> {
        self.overlay.flush()
    }
    fn extent_at(&self, offset: u64) -> transplant_formats::Result<transplant_formats::Extent> {
        self.overlay.extent_at(offset)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// Whether the superblock on `dev` says the journal needs recovery.
pub fn needs_recovery(dev: &dyn BlockDev) -> bool {
    let mut raw = [0u8; 1024];
    dev.read_at(&mut raw, SUPERBLOCK_OFFSET).is_ok()
        && super::le::u16_at(&raw, 0x38) == super::superblock::MAGIC
        && u32_at(&raw, 0x60) & incompat::RECOVER != 0
}

/// The journal inode's blocks, read through its own map.
struct InodeLog {
    dev: Arc<dyn BlockDev>,
    map: Mapping,
    bs: u64,
    fs_blocks: u64,
    name: String,
}

impl passes::Log for InodeLog {
    fn read(&self, n: u32) -> Result<Vec<u8>> {
        let p = self.physical(n)?;
        let mut b = vec![0u8; self.bs as usize];
        self.dev.read_at(&mut b, p * self.bs)?;
        Ok(b)
    }
}

impl InodeLog {
    fn physical(&self, n: u32) -> Result<u64> {
        match self.map.lookup(n as u64) {
            Some((p, _)) if p < self.fs_blocks => Ok(p),
            Some((p, _)) => Err(Error::Corrupt {
                dev: self.name.clone(),
                detail: format!("journal block {n} maps to block {p}, past the filesystem"),
            }),
            None => Err(Error::Corrupt {
                dev: self.name.clone(),
                detail: format!("journal block {n} is a hole in the journal inode"),
            }),
        }
    }
}

/// Replays the journal of the filesystem on `dev` into `dev` when its superblock says it
/// needs recovery (None when it does not), leaving it as a kernel mount and unmount
/// would. `dev` should be an overlay: on error it may hold part of the replay.
pub fn recover(dev: &Arc<dyn BlockDev>) -> Result<Option<Recovered>> {
    if !needs_recovery(&**dev) {
        return Ok(None);
    }
    let e = Engine::open_for_recovery(dev.clone(), false)?;
    let name = e.name.clone();
    if !e.sb.has_journal() {
        return Err(Error::Corrupt {
            dev: name,
            detail: "the superblock says the journal needs recovery, but there is no journal"
                .into(),
        });
    }
    let ino = e.sb.journal_inum();
    if ino == 0 || e.sb.incompat & incompat::JOURNAL_DEV != 0 {
        return Err(Error::Unsupported {
            dev: name,
            feature: "replaying an external journal device (needs recovery)".into(),
        });
    }
    let inode = e.read_inode(ino)?;
    let map = e.mapping(&inode)?;
    let bs = e.bs();
    let fs_blocks = e.sb.blocks_count;
    drop(e);
    let log = InodeLog {
        dev: dev.clone(),
        map,
        bs,
        fs_blocks,
        name: name.clone(),
    };
    let log_blocks = inode.size() / bs;
    let raw = passes::Log::read(&log, 0)?;
    let jsb = JournalSuper::parse(&raw, bs as usize, log_blocks).map_err(|d| Error::Corrupt {
        dev: name.clone(),
        detail: format!("{d} (journal inode {ino})"),
    })?;
    let unknown = jsb.unknown_incompat();
    if unknown != 0 {
        return Err(Error::Unsupported {
            dev: name,
            feature: format!("replaying a journal with unknown incompatible features {unknown:#x}"),
        });
    }
    let outcome = if jsb.start == 0 {
        None
    } else {
        let mut write = |home: u64, data: &[u8]| -> Result<()> {
            dev.write_at(data, home * bs)?;
            Ok(())
        };
        Some(passes::replay(&log, &jsb, fs_blocks, &name, &mut write)?)
    };
    if outcome.is_some() || jsb.errno != 0 {
        let next = match &outcome {
            Some(o) => o.end_transaction.wrapping_add(1),
            None => jsb.sequence,
        };
        dev.write_at(&jsb.emptied(next), log.physical(0)? * bs)?;
    }
    clear_needs_recovery(&**dev, jsb.errno != 0)?;
    recount_free(dev)?;
    dev.flush()?;
    Ok(Some(Recovered { outcome }))
}

/// Clears needs_recovery in the primary superblock as it is after the replay (which may
/// have written the superblock's block itself); with `journal_error` (the journal
/// recorded one when it aborted) marks the filesystem as having errors, as the kernel
/// does, so e2fsck must look at it before it is written.
fn clear_needs_recovery(dev: &dyn BlockDev, journal_error: bool) -> Result<()> {
    let mut raw = vec![0u8; 1024];
    dev.read_at(&mut raw, SUPERBLOCK_OFFSET)?;
    let f = u32_at(&raw, 0x60) & !incompat::RECOVER;
    put_u32(&mut raw, 0x60, f);
    if journal_error {
        let state = super::le::u16_at(&raw, 0x3A) | 0x2;
        super::le::put_u16(&mut raw, 0x3A, state);
    }
    if u32_at(&raw, 0x64) & ro_compat::METADATA_CSUM != 0 {
        let c = super::csum::crc32c(!0, raw.get(..0x3FC).unwrap_or(&[]));
        put_u32(&mut raw, 0x3FC, c);
    }
    dev.write_at(&raw, SUPERBLOCK_OFFSET)?;
    Ok(())
}

/// Sets the superblock's free block and inode counts to the sums over the group
/// descriptors, as the kernel's counters are at mount and its unmount writes them.
fn recount_free(dev: &Arc<dyn BlockDev>) -> Result<()> {
    let mut e = Engine::open_for_recovery(dev.clone(), true)?;
    let blocks: u64 = e.groups.iter().map(|g| g.free_blocks() as u64).sum();
    let inodes: u64 = e.groups.iter().map(|g| g.free_inodes() as u64).sum();
    let inodes = u32::try_from(inodes).unwrap_or(u32::MAX);
    if blocks != e.sb.free_blocks() || inodes != e.sb.free_inodes() {
        e.sb.set_free_blocks(blocks);
        e.sb.set_free_inodes(inodes);
        e.sb_changed();
    }
    e.flush_meta()
}

/// A journal held as bytes: its blocks in order, block 0 its superblock.
struct BytesLog<'a> {
    data: &'a [u8],
    bs: usize,
}

impl passes::Log for BytesLog<'_> {
    fn read(&self, n: u32) -> Result<Vec<u8>> {
        let at = n as usize * self.bs;
        self.data
            .get(at..at + self.bs)
            .map(|b| b.to_vec())
            .ok_or_else(|| Error::Corrupt {
                dev: "journal".into(),
                detail: format!("journal block {n} is past the end of the journal"),
            })
    }
}

/// Replays a journal given as bytes (block 0 its superblock, whose block size it takes)
/// for a filesystem of `fs_blocks` blocks, returning what would be written home (the last
/// copy of each block). The parser without a filesystem around it: for fuzzing and tests.
pub fn replay_bytes(journal: &[u8], fs_blocks: u64) -> Result<(Outcome, BTreeMap<u64, Vec<u8>>)> {
    let bs = be::be32(journal, 0xC) as usize;
    if !(1024..=65536).contains(&bs) || !bs.is_power_of_two() {
        return Err(Error::Corrupt {
            dev: "journal".into(),
            detail: format!("journal superblock: block size {bs}"),
        });
    }
    let log = BytesLog { data: journal, bs };
    let raw = passes::Log::read(&log, 0)?;
    let jsb =
        JournalSuper::parse(&raw, bs, (journal.len() / bs) as u64).map_err(|d| Error::Corrupt {
            dev: "journal".into(),
            detail: d,
        })?;
    if jsb.unknown_incompat() != 0 {
        return Err(Error::Unsupported {
            dev: "journal".into(),
            feature: format!("journal features {:#x}", jsb.unknown_incompat()),
        });
    }
    let mut out = BTreeMap::new();
    if jsb.start == 0 {
        return Ok((Outcome::default(), out));
    }
    let mut write = |home: u64, data: &[u8]| -> Result<()> {
        out.insert(home, data.to_vec());
        Ok(())
    };
    let o = passes::replay(&log, &jsb, fs_blocks, "journal", &mut write)?;
    Ok((o, out))
}
