//! VMware exports as inputs: OVA archives (plain or gzip-compressed tar), OVF folders, VMX
//! folders, and a bare disk image, all opened into one shape: a [`GuestDescription`] and
//! the guest's disks as images, in the source's order.
//!
//! Disks of a plain OVA are read in place through a [`FileRange`] of the archive (no copy);
//! a gzip-compressed OVA can only be read front to back, so its members are unpacked into
//! a scratch folder the caller chooses (the output's filesystem), hashed on the way.

pub mod check;
pub mod guest;
pub mod manifest;
pub mod ovf;
pub mod tar;
pub mod vmx;

pub use check::PendingCheck;
pub use guest::{
    normalise_mac, safe_name, DiskLocation, Firmware, GuestDescription, GuestDisk, GuestNic,
    SourceBus, SourceKind,
};

use crate::blockdev::{BlockDev, Extent};
use crate::error::{Error, Result};
use crate::image::{Image, ImageInfo};
use crate::open::{open_image_with, OpenCtx, OpenOptions};
use crate::probe::{probe, Format};
use crate::raw::RawFile;
use crate::slice::Slice;
use manifest::{Hasher, Manifest};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tar::TarSource;

/// A byte range of a host file as a device: how a disk stored in a plain OVA is read where
/// it lies. Holes and reads pass straight through to the archive file.
pub type FileRange = Slice;

/// Opens `len` bytes at `offset` of `file` as a device named `name`.
pub fn file_range(file: Arc<RawFile>, offset: u64, len: u64, name: &str) -> Result<FileRange> {
    Slice::new(file, offset, len, name)
}

/// Opens the image held in a device that is not a file of its own (a member of an OVA):
/// probed, and refused if it names other files (there is no folder to find them in).
pub fn open_image_in(dev: Arc<dyn BlockDev>, display: &Path) -> Result<Arc<dyn Image>> {
    let ctx = OpenCtx::detached();
    let p = probe(&*dev)?;
    let stored = dev.len();
    let inner = match p.format {
        Format::Raw => Ok(Arc::new(DevImage {
            dev,
            probed_as_raw: p.fallback_raw,
        }) as Arc<dyn Image>),
        Format::Qcow2 => crate::qcow2::open(dev, display, &ctx),
        Format::Vmdk => crate::vmdk::open(dev, display, &ctx),
        Format::Vhdx => crate::vhdx::open(dev, display, &ctx),
        Format::Vpc => crate::vhd::open(dev, display, &ctx),
    }?;
    Ok(Arc::new(InPlace { inner, stored }))
}

/// An image read in place inside a container: its `info` counts the member's bytes as the
/// bytes the host stores for it (the readers would look for a file of that name).
struct InPlace {
    inner: Arc<dyn Image>,
    stored: u64,
}

impl BlockDev for InPlace {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn extent_at(&self, offset: u64) -> Result<Extent> {
        self.inner.extent_at(offset)
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
}

impl Image for InPlace {
    fn info(&self) -> ImageInfo {
        let mut i = self.inner.info();
        i.file_bytes = self.stored;
        i.notes
            .push("read in place inside its container, without unpacking".into());
        i
    }
}

/// A raw disk inside a container.
struct DevImage {
    dev: Arc<dyn BlockDev>,
    probed_as_raw: bool,
}

impl BlockDev for DevImage {
    fn len(&self) -> u64 {
        self.dev.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.dev.read_at(buf, offset)
    }
    fn extent_at(&self, offset: u64) -> Result<Extent> {
        self.dev.extent_at(offset)
    }
    fn name(&self) -> &str {
        self.dev.name()
    }
}

impl Image for DevImage {
    fn info(&self) -> ImageInfo {
        let mut i = ImageInfo::new(self.dev.name(), Format::Raw, self.dev.len());
        i.probed_as_raw = self.probed_as_raw;
        i.file_bytes = self.dev.len();
        i
    }
}

/// One disk of an export, opened.
pub struct ExportDisk {
    pub image: Arc<dyn Image>,
    /// What the source calls it: the member name or the file path.
    pub source: String,
    pub description: GuestDisk,
    /// A digest to verify while the disk is converted (plain OVAs and OVF folders).
    pub check: Option<PendingCheck>,
}

/// An opened export.
pub struct Export {
    pub guest: GuestDescription,
    pub disks: Vec<ExportDisk>,
    /// 1 or 2 for OVF-based exports.
    pub ovf_version: Option<u8>,
    /// Digests checked while opening (descriptor, small files, gzip members as unpacked).
    pub checked: Vec<String>,
    /// Holds unpacked members of a compressed OVA; removed when the export is dropped.
    _scratch: Option<tempfile::TempDir>,
}

#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub open: OpenOptions,
    /// Where to unpack a gzip-compressed OVA (a hidden folder is made inside it); the
    /// system temporary folder when not given.
    pub scratch_dir: Option<PathBuf>,
}

