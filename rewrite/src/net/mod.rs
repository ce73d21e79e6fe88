//! The guest's network configuration, read and rewritten by one parser per file kind.
//!
//! Each file kind has a module with `parse` (what the file says about each NIC, for
//! inspection) and `patch` (the rewrite for a target), built on the same reading of the
//! file so inspection never describes a file differently from how it is patched. NICs
//! keep their names and their configuration; what changes is what binds them to the old
//! hardware (MAC addresses, driver names) and, with `--network dhcp`, static addresses.

pub mod ifcfg;
pub mod ini;
pub mod interfaces;
pub mod modprobe_alias;
pub mod netplan;
pub mod networkd;
pub mod nm_keyfile;
pub mod plan;
pub mod udev_rules;

use crate::context::{normalize_mac, Context, MacFate};
use crate::edit::Patched;
use crate::guest_files::GuestFiles;
use serde::Serialize;
use transplant_fs::FileKind;

/// What `kind`'s parser reads in this file.
pub fn parse_file(kind: ConfigKind, file: &str, text: &str) -> Vec<NicConfig> {
    match kind {
        ConfigKind::UdevRules => udev_rules::parse(file, text),
        ConfigKind::Interfaces => interfaces::parse(file, text),
        ConfigKind::Ifcfg => ifcfg::parse(file, text),
        ConfigKind::NmKeyfile => nm_keyfile::parse(file, text),
        ConfigKind::Netplan => netplan::parse(file, text),
        ConfigKind::Networkd => networkd::parse(file, text),
        ConfigKind::Modprobe => modprobe_alias::parse(file, text),
    }
}

/// `kind`'s patcher on this file; None for modprobe files, which the modprobe patcher
/// (`patch::modprobe`) rewrites.
pub fn patch_file(kind: ConfigKind, file: &str, text: &str, ctx: &Context) -> Option<Patched> {
    Some(match kind {
        ConfigKind::UdevRules => udev_rules::patch(file, text, ctx),
        ConfigKind::Interfaces => interfaces::patch(file, text, ctx),
        ConfigKind::Ifcfg => ifcfg::patch(file, text, ctx),
        ConfigKind::NmKeyfile => nm_keyfile::patch(file, text, ctx),
        ConfigKind::Netplan => netplan::patch(file, text, ctx),
        ConfigKind::Networkd => networkd::patch(file, text, ctx),
        ConfigKind::Modprobe => return None,
    })
}

/// One network configuration file of the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigFile {
    /// The path as listed.
    pub path: String,
    /// The file it is, symlinks followed (edits go there); equal to `path` for most.
    pub real_path: String,
    pub kind: ConfigKind,
}

/// Every network configuration file the guest has, each real file once (a symlink and
/// its target are one file), in a stable order.
pub fn config_files(guest: &dyn GuestFiles) -> Vec<ConfigFile> {
    let mut found: Vec<(String, ConfigKind)> = Vec::new();
    let mut add_dir = |dir: &str, keep: &dyn Fn(&str) -> bool, kind: ConfigKind| {
        for n in guest.list(dir) {
            if keep(&n) {
                found.push((format!("{dir}/{n}"), kind));
            }
        }
    };
    add_dir(
        "/etc/udev/rules.d",
        &|n| n.ends_with(".rules") && n.contains("net"),
        ConfigKind::UdevRules,
    );
    add_dir(
        "/etc/network",
        &|n| n == "interfaces",
        ConfigKind::Interfaces,
    );
    add_dir(
        "/etc/network/interfaces.d",
        &|n| !n.starts_with('.') && !n.ends_with('~'),
        ConfigKind::Interfaces,
    );
    for d in ["/etc/sysconfig/network-scripts", "/etc/sysconfig/network"] {
        add_dir(
            d,
            &|n| n.starts_with("ifcfg-") && !n.ends_with('~') && !n.ends_with(".bak"),
            ConfigKind::Ifcfg,
        );
    }
    add_dir(
        "/etc/NetworkManager/system-connections",
        &|n| !n.starts_with('.') && !n.ends_with('~'),
        ConfigKind::NmKeyfile,
    );
    add_dir(
        "/etc/netplan",
        &|n| n.ends_with(".yaml") || n.ends_with(".yml"),
        ConfigKind::Netplan,
    );
    add_dir(
        "/etc/systemd/network",
        &|n| n.ends_with(".network") || n.ends_with(".link"),
        ConfigKind::Networkd,
    );
    add_dir(
        "/etc",
        &|n| n == "modprobe.conf" || n == "modules.conf",
        ConfigKind::Modprobe,
    );
    add_dir(
        "/etc/modprobe.d",
        &|n| !n.starts_with('.'),
        ConfigKind::Modprobe,
    );
    let mut out: Vec<ConfigFile> = Vec::new();
    for (path, kind) in found {
        if guest.kind(&path) != Some(FileKind::File) {
            continue;
        }
        let real_path = real_path(guest, &path);
        if out.iter().any(|c| c.real_path == real_path) {
            continue;
        }
        out.push(ConfigFile {
            path,
            real_path,
            kind,
        });
    }
    out
}

