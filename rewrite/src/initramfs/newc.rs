//! The cpio "newc" format (and its "crc" twin) as the kernel's initramfs unpacker reads it:
//! a 110-byte ASCII-hex header, the NUL-terminated name padded to 4 bytes, the data padded
//! to 4 bytes, and `TRAILER!!!` closing the archive. Hard links are entries sharing
//! (dev, ino) with `nlink > 1`; GNU cpio stores the data once, on the last of them, and the
//! kernel writes it into the inode the first one created — so entries are kept exactly as
//! stored and [`link_groups`] tells which share data.

use super::InitramfsError;
use std::collections::HashMap;

pub(crate) const HEADER_LEN: usize = 110;
/// The kernel's unpacker takes names up to PATH_MAX.
pub const MAX_NAME: usize = 4096;
pub(crate) const TRAILER: &str = "TRAILER!!!";

/// One archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// As stored, without a leading "./" or "/" stripped (the kernel takes it as given).
    pub name: String,
    /// st_mode: file type bits and permissions.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    /// File content, or a symlink's target; empty for directories and devices.
    pub data: Vec<u8>,
    pub ino: u32,
    pub nlink: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;

impl Member {
    /// A regular file owned by root.
    pub fn file(name: &str, perm: u32, mtime: u32, data: Vec<u8>) -> Member {
        Member {
            name: name.to_string(),
            mode: S_IFREG | (perm & 0o7777),
            uid: 0,
            gid: 0,
            mtime,
            data,
            ino: 0,
            nlink: 1,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 0,
            rdev_minor: 0,
        }
    }

    /// A directory owned by root.
    pub fn dir(name: &str, perm: u32, mtime: u32) -> Member {
        Member {
            mode: S_IFDIR | (perm & 0o7777),
            nlink: 2,
            ..Member::file(name, 0, mtime, Vec::new())
        }
    }

    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }

    /// The name without a leading "./" or "/", as the path lands in the rootfs.
    pub fn path(&self) -> &str {
        normalize_name(&self.name)
    }
}

/// "./etc/x" and "/etc/x" land where "etc/x" does.
pub fn normalize_name(name: &str) -> &str {
    let mut n = name;
    loop {
        if let Some(r) = n.strip_prefix("./") {
            n = r;
        } else if let Some(r) = n.strip_prefix('/') {
            n = r;
        } else {
            return n;
        }
    }
}

/// "070701" (newc) or "070702" (newc with a byte-sum checksum per file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Newc,
    Crc,
}

/// One archive as read: its entries up to the trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub format: Format,
    pub members: Vec<Member>,
    /// Whether the archive ended with `TRAILER!!!` (an archive cut at an entry boundary
    /// is read; writing always closes it).
    pub had_trailer: bool,
}

