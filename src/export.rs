//! Converting a whole VMware export (OVA, OVF, VMX, or a bare disk) into an output folder:
//! every disk converted, the guest rewritten for its target (one hook call, below), and a
//! libvirt domain XML beside the disks. Shared by `convert IN OUTDIR` and `batch`.
//!
//! Everything is written into a hidden staging folder beside OUTDIR and renamed into place
//! only when the guest is complete (disks synced, digests checked, XML and report written),
//! so an interrupted or failed guest leaves nothing under its final name, and `batch
//! --resume` can trust that a folder with a report in it is done.

use crate::convert::OutFormat;
use crate::libvirt::{domain_xml, DiskBus, XmlDisk};
use crate::progress::Reporter;
use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use transplant_formats::container::{
    open_export, safe_name, ExportOptions, GuestDescription, PendingCheck,
};
use transplant_formats::copy::{copy, CopyOptions, Sink};
use transplant_formats::output::qcow2::Qcow2Compression;
use transplant_formats::output::vmdk::{create_sink as vmdk_sink, VmdkSubformat};
use transplant_formats::output::{
    Qcow2Options, Qcow2Sink, RawSink, VhdxOptions, VhdxSink, VmdkOptions,
};
use transplant_formats::{BlockDev, OpenOptions, Overlay};

/// What the guest is converted for (`--to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// KVM with virtio-blk disks (/dev/vdX) and virtio-net.
    Kvm,
    /// KVM with virtio-scsi disks (names stay /dev/sdX).
    KvmScsi,
    /// A physical machine (SATA/AHCI or NVMe disks, real NICs).
    Physical,
}

impl Target {
    pub fn disk_bus(self) -> DiskBus {
        match self {
            Target::Kvm => DiskBus::Virtio,
            Target::KvmScsi => DiskBus::Scsi,
            Target::Physical => DiskBus::Sata,
        }
    }
}

/// What the guest rewrite did: every change, and what it could not do.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RewriteOutcome {
    /// One line per edit: file, what changed, why.
    pub changes: Vec<String>,
    pub warnings: Vec<String>,
}

/// The guest rewrite: ONE call per guest, over copy-on-write overlays of its disks (in the
/// source's order), before they are converted. The NICs keep the source's MACs (the domain
/// XML gives them), so the guest's bindings by MAC stay true: each is mapped to itself.
pub fn rewrite_guest(
    disks: &[Arc<dyn BlockDev>],
    guest: &GuestDescription,
    target: Target,
) -> Result<RewriteOutcome> {
    let devs = disks
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("{}#disk{}", guest.name, i + 1), d.clone()))
        .collect();
    let (tree, inspection) = crate::v2v::inspect_on(devs, None)?;
    let t = crate::v2v::target_of(target);
    let mut opts = transplant_rewrite::v2v::Options::new(t);
    let source_macs: Vec<&str> = guest.nics.iter().filter_map(|n| n.mac.as_deref()).collect();
    for n in &inspection.nics {
        if let Some(m) = n.mac.as_deref() {
            let m = m.to_ascii_lowercase();
            if source_macs.contains(&m.as_str()) {
                opts.macs_by_old.push((m.clone(), m));
            }
        }
    }
    let conv = crate::v2v::plan(&tree, &inspection, &opts, None)?;
    transplant_rewrite::v2v::apply(&tree, &conv)?;
    tree.sync().context("writing the guest's filesystems")?;
    let changes = conv
        .changes
        .iter()
        .flat_map(|c| {
            c.edits.iter().map(|e| match e.line {
                Some(l) => format!("{}:{l}: {} -> {} ({})", e.file, e.before, e.after, e.reason),
                None => format!("{}: {} -> {} ({})", e.file, e.before, e.after, e.reason),
            })
        })
        .collect();
    let warnings = conv
        .warnings
        .iter()
        .map(|w| match (&w.file, w.line) {
            (Some(f), Some(l)) => format!("{f}:{l}: {}", w.message),
            (Some(f), None) => format!("{f}: {}", w.message),
            _ => w.message.clone(),
        })
        .collect();
    Ok(RewriteOutcome { changes, warnings })
}