/// What kind of input `path` is, by its bytes (and for folders, by what they hold).
pub fn detect(path: &Path) -> Result<SourceKind> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(&name, e))?;
    if meta.is_dir() {
        let (ovf, vmx) = folder_descriptors(path)?;
        return match (ovf.len(), vmx.len()) {
            (1, _) => Ok(SourceKind::Ovf),
            (0, 1) => Ok(SourceKind::Vmx),
            (0, 0) => Err(Error::unsupported(
                &name,
                "a folder without an .ovf or .vmx file is not an export",
            )),
            _ => Err(Error::refused(
                &name,
                "the folder holds several .ovf or .vmx files; name the one to use",
            )),
        };
    }
    let mut head = [0u8; 512];
    let n = {
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(&name, e))?;
        read_up_to(&mut f, &mut head).map_err(|e| Error::io(&name, e))?
    };
    let head = head.get(..n).unwrap_or_default();
    if n == 512 && head.get(257..262) == Some(b"ustar") {
        return Ok(SourceKind::Ova);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".ova")
            || lower.ends_with(".ova.gz")
            || lower.ends_with(".tgz")
            || lower.ends_with(".tar.gz")
        {
            return Ok(SourceKind::Ova);
        }
    }
    let text = String::from_utf8_lossy(head);
    if text.trim_start().starts_with('<')
        && (text.contains("Envelope") || text.starts_with("<?xml"))
    {
        return Ok(SourceKind::Ovf);
    }
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".vmx") {
        return Ok(SourceKind::Vmx);
    }
    Ok(SourceKind::Disk)
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let rest = buf.get_mut(got..).unwrap_or_default();
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn folder_descriptors(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let name = dir.display().to_string();
    let mut ovf = Vec::new();
    let mut vmx = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(&name, e))? {
        let e = e.map_err(|e| Error::io(&name, e))?;
        let p = e.path();
        let ext = p
            .extension()
            .map(|x| x.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "ovf" => ovf.push(p),
            "vmx" => vmx.push(p),
            _ => {}
        }
    }
    ovf.sort();
    vmx.sort();
    Ok((ovf, vmx))
}

/// Whether `path` is an export (OVA, OVF, VMX or a folder of one) rather than a disk.
pub fn is_export(path: &Path) -> bool {
    matches!(
        detect(path),
        Ok(SourceKind::Ova | SourceKind::Ovf | SourceKind::Vmx)
    )
}

fn stem(path: &Path) -> String {
    let s = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guest".into());
    let lower = s.to_ascii_lowercase();
    for ext in [".ova.gz", ".tar.gz", ".ova", ".ovf", ".vmx", ".tgz", ".tar"] {
        if lower.ends_with(ext) {
            return s.get(..s.len() - ext.len()).unwrap_or(&s).to_string();
        }
    }
    path.file_stem()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or(s)
}

/// Opens any export (or a bare disk) as a guest and its disks.
pub fn open_export(path: &Path, opts: &ExportOptions) -> Result<Export> {
    match detect(path)? {
        SourceKind::Ova => open_ova(path, opts),
        SourceKind::Ovf => {
            let p = if path.is_dir() {
                folder_descriptors(path)?
                    .0
                    .into_iter()
                    .next()
                    .unwrap_or_default()
            } else {
                path.to_path_buf()
            };
            open_ovf_file(&p, opts)
        }
        SourceKind::Vmx => {
            let p = if path.is_dir() {
                folder_descriptors(path)?
                    .1
                    .into_iter()
                    .next()
                    .unwrap_or_default()
            } else {
                path.to_path_buf()
            };
            open_vmx(&p, opts)
        }
        SourceKind::Disk => open_disk(path, opts),
    }
}

