//! `transplant batch`: many VMware exports at once. Each guest goes to its own folder under
//! `--out` (assembled in a hidden staging folder and renamed when complete), N guests run
//! at a time, one guest's failure never stops the others, and the end is a summary table
//! and a JSON report. `--resume` skips guests whose folder already holds their report.

use crate::convert::OutFormat;
use crate::export::{convert_guest, GuestOptions, GuestReport, Target, REPORT_NAME};
use crate::{human, OpenArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use transplant_formats::container::{detect, safe_name, SourceKind};

/// Convert many VMware exports (OVA, OVF, VMX folders, disks), N at a time.
///
/// Each INPUT is an export file, a folder holding one export (.ovf or .vmx), a folder of
/// exports, or a list file naming one input per line. Each guest is written to
/// DIR/NAME/ (disks, NAME.xml libvirt domain, transplant-guest.json) and appears there
/// only when complete.
///
/// Examples:
///   transplant batch exports/*.ova --out /srv/kvm --to kvm -j 2 --report report.json
///   transplant batch list.txt --out /srv/kvm --resume
#[derive(Args)]
pub struct BatchArgs {
    /// Exports, folders of exports, or list files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output folder (created if missing); one subfolder per guest.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Rewrite each guest for this target; also picks the domain XML's disk bus.
    #[arg(long, value_enum)]
    to: Option<Target>,
    /// Guests converted at the same time.
    #[arg(short = 'j', long, value_name = "N", default_value_t = 1)]
    jobs: usize,
    /// Write the JSON report here (also when some guests fail).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Skip guests whose output folder is already complete.
    #[arg(long)]
    resume: bool,
    /// Replace guests' output folders that exist.
    #[arg(long)]
    overwrite: bool,
    /// Disk format.
    #[arg(
        short = 'O',
        long = "output-format",
        value_enum,
        default_value = "qcow2"
    )]
    out_format: OutFormat,
    /// Compress the disks (qcow2 zlib, vmdk streamOptimized).
    #[arg(short = 'c', long)]
    compress: bool,
    /// Copy threads per guest (default: the cores divided among the jobs).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Only the summary table.
    #[arg(short = 'q', long)]
    quiet: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// One guest to convert.
#[derive(Debug, Clone)]
pub struct Job {
    pub input: PathBuf,
    /// Its folder name under `--out`.
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GuestResult {
    pub name: String,
    pub input: PathBuf,
    pub result: Outcome,
    pub error: Option<String>,
    /// corrupt, unsupported, refused, io, or null for other failures.
    pub error_kind: Option<transplant_formats::ErrorKind>,
    pub warnings: Vec<String>,
    pub seconds: f64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub output_dir: PathBuf,
    pub report: Option<GuestReport>,
}

#[derive(serde::Serialize)]
struct BatchReport<'a> {
    out: &'a Path,
    target: Option<Target>,
    format: String,
    jobs: usize,
    seconds: f64,
    ok: usize,
    failed: usize,
    skipped: usize,
    guests: &'a [GuestResult],
}

fn is_list_file(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    if !meta.is_file() || meta.len() > 1 << 20 {
        return false;
    }
    let Ok(text) = std::fs::read(p) else {
        return false;
    };
    if text.contains(&0) {
        return false;
    }
    let Ok(text) = String::from_utf8(text) else {
        return false;
    };
    let base = p.parent().unwrap_or(Path::new("."));
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .peekable();
    lines.peek().is_some() && lines.all(|l| Path::new(l).exists() || base.join(l).exists())
}

fn list_entries(p: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
    let base = p.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            if Path::new(l).exists() {
                PathBuf::from(l)
            } else {
                base.join(l)
            }
        })
        .collect())
}

fn job_name(p: &Path) -> String {
    let f = p
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guest".into());
    let lower = f.to_ascii_lowercase();
    let mut stem = f.clone();
    for ext in [
        ".ova.gz", ".tar.gz", ".ova", ".ovf", ".vmx", ".tgz", ".tar", ".vmdk", ".qcow2", ".img",
        ".raw",
    ] {
        if lower.ends_with(ext) {
            stem = f.get(..f.len() - ext.len()).unwrap_or(&f).to_string();
            break;
        }
    }
    safe_name(&stem)
}

