#![no_main]
//! XFS writes on hostile bytes: the sparse 64 MiB device of the `xfs` target (records
//! of a 4-byte block number and a 4 KiB block; same seeds, `fuzz/xfs_seeds.py`), made
//! writable in memory, opened with `XfsFs::open_rw`, then the rewriter's operations:
//! replace a small and a larger file, create a file, a directory and a symlink, rename
//! and remove, in shortform, block, leaf and node directories, replace a reflinked copy
//! (shared blocks: the refcountbt), and create enough files to need new inode chunks.
//! Errors are expected; a panic, hang or unbounded allocation is a finding.

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use transplant_formats::{BlockDev, Result};
use transplant_fs::xfs::XfsFs;
use transplant_fs::{Filesystem, NewNode, SetAttrs};

const BLOCK: usize = 4096;
const DEV_LEN: u64 = 64 << 20;

struct Sparse(Mutex<BTreeMap<u64, Vec<u8>>>);

impl BlockDev for Sparse {
    fn len(&self) -> u64 {
        DEV_LEN
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        transplant_formats::error::check_range("fuzz", offset, buf.len() as u64, DEV_LEN)?;
        buf.fill(0);
        let m = self.0.lock().unwrap();
        let first = offset / BLOCK as u64;
        let last = (offset + buf.len() as u64).div_ceil(BLOCK as u64);
        for (&b, data) in m.range(first..last) {
            let start = b * BLOCK as u64;
            let lo = start.max(offset);
            let hi = (start + BLOCK as u64).min(offset + buf.len() as u64);
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&data[(lo - start) as usize..(hi - start) as usize]);
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        transplant_formats::error::check_range("fuzz", offset, buf.len() as u64, DEV_LEN)?;
        let mut m = self.0.lock().unwrap();
        let mut pos = offset;
        let end = offset + buf.len() as u64;
        while pos < end {
            let b = pos / BLOCK as u64;
            let within = (pos % BLOCK as u64) as usize;
            let n = (BLOCK - within).min((end - pos) as usize);
            let blk = m.entry(b).or_insert_with(|| vec![0; BLOCK]);
            let src = (pos - offset) as usize;
            blk[within..within + n].copy_from_slice(&buf[src..src + n]);
            pos += n as u64;
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
    Sparse(Mutex::new(m))
}

fuzz_target!(|data: &[u8]| {
    let dev: Arc<dyn BlockDev> = Arc::new(device(data));
    let Ok(fs) = XfsFs::open_rw(dev) else {
        return;
    };
    let a = SetAttrs::default();
    let big = vec![0x5a; 300_000];
    let _ = fs.write_file(b"/etc/fstab", b"UUID=x / xfs defaults 0 0\n");
    let _ = fs.write_file(b"/frag", &big);
    let _ = fs.create(b"/etc/new.conf", NewNode::File(b"x\n"), &a);
    let _ = fs.create(b"/blk/new", NewNode::File(&big[..5000]), &a);
    let _ = fs.create(b"/etc/d", NewNode::Dir, &a);
    let _ = fs.create(b"/etc/d/l", NewNode::Symlink(b"../fstab"), &a);
    let _ = fs.rename(b"/etc/new.conf", b"/etc/d/moved");
    let _ = fs.remove(b"/sf/entry-00001");
    let _ = fs.remove(b"/blk/entry-00003");
    let _ = fs.remove(b"/etc/fstab");
    // Leaf and node directories (the seeds' /leaf and /node).
    let _ = fs.create(b"/leaf/new-entry", NewNode::File(b""), &a);
    let _ = fs.remove(b"/leaf/entry-00007");
    let _ = fs.rename(b"/leaf/entry-00008", b"/node/entry-from-leaf");
    let _ = fs.create(b"/node/new-entry", NewNode::Dir, &a);
    let _ = fs.remove(b"/node/entry-00011");
    let _ = fs.rename(b"/node/entry-00012", b"/leaf/entry-from-node");
    let _ = fs.read_dir(b"/leaf");
    let _ = fs.write_file(b"/frag.clone", &big[..9000]);
    let _ = fs.remove(b"/frag");
    for k in 0..70 {
        if fs
            .create(format!("/etc/d/n{k}").as_bytes(), NewNode::File(b"n"), &a)
            .is_err()
        {
            break;
        }
    }
    let mut buf = [0u8; 64];
    let _ = fs.read(b"/frag", 0, &mut buf);
    let _ = fs.read_dir(b"/etc");
});
