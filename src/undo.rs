//! `transplant undo`: roll an in-place commit back from its undo file.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use transplant_formats::undo::{default_undo_path, read_undo, undo_with, UndoOptions, UndoState};
use transplant_formats::{open_image_rw, OpenOptions};

/// Roll back an in-place change (`convert --in-place`, `mount --rw`, `write`) using the undo
/// file written before the image was touched.
///
/// The undo file holds the original bytes of every range the commit changed. It is checked
/// whole before anything is written; an image of another size, or one changed again after
/// the commit, is refused (unless --force). Safe to run again if it is interrupted.
///
/// Examples:
///   transplant undo web01.qcow2
///   transplant undo /dev/sdb --undo-file /var/tmp/sdb.transplant-undo
///   transplant undo web01.raw --check
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct UndoArgs {
    /// The image the commit changed (raw file, block device or qcow2).
    image: PathBuf,
    /// The undo file (default: IMAGE.transplant-undo beside the image).
    #[arg(long, value_name = "FILE")]
    undo_file: Option<PathBuf>,
    /// Only check the undo file and say what it holds; change nothing.
    #[arg(long)]
    check: bool,
    /// Restore even if the image changed after the commit or was renamed.
    #[arg(long)]
    force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Image format (raw or qcow2) instead of probing.
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    format: Option<transplant_formats::Format>,
}

pub fn run(a: UndoArgs) -> Result<()> {
    let undo_path = a
        .undo_file
        .clone()
        .unwrap_or_else(|| default_undo_path(&a.image));
    let info = read_undo(&undo_path)
        .with_context(|| format!("cannot use the undo file {}", undo_path.display()))?;
    if a.check {
        if a.json {
            println!("{}", serde_json::to_string(&info)?);
        } else {
            println!(
                "{}: undoes a commit into {} ({} bytes): {} ranges, {} bytes saved; state: {}",
                undo_path.display(),
                info.image_name,
                info.image_size,
                info.records,
                info.saved_bytes,
                state_words(info.state)
            );
        }
        return Ok(());
    }
    let opts = OpenOptions {
        format: a.format,
        ..Default::default()
    };
    let dev = open_image_rw(&a.image, &opts)
        .with_context(|| format!("cannot open {} for writing", a.image.display()))?;
    let r = undo_with(&*dev, &undo_path, &UndoOptions { force: a.force })
        .with_context(|| format!("undo of {} failed", a.image.display()))?;
    drop(dev);
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else if r.state == UndoState::Undone {
        eprintln!(
            "{} was already rolled back with {}; nothing written",
            a.image.display(),
            undo_path.display()
        );
    } else {
        eprintln!(
            "rolled {} back ({}): {} of {} ranges restored ({} bytes), {} already original; \
             {} may now be deleted",
            a.image.display(),
            state_words(r.state),
            r.restored,
            r.records,
            r.bytes_restored,
            r.already_original,
            undo_path.display()
        );
    }
    Ok(())
}

fn state_words(s: UndoState) -> &'static str {
    match s {
        UndoState::Interrupted => "the commit was interrupted",
        UndoState::Committed => "the commit had finished",
        UndoState::Undone => "already rolled back",
    }
}
