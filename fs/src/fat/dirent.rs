//! The 32-byte short directory entry: the 8.3 name (with the NT lowercase bits Windows and
//! Linux use for names like `grubx64.efi`), attributes, first cluster, size and the DOS
//! date/time fields, read as UTC (images carry no zone; mtools shows the same fields).

use super::bytes::{put_u16, put_u32, u16_at, u32_at, u8_at};
use crate::Time;

pub(crate) const ATTR_READ_ONLY: u8 = 0x01;
pub(crate) const ATTR_VOLUME_ID: u8 = 0x08;
pub(crate) const ATTR_DIRECTORY: u8 = 0x10;
pub(crate) const ATTR_ARCHIVE: u8 = 0x20;
pub(crate) const ATTR_LFN: u8 = 0x0f;
/// `DIR_NTRes` bits: the base name, the extension are shown in lower case.
pub(crate) const NT_LOWER_BASE: u8 = 0x08;
pub(crate) const NT_LOWER_EXT: u8 = 0x10;
pub(crate) const DELETED: u8 = 0xe5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShortEntry {
    pub name: [u8; 11],
    pub attr: u8,
    pub ntres: u8,
    pub crt_tenth: u8,
    pub crt_time: u16,
    pub crt_date: u16,
    pub acc_date: u16,
    pub cluster: u32,
    pub wrt_time: u16,
    pub wrt_date: u16,
    pub size: u32,
}

impl ShortEntry {
    /// `fat32`: whether the high cluster word counts (FAT12/16 left it to OS/2 EAs).
    pub fn parse(b: &[u8], fat32: bool) -> ShortEntry {
        let mut name = [b' '; 11];
        if let Some(n) = b.get(..11) {
            name.copy_from_slice(n);
        }
        let hi = if fat32 { u32::from(u16_at(b, 20)) } else { 0 };
        ShortEntry {
            name,
            attr: u8_at(b, 11),
            ntres: u8_at(b, 12),
            crt_tenth: u8_at(b, 13),
            crt_time: u16_at(b, 14),
            crt_date: u16_at(b, 16),
            acc_date: u16_at(b, 18),
            cluster: (hi << 16) | u32::from(u16_at(b, 26)),
            wrt_time: u16_at(b, 22),
            wrt_date: u16_at(b, 24),
            size: u32_at(b, 28),
        }
    }

    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..11].copy_from_slice(&self.name);
        b[11] = self.attr;
        b[12] = self.ntres;
        b[13] = self.crt_tenth;
        put_u16(&mut b, 14, self.crt_time);
        put_u16(&mut b, 16, self.crt_date);
        put_u16(&mut b, 18, self.acc_date);
        put_u16(&mut b, 20, (self.cluster >> 16) as u16);
        put_u16(&mut b, 22, self.wrt_time);
        put_u16(&mut b, 24, self.wrt_date);
        put_u16(&mut b, 26, self.cluster as u16);
        put_u32(&mut b, 28, self.size);
        b
    }

    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }

    pub fn is_dot(&self) -> bool {
        &self.name == b".          " || &self.name == b"..         "
    }

    /// The name as Linux shows it without a long name: `BASE.EXT`, each part lowered
    /// where its NT bit says, OEM bytes through code page 437.
    pub fn display_name(&self) -> Vec<u8> {
        let mut raw = self.name;
        if raw[0] == 0x05 {
            raw[0] = DELETED;
        }
        let part = |p: &[u8], lower: bool| -> String {
            let end = p.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
            p.iter()
                .take(end)
                .map(|&c| {
                    if lower {
                        cp437(c.to_ascii_lowercase())
                    } else {
                        cp437(c)
                    }
                })
                .collect()
        };
        let mut s = part(&raw[..8], self.ntres & NT_LOWER_BASE != 0);
        let ext = part(&raw[8..], self.ntres & NT_LOWER_EXT != 0);
        if !ext.is_empty() {
            s.push('.');
            s.push_str(&ext);
        }
        s.into_bytes()
    }

    pub fn mtime(&self) -> Time {
        dos_time(self.wrt_date, self.wrt_time, 0)
    }
    pub fn atime(&self) -> Time {
        dos_time(self.acc_date, 0, 0)
    }
    pub fn crtime(&self) -> Time {
        dos_time(self.crt_date, self.crt_time, self.crt_tenth)
    }
}