/// How to convert one guest.
#[derive(Clone)]
pub struct GuestOptions {
    pub format: OutFormat,
    pub compress: bool,
    pub target: Option<Target>,
    /// Replace an existing output folder.
    pub overwrite: bool,
    /// Copy threads for this guest.
    pub threads: usize,
    pub open: OpenOptions,
    pub cancel: Arc<AtomicBool>,
    /// Show a progress bar per disk / JSON progress lines / nothing.
    pub progress: bool,
    pub json_progress: bool,
    pub quiet: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskReport {
    pub source: String,
    pub output: PathBuf,
    pub format: String,
    pub virtual_size: u64,
    pub data_bytes: u64,
    pub written_bytes: u64,
    /// "SHA256 ok", "not in manifest", ...
    pub digest: String,
}

/// Written as `transplant-guest.json` in the output folder: the record that the guest is
/// done (what `batch --resume` looks for).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuestReport {
    pub input: PathBuf,
    pub output_dir: PathBuf,
    pub domain_xml: PathBuf,
    pub guest: GuestDescription,
    pub ovf_version: Option<u8>,
    pub disks: Vec<DiskReport>,
    /// Files whose manifest digest was verified.
    pub digests_checked: Vec<String>,
    pub rewrite: Option<RewriteOutcome>,
    pub warnings: Vec<String>,
    pub seconds: f64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

pub const REPORT_NAME: &str = "transplant-guest.json";

fn ext(f: OutFormat) -> &'static str {
    match f {
        OutFormat::Raw => "raw",
        OutFormat::Qcow2 => "qcow2",
        OutFormat::Vmdk => "vmdk",
        OutFormat::Vhdx => "vhdx",
    }
}

fn make_sink(f: OutFormat, compress: bool, path: &Path, size: u64) -> Result<Box<dyn Sink>> {
    Ok(match f {
        OutFormat::Raw => {
            if compress {
                bail!("raw output cannot be compressed; use -O qcow2 -c");
            }
            Box::new(RawSink::create(path, size, false)?)
        }
        OutFormat::Qcow2 => {
            let mut o = Qcow2Options::default();
            if compress {
                o.compression = Qcow2Compression::Zlib;
            }
            Box::new(Qcow2Sink::create(path, size, &o, false)?)
        }
        OutFormat::Vmdk => {
            let mut o = VmdkOptions::default();
            if compress {
                o.subformat = VmdkSubformat::StreamOptimized;
            }
            vmdk_sink(path, size, &o, false)?
        }
        OutFormat::Vhdx => {
            if compress {
                bail!("VHDX has no compression; use -O qcow2 -c");
            }
            Box::new(VhdxSink::create(
                path,
                size,
                &VhdxOptions::default(),
                false,
            )?)
        }
    })
}

