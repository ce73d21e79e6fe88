//! OVF manifests (`.mf`): one `ALGO(file)= hexdigest` line per file of the package, SHA1
//! in OVF 1.x packages, SHA256 (or SHA512) in OVF 2.0 ones. A digest that does not match
//! is an error; a file the manifest does not list is only a warning, since many exporters
//! leave some files out.

use crate::error::{Error, Result};
use sha1::Digest;

/// Manifests list a few files; anything past this is not a manifest.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SHA1" => Some(Algorithm::Sha1),
            "SHA256" => Some(Algorithm::Sha256),
            "SHA512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub algorithm: Algorithm,
    pub file: String,
    pub digest: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<Entry>,
    /// Lines that were not understood (unknown algorithms): reported, not fatal.
    pub warnings: Vec<String>,
}

impl Manifest {
    pub fn entry(&self, file: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.file == file)
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// Parses a manifest; `file` names it in errors.
pub fn parse(text: &[u8], file: &str) -> Result<Manifest> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(Error::corrupt(
            file,
            "ovf manifest",
            0,
            format!("{} bytes is far larger than any manifest", text.len()),
        ));
    }
    let text = String::from_utf8_lossy(text);
    let mut m = Manifest::default();
    let mut at = 0u64;
    for line in text.split('\n') {
        let here = at;
        at += line.len() as u64 + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |d: &str| Error::corrupt(file, "ovf manifest line", here, d.to_string());
        let open = line
            .find('(')
            .ok_or_else(|| bad("no '(' after the algorithm"))?;
        let close = line
            .rfind(")=")
            .ok_or_else(|| bad("no ')=' after the file name"))?;
        if close < open {
            return Err(bad("')=' comes before '('"));
        }
        let algo = line.get(..open).unwrap_or_default().trim();
        let name = line.get(open + 1..close).unwrap_or_default().trim();
        let digest = line.get(close + 2..).unwrap_or_default().trim();
        let Some(algorithm) = Algorithm::parse(algo) else {
            let shown: String = algo.chars().take(20).collect();
            m.warnings.push(format!(
                "{file}: digest algorithm '{shown}' for '{name}' is not known; that file is not checked"
            ));
            continue;
        };
        let digest = hex(digest).ok_or_else(|| bad("the digest is not hexadecimal"))?;
        let want = match algorithm {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        };
        if digest.len() != want {
            return Err(bad(&format!(
                "a {} digest has {} bytes, not {want}",
                algorithm.name(),
                digest.len()
            )));
        }
        m.entries.push(Entry {
            algorithm,
            file: name.trim_start_matches("./").to_string(),
            digest,
        });
    }
    Ok(m)
}

/// A running digest of one of the manifest's algorithms.
#[derive(Clone)]
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(a: Algorithm) -> Self {
        match a {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// Compares a computed digest with the manifest's, as a Corrupt error naming both.
pub fn check(entry: &Entry, got: &[u8], package: &str) -> Result<()> {
    check_at(entry, got, package, 0)
}

/// `check` for a file stored at `offset` of the package (a member of an OVA).
pub fn check_at(entry: &Entry, got: &[u8], package: &str, offset: u64) -> Result<()> {
    if got == entry.digest.as_slice() {
        return Ok(());
    }
    Err(Error::corrupt(
        package,
        "ovf manifest digest",
        offset,
        format!(
            "{}({}) is {} but the manifest says {}: the file was changed or damaged after export",
            entry.algorithm.name(),
            entry.file,
            to_hex(got),
            to_hex(&entry.digest)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sha1_and_sha256_lines() {
        let t = b"SHA1(web.ovf)= da39a3ee5e6b4b0d3255bfef95601890afd80709\r\nSHA256(web-disk1.vmdk)=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nMD5(x)= 00\n";
        let m = parse(t, "web.mf").unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[0].algorithm, Algorithm::Sha1);
        assert_eq!(m.entries[1].file, "web-disk1.vmdk");
        assert_eq!(m.warnings.len(), 1);
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"");
        assert!(check(&m.entries[1], &h.finish(), "p").is_ok());
        let mut h = Hasher::new(Algorithm::Sha1);
        h.update(b"x");
        assert!(check(&m.entries[0], &h.finish(), "p").is_err());
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(parse(b"SHA1 web.ovf abc\n", "m").is_err());
        assert!(parse(b"SHA1(a)= abc\n", "m").is_err());
        assert!(parse(b"SHA1(a)= 00\n", "m").is_err());
    }
}
