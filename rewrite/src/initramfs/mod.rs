//! Initramfs images: read, rewrite and write them as the kernel unpacks them, and add the
//! target's disk and network drivers from the guest's own modules.
//!
//! An initramfs is one or more segments (see [`archive`]): an uncompressed early cpio
//! archive (CPU microcode) is often first, then the main archive compressed with gzip,
//! xz, zstd, lz4, lzma or bzip2. Only segments whose members change are rebuilt; every
//! other byte is written back as it was read, and a rebuilt segment keeps its compressor.
//!
//! - [`newc`]: the cpio newc/crc format;
//! - [`compression`]: detection, decoding (bounded), encoding in kernel-readable forms;
//! - [`archive`]: the segments of a file;
//! - [`modules_dep`]: modules.dep / .alias / .symbols / .builtin / .softdep text files;
//! - [`kmod_index`]: the binary indexes libkmod reads (modules.dep.bin ...);
//! - [`inject`]: adding missing drivers with their dependencies and naming them for
//!   early load;
//! - [`generator`]: the generators' own configuration, so a rebuild in the guest keeps
//!   the drivers.

pub mod archive;
pub mod compression;
pub mod generator;
pub mod inject;
pub mod kmod_index;
pub mod modules_dep;
pub mod newc;

pub use self::Snapshot as InitramfsSnapshot;
pub use compression::{detect_compression, Compression, EncodeOptions};
pub use generator::{dracut_conf, patch_initramfs_tools_modules};
pub use inject::{AddedModule, InjectReport};
pub use newc::Member;

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Decompressed bytes an initramfs may hold unless the caller says otherwise.
pub const DEFAULT_LIMIT: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The bytes are wrong: which structure, where (offset in the file, or in the
    /// decompressed segment when `segment` says so).
    #[error("initramfs corrupt: {structure} at offset {offset:#x}{}: {detail}",
            segment.as_ref().map(|s| format!(" of {s}")).unwrap_or_default())]
    Corrupt {
        structure: &'static str,
        offset: u64,
        segment: Option<String>,
        detail: String,
    },
    #[error("initramfs: unsupported: {0}")]
    Unsupported(String),
    #[error("initramfs: refused: {0}")]
    Refused(String),
    #[error("initramfs: {0}")]
    Io(#[from] std::io::Error),
}

impl InitramfsError {
    pub(crate) fn corrupt(structure: &'static str, offset: u64, detail: impl Into<String>) -> Self {
        InitramfsError::Corrupt {
            structure,
            offset,
            segment: None,
            detail: detail.into(),
        }
    }

    /// Says that the offset is inside the decompressed segment at `at`.
    pub(crate) fn in_segment(self, kind: Compression, at: u64) -> Self {
        match self {
            InitramfsError::Corrupt {
                structure,
                offset,
                segment: None,
                detail,
            } => InitramfsError::Corrupt {
                structure,
                offset,
                segment: Some(format!("the {} segment at {at:#x}", kind.name())),
                detail,
            },
            e => e,
        }
    }
}

/// One segment, as `segments()` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentInfo {
    pub compression: Compression,
    /// Offset in the file it was read from.
    pub offset: u64,
    /// Bytes it took in that file (with the zero padding after it).
    pub stored_len: u64,
    pub archives: usize,
    pub members: usize,
    pub changed: bool,
}

/// What `diff()` reports for one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberChange {
    pub name: String,
    pub kind: ChangeKind,
    pub before_size: Option<u64>,
    pub after_size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ChangeKind {
    Added,
    Changed,
    Removed,
}

/// `f(name, data)` of [`Initramfs::rewrite_members`]: new data for a member, or None.
pub type MemberRewriter<'a> = dyn FnMut(&str, &[u8]) -> Option<Vec<u8>> + 'a;

/// A parsed initramfs.
#[derive(Debug, Clone)]
pub struct Initramfs {
    layout: archive::Layout,
    encode: EncodeOptions,
}

impl Initramfs {
    /// Parses a whole initramfs file, decompressing at most [`DEFAULT_LIMIT`] bytes.
    pub fn parse(data: &[u8]) -> Result<Initramfs, InitramfsError> {
        Self::parse_with_limit(data, DEFAULT_LIMIT)
    }

    pub fn parse_with_limit(data: &[u8], limit: u64) -> Result<Initramfs, InitramfsError> {
        Ok(Initramfs {
            layout: archive::split(data, limit)?,
            encode: EncodeOptions::default(),
        })
    }