/// The hidden folder a guest is assembled in, beside its final folder.
fn staging_path(outdir: &Path) -> Result<PathBuf> {
    let parent = outdir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = outdir
        .file_name()
        .with_context(|| format!("{} has no folder name", outdir.display()))?;
    Ok(parent.join(format!(
        ".{}.transplant-partial-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Removes staging folders of `outdir` left by runs that died (their process is gone).
pub fn remove_stale_staging(outdir: &Path) {
    let Some(parent) = outdir.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return;
    };
    let Some(name) = outdir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.transplant-partial-");
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = f.strip_prefix(&prefix).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes the staging folder unless the guest was committed.
struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn fsync_dir(p: &Path) {
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.sync_all();
    }
}

fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// Converts the export at `input` into the folder `outdir` (created; its parent must
/// exist). Fails if `outdir` exists unless `overwrite`.
pub fn convert_guest(input: &Path, outdir: &Path, o: &GuestOptions) -> Result<GuestReport> {
    let start = Instant::now();
    let outdir = absolute(outdir)?;
    if outdir.exists() && !o.overwrite {
        bail!(
            "{} already exists; pass --overwrite to replace it (batch: --resume skips guests already done)",
            outdir.display()
        );
    }
    remove_stale_staging(&outdir);
    let staging_dir = staging_path(&outdir)?;
    if staging_dir.exists() {
        std::fs::remove_dir_all(&staging_dir)
            .with_context(|| format!("removing {}", staging_dir.display()))?;
    }
    std::fs::create_dir(&staging_dir)
        .with_context(|| format!("creating {}", staging_dir.display()))?;
    let mut staging = Staging {
        path: staging_dir.clone(),
        committed: false,
    };

    let export = open_export(
        input,
        &ExportOptions {
            open: o.open.clone(),
            scratch_dir: Some(staging_dir.clone()),
        },
    )
    .with_context(|| format!("cannot open {}", input.display()))?;
    let guest = export.guest.clone();
    let mut warnings = guest.warnings.clone();
    if export.disks.is_empty() {
        bail!("{}: the export has no disk to convert", input.display());
    }

    // Digests of disks read in place are checked beside the copies, on their own thread.
    let checks: Vec<PendingCheck> = export
        .disks
        .iter()
        .filter_map(|d| d.check.clone())
        .collect();
    let check_cancel = Arc::new(AtomicBool::new(false));
    let hash_thread = {
        let cancel = check_cancel.clone();
        let outer = o.cancel.clone();
        std::thread::spawn(move || -> Result<Vec<String>, transplant_formats::Error> {
            let mut done = Vec::new();
            for c in &checks {
                if outer.load(Ordering::Relaxed) {
                    cancel.store(true, Ordering::Relaxed);
                }
                c.run(&cancel)?;
                done.push(c.entry.file.clone());
            }
            Ok(done)
        })
    };
    let stop_hashing = |t: std::thread::JoinHandle<_>| {
        check_cancel.store(true, Ordering::Relaxed);
        let _ = t.join();
    };

    let mut devs: Vec<Arc<dyn BlockDev>> = export
        .disks
        .iter()
        .map(|d| d.image.clone() as Arc<dyn BlockDev>)
        .collect();
    let mut rewrite = None;
    if let Some(t) = o.target {
        let overlays: Vec<Arc<dyn BlockDev>> = devs
            .iter()
            .map(|d| Arc::new(Overlay::new(d.clone())) as Arc<dyn BlockDev>)
            .collect();
        match rewrite_guest(&overlays, &guest, t) {
            Ok(r) => {
                warnings.extend(r.warnings.iter().cloned());
                rewrite = Some(r);
            }
            Err(e) => {
                stop_hashing(hash_thread);
                return Err(e.context("rewriting the guest failed"));
            }
        }
        devs = overlays;
    }

    let mut disks = Vec::new();
    let mut xml_disks = Vec::new();
    let (mut read, mut written) = (0u64, 0u64);
    for (i, (dev, d)) in devs.iter().zip(&export.disks).enumerate() {
        let file = format!("disk{}.{}", i + 1, ext(o.format));
        let path = staging_dir.join(&file);
        let result = (|| -> Result<_> {
            let mut sink = make_sink(o.format, o.compress, &path, dev.len())?;
            let mut copts = CopyOptions::default();
            copts.threads = o.threads.max(1);
            copts.inflight = (copts.threads * 4).max(8);
            copts.cancel = o.cancel.clone();
            let mut reporter = Reporter::new(o.json_progress, o.progress, o.quiet);
            let stats = copy(&**dev, &mut *sink, &copts, &mut |p| reporter.update(p));
            reporter.finish();
            stats.with_context(|| format!("converting {} failed", d.source))
        })();
        let stats = match result {
            Ok(s) => s,
            Err(e) => {
                stop_hashing(hash_thread);
                return Err(e);
            }
        };
        read += stats.data_bytes;
        written += stats.written_bytes;
        let digest = match &d.check {
            Some(c) => format!("{} checked beside the copy", c.entry.algorithm.name()),
            None if export.checked.contains(&d.source) => "checked while unpacking".into(),
            None => "not checked".into(),
        };
        disks.push(DiskReport {
            source: d.source.clone(),
            output: outdir.join(&file),
            format: ext(o.format).into(),
            virtual_size: stats.virtual_size,
            data_bytes: stats.data_bytes,
            written_bytes: stats.written_bytes,
            digest,
        });
        xml_disks.push(XmlDisk {
            path: outdir.join(&file),
            format: ext(o.format).into(),
        });
    }
    let mut checked = export.checked.clone();
    let ovf_version = export.ovf_version;
    match hash_thread.join() {
        Ok(Ok(done)) => checked.extend(done),
        Ok(Err(e)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "{}: a disk does not match the manifest; nothing was written",
                input.display()
            )))
        }
        Err(_) => bail!("the digest thread failed"),
    }
    if o.cancel.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    // The scratch folder of a compressed OVA lives in the staging folder: gone before the
    // rename.
    drop(devs);
    drop(export);

    let dom_name = safe_name(
        outdir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .as_deref()
            .unwrap_or(&guest.name),
    );
    let bus = o.target.map(Target::disk_bus).unwrap_or(DiskBus::Virtio);
    let xml = domain_xml(&dom_name, &guest, &xml_disks, bus, &mut warnings);
    let xml_name = format!("{dom_name}.xml");
    write_synced(&staging_dir.join(&xml_name), xml.as_bytes())?;
    let report = GuestReport {
        input: absolute(input)?,
        output_dir: outdir.clone(),
        domain_xml: outdir.join(&xml_name),
        guest,
        ovf_version,
        disks,
        digests_checked: checked,
        rewrite,
        warnings,
        seconds: start.elapsed().as_secs_f64(),
        bytes_read: read,
        bytes_written: written,
    };
    write_synced(
        &staging_dir.join(REPORT_NAME),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    fsync_dir(&staging_dir);

    // Into place: an old folder (with --overwrite) is moved aside first and removed after.
    let mut old = None;
    if outdir.exists() {
        let aside = staging_dir.with_extension("old");
        std::fs::rename(&outdir, &aside)
            .with_context(|| format!("moving the old {} aside", outdir.display()))?;
        old = Some(aside);
    }
    std::fs::rename(&staging_dir, &outdir)
        .with_context(|| format!("renaming the finished guest to {}", outdir.display()))?;
    staging.committed = true;
    if let Some(p) = outdir.parent() {
        fsync_dir(p);
    }
    if let Some(a) = old {
        let _ = std::fs::remove_dir_all(a);
    }
    Ok(report)
}

/// Whether `convert IN OUT` should take the export path: IN is an OVA, OVF or VMX (file
/// or folder).
pub fn is_export_input(input: &Path) -> bool {
    transplant_formats::container::is_export(input)
}

/// Whether `-O`/`--output-format` was given on the command line (`convert` defaults to raw
/// for single images; a guest folder defaults to qcow2).
pub fn output_format_given() -> bool {
    std::env::args_os().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == "-O" || a.starts_with("--output-format") || (a.starts_with("-O") && a.len() > 2)
    })
}

