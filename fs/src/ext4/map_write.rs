//! Giving an inode a new block map: free the old map's own blocks, allocate what the new
//! one needs, and build it (an extent tree on filesystems with extents, an indirect block
//! map on ext2/3). Allocation happens in the transaction's first phase; the returned plan
//! is written past the commit point.

use super::block_map;
use super::engine::Engine;
use super::extent_tree;
use super::inode::{flags, Inode};
use super::mapping::Run;
use crate::error::{Error, Result};

pub struct MapPlan {
    pub i_block: [u8; 60],
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Blocks the map itself occupies (counted in i_blocks).
    pub meta_blocks: u64,
    pub extents: bool,
}

impl MapPlan {
    /// Installs the plan into the inode (i_block, flag, i_blocks) and writes its nodes.
    pub fn apply(self, e: &Engine, i: &mut Inode, data_blocks: u64) -> Result<()> {
        for (b, data) in &self.writes {
            e.write_block(*b, data)?;
        }
        i.set_i_block(&self.i_block);
        let f = i.flags();
        i.set_flags(if self.extents {
            f | flags::EXTENTS
        } else {
            f & !flags::EXTENTS
        });
        e.set_blocks(i, data_blocks + self.meta_blocks)
    }
}

impl Engine {
    /// Sets i_blocks from data+map blocks, adding the xattr block if there is one.
    pub fn set_blocks(&self, i: &mut Inode, blocks: u64) -> Result<()> {
        let ea = u64::from(i.file_acl() != 0);
        if !i.set_fs_blocks(blocks + ea, self.bs(), self.sb.huge_file()) {
            return Err(Error::Unsupported {
                dev: self.name.clone(),
                feature: format!("inode {}: a file this large (i_blocks overflows)", i.ino),
            });
        }
        Ok(())
    }

    /// Plans the map of `i` over `runs` (sorted), freeing `old_meta` and allocating new
    /// map blocks near `goal`.
    pub fn plan_mapping(
        &mut self,
        i: &Inode,
        runs: &[Run],
        old_meta: &[u64],
        goal: u64,
    ) -> Result<MapPlan> {
        let bs = self.bs();
        let meta_runs: Vec<(u64, u64)> = old_meta.iter().map(|&b| (b, 1)).collect();
        self.free_blocks(&meta_runs)?;
        if self.sb.extents() {
            let ext = extent_tree::split_runs(runs);
            let need = extent_tree::blocks_needed(ext.len(), bs) as u64;
            let meta = self.alloc_list(goal, need)?;
            let (root, writes) = extent_tree::build(&ext, &meta, bs, self.inode_seed(i));
            return Ok(MapPlan {
                i_block: root,
                writes,
                meta_blocks: need,
                extents: true,
            });
        }
        let total = runs.last().map(|r| r.logical + r.len).unwrap_or(0);
        let too_big = || Error::Unsupported {
            dev: self.name.clone(),
            feature: format!(
                "inode {}: {total} blocks in an ext2/3 block map (too large for it)",
                i.ino
            ),
        };
        if total > u32::MAX as u64 || runs.iter().any(|r| r.physical + r.len > u32::MAX as u64) {
            return Err(too_big());
        }
        let mut dense = vec![0u64; total as usize];
        for r in runs {
            for k in 0..r.len {
                if let Some(d) = dense.get_mut((r.logical + k) as usize) {
                    *d = r.physical + k;
                }
            }
        }
        let need = block_map::blocks_needed(total, bs).ok_or_else(too_big)?;
        let meta = self.alloc_list(goal, need)?;
        let (root, writes) = block_map::build(&dense, &meta, bs);
        Ok(MapPlan {
            i_block: root,
            writes,
            meta_blocks: need,
            extents: false,
        })
    }

    /// Allocates `n` single blocks near `goal`, as a list.
    pub fn alloc_list(&mut self, goal: u64, n: u64) -> Result<Vec<u64>> {
        let runs = self.alloc_blocks(goal, n)?;
        Ok(runs
            .into_iter()
            .flat_map(|(s, l)| (0..l).map(move |k| s + k))
            .collect())
    }
}
