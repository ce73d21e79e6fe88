//! VMDK reader: every layout VMware exports and snapshots actually use (monolithic and
//! split sparse, stream-optimized, flat, vmfs and vmfsThin, ESX COWD and ESXi seSparse
//! snapshot deltas) and parent chains.
//!
//! Why our own reader rather than the vmdk-core crate: that crate reads six common
//! sub-formats, but it opens extent files by joining whatever path the descriptor says, so
//! an image could make us read `/etc/shadow` or loop through itself; our folder policy
//! (`OpenCtx`) must decide every file opened. It also trusts header sizes when allocating
//! and lacks vmfsThin, COWD and seSparse, which are what ESX exports and snapshots contain.
//!
//! Structure: `descriptor` (text), `sparse_header` (KDMV and its stream footer), `cowd`,
//! `sesparse` (their headers), `grain_map` (directory, tables, cache), `compressed`
//! (inflating stream-optimized grains), `extent` (opening one extent); this file assembles
//! extents into a disk and falls through to the parent image.

mod compressed;
mod cowd;
mod descriptor;
mod extent;
mod grain_map;
mod layout;
mod le;
mod sesparse;
mod sparse_header;

use crate::blockdev::{BlockDev, Extent as Run, ExtentKind};
use crate::error::{check_range, Error, ErrorKind, Result};
use crate::image::{Image, ImageInfo};
use crate::open::{host_allocated, OpenCtx};
use crate::probe::Format;
use compressed::GrainCache;
use descriptor::{clip, Access, Descriptor};
use extent::{Body, Extent};
use grain_map::Grain;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Virtual disks larger than this (4 EiB) cannot be addressed by any reader.
const MAX_VIRTUAL_BYTES: u64 = 1 << 62;

pub struct VmdkImage {
    name: String,
    path: PathBuf,
    len: u64,
    extents: Vec<Extent>,
    parent: Option<Arc<dyn Image>>,
    grains: GrainCache,
    subformat: String,
    parent_hint: Option<String>,
    dirty: bool,
    notes: Vec<String>,
    details: BTreeMap<String, String>,
}

