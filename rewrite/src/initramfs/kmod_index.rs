//! The binary module indexes (modules.dep.bin, modules.alias.bin, modules.symbols.bin,
//! modules.builtin.bin) that libkmod reads instead of the text files: a module that is
//! only in modules.dep is "not found" by modprobe. Written here from the text files so an
//! initramfs can be changed without running depmod.
//!
//! Format (all integers big-endian): magic 0xB007F457, version 0x00020001, the root
//! node's offset, then the nodes of a radix trie keyed by the index key, written in
//! pre-order. A node offset carries flags in its top nibble saying what the node holds:
//! a NUL-terminated prefix (the rest of a single-child chain), a child table (first and
//! last key byte, then one offset per byte in that range, 0 for none), and values (a
//! count, then per value a priority and a NUL-terminated string, sorted by priority).
//! Keys and values are 7-bit ASCII. Priorities are the module's position in
//! modules.dep, as depmod numbers them, so the bytes match depmod's own output.

use super::modules_dep::{self, ModulesDep};
use super::InitramfsError;
use std::collections::BTreeMap;

const MAGIC: u32 = 0xB007_F457;
const VERSION: u32 = 0x0002_0001;
const F_PREFIX: u32 = 0x8000_0000;
const F_VALUES: u32 = 0x4000_0000;
const F_CHILDS: u32 = 0x2000_0000;
const F_MASK: u32 = 0x0FFF_FFFF;
const CHILD_MAX: u8 = 128;

#[derive(Debug, Default, Clone)]
struct Node {
    prefix: Vec<u8>,
    /// (priority, value), kept sorted by priority; a new value goes before the ones of
    /// equal priority, as depmod inserts it.
    values: Vec<(u32, Vec<u8>)>,
    children: BTreeMap<u8, Node>,
}

impl Node {
    fn add_value(&mut self, value: &[u8], priority: u32) {
        let at = self
            .values
            .iter()
            .position(|(p, _)| *p >= priority)
            .unwrap_or(self.values.len());
        self.values.insert(at, (priority, value.to_vec()));
    }

    fn mask(&self) -> u32 {
        let mut m = 0;
        if !self.children.is_empty() {
            m |= F_CHILDS;
        }
        if !self.prefix.is_empty() {
            m |= F_PREFIX;
        }
        if !self.values.is_empty() {
            m |= F_VALUES;
        }
        m
    }

    fn own_size(&self) -> usize {
        let mut n = 0;
        if let (Some((&first, _)), Some((&last, _))) = (
            self.children.first_key_value(),
            self.children.last_key_value(),
        ) {
            n += 2 + 4 * (last as usize - first as usize + 1);
        }
        if !self.prefix.is_empty() {
            n += self.prefix.len() + 1;
        }
        if !self.values.is_empty() {
            n += 4 + self
                .values
                .iter()
                .map(|(_, v)| 4 + v.len() + 1)
                .sum::<usize>();
        }
        n
    }

    fn total_size(&self) -> usize {
        self.own_size() + self.children.values().map(Node::total_size).sum::<usize>()
    }

    /// Children first, then the node (kmod before v34): returns the node's offset with
    /// its flags.
    fn write_post(&self, out: &mut Vec<u8>) -> Result<u32, InitramfsError> {
        let mut offs = Vec::new();
        if let (Some((&first, _)), Some((&last, _))) = (
            self.children.first_key_value(),
            self.children.last_key_value(),
        ) {
            for ch in first..=last {
                offs.push(match self.children.get(&ch) {
                    None => 0,
                    Some(c) => c.write_post(out)?,
                });
            }
        }
        let offset = u32::try_from(out.len())
            .ok()
            .filter(|&o| o <= F_MASK)
            .ok_or_else(too_big)?;
        if !self.prefix.is_empty() {
            out.extend_from_slice(&self.prefix);
            out.push(0);
        }
        if let (Some((&first, _)), Some((&last, _))) = (
            self.children.first_key_value(),
            self.children.last_key_value(),
        ) {
            out.push(first);
            out.push(last);
            for o in offs {
                out.extend_from_slice(&o.to_be_bytes());
            }
        }
        self.write_values(out);
        Ok(offset | self.mask())
    }

    fn write_values(&self, out: &mut Vec<u8>) {
        if !self.values.is_empty() {
            out.extend_from_slice(&(self.values.len() as u32).to_be_bytes());
            for (p, v) in &self.values {
                out.extend_from_slice(&p.to_be_bytes());
                out.extend_from_slice(v);
                out.push(0);
            }
        }
    }

