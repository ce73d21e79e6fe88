//! `transplant`: offline disk-image surgery. The CLI is thin: it parses, calls the
//! libraries and prints; each subcommand is one module.

mod batch;
mod cat;
mod convert;
mod edit;
mod exit;
mod export;
mod export_info;
mod guest;
mod human;
mod info;
mod inspect;
mod libvirt;
mod ls;
mod map;
mod mount;
mod progress;
mod undo;
mod v2v;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use transplant_formats::{Format, OpenOptions};

/// Offline disk-image surgery: look inside, convert and rewrite VM disk images.
///
/// Reads raw, qcow2, VMDK (every VMware sub-format), VHDX and VHD images without a helper VM
/// and without root. Inputs are never changed unless a command says so.
#[derive(Parser)]
#[command(name = "transplant", version, max_term_width = 100)]
#[command(
    after_help = "Exit status: 0 success; 1 failure; 2 bad usage; 3 the image is corrupt; \
4 unsupported feature; 5 refused by a safety policy (the message says how to proceed)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How to open input images; shared by every command.
#[derive(Args, Clone)]
pub struct OpenArgs {
    /// Input format, instead of probing by magic bytes (raw, qcow2, vmdk, vhdx, vpc).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    format: Option<Format>,

    /// Follow file names found inside images (VMDK extents, backing files, parent locators)
    /// outside the image's own folder. By default `..`, absolute paths elsewhere and symlinks
    /// out are refused, since a hostile image could name any host file.
    #[arg(long)]
    allow_outside_paths: bool,
}

impl OpenArgs {
    pub fn options(&self) -> OpenOptions {
        OpenOptions {
            allow_outside_paths: self.allow_outside_paths,
            format: self.format,
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    Info(info::InfoArgs),
    Map(map::MapArgs),
    Convert(convert::ConvertArgs),
    Mount(mount::MountArgs),
    Ls(ls::LsArgs),
    Cat(cat::CatArgs),
    Write(edit::WriteArgs),
    Rm(edit::RmArgs),
    Mkdir(edit::MkdirArgs),
    Inspect(inspect::InspectArgs),
    Undo(undo::UndoArgs),
    Batch(batch::BatchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Info(a) => info::run(a),
        Command::Map(a) => map::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Mount(a) => mount::run(a),
        Command::Ls(a) => ls::run(a),
        Command::Cat(a) => cat::run(a),
        Command::Write(a) => edit::run_write(a),
        Command::Rm(a) => edit::run_rm(a),
        Command::Mkdir(a) => edit::run_mkdir(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Undo(a) => undo::run(a),
        Command::Batch(a) => batch::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}
