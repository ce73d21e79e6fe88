//! A logical volume as a block device: LV offsets mapped through striped segments (one
//! stripe is linear) onto PV devices. Nothing is activated on the host, so a guest VG
//! named like a host VG cannot clash.

use crate::blockdev::{BlockDev, Extent};
use crate::error::{check_range, Error, Result};
use std::sync::Arc;

#[derive(Clone)]
pub struct Stripe {
    pub dev: Arc<dyn BlockDev>,
    /// Byte offset on the PV device where this stripe's area starts.
    pub start: u64,
}

#[derive(Clone)]
pub struct MappedSegment {
    /// LV byte offset and length.
    pub offset: u64,
    pub len: u64,
    /// Bytes per stripe chunk (ignored with one stripe).
    pub stripe_size: u64,
    pub stripes: Vec<Stripe>,
}

impl MappedSegment {
    /// Where LV offset `pos` (inside this segment) lands, and how many bytes follow
    /// contiguously on that device.
    fn locate(&self, pos: u64) -> Option<(&Stripe, u64, u64)> {
        let o = pos - self.offset;
        let n = self.stripes.len() as u64;
        if n == 1 {
            let s = self.stripes.first()?;
            return Some((s, s.start + o, self.len - o));
        }
        let chunk = o / self.stripe_size;
        let within = o % self.stripe_size;
        let s = self.stripes.get((chunk % n) as usize)?;
        let row = chunk / n;
        Some((
            s,
            s.start + row * self.stripe_size + within,
            (self.stripe_size - within).min(self.len - o),
        ))
    }
}

pub struct MappedDev {
    name: String,
    len: u64,
    segments: Vec<MappedSegment>,
}

impl MappedDev {
    pub fn new(name: String, len: u64, segments: Vec<MappedSegment>) -> Self {
        MappedDev {
            name,
            len,
            segments,
        }
    }

    /// The stripe device, its offset, and the contiguous run there for LV offset `pos`.
    fn locate(&self, pos: u64) -> Result<(&Stripe, u64, u64)> {
        self.segment(pos)?.locate(pos).ok_or_else(|| {
            Error::corrupt(&self.name, "LVM segment map", pos, "a stripe is missing")
        })
    }

    /// Segments are sorted and tile the LV (checked when the VG was assembled).
    fn segment(&self, pos: u64) -> Result<&MappedSegment> {
        let i = self.segments.partition_point(|s| s.offset + s.len <= pos);
        self.segments
            .get(i)
            .filter(|s| pos >= s.offset && pos < s.offset + s.len)
            .ok_or_else(|| {
                Error::corrupt(
                    &self.name,
                    "LVM segment map",
                    pos,
                    "no segment covers this offset",
                )
            })
    }
}

impl BlockDev for MappedDev {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.len)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (s, dev_off, run) = self.locate(pos)?;
            let n = usize::try_from(run)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let Some(part) = buf.get_mut(done..done + n) else {
                break;
            };
            s.dev.read_at(part, dev_off)?;
            done += n;
        }
        Ok(())
    }

    /// Writes go where reads come from; the PV devices decide whether they are writable
    /// (inputs are opened read-only, so this only reaches a disk the user opened `--rw`).
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.len)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (s, dev_off, run) = self.locate(pos)?;
            let n = usize::try_from(run)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let Some(part) = buf.get(done..done + n) else {
                break;
            };
            s.dev.write_at(part, dev_off)?;
            done += n;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut seen: Vec<*const ()> = Vec::new();
        for st in self.segments.iter().flat_map(|s| &s.stripes) {
            let p = Arc::as_ptr(&st.dev) as *const ();
            if !seen.contains(&p) {
                seen.push(p);
                st.dev.flush()?;
            }
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(&self.name, offset, 1, self.len)?;
        let (s, dev_off, run) = self.locate(offset)?;
        let e = s.dev.extent_at(dev_off)?;
        Ok(Extent {
            kind: e.kind,
            len: e.len.min(run).max(1),
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemDev;

    /// Two stripes of 4-byte chunks after a linear segment: every LV byte lands where
    /// dm-stripe would put it, for reads and writes alike.
    #[test]
    fn striped_and_linear_mapping() {
        let a: Arc<dyn BlockDev> = Arc::new(MemDev::writable("a", vec![0u8; 64]));
        let b: Arc<dyn BlockDev> = Arc::new(MemDev::writable("b", vec![0u8; 64]));
        let dev = MappedDev::new(
            "vg/lv".into(),
            24,
            vec![
                MappedSegment {
                    offset: 0,
                    len: 8,
                    stripe_size: 0,
                    stripes: vec![Stripe {
                        dev: b.clone(),
                        start: 40,
                    }],
                },
                MappedSegment {
                    offset: 8,
                    len: 16,
                    stripe_size: 4,
                    stripes: vec![
                        Stripe {
                            dev: a.clone(),
                            start: 0,
                        },
                        Stripe {
                            dev: b.clone(),
                            start: 0,
                        },
                    ],
                },
            ],
        );
        let data: Vec<u8> = (1..=24).collect();
        dev.write_at(&data, 0).unwrap();
        let mut back = vec![0u8; 24];
        dev.read_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
        let mut x = [0u8; 8];
        a.read_at(&mut x, 0).unwrap();
        assert_eq!(x, [9, 10, 11, 12, 17, 18, 19, 20]);
        b.read_at(&mut x, 0).unwrap();
        assert_eq!(x, [13, 14, 15, 16, 21, 22, 23, 24]);
        b.read_at(&mut x, 40).unwrap();
        assert_eq!(x, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(dev.extent_at(9).unwrap().len, 3);
        assert!(dev.read_at(&mut x, 20).is_err());
        dev.flush().unwrap();
    }
}