fn open_disk(path: &Path, opts: &ExportOptions) -> Result<Export> {
    let ctx = OpenCtx::new(opts.open.clone());
    let image = open_image_with(path, &ctx)?;
    let mut g = GuestDescription::new(stem(path), SourceKind::Disk);
    g.warnings.push(
        "a bare disk carries no machine description: memory, CPUs, NICs and firmware are defaults"
            .into(),
    );
    let d = GuestDisk {
        location: DiskLocation::File(path.to_path_buf()),
        bus: SourceBus::Unknown,
        controller: 0,
        unit: 0,
        controller_model: None,
        capacity: Some(image.len()),
    };
    g.disks.push(d.clone());
    Ok(Export {
        guest: g,
        disks: vec![ExportDisk {
            image,
            source: path.display().to_string(),
            description: d,
            check: None,
        }],
        ovf_version: None,
        checked: Vec::new(),
        _scratch: None,
    })
}

fn open_vmx(path: &Path, opts: &ExportOptions) -> Result<Export> {
    let name = path.display().to_string();
    let raw = RawFile::open(path, false)?;
    if raw.len() > vmx::MAX_VMX_BYTES as u64 {
        return Err(Error::corrupt(
            &name,
            "vmx file",
            0,
            "far larger than any .vmx file",
        ));
    }
    let mut text = vec![0u8; raw.len() as usize];
    raw.read_at(&mut text, 0)?;
    let v = vmx::parse(&text, &name)?;
    let mut g = vmx::describe(&v, &stem(path));
    let ctx = OpenCtx::new(opts.open.clone());
    let mut disks = Vec::new();
    for d in &mut g.disks {
        let DiskLocation::File(f) = &d.location else {
            continue;
        };
        let reference = f.to_string_lossy().into_owned();
        let resolved = match ctx.resolve(path, &reference) {
            Ok(r) => r,
            Err(e) => {
                // A disk named by its datastore path on the old host
                // ("/vmfs/volumes/ds1/web/web.vmdk"): exports carry it beside the .vmx.
                let base = reference.rsplit(['/', '\\']).next().unwrap_or("");
                match (base != reference && !base.is_empty() && base != "..")
                    .then(|| ctx.resolve(path, base).ok())
                    .flatten()
                {
                    Some(r) => {
                        g.warnings.push(format!(
                            "'{reference}' could not be used ({e}); took '{base}' beside the .vmx instead"
                        ));
                        r
                    }
                    None => return Err(e),
                }
            }
        };
        let image = open_image_with(&resolved, &ctx)?;
        d.capacity = Some(image.len());
        d.location = DiskLocation::File(resolved.clone());
        disks.push(ExportDisk {
            image,
            source: reference,
            description: d.clone(),
            check: None,
        });
    }
    let mut chain_notes = Vec::new();
    for d in &disks {
        let mut depth = 0;
        let mut i = d.image.info();
        while let Some(b) = i.backing {
            depth += 1;
            i = *b;
        }
        if depth > 0 {
            chain_notes.push(format!(
                "{} is a snapshot delta {depth} level(s) above its base {}; the current state is converted",
                d.source, i.filename
            ));
        }
    }
    g.warnings.extend(chain_notes);
    Ok(Export {
        guest: g,
        disks,
        ovf_version: None,
        checked: Vec::new(),
        _scratch: None,
    })
}

/// Manifest bookkeeping shared by the three OVF-based readers.
struct Checks {
    manifest: Option<Manifest>,
    /// The descriptor's folder inside the archive ("" or "dir/"): manifest names and
    /// descriptor hrefs are relative to it.
    prefix: String,
    package: String,
    checked: Vec<String>,
    warnings: Vec<String>,
}

impl Checks {
    fn new(manifest: Option<Manifest>, package: &str) -> Self {
        let mut warnings = Vec::new();
        match &manifest {
            None => warnings.push(format!(
                "{package} has no manifest (.mf): no digest is checked"
            )),
            Some(m) => warnings.extend(m.warnings.iter().cloned()),
        }
        Checks {
            manifest,
            prefix: String::new(),
            package: package.to_string(),
            checked: Vec::new(),
            warnings,
        }
    }

