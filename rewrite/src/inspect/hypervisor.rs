//! Tools of the old hypervisor left in the guest (VMware Tools, open-vm-tools, Xen guest
//! utilities, VirtualBox additions, Hyper-V daemons). On the target they fail at boot or
//! keep waiting for a host that is gone; a conversion disables them offline and the
//! report says what to remove after first boot.

use crate::guest_files::GuestFiles;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HypervisorTool {
    /// `vmware-tools`, `open-vm-tools`, `xen-tools`, `virtualbox-additions`,
    /// `hyperv-daemons`.
    pub kind: String,
    pub evidence: Vec<String>,
    pub advice: String,
}

const KINDS: &[(&str, &[&str], &str)] = &[
    (
        "vmware-tools",
        &[
            "/usr/bin/vmware-uninstall-tools.pl",
            "/etc/vmware-tools/locations",
            "/etc/init.d/vmware-tools",
            "/usr/lib/vmware-tools",
        ],
        "VMware's own Tools (installed from the tarball): run vmware-uninstall-tools.pl after first boot",
    ),
    (
        "open-vm-tools",
        &[
            "/usr/bin/vmtoolsd",
            "/lib/systemd/system/open-vm-tools.service",
            "/usr/lib/systemd/system/vmtoolsd.service",
            "/lib/systemd/system/vmtoolsd.service",
            "/etc/init.d/open-vm-tools",
        ],
        "remove the open-vm-tools package after first boot",
    ),
    (
        "xen-tools",
        &[
            "/usr/sbin/xe-daemon",
            "/usr/sbin/xe-linux-distribution",
            "/etc/init.d/xe-linux-distribution",
            "/usr/lib/systemd/system/xe-linux-distribution.service",
            "/etc/init.d/xendomains",
            "/usr/sbin/xenstore-read",
            "/usr/bin/xenstore-read",
        ],
        "remove xe-guest-utilities (or xenstore tools) after first boot",
    ),
    (
        "virtualbox-additions",
        &[
            "/usr/sbin/VBoxService",
            "/usr/bin/VBoxService",
            "/etc/init.d/vboxadd",
            "/lib/systemd/system/vboxadd.service",
            "/usr/lib/systemd/system/vboxadd.service",
            "/opt/VBoxGuestAdditions",
        ],
        "uninstall the VirtualBox Guest Additions after first boot (/opt/VBoxGuestAdditions-*/uninstall.sh)",
    ),
    (
        "hyperv-daemons",
        &[
            "/usr/sbin/hv_kvp_daemon",
            "/usr/sbin/hypervkvpd",
            "/usr/lib/systemd/system/hypervkvpd.service",
            "/usr/sbin/hv_vss_daemon",
            "/usr/sbin/hv_fcopy_daemon",
            "/usr/libexec/hypervkvpd",
        ],
        "remove hyperv-daemons (hv_kvp_daemon, hv_vss_daemon) after first boot",
    ),
];

pub fn find(guest: &dyn GuestFiles) -> Vec<HypervisorTool> {
    let mut out: Vec<HypervisorTool> = Vec::new();
    for (kind, paths, advice) in KINDS {
        let mut evidence: Vec<String> = paths
            .iter()
            .filter(|p| guest.exists(p))
            .map(|p| p.to_string())
            .collect();
        if *kind == "virtualbox-additions" {
            evidence.extend(
                guest
                    .list("/opt")
                    .into_iter()
                    .filter(|n| n.starts_with("VBoxGuestAdditions"))
                    .map(|n| format!("/opt/{n}")),
            );
        }
        if !evidence.is_empty() {
            out.push(HypervisorTool {
                kind: kind.to_string(),
                evidence,
                advice: advice.to_string(),
            });
        }
    }
    // Hypervisor traces in config: vmhgfs shares, Xen consoles.
    let fstab = guest.read_text("/etc/fstab").unwrap_or_default();
    let shares: Vec<String> = fstab
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| l.contains("vmhgfs") || l.contains("vboxsf") || l.contains(" xenfs "))
        .map(|l| format!("/etc/fstab: {}", l.trim()))
        .collect();
    for s in shares {
        let kind = if s.contains("vmhgfs") {
            "open-vm-tools"
        } else if s.contains("vboxsf") {
            "virtualbox-additions"
        } else {
            "xen-tools"
        };
        match out.iter_mut().find(|t| t.kind == kind) {
            Some(t) => t.evidence.push(s),
            None => out.push(HypervisorTool {
                kind: kind.to_string(),
                advice: KINDS
                    .iter()
                    .find(|k| k.0 == kind)
                    .map(|k| k.2.to_string())
                    .unwrap_or_default(),
                evidence: vec![s],
            }),
        }
    }
    for f in ["/etc/inittab", "/etc/securetty"] {
        let Some(t) = guest.read_text(f) else {
            continue;
        };
        let hits: Vec<String> = t
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter(|l| l.contains("xvc0") || (f == "/etc/inittab" && l.contains("hvc0")))
            .map(|l| format!("{f}: {}", l.trim()))
            .collect();
        if hits.is_empty() {
            continue;
        }
        match out.iter_mut().find(|t| t.kind == "xen-tools") {
            Some(x) => x.evidence.extend(hits),
            None => out.push(HypervisorTool {
                kind: "xen-tools".into(),
                evidence: hits,
                advice: "a getty on the Xen console (xvc0/hvc0): the conversion moves it to ttyS0"
                    .into(),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_files::MemGuest;

    #[test]
    fn finds_tools() {
        let g = MemGuest::new()
            .file("/usr/bin/vmtoolsd", "x")
            .file(
                "/etc/fstab",
                ".host:/ /mnt/hgfs fuse.vmhgfs-fuse defaults 0 0\n",
            )
            .file(
                "/etc/inittab",
                "co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n",
            )
            .file("/opt/VBoxGuestAdditions-6.1.38/uninstall.sh", "x");
        let t = find(&g);
        let kinds: Vec<&str> = t.iter().map(|x| x.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["open-vm-tools", "virtualbox-additions", "xen-tools"]
        );
        assert_eq!(t[0].evidence.len(), 2);
    }
}
