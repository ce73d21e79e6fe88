//! One AG's reference counts (the refcountbt of reflink filesystems) as the writer
//! changes them. A record covers a run of blocks that two or more file forks map; a
//! block in use with no record has one user. Records of the copy-on-write staging
//! domain (start with the top bit set, owned by the kernel's CoW forks) are kept as
//! they are: the writer never touches staging extents.
//!
//! Freeing a file's extent drops one reference from each shared block under it, as
//! the kernel's `xfs_refcount_decrease` does: records are split at the extent's edges,
//! a record falling to one user disappears (its blocks stay with the other file), and
//! neighbours left with equal counts are merged, since `xfs_repair` expects the
//! records it would build itself. Only blocks with no record go back to free space.

use super::bytes::be32;
use std::collections::BTreeMap;

/// The top bit of a record's start: the copy-on-write staging domain.
const COW_DOMAIN: u32 = 1 << 31;

#[derive(Debug, Clone, Default)]
pub(crate) struct Refcounts {
    /// Shared runs: first block to (length, users), users at least 2.
    shared: BTreeMap<u32, (u32, u32)>,
    /// Staging records, raw, in tree order.
    cow: Vec<[u8; 12]>,
    /// The tree's blocks, as read or as laid out last.
    pub blocks: Vec<u32>,
    pub dirty: bool,
}

impl Refcounts {
    /// From the concatenated records of the tree; `None` when shared records overlap,
    /// are empty or count fewer than two users.
    pub fn from_records(raw: &[u8], blocks: Vec<u32>) -> Option<Refcounts> {
        let mut shared = BTreeMap::new();
        let mut cow = Vec::new();
        let mut prev_end = 0u64;
        for r in raw.chunks_exact(12) {
            let (s, l, c) = (be32(r, 0)?, be32(r, 4)?, be32(r, 8)?);
            if s & COW_DOMAIN != 0 {
                cow.push(r.try_into().ok()?);
                continue;
            }
            let end = u64::from(s) + u64::from(l);
            if l == 0 || c < 2 || u64::from(s) < prev_end {
                return None;
            }
            prev_end = end;
            shared.insert(s, (l, c));
        }
        Some(Refcounts {
            shared,
            cow,
            blocks,
            dirty: false,
        })
    }

    pub fn len(&self) -> usize {
        self.shared.len() + self.cow.len()
    }

    /// Whether the kernel left copy-on-write staging extents (a CoW fork's blocks).
    pub fn has_cow(&self) -> bool {
        !self.cow.is_empty()
    }

    /// The shared records overlapping `[start, end)`, in order.
    fn overlapping(&self, start: u32, end: u64) -> Vec<(u32, u32, u32)> {
        let before = self
            .shared
            .range(..start)
            .next_back()
            .filter(|(&s, &(l, _))| u64::from(s) + u64::from(l) > u64::from(start));
        let within = self
            .shared
            .range(start..)
            .take_while(|(&s, _)| u64::from(s) < end);
        before
            .into_iter()
            .chain(within)
            .map(|(&s, &(l, c))| (s, l, c))
            .collect()
    }

    pub fn is_shared(&self, start: u32, len: u32) -> bool {
        !self
            .overlapping(start, u64::from(start) + u64::from(len))
            .is_empty()
    }

    /// Drops one user from each of `len` blocks from `start`; returns the runs that
    /// had no other user, which the caller frees.
    pub fn decrease(&mut self, start: u32, len: u32) -> Vec<(u32, u32)> {
        let end = u64::from(start) + u64::from(len);
        let hit = self.overlapping(start, end);
        if hit.is_empty() {
            return vec![(start, len)];
        }
        self.dirty = true;
        let mut unshared = Vec::new();
        let mut pos = u64::from(start);
        for (s, l, c) in hit {
            self.shared.remove(&s);
            let (rs, re) = (u64::from(s), u64::from(s) + u64::from(l));
            let (lo, hi) = (rs.max(u64::from(start)), re.min(end));
            if lo > pos {
                unshared.push((pos as u32, (lo - pos) as u32));
            }
            if rs < lo {
                self.shared.insert(s, ((lo - rs) as u32, c));
            }
            if c > 2 {
                self.shared.insert(lo as u32, ((hi - lo) as u32, c - 1));
            }
            if hi < re {
                self.shared.insert(hi as u32, ((re - hi) as u32, c));
            }
            pos = hi;
        }
        if pos < end {
            unshared.push((pos as u32, (end - pos) as u32));
        }
        self.merge_around(start, end);
        unshared
    }