    /// The node, then its children (kmod v34 and later).
    fn write(&self, out: &mut Vec<u8>) -> Result<(), InitramfsError> {
        let offset = out.len();
        if !self.prefix.is_empty() {
            out.extend_from_slice(&self.prefix);
            out.push(0);
        }
        if let (Some((&first, _)), Some((&last, _))) = (
            self.children.first_key_value(),
            self.children.last_key_value(),
        ) {
            out.push(first);
            out.push(last);
            let mut next = offset + self.own_size();
            for ch in first..=last {
                match self.children.get(&ch) {
                    None => out.extend_from_slice(&0u32.to_be_bytes()),
                    Some(c) => {
                        let off = u32::try_from(next)
                            .ok()
                            .filter(|&o| o <= F_MASK)
                            .ok_or_else(too_big)?;
                        out.extend_from_slice(&(off | c.mask()).to_be_bytes());
                        next += c.total_size();
                    }
                }
            }
        }
        self.write_values(out);
        for c in self.children.values() {
            c.write(out)?;
        }
        Ok(())
    }
}

fn too_big() -> InitramfsError {
    InitramfsError::Unsupported("a module index larger than 256 MiB".into())
}

/// Where nodes sit in the file. libkmod reads both (every link is an offset); depmod
/// wrote children before their parent up to kmod 33 and parents first since kmod 34.
/// The default is the older layout, which the distributions this tool converts (and the
/// kmod inside their initramfs images) were built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeOrder {
    PreOrder,
    #[default]
    PostOrder,
}

/// Builds one index file.
#[derive(Debug, Default, Clone)]
pub struct IndexBuilder {
    root: Node,
}

