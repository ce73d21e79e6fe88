//! The device under one XFS filesystem with its superblock: bounded reads of blocks and
//! inodes, and the error constructors every structure uses, so each message names the
//! device, the structure and its byte offset.

use super::superblock::Superblock;
use crate::error::{Error, Result};
use std::sync::Arc;
use transplant_formats::BlockDev;

pub(crate) struct Volume {
    pub dev: Arc<dyn BlockDev>,
    pub sb: Superblock,
}

impl Volume {
    pub fn name(&self) -> &str {
        self.dev.name()
    }

    pub fn corrupt(&self, what: &str, offset: u64, detail: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            dev: self.name().to_string(),
            detail: format!("XFS {what} at {offset:#x}: {detail}"),
        }
    }

    pub fn unsupported(&self, feature: impl Into<String>) -> Error {
        Error::Unsupported {
            dev: self.name().to_string(),
            feature: feature.into(),
        }
    }

    /// Reads `len` bytes at byte `offset` (callers bound `len` by a block size).
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.dev.read_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Reads `count` filesystem blocks from `fsbno` (one AG, inside the filesystem).
    pub fn read_fsb(&self, fsbno: u64, count: u64, what: &str) -> Result<Vec<u8>> {
        let off = self
            .sb
            .fsb_offset(fsbno)
            .filter(|_| self.sb.fsb_range_ok(fsbno, count))
            .ok_or_else(|| {
                self.corrupt(
                    what,
                    fsbno,
                    format!("block {fsbno} (+{count}) lies outside the filesystem"),
                )
            })?;
        let len = usize::try_from(count << self.sb.blocklog)
            .ok()
            .filter(|&l| l <= 1 << 16)
            .ok_or_else(|| self.corrupt(what, off, "more than 64 KiB in one structure"))?;
        self.read(off, len)
    }
}
