//! The qcow2 header and its extensions (version 2 and 3). Every size and offset in it is
//! checked against the file before anything is allocated from it.

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 4] = b"QFI\xfb";
pub const INCOMPAT_DIRTY: u64 = 1;
pub const INCOMPAT_CORRUPT: u64 = 2;
pub const INCOMPAT_DATA_FILE: u64 = 4;
pub const INCOMPAT_COMPRESSION: u64 = 8;
pub const INCOMPAT_EXTL2: u64 = 16;
const KNOWN_INCOMPAT: u64 = 0x1f;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Zstd,
}

#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub backing_offset: u64,
    pub backing_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_offset: u64,
    pub nb_snapshots: u32,
    pub incompatible: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
    pub backing_format: Option<String>,
    /// (type, bit, name) from the feature name table, for naming unknown bits.
    pub feature_names: Vec<(u8, u8, String)>,
    pub has_crypto_ext: bool,
    pub data_file: Option<String>,
}

fn be32(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)?.try_into().ok().map(u32::from_be_bytes)
}
fn be64(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 8)?.try_into().ok().map(u64::from_be_bytes)
}

impl Header {
    /// Parses the header from the first cluster's bytes (`b` holds at least what the
    /// header and its extensions need, bounded by the caller).
    pub fn parse(file: &str, b: &[u8]) -> Result<Header> {
        let bad = |off: u64, d: String| Error::corrupt(file, "qcow2 header", off, d);
        let short = || bad(0, "the file ends inside the header".into());
        if b.get(..4) != Some(&MAGIC[..]) {
            return Err(bad(0, "no QFI\\xfb magic".into()));
        }
        let version = be32(b, 4).ok_or_else(short)?;
        if version != 2 && version != 3 {
            return Err(Error::unsupported(file, format!("qcow2 version {version}")));
        }
        let cluster_bits = be32(b, 20).ok_or_else(short)?;
        if !(9..=21).contains(&cluster_bits) {
            return Err(bad(
                20,
                format!("cluster_bits {cluster_bits} is outside 9..=21 (512 B to 2 MiB clusters)"),
            ));
        }
        let mut h = Header {
            version,
            backing_offset: be64(b, 8).ok_or_else(short)?,
            backing_size: be32(b, 16).ok_or_else(short)?,
            cluster_bits,
            size: be64(b, 24).ok_or_else(short)?,
            crypt_method: be32(b, 32).ok_or_else(short)?,
            l1_size: be32(b, 36).ok_or_else(short)?,
            l1_offset: be64(b, 40).ok_or_else(short)?,
            nb_snapshots: be32(b, 60).ok_or_else(short)?,
            incompatible: 0,
            refcount_order: 4,
            header_length: 72,
            compression: Compression::Zlib,
            backing_format: None,
            feature_names: Vec::new(),
            has_crypto_ext: false,
            data_file: None,
        };
        if version == 3 {
            h.incompatible = be64(b, 72).ok_or_else(short)?;
            h.refcount_order = be32(b, 96).ok_or_else(short)?;
            h.header_length = be32(b, 100).ok_or_else(short)?;
            if h.header_length < 104 || h.header_length as usize > b.len() {
                return Err(bad(
                    100,
                    format!(
                        "header_length {} is not a plausible header size",
                        h.header_length
                    ),
                ));
            }
            if h.header_length > 104 {
                let t = *b.get(104).ok_or_else(short)?;
                h.compression = match t {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    other => {
                        return Err(Error::unsupported(
                            file,
                            format!("qcow2 compression type {other}"),
                        ))
                    }
                };
            }
        }
        // The compression type byte only counts when the feature bit says so; a mismatch
        // means the header was damaged (qemu refuses it as well).
        let zstd_bit = h.incompatible & INCOMPAT_COMPRESSION != 0;
        if zstd_bit != (h.compression != Compression::Zlib) {
            return Err(bad(
                104,
                format!(
                    "compression type {:?} disagrees with incompatible bit 3 ({})",
                    h.compression,
                    if zstd_bit { "set" } else { "clear" }
                ),
            ));
        }
        // Subclusters smaller than 512 bytes cannot be addressed (qemu needs 16 KiB clusters).
        if h.incompatible & INCOMPAT_EXTL2 != 0 && cluster_bits < 14 {
            return Err(bad(
                20,
                format!(
                    "extended L2 entries with {}-byte clusters (at least 16 KiB needed)",
                    1u64 << cluster_bits
                ),
            ));
        }
        // Extensions follow the header, each padded to 8 bytes, until an end marker.
        let mut p = h.header_length as usize;
        for _ in 0..1024 {
            let (Some(t), Some(len)) = (be32(b, p), be32(b, p + 4)) else {
                return Err(bad(
                    p as u64,
                    "the header extensions run past the first cluster".into(),
                ));
            };
            if t == EXT_END {
                break;
            }
            let data = b.get(p + 8..p + 8 + len as usize).ok_or_else(|| {
                bad(
                    p as u64,
                    format!("header extension {t:#x} of {len} bytes runs past the first cluster"),
                )
            })?;
            match t {
                EXT_BACKING_FORMAT => {
                    h.backing_format = Some(String::from_utf8_lossy(data).into_owned())
                }
                EXT_FEATURE_NAMES => {
                    for e in data.chunks_exact(48).take(192) {
                        if let (Some(&kind), Some(&bit), Some(n)) =
                            (e.first(), e.get(1), e.get(2..))
                        {
                            let name = String::from_utf8_lossy(n)
                                .trim_end_matches('\0')
                                .to_string();
                            h.feature_names.push((kind, bit, name));
                        }
                    }
                }
                EXT_CRYPTO => h.has_crypto_ext = true,
                EXT_DATA_FILE => h.data_file = Some(String::from_utf8_lossy(data).into_owned()),
                _ => {}
            }
            p += 8 + (len as usize).div_ceil(8) * 8;
        }
        Ok(h)
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }

    /// Unknown incompatible bits, named from the feature table when it names them.
    pub fn unknown_incompatible(&self) -> Option<String> {
        let unknown = self.incompatible & !KNOWN_INCOMPAT;
        if unknown == 0 {
            return None;
        }
        let bits: Vec<String> = (0..64)
            .filter(|b| unknown & (1u64 << b) != 0)
            .map(|b| {
                match self
                    .feature_names
                    .iter()
                    .find(|(t, bit, _)| *t == 0 && *bit as u32 == b)
                {
                    Some((_, _, n)) => format!("bit {b} ({n})"),
                    None => format!("bit {b}"),
                }
            })
            .collect();
        Some(bits.join(", "))
    }
}
