//! X.org configuration (`/etc/X11/xorg.conf`, `XF86Config`, `xorg.conf.d/*.conf`): a
//! `Device` section naming the old virtual card's driver (`vmware`, `vboxvideo`, `cirrus`,
//! `xen`...) leaves the target without a display. The driver becomes `modesetting` (QXL,
//! virtio-gpu and most real cards through KMS) and the lines that describe the old card
//! (`VendorName`, `BoardName`, `BusID`) go; everything else in the file stays.

use super::fields::fields;
use crate::context::Context;
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

/// Drivers of virtual or fallback video that the target replaces.
pub const OLD_DRIVERS: [&str; 8] = [
    "vmware",
    "vmwgfx",
    "vboxvideo",
    "cirrus",
    "fbdev",
    "xen",
    "vesa",
    "qxl",
];

/// The first word of a line and the quoted value after it (range of the text inside the
/// quotes, or of the bare word).
fn entry(body: &str) -> Option<(String, std::ops::Range<usize>)> {
    let f = fields(body);
    let key = body.get(f.first()?.clone())?.to_ascii_lowercase();
    let vstart = f.get(1)?.start;
    let rest = body.get(vstart..)?;
    if let Some(inner) = rest.strip_prefix('"') {
        let end = inner.find('"')?;
        Some((key, vstart + 1..vstart + 1 + end))
    } else {
        Some((key, f.get(1)?.clone()))
    }
}

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let new_driver = ctx.target.xorg_driver();
    let lines: Vec<(usize, &str)> = lines_with_endings(text).collect();
    let mut ed = LineEditor::new(file);
    let mut i = 0;
    while let Some(&(_, raw)) = lines.get(i) {
        let body = split_ending(raw).0;
        let is_device = entry(body).is_some_and(|(k, v)| {
            k == "section"
                && body
                    .get(v)
                    .is_some_and(|s| s.eq_ignore_ascii_case("device"))
        });
        ed.keep(raw);
        i += 1;
        if !is_device || body.trim_start().starts_with('#') {
            continue;
        }
        // The section's lines up to EndSection; decide on its driver first, since the card
        // description may come before the Driver line.
        let start = i;
        while let Some(&(_, r)) = lines.get(i) {
            let b = split_ending(r).0;
            if fields(b)
                .first()
                .and_then(|f| b.get(f.clone()))
                .is_some_and(|w| w.eq_ignore_ascii_case("endsection"))
            {
                break;
            }
            i += 1;
        }
        let section = lines.get(start..i).unwrap_or(&[]);
        let old = section.iter().find_map(|&(_, r)| {
            let b = split_ending(r).0;
            if b.trim_start().starts_with('#') {
                return None;
            }
            let (k, v) = entry(b)?;
            let d = b.get(v)?;
            (k == "driver" && OLD_DRIVERS.iter().any(|o| o.eq_ignore_ascii_case(d)))
                .then(|| d.to_string())
        });
        for &(n, r) in section {
            let b = split_ending(r).0;
            let Some(old) = &old else {
                ed.keep(r);
                continue;
            };
            if b.trim_start().starts_with('#') {
                ed.keep(r);
                continue;
            }
            match entry(b) {
                Some((k, v)) if k == "driver" => {
                    let new = format!("{}{new_driver}{}", &b[..v.start], &b[v.end..]);
                    ed.replace(
                        n,
                        r,
                        &new,
                        format!(
                            "the \"{old}\" driver drives the old virtual card; \"{new_driver}\" \
                             works on QXL, virtio-gpu and most real cards"
                        ),
                    );
                }
                Some((k, _)) if matches!(k.as_str(), "vendorname" | "boardname" | "busid") => {
                    ed.remove(n, r, format!("describes the old card (driver \"{old}\")"));
                }
                _ => ed.keep(r),
            }
        }
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;
    use crate::Target;

    const VMWARE: &str = r#"Section "ServerLayout"
	Identifier     "X.org Configured"
	Screen      0  "Screen0" 0 0
	InputDevice    "Mouse0" "CorePointer"
EndSection

Section "InputDevice"
	Identifier  "Mouse0"
	Driver      "vmmouse"
EndSection

Section "Device"
        ### Available Driver options are:-
        #Option     "HWcursor"           	# [<bool>]
	Identifier  "Card0"
	VendorName  "VMware Inc"
	BoardName   "SVGA II Adapter"
	Driver      "vmware"
	BusID       "PCI:0:15:0"
EndSection

section "device"
	identifier "Other"
	driver "intel"
	BusID "PCI:0:2:0"
endsection
"#;

    #[test]
    fn vmware_card_becomes_modesetting() {
        let c = ctx(Target::Kvm);
        let p = patch("/etc/X11/xorg.conf", VMWARE, &c);
        let out = p.text.clone().unwrap();
        assert!(out.contains("\tDriver      \"modesetting\"\n"));
        assert!(!out.contains("VMware Inc"));
        assert!(!out.contains("PCI:0:15:0"));
        assert!(out.contains("#Option     \"HWcursor\""));
        assert!(out.contains("\tDriver      \"vmmouse\"\n"));
        assert!(out.contains("driver \"intel\"\n\tBusID \"PCI:0:2:0\""));
        assert_eq!(p.edits.len(), 4);
        assert!(patch("x", &out, &c).text.is_none());
    }

    #[test]
    fn conf_d_snippet_without_final_newline() {
        let t =
            "Section \"Device\"\r\n  Identifier \"vbox\"\r\n  Driver \"vboxvideo\"\r\nEndSection";
        let p = patch(
            "/etc/X11/xorg.conf.d/20-vbox.conf",
            t,
            &ctx(Target::Physical),
        );
        assert_eq!(
            p.text.as_deref(),
            Some("Section \"Device\"\r\n  Identifier \"vbox\"\r\n  Driver \"modesetting\"\r\nEndSection")
        );
    }
}
