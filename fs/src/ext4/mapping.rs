//! A file's logical-to-physical map as both mapping schemes produce and consume it: runs of
//! blocks, plus the metadata blocks (extent tree nodes, indirect blocks) the scheme itself
//! occupies, which must be counted in i_blocks and freed with the file.

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub logical: u64,
    pub physical: u64,
    pub len: u64,
    /// An unwritten (preallocated) extent: reads as zeroes.
    pub uninit: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// Sorted by `logical`, not overlapping.
    pub runs: Vec<Run>,
    pub meta: Vec<u64>,
}

impl Mapping {
    /// The physical block of `logical`, or None in a hole or an unwritten extent.
    pub fn lookup(&self, logical: u64) -> Option<(u64, u64)> {
        let i = self.runs.partition_point(|r| r.logical + r.len <= logical);
        let r = self.runs.get(i)?;
        if r.logical > logical || r.uninit {
            return None;
        }
        let within = logical - r.logical;
        Some((r.physical + within, r.len - within))
    }

    /// The first logical block past `logical` that `lookup` maps, if any.
    pub fn next_mapped(&self, logical: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.logical + r.len <= logical);
        self.runs
            .get(i..)?
            .iter()
            .find(|r| !r.uninit)
            .map(|r| r.logical.max(logical + 1))
    }

    /// Every block this file owns, as runs of physical blocks.
    pub fn owned(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self.runs.iter().map(|r| (r.physical, r.len)).collect();
        v.extend(self.meta.iter().map(|&b| (b, 1)));
        v
    }
}

/// Identifies the inode whose map is being read, for Corrupt errors.
pub struct Ctx<'a> {
    pub dev: &'a str,
    pub ino: u32,
    pub block_size: u64,
    pub blocks_count: u64,
    pub first_data_block: u64,
}

impl Ctx<'_> {
    pub fn corrupt(&self, what: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            dev: self.dev.to_string(),
            detail: format!("inode {}: {what}", self.ino),
        }
    }
    pub fn check_block(&self, b: u64, len: u64, what: &str) -> Result<(), Error> {
        if b < self.first_data_block || b.checked_add(len).is_none_or(|e| e > self.blocks_count) {
            return Err(self.corrupt(format!(
                "{what} points at block {b} (+{len}), outside the filesystem ({} blocks)",
                self.blocks_count
            )));
        }
        Ok(())
    }
}

/// Reading more nodes than this from one file's map is taken as a hostile loop.
pub const MAX_NODES: usize = 1 << 20;
/// And more runs than this (24 bytes each) as a hostile map.
pub const MAX_RUNS: usize = 1 << 22;
