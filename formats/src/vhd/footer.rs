//! The 512-byte footer every VHD ends with (and dynamic disks also keep a copy of at
//! offset 0, precisely so a damaged end can be survived).

use super::be::{checksum, hex, u16_at, u32_at, u64_at};

pub const COOKIE: &[u8; 8] = b"conectix";
pub const FOOTER_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    Fixed,
    Dynamic,
    Differencing,
}

#[derive(Debug, Clone)]
pub struct Footer {
    pub data_offset: u64,
    pub creator_app: [u8; 4],
    pub creator_version: u32,
    pub creator_os: u32,
    pub current_size: u64,
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
    pub disk_type: DiskType,
    pub unique_id: String,
    pub saved_state: bool,
}

/// Why a footer was rejected, for the message.
pub enum FooterError {
    NoCookie,
    BadChecksum { stored: u32, computed: u32 },
    UnknownType(u32),
    Short,
}

impl FooterError {
    pub fn describe(&self) -> String {
        match self {
            FooterError::NoCookie => "no \"conectix\" cookie".into(),
            FooterError::BadChecksum { stored, computed } => {
                format!("checksum {stored:#010x} does not match the computed {computed:#010x}")
            }
            FooterError::UnknownType(t) => {
                format!("disk type {t} is not fixed (2), dynamic (3) or differencing (4)")
            }
            FooterError::Short => "shorter than 512 bytes".into(),
        }
    }
}

impl Footer {
    pub fn parse(b: &[u8]) -> Result<Footer, FooterError> {
        if b.len() < FOOTER_LEN {
            return Err(FooterError::Short);
        }
        if b.get(..8) != Some(&COOKIE[..]) {
            return Err(FooterError::NoCookie);
        }
        let stored = u32_at(b, 64).ok_or(FooterError::Short)?;
        let computed = checksum(b.get(..FOOTER_LEN).ok_or(FooterError::Short)?, 64);
        if stored != computed {
            return Err(FooterError::BadChecksum { stored, computed });
        }
        let t = u32_at(b, 60).ok_or(FooterError::Short)?;
        let disk_type = match t {
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            other => return Err(FooterError::UnknownType(other)),
        };
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(b.get(28..32).ok_or(FooterError::Short)?);
        Ok(Footer {
            data_offset: u64_at(b, 16).ok_or(FooterError::Short)?,
            creator_app,
            creator_version: u32_at(b, 32).ok_or(FooterError::Short)?,
            creator_os: u32_at(b, 36).ok_or(FooterError::Short)?,
            current_size: u64_at(b, 48).ok_or(FooterError::Short)?,
            cylinders: u16_at(b, 56).ok_or(FooterError::Short)?,
            heads: *b.get(58).ok_or(FooterError::Short)?,
            sectors: *b.get(59).ok_or(FooterError::Short)?,
            disk_type,
            unique_id: hex(b.get(68..84).ok_or(FooterError::Short)?),
            saved_state: b.get(84).copied().unwrap_or(0) != 0,
        })
    }

    pub fn chs_size(&self) -> u64 {
        self.cylinders as u64 * self.heads as u64 * self.sectors as u64 * 512
    }

    /// The virtual size as qemu computes it, so our reads and qemu's agree byte for byte:
    /// Virtual PC (and old qemu) address only the CHS-representable sectors, while
    /// Hyper-V, disk2vhd, XenServer and qemu with force_size use the footer's size. A
    /// geometry at its maximum means the CHS size would truncate, so the size field wins.
    pub fn virtual_size(&self) -> u64 {
        const MAX_CHS: u64 = 65535 * 16 * 255 * 512;
        let size_apps: [&[u8; 4]; 5] = [b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"];
        let use_chs = !size_apps.contains(&&self.creator_app);
        let chs = self.chs_size();
        if !use_chs || chs == MAX_CHS {
            self.current_size / 512 * 512
        } else {
            chs
        }
    }

    pub fn creator_app(&self) -> String {
        self.creator_app
            .iter()
            .map(|&c| {
                if c.is_ascii_graphic() || c == b' ' {
                    c as char
                } else {
                    '.'
                }
            })
            .collect::<String>()
    }
}