    fn entry(&mut self, file: &str) -> Option<manifest::Entry> {
        let file = file.strip_prefix(self.prefix.as_str()).unwrap_or(file);
        let m = self.manifest.as_ref()?;
        let e = m.entry(file).cloned();
        if e.is_none() {
            self.warnings.push(format!(
                "the manifest has no digest for '{file}': it is not checked"
            ));
        }
        e
    }

    /// Checks bytes held in memory now.
    fn check_now(&mut self, file: &str, data: &[u8]) -> Result<()> {
        if let Some(e) = self.entry(file) {
            let mut h = Hasher::new(e.algorithm);
            h.update(data);
            manifest::check(&e, &h.finish(), &self.package)?;
            self.checked.push(file.to_string());
        }
        Ok(())
    }

    /// Warns for manifest lines naming files the package does not have.
    fn unknown_entries(&mut self, present: &[String]) {
        if let Some(m) = &self.manifest {
            for e in &m.entries {
                let full = format!("{}{}", self.prefix, e.file);
                if !present.iter().any(|p| p == &e.file || *p == full) {
                    self.warnings.push(format!(
                        "the manifest lists '{}', which the package does not hold",
                        e.file
                    ));
                }
            }
        }
    }
}

fn read_small(dev: &dyn BlockDev, max: usize, what: &str) -> Result<Vec<u8>> {
    if dev.len() > max as u64 {
        return Err(Error::corrupt(
            dev.name(),
            what,
            0,
            format!("{} bytes is far larger than any real one", dev.len()),
        ));
    }
    let mut b = vec![0u8; dev.len() as usize];
    dev.read_at(&mut b, 0)?;
    Ok(b)
}

fn open_ovf_file(path: &Path, opts: &ExportOptions) -> Result<Export> {
    let name = path.display().to_string();
    let raw = RawFile::open(path, false)?;
    let text = read_small(&raw, ovf::MAX_OVF_BYTES, "ovf descriptor")?;
    let o = ovf::parse(&text, &name, &stem(path))?;
    let mf_path = path.with_extension("mf");
    let manifest = if mf_path.is_file() {
        let mf = RawFile::open(&mf_path, false)?;
        let t = read_small(&mf, manifest::MAX_MANIFEST_BYTES, "ovf manifest")?;
        Some(manifest::parse(&t, &mf_path.display().to_string())?)
    } else {
        None
    };
    let ovf_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut checks = Checks::new(manifest, &name);
    checks.check_now(&ovf_name, &text)?;
    let ctx = OpenCtx::new(opts.open.clone());
    let mut g = o.guest.clone();
    g.source = SourceKind::Ovf;
    let mut scratch: Option<tempfile::TempDir> = None;
    let mut disks = Vec::new();
    let mut present = vec![ovf_name];
    for d in &mut g.disks {
        let DiskLocation::Member(href) = d.location.clone() else {
            continue;
        };
        present.push(href.clone());
        let file = ctx.resolve(path, &href)?;
        let compressed = o.file_by_href(&href).and_then(|f| f.compression.clone());
        let entry = checks.entry(&href);
        let (image, check) = if let Some(c) = compressed {
            if c != "gzip" {
                return Err(Error::unsupported(
                    &name,
                    format!("'{c}' compression of '{href}'"),
                ));
            }
            let dir = scratch_dir(&mut scratch, opts)?;
            let f =
                std::fs::File::open(&file).map_err(|e| Error::io(file.display().to_string(), e))?;
            let out = unpack_gzip_file(f, &href, &dir, entry.as_ref(), &name)?;
            if entry.is_some() {
                checks.checked.push(href.clone());
            }
            (open_image_with(&out, &ctx)?, None)
        } else {
            let image = open_image_with(&file, &ctx)?;
            let check = match entry {
                Some(e) => Some(PendingCheck {
                    dev: Arc::new(RawFile::open(&file, false)?),
                    entry: e,
                    package: name.clone(),
                    offset: 0,
                }),
                None => None,
            };
            (image, check)
        };
        d.location = DiskLocation::File(file.clone());
        if d.capacity.is_none() {
            d.capacity = Some(image.len());
        }
        disks.push(ExportDisk {
            image,
            source: href,
            description: d.clone(),
            check,
        });
    }
    checks.unknown_entries(&present);
    g.warnings.extend(checks.warnings);
    Ok(Export {
        guest: g,
        disks,
        ovf_version: Some(o.version),
        checked: checks.checked,
        _scratch: scratch,
    })
}

