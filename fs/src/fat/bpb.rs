//! The boot sector's BIOS parameter block: the geometry every other structure derives
//! from, so it is checked hard here (sizes in range, regions inside the volume, a FAT big
//! enough for its clusters) and a hostile geometry fails now rather than overflowing later.
//!
//! The FAT type comes from the cluster count, as the specification says (the
//! `FilSysType` string is only a label), with one exception Linux makes too: a BPB laid
//! out for FAT32 (`BPB_FATSz16` zero) is read as FAT32 even below 65,525 clusters, since
//! older mkfs.fat made such ESPs and its root directory is a cluster chain either way.

use super::bytes::{u16_at, u32_at, u8_at};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

impl FatType {
    pub fn bits(self) -> u32 {
        match self {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BpbError {
    Corrupt(String),
    Unsupported(String),
}

/// Fewer clusters than this make FAT12, fewer than [`FAT16_LIMIT`] FAT16 (the spec's
/// thresholds, counted in clusters of the data area).
const FAT12_LIMIT: u64 = 4085;
const FAT16_LIMIT: u64 = 65525;
/// Cluster numbers from 0x0FFFFFF7 up are the bad-cluster and end-of-chain marks.
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF5;

#[derive(Debug, Clone)]
pub(crate) struct Bpb {
    pub fat_type: FatType,
    pub bytes_per_sector: u32,
    pub cluster_size: u32,
    pub num_fats: u32,
    pub fat_sectors: u32,
    pub total_sectors: u64,
    /// Clusters of the data area; valid cluster numbers are 2..=cluster_count+1.
    pub cluster_count: u32,
    /// Byte offsets: the first FAT, the fixed root directory (FAT12/16), the data area.
    pub fat_offset: u64,
    pub root_offset: u64,
    pub root_entries: u32,
    pub data_offset: u64,
    /// FAT32's root directory cluster (0 on FAT12/16).
    pub root_cluster: u32,
    pub fsinfo_sector: Option<u32>,
    pub ext_flags: u16,
    pub fs_version: u16,
    /// The boot sector byte where Linux keeps its "mounted, not cleanly unmounted" bit.
    pub state: u8,
    pub serial: Option<u32>,
    pub label: Option<[u8; 11]>,
}

impl Bpb {
    pub fn parse(s: &[u8]) -> Result<Bpb, BpbError> {
        let bad = |m: String| Err(BpbError::Corrupt(format!("boot sector: {m}")));
        if s.len() < 512 {
            return bad("shorter than 512 bytes".into());
        }
        let bps = u32::from(u16_at(s, 11));
        if !matches!(bps, 512 | 1024 | 2048 | 4096) {
            return bad(format!("{bps} bytes per sector"));
        }
        let spc = u32::from(u8_at(s, 13));
        if spc == 0 || !spc.is_power_of_two() {
            return bad(format!("{spc} sectors per cluster"));
        }
        let reserved = u32::from(u16_at(s, 14));
        if reserved == 0 {
            return bad("no reserved sectors".into());
        }
        let num_fats = u32::from(u8_at(s, 16));
        if num_fats == 0 || num_fats > 16 {
            return bad(format!("{num_fats} FATs"));
        }
        let root_entries = u32::from(u16_at(s, 17));
        let tot16 = u64::from(u16_at(s, 19));
        let total = if tot16 != 0 {
            tot16
        } else {
            u64::from(u32_at(s, 32))
        };
        let fatsz16 = u32::from(u16_at(s, 22));
        let fat32_layout = fatsz16 == 0;
        let fat_sectors = if fat32_layout { u32_at(s, 36) } else { fatsz16 };
        if fat_sectors == 0 {
            return bad("FAT size 0".into());
        }
        if fat32_layout && root_entries != 0 {
            return bad(format!(
                "a FAT32 layout with {root_entries} fixed root entries"
            ));
        }
        if total == 0 {
            return bad("0 sectors".into());
        }
        let root_sectors = (u64::from(root_entries) * 32).div_ceil(u64::from(bps));
        let meta =
            u64::from(reserved) + u64::from(num_fats) * u64::from(fat_sectors) + root_sectors;
        if meta >= total {
            return bad(format!(
                "{meta} sectors of FATs and root directory in a volume of {total}"
            ));
        }
        let count = (total - meta) / u64::from(spc);
        let fat_type = if fat32_layout {
            FatType::Fat32
        } else if count < FAT12_LIMIT {
            FatType::Fat12
        } else if count < FAT16_LIMIT {
            FatType::Fat16
        } else {
            return bad(format!(
                "{count} clusters, too many for the FAT12/16 layout it has"
            ));
        };
        if count == 0 || count > FAT32_MAX_CLUSTERS {
            return bad(format!("{count} clusters"));
        }
        let entries_in_fat =
            u64::from(fat_sectors) * u64::from(bps) * 8 / u64::from(fat_type.bits());
        if entries_in_fat < count + 2 {
            return bad(format!(
                "a FAT of {fat_sectors} sectors holds {entries_in_fat} entries for {count} clusters"
            ));
        }
        let (ext, fs_version, root_cluster, fsinfo, state_offset) = if fat32_layout {
            let rc = u32_at(s, 44);
            if rc < 2 || u64::from(rc) > count + 1 {
                return bad(format!("root directory cluster {rc}"));
            }
            let fi = u32::from(u16_at(s, 48));
            let fsinfo = (fi != 0 && fi < reserved).then_some(fi);
            let ext = u16_at(s, 40);
            if ext & 0x80 != 0 && u32::from(ext & 0xf) >= num_fats {
                return bad(format!("active FAT {} of {num_fats}", ext & 0xf));
            }
            (ext, u16_at(s, 42), rc, fsinfo, 65)
        } else {
            (0, 0, 0, None, 37)
        };
        let sig = u8_at(s, state_offset + 1);
        let serial = matches!(sig, 0x28 | 0x29).then(|| u32_at(s, state_offset + 2));
        let label = (sig == 0x29)
            .then(|| s.get(state_offset + 6..state_offset + 17))
            .flatten()
            .and_then(|l| l.try_into().ok());
        let bps64 = u64::from(bps);
        Ok(Bpb {
            fat_type,
            bytes_per_sector: bps,
            cluster_size: bps * spc,
            num_fats,
            fat_sectors,
            total_sectors: total,
            cluster_count: count as u32,
            fat_offset: u64::from(reserved) * bps64,
            root_offset: (u64::from(reserved) + u64::from(num_fats) * u64::from(fat_sectors))
                * bps64,
            root_entries,
            data_offset: meta * bps64,
            root_cluster,
            fsinfo_sector: fsinfo,
            ext_flags: ext,
            fs_version,
            state: u8_at(s, state_offset),
            serial,
            label,
        })
    }

    pub fn volume_bytes(&self) -> u64 {
        self.total_sectors * u64::from(self.bytes_per_sector)
    }

    pub fn max_cluster(&self) -> u32 {
        self.cluster_count + 1
    }

    pub fn valid_cluster(&self, c: u32) -> bool {
        c >= 2 && c <= self.max_cluster()
    }

    /// Byte offset of cluster `c`, which the caller checked with `valid_cluster`.
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c.saturating_sub(2)) * u64::from(self.cluster_size)
    }

    /// Bytes of one FAT that hold entries for every cluster, rounded up to sectors: what
    /// is read at open (a FAT may be larger than its clusters need).
    pub fn fat_bytes_used(&self) -> u64 {
        let bits = u64::from(self.fat_type.bits());
        let bytes = (u64::from(self.cluster_count) + 2) * bits / 8 + 1;
        let bps = u64::from(self.bytes_per_sector);
        (bytes.div_ceil(bps) * bps).min(u64::from(self.fat_sectors) * bps)
    }

    /// The FAT readers believe: FAT32 may turn mirroring off and name one.
    pub fn active_fat(&self) -> u32 {
        if self.ext_flags & 0x80 != 0 {
            u32::from(self.ext_flags & 0xf)
        } else {
            0
        }
    }

    /// The FAT copies a change must reach.
    pub fn fats_to_write(&self) -> Vec<u32> {
        if self.ext_flags & 0x80 != 0 {
            vec![self.active_fat()]
        } else {
            (0..self.num_fats).collect()
        }
    }

    pub fn fat_copy_offset(&self, n: u32) -> u64 {
        self.fat_offset
            + u64::from(n) * u64::from(self.fat_sectors) * u64::from(self.bytes_per_sector)
    }

    pub fn check_version(&self) -> Result<(), BpbError> {
        if self.fat_type == FatType::Fat32 && self.fs_version != 0 {
            return Err(BpbError::Unsupported(format!(
                "FAT32 version {}.{}",
                self.fs_version >> 8,
                self.fs_version & 0xff
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fat16() -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[13] = 4;
        s[14..16].copy_from_slice(&4u16.to_le_bytes());
        s[16] = 2;
        s[17..19].copy_from_slice(&512u16.to_le_bytes());
        s[19..21].copy_from_slice(&40960u16.to_le_bytes());
        s[22..24].copy_from_slice(&40u16.to_le_bytes());
        s[38] = 0x29;
        s[510] = 0x55;
        s[511] = 0xaa;
        s
    }

    #[test]
    fn type_by_cluster_count() {
        let b = Bpb::parse(&fat16()).unwrap();
        assert_eq!(b.fat_type, FatType::Fat16);
        assert_eq!(b.cluster_count, (40960 - 4 - 80 - 32) / 4);
        let mut s = fat16();
        s[13] = 16; // ~2550 clusters: FAT12 whatever the label says
        s[54..62].copy_from_slice(b"FAT16   ");
        assert_eq!(Bpb::parse(&s).unwrap().fat_type, FatType::Fat12);
    }

    #[test]
    fn hostile_boot_sectors_are_errors() {
        assert!(Bpb::parse(&[0u8; 100]).is_err());
        assert!(Bpb::parse(&[0u8; 512]).is_err());
        let mut seed = 0x1234_5678u32;
        for i in 0..20000 {
            let mut s = fat16();
            for _ in 0..(i % 8 + 1) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let at = (seed >> 8) as usize % 90;
                s[at] = (seed >> 20) as u8;
            }
            if let Ok(b) = Bpb::parse(&s) {
                assert!(b.cluster_count >= 1);
                assert!(b.data_offset < b.volume_bytes());
                let _ = b.fat_bytes_used();
                let _ = b.cluster_offset(b.max_cluster());
            }
        }
        let mut s = fat16();
        s[22] = 0;
        s[23] = 0; // FAT32 layout with a FAT size of 0
        assert!(Bpb::parse(&s).is_err());
        let mut s = fat16();
        s[16] = 0;
        assert!(Bpb::parse(&s).is_err());
    }
}
