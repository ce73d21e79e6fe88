//! The writer: replace a file's content, create files and directories (long names get
//! VFAT slots and a unique 8.3 alias), remove, rename, set times and the read-only bit.
//!
//! Every call holds the state lock throughout and leaves the volume consistent when it
//! returns: new clusters are written and linked in every FAT copy before a directory
//! entry points at them, and old chains are freed only after nothing points at them.
//! Every chain a call will free is walked (and checked) before anything is written, so a
//! corrupt chain stops the call unchanged. FAT32's FSInfo hints follow each change.

use super::dir::{Dir, Node, Place};
use super::dirent::{to_dos, ShortEntry, ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_READ_ONLY, DELETED};
use super::lfn;
use super::{FatFs, FatType, Found, State, MAX_DIR_BYTES};
use crate::error::{Error, Result};
use crate::{read_only, show, NewNode, SetAttrs, Time};
use std::sync::Arc;

fn now() -> Time {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Time {
        secs: i64::try_from(d.as_secs()).unwrap_or(0),
        nanos: d.subsec_nanos(),
    }
}

/// Refuses a volume fsck.fat should see before anything writes to it.
pub(crate) fn check_writable(fs: &FatFs) -> Result<()> {
    fs.bpb.check_version().map_err(|e| match e {
        super::bpb::BpbError::Unsupported(f) | super::bpb::BpbError::Corrupt(f) => {
            Error::Unsupported {
                dev: fs.name().to_string(),
                feature: f,
            }
        }
    })?;
    let fat1 = fs.state().table.raw(1);
    let (clean, no_errors) = match fs.bpb.fat_type {
        FatType::Fat12 => (true, true),
        FatType::Fat16 => (fat1 & 0x8000 != 0, fat1 & 0x4000 != 0),
        FatType::Fat32 => (fat1 & 0x0800_0000 != 0, fat1 & 0x0400_0000 != 0),
    };
    let refuse = |why: &str| -> Error {
        Error::Refused {
            dev: fs.name().to_string(),
            reason: format!(
                "the FAT volume {why}; check it with `fsck.fat -a` (on a copy, or with \
                 the guest shut down) before writing to it"
            ),
        }
    };
    if !no_errors {
        return Err(refuse("records disk I/O errors"));
    }
    if (!clean || fs.bpb.state & 1 != 0) && !copies_agree(fs)? {
        return Err(refuse(
            "is marked dirty (it was not cleanly unmounted: the guest did not shut down \
             cleanly or the image was copied while it was mounted) and its FAT copies \
             differ, so a write was cut short",
        ));
    }
    Ok(())
}