    /// Joins touching records with equal counts from the one before `start` to the one
    /// starting at `end`.
    fn merge_around(&mut self, start: u32, end: u64) {
        let first = self
            .shared
            .range(..start)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(start);
        let keys: Vec<u32> = self
            .shared
            .range(first..)
            .take_while(|(&s, _)| u64::from(s) <= end)
            .map(|(&s, _)| s)
            .collect();
        let mut cur: Option<(u32, u32, u32)> = None;
        for k in keys {
            let Some(&(l, c)) = self.shared.get(&k) else {
                continue;
            };
            match cur {
                Some((s, cl, cc))
                    if cc == c
                        && u64::from(s) + u64::from(cl) == u64::from(k)
                        && u64::from(cl) + u64::from(l) < u64::from(COW_DOMAIN) =>
                {
                    self.shared.remove(&k);
                    self.shared.insert(s, (cl + l, c));
                    cur = Some((s, cl + l, c));
                }
                _ => cur = Some((k, l, c)),
            }
        }
    }

    /// The records in tree order (shared ones, then the staging domain's).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * 12);
        for (&s, &(l, c)) in &self.shared {
            out.extend_from_slice(&s.to_be_bytes());
            out.extend_from_slice(&l.to_be_bytes());
            out.extend_from_slice(&c.to_be_bytes());
        }
        for r in &self.cow {
            out.extend_from_slice(r);
        }
        out
    }

    #[cfg(test)]
    fn records(&self) -> Vec<(u32, u32, u32)> {
        self.shared.iter().map(|(&s, &(l, c))| (s, l, c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(recs: &[(u32, u32, u32)]) -> Refcounts {
        let raw: Vec<u8> = recs
            .iter()
            .flat_map(|&(s, l, c)| [s.to_be_bytes(), l.to_be_bytes(), c.to_be_bytes()].concat())
            .collect();
        Refcounts::from_records(&raw, Vec::new()).unwrap()
    }

    #[test]
    fn two_users_become_one() {
        let mut r = set(&[(100, 50, 2)]);
        // Freeing the whole shared run frees nothing and leaves no record.
        assert_eq!(r.decrease(100, 50), vec![]);
        assert!(r.records().is_empty());
        assert!(r.dirty);
    }

    #[test]
    fn split_at_the_edges_and_free_the_unshared() {
        // 100..150 shared by three, 150..160 by two.
        let mut r = set(&[(100, 50, 3), (150, 10, 2)]);
        // A file mapping 90..120 and 140..170 in two extents.
        assert_eq!(r.decrease(90, 30), vec![(90, 10)]);
        assert_eq!(r.records(), vec![(100, 20, 2), (120, 30, 3), (150, 10, 2)]);
        assert_eq!(r.decrease(140, 30), vec![(160, 10)]);
        // 140..150 fell to two, merging with 150..160 (now one user: gone).
        assert_eq!(r.records(), vec![(100, 20, 2), (120, 20, 3), (140, 10, 2)]);
        // Dropping 120..140 to two merges all three into one record.
        assert_eq!(r.decrease(120, 20), vec![]);
        assert_eq!(r.records(), vec![(100, 50, 2)]);
    }

    #[test]
    fn unshared_extents_pass_through() {
        let mut r = set(&[(10, 5, 2)]);
        assert_eq!(r.decrease(20, 5), vec![(20, 5)]);
        assert!(!r.dirty);
        assert!(r.is_shared(14, 1));
        assert!(!r.is_shared(15, 10));
        assert!(Refcounts::from_records(&[0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 1], vec![]).is_none());
    }
}
