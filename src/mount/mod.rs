//! `transplant mount`: images as a FUSE filesystem. Like `guestmount`, but with no helper VM:
//! the kernel talks FUSE to this process, which reads the image formats itself.
//!
//! Without `--foreground` the command returns once the mount is ready, leaving a server
//! process behind (as guestmount does): it re-executes itself in the foreground in a new
//! process group and waits on a pipe for "ready", so errors (a corrupt image, a busy
//! mount point) still reach the caller's terminal and exit status.

mod guest_view;
mod raw_view;

use crate::OpenArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use transplant_formats::{open_image, BlockDev};

/// Mount images with FUSE, read-only unless --rw.
///
/// By default DIR shows the guest's files as its fstab assembles them (root found by
/// inspection, like `guestmount -i --ro`); `IMAGE@N` or `IMAGE@VG/LV` mounts one volume.
/// With --raw, DIR shows each whole virtual disk as a file (`disk`, or `disk1`, `disk2` for
/// several images) and its partitions (`p1`, `p2`, ... or `disk1p1`, ...), read-only files
/// and LVM logical volumes (`VG-LV`, as /dev/mapper names them): read-only files any host
/// tool can open: `sfdisk -l DIR/disk`, `mount -o loop,ro DIR/p1 /mnt/x`.
/// Unmount with `fusermount3 -u DIR`, or Ctrl-C / SIGTERM in --foreground mode.
/// With --rw (one raw or qcow2 image, guest view only) files can be changed; changes
/// collect in memory and are written into the image when it is unmounted.
///
/// Example: transplant mount --raw web01.vmdk /mnt/web01
#[derive(Args)]
pub struct MountArgs {
    /// Images, then the mount point (an existing empty directory).
    #[arg(required = true, num_args = 2.., value_name = "IMAGE... DIR")]
    paths: Vec<PathBuf>,
    /// Show the disks as raw files instead of the guest's files.
    #[arg(long)]
    raw: bool,
    /// Stay in the foreground; unmount on Ctrl-C or SIGTERM.
    #[arg(long)]
    foreground: bool,
    /// Allow changes to the guest's ext2/3/4 and XFS files; they are committed into the
    /// image (raw or qcow2) on unmount (with --undo, after an undo log). A filesystem that
    /// is not safe to write (a journal or log needing recovery, errors recorded) is refused.
    #[arg(long)]
    rw: bool,
    #[command(flatten)]
    undo: crate::edit::UndoArgs,
    /// Let other users see the mount (needs `user_allow_other` in /etc/fuse.conf unless root).
    #[arg(long)]
    allow_other: bool,
    /// FUSE server threads.
    #[arg(long, default_value_t = 4, value_name = "N")]
    threads: usize,
    #[command(flatten)]
    open: OpenArgs,
}

const READY_FD_ENV: &str = "TRANSPLANT_MOUNT_READY_FD";

pub fn run(a: MountArgs) -> Result<()> {
    let Some((dir, images)) = a.paths.split_last() else {
        bail!("give one or more images and then the mount point");
    };
    if !dir.is_dir() {
        bail!("the mount point {} is not a directory", dir.display());
    }
    if a.undo.is_set() && !a.rw {
        bail!("--undo and --undo-file keep a log of the changes of --rw; a read-only mount changes nothing");
    }
    if a.rw && (a.raw || images.len() != 1) {
        bail!("--rw mounts the guest files of one image (not --raw)");
    }
    if a.rw {
        // Open once here so a refusal reaches the terminal before going to the background.
        let t = crate::guest::Target::parse(&images[0].display().to_string());
        let s = crate::edit::Session::open(&t, &a.open.options())?;
        if !a.foreground {
            drop(s);
            return spawn_background();
        }
        let view = guest_view::GuestView::new_rw(s.tree.clone());
        serve(view, dir, &t.image, &a)?;
        return s.commit(&a.undo);
    }
    if !a.foreground {
        return spawn_background();
    }
    if !a.raw {
        // The guest's tree, assembled from its fstab (or the volume IMAGE@N selects).
        let t = crate::guest::Target::parse(&images[0].display().to_string());
        let mut paths: Vec<std::path::PathBuf> = vec![t.image.clone()];
        paths.extend(images.iter().skip(1).cloned());
        let vols = crate::guest::volumes(&paths, &a.open.options())?;
        let (tree, notes) = crate::guest::guest_tree(&vols, t.select.as_deref())?;
        for n in notes {
            eprintln!("transplant: {n}");
        }
        return serve(guest_view::GuestView::new(tree), dir, &t.image, &a);
    }

    let mut opened: Vec<(String, Arc<dyn BlockDev>)> = Vec::new();
    for path in images {
        let img = open_image(path, &a.open.options())
            .with_context(|| format!("cannot open {}", path.display()))?;
        opened.push((path.display().to_string(), img));
    }
    let layout = transplant_formats::layout::discover(opened)?;
    for w in &layout.warnings {
        eprintln!("transplant: warning: {w}");
    }
    let mut files: Vec<(String, Arc<dyn BlockDev>)> = Vec::new();
    let many = layout.disks.len() > 1;
    for (i, disk) in layout.disks.iter().enumerate() {
        let name = if many {
            format!("disk{}", i + 1)
        } else {
            "disk".to_string()
        };
        files.push((name.clone(), disk.dev.clone()));
        // Partitions as pN (or diskNpM), so `mount -o loop DIR/p1` works.
        for (n, dev) in &disk.partitions {
            let pname = if many {
                format!("{name}p{n}")
            } else {
                format!("p{n}")
            };
            files.push((pname, dev.clone()));
        }
    }
    // LVs as VG-LV, like /dev/mapper names.
    for vg in &layout.vgs {
        for lv in &vg.lvs {
            match vg.open_lv(&lv.name) {
                Ok(dev) => files.push((
                    format!(
                        "{}-{}",
                        vg.name.replace('-', "--"),
                        lv.name.replace('-', "--")
                    ),
                    dev,
                )),
                Err(e) => eprintln!("transplant: {}/{} is not shown: {e}", vg.name, lv.name),
            }
        }
    }
    let fs = raw_view::RawView::new(files, unsafe_getuid(), unsafe_getgid());
    serve(fs, dir, &images[0], &a)
}

