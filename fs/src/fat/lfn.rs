//! VFAT long file names: the UCS-2 pieces held in slots before a short entry, tied to it
//! by a checksum of its 8.3 name (a piece whose sequence or checksum does not fit is an
//! orphan, left by an old DOS tool, and ignored as Linux ignores it); and, for writing,
//! which names need them and the unique 8.3 alias (`LONGNA~1.EFI`) a long name gets.

use super::bytes::{put_u16, u16_at, u8_at};
use super::dirent::{ATTR_LFN, NT_LOWER_BASE, NT_LOWER_EXT};

pub(crate) const LAST: u8 = 0x40;
/// 255 UTF-16 units need 20 slots of 13.
pub(crate) const MAX_SLOTS: usize = 20;
const UNITS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// The checksum of an 8.3 name that each of its long-name slots repeats.
pub(crate) fn checksum(name: &[u8; 11]) -> u8 {
    name.iter().fold(0u8, |s, &c| {
        ((s & 1) << 7).wrapping_add(s >> 1).wrapping_add(c)
    })
}

/// Collects long-name slots as a directory is read, slot by slot.
#[derive(Default)]
pub(crate) struct Collector {
    units: Vec<u16>,
    /// The sequence number the next slot must carry (0: none pending).
    expect: u8,
    sum: u8,
    active: bool,
}

impl Collector {
    pub fn reset(&mut self) {
        self.active = false;
        self.units.clear();
    }

    pub fn slot(&mut self, b: &[u8]) {
        let ord = u8_at(b, 0);
        let seq = ord & 0x3f;
        let sum = u8_at(b, 13);
        if ord & LAST != 0 {
            if seq == 0 || usize::from(seq) > MAX_SLOTS {
                self.reset();
                return;
            }
            self.units = vec![0xffff; usize::from(seq) * 13];
            self.sum = sum;
            self.active = true;
            self.expect = seq;
        } else if !self.active || seq != self.expect || sum != self.sum || seq == 0 {
            self.reset();
            return;
        }
        let base = usize::from(seq - 1) * 13;
        for (i, &o) in UNITS.iter().enumerate() {
            if let Some(u) = self.units.get_mut(base + i) {
                *u = u16_at(b, o);
            }
        }
        self.expect = seq - 1;
    }

    /// The long name for the short entry `name` that follows, if the slots fit it.
    pub fn finish(&mut self, name: &[u8; 11]) -> Option<String> {
        let ok = self.active && self.expect == 0 && self.sum == checksum(name);
        let units = std::mem::take(&mut self.units);
        self.reset();
        if !ok {
            return None;
        }
        let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
        let s: String = char::decode_utf16(units.iter().take(end).copied())
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        (!s.is_empty()).then_some(s)
    }
}

/// The slots of long name `name` for short name `short`, in disk order (last piece first).
pub(crate) fn slots(name: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
    let mut units: Vec<u16> = name.encode_utf16().collect();
    if !units.len().is_multiple_of(13) {
        units.push(0);
        while !units.len().is_multiple_of(13) {
            units.push(0xffff);
        }
    }
    let n = units.len() / 13;
    let sum = checksum(short);
    (1..=n)
        .rev()
        .map(|seq| {
            let mut b = [0u8; 32];
            b[0] = seq as u8 | if seq == n { LAST } else { 0 };
            b[11] = ATTR_LFN;
            b[13] = sum;
            for (i, &o) in UNITS.iter().enumerate() {
                put_u16(
                    &mut b,
                    o,
                    units.get((seq - 1) * 13 + i).copied().unwrap_or(0xffff),
                );
            }
            b
        })
        .collect()
}

/// Why `name` cannot be a FAT file name, if it cannot.
pub(crate) fn check_long_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("an empty or dot name".into());
    }
    if name.encode_utf16().count() > 255 {
        return Err("longer than 255 UTF-16 units".into());
    }
    if let Some(c) = name.chars().find(|&c| c < ' ' || "\"*/:<>?\\|".contains(c)) {
        return Err(format!("the character {c:?}, which FAT names cannot hold"));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err("a trailing dot or space, which FAT drops".into());
    }
    Ok(())
}

fn short_char_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'()-@^_`{}~".contains(&c)
}

