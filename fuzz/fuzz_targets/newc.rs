#![no_main]
//! One cpio newc/crc archive: whatever reads, writes back and reads the same.
use libfuzzer_sys::fuzz_target;
use transplant_rewrite::initramfs::newc;

fuzz_target!(|data: &[u8]| {
    let mut budget = 16 << 20;
    if let Ok((a, used)) = newc::read_archive(data, 0, &mut budget) {
        assert!(used <= data.len());
        let _ = newc::link_groups(&a.members);
        let mut out = Vec::new();
        if newc::write_archive(&mut out, &a).is_ok() {
            let mut budget = 16 << 20;
            let (b, _) = newc::read_archive(&out, 0, &mut budget).unwrap();
            assert_eq!(a.members, b.members);
        }
    }
});