fn scratch_dir(scratch: &mut Option<tempfile::TempDir>, opts: &ExportOptions) -> Result<PathBuf> {
    if let Some(s) = scratch {
        return Ok(s.path().to_path_buf());
    }
    let parent = opts.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let t = tempfile::Builder::new()
        .prefix(".transplant-unpack-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(parent.display().to_string(), e))?;
    let p = t.path().to_path_buf();
    *scratch = Some(t);
    Ok(p)
}

/// The host file name an unpacked member gets: its path with `/` flattened.
fn unpacked_name(member: &str) -> String {
    member.replace('/', "_")
}

/// Copies `n` bytes from `src` into `dst` while hashing them with `hasher`.
fn copy_hashing(
    src: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    n: u64,
    dst: &mut std::fs::File,
    hasher: &mut Option<Hasher>,
    dst_name: &str,
) -> Result<()> {
    let mut buf = vec![0u8; check::HASH_BLOCK];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        let b = buf.get_mut(..k).unwrap_or_default();
        src(b)?;
        if let Some(h) = hasher {
            h.update(b);
        }
        // Zero blocks become holes: unpacked raw disks stay sparse.
        if b.iter().all(|&c| c == 0) {
            dst.seek(std::io::SeekFrom::Current(k as i64))
                .map_err(|e| Error::io(dst_name, e))?;
        } else {
            dst.write_all(b).map_err(|e| Error::io(dst_name, e))?;
        }
        left -= k as u64;
    }
    let end = dst.stream_position().map_err(|e| Error::io(dst_name, e))?;
    dst.set_len(end).map_err(|e| Error::io(dst_name, e))?;
    Ok(())
}

/// Unpacks a gzip-compressed file of an OVF package (`ovf:compression="gzip"`), hashing
/// the stored (compressed) bytes against the manifest as they are read.
fn unpack_gzip_file(
    src: std::fs::File,
    href: &str,
    dir: &Path,
    entry: Option<&manifest::Entry>,
    package: &str,
) -> Result<PathBuf> {
    let out = dir.join(unpacked_name(href));
    let hashing = HashingReader {
        inner: std::io::BufReader::new(src),
        hasher: entry.map(|e| Hasher::new(e.algorithm)),
    };
    let mut dec = flate2::read::MultiGzDecoder::new(hashing);
    let mut f = std::fs::File::create(&out).map_err(|e| Error::io(out.display().to_string(), e))?;
    std::io::copy(&mut dec, &mut f).map_err(|e| {
        Error::corrupt(package, "gzip-compressed file", 0, format!("'{href}': {e}"))
    })?;
    let hashing = dec.into_inner();
    if let (Some(e), Some(h)) = (entry, hashing.hasher) {
        manifest::check(e, &h.finish(), package)?;
    }
    Ok(out)
}

struct HashingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(buf.get(..n).unwrap_or_default());
        }
        Ok(n)
    }
}

