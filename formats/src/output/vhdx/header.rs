//! The header section (the first 1 MiB): the file identifier, two headers, two region
//! tables. Both headers are written valid, with consecutive sequence numbers, so the
//! file opens even if one copy is later damaged; the log GUID is zero, saying the (empty)
//! log holds nothing to replay.

use super::guid::Guid;
use super::MIB;

pub const HEADER_OFFSETS: [u64; 2] = [64 * 1024, 128 * 1024];
const HEADER_LEN: usize = 4096;
pub const LOG_OFFSET: u64 = MIB;
pub const LOG_LEN: u32 = MIB as u32;

/// The file type identifier: the signature and, in UTF-16, the program that made it.
pub fn identifier() -> Vec<u8> {
    let mut b = vec![0u8; 8 + 512];
    b[..8].copy_from_slice(b"vhdxfile");
    let creator = format!("transplant {}", env!("CARGO_PKG_VERSION"));
    for (i, unit) in creator.encode_utf16().take(255).enumerate() {
        b[8 + 2 * i..10 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    b
}

/// One header, its CRC-32C computed over the whole 4 KiB with the checksum field zero.
pub fn header(sequence: u64, file_write: Guid, data_write: Guid) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    b[0..4].copy_from_slice(b"head");
    b[8..16].copy_from_slice(&sequence.to_le_bytes());
    b[16..32].copy_from_slice(&file_write.0);
    b[32..48].copy_from_slice(&data_write.0);
    // 48..64: log GUID, zero: no log entries are valid.
    // 64..66: log version 0.
    b[66..68].copy_from_slice(&1u16.to_le_bytes());
    b[68..72].copy_from_slice(&LOG_LEN.to_le_bytes());
    b[72..80].copy_from_slice(&LOG_OFFSET.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checksum_and_fields() {
        let h = header(7, Guid::random(), Guid::random());
        let mut z = h.clone();
        z[4..8].fill(0);
        assert_eq!(
            u32::from_le_bytes(h[4..8].try_into().unwrap()),
            crc32c::crc32c(&z)
        );
        assert_eq!(u64::from_le_bytes(h[8..16].try_into().unwrap()), 7);
        assert!(h[48..64].iter().all(|&b| b == 0));
        assert_eq!(u16::from_le_bytes([h[66], h[67]]), 1);
        let id = identifier();
        assert_eq!(&id[..8], b"vhdxfile");
        assert_eq!(&id[8..12], &[b't', 0, b'r', 0]);
    }
}
