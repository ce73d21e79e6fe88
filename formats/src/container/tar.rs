//! Tar archives as OVAs use them: ustar headers, pax extended headers (`path`, `size`) and
//! GNU long names (`././@LongLink`), GNU base-256 sizes for members over 8 GiB.
//!
//! OVA disks are gigabytes, so an uncompressed archive is indexed in place (headers read,
//! member data skipped) and its disks are read where they lie; a gzip-compressed one can
//! only be walked once, front to back, so the same header logic runs over a `Read` stream.
//! Member names are untrusted: absolute names and names with `..` are refused for the whole
//! archive, because an archive that carries one is hostile or broken and nothing in it can
//! be trusted to mean what it says.

use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use std::io::Read;

pub const BLOCK: u64 = 512;
/// Most members a real OVA has is a handful; this bounds the index of a hostile one.
pub const MAX_MEMBERS: usize = 100_000;
/// pax headers and GNU long names are a few hundred bytes in practice.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;
/// Longest member name kept (Linux PATH_MAX).
pub const MAX_NAME_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    File,
    Directory,
    /// Links, devices, FIFOs: never opened as disks.
    Other(u8),
}

/// One member of an archive: where its data lies in the (uncompressed) tar stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Normalised name: no leading `./`, no trailing `/`.
    pub name: String,
    pub kind: MemberKind,
    pub size: u64,
    /// Offset of the first data byte in the uncompressed tar stream.
    pub data_offset: u64,
    /// Offset of the member's first header (its pax or long-name header if it has one).
    pub header_offset: u64,
}

/// Something a tar can be read from front to back: an in-place file (skips are free) or a
/// decompressing stream (skips read and discard).
pub trait TarSource {
    /// Fills `buf` completely; `Ok(false)` at a clean end of input before any byte.
    fn read_block(&mut self, buf: &mut [u8]) -> Result<bool>;
    fn skip(&mut self, n: u64) -> Result<()>;
    fn position(&self) -> u64;
    fn name(&self) -> &str;
}

/// A tar stored as-is in a device (a host file): reading headers only.
pub struct DevSource<'a> {
    dev: &'a dyn BlockDev,
    pos: u64,
}

impl<'a> DevSource<'a> {
    pub fn new(dev: &'a dyn BlockDev) -> Self {
        DevSource { dev, pos: 0 }
    }
}

impl TarSource for DevSource<'_> {
    fn read_block(&mut self, buf: &mut [u8]) -> Result<bool> {
        let len = self.dev.len();
        if self.pos >= len {
            return Ok(false);
        }
        let n = buf.len() as u64;
        if self.pos.checked_add(n).is_none_or(|e| e > len) {
            return Err(Error::corrupt(
                self.dev.name(),
                "tar header",
                self.pos,
                format!("the archive ends inside a block ({len} bytes in all)"),
            ));
        }
        self.dev.read_at(buf, self.pos)?;
        self.pos += n;
        Ok(true)
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.dev.len());
        match end {
            Some(e) => {
                self.pos = e;
                Ok(())
            }
            None => Err(Error::corrupt(
                self.dev.name(),
                "tar member",
                self.pos,
                format!(
                    "a member of {n} bytes runs past the end of the archive ({} bytes)",
                    self.dev.len()
                ),
            )),
        }
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn name(&self) -> &str {
        self.dev.name()
    }
}

/// A tar read from a stream (a gzip decoder).
pub struct StreamSource<R: Read> {
    inner: R,
    pos: u64,
    name: String,
}

impl<R: Read> StreamSource<R> {
    pub fn new(inner: R, name: impl Into<String>) -> Self {
        StreamSource {
            inner,
            pos: 0,
            name: name.into(),
        }
    }

    /// Reads up to `buf.len()` bytes of the current member's data (the caller bounds it by
    /// the member size): short only at the end of input, which is then corrupt.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<()> {
        let at = self.pos;
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(
                    &self.name,
                    "tar member data",
                    at,
                    "the archive ends inside a member",
                )
            } else {
                Error::io(&self.name, e)
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }
}

