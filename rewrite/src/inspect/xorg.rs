//! The display: is X installed, which config files it has, and which `Device` sections
//! name a driver of the old virtual hardware (`vmware`, `vboxvideo`, `cirrus`, ...) that
//! leaves the target without a screen.

use crate::guest_files::GuestFiles;
use serde::Serialize;

/// X drivers of virtual or emulated video that do not work on the targets.
pub const OLD_DRIVERS: &[&str] = &[
    "vmware",
    "vmwgfx",
    "vboxvideo",
    "vboxsvga",
    "cirrus",
    "fbdev",
    "xen",
    "xenfb",
    "vesa",
    "hyperv_fb",
    "vga",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XDevice {
    pub identifier: Option<String>,
    pub driver: Option<String>,
    /// Line of the `Driver` option (or of the section).
    pub line: usize,
    pub old_hardware: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XConfig {
    pub path: String,
    pub devices: Vec<XDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Display {
    pub x_installed: bool,
    pub evidence: Vec<String>,
    pub config_files: Vec<XConfig>,
}

/// `Section "Device"` blocks of an xorg.conf.
pub fn devices(text: &str) -> Vec<XDevice> {
    let mut out = Vec::new();
    let mut cur: Option<XDevice> = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.split('#').next().unwrap_or("").trim();
        let mut w = t.split_whitespace();
        let key = w.next().unwrap_or("").to_ascii_lowercase();
        let rest = w.collect::<Vec<_>>().join(" ");
        let val = crate::net::unquote(&rest).0.to_string();
        match key.as_str() {
            "section" if val.eq_ignore_ascii_case("device") => {
                cur = Some(XDevice {
                    identifier: None,
                    driver: None,
                    line: i + 1,
                    old_hardware: false,
                });
            }
            "endsection" => {
                if let Some(d) = cur.take() {
                    out.push(d);
                }
            }
            "identifier" => {
                if let Some(d) = cur.as_mut() {
                    d.identifier = Some(val);
                }
            }
            "driver" => {
                if let Some(d) = cur.as_mut() {
                    d.old_hardware = OLD_DRIVERS.iter().any(|o| o.eq_ignore_ascii_case(&val));
                    d.driver = Some(val);
                    d.line = i + 1;
                }
            }
            _ => {}
        }
    }
    out
}

pub fn find(guest: &dyn GuestFiles) -> Display {
    let evidence: Vec<String> = [
        "/usr/bin/Xorg",
        "/usr/libexec/Xorg",
        "/usr/lib/xorg/Xorg",
        "/usr/bin/X",
        "/usr/X11R6/bin/X",
        "/usr/X11R6/bin/XFree86",
        "/usr/lib/xorg/modules",
        "/usr/lib64/xorg/modules",
    ]
    .iter()
    .filter(|p| guest.exists(p))
    .map(|p| p.to_string())
    .collect();
    let mut paths: Vec<String> = [
        "/etc/X11/xorg.conf",
        "/etc/X11/XF86Config",
        "/etc/X11/XF86Config-4",
    ]
    .iter()
    .filter(|p| guest.exists(p))
    .map(|p| p.to_string())
    .collect();
    for n in guest.list("/etc/X11/xorg.conf.d") {
        if n.ends_with(".conf") {
            paths.push(format!("/etc/X11/xorg.conf.d/{n}"));
        }
    }
    let config_files = paths
        .into_iter()
        .map(|p| XConfig {
            devices: guest.read_text(&p).map(|t| devices(&t)).unwrap_or_default(),
            path: p,
        })
        .collect();
    Display {
        x_installed: !evidence.is_empty(),
        evidence,
        config_files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_sections() {
        let t = "Section \"Device\"\n    Identifier  \"VMware SVGA\"\n    Driver      \"vmware\"\n    BusID       \"PCI:0:15:0\"\nEndSection\nSection \"Screen\"\n  Device \"VMware SVGA\"\nEndSection\nSection \"Device\"\n Driver \"modesetting\" # ok\nEndSection\n";
        let d = devices(t);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].identifier.as_deref(), Some("VMware SVGA"));
        assert_eq!(d[0].driver.as_deref(), Some("vmware"));
        assert_eq!(d[0].line, 3);
        assert!(d[0].old_hardware);
        assert!(!d[1].old_hardware);
    }
}