/// Mounts `fs` on `dir` and serves it until a signal or an unmount.
fn serve<F: fuser::Filesystem + Send + 'static>(
    fs: F,
    dir: &std::path::Path,
    image: &std::path::Path,
    a: &MountArgs,
) -> Result<()> {
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        if a.rw {
            fuser::MountOption::RW
        } else {
            fuser::MountOption::RO
        },
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::FSName(format!("transplant:{}", image.display())),
        fuser::MountOption::Subtype("transplant".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    cfg.acl = if a.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    cfg.n_threads = Some(a.threads.max(1));

    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let _ = ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed));

    let session = fuser::spawn_mount(fs, dir, &cfg)
        .with_context(|| format!("cannot mount on {}", dir.display()))?;
    signal_ready();
    // Serve until a signal, or until someone unmounts us (fusermount3 -u ends the session).
    loop {
        if stop.load(Ordering::Relaxed) {
            session
                .umount_and_join()
                .with_context(|| format!("unmounting {}", dir.display()))?;
            return Ok(());
        }
        if session.guard.is_finished() {
            return session
                .join()
                .context("the FUSE session ended with an error");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn unsafe_getuid() -> u32 {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    unsafe { libc::getuid() }
}

fn unsafe_getgid() -> u32 {
    // SAFETY: as above.
    unsafe { libc::getgid() }
}

/// In the background server: tell the waiting parent the mount is up.
fn signal_ready() {
    if let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        // SAFETY: the fd was created for us by the parent and is used only here.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut f = std::fs::File::from(owned);
        let _ = std::io::Write::write_all(&mut f, b"R");
        // Detach from the caller's stderr: a caller capturing our output (`$(...)`, a test
        // harness) would otherwise wait for EOF as long as the mount lives.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 onto fd 2 with a valid fd we own.
            unsafe { libc::dup2(null.as_raw_fd(), 2) };
        }
    }
}

/// Re-runs this command in the foreground as a background server and waits until it says
/// the mount is ready (or dies, having printed why).
fn spawn_background() -> Result<()> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe fills two fds; we own both.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    let (rfd, wfd) = (fds[0], fds[1]);
    // SAFETY: fresh fds from pipe().
    let mut reader = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(rfd) });
    let writer = unsafe { OwnedFd::from_raw_fd(wfd) };
    // The read end must not leak into the child, or EOF never comes.
    // SAFETY: fcntl on our own fd.
    unsafe { libc::fcntl(rfd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let exe = std::env::current_exe().context("finding our own executable")?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--foreground".into());
    let mut child = std::process::Command::new(exe)
        .args(args)
        .env(READY_FD_ENV, wfd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the mount server")?;
    drop(writer);
    let mut buf = [0u8; 1];
    let n = reader.read(&mut buf).unwrap_or(0);
    if n == 1 && buf[0] == b'R' {
        return Ok(());
    }
    let status = child.wait().context("waiting for the mount server")?;
    bail!("the mount server stopped before the mount was ready ({status})");
}