impl<R: Read> TarSource for StreamSource<R> {
    fn read_block(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut got = 0usize;
        while got < buf.len() {
            let rest = buf.get_mut(got..).unwrap_or_default();
            match self.inner.read(rest) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.name, e)),
            }
        }
        let at = self.pos;
        self.pos += got as u64;
        if got == 0 {
            return Ok(false);
        }
        if got < buf.len() {
            return Err(Error::corrupt(
                &self.name,
                "tar header",
                at,
                "the archive ends inside a block",
            ));
        }
        Ok(true)
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        let at = self.pos;
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| Error::io(&self.name, e))?;
        self.pos += copied;
        if copied < n {
            return Err(Error::corrupt(
                &self.name,
                "tar member",
                at,
                format!("the archive ends {} bytes into a member of {n}", copied),
            ));
        }
        Ok(())
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Bytes of padding after `size` bytes of data up to the next block.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn field(h: &[u8; 512], start: usize, len: usize) -> &[u8] {
    h.get(start..start + len).unwrap_or_default()
}

/// A NUL-terminated header string.
fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b.get(..end).unwrap_or_default()
}

/// An octal number field (spaces and NULs around it), or GNU base-256 when the top bit of
/// the first byte is set.
fn number(b: &[u8], file: &str, at: u64, what: &str) -> Result<u64> {
    let bad = |d: &str| Error::corrupt(file, "tar header", at, format!("{what}: {d}"));
    if let Some(&first) = b.first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return Err(bad("negative base-256 number"));
            }
            let mut v: u64 = u64::from(first & 0x3f);
            for &c in b.iter().skip(1) {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(c)))
                    .ok_or_else(|| bad("base-256 number overflows"))?;
            }
            return Ok(v);
        }
    }
    let s = cstr(b);
    let t: Vec<u8> = s
        .iter()
        .copied()
        .skip_while(|&c| c == b' ')
        .take_while(|&c| c != b' ')
        .collect();
    if t.is_empty() {
        return Ok(0);
    }
    let mut v = 0u64;
    for c in t {
        if !(b'0'..=b'7').contains(&c) {
            return Err(bad("not an octal number"));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .ok_or_else(|| bad("octal number overflows"))?;
    }
    Ok(v)
}

fn checksum_ok(h: &[u8; 512], stored: u64) -> bool {
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &c) in h.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += u64::from(c);
        signed += i64::from(c as i8);
    }
    unsigned == stored || u64::try_from(signed).ok() == Some(stored)
}

/// Checks and normalises a member name: refuses absolute names and `..` components.
pub fn clean_name(raw: &[u8], file: &str) -> Result<String> {
    let name = String::from_utf8_lossy(raw).into_owned();
    let shown: String = name.chars().take(200).collect();
    if name.contains('\0') {
        return Err(Error::corrupt(
            file,
            "tar member name",
            0,
            "a name contains a NUL byte",
        ));
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(Error::refused(
            file,
            format!("the archive has a member with an absolute name ('{shown}'): it could overwrite host files if unpacked; this archive is hostile or broken, unpack and check it by hand"),
        ));
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Err(Error::refused(
            file,
            format!("the archive has a member whose name climbs out with '..' ('{shown}'): this archive is hostile or broken, unpack and check it by hand"),
        ));
    }
    let mut parts: Vec<&str> = name
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() {
        parts.push(".");
    }
    Ok(parts.join("/"))
}

/// Overrides carried by pax and GNU headers for the member that follows them.
#[derive(Default)]
struct Pending {
    name: Option<Vec<u8>>,
    size: Option<u64>,
}

fn parse_pax(data: &[u8], pending: &mut Pending, file: &str, at: u64) -> Result<()> {
    let bad = |d: &str| Error::corrupt(file, "tar pax header", at, d.to_string());
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&c| c == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| bad("a record has no length"))?;
        let len: usize = std::str::from_utf8(rest.get(..sp).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("a record length is not a number"))?;
        if len <= sp + 1 || len > rest.len() {
            return Err(bad("a record length is out of range"));
        }
        let rec = rest.get(sp + 1..len).unwrap_or_default();
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&c| c == b'=') {
            let (k, v) = (
                rec.get(..eq).unwrap_or_default(),
                rec.get(eq + 1..).unwrap_or_default(),
            );
            match k {
                b"path" => pending.name = Some(v.to_vec()),
                b"size" => {
                    let s = std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("size is not a number"))?;
                    pending.size = Some(s);
                }
                _ => {}
            }
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    Ok(())
}

