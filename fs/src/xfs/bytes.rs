//! Big-endian field reads that cannot panic, and the CRC32C check v5 metadata carries.
//! Every XFS structure is big-endian except its CRC, which is stored little-endian.

pub(crate) fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub(crate) fn be32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(crate) fn be64(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

pub(crate) fn u8_at(b: &[u8], o: usize) -> Option<u8> {
    b.get(o).copied()
}

/// Whether the CRC32C of `buf`, computed with its 4-byte CRC field at `at` taken as
/// zero, matches the stored value (the kernel's `xfs_verify_cksum`).
pub(crate) fn crc_ok(buf: &[u8], at: usize) -> bool {
    // Under cargo-fuzz mutated metadata must reach the parsers behind the CRC gates.
    if cfg!(fuzzing) {
        return true;
    }
    let Some(end) = at.checked_add(4) else {
        return false;
    };
    let (Some(head), Some(field), Some(tail)) = (buf.get(..at), buf.get(at..end), buf.get(end..))
    else {
        return false;
    };
    let Ok(stored) = <[u8; 4]>::try_from(field) else {
        return false;
    };
    let crc = crc32c::crc32c_append(crc32c::crc32c(head), &[0; 4]);
    crc32c::crc32c_append(crc, tail) == u32::from_le_bytes(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_give_none() {
        assert_eq!(be32(&[1, 2, 3], 0), None);
        assert_eq!(be16(&[1, 2], 1), None);
        assert_eq!(be64(&[0; 8], usize::MAX), None);
        assert_eq!(be32(&[0, 0, 1, 2], 0), Some(0x102));
    }

    #[test]
    fn crc_round_trip() {
        let mut b = vec![7u8; 64];
        b[8..12].copy_from_slice(&[0; 4]);
        let c = crc32c::crc32c(&b);
        b[8..12].copy_from_slice(&c.to_le_bytes());
        assert!(crc_ok(&b, 8));
        b[20] ^= 1;
        assert!(!crc_ok(&b, 8));
        assert!(!crc_ok(&b, 62));
    }
}
