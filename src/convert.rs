//! `transplant convert`: copy an image into another format. Only data extents are read
//! (holes stay holes), on all cores, and the output appears under its name only once it
//! is complete and synced; Ctrl-C or a failure leaves nothing there.

use crate::progress::Reporter;
use crate::{human, OpenArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use transplant_formats::copy::Sink;
use transplant_formats::copy::{copy, CopyOptions};
use transplant_formats::output::qcow2::Qcow2Compression;
use transplant_formats::output::vmdk::{create_sink as vmdk_sink, VmdkSubformat};
use transplant_formats::output::{DeviceOptions, DeviceSink};
use transplant_formats::output::{
    Qcow2Options, Qcow2Sink, RawSink, VhdxOptions, VhdxSink, VmdkOptions,
};
use transplant_formats::verify::{compare, VerifyOptions};
use transplant_formats::{hostdev, open_image, BlockDev, Format, OpenOptions};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum OutFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vhdx,
}

/// Convert an image to another format (sparse: holes stay holes), and with `--to` rewrite
/// the guest for its new target on the way.
///
/// Data is read, decompressed and compressed on all cores; memory stays bounded whatever
/// the disk size. The output is written under a hidden temporary name, fsynced and
/// renamed; Ctrl-C or a failure leaves nothing under OUTPUT. With `--to`, the guest's
/// device names, bootloader, initramfs (drivers injected), NIC bindings, X and hypervisor
/// tools are rewritten in an overlay first; the input is never changed (unless
/// `--in-place`), and a guest that cannot boot on the target is refused before anything
/// is written.
#[derive(Args)]
#[command(after_help = "Examples:
  transplant convert web01.vmdk web01.qcow2 -O qcow2 -c -o compression_type=zstd
  transplant convert web01.vmdk web01.qcow2 -O qcow2 --to kvm --mac OLDMAC=NEWMAC
  transplant convert web01.vmdk --to kvm --dry-run       # a diff of every change
  transplant convert web01.qcow2 delta.qcow2 -O qcow2 --to kvm --backing web01.qcow2
  transplant convert web01.qcow2 --to kvm --in-place     # undo: transplant undo web01.qcow2
  transplant convert web01.raw /dev/sdb --to physical --overwrite
  transplant convert web01.vmdk /dev/sdb --overwrite --zero-fill --verify
  transplant convert export.ova web01/ --to kvm          # disks, libvirt XML, report

Exit status: 0 success; 5 refused (blockers listed); 6 converted with warnings; 1-4 errors.")]
pub struct ConvertArgs {
    /// Input image (any readable format; probed unless -f is given).
    input: PathBuf,
    /// Output file (or block device, or with an OVA/OVF/VMX input a folder). It is written
    /// under a hidden temporary name in the same folder and renamed when complete. Not
    /// given with `--to ... --in-place` or `--dry-run`.
    output: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'O', long = "output-format", value_enum, default_value = "raw")]
    out_format: OutFormat,
    /// Compress the output (qcow2: zlib unless -o compression_type=zstd; vmdk:
    /// streamOptimized, what OVAs carry).
    #[arg(short = 'c', long)]
    compress: bool,
    /// Output options, comma-separated or repeated. qcow2: cluster_size=64K,
    /// compression_type=zlib|zstd. vmdk: subformat=streamOptimized|monolithicSparse (-c
    /// means streamOptimized), adapter_type=lsilogic|ide|buslogic|legacyESX, hwversion=N.
    /// vhdx: block_size=32M, logical_sector_size=512|4096.
    #[arg(short = 'o', value_name = "KEY=VALUE,...")]
    options: Vec<String>,
    /// Write a thin qcow2 overlay whose backing file is FILE, holding only what differs
    /// from it (-O qcow2 only). FILE is recorded relative to OUTPUT's folder when it lies
    /// there, else by absolute path.
    #[arg(long, value_name = "FILE")]
    backing: Option<PathBuf>,
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
    /// Block-device output: also write zeroes where the input has holes or zero blocks
    /// (the device may hold old data there). Uses the device's write-zeroes command
    /// (BLKZEROOUT) where it has one. Without it only data is written.
    #[arg(long)]
    zero_fill: bool,
    /// Read the output back through its reader and compare every byte with the input
    /// (on all cores); a difference fails the command, naming the first differing offset.
    #[arg(long)]
    verify: bool,
    /// Worker threads for reading and decompressing (default: all cores).
    #[arg(short = 'j', long, value_name = "N")]
    threads: Option<usize>,
    /// Rewrite the guest for this target (kvm: virtio-blk; kvm-scsi: virtio-scsi;
    /// physical). With an OVA/OVF/VMX input it also picks the domain XML's disk bus.
    #[arg(long, value_enum)]
    to: Option<crate::export::Target>,
    #[command(flatten)]
    v2v: crate::v2v::V2vArgs,
    #[command(flatten)]
    open: OpenArgs,
}