fn read_extension(src: &mut dyn TarSource, size: u64, what: &str) -> Result<Vec<u8>> {
    let at = src.position();
    if size > MAX_EXTENSION_BYTES {
        return Err(Error::corrupt(
            src.name(),
            what,
            at,
            format!("{size} bytes is far more than any real one (at most {MAX_EXTENSION_BYTES})"),
        ));
    }
    let blocks = size.div_ceil(BLOCK) * BLOCK;
    let mut buf = vec![0u8; blocks as usize];
    for chunk in buf.chunks_mut(BLOCK as usize) {
        if !src.read_block(chunk)? {
            return Err(Error::corrupt(
                src.name(),
                what,
                at,
                "the archive ends inside it",
            ));
        }
    }
    buf.truncate(size as usize);
    Ok(buf)
}

/// Reads the next member's header(s). Returns `None` at the end-of-archive marker or a
/// clean end of input. Afterwards the source stands at the member's first data byte; the
/// caller must consume exactly `size` bytes plus `padding(size)` before calling again.
pub fn next_member(src: &mut dyn TarSource) -> Result<Option<Member>> {
    let mut pending = Pending::default();
    let mut header_offset: Option<u64> = None;
    loop {
        let at = src.position();
        let mut h = [0u8; 512];
        if !src.read_block(&mut h)? {
            if header_offset.is_some() {
                return Err(Error::corrupt(
                    src.name(),
                    "tar header",
                    at,
                    "the archive ends after an extended header",
                ));
            }
            return Ok(None);
        }
        if h.iter().all(|&c| c == 0) {
            // End-of-archive: two zero blocks (one is accepted; some writers stop there).
            return Ok(None);
        }
        let file = src.name().to_string();
        let stored = number(field(&h, 148, 8), &file, at, "checksum")?;
        if !checksum_ok(&h, stored) {
            return Err(Error::corrupt(
                &file,
                "tar header",
                at,
                "the header checksum does not match (not a tar archive, or damaged)",
            ));
        }
        header_offset.get_or_insert(at);
        let size_field = number(field(&h, 124, 12), &file, at, "size")?;
        let typeflag = h[156];
        match typeflag {
            b'x' => {
                let data = read_extension(src, size_field, "tar pax header")?;
                parse_pax(&data, &mut pending, &file, at)?;
                continue;
            }
            b'g' => {
                // Global pax records: nothing OVAs need.
                read_extension(src, size_field, "tar global pax header")?;
                continue;
            }
            b'L' => {
                let data = read_extension(src, size_field, "tar GNU long name")?;
                pending.name = Some(cstr(&data).to_vec());
                continue;
            }
            b'K' => {
                read_extension(src, size_field, "tar GNU long link name")?;
                continue;
            }
            _ => {}
        }
        let magic = field(&h, 257, 6);
        let raw_name = match pending.name.take() {
            Some(n) => n,
            None => {
                let name = cstr(field(&h, 0, 100));
                let prefix = cstr(field(&h, 345, 155));
                if magic == b"ustar\0" && !prefix.is_empty() {
                    let mut n = prefix.to_vec();
                    n.push(b'/');
                    n.extend_from_slice(name);
                    n
                } else {
                    name.to_vec()
                }
            }
        };
        if raw_name.len() > MAX_NAME_BYTES {
            return Err(Error::corrupt(
                &file,
                "tar member name",
                at,
                format!("a name of {} bytes is too long", raw_name.len()),
            ));
        }
        let name = clean_name(&raw_name, &file)?;
        let size = pending.size.take().unwrap_or(size_field);
        let kind = match typeflag {
            b'0' | 0 | b'7' => MemberKind::File,
            b'5' => MemberKind::Directory,
            other => MemberKind::Other(other),
        };
        // Links and directories carry no data whatever their size field says.
        let size = match kind {
            MemberKind::File => size,
            MemberKind::Other(b'1' | b'2' | b'3' | b'4' | b'6') | MemberKind::Directory => 0,
            MemberKind::Other(_) => size,
        };
        return Ok(Some(Member {
            name,
            kind,
            size,
            data_offset: src.position(),
            header_offset: header_offset.unwrap_or(at),
        }));
    }
}

