//! FAT12, FAT16 and FAT32, read and write: the EFI system partition of UEFI guests
//! (`/boot/efi`), which the conversion must read (which vendor folder, the fallback
//! loader, grub.cfg stubs) and write (copy the loader to `EFI/BOOT/BOOTX64.EFI`).
//!
//! One module per on-disk structure: [`bpb`] (the boot sector, which decides the FAT type
//! by cluster count), [`table`] (the FAT, held in memory, and cluster chains), [`dirent`]
//! (8.3 entries and DOS times), [`lfn`] (VFAT long names and 8.3 aliases), [`dir`] (a
//! directory's slots), [`fsinfo`], and [`write`] (the writer). Names are looked up as
//! Linux's vfat does: ASCII case does not matter, and the 8.3 alias finds a file too.
//!
//! FAT has no owners, modes or links: everything is uid/gid 0, mode 0755/0644 (0555/0444
//! when read-only), and `read_link` is an error. Parsed directories and file cluster runs
//! are cached behind one lock, which writes also hold (they drop the caches they touch).

mod bpb;
mod bytes;
mod dir;
mod dirent;
mod fsinfo;
mod lfn;
mod table;
mod write;

pub use bpb::FatType;

use crate::error::{Error, Result};
use crate::{show, DirEntry, FileKind, Filesystem, FsInfo, Metadata, NewNode, SetAttrs, Time};
use bpb::{Bpb, BpbError};
use dir::{Dir, Node, Place};
use dirent::{ShortEntry, ATTR_DIRECTORY, ATTR_READ_ONLY};
use fsinfo::FsInfoSector;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use table::{FatTable, Run};
use transplant_formats::BlockDev;

/// The spec's (and Linux's) bound on a directory: 65,536 slots.
const MAX_DIR_BYTES: u64 = 65536 * 32;
/// Bounds of the caches; past them they start over.
const MAX_CACHED_DIRS: usize = 4096;
const MAX_CACHED_CHAINS: usize = 16384;
/// A FAT larger than this is not held in memory (a 2 TiB FAT32 at 32 KiB clusters needs
/// 256 MiB; ESPs need well under 1 MiB).
const MAX_FAT_BYTES: u64 = 512 << 20;

pub(crate) struct State {
    table: FatTable,
    dirs: HashMap<u32, Arc<Dir>>,
    chains: HashMap<u32, Arc<Vec<Run>>>,
    /// Free clusters, counted at open; kept by the writer.
    free: u32,
    next_free: u32,
    fsinfo: Option<FsInfoSector>,
}

pub struct FatFs {
    dev: Arc<dyn BlockDev>,
    bpb: Bpb,
    info: FsInfo,
    state: Mutex<State>,
    rw: bool,
}

/// A file or directory found by path: its entry and the directory holding it (`None`
/// for the root, which has no entry).
#[derive(Clone)]
pub(crate) struct Found {
    node: Node,
    /// The key (first cluster) and contents of the directory holding it.
    parent: Option<(u32, Arc<Dir>)>,
}

fn label_text(l: &[u8; 11]) -> Option<String> {
    let s = dirent::label_string(l);
    (!s.is_empty() && s != "NO NAME").then_some(s)
}

