//! Block and inode bitmaps: bit `i` set means item `i` of the group is in use.

pub fn test(b: &[u8], i: usize) -> bool {
    b.get(i / 8).is_some_and(|x| x & (1 << (i % 8)) != 0)
}

pub fn set(b: &mut [u8], i: usize) {
    if let Some(x) = b.get_mut(i / 8) {
        *x |= 1 << (i % 8);
    }
}

pub fn clear(b: &mut [u8], i: usize) {
    if let Some(x) = b.get_mut(i / 8) {
        *x &= !(1 << (i % 8));
    }
}

/// The first clear bit in `[from, end)`, skipping whole bytes of ones.
pub fn find_clear(b: &[u8], from: usize, end: usize) -> Option<usize> {
    let mut i = from;
    while i < end {
        if i.is_multiple_of(8) && i + 8 <= end && b.get(i / 8) == Some(&0xFF) {
            i += 8;
            continue;
        }
        if !test(b, i) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// How many clear bits follow from `from` (at most `max`, not past `end`).
pub fn clear_run(b: &[u8], from: usize, end: usize, max: usize) -> usize {
    let mut n = 0;
    let mut i = from;
    while i < end && n < max {
        if i.is_multiple_of(8) && i + 8 <= end && n + 8 <= max && b.get(i / 8) == Some(&0) {
            i += 8;
            n += 8;
            continue;
        }
        if test(b, i) {
            break;
        }
        i += 1;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs() {
        let mut b = vec![0xFFu8, 0xFF, 0b0000_0111, 0, 0, 0x80];
        assert_eq!(find_clear(&b, 0, 48), Some(19));
        assert_eq!(clear_run(&b, 19, 48, 100), 28);
        assert_eq!(clear_run(&b, 19, 48, 5), 5);
        set(&mut b, 19);
        assert_eq!(find_clear(&b, 0, 48), Some(20));
        clear(&mut b, 0);
        assert_eq!(find_clear(&b, 0, 48), Some(0));
        assert_eq!(find_clear(&[0xFF], 0, 8), None);
    }
}