/// Expands the inputs into guests, in order, with unique folder names.
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<Job>> {
    let mut paths = Vec::new();
    for i in inputs {
        collect(i, &mut paths, 0)?;
    }
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    for p in paths {
        let base = job_name(&p);
        let mut name = base.clone();
        let mut n = 2;
        while !seen.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        jobs.push(Job { input: p, name });
    }
    Ok(jobs)
}

fn collect(p: &Path, out: &mut Vec<PathBuf>, depth: u32) -> Result<()> {
    if depth > 4 {
        bail!("{}: list files nest too deep", p.display());
    }
    if !p.exists() {
        bail!("{}: no such file or folder", p.display());
    }
    if p.is_dir() {
        if detect(p).is_ok() {
            out.push(p.to_path_buf());
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("{}", p.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|e| {
                !e.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        entries.sort();
        let before = out.len();
        for e in entries {
            let take = if e.is_dir() {
                detect(&e).is_ok()
            } else {
                matches!(
                    detect(&e),
                    Ok(SourceKind::Ova | SourceKind::Ovf | SourceKind::Vmx)
                )
            };
            if take {
                out.push(e);
            }
        }
        if out.len() == before {
            bail!(
                "{}: the folder holds no export (.ova, .ovf, .vmx)",
                p.display()
            );
        }
        return Ok(());
    }
    match detect(p) {
        Ok(SourceKind::Disk) if is_list_file(p) => {
            for e in list_entries(p)? {
                collect(&e, out, depth + 1)?;
            }
            Ok(())
        }
        _ => {
            out.push(p.to_path_buf());
            Ok(())
        }
    }
}

fn run_one(job: &Job, a: &BatchArgs, o: &GuestOptions) -> GuestResult {
    let outdir = a.out.join(&job.name);
    let start = Instant::now();
    let mut r = GuestResult {
        name: job.name.clone(),
        input: job.input.clone(),
        result: Outcome::Ok,
        error: None,
        error_kind: None,
        warnings: Vec::new(),
        seconds: 0.0,
        bytes_read: 0,
        bytes_written: 0,
        output_dir: outdir.clone(),
        report: None,
    };
    if a.resume && outdir.join(REPORT_NAME).is_file() {
        r.result = Outcome::Skipped;
        r.warnings.push("already done (--resume)".into());
        return r;
    }
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        convert_guest(&job.input, &outdir, o)
    }));
    r.seconds = start.elapsed().as_secs_f64();
    match res {
        Ok(Ok(rep)) => {
            r.warnings = rep.warnings.clone();
            r.bytes_read = rep.bytes_read;
            r.bytes_written = rep.bytes_written;
            r.report = Some(rep);
        }
        Ok(Err(e)) => {
            r.result = Outcome::Failed;
            r.error_kind = e
                .chain()
                .find_map(|c| c.downcast_ref::<transplant_formats::Error>())
                .map(|x| x.kind());
            let mut msg = e.to_string();
            for c in e.chain().skip(1) {
                let c = c.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            r.error = Some(msg);
        }
        Err(_) => {
            r.result = Outcome::Failed;
            r.error = Some("internal error (panic) while converting this guest".into());
        }
    }
    r
}

pub fn run(a: BatchArgs) -> Result<()> {
    let start = Instant::now();
    let jobs = expand(&a.inputs)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let cancel = Arc::new(AtomicBool::new(false));
    let c = cancel.clone();
    let _ = ctrlc::set_handler(move || c.store(true, Ordering::Relaxed));
    let n_jobs = a.jobs.max(1).min(jobs.len().max(1));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let threads = a.threads.unwrap_or((cores / n_jobs).max(1));
    let o = GuestOptions {
        format: a.out_format,
        compress: a.compress,
        target: a.to,
        overwrite: a.overwrite,
        threads,
        open: a.open.options(),
        cancel: cancel.clone(),
        progress: false,
        json_progress: false,
        quiet: true,
    };
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<GuestResult>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|s| {
        for _ in 0..n_jobs {
            s.spawn(|| loop {
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let r = run_one(job, &a, &o);
                let k = finished.fetch_add(1, Ordering::Relaxed) + 1;
                if !a.quiet && !a.json {
                    let what = match r.result {
                        Outcome::Ok => format!(
                            "ok ({} warning(s), {:.1}s, {} written)",
                            r.warnings.len(),
                            r.seconds,
                            human::size(r.bytes_written)
                        ),
                        Outcome::Skipped => "skipped (already done)".into(),
                        Outcome::Failed => {
                            format!("FAILED: {}", r.error.as_deref().unwrap_or(""))
                        }
                    };
                    eprintln!("[{k}/{}] {}: {what}", jobs.len(), r.name);
                }
                if let Ok(mut v) = results.lock() {
                    if let Some(slot) = v.get_mut(i) {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    let interrupted = cancel.load(Ordering::Relaxed);
    let results: Vec<GuestResult> = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .zip(&jobs)
        .map(|(r, j)| {
            r.unwrap_or_else(|| GuestResult {
                name: j.name.clone(),
                input: j.input.clone(),
                result: Outcome::Failed,
                error: Some("not started: the batch was interrupted".into()),
                error_kind: None,
                warnings: Vec::new(),
                seconds: 0.0,
                bytes_read: 0,
                bytes_written: 0,
                output_dir: a.out.join(&j.name),
                report: None,
            })
        })
        .collect();
    let count = |k: Outcome| results.iter().filter(|r| r.result == k).count();
    let (ok, failed, skipped) = (
        count(Outcome::Ok),
        count(Outcome::Failed),
        count(Outcome::Skipped),
    );
    let report = BatchReport {
        out: &a.out,
        target: a.to,
        format: format!("{:?}", a.out_format).to_lowercase(),
        jobs: n_jobs,
        seconds: start.elapsed().as_secs_f64(),
        ok,
        failed,
        skipped,
        guests: &results,
    };
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &a.report {
        let tmp = p.with_extension("json.transplant-partial");
        std::fs::write(&tmp, &text).with_context(|| format!("{}", tmp.display()))?;
        std::fs::rename(&tmp, p).with_context(|| format!("{}", p.display()))?;
    }
    if a.json {
        println!("{text}");
    } else {
        print_table(&results, report.seconds);
    }
    if interrupted {
        bail!("interrupted: {ok} done, {skipped} skipped, the rest left no output");
    }
    if failed > 0 {
        bail!("{failed} of {} guests failed", results.len());
    }
    Ok(())
}

fn print_table(results: &[GuestResult], seconds: f64) {
    let w = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    println!(
        "{:<w$}  {:<7}  {:>8}  {:>8}  {:>10}",
        "GUEST", "RESULT", "WARNINGS", "TIME", "BYTES"
    );
    for r in results {
        let res = match r.result {
            Outcome::Ok => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        };
        println!(
            "{:<w$}  {:<7}  {:>8}  {:>7.1}s  {:>10}",
            r.name,
            res,
            r.warnings.len(),
            r.seconds,
            human::size(r.bytes_written)
        );
    }
    let total: u64 = results.iter().map(|r| r.bytes_written).sum();
    println!(
        "{} guest(s): {} ok, {} failed, {} skipped; {} written in {:.1}s",
        results.len(),
        results.iter().filter(|r| r.result == Outcome::Ok).count(),
        results
            .iter()
            .filter(|r| r.result == Outcome::Failed)
            .count(),
        results
            .iter()
            .filter(|r| r.result == Outcome::Skipped)
            .count(),
        human::size(total),
        seconds
    );
    for r in results.iter().filter(|r| r.result == Outcome::Failed) {
        println!("{}: {}", r.name, r.error.as_deref().unwrap_or(""));
    }
}
