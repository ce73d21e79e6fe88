//! Is a host block device free to be overwritten? Writing a disk image onto a device that
//! holds a mounted filesystem, an active swap area or a physical volume under LVM/dm
//! would destroy a running system, so every such use is looked for, by device number,
//! on the device itself and on each of its partitions: mounts (`/proc/self/mountinfo`,
//! by device number and by source path, since btrfs reports an anonymous device
//! number), swap (`/proc/swaps`), and kernel holders (`/sys/dev/block/M:m/holders`:
//! device-mapper, md, bcache). Writers also open the device `O_EXCL`, which the kernel
//! refuses while anything holds it; these checks exist to say *what* holds it.

use crate::error::{Error, Result};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Whether `path` is a block device (following symlinks such as /dev/disk/by-id/...).
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

fn devnum_of(path: &Path) -> Option<u64> {
    let m = std::fs::metadata(path).ok()?;
    m.file_type().is_block_device().then(|| m.rdev())
}

fn split(dev: u64) -> (u32, u32) {
    (
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t),
    )
}

/// The device and its partitions: (kernel name, device number).
fn family(dev: u64) -> Vec<(String, u64)> {
    let (ma, mi) = split(dev);
    let sys = PathBuf::from(format!("/sys/dev/block/{ma}:{mi}"));
    let own = std::fs::canonicalize(&sys)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("{ma}:{mi}"));
    let mut out = vec![(own, dev)];
    if let Ok(rd) = std::fs::read_dir(&sys) {
        for e in rd.flatten() {
            let p = e.path();
            if !p.join("partition").exists() {
                continue;
            }
            let Ok(s) = std::fs::read_to_string(p.join("dev")) else {
                continue;
            };
            let Some((a, b)) = s.trim().split_once(':') else {
                continue;
            };
            if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                out.push((
                    e.file_name().to_string_lossy().into_owned(),
                    libc::makedev(a, b),
                ));
            }
        }
    }
    out
}

/// Undoes the octal escapes of mountinfo and /proc/swaps (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(Ok(v)) = s.get(i + 1..i + 4).map(|d| u8::from_str_radix(d, 8)) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every way `path` (a block device) is in use, as phrases for a message; empty if free.
pub fn uses(path: &Path) -> Vec<String> {
    let Some(dev) = devnum_of(path) else {
        return Vec::new();
    };
    let fam = family(dev);
    let name_of = |d: u64| {
        fam.iter()
            .find(|(_, n)| *n == d)
            .map(|(name, _)| name.clone())
    };
    let mut found = Vec::new();

    if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mi.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let (Some(num), Some(mnt)) = (f.get(2), f.get(4)) else {
                continue;
            };
            let by_num = num
                .split_once(':')
                .and_then(|(a, b)| Some(libc::makedev(a.parse().ok()?, b.parse().ok()?)));
            let source = f
                .iter()
                .position(|&x| x == "-")
                .and_then(|i| f.get(i + 2))
                .map(|s| unescape(s));
            let by_src = source
                .as_deref()
                .filter(|s| s.starts_with('/'))
                .and_then(|s| devnum_of(Path::new(s)));
            let hit = [by_num, by_src].into_iter().flatten().find_map(&name_of);
            if let Some(n) = hit {
                let what = format!("{n} is mounted on {}", unescape(mnt));
                if !found.contains(&what) {
                    found.push(what);
                }
            }
        }
    }

    if let Ok(sw) = std::fs::read_to_string("/proc/swaps") {
        for line in sw.lines().skip(1) {
            let Some(p) = line.split_whitespace().next() else {
                continue;
            };
            if let Some(n) = devnum_of(Path::new(&unescape(p))).and_then(name_of) {
                found.push(format!("{n} is an active swap area"));
            }
        }
    }

    for (n, d) in &fam {
        let (ma, mi) = split(*d);
        let holders = format!("/sys/dev/block/{ma}:{mi}/holders");
        if let Ok(rd) = std::fs::read_dir(holders) {
            let mut hs: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if hs.is_empty() {
                continue;
            }
            hs.sort();
            // dm devices have a friendlier name (the LV's VG-LV).
            let named: Vec<String> = hs
                .iter()
                .map(
                    |h| match std::fs::read_to_string(format!("/sys/block/{h}/dm/name")) {
                        Ok(s) if !s.trim().is_empty() => format!("{h} ({})", s.trim()),
                        _ => h.clone(),
                    },
                )
                .collect();
            found.push(format!(
                "{n} is held by {} (LVM, device-mapper or md)",
                named.join(", ")
            ));
        }
    }
    found
}

/// Refuses a block device that is mounted, swapped on or held, saying by what.
pub fn check_free(path: &Path) -> Result<()> {
    let u = uses(path);
    if u.is_empty() {
        return Ok(());
    }
    Err(Error::refused(
        path.display().to_string(),
        format!(
            "the device is in use: {}; unmount it, swapoff, or deactivate the volumes \
             (vgchange -an) first",
            u.join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_names() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\04"), "/x\\04");
    }

    #[test]
    fn a_regular_file_has_no_uses() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(uses(f.path()).is_empty());
        assert!(!is_block_device(f.path()));
    }
}
