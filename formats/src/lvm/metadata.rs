//! LVM's text metadata: nested `name { ... }` sections of `key = value` pairs, where a
//! value is a string, an integer or an array of them. Untrusted text: depth and size are
//! bounded, and a syntax error says at which byte.

use std::collections::BTreeMap;

const MAX_DEPTH: usize = 32;
const MAX_ITEMS: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Array(Vec<Value>),
    Section(Section),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    /// In file order: LVM writes segments and PVs in an order that matters for naming.
    pub items: Vec<(String, Value)>,
}

impl Section {
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.items.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }
    pub fn str(&self, k: &str) -> Option<&str> {
        match self.get(k)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn int(&self, k: &str) -> Option<i64> {
        match self.get(k)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn section(&self, k: &str) -> Option<&Section> {
        match self.get(k)? {
            Value::Section(s) => Some(s),
            _ => None,
        }
    }
    pub fn array(&self, k: &str) -> Option<&[Value]> {
        match self.get(k)? {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(k, v)| match v {
            Value::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }
    pub fn strings(&self, k: &str) -> Vec<String> {
        self.array(k)
            .unwrap_or(&[])
            .iter()
            .filter_map(|v| match v {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    items: usize,
}

/// Parses the whole text; `Err((byte offset, reason))`.
pub fn parse(text: &str) -> Result<Section, (usize, String)> {
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
        items: 0,
    };
    let root = p.section_body(0)?;
    p.skip_ws();
    if p.pos < p.s.len() {
        return Err((p.pos, "unexpected '}'".into()));
    }
    Ok(root)
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while let Some(c) = self.peek() {
                    if c == b'\n' {
                        break;
                    }
                    self.pos += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn ident(&mut self) -> Result<String, (usize, String)> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"_.+-".contains(&c) {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.pos == start {
            return Err((start, "expected a name".into()));
        }
        Ok(String::from_utf8_lossy(self.s.get(start..self.pos).unwrap_or(&[])).into_owned())
    }

    fn section_body(&mut self, depth: usize) -> Result<Section, (usize, String)> {
        if depth > MAX_DEPTH {
            return Err((self.pos, format!("sections nested deeper than {MAX_DEPTH}")));
        }
        let mut sec = Section::default();
        loop {
            self.skip_ws();
            match self.peek() {
                None => {
                    if depth > 0 {
                        return Err((self.pos, "a section is not closed".into()));
                    }
                    return Ok(sec);
                }
                Some(b'}') => {
                    if depth == 0 {
                        return Ok(sec);
                    }
                    self.pos += 1;
                    return Ok(sec);
                }
                _ => {}
            }
            self.items += 1;
            if self.items > MAX_ITEMS {
                return Err((self.pos, "too many items".into()));
            }
            let key = self.ident()?;
            self.skip_ws();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    let child = self.section_body(depth + 1)?;
                    sec.items.push((key, Value::Section(child)));
                }
                Some(b'=') => {
                    self.pos += 1;
                    self.skip_ws();
                    let v = self.value(true)?;
                    sec.items.push((key, v));
                }
                _ => return Err((self.pos, format!("expected '=' or '{{' after '{key}'"))),
            }
        }
    }

    fn value(&mut self, allow_array: bool) -> Result<Value, (usize, String)> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'[') if allow_array => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::Array(out));
                        }
                        Some(b',') => self.pos += 1,
                        None => return Err((self.pos, "an array is not closed".into())),
                        _ => {
                            self.items += 1;
                            if self.items > MAX_ITEMS {
                                return Err((self.pos, "too many items".into()));
                            }
                            out.push(self.value(false)?);
                        }
                    }
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'.') {
                    self.pos += 1;
                }
                let t = String::from_utf8_lossy(self.s.get(start..self.pos).unwrap_or(&[]))
                    .into_owned();
                // Floats occur only in fields we do not read; keep their integer part.
                let int = t.split('.').next().unwrap_or("");
                int.parse::<i64>()
                    .map(Value::Int)
                    .map_err(|_| (start, format!("bad number '{t}'")))
            }
            _ => Err((self.pos, "expected a value".into())),
        }
    }

    fn string(&mut self) -> Result<String, (usize, String)> {
        let start = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err((start, "a string is not closed".into())),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    if let Some(c) = self.peek() {
                        out.push(c);
                        self.pos += 1;
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

/// Splits the parsed root into the VG section (the one section at the top level) and
/// the top-level keys.
pub fn vg_section(root: &Section) -> Option<(&str, &Section)> {
    root.sections().next()
}

#[allow(dead_code)]
pub fn flatten(sec: &Section) -> BTreeMap<String, String> {
    sec.items
        .iter()
        .filter_map(|(k, v)| match v {
            Value::Str(s) => Some((k.clone(), s.clone())),
            Value::Int(i) => Some((k.clone(), i.to_string())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lvm_text() {
        let t = r#"vg0 {
id = "abc"
seqno = 7
status = ["RESIZEABLE", "READ"] # comment
logical_volumes {
  root { segment1 { start_extent = 0 stripes = [ "pv0", 12 ] } }
}
}
contents = "Text Format Volume Group"
creation_time = 1700000000	# Tue
"#;
        let root = parse(t).unwrap();
        let (name, vg) = vg_section(&root).unwrap();
        assert_eq!(name, "vg0");
        assert_eq!(vg.int("seqno"), Some(7));
        assert_eq!(vg.strings("status"), vec!["RESIZEABLE", "READ"]);
        let seg = vg
            .section("logical_volumes")
            .unwrap()
            .section("root")
            .unwrap()
            .section("segment1")
            .unwrap();
        assert_eq!(seg.array("stripes").unwrap()[1], Value::Int(12));
    }

    #[test]
    fn hostile_text() {
        assert!(parse("a { b = 1").is_err());
        assert!(parse("a { b = 1 } }").is_err());
        assert!(parse("a = [1, 2").is_err());
        assert!(parse("a = \"x").is_err());
        let deep = "a {".repeat(10_000);
        let e = parse(&deep).unwrap_err();
        assert!(e.1.contains("nested"));
        assert!(parse("a = 99999999999999999999999").is_err());
    }
}
