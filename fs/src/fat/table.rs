//! The file allocation table: one copy held in memory (read at open from the active FAT),
//! cluster chains walked with loop and range checks, and changes tracked by sector so a
//! write reaches every FAT copy with only the sectors it touched.

use super::bpb::{Bpb, FatType};
use super::bytes::{put_u16, put_u32, u16_at, u32_at};
use std::collections::BTreeSet;

/// What a FAT entry says about the cluster after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Free,
    Cluster(u32),
    End,
    Bad,
    /// A value between the last cluster and the reserved range: corrupt in a chain.
    Reserved(u32),
}

/// A run of consecutive clusters of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub first: u32,
    pub len: u32,
}

#[derive(Debug)]
pub(crate) enum ChainError {
    /// The chain goes to a cluster outside the volume or to a free or bad one.
    Broken { at: u32, next: Next },
    /// More links than clusters in the volume: it loops.
    Loop,
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::Broken { at, next } => {
                write!(f, "cluster {at} is followed by {next:?}")
            }
            ChainError::Loop => write!(f, "the cluster chain loops"),
        }
    }
}

pub(crate) struct FatTable {
    pub kind: FatType,
    pub bytes: Vec<u8>,
    max_cluster: u32,
    sector: usize,
    /// Sectors (of one FAT) changed since the last flush.
    pub dirty: BTreeSet<usize>,
}

impl FatTable {
    pub fn new(bpb: &Bpb, bytes: Vec<u8>) -> FatTable {
        FatTable {
            kind: bpb.fat_type,
            bytes,
            max_cluster: bpb.max_cluster(),
            sector: bpb.bytes_per_sector as usize,
            dirty: BTreeSet::new(),
        }
    }

    pub fn max_cluster(&self) -> u32 {
        self.max_cluster
    }

    /// The raw entry of cluster `c` (FAT32: the low 28 bits).
    pub fn raw(&self, c: u32) -> u32 {
        let c = c as usize;
        match self.kind {
            FatType::Fat12 => {
                let v = u32::from(u16_at(&self.bytes, c + c / 2));
                if c & 1 == 1 {
                    v >> 4
                } else {
                    v & 0xfff
                }
            }
            FatType::Fat16 => u32::from(u16_at(&self.bytes, c * 2)),
            FatType::Fat32 => u32_at(&self.bytes, c * 4) & 0x0fff_ffff,
        }
    }

    pub fn next(&self, c: u32) -> Next {
        let v = self.raw(c);
        let (bad, end) = match self.kind {
            FatType::Fat12 => (0xff7, 0xff8),
            FatType::Fat16 => (0xfff7, 0xfff8),
            FatType::Fat32 => (0x0fff_fff7, 0x0fff_fff8),
        };
        if v == 0 {
            Next::Free
        } else if v >= end {
            Next::End
        } else if v == bad {
            Next::Bad
        } else if v >= 2 && v <= self.max_cluster {
            Next::Cluster(v)
        } else {
            Next::Reserved(v)
        }
    }

    pub fn set_raw(&mut self, c: u32, v: u32) {
        let c = c as usize;
        let (at, len) = match self.kind {
            FatType::Fat12 => {
                let at = c + c / 2;
                let old = u16_at(&self.bytes, at);
                let v = (v & 0xfff) as u16;
                let new = if c & 1 == 1 {
                    (old & 0x000f) | (v << 4)
                } else {
                    (old & 0xf000) | v
                };
                put_u16(&mut self.bytes, at, new);
                (at, 2)
            }
            FatType::Fat16 => {
                put_u16(&mut self.bytes, c * 2, v as u16);
                (c * 2, 2)
            }
            FatType::Fat32 => {
                // The top four bits are reserved and kept as found.
                let old = u32_at(&self.bytes, c * 4);
                put_u32(
                    &mut self.bytes,
                    c * 4,
                    (old & 0xf000_0000) | (v & 0x0fff_ffff),
                );
                (c * 4, 4)
            }
        };
        self.dirty.insert(at / self.sector);
        self.dirty.insert((at + len - 1) / self.sector);
    }

    pub fn end_mark(&self) -> u32 {
        match self.kind {
            FatType::Fat12 => 0xfff,
            FatType::Fat16 => 0xffff,
            FatType::Fat32 => 0x0fff_ffff,
        }
    }