/// `convert IN OUTDIR` for an export: the guest folder, with a summary line.
#[allow(clippy::too_many_arguments)]
pub fn run_convert(
    input: &Path,
    outdir: &Path,
    format: OutFormat,
    compress: bool,
    target: Option<Target>,
    overwrite: bool,
    threads: Option<usize>,
    open: OpenOptions,
    progress: bool,
    json: bool,
    quiet: bool,
) -> Result<()> {
    let cancel = Arc::new(AtomicBool::new(false));
    let c = cancel.clone();
    let _ = ctrlc::set_handler(move || c.store(true, Ordering::Relaxed));
    let format = if output_format_given() {
        format
    } else {
        OutFormat::Qcow2
    };
    let o = GuestOptions {
        format,
        compress,
        target,
        overwrite,
        threads: threads.unwrap_or_else(|| CopyOptions::default().threads),
        open,
        cancel,
        progress,
        json_progress: json,
        quiet,
    };
    let r = convert_guest(input, outdir, &o)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else if !quiet {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        eprintln!(
            "converted {} ({:?}, {} disk(s)) -> {}: {} of data read, {} written, {:.1}s; domain: {}",
            input.display(),
            r.guest.source,
            r.disks.len(),
            r.output_dir.display(),
            crate::human::size(r.bytes_read),
            crate::human::size(r.bytes_written),
            r.seconds,
            r.domain_xml.display()
        );
    }
    Ok(())
}
