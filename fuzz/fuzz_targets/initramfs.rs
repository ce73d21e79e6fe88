#![no_main]
//! A whole initramfs file: segments, decompression (bounded), cpio archives; an image that
//! parses is written back unchanged byte for byte, and rebuilt after a rewrite.
use libfuzzer_sys::fuzz_target;
use transplant_rewrite::initramfs::Initramfs;

fuzz_target!(|data: &[u8]| {
    let Ok(ir) = Initramfs::parse_with_limit(data, 16 << 20) else {
        return;
    };
    let _ = ir.module_names();
    let _ = ir.kernel_versions();
    let _ = ir.generator();
    assert!(ir.to_bytes().unwrap() == data);
    let mut changed = ir.clone();
    changed.set_encode_options(transplant_rewrite::initramfs::EncodeOptions {
        level: Some(1),
        threads: 1,
    });
    changed.rewrite_members(&mut |_, d| Some(d.iter().rev().copied().collect()));
    if let Ok(out) = changed.to_bytes() {
        let again = Initramfs::parse_with_limit(&out, 64 << 20).unwrap();
        let _ = again.diff(&ir);
    }
});
