//! Read access to a guest's tree, as inspection and the initramfs builder need it, behind a
//! small trait so both run on the real guest ([`GuestTree`]) and, in unit tests, on an
//! in-memory tree of sample files ([`MemGuest`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use transplant_fs::{FileKind, GuestTree, NewNode, SetAttrs};

/// Paths are absolute guest paths; symlinks are followed inside the guest.
pub trait GuestFiles {
    /// The whole file, if it exists and is at most `max` bytes (larger: an error).
    fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, String>;
    /// Kind of `path` (following symlinks), or None if it does not exist.
    fn kind(&self, path: &str) -> Option<FileKind>;
    /// Names in a directory (not `.`/`..`), sorted; empty if it is not a directory.
    fn list(&self, dir: &str) -> Vec<String>;
    /// The target of a symlink (not followed), if `path` is one.
    fn read_link(&self, path: &str) -> Option<String>;
    /// Size in bytes of a file (following symlinks).
    fn size(&self, path: &str) -> Option<u64>;

    fn exists(&self, path: &str) -> bool {
        self.kind(path).is_some()
    }

    /// A text file, decoded lossily; None if missing.
    fn read_text(&self, path: &str) -> Option<String> {
        self.read(path, 16 << 20)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

impl GuestFiles for GuestTree {
    fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, String> {
        let m = self
            .stat(path.as_bytes(), true)
            .map_err(|e| e.to_string())?;
        if m.size > max {
            return Err(format!("{path}: {} bytes, more than {max}", m.size));
        }
        self.read_file(path.as_bytes(), max)
            .map_err(|e| e.to_string())
    }

    fn kind(&self, path: &str) -> Option<FileKind> {
        self.stat(path.as_bytes(), true).ok().map(|m| m.kind)
    }

    fn list(&self, dir: &str) -> Vec<String> {
        self.read_dir(dir.as_bytes())
            .map(|v| {
                v.into_iter()
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn read_link(&self, path: &str) -> Option<String> {
        let m = self.stat(path.as_bytes(), false).ok()?;
        if m.kind != FileKind::Symlink {
            return None;
        }
        GuestTree::read_link(self, path.as_bytes())
            .ok()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
    }

    fn size(&self, path: &str) -> Option<u64> {
        self.stat(path.as_bytes(), true).ok().map(|m| m.size)
    }
}

/// Write access, for applying a plan. Paths are absolute guest paths; the parent
/// directory of a new file must exist (see [`GuestFilesMut::mkdir_p`]).
pub trait GuestFilesMut: GuestFiles {
    /// Replaces the content of a file, keeping its inode, owner, mode and labels; creates
    /// it (mode 0644, root) if it does not exist.
    fn write(&self, path: &str, data: &[u8]) -> Result<(), String>;
    /// Unlinks a file or symlink (not following it).
    fn remove(&self, path: &str) -> Result<(), String>;
    /// Renames, replacing `to` atomically.
    fn rename(&self, from: &str, to: &str) -> Result<(), String>;
    /// Creates a directory and its missing parents (mode 0755, root).
    fn mkdir_p(&self, path: &str) -> Result<(), String>;
}

#[derive(Debug, Clone, Default)]
struct MemState {
    files: BTreeMap<String, Vec<u8>>,
    links: BTreeMap<String, String>,
    dirs: std::collections::BTreeSet<String>,
}

impl GuestFilesMut for GuestTree {
    fn write(&self, path: &str, data: &[u8]) -> Result<(), String> {
        let p = path.as_bytes();
        match self.stat(p, true) {
            Ok(m) if m.kind == FileKind::File => self.write_file(p, data),
            Ok(m) => return Err(format!("{path}: is a {:?}, not a file", m.kind)),
            Err(transplant_fs::Error::NotFound(_)) => {
                self.create(p, NewNode::File(data), &SetAttrs::default())
            }
            Err(e) => return Err(e.to_string()),
        }
        .map_err(|e| e.to_string())
    }

    fn remove(&self, path: &str) -> Result<(), String> {
        GuestTree::remove(self, path.as_bytes()).map_err(|e| e.to_string())
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), String> {
        GuestTree::rename(self, from.as_bytes(), to.as_bytes()).map_err(|e| e.to_string())
    }

    fn mkdir_p(&self, path: &str) -> Result<(), String> {
        let mut cur = String::new();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            cur.push('/');
            cur.push_str(c);
            match self.stat(cur.as_bytes(), true) {
                Ok(m) if m.kind == FileKind::Dir => continue,
                Ok(_) => return Err(format!("{cur}: not a directory")),
                Err(transplant_fs::Error::NotFound(_)) => self
                    .create(cur.as_bytes(), NewNode::Dir, &SetAttrs::default())
                    .map_err(|e| e.to_string())?,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

/// An in-memory guest for tests: files, directories (implied by paths or made with
/// `mkdir_p`) and symlinks.
#[derive(Debug, Default)]
pub struct MemGuest {
    st: Mutex<MemState>,
}

impl Clone for MemGuest {
    fn clone(&self) -> Self {
        MemGuest {
            st: Mutex::new(self.state().clone()),
        }
    }
}

impl MemGuest {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn file(self, path: &str, data: impl AsRef<[u8]>) -> Self {
        self.state()
            .files
            .insert(path.to_string(), data.as_ref().to_vec());
        self
    }

    pub fn link(self, path: &str, target: &str) -> Self {
        self.state()
            .links
            .insert(path.to_string(), target.to_string());
        self
    }

    /// Every regular file's path, sorted (for tests comparing whole trees).
    pub fn paths(&self) -> Vec<String> {
        self.state().files.keys().cloned().collect()
    }

    /// Removes a file or symlink (tests that apply a plan to a guest).
    pub fn without(self, path: &str) -> Self {
        {
            let mut st = self.state();
            st.files.remove(path);
            st.links.remove(path);
        }
        self
    }

    /// Follows symlinks (absolute targets from the root, relative ones from the link's
    /// folder), up to 40.
    fn resolve(&self, path: &str) -> String {
        let st = self.state();
        let mut p = path.to_string();
        for _ in 0..40 {
            let Some(t) = st.links.get(&p) else {
                return p;
            };
            p = if t.starts_with('/') {
                t.clone()
            } else {
                let dir = p.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                normalize(&format!("{dir}/{t}"))
            };
        }
        p
    }
}

fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

impl GuestFiles for MemGuest {
    fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, String> {
        let p = self.resolve(path);
        match self.state().files.get(&p) {
            Some(d) if d.len() as u64 > max => Err(format!("{path}: too large")),
            Some(d) => Ok(d.clone()),
            None => Err(format!("{path}: no such file")),
        }
    }

    fn kind(&self, path: &str) -> Option<FileKind> {
        let p = self.resolve(path);
        let st = self.state();
        if st.files.contains_key(&p) {
            return Some(FileKind::File);
        }
        if st.links.contains_key(&p) {
            // A dangling link.
            return None;
        }
        let prefix = if p == "/" {
            "/".to_string()
        } else {
            format!("{p}/")
        };
        let is_dir = st.dirs.contains(&p)
            || st
                .files
                .keys()
                .chain(st.links.keys())
                .chain(st.dirs.iter())
                .any(|k| k.starts_with(&prefix));
        is_dir.then_some(FileKind::Dir)
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let p = self.resolve(dir);
        let prefix = if p == "/" {
            "/".to_string()
        } else {
            format!("{p}/")
        };
        let st = self.state();
        let mut names: Vec<String> = st
            .files
            .keys()
            .chain(st.links.keys())
            .chain(st.dirs.iter())
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn read_link(&self, path: &str) -> Option<String> {
        self.state().links.get(path).cloned()
    }

    fn size(&self, path: &str) -> Option<u64> {
        let p = self.resolve(path);
        self.state().files.get(&p).map(|d| d.len() as u64)
    }
}

impl GuestFilesMut for MemGuest {
    fn write(&self, path: &str, data: &[u8]) -> Result<(), String> {
        let p = self.resolve(path);
        let parent = p.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        if !parent.is_empty() && self.kind(parent) != Some(FileKind::Dir) {
            return Err(format!("{path}: parent directory missing"));
        }
        self.state().files.insert(p, data.to_vec());
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), String> {
        let mut st = self.state();
        if st.links.remove(path).is_some() || st.files.remove(path).is_some() {
            Ok(())
        } else {
            Err(format!("{path}: no such file"))
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), String> {
        let mut st = self.state();
        if let Some(d) = st.files.remove(from) {
            st.links.remove(to);
            st.files.insert(to.to_string(), d);
            Ok(())
        } else if let Some(l) = st.links.remove(from) {
            st.files.remove(to);
            st.links.insert(to.to_string(), l);
            Ok(())
        } else {
            Err(format!("{from}: no such file"))
        }
    }

    fn mkdir_p(&self, path: &str) -> Result<(), String> {
        let mut st = self.state();
        let mut cur = String::new();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            cur.push('/');
            cur.push_str(c);
            if st.files.contains_key(&cur) {
                return Err(format!("{cur}: not a directory"));
            }
            st.dirs.insert(cur.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_guest() {
        let g = MemGuest::new()
            .file("/boot/vmlinuz-6.1.0-18-amd64", b"k")
            .link("/vmlinuz", "boot/vmlinuz-6.1.0-18-amd64")
            .file("/etc/fstab", "x\n");
        assert_eq!(g.read("/vmlinuz", 10).unwrap(), b"k");
        assert_eq!(g.kind("/boot"), Some(FileKind::Dir));
        assert_eq!(g.list("/"), ["boot", "etc", "vmlinuz"]);
        assert_eq!(g.read_text("/etc/fstab").as_deref(), Some("x\n"));
        assert!(g.read("/nope", 10).is_err());
        g.mkdir_p("/etc/dracut.conf.d").unwrap();
        assert_eq!(g.kind("/etc/dracut.conf.d"), Some(FileKind::Dir));
        g.write("/etc/dracut.conf.d/x.conf", b"y").unwrap();
        assert!(g.write("/no/dir/f", b"y").is_err());
        g.rename("/etc/fstab", "/etc/fstab.old").unwrap();
        assert!(!g.exists("/etc/fstab"));
        g.remove("/vmlinuz").unwrap();
        assert_eq!(g.read_link("/vmlinuz"), None);
    }
}
