//! Reverse-mapping records (`xfs_rmap_rec`): who owns each run of blocks of an AG — an
//! inode's fork at a file offset, or the filesystem itself (AG headers, btrees, the
//! log, inode chunks). Kept as a sorted set while an AG is being changed, with
//! neighbours merged as the kernel and `xfs_repair` merge them (same owner and flags,
//! adjacent blocks, and for file data contiguous offsets), since repair compares the
//! tree with the maximally merged records it derives from the inodes.

use super::bytes::{be32, be64, put32, put64};
use std::collections::BTreeMap;

pub(crate) const OFF_MASK: u64 = (1 << 54) - 1;
pub(crate) const F_ATTR: u64 = 1 << 63;
pub(crate) const F_BMBT: u64 = 1 << 62;
pub(crate) const F_UNWRITTEN: u64 = 1 << 61;

pub(crate) const OWN_AG: u64 = -5i64 as u64;
pub(crate) const OWN_INOBT: u64 = -6i64 as u64;
pub(crate) const OWN_INODES: u64 = -7i64 as u64;
pub(crate) const OWN_REFC: u64 = -8i64 as u64;

/// Owners above this are not inodes (the special owners count down from -1).
const FIRST_SPECIAL: u64 = -16i64 as u64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rmap {
    pub start: u32,
    pub len: u32,
    pub owner: u64,
    /// File offset (in blocks) with the fork and state flags in its top bits.
    pub offset: u64,
}

impl Rmap {
    pub fn decode(r: &[u8]) -> Option<Rmap> {
        Some(Rmap {
            start: be32(r, 0)?,
            len: be32(r, 4)?,
            owner: be64(r, 8)?,
            offset: be64(r, 16)?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut r = [0u8; 24];
        put32(&mut r, 0, self.start);
        put32(&mut r, 4, self.len);
        put64(&mut r, 8, self.owner);
        put64(&mut r, 16, self.offset);
        out.extend_from_slice(&r);
    }

    fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.len)
    }

    /// File offsets only mean something for an inode's fork blocks.
    fn ignores_offset(&self) -> bool {
        self.owner >= FIRST_SPECIAL || self.offset & F_BMBT != 0
    }

    fn key(&self) -> (u32, u64, u64) {
        (self.start, self.owner, self.offset & OFF_MASK)
    }

    fn key_bytes(start: u32, owner: u64, offset: u64) -> Vec<u8> {
        let mut k = vec![0u8; 20];
        put32(&mut k, 0, start);
        put64(&mut k, 4, owner);
        put64(&mut k, 12, offset);
        k
    }

    /// The key a node keeps for the first block of this record (flags but unwritten).
    pub fn low_key(&self) -> Vec<u8> {
        Rmap::key_bytes(self.start, self.owner, self.offset & !F_UNWRITTEN)
    }

    /// The key of the record's last block.
    pub fn high_key(&self) -> Vec<u8> {
        let adj = self.len.saturating_sub(1);
        let off = self.offset & !F_UNWRITTEN;
        let off = if self.ignores_offset() {
            off
        } else {
            ((off & OFF_MASK) + u64::from(adj)) | (off & !OFF_MASK)
        };
        Rmap::key_bytes(self.start.saturating_add(adj), self.owner, off)
    }

    /// Whether `next` continues this record, so the two are one.
    fn joins(&self, next: &Rmap) -> bool {
        self.owner == next.owner
            && self.offset & !OFF_MASK == next.offset & !OFF_MASK
            && self.end() == u64::from(next.start)
            && self.end() + u64::from(next.len) <= u64::from(u32::MAX)
            && (self.ignores_offset()
                || (self.offset & OFF_MASK) + u64::from(self.len) == next.offset & OFF_MASK)
    }
}

/// How far back a merge or removal looks for the record it touches. Records only
/// interleave where blocks are shared (reflink), and then by a few owners at most.
const SCAN_BACK: usize = 256;

/// An AG's reverse mappings, in tree order.
#[derive(Debug, Clone, Default)]
pub(crate) struct RmapSet {
    recs: BTreeMap<(u32, u64, u64), Rmap>,
}