/// Whether every FAT copy a change must reach holds the same bytes as the one read. Linux
/// marks a mounted volume dirty (the boot sector's state byte) and clears the mark at
/// unmount, so the ESP of a guest copied while running is nearly always "dirty" with
/// nothing wrong; Linux's own mount just warns. What a write cut short leaves behind is
/// copies that differ (each FAT sector is written to every copy in turn), and only that
/// is refused. The mark itself is kept, for the guest's fsck at boot.
fn copies_agree(fs: &FatFs) -> Result<bool> {
    let active = fs.bpb.active_fat();
    let st = fs.state();
    let mut buf = vec![0u8; st.table.bytes.len()];
    for n in fs.bpb.fats_to_write() {
        if n == active {
            continue;
        }
        fs.dev.read_at(&mut buf, fs.bpb.fat_copy_offset(n))?;
        if buf != st.table.bytes {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The parent directory path and the last component of `path`.
fn split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let t = path.strip_suffix(b"/").unwrap_or(path);
    let i = t.iter().rposition(|&c| c == b'/')?;
    let name = t.get(i + 1..)?;
    let parent = t.get(..i.max(1))?;
    (!name.is_empty() && name != b"." && name != b"..").then_some((parent, name))
}

impl FatFs {
    fn check_rw(&self, path: &[u8]) -> Result<()> {
        if self.rw {
            Ok(())
        } else {
            Err(read_only(&show(path)))
        }
    }

    fn refused(&self, reason: impl Into<String>) -> Error {
        Error::Refused {
            dev: self.name().to_string(),
            reason: reason.into(),
        }
    }

    fn unsupported(&self, feature: impl Into<String>) -> Error {
        Error::Unsupported {
            dev: self.name().to_string(),
            feature: feature.into(),
        }
    }

    /// The name a new entry gets: UTF-8 and valid for FAT.
    fn new_name<'a>(&self, path: &[u8], name: &'a [u8]) -> Result<&'a str> {
        let s = std::str::from_utf8(name)
            .map_err(|_| self.unsupported(format!("{}: a name that is not UTF-8", show(path))))?;
        lfn::check_long_name(s)
            .map_err(|why| self.unsupported(format!("{}: a FAT name with {why}", show(path))))?;
        Ok(s)
    }

    /// The parent directory of `path` (which must be one) and the last component.
    fn parent_of<'p>(&self, st: &mut State, path: &'p [u8]) -> Result<(u32, Arc<Dir>, &'p [u8])> {
        let (parent, name) =
            split(path).ok_or_else(|| self.refused(format!("{}: not a file name", show(path))))?;
        let f = self.lookup_locked(st, parent)?;
        if !f.node.entry.is_dir() {
            return Err(Error::NotADirectory(show(parent)));
        }
        let key = self.dir_key(&f.node)?;
        let d = self.dir_locked(st, key)?;
        Ok((key, d, name))
    }

    fn invalidate(st: &mut State) {
        st.dirs.clear();
        st.chains.clear();
    }

    /// Every cluster of the chain from `first` (none for 0), checked, for freeing.
    fn whole_chain(&self, st: &State, first: u32, what: &[u8]) -> Result<Vec<u32>> {
        if first == 0 {
            return Ok(Vec::new());
        }
        st.table
            .chain_clusters(first, u64::MAX)
            .map_err(|e| self.corrupt(&format!("chain of {}", show(what)), e))
    }

    /// Takes `n` free clusters, linked into one chain in memory (the caller flushes).
    fn alloc(&self, st: &mut State, n: u32, path: &[u8]) -> Result<Vec<u32>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > st.free {
            return Err(Error::NoSpace(show(path)));
        }
        let max = st.table.max_cluster();
        let start = if (2..=max).contains(&st.next_free) {
            st.next_free
        } else {
            2
        };
        let mut got = Vec::with_capacity(n as usize);
        let mut c = start;
        for _ in 2..=max {
            if st.table.next(c) == super::table::Next::Free {
                got.push(c);
                if got.len() == n as usize {
                    break;
                }
            }
            c = if c >= max { 2 } else { c + 1 };
        }
        if got.len() < n as usize {
            // The count said there was room; the FAT disagrees.
            return Err(Error::NoSpace(show(path)));
        }
        let end = st.table.end_mark();
        for w in got.windows(2) {
            if let [a, b] = *w {
                st.table.set_raw(a, b);
            }
        }
        if let Some(&last) = got.last() {
            st.table.set_raw(last, end);
            st.next_free = if last >= max { 2 } else { last + 1 };
        }
        st.free -= n;
        Ok(got)
    }

    fn free_clusters_of(st: &mut State, clusters: &[u32]) {
        for &c in clusters {
            st.table.set_raw(c, 0);
        }
        st.free = st.free.saturating_add(clusters.len() as u32);
    }

    /// Writes `data` over `clusters` (zero-padding the last), one device write per run.
    fn write_data(&self, clusters: &[u32], data: &[u8]) -> Result<()> {
        let cs = self.bpb.cluster_size as usize;
        let mut i = 0;
        while i < clusters.len() {
            let mut j = i + 1;
            while j < clusters.len() && clusters[j] == clusters[j - 1] + 1 {
                j += 1;
            }
            let from = (i * cs).min(data.len());
            let to = (j * cs).min(data.len());
            let mut chunk = data.get(from..to).unwrap_or(&[]).to_vec();
            chunk.resize((j - i) * cs, 0);
            self.dev
                .write_at(&chunk, self.bpb.cluster_offset(clusters[i]))?;
            i = j;
        }
        Ok(())
    }

    /// Writes the changed FAT sectors to every FAT copy, then the FSInfo hints.
    fn flush(&self, st: &mut State) -> Result<()> {
        let bps = u64::from(self.bpb.bytes_per_sector);
        let dirty: Vec<usize> = std::mem::take(&mut st.table.dirty).into_iter().collect();
        for s in dirty {
            let Some(bytes) = st.table.sector_bytes(s) else {
                continue;
            };
            for copy in self.bpb.fats_to_write() {
                self.dev
                    .write_at(bytes, self.bpb.fat_copy_offset(copy) + s as u64 * bps)?;
            }
        }
        if let (Some(fi), Some(sector)) = (st.fsinfo.as_mut(), self.bpb.fsinfo_sector) {
            fi.free = st.free;
            fi.next_free = st.next_free;
            let off = u64::from(sector) * bps;
            let mut sec = vec![0u8; bps as usize];
            self.dev.read_at(&mut sec, off)?;
            fi.store(&mut sec);
            self.dev.write_at(&sec, off)?;
        }
        Ok(())
    }

    fn slot_offset(&self, d: &Dir, i: u32) -> Result<u64> {
        let off = match &d.place {
            Place::Fixed(base) => (i < d.slots()).then(|| base + u64::from(i) * 32),
            Place::Chain(clusters) => {
                let b = u64::from(i) * 32;
                let cs = u64::from(self.bpb.cluster_size);
                clusters
                    .get((b / cs) as usize)
                    .map(|&c| self.bpb.cluster_offset(c) + b % cs)
            }
        };
        off.ok_or_else(|| self.corrupt("directory", format!("slot {i} outside the directory")))
    }

    fn put_slot(&self, d: &Dir, i: u32, b: &[u8]) -> Result<()> {
        self.dev.write_at(b, self.slot_offset(d, i)?)?;
        Ok(())
    }

    /// Marks an entry's slots (its long name's and its own) deleted.
    fn delete_slots(&self, d: &Dir, n: &Node) -> Result<()> {
        for i in n.first_slot..=n.slot {
            self.put_slot(d, i, &[DELETED])?;
        }
        Ok(())
    }

    /// Adds entry `e` named `name` to the directory `key`, growing it by clusters when no
    /// run of free slots is long enough (FAT12/16's fixed root cannot grow).
    fn add_entry(
        &self,
        st: &mut State,
        key: u32,
        name: &str,
        mut e: ShortEntry,
        path: &[u8],
    ) -> Result<()> {
        let d = self.dir_locked(st, key)?;
        let mut slots: Vec<[u8; 32]> = match lfn::as_short(name) {
            Some((short, nt)) => {
                e.name = short;
                e.ntres = nt;
                Vec::new()
            }
            None => {
                let short = lfn::alias(name, |s| d.short_taken(s))
                    .ok_or_else(|| self.refused(format!("{}: no free 8.3 alias", show(path))))?;
                e.name = short;
                e.ntres = 0;
                lfn::slots(name, &short)
            }
        };
        slots.push(e.encode());
        let k = slots.len() as u32;
        let total = d.slots();
        let free = |i: u32| i >= d.end || d.raw.get(i as usize * 32).copied() == Some(DELETED);
        // The first run of k free slots, or the free tail to grow from.
        let mut start = None;
        let mut run = 0;
        for i in 0..total {
            if free(i) {
                run += 1;
                if run == k {
                    start = Some(i + 1 - k);
                    break;
                }
            } else {
                run = 0;
            }
        }
        let d = match start {
            Some(_) => d,
            None => {
                let Place::Chain(clusters) = &d.place else {
                    return Err(Error::NoSpace(format!(
                        "{}: the root directory is full ({} entries)",
                        show(path),
                        self.bpb.root_entries
                    )));
                };
                let need_slots = u64::from(total - run + k);
                if need_slots * 32 > MAX_DIR_BYTES {
                    return Err(self.refused(format!(
                        "{}: a directory holds at most 65,536 entries",
                        show(path)
                    )));
                }
                let cs = u64::from(self.bpb.cluster_size);
                let more = (need_slots * 32).div_ceil(cs) - clusters.len() as u64;
                let new = self.alloc(st, more as u32, path)?;
                self.write_data(&new, &[])?;
                if let (Some(&last), Some(&first)) = (clusters.last(), new.first()) {
                    st.table.set_raw(last, first);
                }
                self.flush(st)?;
                Self::invalidate(st);
                start = Some(total - run);
                self.dir_locked(st, key)?
            }
        };
        let start = start.unwrap_or(0);
        for (i, s) in slots.iter().enumerate() {
            self.put_slot(&d, start + i as u32, s)?;
        }
        // Slots after the end mark need not be zero: keep one after what was written.
        let after = start + k;
        if after >= d.end && after < d.slots() && d.raw.get(after as usize * 32) != Some(&0) {
            self.put_slot(&d, after, &[0u8; 32])?;
        }
        Self::invalidate(st);
        Ok(())
    }

    fn stamp(e: &mut ShortEntry, t: Time) {
        let (date, time, _) = to_dos(t);
        e.wrt_date = date;
        e.wrt_time = time;
        e.acc_date = date;
    }

    fn apply_mode(e: &mut ShortEntry, mode: Option<u32>) {
        if let Some(m) = mode {
            if m & 0o222 == 0 {
                e.attr |= ATTR_READ_ONLY;
            } else {
                e.attr &= !ATTR_READ_ONLY;
            }
        }
    }

    fn found_file(&self, st: &mut State, path: &[u8]) -> Result<Found> {
        let f = self.lookup_locked(st, path)?;
        if f.node.entry.is_dir() {
            return Err(Error::IsADirectory(show(path)));
        }
        Ok(f)
    }

    pub(crate) fn do_write_file(&self, path: &[u8], data: &[u8]) -> Result<()> {
        self.check_rw(path)?;
        let size = u32::try_from(data.len()).map_err(|_| {
            self.unsupported(format!("{}: a FAT file of 4 GiB or more", show(path)))
        })?;
        let mut st = self.state();
        let f = self.found_file(&mut st, path)?;
        let Some((_, parent)) = f.parent.clone() else {
            return Err(Error::IsADirectory(show(path)));
        };
        let old = self.whole_chain(&st, f.node.entry.cluster, path)?;
        let n = u64::from(size).div_ceil(u64::from(self.bpb.cluster_size)) as u32;
        // New clusters first, so the old content stays whole until the entry moves; on
        // a volume too full for both, the old chain goes first.
        let freed_first = n > st.free && n <= st.free.saturating_add(old.len() as u32);
        if freed_first {
            let mut e = f.node.entry.clone();
            e.cluster = 0;
            e.size = 0;
            self.put_slot(&parent, f.node.slot, &e.encode())?;
            Self::free_clusters_of(&mut st, &old);
            self.flush(&mut st)?;
        }
        let new = self.alloc(&mut st, n, path)?;
        self.write_data(&new, data)?;
        self.flush(&mut st)?;
        let mut e = f.node.entry.clone();
        e.cluster = new.first().copied().unwrap_or(0);
        e.size = size;
        e.attr |= ATTR_ARCHIVE;
        Self::stamp(&mut e, now());
        self.put_slot(&parent, f.node.slot, &e.encode())?;
        if !freed_first {
            Self::free_clusters_of(&mut st, &old);
            self.flush(&mut st)?;
        }
        Self::invalidate(&mut st);
        Ok(())
    }

    pub(crate) fn do_create(&self, path: &[u8], node: NewNode<'_>, attrs: &SetAttrs) -> Result<()> {
        self.check_rw(path)?;
        let mut st = self.state();
        let (key, d, name) = self.parent_of(&mut st, path)?;
        let name = self.new_name(path, name)?;
        if d.find(name.as_bytes()).is_some() {
            return Err(Error::Exists(show(path)));
        }
        let t = now();
        let (cdate, ctime, ctenth) = to_dos(t);
        let mut e = ShortEntry {
            name: [b' '; 11],
            attr: 0,
            ntres: 0,
            crt_tenth: ctenth,
            crt_time: ctime,
            crt_date: cdate,
            acc_date: cdate,
            cluster: 0,
            wrt_time: ctime,
            wrt_date: cdate,
            size: 0,
        };
        if let Some(m) = attrs.mtime {
            Self::stamp(&mut e, m);
        }
        if let Some(a) = attrs.atime {
            e.acc_date = to_dos(a).0;
        }
        Self::apply_mode(&mut e, attrs.mode);
        match node {
            NewNode::Symlink(_) => {
                return Err(self.unsupported(format!("{}: symbolic links on FAT", show(path))))
            }
            NewNode::File(data) => {
                let size = u32::try_from(data.len()).map_err(|_| {
                    self.unsupported(format!("{}: a FAT file of 4 GiB or more", show(path)))
                })?;
                let n = u64::from(size).div_ceil(u64::from(self.bpb.cluster_size)) as u32;
                let new = self.alloc(&mut st, n, path)?;
                self.write_data(&new, data)?;
                self.flush(&mut st)?;
                e.attr |= ATTR_ARCHIVE;
                e.cluster = new.first().copied().unwrap_or(0);
                e.size = size;
            }
            NewNode::Dir => {
                let new = self.alloc(&mut st, 1, path)?;
                let c = new.first().copied().unwrap_or(0);
                e.attr |= ATTR_DIRECTORY;
                e.cluster = c;
                let mut dot = e.clone();
                dot.name = *b".          ";
                let mut dotdot = e.clone();
                dotdot.name = *b"..         ";
                // ".." of a directory in the root names cluster 0, FAT32 included.
                dotdot.cluster = if key == self.root_key() { 0 } else { key };
                let mut block = dot.encode().to_vec();
                block.extend_from_slice(&dotdot.encode());
                self.write_data(&new, &block)?;
                self.flush(&mut st)?;
            }
        }
        let cluster = e.cluster;
        let r = self.add_entry(&mut st, key, name, e, path);
        if r.is_err() && cluster != 0 {
            // Nothing points at the new chain: give it back.
            if let Ok(c) = st.table.chain_clusters(cluster, u64::MAX) {
                Self::free_clusters_of(&mut st, &c);
                self.flush(&mut st)?;
            }
        }
        r
    }

    /// Removes entry `n` of directory `d` and frees its chain (checked beforehand).
    fn unlink(&self, st: &mut State, d: &Dir, n: &Node, path: &[u8]) -> Result<()> {
        let chain = self.whole_chain(st, n.entry.cluster, path)?;
        self.delete_slots(d, n)?;
        Self::free_clusters_of(st, &chain);
        self.flush(st)?;
        Self::invalidate(st);
        Ok(())
    }

    fn check_empty(&self, st: &mut State, f: &Found, path: &[u8]) -> Result<()> {
        let key = self.dir_key(&f.node)?;
        if !self.dir_locked(st, key)?.nodes.is_empty() {
            return Err(Error::NotEmpty(show(path)));
        }
        Ok(())
    }

    pub(crate) fn do_remove(&self, path: &[u8]) -> Result<()> {
        self.check_rw(path)?;
        let mut st = self.state();
        let f = self.lookup_locked(&mut st, path)?;
        let Some((_, parent)) = f.parent.clone() else {
            return Err(self.refused("the root directory cannot be removed"));
        };
        if f.node.entry.is_dir() {
            self.check_empty(&mut st, &f, path)?;
        }
        self.unlink(&mut st, &parent, &f.node, path)
    }

    pub(crate) fn do_rename(&self, from: &[u8], to: &[u8]) -> Result<()> {
        self.check_rw(from)?;
        let mut st = self.state();
        let src = self.lookup_locked(&mut st, from)?;
        let Some((src_key, _)) = src.parent.clone() else {
            return Err(self.refused("the root directory cannot be renamed"));
        };
        let (dst_key, dst_dir, name) = self.parent_of(&mut st, to)?;
        let name = self.new_name(to, name)?;
        let is_dir = src.node.entry.is_dir();
        if is_dir && dst_key != src_key {
            // A directory cannot move below itself.
            let (parent, _) = split(to).unwrap_or((b"/", b""));
            let mut here = Vec::new();
            for comp in parent.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
                here.push(b'/');
                here.extend_from_slice(comp);
                let f = self.lookup_locked(&mut st, &here)?;
                if f.node.entry.cluster == src.node.entry.cluster {
                    return Err(
                        self.refused(format!("{}: a directory cannot move into itself", show(to)))
                    );
                }
            }
        }
        if let Some(existing) = dst_dir.find(name.as_bytes()).cloned() {
            let same = dst_key == src_key && existing.slot == src.node.slot;
            if !same {
                match (is_dir, existing.entry.is_dir()) {
                    (false, true) => return Err(Error::IsADirectory(show(to))),
                    (true, false) => return Err(Error::NotADirectory(show(to))),
                    (true, true) => {
                        let f = Found {
                            node: existing.clone(),
                            parent: Some((dst_key, dst_dir.clone())),
                        };
                        self.check_empty(&mut st, &f, to)?;
                    }
                    (false, false) => {}
                }
                self.unlink(&mut st, &dst_dir, &existing, to)?;
            } else if existing.name == name.as_bytes() {
                return Ok(());
            }
        }
        // The new entry first, then the old one goes: the file is never without a name.
        self.add_entry(&mut st, dst_key, name, src.node.entry.clone(), to)?;
        let src_dir = self.dir_locked(&mut st, src_key)?;
        self.delete_slots(&src_dir, &src.node)?;
        if is_dir && dst_key != src_key {
            let key = self.dir_key(&src.node)?;
            let moved = self.dir_locked(&mut st, key)?;
            let dotdot = moved
                .raw
                .chunks_exact(32)
                .position(|b| b.get(..11) == Some(b"..         "));
            if let Some(i) = dotdot {
                let mut e = ShortEntry::parse(
                    moved.raw.get(i * 32..i * 32 + 32).unwrap_or(&[]),
                    self.bpb.fat_type == FatType::Fat32,
                );
                e.cluster = if dst_key == self.root_key() {
                    0
                } else {
                    dst_key
                };
                self.put_slot(&moved, i as u32, &e.encode())?;
            }
        }
        Self::invalidate(&mut st);
        Ok(())
    }

    pub(crate) fn do_set_attrs(&self, path: &[u8], attrs: &SetAttrs) -> Result<()> {
        self.check_rw(path)?;
        let mut st = self.state();
        let f = self.lookup_locked(&mut st, path)?;
        let Some((_, parent)) = f.parent.clone() else {
            // The root has no entry to hold times or attributes.
            return Ok(());
        };
        let mut e = f.node.entry.clone();
        if let Some(m) = attrs.mtime {
            let (date, time, _) = to_dos(m);
            e.wrt_date = date;
            e.wrt_time = time;
        }
        if let Some(a) = attrs.atime {
            e.acc_date = to_dos(a).0;
        }
        Self::apply_mode(&mut e, attrs.mode);
        self.put_slot(&parent, f.node.slot, &e.encode())?;
        Self::invalidate(&mut st);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_paths() {
        assert_eq!(split(b"/a"), Some((&b"/"[..], &b"a"[..])));
        assert_eq!(split(b"/EFI/BOOT/"), Some((&b"/EFI"[..], &b"BOOT"[..])));
        assert_eq!(split(b"/"), None);
        assert_eq!(split(b"/a/.."), None);
        assert_eq!(split(b"x"), None);
    }
}
