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
            let seg = self.segment(pos)?;
            let (s, dev_off, run) = seg.locate(pos).ok_or_else(|| {
                Error::corrupt(&self.name, "LVM segment map", pos, "a stripe is missing")
            })?;
            let n = (run as usize).min(buf.len() - done);
            s.dev.read_at(&mut buf[done..done + n], dev_off)?;
            done += n;
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> Result<Extent> {
        check_range(&self.name, offset, 1, self.len)?;
        let seg = self.segment(offset)?;
        let (s, dev_off, run) = seg.locate(offset).ok_or_else(|| {
            Error::corrupt(&self.name, "LVM segment map", offset, "a stripe is missing")
        })?;
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