/// The file a path is once symlinks are followed (up to 8 links), inside the guest.
pub fn real_path(guest: &dyn GuestFiles, path: &str) -> String {
    let mut p = path.to_string();
    for _ in 0..8 {
        let Some(t) = guest.read_link(&p) else { break };
        p = if t.starts_with('/') {
            t
        } else {
            let dir = p.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            format!("{dir}/{t}")
        };
        p = normalize_path(&p);
    }
    p
}

fn normalize_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// The leading whitespace of a line.
pub(crate) fn indent_of(body: &str) -> &str {
    let t = body.trim_start();
    body.get(..body.len() - t.len()).unwrap_or("")
}

/// Which kind of file a NIC setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigKind {
    UdevRules,
    Interfaces,
    Ifcfg,
    NmKeyfile,
    Netplan,
    Networkd,
    Modprobe,
}

/// How a NIC gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Dhcp,
    Static,
    /// Link up without addresses (`manual`, `none` without IPADDR), or addresses set by
    /// other means.
    Manual,
    /// IPv6 autoconfiguration or something else the file names.
    Other,
}

/// What one file (or one stanza, rule or section of it) says about one NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicConfig {
    pub file: String,
    /// 1-based line where the NIC's entry starts, when there is one.
    pub line: Option<usize>,
    pub kind: ConfigKind,
    /// The interface name (`eth0`, `ens192`), when the file gives it.
    pub name: Option<String>,
    /// The MAC address the entry binds to (normalized), when it binds by MAC.
    pub mac: Option<String>,
    /// The driver the entry names (`vmxnet3`), when it names one.
    pub driver: Option<String>,
    pub method: Option<Method>,
    /// Addresses as written (`192.0.2.10/24`, or `192.0.2.10` with the netmask apart).
    pub addresses: Vec<String>,
    pub gateway: Option<String>,
}

impl NicConfig {
    fn new(file: &str, line: Option<usize>, kind: ConfigKind) -> Self {
        NicConfig {
            file: file.to_string(),
            line,
            kind,
            name: None,
            mac: None,
            driver: None,
            method: None,
            addresses: Vec::new(),
            gateway: None,
        }
    }
}

/// What a binding to MAC `mac` becomes in the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MacAction {
    /// Already one of the new MACs (the file was converted before): leave it.
    Keep,
    Replace(String),
    Unbind,
}

pub(crate) fn mac_action(ctx: &Context, mac: &str) -> MacAction {
    let Some(m) = normalize_mac(mac) else {
        return MacAction::Keep;
    };
    if ctx.mac_map.iter().any(|(_, new)| *new == m) {
        return MacAction::Keep;
    }
    match ctx.mac_fate(&m) {
        MacFate::Replace(n) => MacAction::Replace(n),
        MacFate::Unbind => MacAction::Unbind,
    }
}

/// Writes `new` in the style of `old`: upper case if the old one was upper case.
pub(crate) fn mac_like(old: &str, new: &str) -> String {
    if old.chars().any(|c| c.is_ascii_uppercase()) {
        new.to_ascii_uppercase()
    } else {
        new.to_string()
    }
}

/// NIC drivers of hypervisors and emulated hardware: a file that names one of these (as
/// a match or an alias) is bound to the old hardware unless the target uses it too.
pub const VIRTUAL_NIC_DRIVERS: &[&str] = &[
    "vmxnet3",
    "vmxnet",
    "vmxnet2",
    "pcnet32",
    "vlance",
    "e1000",
    "e1000e",
    "xennet",
    "xen-netfront",
    "xen_netfront",
    "netfront",
    "vif",
    "hv_netvsc",
    "netvsc",
    "virtio_net",
    "virtio-net",
    "8139cp",
    "8139too",
    "ne2k-pci",
    "ne2k_pci",
    "tulip",
    "vboxnet",
];

