//! Refcounts (16-bit, refcount_order 4): one counter per host cluster, kept in memory while
//! the image is written and laid out at the end as a refcount table followed by its
//! blocks. The table and blocks count themselves, so their size is found by iterating to a
//! fixed point.
//!
//! Memory is two bytes per allocated host cluster (64 MiB for 2 TiB of stored data at
//! 64 KiB clusters): proportional to what is written, never to the virtual size.

use crate::error::{Error, Result};

#[derive(Default)]
pub struct Refcounts {
    counts: Vec<u16>,
}

/// Where the refcount structures go once everything else is placed.
pub struct RefcountLayout {
    /// First cluster of the table; the blocks follow it.
    pub table_cluster: u64,
    pub table_clusters: u64,
    pub blocks: u64,
}

impl Refcounts {
    /// One more reference to host cluster `c`.
    pub fn add(&mut self, file: &str, c: u64) -> Result<()> {
        let i = usize::try_from(c)
            .map_err(|_| Error::unsupported(file, "a qcow2 file this large on this host"))?;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] = self.counts[i].checked_add(1).ok_or_else(|| {
            Error::unsupported(file, "more than 65535 references to one qcow2 host cluster")
        })?;
        Ok(())
    }

    pub fn add_range(&mut self, file: &str, first: u64, count: u64) -> Result<()> {
        for c in first..first + count {
            self.add(file, c)?;
        }
        Ok(())
    }

    /// Places the table and blocks from cluster `used` (the first free one) on, and counts
    /// them.
    pub fn layout(&mut self, file: &str, used: u64, cluster_size: u64) -> Result<RefcountLayout> {
        let per_block = cluster_size / 2;
        let per_table_cluster = cluster_size / 8;
        let (mut table, mut blocks) = (1u64, 1u64);
        loop {
            let total = used + table + blocks;
            let b = total.div_ceil(per_block);
            let t = b.div_ceil(per_table_cluster);
            if (t, b) == (table, blocks) {
                break;
            }
            (table, blocks) = (t.max(table), b.max(blocks));
        }
        self.add_range(file, used, table + blocks)?;
        Ok(RefcountLayout {
            table_cluster: used,
            table_clusters: table,
            blocks,
        })
    }

    /// The table's bytes (whole clusters), pointing at the blocks laid out after it.
    pub fn table_bytes(&self, l: &RefcountLayout, cluster_size: u64) -> Vec<u8> {
        let mut out = vec![0u8; (l.table_clusters * cluster_size) as usize];
        let first_block = l.table_cluster + l.table_clusters;
        for i in 0..l.blocks {
            let off = (first_block + i) * cluster_size;
            let at = (i * 8) as usize;
            out[at..at + 8].copy_from_slice(&off.to_be_bytes());
        }
        out
    }

    /// Block `i` of the layout: counters of clusters `i * cluster_size / 2` onwards.
    pub fn block_bytes(&self, i: u64, cluster_size: u64) -> Vec<u8> {
        let per_block = (cluster_size / 2) as usize;
        let mut out = vec![0u8; cluster_size as usize];
        let start = (i as usize).saturating_mul(per_block);
        let counts = self.counts.get(start..).unwrap_or(&[]);
        for (slot, c) in out.chunks_exact_mut(2).zip(counts.iter().take(per_block)) {
            slot.copy_from_slice(&c.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_itself() {
        for used in [1u64, 255, 256, 257, 10_000] {
            let mut r = Refcounts::default();
            r.add_range("t", 0, used).unwrap();
            let l = r.layout("t", used, 512).unwrap();
            let end = used + l.table_clusters + l.blocks;
            assert!(l.blocks * 256 >= end, "{used}");
            assert!(l.table_clusters * 64 >= l.blocks, "{used}");
            assert_eq!(r.counts.len() as u64, end);
            assert!(r.counts.iter().all(|&c| c == 1));
        }
    }
}
