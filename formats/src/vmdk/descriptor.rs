//! The text descriptor: which files hold the disk (extent lines), its identity (CID) and its
//! parent (parentCID, parentFileNameHint). It lives either in a small separate file or
//! embedded in a hosted sparse file. VMware writes it by hand-editable conventions, so we
//! accept what people actually produce: comments, blank lines, CRLF, quoted or bare values,
//! any key case. Sizes are bounded before reading, because a header can claim any size.

use crate::error::{Error, Result};

/// Largest descriptor we read. Real ones are a few hundred bytes (qemu reads at most 1 MiB);
/// anything above is hostile or not a descriptor.
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;

/// More extents than this would mean thousands of open files; VMware splits at 2 GB, so
/// 4096 extents already cover 8 TB.
pub const MAX_EXTENTS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    Forbidden,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: Access,
    pub sectors: u64,
    /// Upper case as written: SPARSE, FLAT, ZERO, VMFS, VMFSSPARSE, SESPARSE, VMFSRDM, ...
    pub kind: String,
    pub file: Option<String>,
    /// Start of the data in the file, in sectors (FLAT).
    pub offset: Option<u64>,
    /// Byte offset of the line in the host file, for messages.
    pub at: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Descriptor {
    pub version: Option<String>,
    pub cid: Option<u32>,
    pub parent_cid: Option<u32>,
    pub create_type: Option<String>,
    pub parent_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
    /// ddb.* entries, key without the "ddb." prefix.
    pub ddb: Vec<(String, String)>,
}

impl Descriptor {
    pub fn ddb(&self, key: &str) -> Option<&str> {
        self.ddb
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses descriptor bytes read from `file` at `base` (0 for a separate descriptor file).
/// The text ends at the first NUL: embedded descriptors are padded with zeroes.
pub fn parse(bytes: &[u8], file: &str, base: u64) -> Result<Descriptor> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = bytes.get(..end).unwrap_or(&[]);
    let mut d = Descriptor::default();
    let mut pos = 0usize;
    for raw_line in text.split(|&b| b == b'\n') {
        let at = base.saturating_add(pos as u64);
        pos = pos.saturating_add(raw_line.len() + 1);
        let line = String::from_utf8_lossy(raw_line);
        let line = line.trim_matches(|c: char| c.is_ascii_whitespace());
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_ascii_whitespace().next().unwrap_or("");
        let access = match first.to_ascii_uppercase().as_str() {
            "RW" => Some(Access::ReadWrite),
            "RDONLY" => Some(Access::ReadOnly),
            "NOACCESS" => Some(Access::Forbidden),
            _ => None,
        };
        if let Some(access) = access {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(Error::corrupt(
                    file,
                    "vmdk descriptor",
                    at,
                    format!("more than {MAX_EXTENTS} extent lines"),
                ));
            }
            d.extents.push(parse_extent(line, access, file, at)?);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            // VMware ignores lines it does not understand; so do we.
            continue;
        };
        let key = key.trim();
        let value = unquote(value.trim());
        let lower = key.to_ascii_lowercase();
        match lower.as_str() {
            "version" => d.version = Some(value.to_string()),
            "cid" => d.cid = Some(parse_cid(value, file, at, "CID")?),
            "parentcid" => d.parent_cid = Some(parse_cid(value, file, at, "parentCID")?),
            "createtype" => d.create_type = Some(value.to_string()),
            "parentfilenamehint" => d.parent_hint = Some(value.to_string()),
            _ => {
                if let Some(rest) = key.get(4..).filter(|_| lower.starts_with("ddb.")) {
                    d.ddb.push((rest.to_string(), value.to_string()));
                }
            }
        }
    }
    Ok(d)
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

fn parse_cid(v: &str, file: &str, at: u64, key: &str) -> Result<u32> {
    u32::from_str_radix(v.trim(), 16).map_err(|_| {
        Error::corrupt(
            file,
            "vmdk descriptor",
            at,
            format!("{key} '{}' is not a 32-bit hexadecimal number", clip(v)),
        )
    })
}

/// Shortens hostile strings before they go into messages.
pub fn clip(s: &str) -> String {
    if s.chars().count() > 80 {
        let mut t: String = s.chars().take(80).collect();
        t.push_str("...");
        t
    } else {
        s.to_string()
    }
}

/// Splits an extent line into words, keeping a quoted file name (which may hold spaces)
/// as one word.
fn words(line: &str) -> std::result::Result<Vec<(String, bool)>, &'static str> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_whitespace() {
            chars.next();
            continue;
        }
        if c == '"' {
            chars.next();
            let mut w = String::new();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                w.push(c);
            }
            if !closed {
                return Err("the file name's closing quote is missing");
            }
            out.push((w, true));
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_whitespace() {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push((w, false));
        }
    }
    Ok(out)
}

fn parse_extent(line: &str, access: Access, file: &str, at: u64) -> Result<ExtentLine> {
    let bad = |why: &str| {
        Error::corrupt(
            file,
            "vmdk descriptor extent line",
            at,
            format!("'{}': {why}", clip(line)),
        )
    };
    let w = words(line).map_err(bad)?;
    let sectors = w
        .get(1)
        .and_then(|(s, q)| if *q { None } else { s.parse::<u64>().ok() })
        .ok_or_else(|| bad("the size in sectors is missing or not a number"))?;
    let kind = w
        .get(2)
        .map(|(s, _)| s.to_ascii_uppercase())
        .ok_or_else(|| bad("the extent type is missing"))?;
    let file_name = w.get(3).map(|(s, _)| s.clone());
    let offset = match w.get(4) {
        None => None,
        Some((s, _)) => Some(
            s.parse::<u64>()
                .map_err(|_| bad("the offset is not a number"))?,
        ),
    };
    if w.len() > 5 {
        return Err(bad("unexpected words after the offset"));
    }
    if kind != "ZERO" && file_name.is_none() {
        return Err(bad("the extent names no file"));
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file: file_name,
        offset,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_extents_and_ddb() {
        let text = b"# Disk DescriptorFile\r\nversion=1\r\nCID=fffffffe\r\nparentCID=ffffffff\r\n\
createType=\"twoGbMaxExtentSparse\"\r\n\r\n# Extent description\r\n\
RW 4192256 SPARSE \"my disk-s001.vmdk\"\r\nRDONLY 100 FLAT \"f.bin\" 7\r\nNOACCESS 5 ZERO\r\n\
ddb.adapterType = \"lsilogic\"\r\nddb.geometry.cylinders = \"261\"\r\n\0\0\0garbage";
        let d = parse(text, "x.vmdk", 0).unwrap();
        assert_eq!(d.cid, Some(0xfffffffe));
        assert_eq!(d.parent_cid, Some(0xffffffff));
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentSparse"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file.as_deref(), Some("my disk-s001.vmdk"));
        assert_eq!(d.extents[0].sectors, 4192256);
        assert_eq!(d.extents[1].offset, Some(7));
        assert_eq!(d.extents[1].access, Access::ReadOnly);
        assert_eq!(d.extents[2].kind, "ZERO");
        assert_eq!(d.extents[2].file, None);
        assert_eq!(d.ddb("adapterType"), Some("lsilogic"));
    }

    #[test]
    fn bad_lines_are_corrupt_with_offset() {
        let e = parse(b"version=1\nRW abc SPARSE \"x\"\n", "d.vmdk", 0x200).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
        assert!(e.to_string().contains("0x20a"), "{e}");
        assert!(parse(b"RW 5 FLAT \"unterminated\n", "d", 0).is_err());
        assert!(parse(b"CID=xyz\n", "d", 0).is_err());
    }
}
