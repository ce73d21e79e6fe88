#![no_main]
//! The ext4 writer on hostile bytes: open for writing over an overlay (the safety checks
//! first), then create, replace, rename, chmod and remove around whatever tree is there,
//! reading back as it goes. Errors are expected; any panic, hang or unbounded allocation
//! is a finding.

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use transplant_formats::{BlockDev, MemDev, Overlay};
use transplant_fs::ext4::Ext4Fs;
use transplant_fs::{FileKind, Filesystem, NewNode, SetAttrs};

fuzz_target!(|data: &[u8]| {
    let base: Arc<dyn BlockDev> = Arc::new(MemDev::new("fuzz", data.to_vec()));
    let Ok(fs) = Ext4Fs::open_rw(Arc::new(Overlay::new(base)), "ext4") else {
        return;
    };
    // A bounded walk to find names to work on.
    let mut paths: Vec<(Vec<u8>, FileKind)> = vec![(b"/".to_vec(), FileKind::Dir)];
    let mut i = 0;
    while i < paths.len() && paths.len() < 64 {
        let (dir, kind) = paths[i].clone();
        i += 1;
        if kind != FileKind::Dir {
            continue;
        }
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries.into_iter().take(16) {
            let mut p = dir.clone();
            if p.last() != Some(&b'/') {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            paths.push((p, e.kind));
        }
    }
    let a = SetAttrs::default();
    let mut buf = vec![0u8; 8192];
    for (n, (p, kind)) in paths.iter().enumerate().take(24) {
        let mut child = p.clone();
        child.extend_from_slice(format!("/new{n}").as_bytes());
        match kind {
            FileKind::Dir => {
                let _ = fs.create(&child, NewNode::File(&[7u8; 5000]), &a);
                let _ = fs.create(&[child.as_slice(), b"d"].concat(), NewNode::Dir, &a);
                let _ = fs.create(&[child.as_slice(), b"l"].concat(), NewNode::Symlink(&[b'x'; 100]), &a);
                let _ = fs.read_dir(p);
            }
            FileKind::File => {
                let _ = fs.read(p, 0, &mut buf);
                let _ = fs.write_file(p, &[1u8; 20000]);
                let _ = fs.read(p, 0, &mut buf);
            }
            _ => {
                let _ = fs.read_link(p);
            }
        }
        let _ = fs.set_attrs(p, &SetAttrs { mode: Some(0o640), ..Default::default() });
        if n % 3 == 1 {
            let _ = fs.rename(p, b"/renamed");
        }
        if n % 3 == 2 {
            let _ = fs.remove(p);
        }
    }
    let _ = fs.sync();
});
