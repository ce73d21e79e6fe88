//! Whether the journal holds transactions not yet replayed. The superblock's
//! needs_recovery flag says so; the journal's own superblock (a non-zero `s_start`) says so
//! too, and is checked as well since writing around an unreplayed journal would let the
//! next mount replay stale blocks over our changes.

use super::engine::Engine;
use crate::error::{Error, Result};

const JBD2_MAGIC: u32 = 0xC03B_3998;

fn be32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

pub fn check(e: &mut Engine) -> Result<()> {
    if !e.sb.has_journal() {
        return Ok(());
    }
    let ino = e.sb.journal_inum();
    if ino == 0 {
        // An external journal device: its state is not on this filesystem.
        return Err(Error::Unsupported {
            dev: e.name.clone(),
            feature: "an external journal device".into(),
        });
    }
    let inode = e.read_inode(ino)?;
    let map = e.mapping(&inode)?;
    let Some((first, _)) = map.lookup(0) else {
        return Err(e.corrupt(format!("journal inode {ino} has no first block")));
    };
    let jsb = e.read_block(first)?;
    if be32(&jsb, 0) != JBD2_MAGIC {
        return Err(e.corrupt(format!(
            "journal superblock (block {first}) has a bad magic number"
        )));
    }
    if be32(&jsb, 0x1C) != 0 {
        return Err(Error::Refused {
            dev: e.name.clone(),
            reason: "the journal holds transactions that were never replayed; boot the guest once and shut it down, or run `e2fsck` on the filesystem, then retry".into(),
        });
    }
    Ok(())
}