/// Opens a vmdk image whose host file is `file` (at `path`, for messages and for resolving
/// the files it names).
pub fn open(file: Arc<dyn BlockDev>, path: &Path, ctx: &OpenCtx) -> Result<Arc<dyn Image>> {
    let name = file.name().to_string();
    let mut magic = [0u8; 4];
    if file.len() < 4 {
        return Err(Error::corrupt(
            &name,
            "vmdk header",
            0,
            "the file is shorter than 4 bytes",
        ));
    }
    file.read_at(&mut magic, 0)?;
    let mut notes = Vec::new();
    let mut details = BTreeMap::new();
    let mut dirty = false;
    let (desc, extents, subformat) = if &magic == sparse_header::MAGIC {
        let h = sparse_header::read(&*file)?;
        dirty = h.unclean;
        details.insert("sparse_version".into(), h.version.to_string());
        let desc = if h.has_embedded_descriptor() {
            Some(read_embedded(&*file, h.desc_offset, h.desc_size)?)
        } else {
            None
        };
        if h.capacity == 0 && desc.as_ref().is_some_and(|d| !d.extents.is_empty()) {
            // A sparse file that only carries a descriptor: its extents are elsewhere.
            let d = desc.unwrap_or_default();
            let (ext, sub) = open_extents(&d, path, &name, ctx, &mut notes)?;
            (Some(d), ext, sub)
        } else {
            let layout = h.layout(&*file, &mut notes)?;
            let compressed = layout.compressed;
            let map = grain_map::GrainMap::open(file.clone(), layout, &mut notes)?;
            let len = h
                .capacity
                .checked_mul(512)
                .filter(|&l| l <= MAX_VIRTUAL_BYTES)
                .ok_or_else(|| {
                    Error::corrupt(
                        &name,
                        "vmdk sparse header",
                        12,
                        format!("the capacity of {} sectors is impossibly large", h.capacity),
                    )
                })?;
            let sub = desc
                .as_ref()
                .and_then(|d| d.create_type.clone())
                .unwrap_or_else(|| {
                    if compressed {
                        "streamOptimized"
                    } else {
                        "monolithicSparse"
                    }
                    .into()
                });
            let e = Extent {
                start: 0,
                len,
                info: crate::image::ExtentFile {
                    filename: Some(name.clone()),
                    kind: "SPARSE".into(),
                    virtual_offset: 0,
                    virtual_size: len,
                    file_offset: 0,
                    cluster_size: Some(map.grain_bytes),
                },
                body: Body::Sparse(Box::new(map)),
                host_path: None,
            };
            (desc, vec![e], sub)
        }
    } else if &magic == cowd::MAGIC {
        let layout = cowd::read(&*file)?;
        let len = layout.capacity_sectors * 512;
        let map = grain_map::GrainMap::open(file.clone(), layout, &mut notes)?;
        let e = Extent {
            start: 0,
            len,
            info: crate::image::ExtentFile {
                filename: Some(name.clone()),
                kind: "VMFSSPARSE".into(),
                virtual_offset: 0,
                virtual_size: len,
                file_offset: 0,
                cluster_size: Some(map.grain_bytes),
            },
            body: Body::Sparse(Box::new(map)),
            host_path: None,
        };
        (None, vec![e], "vmfsSparse".to_string())
    } else {
        let flen = file.len();
        if flen > descriptor::MAX_DESCRIPTOR_BYTES {
            return Err(Error::corrupt(
                &name,
                "vmdk descriptor",
                0,
                format!("a descriptor file of {flen} bytes is far larger than any real one (at most {} bytes are read)", descriptor::MAX_DESCRIPTOR_BYTES),
            ));
        }
        let mut text = vec![0u8; flen as usize];
        file.read_at(&mut text, 0)?;
        let d = descriptor::parse(&text, &name, 0)?;
        let (ext, sub) = open_extents(&d, path, &name, ctx, &mut notes)?;
        (Some(d), ext, sub)
    };
    let len = extents.last().map(|e| e.start + e.len).unwrap_or(0);
    let mut img = VmdkImage {
        name,
        path: path.to_path_buf(),
        len,
        extents,
        parent: None,
        grains: GrainCache::default(),
        subformat,
        parent_hint: None,
        dirty,
        notes,
        details,
    };
    let compressed = img
        .extents
        .iter()
        .any(|e| matches!(&e.body, Body::Sparse(m) if m.layout.compressed));
    img.details.insert(
        "compression".into(),
        if compressed { "deflate" } else { "none" }.into(),
    );
    if let Some(d) = &desc {
        img.describe(d);
        img.open_parent(d, ctx)?;
    }
    Ok(Arc::new(img))
}

fn read_embedded(file: &dyn BlockDev, off_sectors: u64, size_sectors: u64) -> Result<Descriptor> {
    let name = file.name();
    let at = off_sectors.saturating_mul(512);
    let size = size_sectors.saturating_mul(512);
    if size > descriptor::MAX_DESCRIPTOR_BYTES {
        return Err(Error::corrupt(
            name,
            "vmdk embedded descriptor",
            at,
            format!(
                "claims {size} bytes; real descriptors are a few hundred (at most {} are read)",
                descriptor::MAX_DESCRIPTOR_BYTES
            ),
        ));
    }
    if at.checked_add(size).is_none_or(|e| e > file.len()) {
        return Err(Error::corrupt(
            name,
            "vmdk embedded descriptor",
            at,
            format!(
                "its {size} bytes reach past the end of the file ({} bytes)",
                file.len()
            ),
        ));
    }
    let mut b = vec![0u8; size as usize];
    file.read_at(&mut b, at)?;
    descriptor::parse(&b, name, at)
}

