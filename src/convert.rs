//! `transplant convert`: copy an image into another format. Only data extents are read
//! (holes stay holes), on all cores, and the output appears under its name only once it
//! is complete and synced; Ctrl-C or a failure leaves nothing there.

use crate::progress::Reporter;
use crate::{human, OpenArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;
use transplant_formats::copy::{copy, CopyOptions};
use transplant_formats::output::RawSink;
use transplant_formats::{open_image, Error};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum OutFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vhdx,
}

/// Convert an image to another format (sparse: holes stay holes).
///
/// Example: transplant convert web01.vmdk web01.raw -O raw
#[derive(Args)]
pub struct ConvertArgs {
    /// Input image (any readable format; probed unless -f is given).
    input: PathBuf,
    /// Output file. It is written under a hidden temporary name in the same folder and
    /// renamed when complete.
    output: PathBuf,
    /// Output format. This build writes raw; the other writers are being built.
    #[arg(short = 'O', long = "output-format", value_enum, default_value = "raw")]
    out_format: OutFormat,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Show a progress bar even when stderr is not a terminal.
    #[arg(short = 'p', long)]
    progress: bool,
    /// Print progress as JSON lines on stderr and a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// No progress and no summary.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Worker threads for reading and decompressing (default: all cores).
    #[arg(short = 'j', long, value_name = "N")]
    threads: Option<usize>,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    if a.out_format != OutFormat::Raw {
        return Err(Error::unsupported(
            a.output.display().to_string(),
            format!(
                "writing {:?} output is not available yet; use -O raw",
                a.out_format
            )
            .to_lowercase(),
        )
        .into());
    }
    let img = open_image(&a.input, &a.open.options())
        .with_context(|| format!("cannot open {}", a.input.display()))?;
    if same_file(&a.input, &a.output) {
        bail!(
            "the output {} is the input; choose another name",
            a.output.display()
        );
    }
    let mut opts = CopyOptions::default();
    if let Some(n) = a.threads {
        opts.threads = n.max(1);
        opts.inflight = (opts.threads * 4).max(8);
    }
    let cancel = opts.cancel.clone();
    // Ctrl-C stops the copy cleanly; the partial output is removed when the sink drops.
    let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));

    let mut sink = RawSink::create(&a.output, img.len(), a.overwrite)?;
    let mut reporter = Reporter::new(a.json, a.progress, a.quiet);
    let start = Instant::now();
    let stats = copy(&*img, &mut sink, &opts, &mut |p| reporter.update(p));
    reporter.finish();
    let stats = stats.with_context(|| format!("converting {} failed", a.input.display()))?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        let j = serde_json::json!({
            "input": a.input, "output": a.output, "format": "raw",
            "virtual_size": stats.virtual_size, "data_bytes": stats.data_bytes,
            "written_bytes": stats.written_bytes, "seconds": secs,
        });
        println!("{j}");
    } else if !a.quiet {
        eprintln!(
            "converted {} -> {}: {} virtual, {} of data read, {} written, {:.1}s",
            a.input.display(),
            a.output.display(),
            human::size(stats.virtual_size),
            human::size(stats.data_bytes),
            human::size(stats.written_bytes),
            secs
        );
    }
    Ok(())
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
