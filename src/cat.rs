//! `transplant cat`: print a guest file, streamed in 1 MiB reads.

use crate::guest::{guest_tree, volumes, Target};
use crate::OpenArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use transplant_fs::show;

/// Print a file from inside a guest.
///
/// Example: transplant cat web01.vmdk:/etc/fstab
#[derive(Args)]
pub struct CatArgs {
    /// IMAGE[@N|@VG/LV]:PATH
    target: String,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run(a: CatArgs) -> Result<()> {
    let t = Target::parse(&a.target);
    let Some(path) = t.path.clone() else {
        bail!("give a guest path: {}:/etc/fstab", a.target);
    };
    let vols = volumes(std::slice::from_ref(&t.image), &a.open.options())?;
    let (tree, _) = guest_tree(&vols, t.select.as_deref())?;
    let m = tree
        .stat(&path, true)
        .with_context(|| format!("{} in {}", show(&path), t.image.display()))?;
    if m.kind == transplant_fs::FileKind::Dir {
        bail!("{} is a directory; use `transplant ls`", show(&path));
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = tree.read(&path, pos, &mut buf)?;
        if n == 0 {
            break;
        }
        if let Err(e) = out.write_all(&buf[..n]) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
        pos += n as u64;
    }
    Ok(out.flush()?)
}