impl IndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` under `key`. Keys and values must be 7-bit ASCII without NUL; others
    /// are refused (depmod refuses them too).
    pub fn insert(&mut self, key: &str, value: &str, priority: u32) -> Result<(), InitramfsError> {
        for s in [key, value] {
            if s.bytes().any(|b| b >= CHILD_MAX || b == 0) {
                return Err(InitramfsError::Refused(format!(
                    "module index entry {s:?}: only 7-bit ASCII can be indexed"
                )));
            }
        }
        let key = key.as_bytes();
        let mut node = &mut self.root;
        let mut i = 0usize;
        loop {
            // Make node.prefix a prefix of key[i..], splitting the node where they part.
            let common = node
                .prefix
                .iter()
                .zip(key.get(i..).unwrap_or(&[]))
                .take_while(|(a, b)| a == b)
                .count();
            if common < node.prefix.len() {
                let ch = node.prefix[common];
                let mut child = std::mem::take(node);
                node.prefix = child.prefix[..common].to_vec();
                child.prefix = child.prefix[common + 1..].to_vec();
                node.children.insert(ch, child);
            }
            i += common;
            let Some(&ch) = key.get(i) else {
                node.add_value(value.as_bytes(), priority);
                return Ok(());
            };
            match node.children.entry(ch) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    let mut child = Node {
                        prefix: key[i + 1..].to_vec(),
                        ..Node::default()
                    };
                    child.add_value(value.as_bytes(), priority);
                    v.insert(child);
                    return Ok(());
                }
                std::collections::btree_map::Entry::Occupied(o) => node = o.into_mut(),
            }
            i += 1;
        }
    }

    /// The file, nodes in the order depmod writes them by default here
    /// ([`NodeOrder::default`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, InitramfsError> {
        self.to_bytes_in(NodeOrder::default())
    }

    pub fn to_bytes_in(&self, order: NodeOrder) -> Result<Vec<u8>, InitramfsError> {
        let mut out = Vec::with_capacity(12 + self.root.total_size());
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        match order {
            NodeOrder::PreOrder => {
                out.extend_from_slice(&(12 | self.root.mask()).to_be_bytes());
                self.root.write(&mut out)?;
            }
            NodeOrder::PostOrder => {
                out.extend_from_slice(&[0; 4]);
                let root = self.root.write_post(&mut out)?;
                out[8..12].copy_from_slice(&root.to_be_bytes());
            }
        }
        if out.len() > F_MASK as usize {
            return Err(too_big());
        }
        Ok(out)
    }
}

/// modules.dep.bin: module name -> its modules.dep line.
pub fn dep_bin(dep: &ModulesDep) -> Result<Vec<u8>, InitramfsError> {
    dep_index(dep)?.to_bytes()
}

pub fn dep_index(dep: &ModulesDep) -> Result<IndexBuilder, InitramfsError> {
    let mut b = IndexBuilder::new();
    for (i, e) in dep.entries().iter().enumerate() {
        b.insert(&e.name, &e.line(), i as u32)?;
    }
    Ok(b)
}

/// What depmod does to an alias before indexing it: "-" becomes "_" outside bracket
/// expressions; an unmatched bracket makes it unusable (None).
pub fn normalize_alias(alias: &str) -> Option<String> {
    let mut out = String::with_capacity(alias.len());
    let mut chars = alias.chars();
    while let Some(c) = chars.next() {
        match c {
            '-' => out.push('_'),
            ']' => return None,
            '[' => {
                out.push('[');
                loop {
                    match chars.next() {
                        Some(']') => {
                            out.push(']');
                            break;
                        }
                        Some(c) => out.push(c),
                        None => return None,
                    }
                }
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// modules.alias.bin or modules.symbols.bin from "alias KEY MODULE" lines; each value's
/// priority is its module's position in modules.dep (lines for modules not there are
/// skipped, as depmod only writes aliases of modules it knows).
pub fn alias_bin(text: &str, dep: &ModulesDep, normalize: bool) -> Result<Vec<u8>, InitramfsError> {
    alias_index(text, dep, normalize)?.to_bytes()
}

pub fn alias_index(
    text: &str,
    dep: &ModulesDep,
    normalize: bool,
) -> Result<IndexBuilder, InitramfsError> {
    let mut b = IndexBuilder::new();
    for (pat, module) in modules_dep::parse_aliases(text) {
        let Some(idx) = dep.index_of(&module) else {
            continue;
        };
        let key = if normalize {
            match normalize_alias(&pat) {
                Some(k) => k,
                None => continue,
            }
        } else {
            pat
        };
        b.insert(&key, &module, idx as u32)?;
    }
    Ok(b)
}

/// modules.builtin.bin: each built-in module's name with an empty value.
pub fn builtin_bin(text: &str) -> Result<Vec<u8>, InitramfsError> {
    builtin_index(text)?.to_bytes()
}

pub fn builtin_index(text: &str) -> Result<IndexBuilder, InitramfsError> {
    let mut b = IndexBuilder::new();
    for line in text.lines() {
        if !line.starts_with(|c: char| c.is_ascii_alphabetic()) {
            continue;
        }
        if let Some(n) = modules_dep::module_name_of_path(line.trim()) {
            b.insert(&n, "", 0)?;
        }
    }
    Ok(b)
}

/// A reader, for checks and tests: bounded, never panics on hostile bytes.
#[derive(Debug, Clone, Copy)]
pub struct Index<'a> {
    data: &'a [u8],
    root: u32,
}

struct ReadNode {
    prefix: Vec<u8>,
    first: u8,
    children: Vec<u32>,
    values: Vec<(u32, String)>,
}

fn corrupt(at: usize, what: &str) -> InitramfsError {
    InitramfsError::corrupt("module index", at as u64, what.to_string())
}

impl<'a> Index<'a> {
    pub fn open(data: &'a [u8]) -> Result<Index<'a>, InitramfsError> {
        let word = |i: usize| -> Result<u32, InitramfsError> {
            data.get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| corrupt(i, "truncated header"))
        };
        if word(0)? != MAGIC {
            return Err(corrupt(0, "bad magic"));
        }
        if word(4)? >> 16 != VERSION >> 16 {
            return Err(InitramfsError::Unsupported(format!(
                "module index version {:#x}",
                word(4)?
            )));
        }
        Ok(Index {
            data,
            root: word(8)?,
        })
    }

    fn node(&self, off: u32) -> Result<ReadNode, InitramfsError> {
        let d = self.data;
        let mut p = (off & F_MASK) as usize;
        let start = p;
        let cstr = |p: &mut usize| -> Result<Vec<u8>, InitramfsError> {
            let rest = d
                .get(*p..)
                .ok_or_else(|| corrupt(*p, "offset past the end"))?;
            let n = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| corrupt(*p, "unterminated string"))?;
            let s = rest[..n].to_vec();
            *p += n + 1;
            Ok(s)
        };
        let u32_at = |p: &mut usize| -> Result<u32, InitramfsError> {
            let b = d.get(*p..*p + 4).ok_or_else(|| corrupt(*p, "truncated"))?;
            *p += 4;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let mut n = ReadNode {
            prefix: Vec::new(),
            first: 0,
            children: Vec::new(),
            values: Vec::new(),
        };
        if off & F_PREFIX != 0 {
            n.prefix = cstr(&mut p)?;
        }
        if off & F_CHILDS != 0 {
            let fl = d.get(p..p + 2).ok_or_else(|| corrupt(p, "truncated"))?;
            let (first, last) = (fl[0], fl[1]);
            if first > last || last >= CHILD_MAX {
                return Err(corrupt(start, "bad child range"));
            }
            p += 2;
            n.first = first;
            for _ in first..=last {
                n.children.push(u32_at(&mut p)?);
            }
        }
        if off & F_VALUES != 0 {
            let count = u32_at(&mut p)? as usize;
            if count > d.len() / 5 {
                return Err(corrupt(start, "value count larger than the file"));
            }
            for _ in 0..count {
                let pr = u32_at(&mut p)?;
                let v = cstr(&mut p)?;
                n.values
                    .push((pr, String::from_utf8_lossy(&v).into_owned()));
            }
        }
        Ok(n)
    }

    /// The values stored under exactly `key`.
    pub fn lookup(&self, key: &str) -> Result<Vec<(u32, String)>, InitramfsError> {
        let key = key.as_bytes();
        let mut off = self.root;
        let mut i = 0usize;
        for _ in 0..=key.len() + 1 {
            let n = self.node(off)?;
            if !key.get(i..).is_some_and(|r| r.starts_with(&n.prefix)) {
                return Ok(Vec::new());
            }
            i += n.prefix.len();
            let Some(&ch) = key.get(i) else {
                return Ok(n.values);
            };
            let child = ch
                .checked_sub(n.first)
                .and_then(|k| n.children.get(k as usize))
                .copied()
                .unwrap_or(0);
            if child == 0 {
                return Ok(Vec::new());
            }
            off = child;
            i += 1;
        }
        Ok(Vec::new())
    }

    /// Every (key, priority, value), in key order; at most `max` of them.
    pub fn entries(&self, max: usize) -> Result<Vec<(String, u32, String)>, InitramfsError> {
        let mut out = Vec::new();
        let mut stack: Vec<(u32, Vec<u8>, usize)> = vec![(self.root, Vec::new(), 0)];
        let mut visited = 0usize;
        while let Some((off, mut key, depth)) = stack.pop() {
            visited += 1;
            if depth > 4096 || visited > self.data.len() {
                return Err(corrupt(off as usize, "node graph too deep or cyclic"));
            }
            let n = self.node(off)?;
            key.extend_from_slice(&n.prefix);
            for (p, v) in &n.values {
                if out.len() >= max {
                    return Ok(out);
                }
                out.push((String::from_utf8_lossy(&key).into_owned(), *p, v.clone()));
            }
            for (k, &c) in n.children.iter().enumerate().rev() {
                if c != 0 {
                    let mut ck = key.clone();
                    ck.push(n.first + k as u8);
                    stack.push((c, ck, depth + 1));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trie_round_trip() {
        let mut b = IndexBuilder::new();
        for (i, k) in ["ask", "ate", "on", "once", "one", "o"].iter().enumerate() {
            b.insert(k, &format!("v{i}"), i as u32).unwrap();
        }
        b.insert("on", "second", 0).unwrap();
        let pre = b.to_bytes_in(NodeOrder::PreOrder).unwrap();
        let post = b.to_bytes_in(NodeOrder::PostOrder).unwrap();
        assert_eq!(pre.len(), post.len());
        assert_ne!(pre, post);
        let bytes = post;
        assert_eq!(
            Index::open(&pre).unwrap().entries(100).unwrap(),
            Index::open(&bytes).unwrap().entries(100).unwrap()
        );
        let idx = Index::open(&bytes).unwrap();
        assert_eq!(idx.lookup("once").unwrap(), [(3, "v3".to_string())]);
        assert_eq!(
            idx.lookup("on").unwrap(),
            [(0, "second".to_string()), (2, "v2".to_string())]
        );
        assert!(idx.lookup("onc").unwrap().is_empty());
        assert!(idx.lookup("zzz").unwrap().is_empty());
        let all = idx.entries(100).unwrap();
        let keys: Vec<&str> = all.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(keys, ["ask", "ate", "o", "on", "on", "once", "one"]);
        assert!(b.insert("caf\u{e9}", "x", 0).is_err());
    }

    #[test]
    fn alias_normalizing() {
        assert_eq!(
            normalize_alias("a-b[x-y]c-d").as_deref(),
            Some("a_b[x-y]c_d")
        );
        assert_eq!(normalize_alias("a[b"), None);
        assert_eq!(normalize_alias("a]b"), None);
    }

    #[test]
    fn hostile_index_is_an_error() {
        let mut b = IndexBuilder::new();
        b.insert("abc", "1", 0).unwrap();
        b.insert("abd", "2", 0).unwrap();
        let good = b.to_bytes().unwrap();
        for cut in 0..good.len() {
            if let Ok(i) = Index::open(&good[..cut]) {
                let _ = i.lookup("abc");
                let _ = i.entries(10);
            }
        }
        // A child pointing back at the root.
        let mut bad = good.clone();
        let root = u32::from_be_bytes([bad[8], bad[9], bad[10], bad[11]]);
        let p = (root & F_MASK) as usize;
        bad[p + 2..p + 6].copy_from_slice(&root.to_be_bytes());
        let i = Index::open(&bad).unwrap();
        assert!(i.entries(1000).is_err() || i.entries(1000).unwrap().len() <= 1000);
    }
}
