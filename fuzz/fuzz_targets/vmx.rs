#![no_main]
//! VMX parser and description.
use libfuzzer_sys::fuzz_target;
use transplant_formats::container::vmx;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = vmx::parse(data, "fuzz.vmx") {
        let _ = vmx::describe(&v, "fuzz");
    }
});