impl FatFs {
    /// Opens the FAT filesystem on `dev` read-only.
    pub fn open(dev: Arc<dyn BlockDev>) -> Result<FatFs> {
        let name = dev.name().to_string();
        let corrupt = |detail: String| Error::Corrupt {
            dev: name.clone(),
            detail: format!("FAT {detail}"),
        };
        if dev.len() < 512 {
            return Err(corrupt(
                "boot sector: the device is shorter than 512 bytes".into(),
            ));
        }
        let mut head = vec![0u8; 512];
        dev.read_at(&mut head, 0)?;
        let bpb = Bpb::parse(&head).map_err(|e| match e {
            BpbError::Corrupt(d) => corrupt(d),
            BpbError::Unsupported(f) => Error::Unsupported {
                dev: name.clone(),
                feature: f,
            },
        })?;
        if dev.len() < bpb.volume_bytes() {
            return Err(corrupt(format!(
                "boot sector: the filesystem spans {} bytes but the device holds {} (truncated image?)",
                bpb.volume_bytes(),
                dev.len()
            )));
        }
        let fat_len = bpb.fat_bytes_used();
        if fat_len > MAX_FAT_BYTES {
            return Err(Error::Unsupported {
                dev: name.clone(),
                feature: format!(
                    "a FAT of {fat_len} bytes (more than {MAX_FAT_BYTES} held in memory)"
                ),
            });
        }
        let mut fat = vec![0u8; fat_len as usize];
        dev.read_at(&mut fat, bpb.fat_copy_offset(bpb.active_fat()))?;
        let table = FatTable::new(&bpb, fat);
        let fsinfo = match bpb.fsinfo_sector {
            Some(s) => {
                let mut sec = vec![0u8; bpb.bytes_per_sector as usize];
                dev.read_at(&mut sec, u64::from(s) * u64::from(bpb.bytes_per_sector))?;
                FsInfoSector::parse(&sec)
            }
            None => None,
        };
        let free = table.count_free();
        let next_free = fsinfo
            .map(|f| f.next_free)
            .filter(|&c| bpb.valid_cluster(c))
            .unwrap_or(2);
        let fs = FatFs {
            info: FsInfo {
                kind: "vfat".into(),
                label: None,
                uuid: bpb
                    .serial
                    .map(|s| format!("{:04X}-{:04X}", s >> 16, s & 0xffff)),
            },
            dev,
            bpb,
            state: Mutex::new(State {
                table,
                dirs: HashMap::new(),
                chains: HashMap::new(),
                free,
                next_free,
                fsinfo,
            }),
            rw: false,
        };
        // As blkid: the root directory's label entry first, the boot sector's after.
        let root = fs.root_dir()?;
        let label = root
            .label
            .as_ref()
            .and_then(label_text)
            .or_else(|| fs.bpb.label.as_ref().and_then(label_text));
        Ok(FatFs {
            info: FsInfo {
                label,
                ..fs.info.clone()
            },
            ..fs
        })
    }

    /// Opens for writing (normally over an `Overlay`), refusing a volume fsck.fat should
    /// see first (marked dirty with FAT copies that differ, or I/O errors recorded) and
    /// FAT32 versions other than 0.0.
    pub fn open_rw(dev: Arc<dyn BlockDev>) -> Result<FatFs> {
        let mut fs = FatFs::open(dev)?;
        write::check_writable(&fs)?;
        fs.rw = true;
        Ok(fs)
    }

    /// FAT12, FAT16 or FAT32, by cluster count.
    pub fn fat_type(&self) -> FatType {
        self.bpb.fat_type
    }

    /// Free clusters and the cluster size in bytes.
    pub fn free_clusters(&self) -> (u32, u32) {
        (self.state().free, self.bpb.cluster_size)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Each cache insert is one call, and writes leave the FAT and caches consistent
        // before they can fail, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn name(&self) -> &str {
        self.dev.name()
    }

