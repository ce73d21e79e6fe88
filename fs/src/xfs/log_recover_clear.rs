//! Making a recovered filesystem clean on a writable device (normally an overlay, for
//! `convert`), so the writer can change it: the blocks recovery rewrote are written
//! through, the superblock's summary counters are recomputed from the AG headers (as
//! the kernel does after an unclean mount, since lazy counters are not logged), and an
//! unmount record is appended at the log head with its tail at itself, as a clean
//! unmount would leave it: the kernel then mounts without recovery and `xfs_repair -n`
//! finds a clean log.
//!
//! Refused, with the reason: a log whose end was torn (the kernel would also reset
//! blocks past the head), and inodes left on the unlinked lists (unlinked while open;
//! the kernel frees them at the end of recovery, which is not implemented).

use super::bytes::{be32, put32, put64, set_crc};
use super::log::{Log, BB, HEADER_MAGIC};
use super::log_recover::Recovered;
use super::volume::Volume;
use crate::error::Result;

const SB_VERSION_LOGV2: u16 = 0x0400;
const CLIENT_LOG: u8 = 0xaa;
const UNMOUNT_TRANS: u8 = 0x20;
const UNMOUNT_TYPE: u16 = 0x556e;
const FMT_LINUX_LE: u32 = 1;

fn refused(vol: &Volume, why: &str) -> crate::error::Error {
    transplant_formats::Error::refused(
        vol.name(),
        format!(
            "the XFS log needed recovery and was replayed in memory, but {why}, so the \
             filesystem cannot be made clean for writing; read-only commands (ls, cat, \
             mount, inspect) work. Mount it once under Linux (on a copy) to finish \
             recovery, then retry"
        ),
    )
    .into()
}

/// Writes `rec` through to `vol`'s device (which must be writable) and closes the log.
pub(crate) fn write_through(vol: &Volume, rec: &Recovered) -> Result<()> {
    if rec.torn {
        return Err(refused(
            vol,
            "the end of the log was torn (a partial write)",
        ));
    }
    let sb = &vol.sb;
    // Inodes unlinked while open stay on the AGI lists until recovery frees them.
    let ag_bytes = u64::from(sb.agblocks) << sb.blocklog;
    let sect = u64::from(sb.sectsize);
    let read = |off: u64, len: usize| -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        transplant_formats::BlockDev::read_at(&rec.dev, &mut b, off)?;
        Ok(b)
    };
    let (mut icount, mut ifree, mut fdblocks) = (0u64, 0u64, 0u64);
    for agno in 0..u64::from(sb.agcount) {
        let agf = read(agno * ag_bytes + sect, 512)?;
        let agi = read(agno * ag_bytes + 2 * sect, 512)?;
        if agf.get(..4) != Some(b"XAGF") || agi.get(..4) != Some(b"XAGI") {
            return Err(vol.corrupt(
                &format!("AG {agno} headers"),
                agno * ag_bytes,
                "no AGF/AGI magic after log recovery",
            ));
        }
        let w = |b: &[u8], o| u64::from(be32(b, o).unwrap_or(0));
        if (0..64).any(|i| be32(&agi, 40 + 4 * i) != Some(u32::MAX)) {
            return Err(refused(
                vol,
                &format!("AG {agno} has inodes on its unlinked lists (deleted while open)"),
            ));
        }
        icount += w(&agi, 16);
        ifree += w(&agi, 28);
        fdblocks += w(&agf, 52) + w(&agf, 48) + w(&agf, 60);
    }
    let mut s = read(0, usize::from(sb.sectsize))?;
    put64(&mut s, 128, icount);
    put64(&mut s, 136, ifree);
    put64(&mut s, 144, fdblocks);
    if sb.crc {
        set_crc(&mut s, 224);
    }
    // Everything is decided before anything is written.
    let unmount = unmount_record(vol, rec)?;
    for (off, data) in rec.dev.changed() {
        vol.dev.write_at(data, off)?;
    }
    vol.dev.write_at(&s, 0)?;
    for (off, b) in unmount {
        vol.dev.write_at(&b, off)?;
    }
    Ok(())
}

/// An unmount record (2 blocks) to append at the head, in the head's cycle: where
/// each block goes and what it holds.
fn unmount_record(vol: &Volume, rec: &Recovered) -> Result<Vec<(u64, Vec<u8>)>> {
    let Some(log) = Log::open(vol)? else {
        return Err(vol.unsupported("closing an external XFS log"));
    };
    let head = rec.head % log.bbs;
    let cycle = if head == 0 {
        // The log just went round: the next record starts a new cycle.
        let c = log.cycle(log.bbs - 1)?.wrapping_add(1);
        if c == HEADER_MAGIC {
            c + 1
        } else {
            c
        }
    } else {
        log.cycle(head - 1)?
    };
    let lsn = (u64::from(cycle) << 32) | head;
    let prev = log.header_before(head)?.map(|(at, _)| at).unwrap_or(0);
    let mut data = vec![0u8; BB as usize];
    put32(&mut data, 0, 0x7472_616e); // the op's transaction id: any
    put32(&mut data, 4, 8);
    data[8] = CLIENT_LOG;
    data[9] = UNMOUNT_TRANS;
    data[12..14].copy_from_slice(&UNMOUNT_TYPE.to_le_bytes());
    let mut h = vec![0u8; BB as usize];
    put32(&mut h, 0, HEADER_MAGIC);
    put32(&mut h, 4, cycle);
    let logv2 = vol.sb.versionnum & SB_VERSION_LOGV2 != 0;
    put32(&mut h, 8, if logv2 { 2 } else { 1 });
    put32(&mut h, 12, BB as u32);
    put64(&mut h, 16, lsn);
    put64(&mut h, 24, lsn);
    put32(&mut h, 36, prev as u32);
    put32(&mut h, 40, 1);
    // The first word of the data block goes to the header; the block gets the
    // cycle stamp (the part of a record past the end of the log, the next cycle).
    h[44..48].copy_from_slice(&data[..4]);
    put32(&mut h, 300, FMT_LINUX_LE);
    h[304..320].copy_from_slice(&vol.sb.uuid);
    put32(&mut h, 320, 32768);
    let data_cycle = if head + 1 == log.bbs {
        cycle.wrapping_add(1)
    } else {
        cycle
    };
    let crc = {
        let mut c = crc32c::crc32c(&h[..32]);
        c = crc32c::crc32c_append(c, &[0; 4]);
        c = crc32c::crc32c_append(c, &h[36..328]);
        crc32c::crc32c_append(c, &data)
    };
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    put32(&mut data, 0, data_cycle);
    // What follows the new head must be of an older cycle (or never written), or the
    // kernel would look for the head further on.
    let next = (head + 2) % log.bbs;
    if next != 0 && log.cycle(next)? == data_cycle {
        return Err(refused(
            vol,
            "the log past its head carries the current cycle (a write was torn)",
        ));
    }
    Ok(vec![
        (log.start + head * BB, h),
        (log.start + ((head + 1) % log.bbs) * BB, data),
    ])
}