impl RmapSet {
    /// From the concatenated records of the tree. Returns `None` for a record that
    /// repeats a key.
    pub fn from_records(raw: &[u8]) -> Option<RmapSet> {
        let mut recs = BTreeMap::new();
        for r in raw.chunks_exact(24) {
            let r = Rmap::decode(r)?;
            if recs.insert(r.key(), r).is_some() {
                return None;
            }
        }
        Some(RmapSet { recs })
    }

    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.recs.len() * 24);
        for r in self.recs.values() {
            r.encode(&mut out);
        }
        out
    }

    /// Records `len` blocks from `start` as owned by `owner` at `offset` (with flags),
    /// merged with the records before and after it where they continue each other.
    pub fn add(&mut self, start: u32, len: u32, owner: u64, offset: u64) {
        let mut new = Rmap {
            start,
            len,
            owner,
            offset,
        };
        let left = self
            .recs
            .range(..new.key())
            .rev()
            .take(SCAN_BACK)
            .find(|(_, r)| r.joins(&new))
            .map(|(k, r)| (*k, *r));
        if let Some((k, l)) = left {
            self.recs.remove(&k);
            new = Rmap {
                len: l.len + new.len,
                ..l
            };
        }
        let right_start = new.end();
        let right = u32::try_from(right_start).ok().and_then(|rs| {
            self.recs
                .range((rs, 0, 0)..)
                .take_while(|(k, _)| k.0 == rs)
                .find(|(_, r)| new.joins(r))
                .map(|(k, r)| (*k, *r))
        });
        if let Some((k, r)) = right {
            self.recs.remove(&k);
            new.len += r.len;
        }
        self.recs.insert(new.key(), new);
    }

    /// Removes the mapping of `len` blocks from `start` by `owner` (at `offset` for file
    /// data), splitting the record that holds it. False when no record holds it all.
    pub fn remove(&mut self, start: u32, len: u32, owner: u64, offset: u64) -> bool {
        let end = u64::from(start) + u64::from(len);
        let probe = (start, owner, u64::MAX);
        let found = self
            .recs
            .range(..=probe)
            .rev()
            .take(SCAN_BACK)
            .find(|(_, r)| {
                r.owner == owner
                    && r.start <= start
                    && r.end() >= end
                    && r.offset & !OFF_MASK == offset & !OFF_MASK
            })
            .map(|(k, r)| (*k, *r));
        let Some((k, r)) = found else {
            return false;
        };
        let skip = start - r.start;
        if !r.ignores_offset() && (r.offset & OFF_MASK) + u64::from(skip) != offset & OFF_MASK {
            return false;
        }
        self.recs.remove(&k);
        if skip > 0 {
            let l = Rmap { len: skip, ..r };
            self.recs.insert(l.key(), l);
        }
        let tail = r.end() - end;
        if tail > 0 {
            let advance = |o: u64| {
                if r.ignores_offset() {
                    o
                } else {
                    o + u64::from(skip) + u64::from(len)
                }
            };
            let t = Rmap {
                start: end as u32,
                len: tail as u32,
                owner,
                offset: advance(r.offset),
            };
            self.recs.insert(t.key(), t);
        }
        true
    }

    #[cfg(test)]
    fn records(&self) -> Vec<Rmap> {
        self.recs.values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_split() {
        let mut s = RmapSet::default();
        s.add(10, 5, 200, 0);
        s.add(15, 5, 200, 5);
        s.add(20, 2, OWN_AG, 0);
        s.add(22, 3, OWN_AG, 0);
        // Not contiguous in the file: stays apart.
        s.add(25, 1, 200, 100);
        assert_eq!(
            s.records(),
            vec![
                Rmap {
                    start: 10,
                    len: 10,
                    owner: 200,
                    offset: 0
                },
                Rmap {
                    start: 20,
                    len: 5,
                    owner: OWN_AG,
                    offset: 0
                },
                Rmap {
                    start: 25,
                    len: 1,
                    owner: 200,
                    offset: 100
                },
            ]
        );
        // A hole punched in the middle leaves both sides.
        assert!(s.remove(12, 3, 200, 2));
        assert!(!s.remove(12, 1, 200, 2));
        assert!(!s.remove(16, 1, 200, 0));
        assert!(s.remove(21, 1, OWN_AG, 0));
        let r = s.records();
        assert_eq!(r.len(), 5);
        assert_eq!((r[1].start, r[1].len, r[1].offset), (15, 5, 5));
        // Filling the hole merges all three again.
        s.add(12, 3, 200, 2);
        assert_eq!(s.records()[0].len, 10);
    }

    #[test]
    fn keys() {
        let r = Rmap {
            start: 7,
            len: 4,
            owner: 300,
            offset: 10 | F_UNWRITTEN,
        };
        assert_eq!(be32(&r.high_key(), 0), Some(10));
        assert_eq!(be64(&r.high_key(), 12), Some(13));
        assert_eq!(be64(&r.low_key(), 12), Some(10));
        let ag = Rmap {
            start: 7,
            len: 4,
            owner: OWN_AG,
            offset: 0,
        };
        assert_eq!(be64(&ag.high_key(), 12), Some(0));
    }
}
