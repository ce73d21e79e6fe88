#![no_main]
//! modules.dep / .alias / .softdep / .builtin text: parsing, dependency closure and the
//! binary indexes written from them.
use libfuzzer_sys::fuzz_target;
use transplant_rewrite::initramfs::{kmod_index, modules_dep};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (dep, _) = modules_dep::ModulesDep::parse(&text);
    let names: Vec<String> = dep
        .entries()
        .iter()
        .take(8)
        .map(|e| e.name.clone())
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = dep.closure(&refs);
    let _ = modules_dep::parse_softdeps(&text);
    let _ = modules_dep::parse_builtin(&text);
    if let Ok(b) = kmod_index::dep_bin(&dep) {
        let idx = kmod_index::Index::open(&b).unwrap();
        for n in &names {
            assert!(!idx.lookup(n).unwrap().is_empty());
        }
    }
    let _ = kmod_index::alias_bin(&text, &dep, true);
});