fn open_ova(path: &Path, opts: &ExportOptions) -> Result<Export> {
    let name = path.display().to_string();
    let mut head = [0u8; 2];
    {
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(&name, e))?;
        read_up_to(&mut f, &mut head).map_err(|e| Error::io(&name, e))?;
    }
    if head == [0x1f, 0x8b] {
        return open_ova_gzip(path, opts);
    }
    let raw = Arc::new(RawFile::open(path, false)?);
    let members = tar::index(&*raw)?;
    let files: Vec<&tar::Member> = members
        .iter()
        .filter(|m| m.kind == tar::MemberKind::File)
        .collect();
    let range = |m: &tar::Member| -> Result<Arc<dyn BlockDev>> {
        Ok(Arc::new(file_range(
            raw.clone(),
            m.data_offset,
            m.size,
            &format!("{name}:{}", m.name),
        )?))
    };
    let ovf_m = files
        .iter()
        .find(|m| m.name.to_ascii_lowercase().ends_with(".ovf"))
        .ok_or_else(|| Error::corrupt(&name, "ova archive", 0, "it holds no .ovf descriptor"))?;
    let text = read_small(&*range(ovf_m)?, ovf::MAX_OVF_BYTES, "ovf descriptor")?;
    let o = ovf::parse(&text, &format!("{name}:{}", ovf_m.name), &stem(path))?;
    let manifest = match files
        .iter()
        .find(|m| m.name.to_ascii_lowercase().ends_with(".mf"))
    {
        Some(m) => {
            let t = read_small(&*range(m)?, manifest::MAX_MANIFEST_BYTES, "ovf manifest")?;
            Some(manifest::parse(&t, &format!("{name}:{}", m.name))?)
        }
        None => None,
    };
    let mut checks = Checks::new(manifest, &name);
    checks.prefix = member_dir(&ovf_m.name);
    checks.check_now(&ovf_m.name, &text)?;
    let mut g = o.guest.clone();
    g.source = SourceKind::Ova;
    let mut scratch = None;
    let mut disks = Vec::new();
    for d in &mut g.disks {
        let DiskLocation::Member(href) = d.location.clone() else {
            continue;
        };
        let want = tar::clean_name(format!("{}{href}", checks.prefix).as_bytes(), &name)?;
        let m = files.iter().find(|m| m.name == want).ok_or_else(|| {
            Error::corrupt(
                &name,
                "ova archive",
                0,
                format!("the descriptor names disk file '{href}', which the archive does not hold"),
            )
        })?;
        let dev = range(m)?;
        if let Some(want) = o.file_by_href(&href).and_then(|f| f.size) {
            if want != m.size {
                g.warnings.push(format!(
                    "the descriptor gives '{href}' {want} bytes but the archive holds {}",
                    m.size
                ));
            }
        }
        let entry = checks.entry(&m.name);
        let compression = o.file_by_href(&href).and_then(|f| f.compression.clone());
        let display = PathBuf::from(format!("{name}:{}", m.name));
        let (image, check) = match compression.as_deref() {
            None => {
                let image = open_image_in(dev.clone(), &display)?;
                let check = entry.map(|e| PendingCheck {
                    dev,
                    entry: e,
                    package: name.clone(),
                    offset: m.data_offset,
                });
                (image, check)
            }
            Some("gzip") => {
                let dir = scratch_dir(&mut scratch, opts)?;
                let out = dir.join(unpacked_name(&m.name));
                let mut f = std::fs::File::create(&out)
                    .map_err(|e| Error::io(out.display().to_string(), e))?;
                let mut hasher = entry.as_ref().map(|e| Hasher::new(e.algorithm));
                let stored = DevReader { dev: &*dev, pos: 0 };
                let hashing = HashingReader {
                    inner: std::io::BufReader::with_capacity(1 << 20, stored),
                    hasher: hasher.take(),
                };
                let mut dec = flate2::read::MultiGzDecoder::new(hashing);
                std::io::copy(&mut dec, &mut f).map_err(|e| {
                    Error::corrupt(
                        &name,
                        "gzip-compressed member",
                        m.data_offset,
                        format!("'{}': {e}", m.name),
                    )
                })?;
                if let (Some(e), Some(h)) = (&entry, dec.into_inner().hasher) {
                    manifest::check(e, &h.finish(), &name)?;
                    checks.checked.push(m.name.clone());
                }
                (
                    open_image_with(&out, &OpenCtx::new(opts.open.clone()))?,
                    None,
                )
            }
            Some(other) => {
                return Err(Error::unsupported(
                    &name,
                    format!("'{other}' compression of '{href}'"),
                ))
            }
        };
        if d.capacity.is_none() {
            d.capacity = Some(image.len());
        }
        disks.push(ExportDisk {
            image,
            source: m.name.clone(),
            description: d.clone(),
            check,
        });
    }
    // Other small members the manifest covers (NVRAM, ...) are checked now.
    for m in &files {
        let is_disk = disks.iter().any(|d| d.source == m.name);
        let lower = m.name.to_ascii_lowercase();
        if is_disk || m.name == ovf_m.name || lower.ends_with(".mf") || lower.ends_with(".cert") {
            continue;
        }
        if m.size <= 64 << 20
            && checks.manifest.as_ref().is_some_and(|x| {
                x.entry(
                    m.name
                        .strip_prefix(checks.prefix.as_str())
                        .unwrap_or(&m.name),
                )
                .is_some()
            })
        {
            let data = read_small(&*range(m)?, 64 << 20, "ova member")?;
            checks.check_now(&m.name, &data)?;
        }
    }
    let present: Vec<String> = files.iter().map(|m| m.name.clone()).collect();
    checks.unknown_entries(&present);
    g.warnings.extend(checks.warnings);
    Ok(Export {
        guest: g,
        disks,
        ovf_version: Some(o.version),
        checked: checks.checked,
        _scratch: scratch,
    })
}

