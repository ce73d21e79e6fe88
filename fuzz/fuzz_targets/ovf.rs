#![no_main]
//! OVF descriptor parser: any bytes give a description or an error, within bounds.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = transplant_formats::container::ovf::parse(data, "fuzz.ovf", "fuzz");
});
