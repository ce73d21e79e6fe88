//! Cutting copy chunks into grains. Chunks are 2 MiB-aligned, but a source's extent map
//! may start or end a data run inside a grain (a raw file with 4 KiB holes), so a grain can
//! arrive in pieces over consecutive chunks. Whole grains are handled where they are (and
//! compressed on the worker threads); pieces are gathered in one pending grain on the
//! writing thread, which is complete once a later grain shows up, because chunks arrive in
//! order.

use super::GRAIN_BYTES;

/// A grain's share of a chunk; `start..end` index the chunk's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The whole grain (up to the end of the source when the disk ends inside it).
    Whole {
        grain: u64,
        start: usize,
        end: usize,
    },
    /// Part of a grain, at byte `at` of it.
    Part {
        grain: u64,
        start: usize,
        end: usize,
        at: usize,
    },
}

/// The grains a chunk of `len` bytes at `offset` touches, in order. `src_len` is the
/// source's size: a grain cut short by it is still whole.
pub fn pieces(offset: u64, len: usize, src_len: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    if len == 0 {
        return out;
    }
    let end = offset + len as u64;
    let mut g = offset / GRAIN_BYTES;
    loop {
        let gs = g * GRAIN_BYTES;
        if gs >= end {
            break;
        }
        let ge = gs + GRAIN_BYTES;
        let s = gs.max(offset);
        let e = ge.min(end);
        let start = (s - offset) as usize;
        let stop = (e - offset) as usize;
        if s == gs && (e == ge || e >= src_len) {
            out.push(Piece::Whole {
                grain: g,
                start,
                end: stop,
            });
        } else {
            out.push(Piece::Part {
                grain: g,
                start,
                end: stop,
                at: (s - gs) as usize,
            });
        }
        g += 1;
    }
    out
}

/// Whether any of the sorted, disjoint `nonzero` runs meets `start..end`.
pub fn has_data(nonzero: &[(usize, usize)], start: usize, end: usize) -> bool {
    let i = nonzero.partition_point(|r| r.1 <= start);
    nonzero.get(i).is_some_and(|r| r.0 < end)
}

/// The grain being gathered from pieces.
pub struct Pending {
    pub grain: u64,
    pub buf: Vec<u8>,
    /// Some piece has been added since the last `clear`.
    pub active: bool,
    /// Some non-zero byte has been added: the grain must be stored.
    pub dirty: bool,
}

impl Pending {
    pub fn new() -> Self {
        Pending {
            grain: 0,
            buf: vec![0u8; GRAIN_BYTES as usize],
            active: false,
            dirty: false,
        }
    }

    /// Adds a piece of `grain`; the caller has flushed any other grain first.
    pub fn add(&mut self, grain: u64, at: usize, data: &[u8], nonzero: bool) {
        self.grain = grain;
        self.active = true;
        if nonzero {
            if let Some(dst) = self.buf.get_mut(at..at + data.len()) {
                dst.copy_from_slice(data);
                self.dirty = true;
            }
        }
    }

    pub fn clear(&mut self) {
        if self.dirty {
            self.buf.fill(0);
        }
        self.active = false;
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const G: u64 = GRAIN_BYTES;

    #[test]
    fn aligned_chunk_is_whole_grains() {
        let p = pieces(2 << 20, 2 << 20, 100 << 20);
        assert_eq!(p.len(), 32);
        assert!(p
            .iter()
            .all(|x| matches!(x, Piece::Whole { end, start, .. } if end - start == G as usize)));
        assert!(matches!(p[0], Piece::Whole { grain: 32, .. }));
    }

    #[test]
    fn unaligned_edges_are_parts() {
        // 4 KiB into grain 1, up to 8 KiB into grain 3.
        let p = pieces(G + 4096, (2 * G) as usize + 4096, 1 << 30);
        assert_eq!(
            p,
            vec![
                Piece::Part {
                    grain: 1,
                    start: 0,
                    end: G as usize - 4096,
                    at: 4096
                },
                Piece::Whole {
                    grain: 2,
                    start: G as usize - 4096,
                    end: 2 * G as usize - 4096
                },
                Piece::Part {
                    grain: 3,
                    start: 2 * G as usize - 4096,
                    end: 2 * G as usize + 4096,
                    at: 0
                },
            ]
        );
    }

    #[test]
    fn source_end_completes_the_last_grain() {
        let p = pieces(0, 5000, 5000);
        assert_eq!(
            p,
            vec![Piece::Whole {
                grain: 0,
                start: 0,
                end: 5000
            }]
        );
    }

    #[test]
    fn data_runs() {
        let nz = [(4096, 8192), (65536, 69632)];
        assert!(!has_data(&nz, 0, 4096));
        assert!(has_data(&nz, 0, 4097));
        assert!(!has_data(&nz, 8192, 65536));
        assert!(has_data(&nz, 60000, 70000));
        assert!(!has_data(&nz, 69632, 100000));
        assert!(!has_data(&[], 0, 10));
    }

    #[test]
    fn pending_gathers() {
        let mut p = Pending::new();
        p.add(5, 100, &[1, 2, 3], true);
        p.add(5, 0, &[0; 10], false);
        assert!(p.active && p.dirty);
        assert_eq!(&p.buf[100..103], &[1, 2, 3]);
        p.clear();
        assert!(p.buf.iter().all(|&b| b == 0));
    }
}
