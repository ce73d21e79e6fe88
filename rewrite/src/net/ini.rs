//! The `[Section]` / `Key=Value` shape shared by NetworkManager keyfiles and
//! systemd-networkd units, read line by line so patchers can edit single lines and keep
//! everything else (comments, blank lines, order, line endings) as it was.

use crate::edit::{lines_with_endings, split_ending};

/// One line of an ini-style file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniLine<'a> {
    /// 1-based.
    pub number: usize,
    /// With its line ending.
    pub raw: &'a str,
    /// The section this line is in (the header line itself belongs to its section).
    pub section: Option<&'a str>,
    /// `(key, value)` with surrounding whitespace trimmed, for a `key=value` line.
    pub entry: Option<(&'a str, &'a str)>,
    pub is_header: bool,
}

pub fn lines(text: &str) -> Vec<IniLine<'_>> {
    let mut out = Vec::new();
    let mut section = None;
    for (number, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0.trim();
        let mut entry = None;
        let mut is_header = false;
        if body.starts_with('[') && body.ends_with(']') && body.len() >= 2 {
            section = body.get(1..body.len() - 1).map(str::trim);
            is_header = true;
        } else if !body.starts_with('#') && !body.starts_with(';') {
            if let Some((k, v)) = body.split_once('=') {
                entry = Some((k.trim(), v.trim()));
            }
        }
        out.push(IniLine {
            number,
            raw,
            section,
            entry,
            is_header,
        });
    }
    out
}

/// The value of `key` in `section` (the last one wins, as in both readers).
pub fn get<'a>(ls: &[IniLine<'a>], section: &str, key: &str) -> Option<&'a str> {
    ls.iter()
        .filter(|l| l.section == Some(section))
        .filter_map(|l| l.entry)
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .next_back()
}

/// Every value of `key` in `section`, in order.
pub fn get_all<'a>(ls: &[IniLine<'a>], section: &str, key: &str) -> Vec<&'a str> {
    ls.iter()
        .filter(|l| l.section == Some(section))
        .filter_map(|l| l.entry)
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

/// `key=value` keeping the original line's spacing around `=` and its indentation.
pub fn set_value(raw_body: &str, new_value: &str) -> String {
    match raw_body.find('=') {
        Some(eq) => {
            let after = raw_body.get(eq + 1..).unwrap_or("");
            let lead = after.len() - after.trim_start().len();
            format!(
                "{}{}{}",
                raw_body.get(..eq + 1).unwrap_or(""),
                after.get(..lead).unwrap_or(""),
                new_value
            )
        }
        None => raw_body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections() {
        let t = "# c\n[Match]\nMACAddress = 00:50:56:ab:cd:ef\n\n[Network]\r\nDHCP=yes\nAddress=1\nAddress=2";
        let l = lines(t);
        assert_eq!(get(&l, "Match", "MACAddress"), Some("00:50:56:ab:cd:ef"));
        assert_eq!(get(&l, "Network", "DHCP"), Some("yes"));
        assert_eq!(get_all(&l, "Network", "Address"), ["1", "2"]);
        assert_eq!(get(&l, "Match", "DHCP"), None);
        assert_eq!(set_value("MACAddress = x", "y"), "MACAddress = y");
    }
}