fn hex_field(h: &[u8], i: usize, at: u64) -> Result<u32, InitramfsError> {
    let start = 6 + i * 8;
    let f = h
        .get(start..start + 8)
        .ok_or_else(|| InitramfsError::corrupt("cpio header", at, "short header"))?;
    let mut v: u32 = 0;
    for &c in f {
        let d = (c as char).to_digit(16).ok_or_else(|| {
            InitramfsError::corrupt(
                "cpio header",
                at + start as u64,
                format!(
                    "field {i} is not hexadecimal: {:?}",
                    String::from_utf8_lossy(f)
                ),
            )
        })?;
        v = (v << 4) | d;
    }
    Ok(v)
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// Reads one archive starting at `data[0]` (which must be a newc/crc magic). Returns the
/// archive and the bytes it took (up to and including the trailer's padding). `base` is
/// the offset of `data` in the decompressed stream, for error messages; `budget` is
/// decremented by the member bytes read so a hostile archive cannot exhaust memory.
pub fn read_archive(
    data: &[u8],
    base: u64,
    budget: &mut u64,
) -> Result<(Archive, usize), InitramfsError> {
    let mut pos = 0usize;
    let mut members = Vec::new();
    let mut format = None;
    loop {
        let at = base + pos as u64;
        if pos == data.len() {
            if members.is_empty() {
                return Err(InitramfsError::corrupt("cpio archive", at, "empty"));
            }
            let archive = Archive {
                format: format.unwrap_or(Format::Newc),
                members,
                had_trailer: false,
            };
            return Ok((archive, pos));
        }
        let h = data
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| InitramfsError::corrupt("cpio header", at, "truncated header"))?;
        let f = match &h[..6] {
            b"070701" => Format::Newc,
            b"070702" => Format::Crc,
            b"070707" => {
                return Err(InitramfsError::Unsupported(format!(
                    "cpio \"odc\" archive at offset {at:#x} (the kernel reads only newc)"
                )))
            }
            m => {
                return Err(InitramfsError::corrupt(
                    "cpio header",
                    at,
                    format!("bad magic {:?}", String::from_utf8_lossy(m)),
                ))
            }
        };
        if *format.get_or_insert(f) != f {
            return Err(InitramfsError::corrupt(
                "cpio header",
                at,
                "newc and crc entries mixed in one archive",
            ));
        }
        let field = |i| hex_field(h, i, at);
        let ino = field(0)?;
        let mode = field(1)?;
        let uid = field(2)?;
        let gid = field(3)?;
        let nlink = field(4)?;
        let mtime = field(5)?;
        let filesize = field(6)? as usize;
        let dev_major = field(7)?;
        let dev_minor = field(8)?;
        let rdev_major = field(9)?;
        let rdev_minor = field(10)?;
        let namesize = field(11)? as usize;
        let check = field(12)?;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(InitramfsError::corrupt(
                "cpio header",
                at,
                format!("name size {namesize} (1 to {MAX_NAME})"),
            ));
        }
        let name_start = pos + HEADER_LEN;
        let name_bytes = data
            .get(name_start..name_start + namesize)
            .ok_or_else(|| InitramfsError::corrupt("cpio name", at, "truncated name"))?;
        let (last, body) = name_bytes
            .split_last()
            .ok_or_else(|| InitramfsError::corrupt("cpio name", at, "empty name"))?;
        if *last != 0 || body.contains(&0) {
            return Err(InitramfsError::corrupt(
                "cpio name",
                at,
                "name not terminated by its only NUL",
            ));
        }
        let name = String::from_utf8_lossy(body).into_owned();
        let data_start = align4(name_start + namesize)
            .ok_or_else(|| InitramfsError::corrupt("cpio name", at, "overflow"))?;
        if name == TRAILER {
            if name_start + namesize + filesize > data.len() {
                return Err(InitramfsError::corrupt("cpio trailer", at, "truncated"));
            }
            let end = align4(data_start + filesize).unwrap_or(usize::MAX);
            let archive = Archive {
                format: f,
                members,
                had_trailer: true,
            };
            return Ok((archive, end.min(data.len())));
        }
        if filesize as u64 > *budget {
            return Err(InitramfsError::Refused(format!(
                "cpio entry {name:?} at offset {at:#x} would pass the size limit for an \
                 initramfs; raise the limit if this image is genuine"
            )));
        }
        let body = data.get(data_start..data_start + filesize).ok_or_else(|| {
            InitramfsError::corrupt(
                "cpio data",
                at,
                format!("{name:?}: {filesize} bytes run past the end of the archive"),
            )
        })?;
        if f == Format::Crc && mode & S_IFMT == S_IFREG {
            let sum = byte_sum(body);
            if sum != check {
                return Err(InitramfsError::corrupt(
                    "cpio crc",
                    at,
                    format!("{name:?}: checksum {check:#x}, data sums to {sum:#x}"),
                ));
            }
        }
        *budget -= filesize as u64;
        members.push(Member {
            name,
            mode,
            uid,
            gid,
            mtime,
            data: body.to_vec(),
            ino,
            nlink,
            dev_major,
            dev_minor,
            rdev_major,
            rdev_minor,
        });
        // The last entry's data padding may be missing at the very end of input.
        pos = align4(data_start + filesize)
            .ok_or_else(|| InitramfsError::corrupt("cpio data", at, "overflow"))?
            .min(data.len());
    }
}

/// The "crc" format's checksum: the sum of the data bytes, modulo 2^32.
pub fn byte_sum(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |s, &b| s.wrapping_add(b as u32))
}

