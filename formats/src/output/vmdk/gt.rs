//! The grain table being filled. Grains arrive in order, so only one table (512 entries,
//! 2 KiB) is open at a time; it is handed back for writing as soon as a grain of another
//! table arrives, and memory stays the same whatever the disk size.

use super::GTES_PER_GT;

/// Bytes of one table: 512 little-endian sector numbers.
pub const GT_BYTES: usize = GTES_PER_GT as usize * 4;

pub struct GrainTables {
    index: u64,
    entries: Vec<u8>,
    used: bool,
}

/// A finished table: its index in the grain directory and its bytes.
pub type Finished = (u64, Vec<u8>);

impl GrainTables {
    pub fn new() -> Self {
        GrainTables {
            index: 0,
            entries: vec![0u8; GT_BYTES],
            used: false,
        }
    }

    /// Makes grain `grain`'s table the open one; returns the previous table if it held any
    /// entry and is now complete.
    pub fn open_for(&mut self, grain: u64) -> Option<Finished> {
        let index = grain / GTES_PER_GT;
        if index == self.index {
            return None;
        }
        let done = self.take();
        self.index = index;
        done
    }

    /// Records that `grain` (in the open table) is stored at `sector`.
    pub fn set(&mut self, grain: u64, sector: u32) {
        let i = (grain % GTES_PER_GT) as usize * 4;
        if let Some(e) = self.entries.get_mut(i..i + 4) {
            e.copy_from_slice(&sector.to_le_bytes());
            self.used = true;
        }
    }

    /// The open table if it holds any entry; it is emptied.
    pub fn take(&mut self) -> Option<Finished> {
        if !self.used {
            return None;
        }
        self.used = false;
        let bytes = std::mem::replace(&mut self.entries, vec![0u8; GT_BYTES]);
        Some((self.index, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_close_when_a_later_grain_arrives() {
        let mut t = GrainTables::new();
        assert!(t.open_for(3).is_none());
        t.set(3, 1000);
        assert!(t.open_for(511).is_none());
        // Grain 600 is in table 1: table 0 is done.
        let (i, b) = t.open_for(600).unwrap();
        assert_eq!(i, 0);
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 1000);
        // An empty table is never handed back.
        assert!(t.open_for(5000).is_none());
        assert!(t.take().is_none());
    }
}
