//! GUIDs as VHDX stores them: Microsoft's mixed-endian layout (the first three fields
//! little-endian, the last eight bytes as written).

use std::hash::{BuildHasher, Hasher};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID printed as `d1-d2-d3-d4[0..2]-d4[2..8]` in the spec.
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// A random (version 4) GUID. Hyper-V tells disks apart by their page 83 identifier
    /// and notices other writers by the write GUIDs, so every output gets fresh ones.
    pub fn random() -> Guid {
        let mut b = [0u8; 16];
        for (i, half) in b.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            h.write_u128(now);
            h.write_u32(std::process::id());
            h.write_usize(i);
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
        // Version 4 in data3's top nibble (byte 7 in this layout), RFC 4122 variant.
        b[7] = (b[7] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_randomness() {
        let g = Guid::new(
            0x2DC27766,
            0xF623,
            0x4200,
            [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
        );
        assert_eq!(&g.0[..8], &[0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42]);
        assert_eq!(&g.0[8..], &[0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
        let (a, b) = (Guid::random(), Guid::random());
        assert_ne!(a, b);
        assert_eq!(a.0[7] >> 4, 4);
    }
}