/// Whether a driver named in a match is the old (virtual) hardware's, so the match must
/// go: it is a known virtual NIC driver the target does not use.
pub(crate) fn is_old_driver(ctx: &Context, driver: &str) -> bool {
    let d = driver.trim().trim_matches('"').replace('-', "_");
    if d.is_empty() || d.contains(['*', '?', '[']) {
        return false;
    }
    let on_target = ctx
        .target
        .net_modules()
        .iter()
        .any(|m| m.replace('-', "_") == d);
    !on_target && VIRTUAL_NIC_DRIVERS.iter().any(|m| m.replace('-', "_") == d)
}

/// Interface names the kernel derives from the old hardware's slot or firmware index
/// (`ens192`, `enp11s0`, `eno1`, `enx005056abcdef`): they change on new hardware, unlike
/// `eth0` held by a udev rule or the kernel's order.
pub fn is_slot_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("en").or_else(|| name.strip_prefix("wl")) else {
        return false;
    };
    let mut c = rest.chars();
    match c.next() {
        Some('o' | 's' | 'p' | 'x' | 'P') => c.next().is_some(),
        _ => false,
    }
}

/// Natural order of interface names (`eth2` before `eth10`), for the guest's NIC order.
pub fn name_order(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (p, n) = s.split_at(s.len() - digits);
        (p.to_string(), n.parse::<u64>().unwrap_or(0), s.to_string())
    };
    split(a).cmp(&split(b))
}

/// Strips one level of matching quotes and says which quote it was.
pub(crate) fn unquote(v: &str) -> (&str, Option<char>) {
    let v = v.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return (&v[1..v.len() - 1], Some(q));
        }
    }
    (v, None)
}

pub(crate) fn requote(v: &str, q: Option<char>) -> String {
    match q {
        Some(q) => format!("{q}{v}{q}"),
        None => v.to_string(),
    }
}

/// The reason printed when a MAC binding is replaced.
pub(crate) fn replace_reason(old: &str, new: &str) -> String {
    format!("the NIC with MAC {old} is the one with MAC {new} on the target (--mac): it keeps its name and configuration")
}

/// The reason printed when a MAC binding is removed.
pub(crate) fn unbind_reason(old: &str) -> String {
    format!(
        "binds to MAC {old} of the old hardware and no new MAC was given (--mac OLD=NEW): \
         the binding is removed so the new NIC takes this configuration"
    )
}

#[cfg(test)]
pub(crate) mod test_ctx {
    use crate::context::{Context, NetworkMode, Target};

    pub fn replace() -> Context {
        let mut c = Context::new(Target::Kvm);
        c.mac_map = vec![("00:50:56:ab:cd:ef".into(), "52:54:00:12:34:56".into())];
        c
    }

    pub fn unbind() -> Context {
        Context::new(Target::Kvm)
    }

    pub fn dhcp() -> Context {
        let mut c = replace();
        c.network = NetworkMode::Dhcp;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_and_order() {
        assert!(is_slot_name("ens192"));
        assert!(is_slot_name("enp11s0"));
        assert!(is_slot_name("eno1"));
        assert!(!is_slot_name("eth0"));
        assert!(!is_slot_name("en"));
        let mut v = vec!["eth10", "eth2", "ens3", "eth0"];
        v.sort_by(|a, b| name_order(a, b));
        assert_eq!(v, ["ens3", "eth0", "eth2", "eth10"]);
    }

    #[test]
    fn actions() {
        let c = test_ctx::replace();
        assert_eq!(
            mac_action(&c, "00:50:56:AB:CD:EF"),
            MacAction::Replace("52:54:00:12:34:56".into())
        );
        assert_eq!(mac_action(&c, "52:54:00:12:34:56"), MacAction::Keep);
        assert_eq!(mac_action(&c, "00:0c:29:00:00:01"), MacAction::Unbind);
        assert!(is_old_driver(&c, "vmxnet3"));
        assert!(!is_old_driver(&c, "virtio_net"));
        assert!(!is_old_driver(&c, "?*"));
        assert_eq!(
            mac_like("00:50:56:AB:CD:EF", "52:54:00:0a:0b:0c"),
            "52:54:00:0A:0B:0C"
        );
    }
}