/// Opens every extent a descriptor names, in order.
fn open_extents(
    d: &Descriptor,
    path: &Path,
    name: &str,
    ctx: &OpenCtx,
    notes: &mut Vec<String>,
) -> Result<(Vec<Extent>, String)> {
    let ct = d
        .create_type
        .clone()
        .ok_or_else(|| Error::corrupt(name, "vmdk descriptor", 0, "there is no createType line"))?;
    match ct.as_str() {
        "vmfsRaw"
        | "vmfsRawDeviceMap"
        | "vmfsPassthroughRawDeviceMap"
        | "fullDevice"
        | "partitionedDevice" => {
            return Err(Error::unsupported(
                name,
                format!("createType '{ct}': it names host devices, not files; copy the device itself instead"),
            ));
        }
        "monolithicSparse"
        | "monolithicFlat"
        | "twoGbMaxExtentSparse"
        | "twoGbMaxExtentFlat"
        | "streamOptimized"
        | "vmfs"
        | "vmfsThin"
        | "vmfsThick"
        | "vmfsEagerZeroedThick"
        | "vmfsPreallocated"
        | "vmfsSparse"
        | "seSparse"
        | "custom" => {}
        other => notes.push(format!(
            "{name}: unknown createType '{}'; reading its extents as listed",
            clip(other)
        )),
    }
    if d.extents.is_empty() {
        return Err(Error::corrupt(
            name,
            "vmdk descriptor",
            0,
            "it lists no extents",
        ));
    }
    let mut out = Vec::with_capacity(d.extents.len());
    let mut start = 0u64;
    for line in &d.extents {
        if line.access == Access::Forbidden {
            return Err(Error::unsupported(
                name,
                "NOACCESS extents (VMware refuses to read them too)",
            ));
        }
        if line.sectors == 0 {
            continue;
        }
        let e = extent::open_line(line, start, path, name, ctx, notes)?;
        start = start
            .checked_add(e.len)
            .filter(|&s| s <= MAX_VIRTUAL_BYTES)
            .ok_or_else(|| {
                Error::corrupt(
                    name,
                    "vmdk descriptor extent line",
                    line.at,
                    "the extents add up to an impossibly large disk",
                )
            })?;
        out.push(e);
    }
    Ok((out, ct))
}

impl VmdkImage {
    fn describe(&mut self, d: &Descriptor) {
        if let Some(c) = d.cid {
            self.details.insert("CID".into(), format!("{c:08x}"));
        }
        if let Some(c) = d.parent_cid {
            self.details.insert("parentCID".into(), format!("{c:08x}"));
        }
        if let Some(v) = &d.version {
            self.details.insert("version".into(), v.clone());
        }
        if let Some(v) = d.ddb("adapterType") {
            self.details.insert("adapterType".into(), v.to_string());
        }
        if let Some(v) = d.ddb("virtualHWVersion") {
            self.details.insert("hwversion".into(), v.to_string());
        }
        if let (Some(c), Some(h), Some(s)) = (
            d.ddb("geometry.cylinders"),
            d.ddb("geometry.heads"),
            d.ddb("geometry.sectors"),
        ) {
            self.details
                .insert("geometry".into(), format!("{c}/{h}/{s}"));
        }
        if let Some(v) = d.ddb("toolsVersion") {
            self.details.insert("toolsVersion".into(), v.to_string());
        }
    }

    fn open_parent(&mut self, d: &Descriptor, ctx: &OpenCtx) -> Result<()> {
        let Some(hint) = d.parent_hint.clone().filter(|h| !h.is_empty()) else {
            return Ok(());
        };
        if d.parent_cid == Some(0xffff_ffff) {
            self.notes.push(format!(
                "parentCID is ffffffff (no parent) but parentFileNameHint names '{}'; following the hint",
                clip(&hint)
            ));
        }
        let parent = match ctx.open_backing(&self.path, &hint, None) {
            Ok(p) => p,
            Err(e) => {
                // VMware records the parent's absolute path on the original host
                // ("/vmfs/volumes/ds1/vm/base.vmdk", "C:\VMs\base.vmdk"); exports carry the
                // parent beside the child, so try the bare name in this folder before failing.
                let base = hint.rsplit(['/', '\\']).next().unwrap_or("");
                let retry = (matches!(e.kind(), ErrorKind::Refused | ErrorKind::Io)
                    && !base.is_empty()
                    && base != hint
                    && base != ".."
                    && base != ".")
                    .then(|| ctx.open_backing(&self.path, base, None).ok())
                    .flatten();
                match retry {
                    Some(p) => {
                        self.notes.push(format!(
                            "parentFileNameHint '{}' could not be used ({e}); opened '{}' from the image's folder instead",
                            clip(&hint),
                            clip(base)
                        ));
                        p
                    }
                    None => return Err(e),
                }
            }
        };
        let pinfo = parent.info();
        if pinfo.format == Format::Vmdk {
            let pcid = pinfo
                .details
                .get("CID")
                .and_then(|c| u32::from_str_radix(c, 16).ok());
            if let (Some(want), Some(have)) = (d.parent_cid, pcid) {
                if want != have {
                    self.notes.push(format!(
                        "warning: parentCID {want:08x} does not match the parent's CID {have:08x}: the parent was changed after this snapshot was taken, so the disk may read inconsistently"
                    ));
                }
            }
        }
        self.parent_hint = Some(hint);
        self.parent = Some(parent);
        Ok(())
    }