    fn corrupt(&self, what: &str, detail: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            dev: self.name().to_string(),
            detail: format!("FAT {what}: {detail}"),
        }
    }

    fn root_key(&self) -> u32 {
        self.bpb.root_cluster
    }

    fn root_dir(&self) -> Result<Arc<Dir>> {
        let mut st = self.state();
        self.dir_locked(&mut st, self.root_key())
    }

    /// The directory whose first cluster is `key` (0: FAT12/16's fixed root).
    fn dir_locked(&self, st: &mut State, key: u32) -> Result<Arc<Dir>> {
        if let Some(d) = st.dirs.get(&key) {
            return Ok(d.clone());
        }
        let fat32 = self.bpb.fat_type == FatType::Fat32;
        let what = || format!("directory at cluster {key}");
        let (place, raw) = if key == 0 && !fat32 {
            let len = u64::from(self.bpb.root_entries) * 32;
            let mut raw = vec![0u8; len as usize];
            self.dev.read_at(&mut raw, self.bpb.root_offset)?;
            (Place::Fixed(self.bpb.root_offset), raw)
        } else {
            let cs = u64::from(self.bpb.cluster_size);
            let limit = MAX_DIR_BYTES.div_ceil(cs);
            let clusters = st
                .table
                .chain_clusters(key, limit + 1)
                .map_err(|e| self.corrupt(&what(), e))?;
            if clusters.len() as u64 > limit {
                return Err(self.corrupt(&what(), "longer than 65,536 entries"));
            }
            let mut raw = vec![0u8; clusters.len() * cs as usize];
            for (c, chunk) in clusters.iter().zip(raw.chunks_exact_mut(cs as usize)) {
                self.dev.read_at(chunk, self.bpb.cluster_offset(*c))?;
            }
            (Place::Chain(clusters), raw)
        };
        let d = Arc::new(Dir::parse(place, raw, fat32));
        if st.dirs.len() >= MAX_CACHED_DIRS {
            st.dirs.clear();
        }
        st.dirs.insert(key, d.clone());
        Ok(d)
    }

    /// The directory key of a directory entry, which must name a cluster.
    fn dir_key(&self, n: &Node) -> Result<u32> {
        let c = n.entry.cluster;
        if c == 0 && n.first_slot == u32::MAX {
            return Ok(self.root_key());
        }
        if !self.bpb.valid_cluster(c) {
            return Err(self.corrupt(
                &format!("directory {}", show(&n.name)),
                format!("first cluster {c} is outside the volume"),
            ));
        }
        Ok(c)
    }

    fn root_node(&self) -> Node {
        Node {
            name: b"/".to_vec(),
            short_name: Vec::new(),
            entry: ShortEntry {
                name: *b"           ",
                attr: ATTR_DIRECTORY,
                ntres: 0,
                crt_tenth: 0,
                crt_time: 0,
                crt_date: 0,
                acc_date: 0,
                cluster: self.root_key(),
                wrt_time: 0,
                wrt_date: 0,
                size: 0,
            },
            first_slot: u32::MAX,
            slot: u32::MAX,
        }
    }

    fn lookup_locked(&self, st: &mut State, path: &[u8]) -> Result<Found> {
        let mut cur = Found {
            node: self.root_node(),
            parent: None,
        };
        let mut done = 0;
        for comp in path.split(|&c| c == b'/') {
            done += comp.len() + 1;
            if comp.is_empty() || comp == b"." {
                continue;
            }
            if !cur.node.entry.is_dir() {
                let upto = path
                    .get(..done.saturating_sub(comp.len() + 2))
                    .unwrap_or(b"/");
                return Err(Error::NotADirectory(show(upto)));
            }
            let key = self.dir_key(&cur.node)?;
            let d = self.dir_locked(st, key)?;
            let Some(n) = d.find(comp).cloned() else {
                return Err(Error::NotFound(show(path)));
            };
            cur = Found {
                node: n,
                parent: Some((key, d)),
            };
        }
        Ok(cur)
    }

    fn lookup(&self, path: &[u8]) -> Result<Found> {
        let mut st = self.state();
        self.lookup_locked(&mut st, path)
    }

    /// The cluster runs of a file's data, as many as its size needs.
    fn file_runs(&self, n: &Node) -> Result<Arc<Vec<Run>>> {
        let c = n.entry.cluster;
        let size = u64::from(n.entry.size);
        if size == 0 {
            return Ok(Arc::new(Vec::new()));
        }
        let what = || format!("file {}", show(&n.name));
        let mut st = self.state();
        if let Some(r) = st.chains.get(&c) {
            return Ok(r.clone());
        }
        let need = size.div_ceil(u64::from(self.bpb.cluster_size));
        if !self.bpb.valid_cluster(c) {
            return Err(self.corrupt(&what(), format!("{size} bytes from cluster {c}")));
        }
        let runs = st
            .table
            .chain(c, need)
            .map_err(|e| self.corrupt(&what(), e))?;
        let have: u64 = runs.iter().map(|r| u64::from(r.len)).sum();
        if have < need {
            return Err(self.corrupt(
                &what(),
                format!("{size} bytes need {need} clusters but its chain has {have}"),
            ));
        }
        let runs = Arc::new(runs);
        if st.chains.len() >= MAX_CACHED_CHAINS {
            st.chains.clear();
        }
        st.chains.insert(c, runs.clone());
        Ok(runs)
    }

    fn metadata(&self, f: &Found) -> Result<Metadata> {
        let e = &f.node.entry;
        let ro = e.attr & ATTR_READ_ONLY != 0;
        let dir = e.is_dir();
        let size = if dir {
            let mut st = self.state();
            let d = self.dir_locked(&mut st, self.dir_key(&f.node)?)?;
            d.raw.len() as u64
        } else {
            u64::from(e.size)
        };
        let root = f.parent.is_none();
        let zero = Time { secs: 0, nanos: 0 };
        Ok(Metadata {
            kind: if dir { FileKind::Dir } else { FileKind::File },
            mode: match (dir, ro) {
                (true, false) => 0o755,
                (true, true) => 0o555,
                (false, false) => 0o644,
                (false, true) => 0o444,
            },
            uid: 0,
            gid: 0,
            size,
            atime: if root { zero } else { e.atime() },
            mtime: if root { zero } else { e.mtime() },
            crtime: (!root).then(|| e.crtime()),
        })
    }
}

