#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tail: Option<&[u8; 512]> = data.get(data.len().saturating_sub(512)..).and_then(|t| t.try_into().ok());
    let _ = transplant_formats::probe::probe_bytes(data, tail);
});