    fn extent_index(&self, offset: u64) -> usize {
        self.extents.partition_point(|e| e.start + e.len <= offset)
    }

    /// Reads `buf` from the parent at virtual `offset`, zeroes where there is none.
    fn read_parent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match &self.parent {
            Some(p) => {
                let avail = p.len().saturating_sub(offset).min(buf.len() as u64) as usize;
                let (head, tail) = buf.split_at_mut(avail);
                if !head.is_empty() {
                    p.read_at(head, offset)?;
                }
                tail.fill(0);
                Ok(())
            }
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    fn read_extent(&self, idx: usize, e: &Extent, buf: &mut [u8], rel: u64) -> Result<()> {
        match &e.body {
            Body::Zero => {
                buf.fill(0);
                Ok(())
            }
            Body::Flat { file, offset } => file.read_at_zero_fill(buf, offset.saturating_add(rel)),
            Body::Sparse(map) => self.read_sparse(idx, e, map, buf, rel),
        }
    }

    fn read_sparse(
        &self,
        idx: usize,
        e: &Extent,
        map: &grain_map::GrainMap,
        buf: &mut [u8],
        rel: u64,
    ) -> Result<()> {
        let gb = map.grain_bytes;
        let total = buf.len() as u64;
        let file = map.file();
        let mut pos = 0u64;
        while pos < total {
            let at = rel + pos;
            let g = at / gb;
            let n = (gb - at % gb).min(total - pos);
            let state = map.grain(g)?;
            // Extend the run over following grains that can be served by the same action.
            let mut run = n;
            let mut next_off = match state {
                Grain::Data(o) => o + gb,
                _ => 0,
            };
            while pos + run < total {
                let ng = (rel + pos + run) / gb;
                let m = gb.min(total - pos - run);
                let s = map.grain(ng)?;
                let joins = match (state, s) {
                    (Grain::Data(_), Grain::Data(o)) => o == next_off,
                    (Grain::Unallocated, Grain::Unallocated) | (Grain::Zero, Grain::Zero) => true,
                    _ => false,
                };
                if !joins {
                    break;
                }
                next_off += gb;
                run += m;
            }
            let out = buf
                .get_mut(pos as usize..(pos + run) as usize)
                .ok_or_else(|| {
                    Error::corrupt(&self.name, "vmdk read", at, "internal range error")
                })?;
            match state {
                Grain::Unallocated => self.read_parent(out, e.start + at)?,
                Grain::Zero => out.fill(0),
                Grain::Data(o) => {
                    let from = o + at % gb;
                    if from.checked_add(run).is_none_or(|end| end > file.len()) {
                        return Err(Error::corrupt(
                            file.name(),
                            "vmdk grain",
                            o,
                            format!("grain {g} ({run} bytes read from {from:#x}) runs past the end of the file ({} bytes)", file.len()),
                        ));
                    }
                    file.read_at(out, from)?;
                }
                Grain::Compressed(o) => {
                    let data = self.grains.grain(idx, &**file, o, gb, map.layout.markers)?;
                    let s = (at % gb) as usize;
                    let src = data.get(s..s + out.len()).ok_or_else(|| {
                        Error::corrupt(
                            file.name(),
                            "vmdk compressed grain",
                            o,
                            "internal range error",
                        )
                    })?;
                    out.copy_from_slice(src);
                }
            }
            pos += run;
        }
        Ok(())
    }

    fn parent_kind(&self, offset: u64, max: u64) -> Result<Run> {
        match &self.parent {
            Some(p) if offset < p.len() => {
                let r = p.extent_at(offset)?;
                Ok(Run {
                    kind: r.kind,
                    len: r.len.min(max).max(1),
                })
            }
            _ => Ok(Run {
                kind: ExtentKind::Unallocated,
                len: max,
            }),
        }
    }
}

impl BlockDev for VmdkImage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.name, offset, buf.len() as u64, self.len)?;
        let mut done = 0usize;
        let mut idx = self.extent_index(offset);
        while done < buf.len() {
            let pos = offset + done as u64;
            let e = self.extents.get(idx).ok_or_else(|| {
                Error::corrupt(
                    &self.name,
                    "vmdk extent list",
                    pos,
                    "no extent covers this offset",
                )
            })?;
            let rel = pos - e.start;
            let n = (e.len - rel).min((buf.len() - done) as u64) as usize;
            let out = buf.get_mut(done..done + n).ok_or_else(|| {
                Error::corrupt(&self.name, "vmdk read", pos, "internal range error")
            })?;
            self.read_extent(idx, e, out, rel)?;
            done += n;
            idx += 1;
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> Result<Run> {
        check_range(&self.name, offset, 1, self.len)?;
        let idx = self.extent_index(offset);
        let e = self.extents.get(idx).ok_or_else(|| {
            Error::corrupt(
                &self.name,
                "vmdk extent list",
                offset,
                "no extent covers this offset",
            )
        })?;
        let rel = offset - e.start;
        let left = e.len - rel;
        match &e.body {
            Body::Zero => Ok(Run {
                kind: ExtentKind::Zero,
                len: left,
            }),
            Body::Flat { file, offset: fo } => {
                let at = fo.saturating_add(rel);
                // Holes in a flat file read as zeroes and never fall through to a parent.
                let hole = if self.parent.is_some() {
                    ExtentKind::Zero
                } else {
                    ExtentKind::Unallocated
                };
                if at >= file.len() {
                    return Ok(Run {
                        kind: hole,
                        len: left,
                    });
                }
                let r = file.extent_at(at)?;
                let kind = if r.kind == ExtentKind::Data {
                    ExtentKind::Data
                } else {
                    hole
                };
                Ok(Run {
                    kind,
                    len: r.len.min(left).max(1),
                })
            }
            Body::Sparse(map) => {
                let gb = map.grain_bytes;
                let g = rel / gb;
                let grains_left = (e.len - g * gb).div_ceil(gb);
                let (state, count) = map.run(g, grains_left)?;
                let len = (count * gb - rel % gb).min(left).max(1);
                match state {
                    Grain::Data(_) | Grain::Compressed(_) => Ok(Run {
                        kind: ExtentKind::Data,
                        len,
                    }),
                    Grain::Zero => Ok(Run {
                        kind: ExtentKind::Zero,
                        len,
                    }),
                    Grain::Unallocated => self.parent_kind(offset, len),
                }
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Image for VmdkImage {
    fn info(&self) -> ImageInfo {
        let mut i = ImageInfo::new(&self.name, Format::Vmdk, self.len);
        i.subformat = Some(self.subformat.clone());
        let mut bytes = host_allocated(&self.path);
        let mut seen: Vec<&Path> = vec![self.path.as_path()];
        for e in &self.extents {
            if let Some(p) = &e.host_path {
                if !seen.contains(&p.as_path()) {
                    seen.push(p);
                    bytes = bytes.saturating_add(host_allocated(p));
                }
            }
        }
        i.file_bytes = bytes;
        let mut grains = self.extents.iter().filter_map(|e| match &e.body {
            Body::Sparse(m) => Some(m.grain_bytes),
            _ => None,
        });
        if let Some(first) = grains.next() {
            if grains.all(|g| g == first) {
                i.cluster_size = Some(first);
            }
        }
        i.backing_reference = self.parent_hint.clone();
        i.backing = self.parent.as_ref().map(|p| Box::new(p.info()));
        i.extents = self.extents.iter().map(|e| e.info.clone()).collect();
        i.dirty = self.dirty;
        i.notes = self.notes.clone();
        i.details = self.details.clone();
        i
    }
}
