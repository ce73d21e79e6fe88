#![no_main]
//! ext2/3/4 on hostile bytes: probe, open, then walk the tree through `resolve_path` (so
//! guest symlinks are followed too) reading a little of every file, within fixed bounds.
//! Any panic, hang or unbounded allocation is a finding.

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use transplant_formats::{BlockDev, MemDev};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::{probe, resolve_path, FileKind, Filesystem};

fuzz_target!(|data: &[u8]| {
    let dev: Arc<dyn BlockDev> = Arc::new(MemDev::new("fuzz", data.to_vec()));
    let _ = probe(&*dev);
    let Ok(fs) = Ext4Fs::open(dev, "ext4") else {
        return;
    };
    let mut todo: Vec<Vec<u8>> = vec![b"/".to_vec()];
    let mut seen = 0;
    let mut buf = vec![0u8; 4096];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            seen += 1;
            if seen > 2000 {
                return;
            }
            let mut p = dir.clone();
            if p.last() != Some(&b'/') {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            let _ = fs.lstat(&p);
            match e.kind {
                FileKind::Dir => todo.push(p),
                FileKind::Symlink => {
                    let _ = fs.read_link(&p);
                    let _ = resolve_path(&fs, &p, true);
                }
                _ => {
                    let _ = fs.read(&p, 0, &mut buf);
                }
            }
        }
    }
});
