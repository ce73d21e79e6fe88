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

/// Stores big-endian fields; writers only call these on buffers they sized themselves,
/// so an offset out of range is a bug of ours, and is ignored rather than panicking.
pub(crate) fn put16(b: &mut [u8], o: usize, v: u16) {
    if let Some(d) = b.get_mut(o..o.saturating_add(2)) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

pub(crate) fn put32(b: &mut [u8], o: usize, v: u32) {
    if let Some(d) = b.get_mut(o..o.saturating_add(4)) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

pub(crate) fn put64(b: &mut [u8], o: usize, v: u64) {
    if let Some(d) = b.get_mut(o..o.saturating_add(8)) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

/// Stamps the CRC32C of `buf` into its 4-byte field at `at` (little-endian, computed
/// with the field zeroed), the inverse of [`crc_ok`].
pub(crate) fn set_crc(buf: &mut [u8], at: usize) {
    let Some(field) = buf.get_mut(at..at.saturating_add(4)) else {
        return;
    };
    field.fill(0);
    let c = crc32c::crc32c(buf);
    if let Some(field) = buf.get_mut(at..at + 4) {
        field.copy_from_slice(&c.to_le_bytes());
    }
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
        set_crc(&mut b, 8);
        assert!(crc_ok(&b, 8));
    }
}
