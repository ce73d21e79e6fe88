#![no_main]
//! Every text patcher on arbitrary text, for each target and naming: no panic, and the
//! output patched again is unchanged (patching is idempotent). The grubenv patcher must
//! also keep the block's size.

use libfuzzer_sys::fuzz_target;
use transplant_rewrite::patch::{PlanOptions, TextKind};
use transplant_rewrite::{Context, DeviceNaming, GuestVolume, Target};

fn ctx(sel: u8) -> Context {
    let target = match sel % 3 {
        0 => Target::Kvm,
        1 => Target::KvmScsi,
        _ => Target::Physical,
    };
    let mut c = Context::new(target);
    if sel & 4 != 0 {
        c.naming = DeviceNaming::Rename;
    }
    let vol = |disk: usize, p: Option<u32>, uuid: Option<&str>, label: Option<&str>| GuestVolume {
        disk: Some(disk),
        partition: p,
        uuid: uuid.map(str::to_string),
        label: label.map(str::to_string),
        ..Default::default()
    };
    c.volumes = vec![
        vol(0, None, None, None),
        vol(0, Some(1), Some("0b8a"), None),
        vol(0, Some(2), None, Some("swap")),
        vol(0, Some(3), None, None),
        vol(1, None, None, None),
        vol(1, Some(1), Some("77aa"), None),
    ];
    c
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let c = ctx(sel);
    let opts = PlanOptions {
        usable_kernels: if sel & 8 != 0 {
            vec!["2.6.18-398.el5".into(), "6.1.0".into()]
        } else {
            Vec::new()
        },
        ..PlanOptions::default()
    };
    for kind in TextKind::ALL {
        let p = kind.patch("/f", &text, &c, &opts);
        let Some(out) = p.text else {
            continue;
        };
        if kind == TextKind::Grubenv {
            assert_eq!(out.len(), text.len(), "grubenv changed size");
        }
        let again = kind.patch("/f", &out, &c, &opts);
        assert!(
            again.text.is_none(),
            "{kind:?} not idempotent:\n--- input\n{text:?}\n--- once\n{out:?}\n--- twice\n{:?}",
            again.text
        );
    }
});
