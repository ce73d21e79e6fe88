//! Which Linux this is: distribution, version and family from whichever release files the
//! guest has (os-release first, then the older lsb-release, redhat-release,
//! SuSE-release, debian_version), and the architecture from an ELF binary of the guest.

use crate::guest_files::GuestFiles;
use serde::Serialize;

/// The distribution family, which decides the file layout a conversion edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Debian,
    Rhel,
    Suse,
    Arch,
    Gentoo,
    Alpine,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct OsInfo {
    /// os-release `ID` (`debian`, `ubuntu`, `rhel`, `centos`, `sles`, ...) or the same word
    /// derived from an older release file.
    pub distro: Option<String>,
    /// A display name (`Red Hat Enterprise Linux Server`).
    pub name: Option<String>,
    /// `12`, `7.9`, `11.4` (SUSE: VERSION.PATCHLEVEL).
    pub version: Option<String>,
    pub codename: Option<String>,
    pub pretty_name: Option<String>,
    pub family: Family,
    /// `x86_64`, `i386`, `aarch64`, ...
    pub arch: Option<String>,
    /// Where the architecture was read (`/bin/sh`, or a kernel image).
    pub arch_source: Option<String>,
    /// The release files read, in order.
    pub sources: Vec<String>,
}

/// `KEY=value` lines with shell quoting, as os-release and lsb-release write them.
fn kv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_string(), crate::net::unquote(v).0.to_string()))
        })
        .collect()
}