/// Indexes an uncompressed archive stored in `dev` without reading member data.
pub fn index(dev: &dyn BlockDev) -> Result<Vec<Member>> {
    let mut src = DevSource::new(dev);
    let mut out: Vec<Member> = Vec::new();
    while let Some(m) = next_member(&mut src)? {
        if out.len() >= MAX_MEMBERS {
            return Err(Error::corrupt(
                dev.name(),
                "tar archive",
                m.header_offset,
                format!("more than {MAX_MEMBERS} members"),
            ));
        }
        let skip = m.size.checked_add(padding(m.size)).ok_or_else(|| {
            Error::corrupt(dev.name(), "tar member", m.header_offset, "size overflows")
        })?;
        // The last member's padding may be missing in archives cut short by some writers;
        // its data must still be whole.
        if m.data_offset
            .checked_add(m.size)
            .is_none_or(|e| e > dev.len())
        {
            return Err(Error::corrupt(
                dev.name(),
                "tar member",
                m.header_offset,
                format!(
                    "'{}' ({} bytes) runs past the end of the archive ({} bytes)",
                    m.name,
                    m.size,
                    dev.len()
                ),
            ));
        }
        let to_skip = skip.min(dev.len() - m.data_offset);
        src.skip(to_skip)?;
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemDev;

    /// Builds a ustar header by hand (tests compare with GNU tar in tests/export.rs).
    pub(crate) fn header(name: &[u8], size: u64, typeflag: u8) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        if size < 1 << 33 {
            let s = format!("{size:011o}\0");
            h[124..136].copy_from_slice(s.as_bytes());
        } else {
            h[124] = 0x80;
            h[128..136].copy_from_slice(&size.to_be_bytes());
        }
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&c| u32::from(c)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn archive(members: &[(&[u8], &[u8], u8)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (name, data, t) in members {
            v.extend_from_slice(&header(name, data.len() as u64, *t));
            v.extend_from_slice(data);
            v.resize(v.len() + padding(data.len() as u64) as usize, 0);
        }
        v.extend_from_slice(&[0u8; 1024]);
        v
    }

    #[test]
    fn indexes_members_and_long_names() {
        let long = vec![b'a'; 150];
        let mut pax = b"path=".to_vec();
        pax.extend_from_slice(b"dir/pax-name.vmdk\n");
        let rec = format!("{} ", pax.len() + 3);
        let mut prec = rec.into_bytes();
        prec.extend_from_slice(&pax);
        let mut gnu = long.clone();
        gnu.push(0);
        let v = archive(&[
            (b"./web.ovf", b"<Envelope/>", b'0'),
            (b"././@LongLink", &gnu, b'L'),
            (b"ignored", b"x", b'0'),
            (b"PaxHeaders/x", &prec, b'x'),
            (b"short", b"yy", b'0'),
        ]);
        let dev = MemDev::new("t.ova", v);
        let m = index(&dev).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "web.ovf");
        assert_eq!(m[0].size, 11);
        assert_eq!(m[0].data_offset, 512);
        assert_eq!(m[1].name, String::from_utf8(long).unwrap());
        assert_eq!(m[2].name, "dir/pax-name.vmdk");
        assert_eq!(m[2].size, 2);
    }

    #[test]
    fn refuses_hostile_names_and_bad_checksums() {
        for bad in [&b"../etc/passwd"[..], b"/etc/passwd", b"a/../../b"] {
            let dev = MemDev::new("t.ova", archive(&[(bad, b"x", b'0')]));
            let e = index(&dev).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Refused, "{e}");
        }
        let mut v = archive(&[(b"a", b"x", b'0')]);
        v[0] = b'b';
        let e = index(&MemDev::new("t.ova", v)).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        // A member claiming more bytes than the archive has.
        let mut v = header(b"big", 1 << 40, b'0').to_vec();
        v.extend_from_slice(&[0u8; 1024]);
        let e = index(&MemDev::new("t.ova", v)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
    }

    #[test]
    fn base256_sizes() {
        let mut b = [0u8; 12];
        b[0] = 0x80;
        b[7] = 0x02;
        b[11] = 0x01;
        assert_eq!(number(&b, "f", 0, "size").unwrap(), (2u64 << 32) + 1);
    }

    #[test]
    fn streams_the_same_members() {
        let v = archive(&[(b"a.ovf", b"hello", b'0'), (b"b.vmdk", &[7u8; 700], b'0')]);
        let mut s = StreamSource::new(&v[..], "t.ova");
        let m = next_member(&mut s).unwrap().unwrap();
        let mut d = vec![0u8; m.size as usize];
        s.read_data(&mut d).unwrap();
        assert_eq!(d, b"hello");
        s.skip(padding(m.size)).unwrap();
        let m = next_member(&mut s).unwrap().unwrap();
        assert_eq!((m.name.as_str(), m.size), ("b.vmdk", 700));
        s.skip(m.size + padding(m.size)).unwrap();
        assert!(next_member(&mut s).unwrap().is_none());
    }
}
