#![no_main]
//! OVF manifest parser.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = transplant_formats::container::manifest::parse(data, "fuzz.mf");
});
