//! FAT32's FSInfo sector: a hint of the free cluster count and where to look for the next
//! free one. Only a hint (readers recount), but fsck.fat checks the count, so the writer
//! keeps it right; a sector without its three signatures is left alone.

use super::bytes::{put_u32, u32_at};

const LEAD: u32 = 0x4161_5252;
const STRUCT: u32 = 0x6141_7272;
const TRAIL: u32 = 0xaa55_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FsInfoSector {
    pub free: u32,
    pub next_free: u32,
}

impl FsInfoSector {
    pub fn parse(s: &[u8]) -> Option<FsInfoSector> {
        (u32_at(s, 0) == LEAD && u32_at(s, 484) == STRUCT && u32_at(s, 508) == TRAIL).then(|| {
            FsInfoSector {
                free: u32_at(s, 488),
                next_free: u32_at(s, 492),
            }
        })
    }

    /// Writes the two hints into the sector `s` (which `parse` accepted).
    pub fn store(&self, s: &mut [u8]) {
        put_u32(s, 488, self.free);
        put_u32(s, 492, self.next_free);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_and_hints() {
        let mut s = vec![0u8; 512];
        assert_eq!(FsInfoSector::parse(&s), None);
        put_u32(&mut s, 0, LEAD);
        put_u32(&mut s, 484, STRUCT);
        put_u32(&mut s, 508, TRAIL);
        let f = FsInfoSector {
            free: 77,
            next_free: 9,
        };
        f.store(&mut s);
        assert_eq!(FsInfoSector::parse(&s), Some(f));
        assert_eq!(FsInfoSector::parse(&s[..100]), None);
    }
}