impl Filesystem for FatFs {
    fn info(&self) -> FsInfo {
        self.info.clone()
    }

    fn lstat(&self, path: &[u8]) -> Result<Metadata> {
        let f = self.lookup(path)?;
        self.metadata(&f)
    }

    fn read_dir(&self, path: &[u8]) -> Result<Vec<DirEntry>> {
        let f = self.lookup(path)?;
        if !f.node.entry.is_dir() {
            return Err(Error::NotADirectory(show(path)));
        }
        let mut st = self.state();
        let d = self.dir_locked(&mut st, self.dir_key(&f.node)?)?;
        Ok(d.nodes
            .iter()
            .map(|n| DirEntry {
                name: n.name.clone(),
                kind: if n.entry.is_dir() {
                    FileKind::Dir
                } else {
                    FileKind::File
                },
            })
            .collect())
    }

    fn read(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<usize> {
        let f = self.lookup(path)?;
        if f.node.entry.is_dir() {
            return Err(Error::IsADirectory(show(path)));
        }
        let size = u64::from(f.node.entry.size);
        if offset >= size {
            return Ok(0);
        }
        let want = (size - offset).min(buf.len() as u64) as usize;
        let runs = self.file_runs(&f.node)?;
        let cs = u64::from(self.bpb.cluster_size);
        let end = offset + want as u64;
        let mut run_start = 0u64; // file offset of the current run
        let mut pos = offset;
        for r in runs.iter() {
            let run_len = u64::from(r.len) * cs;
            let run_end = run_start + run_len;
            if pos < run_end && pos < end {
                let n = (run_end.min(end) - pos) as usize;
                let dst = (pos - offset) as usize;
                let dev_off = self.bpb.cluster_offset(r.first) + (pos - run_start);
                let out = buf
                    .get_mut(dst..dst + n)
                    .ok_or_else(|| self.corrupt("read", "run arithmetic"))?;
                self.dev.read_at(out, dev_off)?;
                pos += n as u64;
            }
            run_start = run_end;
            if pos >= end {
                break;
            }
        }
        Ok(want)
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        self.lookup(path)?;
        Err(Error::NotASymlink(show(path)))
    }

    fn writable(&self) -> bool {
        self.rw
    }

    fn write_file(&self, path: &[u8], data: &[u8]) -> Result<()> {
        self.do_write_file(path, data)
    }

    fn create(&self, path: &[u8], node: NewNode<'_>, attrs: &SetAttrs) -> Result<()> {
        self.do_create(path, node, attrs)
    }

    fn remove(&self, path: &[u8]) -> Result<()> {
        self.do_remove(path)
    }

    fn rename(&self, from: &[u8], to: &[u8]) -> Result<()> {
        self.do_rename(from, to)
    }

    fn set_attrs(&self, path: &[u8], attrs: &SetAttrs) -> Result<()> {
        self.do_set_attrs(path, attrs)
    }

    fn sync(&self) -> Result<()> {
        if self.rw {
            self.dev.flush()?;
        }
        Ok(())
    }
}
