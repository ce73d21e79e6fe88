//! Guest tools of the old hypervisor: VMware Tools and open-vm-tools, Xen guest utilities,
//! VirtualBox guest additions, Hyper-V daemons. Offline, the safe change is to stop them
//! from starting (their uninstallers expect the old hypervisor and a running system): the
//! links that enable their services are removed, and the report says what to uninstall
//! after the first boot. (Their `vmhgfs`/`vboxsf` fstab lines are disabled by the fstab
//! patcher; X drivers by the xorg patcher.)

use super::plan::canonical;
use crate::guest_files::GuestFiles;
use transplant_fs::FileKind;

struct Tool {
    name: &'static str,
    /// systemd units whose enabling links are removed.
    units: &'static [&'static str],
    /// SysV init script names (`S19vmware-tools` → `vmware-tools`).
    sysv: &'static [&'static str],
    /// Files whose presence shows the tools are installed.
    markers: &'static [&'static str],
    after_boot: &'static str,
}

const TOOLS: [Tool; 4] = [
    Tool {
        name: "VMware Tools / open-vm-tools",
        units: &[
            "vmtoolsd.service",
            "vmware-tools.service",
            "open-vm-tools.service",
            "vgauth.service",
            "vmware-vgauth.service",
            "vmware-tools-thinprint.service",
            "run-vmblock\\x2dfuse.mount",
            "vmware-vmblock-fuse.service",
        ],
        sysv: &[
            "vmware-tools",
            "vmware-tools-thinprint",
            "open-vm-tools",
            "vmtoolsd",
        ],
        markers: &[
            "/etc/vmware-tools",
            "/usr/bin/vmtoolsd",
            "/usr/sbin/vmtoolsd",
            "/usr/bin/vmware-uninstall-tools.pl",
        ],
        after_boot: "VMware Tools: remove them after the first boot (the open-vm-tools \
                     package with the package manager, or a tarball install with \
                     /usr/bin/vmware-uninstall-tools.pl)",
    },
    Tool {
        name: "Xen guest utilities",
        units: &[
            "xe-linux-distribution.service",
            "xe-daemon.service",
            "xen-guest-agent.service",
        ],
        sysv: &["xe-linux-distribution", "xe-daemon"],
        markers: &[
            "/usr/sbin/xe-daemon",
            "/usr/sbin/xe-linux-distribution",
            "/etc/init.d/xe-linux-distribution",
            "/usr/sbin/xen-guest-agent",
        ],
        after_boot: "Xen guest utilities: remove the xe-guest-utilities (or xen-guest-agent) \
                     package after the first boot",
    },
    Tool {
        name: "VirtualBox guest additions",
        units: &[
            "vboxadd.service",
            "vboxadd-service.service",
            "vboxadd-x11.service",
            "virtualbox-guest-utils.service",
        ],
        sysv: &[
            "vboxadd",
            "vboxadd-service",
            "vboxadd-x11",
            "virtualbox-guest-utils",
        ],
        markers: &[
            "/usr/sbin/VBoxService",
            "/usr/bin/VBoxService",
            "/etc/init.d/vboxadd",
            "/opt/VBoxGuestAdditions",
        ],
        after_boot: "VirtualBox guest additions: remove them after the first boot \
                     (/opt/VBoxGuestAdditions-*/uninstall.sh, or the \
                     virtualbox-guest-utils package)",
    },
    Tool {
        name: "Hyper-V daemons",
        units: &[
            "hv-kvp-daemon.service",
            "hv-vss-daemon.service",
            "hv-fcopy-daemon.service",
            "hypervkvpd.service",
            "hypervvssd.service",
            "hypervfcopyd.service",
            "hv_kvp_daemon.service",
            "hv_vss_daemon.service",
            "hv_fcopy_daemon.service",
        ],
        sysv: &["hv_kvp_daemon", "hypervkvpd", "hypervvssd", "hypervfcopyd"],
        markers: &[
            "/usr/sbin/hv_kvp_daemon",
            "/usr/sbin/hypervkvpd",
            "/usr/sbin/hv_vss_daemon",
        ],
        after_boot: "Hyper-V daemons: remove the hyperv-daemons (hypervkvpd) package after \
                     the first boot",
    },
];

