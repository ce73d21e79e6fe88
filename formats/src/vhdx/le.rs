//! Little-endian fields and GUIDs, read without panics from short buffers.

pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)?.try_into().ok().map(u16::from_le_bytes)
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)?.try_into().ok().map(u32::from_le_bytes)
}

pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// A GUID as stored (first three fields little-endian), printed in the usual form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub fn at(b: &[u8], off: usize) -> Option<Guid> {
        let s: [u8; 16] = b.get(off..off + 16)?.try_into().ok()?;
        Some(Guid(s))
    }

    /// Parses "8B7CA206-4790-4B9A-B8FE-575F050F886E" into its on-disk form.
    pub const fn from_str_const(s: &str) -> Guid {
        let b = s.as_bytes();
        let mut hex = [0u8; 16];
        let mut i = 0;
        let mut n = 0;
        while i < b.len() {
            if b[i] != b'-' {
                let v = match b[i] {
                    c @ b'0'..=b'9' => c - b'0',
                    c @ b'a'..=b'f' => c - b'a' + 10,
                    c @ b'A'..=b'F' => c - b'A' + 10,
                    _ => 0,
                };
                hex[n / 2] |= if n % 2 == 0 { v << 4 } else { v };
                n += 1;
            }
            i += 1;
        }
        Guid([
            hex[3], hex[2], hex[1], hex[0], hex[5], hex[4], hex[7], hex[6], hex[8], hex[9],
            hex[10], hex[11], hex[12], hex[13], hex[14], hex[15],
        ])
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
        )
    }
}

/// CRC-32C of `b` with the 4-byte checksum field at `field` counted as zero.
pub fn crc_without(b: &[u8], field: usize) -> u32 {
    let head = b.get(..field).unwrap_or(b);
    let tail = b.get(field + 4..).unwrap_or(&[]);
    let c = crc32c::crc32c(head);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip() {
        let g = Guid::from_str_const("8B7CA206-4790-4B9A-B8FE-575F050F886E");
        assert_eq!(g.to_string(), "8b7ca206-4790-4b9a-b8fe-575f050f886e");
        assert_eq!(g.0[0], 0x06);
    }
}
