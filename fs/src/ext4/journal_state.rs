//! Whether the journal holds transactions not yet replayed, checked when the engine opens
//! (after `journal_replay` has replayed a journal that needs recovery). The superblock's
//! needs_recovery flag says so; the journal's own superblock (a non-zero `s_start`) says so
//! too, and is checked as well since writing around an unreplayed journal would let the
//! next mount replay stale blocks over our changes. A log without the flag is one the
//! kernel would throw away and e2fsck asks about, so it is left to e2fsck.

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
            reason: "the journal holds transactions but the superblock does not say it needs recovery; run `e2fsck` on the filesystem (it asks whether to replay them), then retry".into(),
        });
    }
    Ok(())
}
