//! `transplant write`, `rm` and `mkdir`: small edits inside a guest, like virt-copy-in and
//! guestfish, without a helper VM. Every change goes into an `Overlay` over the image and is
//! committed into it only when the whole edit succeeded and the filesystem is synced, so a
//! failed edit leaves the image as it was. Only formats writable in place (raw, qcow2) are
//! accepted. `--undo` first writes and syncs an undo log of every block the edit is about
//! to overwrite, so `transplant undo IMAGE` can put the image back.

use crate::guest::{guest_tree, volumes_on, Target};
use crate::OpenArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use transplant_formats::output::qcow2::inplace::open_writable_with;
use transplant_formats::{open_image, BlockDev, Format, OpenOptions, Overlay, RawFile};
use transplant_fs::{show, FileKind, GuestTree, NewNode, SetAttrs};

/// A guest open for writing: its tree, and the overlay its changes collect in.
pub struct Session {
    pub tree: Arc<GuestTree>,
    overlay: Arc<Overlay>,
    image: PathBuf,
}

/// Opens the image itself for writing in place, or refuses a format we cannot write.
pub fn open_base(image: &Path, opts: &OpenOptions) -> Result<Arc<dyn BlockDev>> {
    let probe =
        open_image(image, opts).with_context(|| format!("cannot open {}", image.display()))?;
    let format = probe.info().format;
    drop(probe);
    Ok(match format {
        Format::Raw => Arc::new(RawFile::open(image, true)?),
        Format::Qcow2 => Arc::new(open_writable_with(image, opts)?),
        other => {
            return Err(transplant_formats::Error::refused(
                image.display().to_string(),
                format!(
                    "{} images cannot be changed in place (raw and qcow2 can); convert it first: transplant convert -O qcow2 {} new.qcow2",
                    format!("{other:?}").to_lowercase(),
                    image.display()
                ),
            )
            .into())
        }
    })
}

impl Session {
    pub fn open(t: &Target, opts: &OpenOptions) -> Result<Session> {
        let base = open_base(&t.image, opts)?;
        let overlay = Arc::new(Overlay::new(base));
        let name = t.image.display().to_string();
        let mut vols = volumes_on(vec![(name, overlay.clone() as Arc<dyn BlockDev>)], true)?;
        let mut refused = std::mem::take(&mut vols.refused);
        let (tree, notes) = match guest_tree(&vols, t.select.as_deref()) {
            Ok(x) => x,
            // Without a writable filesystem there may be no readable one either (a journal
            // needing recovery): the refusal is the reason to give.
            Err(e) if !refused.is_empty() => {
                let (n, r) = refused.swap_remove(0);
                let _ = e;
                return Err(anyhow::Error::new(r).context(format!("cannot write to {n}")));
            }
            Err(e) => return Err(e),
        };
        for n in notes {
            eprintln!("transplant: {n}");
        }
        for m in tree.mounts() {
            if m.fs.writable() {
                continue;
            }
            let why = refused.iter().position(|(n, _)| *n == m.source);
            match (m.at.is_empty(), why) {
                (true, Some(i)) => {
                    let (n, e) = refused.swap_remove(i);
                    return Err(anyhow::Error::new(e).context(format!("cannot write to {n}")));
                }
                (true, None) => bail!("{} cannot be written", m.source),
                (false, Some(i)) => eprintln!(
                    "transplant: warning: {} is read-only: {}",
                    m.source, refused[i].1
                ),
                (false, None) => eprintln!("transplant: warning: {} is read-only", m.source),
            }
        }
        Ok(Session {
            tree: Arc::new(tree),
            overlay,
            image: t.image.clone(),
        })
    }

    /// Syncs the filesystems and writes the overlay into the image, after an undo log
    /// when `undo` asks for one.
    pub fn commit(&self, undo: &UndoArgs) -> Result<()> {
        self.tree.sync().context("syncing the guest filesystems")?;
        match undo.path(&self.image) {
            None => self
                .overlay
                .commit()
                .context("writing the changes into the image")?,
            Some(path) => {
                let s = transplant_formats::undo::commit_with_undo(&self.overlay, &path)
                    .context("writing the changes into the image")?;
                eprintln!(
                    "transplant: undo log {} ({} bytes saved); `transplant undo {}{}` restores the image",
                    path.display(),
                    s.bytes,
                    self.image.display(),
                    if undo.undo_file.is_some() {
                        format!(" --undo-file {}", path.display())
                    } else {
                        String::new()
                    }
                );
            }
        }
        Ok(())
    }
}

/// Keeping an undo log of an in-place edit.
#[derive(Args, Default)]
pub struct UndoArgs {
    /// Before changing the image, write and sync an undo log of every block about to be
    /// overwritten (IMAGE.transplant-undo), for `transplant undo IMAGE`.
    #[arg(long)]
    undo: bool,
    /// The undo log's path (implies --undo).
    #[arg(long, value_name = "FILE")]
    undo_file: Option<PathBuf>,
}

impl UndoArgs {
    pub fn is_set(&self) -> bool {
        self.undo || self.undo_file.is_some()
    }

    fn path(&self, image: &Path) -> Option<PathBuf> {
        match (&self.undo_file, self.undo) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => Some(transplant_formats::undo::default_undo_path(image)),
            (None, false) => None,
        }
    }
}

