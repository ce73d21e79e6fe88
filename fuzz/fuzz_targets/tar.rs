#![no_main]
//! Tar (OVA) reader: the in-place index and the streaming walk must agree, never panic,
//! and every member opens (or fails cleanly) as a disk image read in place.
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;
use transplant_formats::container::tar::{self, TarSource};
use transplant_formats::{BlockDev, MemDev, Slice};

fuzz_target!(|data: &[u8]| {
    let dev: Arc<dyn BlockDev> = Arc::new(MemDev::new("fuzz.ova", data.to_vec()));
    let indexed = tar::index(&*dev);
    let mut src = tar::StreamSource::new(data, "fuzz.ova");
    let mut streamed = Vec::new();
    while let Ok(Some(m)) = tar::next_member(&mut src) {
        if src.skip(m.size + tar::padding(m.size)).is_err() {
            break;
        }
        streamed.push(m);
        if streamed.len() > 10_000 {
            break;
        }
    }
    if let Ok(members) = indexed {
        for m in members.iter().take(8) {
            let Ok(s) = Slice::new(dev.clone(), m.data_offset, m.size, "member") else {
                continue;
            };
            if let Ok(img) = transplant_formats::container::open_image_in(Arc::new(s), Path::new("m")) {
                let _ = img.info();
                let mut b = [0u8; 4096];
                let n = img.len().min(4096) as usize;
                let _ = img.read_at(&mut b[..n], 0);
            }
        }
    }
});