    /// The clusters of the chain from `first`, as runs, stopping after `limit` clusters
    /// (a file needs no more than its size says) or at the end mark.
    pub fn chain(&self, first: u32, limit: u64) -> Result<Vec<Run>, ChainError> {
        let mut runs: Vec<Run> = Vec::new();
        if first < 2 || first > self.max_cluster {
            return Err(ChainError::Broken {
                at: 0,
                next: Next::Reserved(first),
            });
        }
        let mut c = first;
        let mut n: u64 = 0;
        loop {
            n += 1;
            if n > u64::from(self.max_cluster) {
                return Err(ChainError::Loop);
            }
            match runs.last_mut() {
                Some(r) if r.first.checked_add(r.len) == Some(c) => r.len += 1,
                _ => runs.push(Run { first: c, len: 1 }),
            }
            if n >= limit {
                break;
            }
            match self.next(c) {
                Next::End => break,
                Next::Cluster(x) => c = x,
                next => return Err(ChainError::Broken { at: c, next }),
            }
        }
        // A loop inside the part walked shows as runs that overlap.
        let mut sorted = runs.clone();
        sorted.sort_unstable_by_key(|r| r.first);
        if sorted
            .windows(2)
            .any(|w| u64::from(w[0].first) + u64::from(w[0].len) > u64::from(w[1].first))
        {
            return Err(ChainError::Loop);
        }
        Ok(runs)
    }

    /// Every cluster of the chain from `first`, in order.
    pub fn chain_clusters(&self, first: u32, limit: u64) -> Result<Vec<u32>, ChainError> {
        Ok(self
            .chain(first, limit)?
            .iter()
            .flat_map(|r| r.first..r.first + r.len)
            .collect())
    }

    pub fn count_free(&self) -> u32 {
        (2..=self.max_cluster)
            .filter(|&c| self.next(c) == Next::Free)
            .count() as u32
    }

    /// Byte range of one FAT holding sector `s`.
    pub fn sector_bytes(&self, s: usize) -> Option<&[u8]> {
        self.bytes.get(s * self.sector..(s + 1) * self.sector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(kind: FatType, max: u32) -> FatTable {
        FatTable {
            kind,
            bytes: vec![0; 8192],
            max_cluster: max,
            sector: 512,
            dirty: BTreeSet::new(),
        }
    }

    #[test]
    fn fat12_entries_share_bytes() {
        let mut t = table(FatType::Fat12, 100);
        t.set_raw(2, 0xabc);
        t.set_raw(3, 0x123);
        t.set_raw(4, 0xfff);
        assert_eq!((t.raw(2), t.raw(3), t.raw(4)), (0xabc, 0x123, 0xfff));
        // Entry 341 straddles the first two sectors (bytes 511 and 512).
        t.set_raw(341, 0x456);
        assert_eq!(t.raw(341), 0x456);
        assert!(t.dirty.contains(&0) && t.dirty.contains(&1));
    }

    #[test]
    fn chains_runs_loops_and_breaks() {
        let mut t = table(FatType::Fat32, 1000);
        for c in 10..20 {
            t.set_raw(c, c + 1);
        }
        t.set_raw(20, 30);
        t.set_raw(30, 0x0fff_ffff);
        let r = t.chain(10, u64::MAX).unwrap();
        assert_eq!(
            r,
            vec![Run { first: 10, len: 11 }, Run { first: 30, len: 1 }]
        );
        assert_eq!(t.chain(10, 3).unwrap(), vec![Run { first: 10, len: 3 }]);
        t.set_raw(30, 15);
        assert!(matches!(t.chain(10, u64::MAX), Err(ChainError::Loop)));
        // A loop found before the limit, without walking the whole volume.
        assert!(t.chain(10, 12).is_ok());
        assert!(matches!(t.chain(10, 13), Err(ChainError::Loop)));
        t.set_raw(10, 10);
        assert!(matches!(t.chain(10, 3), Err(ChainError::Loop)));
        t.set_raw(10, 11);
        t.set_raw(30, 5000);
        assert!(matches!(
            t.chain(10, u64::MAX),
            Err(ChainError::Broken { .. })
        ));
        t.set_raw(30, 0);
        assert!(matches!(
            t.chain(10, u64::MAX),
            Err(ChainError::Broken { .. })
        ));
        assert!(t.chain(0, 1).is_err());
        assert!(t.chain(1001, 1).is_err());
    }

    #[test]
    fn hostile_tables_never_panic() {
        for kind in [FatType::Fat12, FatType::Fat16, FatType::Fat32] {
            let mut t = table(kind, 3000);
            let mut seed = 7u32;
            for b in t.bytes.iter_mut() {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = (seed >> 16) as u8;
            }
            for c in 0..3100 {
                let _ = t.chain(c, u64::MAX);
            }
            let _ = t.count_free();
        }
    }
}
