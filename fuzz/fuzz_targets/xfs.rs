#![no_main]
//! XFS on hostile bytes. The input is a sparse image, so mutations land on metadata
//! rather than on megabytes of zeroes: records of a 4-byte big-endian block number and a
//! 4 KiB block, over a 64 MiB device that is zero elsewhere (seeds: the non-zero blocks
//! of small mkfs.xfs images, made by `fuzz/xfs_seeds.py`). Probe, open (also with a dirty
//! log allowed), then walk the tree through `resolve_path` reading a little of every
//! file, link and attribute, within fixed bounds. Any panic, hang or unbounded
//! allocation is a finding.

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::Arc;
use transplant_formats::{BlockDev, Result};
use transplant_fs::xfs::{XfsFs, XfsOptions};
use transplant_fs::{probe, resolve_path, FileKind, Filesystem};

const BLOCK: usize = 4096;
const DEV_LEN: u64 = 64 << 20;

struct Sparse(BTreeMap<u64, Vec<u8>>);

impl BlockDev for Sparse {
    fn len(&self) -> u64 {
        DEV_LEN
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        transplant_formats::error::check_range("fuzz", offset, buf.len() as u64, DEV_LEN)?;
        buf.fill(0);
        let first = offset / BLOCK as u64;
        let last = (offset + buf.len() as u64).div_ceil(BLOCK as u64);
        for (&b, data) in self.0.range(first..last) {
            let start = b * BLOCK as u64;
            let lo = start.max(offset);
            let hi = (start + BLOCK as u64).min(offset + buf.len() as u64);
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&data[(lo - start) as usize..(hi - start) as usize]);
        }
        Ok(())
    }
    fn name(&self) -> &str {
        "fuzz"
    }
}

fn device(data: &[u8]) -> Sparse {
    let mut m = BTreeMap::new();
    for rec in data.chunks(4 + BLOCK) {
        if rec.len() < 5 {
            break;
        }
        let b = u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]]) as u64 % (DEV_LEN / BLOCK as u64);
        let mut block = rec[4..].to_vec();
        block.resize(BLOCK, 0);
        m.insert(b, block);
    }
    Sparse(m)
}

fn walk(fs: &XfsFs) {
    let mut todo: Vec<Vec<u8>> = vec![b"/".to_vec()];
    let mut seen = 0;
    let mut buf = vec![0u8; 8192];
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
            let _ = fs.xattrs(&p);
            let _ = fs.get_xattr(&p, b"security.selinux");
            match e.kind {
                FileKind::Dir => todo.push(p),
                FileKind::Symlink => {
                    let _ = fs.read_link(&p);
                    let _ = resolve_path(fs, &p, true);
                }
                _ => {
                    let _ = fs.read(&p, 0, &mut buf);
                    let _ = fs.read(&p, 1 << 20, &mut buf[..100]);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let dev: Arc<dyn BlockDev> = Arc::new(device(data));
    let _ = probe(&*dev);
    match XfsFs::open(dev.clone()) {
        Ok(fs) => walk(&fs),
        Err(_) => {
            if let Ok(fs) = XfsFs::open_with(dev, XfsOptions { allow_dirty_log: true }) {
                walk(&fs);
            }
        }
    }
});