/// The folder of a member inside the archive, with its trailing `/` ("" at the top).
fn member_dir(name: &str) -> String {
    match name.rfind('/') {
        Some(i) => name.get(..=i).unwrap_or("").to_string(),
        None => String::new(),
    }
}

/// Sequential `Read` over a device.
struct DevReader<'a> {
    dev: &'a dyn BlockDev,
    pos: u64,
}

impl Read for DevReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self
            .dev
            .len()
            .saturating_sub(self.pos)
            .min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let b = buf.get_mut(..n).unwrap_or_default();
        self.dev
            .read_at(b, self.pos)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A member unpacked from a compressed OVA: name, host path, digest when hashed on the way.
type Unpacked = (String, PathBuf, Option<(manifest::Algorithm, Vec<u8>)>);

/// A gzip-compressed OVA: walked once, front to back. The descriptor and manifest are
/// kept in memory; every other file member is unpacked into the scratch folder, hashed as
/// it streams past when the manifest has already been seen (OVF puts it second), or after.
fn open_ova_gzip(path: &Path, opts: &ExportOptions) -> Result<Export> {
    let name = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| Error::io(&name, e))?;
    let dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, f));
    let mut src = tar::StreamSource::new(dec, &name);
    let mut scratch = None;
    let dir = scratch_dir(&mut scratch, opts)?;
    let mut ovf_text: Option<(String, Vec<u8>)> = None;
    // Member names of the files the descriptor references, once it has been seen.
    let mut hrefs: Option<Vec<String>> = None;
    let mut manifest: Option<Manifest> = None;
    // (member name, unpacked path, digest when hashed while unpacking)
    let mut unpacked: Vec<Unpacked> = Vec::new();
    let mut count = 0usize;
    while let Some(m) = tar::next_member(&mut src)? {
        count += 1;
        if count > tar::MAX_MEMBERS {
            return Err(Error::corrupt(
                &name,
                "tar archive",
                m.header_offset,
                "too many members",
            ));
        }
        let lower = m.name.to_ascii_lowercase();
        if m.kind != tar::MemberKind::File {
            src.skip(m.size)?;
        } else if lower.ends_with(".ovf") && ovf_text.is_none() {
            if m.size > ovf::MAX_OVF_BYTES as u64 {
                return Err(Error::corrupt(
                    &name,
                    "ovf descriptor",
                    m.data_offset,
                    "far larger than any descriptor",
                ));
            }
            let mut b = vec![0u8; m.size as usize];
            src.read_data(&mut b)?;
            hrefs = Some(
                ovf::parse(&b, &format!("{name}:{}", m.name), "guest")?
                    .files
                    .iter()
                    .filter_map(|f| {
                        tar::clean_name(
                            format!("{}{}", member_dir(&m.name), f.href).as_bytes(),
                            &name,
                        )
                        .ok()
                    })
                    .collect(),
            );
            ovf_text = Some((m.name.clone(), b));
        } else if lower.ends_with(".mf") && manifest.is_none() {
            if m.size > manifest::MAX_MANIFEST_BYTES as u64 {
                return Err(Error::corrupt(
                    &name,
                    "ovf manifest",
                    m.data_offset,
                    "far larger than any manifest",
                ));
            }
            let mut b = vec![0u8; m.size as usize];
            src.read_data(&mut b)?;
            manifest = Some(manifest::parse(&b, &format!("{name}:{}", m.name))?);
        } else if hrefs.as_ref().is_some_and(|h| !h.contains(&m.name)) {
            // Not a file the descriptor names (an ISO, a certificate): not unpacked.
            src.skip(m.size)?;
        } else {
            let out = dir.join(unpacked_name(&m.name));
            let mut f =
                std::fs::File::create(&out).map_err(|e| Error::io(out.display().to_string(), e))?;
            let prefix = ovf_text
                .as_ref()
                .map(|o| member_dir(&o.0))
                .unwrap_or_default();
            let rel = m.name.strip_prefix(prefix.as_str()).unwrap_or(&m.name);
            let entry = manifest.as_ref().and_then(|x| x.entry(rel)).cloned();
            let mut hasher = entry.as_ref().map(|e| Hasher::new(e.algorithm));
            let out_name = out.display().to_string();
            copy_hashing(
                &mut |b| src.read_data(b),
                m.size,
                &mut f,
                &mut hasher,
                &out_name,
            )?;
            let digest = entry.zip(hasher).map(|(e, h)| (e.algorithm, h.finish()));
            unpacked.push((m.name.clone(), out, digest));
        }
        src.skip(tar::padding(m.size))?;
    }
    let (ovf_name, text) = ovf_text
        .ok_or_else(|| Error::corrupt(&name, "ova archive", 0, "it holds no .ovf descriptor"))?;
    let o = ovf::parse(&text, &format!("{name}:{ovf_name}"), &stem(path))?;
    let mut checks = Checks::new(manifest, &name);
    checks.prefix = member_dir(&ovf_name);
    checks.check_now(&ovf_name, &text)?;
    let ctx = OpenCtx::new(opts.open.clone());
    let mut g = o.guest.clone();
    g.source = SourceKind::Ova;
    let mut disks = Vec::new();
    for d in &mut g.disks {
        let DiskLocation::Member(href) = d.location.clone() else {
            continue;
        };
        let want = tar::clean_name(format!("{}{href}", checks.prefix).as_bytes(), &name)?;
        let (mname, file, digest) = unpacked.iter().find(|u| u.0 == want).ok_or_else(|| {
            Error::corrupt(
                &name,
                "ova archive",
                0,
                format!("the descriptor names disk file '{href}', which the archive does not hold"),
            )
        })?;
        let entry = checks.entry(mname);
        let mut check = None;
        if let Some(e) = entry {
            match digest {
                Some((_, got)) => {
                    manifest::check(&e, got, &name)?;
                    checks.checked.push(mname.clone());
                }
                None => {
                    check = Some(PendingCheck {
                        dev: Arc::new(RawFile::open(file, false)?),
                        entry: e,
                        package: name.clone(),
                        offset: 0,
                    })
                }
            }
        }
        let compressed = o.file_by_href(&href).and_then(|f| f.compression.clone());
        let file = if compressed.as_deref() == Some("gzip") {
            let f =
                std::fs::File::open(file).map_err(|e| Error::io(file.display().to_string(), e))?;
            let inner = format!("{}.unpacked", unpacked_name(mname));
            let out = unpack_gzip_file(f, &inner, &dir, None, &name)?;
            // The stored (compressed) member's digest was checked above or is pending.
            out
        } else {
            file.clone()
        };
        let image = open_image_with(&file, &ctx)?;
        if d.capacity.is_none() {
            d.capacity = Some(image.len());
        }
        disks.push(ExportDisk {
            image,
            source: mname.clone(),
            description: d.clone(),
            check,
        });
    }
    for (mname, _, digest) in &unpacked {
        if disks.iter().any(|d| &d.source == mname) {
            continue;
        }
        if let (Some(e), Some((_, got))) = (
            checks
                .manifest
                .as_ref()
                .and_then(|x| x.entry(mname))
                .cloned(),
            digest,
        ) {
            manifest::check(&e, got, &name)?;
            checks.checked.push(mname.clone());
        }
    }
    let mut present: Vec<String> = unpacked.iter().map(|u| u.0.clone()).collect();
    present.push(ovf_name);
    checks.unknown_entries(&present);
    g.warnings.extend(checks.warnings);
    Ok(Export {
        guest: g,
        disks,
        ovf_version: Some(o.version),
        checked: checks.checked,
        _scratch: scratch,
    })
}