fn parse_owner(s: &str) -> Result<(Option<u32>, Option<u32>)> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let num = |x: &str| -> Result<Option<u32>> {
        if x.is_empty() {
            return Ok(None);
        }
        x.parse()
            .map(Some)
            .with_context(|| format!("'{x}' is not a numeric uid/gid (names are not looked up)"))
    };
    Ok((num(u)?, g.map(num).transpose()?.flatten()))
}

fn parse_mode(s: &str) -> Result<u32> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .with_context(|| format!("'{s}' is not an octal mode"))?;
    if m > 0o7777 {
        bail!("mode {s} has bits beyond 07777");
    }
    Ok(m)
}

fn target_path(target: &str) -> Result<(Target, Vec<u8>)> {
    let t = Target::parse(target);
    let Some(path) = t.path.clone() else {
        bail!("give a guest path: {target}:/etc/fstab");
    };
    if path.first() != Some(&b'/') {
        bail!("the guest path must be absolute: {}", show(&path));
    }
    Ok((t, path))
}

/// Write stdin into a file inside a guest (created if missing).
///
/// The image is changed in place (raw or qcow2). An existing file keeps its inode, owner,
/// mode and xattrs (SELinux labels) unless --mode/--owner say otherwise.
///
/// Example: transplant write web01.qcow2:/etc/hostname < hostname
#[derive(Args)]
pub struct WriteArgs {
    /// IMAGE[@N|@VG/LV]:PATH
    target: String,
    /// Permission bits, octal (default 0644 for a new file).
    #[arg(long)]
    mode: Option<String>,
    /// UID[:GID], numeric.
    #[arg(long)]
    owner: Option<String>,
    #[command(flatten)]
    undo: UndoArgs,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run_write(a: WriteArgs) -> Result<()> {
    let (t, path) = target_path(&a.target)?;
    let mode = a.mode.as_deref().map(parse_mode).transpose()?;
    let (uid, gid) = a
        .owner
        .as_deref()
        .map(parse_owner)
        .transpose()?
        .unwrap_or((None, None));
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .context("reading stdin")?;
    let s = Session::open(&t, &a.open.options())?;
    let attrs = SetAttrs {
        mode,
        uid,
        gid,
        ..Default::default()
    };
    let what = match s.tree.stat(&path, true) {
        Ok(m) if m.kind == FileKind::Dir => bail!("{} is a directory", show(&path)),
        Ok(_) => {
            s.tree.write_file(&path, &data)?;
            if attrs != SetAttrs::default() {
                s.tree.set_attrs(&path, &attrs)?;
            }
            "replaced"
        }
        Err(transplant_fs::Error::NotFound(_)) => {
            s.tree.create(&path, NewNode::File(&data), &attrs)?;
            "created"
        }
        Err(e) => return Err(e.into()),
    };
    s.commit(&a.undo)?;
    eprintln!("transplant: {what} {} ({} bytes)", show(&path), data.len());
    Ok(())
}

/// Remove a file, symlink or empty directory inside a guest.
///
/// Example: transplant rm web01.qcow2:/etc/udev/rules.d/70-persistent-net.rules
#[derive(Args)]
pub struct RmArgs {
    /// IMAGE[@N|@VG/LV]:PATH
    target: String,
    /// Succeed if the path does not exist.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    undo: UndoArgs,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run_rm(a: RmArgs) -> Result<()> {
    let (t, path) = target_path(&a.target)?;
    let s = Session::open(&t, &a.open.options())?;
    match s.tree.remove(&path) {
        Ok(()) => {}
        Err(transplant_fs::Error::NotFound(_)) if a.force => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    s.commit(&a.undo)?;
    eprintln!("transplant: removed {}", show(&path));
    Ok(())
}

/// Create a directory inside a guest.
///
/// Example: transplant mkdir -p web01.qcow2:/etc/dracut.conf.d
#[derive(Args)]
pub struct MkdirArgs {
    /// IMAGE[@N|@VG/LV]:PATH
    target: String,
    /// Create missing parents; an existing directory is not an error.
    #[arg(short, long)]
    parents: bool,
    /// Permission bits, octal (default 0755).
    #[arg(long)]
    mode: Option<String>,
    #[command(flatten)]
    undo: UndoArgs,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run_mkdir(a: MkdirArgs) -> Result<()> {
    let (t, path) = target_path(&a.target)?;
    let attrs = SetAttrs {
        mode: a.mode.as_deref().map(parse_mode).transpose()?,
        ..Default::default()
    };
    let s = Session::open(&t, &a.open.options())?;
    let comps: Vec<&[u8]> = path
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let mut made = Vec::new();
    for k in 1..=comps.len() {
        let last = k == comps.len();
        if !a.parents && !last {
            continue;
        }
        let mut p = Vec::new();
        for c in &comps[..k] {
            p.push(b'/');
            p.extend_from_slice(c);
        }
        match s.tree.stat(&p, true) {
            Ok(m) if m.kind == FileKind::Dir && a.parents => continue,
            Ok(_) => return Err(transplant_fs::Error::Exists(show(&p)).into()),
            Err(transplant_fs::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        s.tree.create(&p, NewNode::Dir, &attrs)?;
        made.push(show(&p));
    }
    if made.is_empty() {
        return Ok(());
    }
    s.commit(&a.undo)?;
    for m in made {
        eprintln!("transplant: created directory {m}");
    }
    Ok(())
}
