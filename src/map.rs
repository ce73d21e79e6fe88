//! `transplant map`: the allocation map, like `qemu-img map`: which runs of the virtual disk
//! hold data, read as zeroes, or are not allocated anywhere in the chain.

use crate::OpenArgs;
use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use transplant_formats::{extents_in, open_image, ExtentKind};

/// Show the allocation map of an image: data, zero and unallocated runs with their offsets.
#[derive(Args)]
pub struct MapArgs {
    image: PathBuf,
    /// Print JSON: an array of {"start", "length", "kind", "data", "zero"} objects.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

#[derive(serde::Serialize)]
struct Run {
    start: u64,
    length: u64,
    kind: ExtentKind,
    /// As qemu-img map: true where bytes are stored.
    data: bool,
    /// As qemu-img map: true where the run reads as zeroes.
    zero: bool,
}

pub fn run(a: MapArgs) -> Result<()> {
    let img = open_image(&a.image, &a.open.options())
        .with_context(|| format!("cannot open {}", a.image.display()))?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    if a.json {
        writeln!(out, "[")?;
    } else {
        writeln!(out, "{:<20}{:<20}Kind", "Offset", "Length")?;
    }
    let mut first = true;
    for r in extents_in(&*img, 0, img.len()) {
        let (start, e) = r?;
        if a.json {
            let run = Run {
                start,
                length: e.len,
                kind: e.kind,
                data: e.kind == ExtentKind::Data,
                zero: e.kind != ExtentKind::Data,
            };
            if !first {
                writeln!(out, ",")?;
            }
            write!(out, "  {}", serde_json::to_string(&run)?)?;
        } else {
            let kind = match e.kind {
                ExtentKind::Data => "data",
                ExtentKind::Zero => "zero",
                ExtentKind::Unallocated => "unallocated",
            };
            writeln!(out, "{:<#20x}{:<#20x}{kind}", start, e.len)?;
        }
        first = false;
    }
    if a.json {
        if !first {
            writeln!(out)?;
        }
        writeln!(out, "]")?;
    }
    out.flush()?;
    Ok(())
}
