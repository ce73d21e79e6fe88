//! Manifest digests of disk files that are checked while the disk is converted: a second
//! reader walks the member front to back in bounded blocks on its own thread, beside the
//! copy, so the bytes come from the page cache the copy has just filled (or fills next),
//! and the whole is never held in memory. The copy engine reads out of order on many
//! threads, so hashing inside its reads is not possible for a digest that must see the
//! bytes in order.

use super::manifest::{check_at, Entry, Hasher};
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Bytes hashed per read.
pub const HASH_BLOCK: usize = 1 << 20;

/// A digest still to verify: the bytes of `dev` (the member or file as stored) against a
/// manifest entry.
#[derive(Clone)]
pub struct PendingCheck {
    pub dev: Arc<dyn BlockDev>,
    pub entry: Entry,
    /// The package, for messages.
    pub package: String,
    /// Where the file's bytes start in the package (0 for a file of its own).
    pub offset: u64,
}

impl PendingCheck {
    /// Hashes the whole device and compares. `cancel` stops early (a Refused error).
    pub fn run(&self, cancel: &AtomicBool) -> Result<u64> {
        let mut h = Hasher::new(self.entry.algorithm);
        let len = self.dev.len();
        let mut buf = vec![0u8; HASH_BLOCK];
        let mut pos = 0u64;
        while pos < len {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::refused(
                    &self.package,
                    "the digest check was interrupted",
                ));
            }
            let n = (len - pos).min(HASH_BLOCK as u64) as usize;
            let b = buf.get_mut(..n).unwrap_or_default();
            self.dev.read_at(b, pos)?;
            h.update(b);
            pos += n as u64;
        }
        check_at(&self.entry, &h.finish(), &self.package, self.offset)?;
        Ok(len)
    }
}