/// `name` as a plain 8.3 entry (name bytes and NT case bits) when it is one: at most one
/// dot, 1-8 + 0-3 characters of the 8.3 set, each part in one case.
pub(crate) fn as_short(name: &str) -> Option<([u8; 11], u8)> {
    let b = name.as_bytes();
    let (base, ext) = match name.rfind('.') {
        Some(i) => (b.get(..i)?, b.get(i + 1..)?),
        None => (b, &b""[..]),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || (name.contains('.') && ext.is_empty())
    {
        return None;
    }
    if !base.iter().chain(ext).all(|&c| short_char_ok(c)) {
        return None;
    }
    let case = |p: &[u8], bit: u8| -> Option<u8> {
        let lower = p.iter().any(|c| c.is_ascii_lowercase());
        let upper = p.iter().any(|c| c.is_ascii_uppercase());
        match (lower, upper) {
            (true, true) => None,
            (true, false) => Some(bit),
            _ => Some(0),
        }
    };
    let nt = case(base, NT_LOWER_BASE)? | case(ext, NT_LOWER_EXT)?;
    let mut out = [b' '; 11];
    for (o, c) in out.iter_mut().zip(base) {
        *o = c.to_ascii_uppercase();
    }
    for (o, c) in out[8..].iter_mut().zip(ext) {
        *o = c.to_ascii_uppercase();
    }
    if out[0] == 0xe5 {
        out[0] = 0x05;
    }
    Some((out, nt))
}

/// The 8.3 alias for a long name: its basis (upper case, 8.3 characters, `_` for others)
/// as is when nothing was lost and `taken` allows, else with the first free `~N` tail.
pub(crate) fn alias(name: &str, taken: impl Fn(&[u8; 11]) -> bool) -> Option<[u8; 11]> {
    let trimmed = name.trim_start_matches('.');
    let mut lossy = trimmed.len() != name.len();
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (trimmed.get(..i)?, trimmed.get(i + 1..)?),
        None => (trimmed, ""),
    };
    let conv = |p: &str, lossy: &mut bool| -> Vec<u8> {
        let mut v = Vec::new();
        for c in p.chars() {
            if c == ' ' || c == '.' {
                *lossy = true;
                continue;
            }
            let u = c.to_ascii_uppercase();
            if u.is_ascii() && short_char_ok(u as u8) {
                v.push(u as u8);
            } else {
                *lossy = true;
                v.push(b'_');
            }
        }
        v
    };
    let mut b = conv(base, &mut lossy);
    let mut e = conv(ext, &mut lossy);
    if b.len() > 8 || e.len() > 3 {
        lossy = true;
    }
    if b.is_empty() {
        b.push(b'_');
        lossy = true;
    }
    e.truncate(3);
    let make = |base: &[u8], tail: &[u8]| {
        let mut out = [b' '; 11];
        let keep = base.len().min(8 - tail.len());
        for (o, c) in out.iter_mut().zip(base.iter().take(keep).chain(tail)) {
            *o = *c;
        }
        for (o, c) in out[8..].iter_mut().zip(&e) {
            *o = *c;
        }
        out
    };
    if !lossy {
        let n = make(&b, b"");
        if !taken(&n) {
            return Some(n);
        }
    }
    b.truncate(8);
    for i in 1..1_000_000u32 {
        let tail = format!("~{i}");
        let n = make(&b, tail.as_bytes());
        if !taken(&n) {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_a_known_value() {
        // mkfs.fat/mtools give "BOOTX64 EFI" checksum 0x5e... computed by the spec's rule.
        let mut s = 0u8;
        for &c in b"BOOTX64 EFI" {
            s = (if s & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(s >> 1)
                .wrapping_add(c);
        }
        assert_eq!(checksum(b"BOOTX64 EFI"), s);
    }

    #[test]
    fn slots_round_trip() {
        for name in [
            "a",
            "exactly13char",
            "exactly13charX",
            "ünïcødé 名前.efi",
            &"x".repeat(255),
        ] {
            let short = *b"ABCDEF~1EFI";
            let mut c = Collector::default();
            for s in slots(name, &short) {
                c.slot(&s);
            }
            assert_eq!(c.finish(&short).as_deref(), Some(name));
        }
    }

    #[test]
    fn orphans_and_wrong_checksums_are_ignored() {
        let short = *b"ABCDEF~1EFI";
        let s = slots("a long name indeed, three slots.efi", &short);
        let mut c = Collector::default();
        for x in &s {
            c.slot(x);
        }
        assert_eq!(c.finish(b"OTHER   EFI"), None);
        // A missing middle piece.
        let mut c = Collector::default();
        c.slot(&s[0]);
        c.slot(&s[2]);
        assert_eq!(c.finish(&short), None);
        // Hostile slots never panic.
        let mut seed = 99u32;
        let mut c = Collector::default();
        for _ in 0..20000 {
            let mut b = [0u8; 32];
            for x in b.iter_mut() {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *x = (seed >> 16) as u8;
            }
            if seed & 0x300 == 0 {
                let _ = c.finish(&short);
            } else {
                c.slot(&b);
            }
        }
    }

    #[test]
    fn short_names_and_aliases() {
        assert_eq!(as_short("BOOTX64.EFI"), Some((*b"BOOTX64 EFI", 0)));
        assert_eq!(
            as_short("grubx64.efi"),
            Some((*b"GRUBX64 EFI", NT_LOWER_BASE | NT_LOWER_EXT))
        );
        assert_eq!(as_short("EFI"), Some((*b"EFI        ", 0)));
        assert_eq!(as_short("Grub.cfg"), None);
        assert_eq!(as_short("a.b.c"), None);
        assert_eq!(as_short("toolongname"), None);
        assert_eq!(as_short("a b"), None);
        assert_eq!(as_short(".x"), None);
        let none = |_: &[u8; 11]| false;
        assert_eq!(alias("Makefile", none), Some(*b"MAKEFILE   "));
        assert_eq!(alias("shimx64-redhat.efi", none), Some(*b"SHIMX6~1EFI"));
        assert_eq!(
            alias("shimx64-redhat.efi", |n| n == b"SHIMX6~1EFI"),
            Some(*b"SHIMX6~2EFI")
        );
        assert_eq!(alias(".hidden", none), Some(*b"HIDDEN~1   "));
        assert_eq!(alias("名前.txt", none), Some(*b"__~1    TXT"));
        assert!(check_long_name("a/b").is_err());
        assert!(check_long_name("ok name.efi").is_ok());
        assert!(check_long_name("trailing.").is_err());
    }
}
