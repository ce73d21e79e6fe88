//! `transplant ls`: list a guest directory without mounting anything.

use crate::guest::{guest_tree, volumes, Target};
use crate::OpenArgs;
use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use transplant_fs::{show, FileKind, GuestTree, Metadata};

/// List files inside a guest.
///
/// IMAGE is a disk image (raw, qcow2, vmdk, vhdx, vhd); by default the guest's root
/// filesystem is found by inspection and its fstab mounts attached; `IMAGE@N` picks
/// partition N and `IMAGE@VG/LV` a logical volume. PATH is a path inside the guest
/// (default /); guest symlinks resolve inside the guest, never on the host.
///
/// Examples: transplant ls web01.vmdk:/etc -l
///           transplant ls disk.qcow2@2:/ -R
#[derive(Args)]
pub struct LsArgs {
    /// IMAGE[@N|@VG/LV][:PATH]
    target: String,
    /// Long listing: mode, owner, size, modification time, link target.
    #[arg(short = 'l', long)]
    long: bool,
    /// Recurse into directories.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// One JSON object per entry: {path, kind, mode, uid, gid, size, mtime, target}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run(a: LsArgs) -> Result<()> {
    let t = Target::parse(&a.target);
    let vols = volumes(std::slice::from_ref(&t.image), &a.open.options())?;
    let (tree, _) = guest_tree(&vols, t.select.as_deref())?;
    let path = t.path.unwrap_or_else(|| b"/".to_vec());
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let m = tree
        .stat(&path, true)
        .with_context(|| format!("{} in {}", show(&path), t.image.display()))?;
    if m.kind != FileKind::Dir {
        entry(&mut out, &tree, &path, &show(&path), &a)?;
        return Ok(out.flush()?);
    }
    let mut dirs = vec![path];
    while let Some(dir) = dirs.pop() {
        if a.recursive && !a.json {
            writeln!(out, "{}:", show(&dir))?;
        }
        let mut subdirs = Vec::new();
        for e in tree.read_dir(&dir)? {
            let mut full = dir.clone();
            if full.last() != Some(&b'/') {
                full.push(b'/');
            }
            full.extend_from_slice(&e.name);
            let shown = if a.recursive || a.json {
                show(&full)
            } else {
                show(&e.name)
            };
            entry(&mut out, &tree, &full, &shown, &a)?;
            if a.recursive && e.kind == FileKind::Dir {
                subdirs.push(full);
            }
        }
        subdirs.reverse();
        dirs.extend(subdirs);
        if a.recursive && !a.json {
            writeln!(out)?;
        }
    }
    Ok(out.flush()?)
}

fn entry(
    out: &mut impl Write,
    tree: &GuestTree,
    full: &[u8],
    shown: &str,
    a: &LsArgs,
) -> Result<()> {
    if !a.long && !a.json {
        writeln!(out, "{shown}")?;
        return Ok(());
    }
    let m = tree.stat(full, false)?;
    let target = if m.kind == FileKind::Symlink {
        tree.read_link(full).ok().map(|t| show(&t))
    } else {
        None
    };
    if a.json {
        let j = serde_json::json!({
            "path": show(full), "kind": m.kind, "mode": format!("{:04o}", m.mode), "uid": m.uid, "gid": m.gid,
            "size": m.size, "mtime": m.mtime.secs, "target": target,
        });
        writeln!(out, "{j}")?;
    } else {
        let arrow = target.map(|t| format!(" -> {t}")).unwrap_or_default();
        writeln!(
            out,
            "{} {:>5} {:>5} {:>12} {} {shown}{arrow}",
            mode_string(&m),
            m.uid,
            m.gid,
            m.size,
            date(m.mtime.secs)
        )?;
    }
    Ok(())
}

fn mode_string(m: &Metadata) -> String {
    let t = match m.kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
        FileKind::File => '-',
    };
    let mut s = String::from(t);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if m.mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    let mut b: Vec<char> = s.chars().collect();
    let special = |b: &mut Vec<char>, bit: u32, at: usize, set: char, unset: char| {
        if m.mode & bit != 0 {
            b[at] = if b[at] == 'x' { set } else { unset };
        }
    };
    special(&mut b, 0o4000, 3, 's', 'S');
    special(&mut b, 0o2000, 6, 's', 'S');
    special(&mut b, 0o1000, 9, 't', 'T');
    b.into_iter().collect()
}

/// UTC "YYYY-MM-DD HH:MM" without a date library.
fn date(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::date(0), "1970-01-01 00:00");
        assert_eq!(super::date(1_700_000_000), "2023-11-14 22:13");
    }
}