/// SysV runlevel directories across distributions (RHEL's `/etc/rcN.d` are links to
/// `/etc/rc.d/rcN.d`; SUSE's live under `/etc/init.d`).
pub fn sysv_dirs() -> Vec<String> {
    let mut v = Vec::new();
    for l in ["0", "1", "2", "3", "4", "5", "6", "S"] {
        v.push(format!("/etc/rc{l}.d"));
        v.push(format!("/etc/rc.d/rc{l}.d"));
        v.push(format!("/etc/init.d/rc{l}.d"));
    }
    v.push("/etc/init.d/boot.d".into());
    v
}

/// The `*.wants`/`*.requires` directories under `/etc/systemd/system`.
pub fn systemd_wants_dirs(guest: &dyn GuestFiles) -> Vec<String> {
    let base = "/etc/systemd/system";
    guest
        .list(base)
        .into_iter()
        .filter(|n| n.ends_with(".wants") || n.ends_with(".requires"))
        .map(|n| format!("{base}/{n}"))
        .collect()
}

/// What was found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    /// Enabling links to remove: (path of the link, reason).
    pub links: Vec<(String, String)>,
    /// Tools found installed (by their files or their links).
    pub found: Vec<&'static str>,
    /// What to do on the target after its first boot.
    pub after_boot: Vec<String>,
}

pub fn find(guest: &dyn GuestFiles) -> Leftovers {
    let mut out = Leftovers::default();
    let mut seen_dirs: Vec<String> = Vec::new();
    let mut dirs: Vec<(String, bool)> = Vec::new(); // (canonical dir, is systemd)
    for (d, systemd) in systemd_wants_dirs(guest)
        .into_iter()
        .map(|d| (d, true))
        .chain(sysv_dirs().into_iter().map(|d| (d, false)))
    {
        let Some(c) = canonical(guest, &d) else {
            continue;
        };
        if guest.kind(&c) != Some(FileKind::Dir) || seen_dirs.contains(&c) {
            continue;
        }
        seen_dirs.push(c.clone());
        dirs.push((c, systemd));
    }
    for tool in &TOOLS {
        let mut hit = tool.markers.iter().any(|m| guest.exists(m));
        for (dir, systemd) in &dirs {
            for name in guest.list(dir) {
                let matches = if *systemd {
                    tool.units.contains(&name.as_str())
                } else {
                    name.strip_prefix('S')
                        .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit()))
                        .is_some_and(|s| tool.sysv.contains(&s))
                };
                let path = format!("{dir}/{name}");
                if matches && guest.read_link(&path).is_some() {
                    hit = true;
                    out.links.push((
                        path,
                        format!(
                            "starts {} ({name}), which only works on the old hypervisor",
                            tool.name
                        ),
                    ));
                }
            }
        }
        if hit {
            out.found.push(tool.name);
            out.after_boot.push(tool.after_boot.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemGuest;

    #[test]
    fn finds_links_once_through_rc_symlinks() {
        let g = MemGuest::new()
            .file("/etc/vmware-tools/tools.conf", "")
            .file("/etc/rc.d/init.d/vmware-tools", "#!/bin/sh\n")
            .link("/etc/rc3.d", "rc.d/rc3.d")
            .link("/etc/rc.d/rc3.d/S19vmware-tools", "../init.d/vmware-tools")
            .link("/etc/rc.d/rc3.d/K08vmware-tools", "../init.d/vmware-tools")
            .link("/etc/rc.d/rc3.d/S10network", "../init.d/network")
            .link(
                "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service",
                "/lib/systemd/system/open-vm-tools.service",
            )
            .link(
                "/etc/systemd/system/multi-user.target.wants/sshd.service",
                "/lib/systemd/system/sshd.service",
            )
            .link(
                "/etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service",
                "/lib/systemd/system/hv-kvp-daemon.service",
            );
        let l = find(&g);
        let paths: Vec<&str> = l.links.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service",
                "/etc/rc.d/rc3.d/S19vmware-tools",
                "/etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service",
            ]
        );
        assert_eq!(l.found, ["VMware Tools / open-vm-tools", "Hyper-V daemons"]);
        assert_eq!(l.after_boot.len(), 2);
        assert_eq!(
            find(&MemGuest::new().file("/etc/fstab", "")),
            Leftovers::default()
        );
    }
}
