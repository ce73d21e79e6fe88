//! Adds drivers to an initramfs file from a guest root on the host, as `convert --to`
//! does inside an image; used by bench/initramfs.py.
//!
//! initramfs_inject IN OUT GUEST_ROOT KVER MODULE[,MODULE...] [THREADS]

use std::path::PathBuf;
use transplant_fs::FileKind;
use transplant_rewrite::initramfs::{EncodeOptions, Initramfs};
use transplant_rewrite::GuestFiles;

struct HostDir(PathBuf);

impl HostDir {
    fn p(&self, path: &str) -> PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }
}

impl GuestFiles for HostDir {
    fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, String> {
        let d = std::fs::read(self.p(path)).map_err(|e| e.to_string())?;
        if d.len() as u64 > max {
            return Err("too large".into());
        }
        Ok(d)
    }
    fn kind(&self, path: &str) -> Option<FileKind> {
        let m = std::fs::metadata(self.p(path)).ok()?;
        Some(if m.is_dir() {
            FileKind::Dir
        } else {
            FileKind::File
        })
    }
    fn list(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.p(dir))
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
    fn read_link(&self, path: &str) -> Option<String> {
        std::fs::read_link(self.p(path))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }
    fn size(&self, path: &str) -> Option<u64> {
        std::fs::metadata(self.p(path)).ok().map(|m| m.len())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: initramfs_inject IN OUT GUEST_ROOT KVER MODULE[,MODULE...] [THREADS]");
        std::process::exit(2);
    }
    let data = std::fs::read(&a[1])?;
    let mut ir = Initramfs::parse(&data)?;
    let threads = a.get(6).map(|t| t.parse()).transpose()?.unwrap_or(0);
    ir.set_encode_options(EncodeOptions {
        level: None,
        threads,
    });
    let wanted: Vec<&str> = a[5].split(',').collect();
    let rep = ir.inject_modules(&HostDir(PathBuf::from(&a[3])), &a[4], &wanted)?;
    eprintln!(
        "added {} modules, {} present, {} builtin, {} missing",
        rep.added.len(),
        rep.already_present.len(),
        rep.builtin.len(),
        rep.missing.len()
    );
    std::fs::write(&a[2], ir.to_bytes()?)?;
    Ok(())
}