impl ConvertArgs {
    pub fn v2v(&self) -> &crate::v2v::V2vArgs {
        &self.v2v
    }
    pub fn input_path(&self) -> &std::path::Path {
        &self.input
    }
    pub fn output_path(&self) -> Option<&std::path::Path> {
        self.output.as_deref()
    }
    pub fn backing_path(&self) -> Option<&std::path::Path> {
        self.backing.as_deref()
    }
    pub fn quiet(&self) -> bool {
        self.quiet
    }
    /// OUTPUT, which every mode but `--in-place`/`--dry-run` needs (checked in `run`).
    fn out(&self) -> &std::path::Path {
        self.output.as_deref().unwrap_or(std::path::Path::new(""))
    }
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let rewriting_only = a.v2v.in_place || a.v2v.dry_run;
    if a.output.is_none() && !rewriting_only {
        bail!("OUTPUT is missing (it may be left out only with --to ... --in-place or --dry-run)");
    }
    if a.output.is_some() && a.v2v.in_place {
        bail!("--in-place rewrites the input itself; give no OUTPUT");
    }
    // An OVA/OVF/VMX input converts a whole guest into the folder OUTPUT.
    if crate::export::is_export_input(&a.input) {
        if rewriting_only {
            bail!("--in-place and --dry-run apply to single images, not to an export");
        }
        if !a.options.is_empty() || a.backing.is_some() {
            bail!("-o and --backing apply to single images, not to an export's guest folder");
        }
        return crate::export::run_convert(
            &a.input,
            a.out(),
            a.out_format,
            a.compress,
            a.to,
            a.overwrite,
            a.threads,
            a.open.options(),
            a.progress,
            a.json,
            a.quiet,
        );
    }
    if let Some(t) = a.to {
        if !rewriting_only && same_file(&a.input, a.out()) {
            bail!(
                "the output {} is the input; choose another name (or --in-place)",
                a.out().display()
            );
        }
        return crate::v2v::run(&a, t, &a.open.options());
    }
    let img = open_image(&a.input, &a.open.options())
        .with_context(|| format!("cannot open {}", a.input.display()))?;
    copy_out(&a, img.clone(), &*img, false)
}