fn get(kv: &[(String, String)], key: &str) -> Option<String> {
    kv.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

pub fn family_of(id: &str, id_like: &str) -> Family {
    let words = std::iter::once(id).chain(id_like.split_whitespace());
    for w in words {
        let w = w.to_ascii_lowercase();
        let f = match w.as_str() {
            "debian" | "ubuntu" | "linuxmint" | "raspbian" | "devuan" | "kali" => Family::Debian,
            "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" | "amzn" | "scientific"
            | "redhat" | "cloudlinux" | "eurolinux" => Family::Rhel,
            "suse" | "sles" | "sled" | "opensuse" | "sles_sap" => Family::Suse,
            w if w.starts_with("opensuse") => Family::Suse,
            "arch" | "manjaro" | "endeavouros" => Family::Arch,
            "gentoo" => Family::Gentoo,
            "alpine" => Family::Alpine,
            _ => continue,
        };
        return f;
    }
    Family::Unknown
}

/// `Red Hat Enterprise Linux Server release 5.11 (Tikanga)` → (distro, name, version,
/// codename).
fn redhat_release(line: &str) -> (String, String, Option<String>, Option<String>) {
    let line = line.trim();
    let (head, codename) = match (line.rfind('('), line.rfind(')')) {
        (Some(a), Some(b)) if a < b => (
            line.get(..a).unwrap_or(line).trim(),
            line.get(a + 1..b).map(|s| s.trim().to_string()),
        ),
        _ => (line, None),
    };
    let (name, version) = match head.split_once(" release ") {
        Some((n, v)) => (n.trim().to_string(), Some(v.trim().to_string())),
        None => (head.to_string(), None),
    };
    let lower = name.to_ascii_lowercase();
    let distro = if lower.contains("red hat") {
        "rhel"
    } else if lower.contains("centos") {
        "centos"
    } else if lower.contains("fedora") {
        "fedora"
    } else if lower.contains("rocky") {
        "rocky"
    } else if lower.contains("alma") {
        "almalinux"
    } else if lower.contains("oracle") || lower.contains("enterprise linux") {
        "ol"
    } else if lower.contains("scientific") {
        "scientific"
    } else {
        "redhat"
    };
    (distro.to_string(), name, version, codename)
}

/// `SUSE Linux Enterprise Server 10 (x86_64)` / `VERSION = 10` / `PATCHLEVEL = 4`.
fn suse_release(text: &str) -> (String, String, Option<String>, Option<String>) {
    let mut lines = text.lines();
    let title = lines.next().unwrap_or("").trim();
    let (name, arch) = match (title.rfind('('), title.rfind(')')) {
        (Some(a), Some(b)) if a < b => (
            title.get(..a).unwrap_or(title).trim().to_string(),
            title.get(a + 1..b).map(|s| s.trim().to_string()),
        ),
        _ => (title.to_string(), None),
    };
    let mut version = None;
    let mut patch = None;
    for l in lines {
        if let Some((k, v)) = l.split_once('=') {
            match k.trim() {
                "VERSION" => version = Some(v.trim().to_string()),
                "PATCHLEVEL" => patch = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let version = match (version, patch) {
        (Some(v), Some(p)) if p != "0" && !v.contains('.') => Some(format!("{v}.{p}")),
        (v, _) => v,
    };
    let lower = name.to_ascii_lowercase();
    let distro = if lower.contains("enterprise server") {
        "sles"
    } else if lower.contains("enterprise desktop") {
        "sled"
    } else {
        "opensuse"
    };
    (distro.to_string(), name, version, arch)
}

/// The machine an ELF header is for.
pub fn elf_arch(b: &[u8]) -> Option<&'static str> {
    if b.get(..4)? != b"\x7fELF" {
        return None;
    }
    let class = *b.get(4)?;
    let little = *b.get(5)? == 1;
    let m = b.get(18..20)?;
    let machine = if little {
        u16::from_le_bytes([m[0], m[1]])
    } else {
        u16::from_be_bytes([m[0], m[1]])
    };
    Some(match (machine, class) {
        (3, _) => "i386",
        (62, _) => "x86_64",
        (183, _) => "aarch64",
        (40, _) => "arm",
        (21, _) => "ppc64",
        (20, _) => "ppc",
        (22, 2) => "s390x",
        (22, _) => "s390",
        (243, 2) => "riscv64",
        (8, _) => "mips",
        (258, _) => "loongarch64",
        _ => return None,
    })
}

/// The architecture of a kernel image: x86 bzImage (`HdrS`, with the 64-bit flag), arm64
/// `Image` (`ARM\x64`), or an ELF vmlinux.
pub fn kernel_arch(b: &[u8]) -> Option<&'static str> {
    if let Some(a) = elf_arch(b) {
        return Some(a);
    }
    if b.get(0x202..0x206) == Some(b"HdrS") {
        let proto = b
            .get(0x206..0x208)
            .map(|v| u16::from_le_bytes([v[0], v[1]]))
            .unwrap_or(0);
        let xload = b.get(0x236).copied().unwrap_or(0);
        return Some(if proto >= 0x20c && xload & 1 == 1 {
            "x86_64"
        } else if proto >= 0x20c {
            "i386"
        } else {
            "x86"
        });
    }
    if b.get(0x38..0x3c) == Some(b"ARM\x64") {
        return Some("aarch64");
    }
    None
}

/// Architecture words in kernel versions and release titles.
pub fn arch_from_name(s: &str) -> Option<&'static str> {
    let s = s.to_ascii_lowercase();
    for (w, a) in [
        ("x86_64", "x86_64"),
        ("amd64", "x86_64"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
        ("i686", "i386"),
        ("i586", "i386"),
        ("i386", "i386"),
        ("ppc64le", "ppc64le"),
        ("s390x", "s390x"),
    ] {
        if s.contains(w) {
            return Some(a);
        }
    }
    None
}

pub fn detect(guest: &dyn GuestFiles, kernel_images: &[String]) -> OsInfo {
    let mut os = OsInfo::default();
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(t) = guest.read_text(path) {
            let v = kv(&t);
            os.distro = get(&v, "ID").map(|s| s.to_ascii_lowercase());
            os.name = get(&v, "NAME");
            os.version = get(&v, "VERSION_ID");
            os.codename = get(&v, "VERSION_CODENAME");
            os.pretty_name = get(&v, "PRETTY_NAME");
            os.family = family_of(
                os.distro.as_deref().unwrap_or(""),
                &get(&v, "ID_LIKE").unwrap_or_default(),
            );
            os.sources.push(path.to_string());
            break;
        }
    }
    if let Some(t) = guest.read_text("/etc/lsb-release") {
        let v = kv(&t);
        os.sources.push("/etc/lsb-release".into());
        let id = get(&v, "DISTRIB_ID").map(|s| s.to_ascii_lowercase());
        if os.distro.is_none() {
            os.family = family_of(id.as_deref().unwrap_or(""), "");
            os.distro = id;
        }
        os.version = os.version.take().or(get(&v, "DISTRIB_RELEASE"));
        os.codename = os.codename.take().or(get(&v, "DISTRIB_CODENAME"));
        os.pretty_name = os.pretty_name.take().or(get(&v, "DISTRIB_DESCRIPTION"));
    }
    let mut release_arch = None;
    for path in [
        "/etc/redhat-release",
        "/etc/centos-release",
        "/etc/SuSE-release",
    ] {
        let Some(t) = guest.read_text(path) else {
            continue;
        };
        os.sources.push(path.to_string());
        let (distro, name, version, extra) = if path.contains("SuSE") {
            let r = suse_release(&t);
            release_arch = r.3.clone();
            (r.0, r.1, r.2, None)
        } else {
            redhat_release(t.lines().next().unwrap_or(""))
        };
        if os.distro.is_none() {
            os.family = family_of(&distro, "");
            os.distro = Some(distro);
            os.name = Some(name.clone());
            os.pretty_name = Some(t.lines().next().unwrap_or("").trim().to_string());
        }
        // The release file's version is more precise than os-release's on RHEL 7
        // ("7.9.2009" against "7").
        if let Some(v) = version {
            if os.version.as_deref().is_none_or(|o| v.starts_with(o)) {
                os.version = Some(v);
            }
        }
        os.codename = os.codename.take().or(extra);
        break;
    }
    if let Some(t) = guest.read_text("/etc/debian_version") {
        os.sources.push("/etc/debian_version".into());
        if os.distro.is_none() {
            os.distro = Some("debian".into());
            os.family = Family::Debian;
            os.name = Some("Debian GNU/Linux".into());
            let v = t.trim().to_string();
            if v.starts_with(|c: char| c.is_ascii_digit()) {
                os.version = Some(v);
            } else {
                os.codename = Some(v);
            }
        }
    }
    for path in [
        "/etc/arch-release",
        "/etc/gentoo-release",
        "/etc/alpine-release",
    ] {
        if os.distro.is_none() && guest.exists(path) {
            os.sources.push(path.to_string());
            let d = path
                .trim_start_matches("/etc/")
                .trim_end_matches("-release");
            os.distro = Some(d.to_string());
            os.family = family_of(d, "");
            if d == "alpine" {
                os.version = guest.read_text(path).map(|t| t.trim().to_string());
            }
        }
    }
    for path in [
        "/bin/sh",
        "/usr/bin/env",
        "/bin/bash",
        "/bin/ls",
        "/usr/bin/ls",
    ] {
        if let Some(a) = guest
            .read(path, 16 << 20)
            .ok()
            .as_deref()
            .and_then(elf_arch)
        {
            os.arch = Some(a.to_string());
            os.arch_source = Some(path.to_string());
            break;
        }
    }
    if os.arch.is_none() {
        for k in kernel_images {
            if let Some(a) = guest
                .read(k, 128 << 20)
                .ok()
                .as_deref()
                .and_then(kernel_arch)
            {
                os.arch = Some(a.to_string());
                os.arch_source = Some(k.clone());
                break;
            }
        }
    }
    if os.arch.is_none() {
        let from_names = kernel_images
            .iter()
            .map(String::as_str)
            .chain(release_arch.as_deref())
            .find_map(arch_from_name);
        if let Some(a) = from_names {
            os.arch = Some(a.to_string());
            os.arch_source = Some("names (kernel versions, release file)".into());
        }
    }
    os
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_files::MemGuest;

    fn elf64_x86() -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18] = 62;
        b
    }

    #[test]
    fn debian() {
        let g = MemGuest::new()
            .file(
                "/etc/os-release",
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n",
            )
            .file("/etc/debian_version", "12.5\n")
            .file("/bin/dash", elf64_x86())
            .link("/bin/sh", "dash");
        let os = detect(&g, &[]);
        assert_eq!(os.distro.as_deref(), Some("debian"));
        assert_eq!(os.version.as_deref(), Some("12"));
        assert_eq!(os.family, Family::Debian);
        assert_eq!(os.codename.as_deref(), Some("bookworm"));
        assert_eq!(os.arch.as_deref(), Some("x86_64"));
        assert_eq!(os.sources, ["/etc/os-release", "/etc/debian_version"]);
    }

    #[test]
    fn rhel5_and_7() {
        let g = MemGuest::new().file(
            "/etc/redhat-release",
            "Red Hat Enterprise Linux Server release 5.11 (Tikanga)\n",
        );
        let os = detect(&g, &["/boot/vmlinuz-2.6.18-398.el5".into()]);
        assert_eq!(os.distro.as_deref(), Some("rhel"));
        assert_eq!(os.version.as_deref(), Some("5.11"));
        assert_eq!(os.codename.as_deref(), Some("Tikanga"));
        assert_eq!(os.family, Family::Rhel);
        let g = MemGuest::new()
            .file(
                "/etc/os-release",
                "ID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\n",
            )
            .file(
                "/etc/redhat-release",
                "CentOS Linux release 7.9.2009 (Core)\n",
            );
        let os = detect(&g, &["/boot/vmlinuz-3.10.0-1160.el7.x86_64".into()]);
        assert_eq!(os.version.as_deref(), Some("7.9.2009"));
        assert_eq!(os.family, Family::Rhel);
        assert_eq!(os.arch.as_deref(), Some("x86_64"));
    }

    #[test]
    fn sles10() {
        let g = MemGuest::new().file(
            "/etc/SuSE-release",
            "SUSE Linux Enterprise Server 10 (x86_64)\nVERSION = 10\nPATCHLEVEL = 4\n",
        );
        let os = detect(&g, &[]);
        assert_eq!(os.distro.as_deref(), Some("sles"));
        assert_eq!(os.version.as_deref(), Some("10.4"));
        assert_eq!(os.family, Family::Suse);
        assert_eq!(os.arch.as_deref(), Some("x86_64"));
    }

    #[test]
    fn kernel_headers() {
        let mut bz = vec![0u8; 0x240];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206] = 0x0f;
        bz[0x207] = 0x02;
        bz[0x236] = 1;
        assert_eq!(kernel_arch(&bz), Some("x86_64"));
        assert_eq!(kernel_arch(&[0u8; 10]), None);
        assert_eq!(elf_arch(b"\x7fELF"), None);
    }
}
