#![no_main]
//! The boot-config readers and the patchers that take more than one file's text
//! (Upstart jobs, grubenv's saved_entry against a menu) on arbitrary text: no panic, the
//! patched output patched again is unchanged, and grubenv keeps its size. The input is
//! split at the first NUL: a menu (grub.cfg) before it, the file after it.

use libfuzzer_sys::fuzz_target;
use transplant_rewrite::inspect::bootloader::{parse_extlinux, parse_grub2, parse_lilo};
use transplant_rewrite::patch::{grub2, lilo, upstart};
use transplant_rewrite::{Context, GuestVolume, Target};

fn ctx(sel: u8) -> Context {
    let target = match sel % 3 {
        0 => Target::Kvm,
        1 => Target::KvmScsi,
        _ => Target::Physical,
    };
    let mut c = Context::new(target);
    c.volumes = vec![
        GuestVolume {
            disk: Some(0),
            partition: Some(1),
            uuid: Some("0b8a".into()),
            ..Default::default()
        },
        GuestVolume {
            disk: Some(0),
            partition: None,
            ..Default::default()
        },
    ];
    c
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (menu, file) = text.split_once('\0').unwrap_or(("", &text));
    let c = ctx(sel);
    let usable = if sel & 8 != 0 {
        vec!["3.2.0-4-amd64".to_string(), "6.1.0".to_string()]
    } else {
        Vec::new()
    };
    let _ = parse_extlinux("/f", file);
    let _ = parse_lilo("/f", file);
    for l in file.lines() {
        let _ = lilo::items(l);
    }
    let _ = upstart::getty_tty(file);
    let jp = upstart::patch_job("/etc/init/x.conf", file, &c, sel & 16 != 0);
    if let Some(out) = jp.job.text {
        let again = upstart::patch_job("/etc/init/x.conf", &out, &c, true);
        assert!(again.job.text.is_none(), "upstart not idempotent: {out:?}");
    }
    if let Some(j) = jp.new_job {
        let again = upstart::patch_job(&j.path, &j.text, &c, true);
        assert!(again.job.text.is_none(), "new job patched again: {:?}", j.text);
    }
    let entries = parse_grub2("/boot/grub/grub.cfg", menu);
    let p = grub2::patch_saved_entry("/f", file, &c, &entries, &usable);
    if let Some(out) = p.text {
        assert_eq!(out.len(), file.len(), "grubenv changed size");
        let again = grub2::patch_saved_entry("/f", &out, &c, &entries, &usable);
        assert!(again.text.is_none(), "saved_entry not idempotent: {out:?}");
    }
});