/// Copies `img` (the input, the rewritten overlay, or only its changes for a thin
/// overlay) into OUTPUT as the options say; `--verify` checks OUTPUT reads as `expect`.
pub fn copy_out(
    a: &ConvertArgs,
    img: Arc<dyn BlockDev>,
    expect: &dyn BlockDev,
    delta: bool,
) -> Result<()> {
    if same_file(&a.input, a.out()) {
        bail!(
            "the output {} is the input; choose another name",
            a.out().display()
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

    let opts_kv = parse_options(&a.options)?;
    let to_device = hostdev::is_block_device(a.out());
    if a.zero_fill && !to_device {
        bail!("--zero-fill is for block-device outputs; files keep holes as holes");
    }
    let mut sink = make_sink(a, img.len(), &opts_kv, delta)?;
    let mut reporter = Reporter::new(a.json, a.progress, a.quiet);
    let start = Instant::now();
    let stats = copy(&*img, &mut *sink, &opts, &mut |p| reporter.update(p));
    reporter.finish();
    let stats = stats.with_context(|| {
        if to_device {
            // A device cannot be staged: say what is left on it.
            format!(
                "converting {} failed; {} now holds a partial copy",
                a.input.display(),
                a.out().display()
            )
        } else {
            format!("converting {} failed", a.input.display())
        }
    })?;
    let secs = start.elapsed().as_secs_f64();
    let verify_secs = if a.verify {
        let vstart = Instant::now();
        verify_output(a, expect, &opts, to_device)?;
        Some(vstart.elapsed().as_secs_f64())
    } else {
        None
    };
    if to_device && !a.zero_fill && !a.quiet {
        eprintln!(
            "note: only data was written to {}; where the input has holes the device keeps \
             its old bytes (pass --zero-fill to zero them)",
            a.out().display()
        );
    }
    if a.json {
        let j = serde_json::json!({
            "input": a.input, "output": a.output, "format": format!("{:?}", a.out_format).to_lowercase(),
            "virtual_size": stats.virtual_size, "data_bytes": stats.data_bytes,
            "written_bytes": stats.written_bytes, "seconds": secs,
            "verified": a.verify, "verify_seconds": verify_secs,
        });
        println!("{j}");
    } else if !a.quiet {
        eprintln!(
            "converted {} -> {}: {} virtual, {} of data read, {} written, {:.1}s",
            a.input.display(),
            a.out().display(),
            human::size(stats.virtual_size),
            human::size(stats.data_bytes),
            human::size(stats.written_bytes),
            secs
        );
        if let Some(v) = verify_secs {
            eprintln!("verified: the output reads back equal to the input ({v:.1}s)");
        }
    }
    Ok(())
}

/// `--verify`: the output, read back through our reader for its format, must equal the
/// input byte for byte. The output's cached pages are dropped first (it is synced), so
/// what is compared comes from the disk, not from what we just wrote into memory.
fn verify_output(
    a: &ConvertArgs,
    input: &dyn BlockDev,
    copts: &CopyOptions,
    to_device: bool,
) -> Result<()> {
    if let Ok(f) = std::fs::File::open(a.out()) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: advice on an fd we own; no memory is passed.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    let format = match a.out_format {
        OutFormat::Raw => Format::Raw,
        OutFormat::Qcow2 => Format::Qcow2,
        OutFormat::Vmdk => Format::Vmdk,
        OutFormat::Vhdx => Format::Vhdx,
    };
    let open = OpenOptions {
        format: Some(format),
        // The only file it names is the --backing file the user gave us.
        allow_outside_paths: true,
        ..a.open.options()
    };
    let out = open_image(a.out(), &open)
        .with_context(|| format!("--verify: cannot open the output {}", a.out().display()))?;
    let vopts = VerifyOptions {
        input_data_only: to_device && !a.zero_fill,
    };
    let (diff, _) = compare(input, &*out, copts, &vopts)
        .with_context(|| format!("--verify of {} failed", a.out().display()))?;
    if let Some(off) = diff {
        bail!(
            "--verify: {} differs from {} at byte {off} ({off:#x}); the output is wrong",
            a.out().display(),
            a.input.display()
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

fn parse_options(list: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')) {
        let Some((k, v)) = item.split_once('=') else {
            bail!("-o takes KEY=VALUE pairs, got '{item}'");
        };
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// "64K", "2M", "512" -> bytes.
fn parse_size(s: &str) -> Result<u64> {
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("'{s}' is not a size"))?;
    Ok(n * mult)
}

/// `delta`: the input holds only changes over `--backing` (the rewrite's overlay), so what
/// it leaves unallocated is unchanged, not zero.
fn make_sink(
    a: &ConvertArgs,
    size: u64,
    kv: &[(String, String)],
    delta: bool,
) -> Result<Box<dyn Sink>> {
    let unknown = |k: &str| -> anyhow::Error {
        anyhow::anyhow!("-o {k}=... does not apply to -O {:?} output", a.out_format)
    };
    if a.backing.is_some() && a.out_format != OutFormat::Qcow2 {
        bail!("--backing makes a qcow2 overlay; use -O qcow2");
    }
    if hostdev::is_block_device(a.out()) {
        if a.out_format != OutFormat::Raw || a.compress || !kv.is_empty() {
            bail!(
                "{} is a block device: only -O raw (with no -o options) is written onto devices",
                a.out().display()
            );
        }
        if !a.overwrite {
            return Err(transplant_formats::Error::refused(
                a.out().display().to_string(),
                "this block device's contents would be replaced; pass --overwrite to go ahead",
            )
            .into());
        }
        let o = DeviceOptions {
            zero_fill: a.zero_fill,
        };
        return Ok(Box::new(DeviceSink::create(a.out(), size, &o)?));
    }
    match a.out_format {
        OutFormat::Raw => {
            if let Some((k, _)) = kv.first() {
                return Err(unknown(k));
            }
            if a.compress {
                bail!("raw output cannot be compressed; use -O qcow2 -c");
            }
            Ok(Box::new(RawSink::create(a.out(), size, a.overwrite)?))
        }
        OutFormat::Qcow2 => {
            let mut o = Qcow2Options::default();
            if a.compress {
                o.compression = Qcow2Compression::Zlib;
            }
            for (k, v) in kv {
                match k.as_str() {
                    "cluster_size" => o.cluster_size = parse_size(v)?,
                    "compression_type" => {
                        let c = match v.as_str() {
                            "zlib" => Qcow2Compression::Zlib,
                            "zstd" => Qcow2Compression::Zstd,
                            other => bail!("compression_type is zlib or zstd, not '{other}'"),
                        };
                        // The type alone does not compress (as in qemu-img): -c does.
                        if a.compress {
                            o.compression = c;
                        }
                    }
                    other => return Err(unknown(other)),
                }
            }
            let mut backing_dev: Option<Arc<dyn BlockDev>> = None;
            if let Some(b) = &a.backing {
                let dev = open_image(b, &a.open.options())
                    .with_context(|| format!("cannot open the backing file {}", b.display()))?;
                o.backing_format = Some(dev.info().format.to_string());
                o.backing_file = Some(backing_name(b, a.out())?);
                backing_dev = Some(dev);
            }
            let mut sink = Qcow2Sink::create(a.out(), size, &o, a.overwrite)?;
            if let Some(d) = backing_dev {
                sink = sink.with_backing_dev(d);
                if delta {
                    sink = sink.with_unchanged_gaps();
                }
            }
            Ok(Box::new(sink))
        }
        OutFormat::Vmdk => {
            let mut o = VmdkOptions::default();
            if a.compress {
                o.subformat = VmdkSubformat::StreamOptimized;
            }
            for (k, v) in kv {
                match k.as_str() {
                    "subformat" => o.subformat = v.parse()?,
                    "adapter_type" => o.adapter_type = v.parse()?,
                    "hwversion" => o.hw_version = v.clone(),
                    other => return Err(unknown(other)),
                }
            }
            Ok(vmdk_sink(a.out(), size, &o, a.overwrite)?)
        }
        OutFormat::Vhdx => {
            let mut o = VhdxOptions::default();
            if a.compress {
                bail!("VHDX has no compression; use -O qcow2 -c or -O vmdk -c");
            }
            for (k, v) in kv {
                match k.as_str() {
                    "block_size" => {
                        o.block_size =
                            u32::try_from(parse_size(v)?).context("block_size is too large")?
                    }
                    "logical_sector_size" => {
                        o.logical_sector =
                            v.parse().context("logical_sector_size is 512 or 4096")?
                    }
                    other => return Err(unknown(other)),
                }
            }
            Ok(Box::new(VhdxSink::create(a.out(), size, &o, a.overwrite)?))
        }
    }
}

/// How the overlay names its backing file: by file name when both live in one folder (the
/// pair can then be moved together), else by absolute path.
fn backing_name(backing: &std::path::Path, output: &std::path::Path) -> Result<String> {
    let b = backing
        .canonicalize()
        .with_context(|| format!("{}", backing.display()))?;
    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.canonicalize()?,
        _ => std::env::current_dir()?,
    };
    Ok(match (b.parent(), b.file_name()) {
        (Some(dir), Some(name)) if dir == out_dir => name.to_string_lossy().into_owned(),
        _ => b.display().to_string(),
    })
}
