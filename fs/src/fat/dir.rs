//! A directory's slots, parsed whole: each live short entry with the long name that
//! precedes it and the slot numbers it spans (so the writer can free or rewrite them),
//! the volume label, and where the never-used tail begins.

use super::dirent::{ShortEntry, ATTR_LFN, ATTR_VOLUME_ID, DELETED};
use super::lfn::Collector;
use std::collections::HashMap;

/// One file or directory of a directory.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The long name if it has one, else the 8.3 name as shown.
    pub name: Vec<u8>,
    /// The 8.3 name as shown, which lookups match too.
    pub short_name: Vec<u8>,
    pub entry: ShortEntry,
    /// First slot of the entry's long name (its own slot when it has none).
    pub first_slot: u32,
    pub slot: u32,
}

/// Where a directory's slots live.
#[derive(Debug, Clone)]
pub(crate) enum Place {
    /// FAT12/16's root: a fixed area at this byte offset.
    Fixed(u64),
    /// Every other directory: these clusters, in order.
    Chain(Vec<u32>),
}

#[derive(Debug)]
pub(crate) struct Dir {
    pub place: Place,
    pub raw: Vec<u8>,
    pub nodes: Vec<Node>,
    /// Lookup keys (names folded to ASCII lower case, long and short) to `nodes` indexes.
    pub index: HashMap<Vec<u8>, usize>,
    /// Exact long (or shown 8.3) names to `nodes` indexes, which win over folded ones.
    pub exact: HashMap<Vec<u8>, usize>,
    /// The first slot marked "never used" (or the slot count): later ones are free too.
    pub end: u32,
    pub label: Option<[u8; 11]>,
}

/// vfat's comparison: ASCII letters fold, everything else must be equal.
pub(crate) fn fold(name: &[u8]) -> Vec<u8> {
    name.to_ascii_lowercase()
}

impl Dir {
    pub fn parse(place: Place, raw: Vec<u8>, fat32: bool) -> Dir {
        let mut nodes = Vec::new();
        let mut label = None;
        let mut lfn = Collector::default();
        let mut first = None;
        let mut end = (raw.len() / 32) as u32;
        for (i, b) in raw.chunks_exact(32).enumerate() {
            let i = i as u32;
            let b0 = b.first().copied().unwrap_or(0);
            if b0 == 0 {
                end = i;
                break;
            }
            if b0 == DELETED {
                lfn.reset();
                first = None;
                continue;
            }
            let attr = b.get(11).copied().unwrap_or(0);
            if attr & 0x3f == ATTR_LFN {
                if b0 & super::lfn::LAST != 0 {
                    first = Some(i);
                }
                lfn.slot(b);
                continue;
            }
            let e = ShortEntry::parse(b, fat32);
            let long = lfn.finish(&e.name);
            let start = if long.is_some() {
                first.unwrap_or(i)
            } else {
                i
            };
            first = None;
            if attr & ATTR_VOLUME_ID != 0 {
                if label.is_none() && attr & 0x10 == 0 {
                    label = Some(e.name);
                }
                continue;
            }
            if e.is_dot() {
                continue;
            }
            let short_name = e.display_name();
            nodes.push(Node {
                name: long
                    .map(String::into_bytes)
                    .unwrap_or_else(|| short_name.clone()),
                short_name,
                entry: e,
                first_slot: start,
                slot: i,
            });
        }
        let mut index = HashMap::new();
        let mut exact = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            exact.entry(n.name.clone()).or_insert(i);
        }
        for (i, n) in nodes.iter().enumerate() {
            index.entry(fold(&n.name)).or_insert(i);
        }
        for (i, n) in nodes.iter().enumerate() {
            index.entry(fold(&n.short_name)).or_insert(i);
        }
        Dir {
            place,
            raw,
            nodes,
            index,
            exact,
            end,
            label,
        }
    }

    pub fn slots(&self) -> u32 {
        (self.raw.len() / 32) as u32
    }

    /// The node `name` names, as vfat finds it: an exact long name first, then any
    /// long or short name equal but for ASCII case.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.exact
            .get(name)
            .or_else(|| self.index.get(&fold(name)))
            .and_then(|&i| self.nodes.get(i))
    }

    pub fn short_taken(&self, short: &[u8; 11]) -> bool {
        self.raw.chunks_exact(32).take(self.end as usize).any(|b| {
            b.get(..11) == Some(&short[..]) && b.get(11).is_some_and(|a| a & 0x3f != ATTR_LFN)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::lfn::slots;
    use super::*;

    fn short(name: &[u8; 11], attr: u8) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..11].copy_from_slice(name);
        b[11] = attr;
        b
    }

    #[test]
    fn entries_long_names_labels_and_end() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&short(b"ESP        ", ATTR_VOLUME_ID));
        raw.extend_from_slice(&short(b".          ", 0x10));
        for s in slots("shimx64-redhat.efi", b"SHIMX6~1EFI") {
            raw.extend_from_slice(&s);
        }
        raw.extend_from_slice(&short(b"SHIMX6~1EFI", 0x20));
        // An orphan long name before a plain entry.
        raw.extend_from_slice(&slots("stale", b"OLD     TXT")[0]);
        raw.extend_from_slice(&short(b"BOOTX64 EFI", 0x20));
        let mut del = short(b"GONE    TXT", 0x20);
        del[0] = DELETED;
        raw.extend_from_slice(&del);
        raw.extend_from_slice(&[0u8; 32]);
        raw.extend_from_slice(&short(b"AFTEREND   ", 0x20));
        let d = Dir::parse(Place::Fixed(0), raw, true);
        let names: Vec<_> = d
            .nodes
            .iter()
            .map(|n| String::from_utf8_lossy(&n.name).into_owned())
            .collect();
        assert_eq!(names, ["shimx64-redhat.efi", "BOOTX64.EFI"]);
        assert_eq!(d.label, Some(*b"ESP        "));
        assert_eq!((d.nodes[0].first_slot, d.nodes[0].slot), (2, 4));
        assert_eq!(d.end, 8);
        assert_eq!(d.find(b"SHIMX64-REDHAT.EFI").unwrap().slot, 4);
        assert_eq!(d.find(b"shimx6~1.efi").unwrap().slot, 4);
        assert_eq!(d.find(b"bootx64.efi").unwrap().slot, 6);
        assert!(d.find(b"gone.txt").is_none());
        assert!(d.short_taken(b"SHIMX6~1EFI"));
    }

    #[test]
    fn hostile_directories_never_panic() {
        let mut seed = 5u32;
        for len in [0usize, 31, 32, 33, 4096] {
            for _ in 0..200 {
                let raw: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        let v = (seed >> 16) as u8;
                        if v < 64 {
                            0x0f
                        } else {
                            v
                        }
                    })
                    .collect();
                let d = Dir::parse(Place::Chain(vec![]), raw, seed & 1 == 0);
                for n in &d.nodes {
                    let _ = d.find(&n.name);
                }
            }
        }
    }
}