fn push_header(out: &mut Vec<u8>, format: Format, m: &Member, namesize: usize, check: u32) {
    out.extend_from_slice(match format {
        Format::Newc => b"070701",
        Format::Crc => b"070702",
    });
    for v in [
        m.ino,
        m.mode,
        m.uid,
        m.gid,
        m.nlink,
        m.mtime,
        m.data.len() as u32,
        m.dev_major,
        m.dev_minor,
        m.rdev_major,
        m.rdev_minor,
        namesize as u32,
        check,
    ] {
        out.extend_from_slice(format!("{v:08X}").as_bytes());
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() & 3 != 0 {
        out.push(0);
    }
}

/// Appends `archive` to `out` (which must start 4-aligned), closed by `TRAILER!!!`.
pub fn write_archive(out: &mut Vec<u8>, archive: &Archive) -> Result<(), InitramfsError> {
    for m in &archive.members {
        if m.name.is_empty() || m.name.len() >= MAX_NAME || m.name.contains('\0') {
            return Err(InitramfsError::Refused(format!(
                "cannot store a cpio entry named {:?}",
                m.name
            )));
        }
        if u32::try_from(m.data.len()).is_err() {
            return Err(InitramfsError::Unsupported(format!(
                "cpio entry {:?} of 4 GiB or more",
                m.name
            )));
        }
        let check = if archive.format == Format::Crc && m.is_file() {
            byte_sum(&m.data)
        } else {
            0
        };
        push_header(out, archive.format, m, m.name.len() + 1, check);
        out.extend_from_slice(m.name.as_bytes());
        out.push(0);
        pad4(out);
        out.extend_from_slice(&m.data);
        pad4(out);
    }
    let trailer = Member {
        nlink: 1,
        ..Member::file(TRAILER, 0, 0, Vec::new())
    };
    let trailer = Member { mode: 0, ..trailer };
    push_header(out, archive.format, &trailer, TRAILER.len() + 1, 0);
    out.extend_from_slice(TRAILER.as_bytes());
    out.push(0);
    pad4(out);
    Ok(())
}

/// Groups of member indexes that are hard links of one inode (same dev and ino, nlink >
/// 1), in archive order; the data lives on the member that has any.
pub fn link_groups(members: &[Member]) -> Vec<Vec<usize>> {
    let mut by_ino: HashMap<(u32, u32, u32), Vec<usize>> = HashMap::new();
    for (i, m) in members.iter().enumerate() {
        if m.nlink > 1 && !m.is_dir() {
            by_ino
                .entry((m.dev_major, m.dev_minor, m.ino))
                .or_default()
                .push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = by_ino.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        Archive {
            format: Format::Newc,
            members: vec![
                Member::dir("etc", 0o755, 7),
                Member::file(
                    "etc/fstab",
                    0o644,
                    8,
                    b"/dev/sda1 / ext4 defaults 0 1\n".to_vec(),
                ),
                Member::file("x", 0o600, 9, vec![]),
            ],
            had_trailer: true,
        }
    }

    #[test]
    fn round_trip() {
        let a = sample();
        let mut out = Vec::new();
        write_archive(&mut out, &a).unwrap();
        assert_eq!(out.len() % 4, 0);
        let mut budget = 1 << 20;
        let (b, used) = read_archive(&out, 0, &mut budget).unwrap();
        assert_eq!(used, out.len());
        assert_eq!(a, b);
    }

    #[test]
    fn crc_checked() {
        let mut a = sample();
        a.format = Format::Crc;
        let mut out = Vec::new();
        write_archive(&mut out, &a).unwrap();
        let mut budget = 1 << 20;
        assert_eq!(read_archive(&out, 0, &mut budget).unwrap().0, a);
        // Flip a data byte of etc/fstab: the checksum no longer matches.
        let i = out.windows(9).position(|w| w == b"/dev/sda1").unwrap();
        out[i] = b'X';
        let mut budget = 1 << 20;
        assert!(read_archive(&out, 0, &mut budget).is_err());
    }

    #[test]
    fn hostile_headers_are_errors() {
        let mut out = Vec::new();
        write_archive(&mut out, &sample()).unwrap();
        for cut in [0, 5, 50, 109, 115, 200] {
            let mut budget = 1 << 20;
            let r = read_archive(&out[..cut.min(out.len())], 0, &mut budget);
            assert!(r.is_err() || cut >= out.len(), "cut {cut}");
        }
        // Huge file size.
        let mut bad = out.clone();
        bad[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"FFFFFFFF");
        let mut budget = 1 << 40;
        assert!(read_archive(&bad, 0, &mut budget).is_err());
        // Budget exhausted.
        let mut budget = 3;
        assert!(matches!(
            read_archive(&out, 0, &mut budget),
            Err(InitramfsError::Refused(_))
        ));
        // Name size 0 and too large.
        let mut bad = out.clone();
        bad[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"00000000");
        let mut budget = 1 << 20;
        assert!(read_archive(&bad, 0, &mut budget).is_err());
        let mut bad = out.clone();
        bad[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"00002000");
        let mut budget = 1 << 20;
        assert!(read_archive(&bad, 0, &mut budget).is_err());
        // Non-hex digits.
        let mut bad = out;
        bad[10] = b'g';
        let mut budget = 1 << 20;
        assert!(read_archive(&bad, 0, &mut budget).is_err());
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize_name("./etc/x"), "etc/x");
        assert_eq!(normalize_name("/./etc"), "etc");
        assert_eq!(normalize_name("."), ".");
    }
}
