#![no_main]
//! FAT12/16/32 on hostile bytes, read and write. The input is the start of a 40 MiB device
//! that is zero past it (so a FAT32 boot sector, its FATs and root fit in a small input;
//! seeds: the non-zero start of small mkfs.fat + mcopy images). Open read-only and walk
//! the tree reading every file a little; then open for writing over an overlay and
//! create, replace, rename and remove around what is there, reading back as it goes.
//! Errors are expected; any panic, hang or unbounded allocation is a finding.

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use transplant_formats::{BlockDev, Overlay, Result};
use transplant_fs::fat::FatFs;
use transplant_fs::{probe, FileKind, Filesystem, NewNode, SetAttrs};

const DEV_LEN: u64 = 40 << 20;

struct Padded(Vec<u8>);

impl BlockDev for Padded {
    fn len(&self) -> u64 {
        DEV_LEN
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        transplant_formats::error::check_range("fuzz", offset, buf.len() as u64, DEV_LEN)?;
        buf.fill(0);
        let start = offset.min(self.0.len() as u64) as usize;
        let end = (offset + buf.len() as u64).min(self.0.len() as u64) as usize;
        if start < end {
            buf[..end - start].copy_from_slice(&self.0[start..end]);
        }
        Ok(())
    }
    fn name(&self) -> &str {
        "fuzz"
    }
}

fn walk(fs: &FatFs) -> Vec<(Vec<u8>, FileKind)> {
    let mut paths: Vec<(Vec<u8>, FileKind)> = vec![(b"/".to_vec(), FileKind::Dir)];
    let mut buf = vec![0u8; 8192];
    let mut i = 0;
    while i < paths.len() && paths.len() < 200 {
        let (dir, kind) = paths[i].clone();
        i += 1;
        let _ = fs.lstat(&dir);
        if kind != FileKind::Dir {
            let _ = fs.read(&dir, 0, &mut buf);
            let _ = fs.read(&dir, 100_000, &mut buf);
            let _ = fs.read_link(&dir);
            continue;
        }
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries.into_iter().take(32) {
            let mut p = dir.clone();
            if p.last() != Some(&b'/') {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            paths.push((p, e.kind));
        }
    }
    paths
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 4 << 20 {
        return;
    }
    let base: Arc<dyn BlockDev> = Arc::new(Padded(data.to_vec()));
    let _ = probe(&*base);
    if let Ok(fs) = FatFs::open(base.clone()) {
        let _ = fs.info();
        walk(&fs);
    }
    let Ok(fs) = FatFs::open_rw(Arc::new(Overlay::new(base))) else {
        return;
    };
    let paths = walk(&fs);
    let a = SetAttrs::default();
    let big = vec![0x5au8; 70_000];
    let mut buf = vec![0u8; 4096];
    let _ = fs.create(b"/EFI/BOOT", NewNode::Dir, &a);
    let _ = fs.create(b"/EFI/BOOT/BOOTX64.EFI", NewNode::File(&big), &a);
    let _ = fs.create(b"/a long new name.txt", NewNode::File(b"x"), &a);
    for (n, (p, kind)) in paths.iter().enumerate().skip(1).take(24) {
        match (kind, n % 4) {
            (FileKind::File, 0) => {
                let _ = fs.write_file(p, &big[..(n * 997) % big.len()]);
            }
            (FileKind::File, 1) => {
                let mut to = p.clone();
                to.extend_from_slice(b".old");
                let _ = fs.rename(p, &to);
            }
            (_, 2) => {
                let _ = fs.remove(p);
            }
            (FileKind::Dir, _) => {
                let mut q = p.clone();
                q.extend_from_slice(b"/new file with a long name");
                let _ = fs.create(&q, NewNode::File(b"new"), &a);
                let _ = fs.rename(&q, b"/moved");
            }
            _ => {
                let _ = fs.set_attrs(p, &SetAttrs { mode: Some(0o444), ..a.clone() });
            }
        }
        let _ = fs.read(p, 0, &mut buf);
    }
    walk(&fs);
    let _ = fs.sync();
});
