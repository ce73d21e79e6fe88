#![no_main]
//! The binary module index reader on hostile bytes.
use libfuzzer_sys::fuzz_target;
use transplant_rewrite::initramfs::kmod_index::Index;

fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = Index::open(data) {
        let _ = idx.lookup("virtio_blk");
        let _ = idx.lookup("");
        let _ = idx.entries(10_000);
    }
});
