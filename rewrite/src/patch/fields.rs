//! Whitespace-separated fields of one config line, edited in place so that everything the
//! patcher does not change (separators, alignment, comments at the end) stays byte for byte.

use std::ops::Range;

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\x0b' | b'\x0c' | b'\r')
}

/// Byte ranges of the fields of `line` (a line body, without its ending).
pub fn fields(line: &str) -> Vec<Range<usize>> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let start = i;
        while i < b.len() && !is_space(b[i]) {
            i += 1;
        }
        if i > start {
            out.push(start..i);
        }
    }
    out
}

/// `line` with field `idx` (of `fields`, as [`fields`] returned them) replaced by `new`.
///
/// When the field was followed by spaces that aligned the next field on a column, the
/// padding is adjusted so the next field keeps its column while there is room (one space at
/// least); tabs and single spaces are kept as they were.
pub fn replace_field(line: &str, fields: &[Range<usize>], idx: usize, new: &str) -> String {
    let Some(f) = fields.get(idx) else {
        return line.to_string();
    };
    let (Some(head), Some(tail)) = (line.get(..f.start), line.get(f.end..)) else {
        return line.to_string();
    };
    let mut out = String::with_capacity(line.len() + new.len());
    out.push_str(head);
    out.push_str(new);
    match fields.get(idx + 1) {
        Some(next) => {
            let sep = line.get(f.end..next.start).unwrap_or(" ");
            let rest = line.get(next.start..).unwrap_or("");
            if sep.len() > 1 && sep.bytes().all(|b| b == b' ') {
                let end = f.start + new.len();
                let pad = next.start.saturating_sub(end).max(1);
                out.extend(std::iter::repeat_n(' ', pad));
            } else {
                out.push_str(sep);
            }
            out.push_str(rest);
        }
        None => out.push_str(tail),
    }
    out
}

/// `line` with field `idx` and the separator before it removed (the separator after it
/// when it is the first field).
pub fn remove_field(line: &str, fields: &[Range<usize>], idx: usize) -> String {
    let Some(f) = fields.get(idx) else {
        return line.to_string();
    };
    let (from, to) = match (
        idx.checked_sub(1).and_then(|p| fields.get(p)),
        fields.get(idx + 1),
    ) {
        (Some(prev), _) => (prev.end, f.end),
        (None, Some(next)) => (f.start, next.start),
        (None, None) => (f.start, f.end),
    };
    match (line.get(..from), line.get(to..)) {
        (Some(a), Some(b)) => format!("{a}{b}"),
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_columns_where_there_is_room() {
        let l = "/dev/sda1       /boot   ext4    defaults        1 2";
        let f = fields(l);
        assert_eq!(f.len(), 6);
        assert_eq!(
            replace_field(l, &f, 0, "LABEL=boot"),
            "LABEL=boot      /boot   ext4    defaults        1 2"
        );
        assert_eq!(
            replace_field(l, &f, 0, "UUID=0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f"),
            "UUID=0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f /boot   ext4    defaults        1 2"
        );
        let t = "/dev/sda1\t/\text4\tdefaults\t0\t1";
        assert_eq!(
            replace_field(t, &fields(t), 0, "UUID=x"),
            "UUID=x\t/\text4\tdefaults\t0\t1"
        );
        let s = "  /dev/sda1 / ext4 defaults 0 1 # root";
        assert_eq!(
            replace_field(s, &fields(s), 0, "UUID=abc"),
            "  UUID=abc / ext4 defaults 0 1 # root"
        );
        assert_eq!(replace_field("a b", &fields("a b"), 1, "c"), "a c");
    }

    #[test]
    fn removes_fields() {
        let l = "a  b c";
        assert_eq!(remove_field(l, &fields(l), 1), "a c");
        assert_eq!(remove_field(l, &fields(l), 0), "b c");
        assert_eq!(remove_field(l, &fields(l), 2), "a  b");
    }
}
