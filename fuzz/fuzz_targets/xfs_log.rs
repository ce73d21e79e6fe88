#![no_main]
//! XFS log recovery on hostile bytes: the input is a sparse image in the `xfs` target's
//! form (records of a 4-byte big-endian block number and a 4 KiB block, over a 64 MiB
//! device that is zero elsewhere), seeded with filesystems whose log needs recovery
//! (`fuzz/xfs_log_seeds.py`), so mutations land on log records, operations and items.
//! Record CRCs (and metadata CRCs) are not checked under cargo-fuzz. Open (which
//! replays the log), then read the root and a little of what it lists. Any panic, hang
//! or unbounded allocation is a finding.

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::Arc;
use transplant_formats::{BlockDev, Result};
use transplant_fs::xfs::XfsFs;
use transplant_fs::{FileKind, Filesystem};

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

fuzz_target!(|data: &[u8]| {
    let mut m = BTreeMap::new();
    for rec in data.chunks(4 + BLOCK) {
        if rec.len() < 5 {
            break;
        }
        let b = u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]]) as u64
            % (DEV_LEN / BLOCK as u64);
        let mut block = rec[4..].to_vec();
        block.resize(BLOCK, 0);
        m.insert(b, block);
    }
    let dev: Arc<dyn BlockDev> = Arc::new(Sparse(m));
    let Ok(fs) = XfsFs::open(dev) else {
        return;
    };
    let _ = fs.log_state();
    let Ok(entries) = fs.read_dir(b"/") else {
        return;
    };
    let mut buf = vec![0u8; 4096];
    for e in entries.iter().take(200) {
        let mut p = b"/".to_vec();
        p.extend_from_slice(&e.name);
        let _ = fs.lstat(&p);
        match e.kind {
            FileKind::Dir => {
                let _ = fs.read_dir(&p);
            }
            FileKind::Symlink => {
                let _ = fs.read_link(&p);
            }
            _ => {
                let _ = fs.read(&p, 0, &mut buf);
            }
        }
    }
});