const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐\
└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

fn cp437(c: u8) -> char {
    if c < 0x80 {
        char::from(c)
    } else {
        CP437_HIGH.chars().nth(usize::from(c - 0x80)).unwrap_or('?')
    }
}

/// A volume label's eleven bytes as text, trailing spaces (and NULs) dropped.
pub(crate) fn label_string(l: &[u8; 11]) -> String {
    let end = l
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(0, |i| i + 1);
    l.iter().take(end).map(|&c| cp437(c)).collect()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A DOS date and time (and creation hundredths) as UTC; a zero month or day counts as
/// the first, as Linux reads them.
pub(crate) fn dos_time(date: u16, time: u16, tenth: u8) -> Time {
    let y = 1980 + i64::from(date >> 9);
    let m = u32::from((date >> 5) & 0xf).clamp(1, 12);
    let d = u32::from(date & 0x1f).max(1);
    let days = days_from_civil(y, m, d);
    let secs = i64::from(time >> 11) * 3600
        + i64::from((time >> 5) & 0x3f) * 60
        + i64::from(time & 0x1f) * 2
        + i64::from(tenth.min(199) / 100);
    Time {
        secs: days * 86400 + secs,
        nanos: u32::from(tenth.min(199) % 100) * 10_000_000,
    }
}

/// `t` as a DOS (date, time, hundredths), clamped to 1980..=2107.
pub(crate) fn to_dos(t: Time) -> (u16, u16, u8) {
    let min = days_from_civil(1980, 1, 1) * 86400;
    let max = days_from_civil(2107, 12, 31) * 86400 + 86399;
    let s = t.secs.clamp(min, max);
    let (y, m, d) = civil_from_days(s.div_euclid(86400));
    let r = s.rem_euclid(86400);
    let date = (((y - 1980) as u16) << 9) | ((m as u16) << 5) | d as u16;
    let time =
        (((r / 3600) as u16) << 11) | ((((r / 60) % 60) as u16) << 5) | ((r % 60) / 2) as u16;
    let tenth = ((r % 2) * 100) as u8 + (t.nanos / 10_000_000).min(99) as u8;
    (date, time, tenth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_case_bits() {
        let mut b = [0u8; 32];
        b[..11].copy_from_slice(b"GRUBX64 EFI");
        b[12] = NT_LOWER_BASE | NT_LOWER_EXT;
        assert_eq!(ShortEntry::parse(&b, true).display_name(), b"grubx64.efi");
        b[12] = NT_LOWER_EXT;
        assert_eq!(ShortEntry::parse(&b, true).display_name(), b"GRUBX64.efi");
        b[..11].copy_from_slice(b"\x05BC        ");
        assert_eq!(ShortEntry::parse(&b, true).display_name(), "σBC".as_bytes());
        b[..11].copy_from_slice(b"EFI        ");
        assert_eq!(ShortEntry::parse(&b, true).display_name(), b"EFI");
    }

    #[test]
    fn entry_round_trip_and_cluster_halves() {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8 + 0x41;
        }
        let e = ShortEntry::parse(&b, true);
        assert_eq!(e.encode(), b);
        assert_eq!(ShortEntry::parse(&b, false).cluster, 0x5c5b);
    }

    #[test]
    fn dos_times() {
        // 2024-02-29 13:45:58
        let date = (44 << 9) | (2 << 5) | 29;
        let time = (13 << 11) | (45 << 5) | 29;
        let t = dos_time(date, time, 0);
        assert_eq!(t.secs, 1_709_214_358);
        assert_eq!(to_dos(t), (date, time, 0));
        assert_eq!(dos_time(0, 0, 0).secs, 315_532_800);
        assert_eq!(to_dos(Time { secs: 0, nanos: 0 }).0, (1 << 5) | 1);
        let t = dos_time(date, time, 150);
        assert_eq!((t.secs, t.nanos), (1_709_214_359, 500_000_000));
        assert_eq!(to_dos(t), (date, time, 150));
        let _ = dos_time(0xffff, 0xffff, 0xff);
        let _ = to_dos(Time {
            secs: i64::MAX,
            nanos: u32::MAX,
        });
        let _ = to_dos(Time {
            secs: i64::MIN,
            nanos: 0,
        });
    }
}