    /// Compression level and threads used when a changed segment is recompressed.
    pub fn set_encode_options(&mut self, opts: EncodeOptions) {
        self.encode = opts;
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.layout
            .segments
            .iter()
            .map(|s| SegmentInfo {
                compression: s.compression,
                offset: s.offset,
                stored_len: s.original.len() as u64,
                archives: s.archives.len(),
                members: s.member_count(),
                changed: s.changed,
            })
            .collect()
    }

    /// Bytes after the last segment that are no segment (kept as they are).
    pub fn tail(&self) -> &[u8] {
        &self.layout.tail
    }

    /// Every member of every segment, in file order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.layout
            .segments
            .iter()
            .flat_map(|s| s.archives.iter())
            .flat_map(|a| a.members.iter())
    }

    pub fn member_names(&self) -> Vec<String> {
        self.members().map(|m| m.name.clone()).collect()
    }

    /// The member a path resolves to in the unpacked rootfs: the last one of that path
    /// (later entries overwrite earlier ones).
    pub fn find(&self, path: &str) -> Option<&Member> {
        let path = newc::normalize_name(path);
        self.members().filter(|m| m.path() == path).last()
    }

    /// A regular file's content, hard links resolved (the data sits on one entry of a
    /// link group).
    pub fn file_data(&self, path: &str) -> Option<&[u8]> {
        let path = newc::normalize_name(path);
        for s in self.layout.segments.iter().rev() {
            for a in s.archives.iter().rev() {
                if let Some(i) = a.members.iter().rposition(|m| m.path() == path) {
                    let m = &a.members[i];
                    if !m.is_file() {
                        return None;
                    }
                    return Some(link_data(&a.members, i));
                }
            }
        }
        None
    }

    /// Names of the kernel modules inside, normalized as kmod does ("-" as "_"):
    /// "virtio_blk" for ".../virtio_blk.ko.xz".
    pub fn module_names(&self) -> Vec<String> {
        let mut v: BTreeSet<String> = BTreeSet::new();
        for m in self.members() {
            if let Some(n) = modules_dep::module_name_of_path(m.path()) {
                v.insert(n);
            }
        }
        v.into_iter().collect()
    }

    /// Kernel versions with a modules directory inside (lib/modules/KVER or
    /// usr/lib/modules/KVER).
    pub fn kernel_versions(&self) -> Vec<String> {
        let mut v = BTreeSet::new();
        for m in self.members() {
            let p = m.path();
            let rest = p
                .strip_prefix("usr/lib/modules/")
                .or_else(|| p.strip_prefix("lib/modules/"));
            if let Some(k) = rest.and_then(|r| r.split('/').next()) {
                if !k.is_empty() {
                    v.insert(k.to_string());
                }
            }
        }
        v.into_iter().collect()
    }

    /// Which tool made the image, from its layout.
    pub fn generator(&self) -> Generator {
        generator::detect(self.members().map(|m| m.path()))
    }

    /// Changes regular-file members in place: `f(name, data)` returns new data for the
    /// members to change. A rebuilt segment is marked changed; returns the names changed.
    pub fn rewrite_members(&mut self, f: &mut MemberRewriter<'_>) -> Vec<String> {
        let mut changed = Vec::new();
        for s in &mut self.layout.segments {
            for a in &mut s.archives {
                let groups = newc::link_groups(&a.members);
                for i in 0..a.members.len() {
                    if !a.members[i].is_file() {
                        continue;
                    }
                    let holder = groups
                        .iter()
                        .find(|g| g.contains(&i))
                        .and_then(|g| g.iter().copied().find(|&j| !a.members[j].data.is_empty()))
                        .unwrap_or(i);
                    let Some(new) = f(&a.members[i].name, &a.members[holder].data) else {
                        continue;
                    };
                    if new != a.members[holder].data {
                        a.members[holder].data = new;
                        s.changed = true;
                        changed.push(a.members[i].name.clone());
                    }
                }
            }
        }
        changed
    }

    /// Drops the regular-file members `drop(name)` selects (not ones sharing their data
    /// through hard links); a rebuilt segment is marked changed; returns the names dropped.
    pub fn remove_members(&mut self, drop: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut removed = Vec::new();
        for s in &mut self.layout.segments {
            for a in &mut s.archives {
                let groups = newc::link_groups(&a.members);
                let linked = |i: usize| groups.iter().any(|g| g.len() > 1 && g.contains(&i));
                let doomed: Vec<usize> = (0..a.members.len())
                    .filter(|&i| a.members[i].is_file() && !linked(i))
                    .filter(|&i| drop(&a.members[i].name))
                    .collect();
                for &i in doomed.iter().rev() {
                    removed.push(a.members.remove(i).name);
                    s.changed = true;
                }
            }
        }
        removed.reverse();
        removed
    }

    /// Adds the modules `wanted` with their dependencies from the guest's
    /// /lib/modules/KVER, updates the index files inside, and names them for early load.
    /// See [`inject`].
    pub fn inject_modules(
        &mut self,
        guest: &dyn crate::GuestFiles,
        kver: &str,
        wanted: &[&str],
    ) -> Result<InjectReport, InitramfsError> {
        inject::inject(self, guest, kver, wanted)
    }

    /// Serialises the image.
    pub fn to_bytes(&self) -> Result<Vec<u8>, InitramfsError> {
        archive::join(&self.layout, &self.encode)
    }

    /// Paths added, changed or removed against `before` (by the content each path ends
    /// up with in the unpacked rootfs).
    pub fn diff(&self, before: &Initramfs) -> Vec<MemberChange> {
        self.diff_snapshot(&before.snapshot())
    }

    /// What [`Initramfs::diff`] needs of an image, without its contents: a rewrite keeps
    /// this instead of a whole second copy of a 100 MiB unpacked archive.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(
            self.effective()
                .into_iter()
                .map(|(k, (mode, size, data))| (k, (mode, size, crc32c::crc32c(data))))
                .collect(),
        )
    }

    /// Paths added, changed or removed against a [`Snapshot`] taken before.
    pub fn diff_snapshot(&self, before: &Snapshot) -> Vec<MemberChange> {
        let a = &before.0;
        let b = self.snapshot().0;
        let mut out = Vec::new();
        for (name, old) in a {
            match b.get(name) {
                None => out.push(MemberChange {
                    name: name.clone(),
                    kind: ChangeKind::Removed,
                    before_size: Some(old.1),
                    after_size: None,
                }),
                Some(new) if new != old => out.push(MemberChange {
                    name: name.clone(),
                    kind: ChangeKind::Changed,
                    before_size: Some(old.1),
                    after_size: Some(new.1),
                }),
                Some(_) => {}
            }
        }
        for (name, new) in &b {
            if !a.contains_key(name) {
                out.push(MemberChange {
                    name: name.clone(),
                    kind: ChangeKind::Added,
                    before_size: None,
                    after_size: Some(new.1),
                });
            }
        }
        out.sort_by(|x, y| x.name.cmp(&y.name));
        out
    }

    /// path -> (mode, size, content) of the last entry of each path.
    fn effective(&self) -> BTreeMap<String, (u32, u64, &[u8])> {
        let mut m = BTreeMap::new();
        for s in &self.layout.segments {
            for a in &s.archives {
                for (i, mem) in a.members.iter().enumerate() {
                    let data = if mem.is_file() {
                        link_data(&a.members, i)
                    } else {
                        &mem.data[..]
                    };
                    m.insert(mem.path().to_string(), (mem.mode, data.len() as u64, data));
                }
            }
        }
        m
    }
}

/// Each path's mode, size and crc32c, as the unpacked rootfs would have them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<String, (u32, u64, u32)>);

/// The data of member `i`, looking through its hard-link group.
fn link_data(members: &[Member], i: usize) -> &[u8] {
    let m = &members[i];
    if m.nlink > 1 && m.data.is_empty() {
        if let Some(h) = members.iter().find(|o| {
            o.ino == m.ino
                && o.dev_major == m.dev_major
                && o.dev_minor == m.dev_minor
                && o.nlink > 1
                && o.is_file()
                && !o.data.is_empty()
        }) {
            return &h.data;
        }
    }
    &m.data
}

/// Which tool built an initramfs (or, in inspection, which one the guest has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Generator {
    InitramfsTools,
    Dracut,
    /// SUSE's (SLES <= 11) or RHEL 5's mkinitrd, not the dracut wrapper of that name.
    Mkinitrd,
    /// Arch's mkinitcpio (recognised by inspection; images are not rewritten).
    Mkinitcpio,
    Unknown,
}
