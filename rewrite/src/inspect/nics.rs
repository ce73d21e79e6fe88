//! Every NIC the guest configures, gathered from all its network files by the parsers in
//! [`crate::net`] (the same ones the patchers use) and merged by interface name, or by
//! MAC where a file names no interface.

use crate::guest_files::GuestFiles;
use crate::net::{self, name_order, ConfigKind, Method, NicConfig};
use serde::Serialize;

/// One NIC as the guest's files describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// Interface name (`eth0`); None when files bind it only by MAC.
    pub name: Option<String>,
    /// The old MAC it is bound to (lowercase, colons), if any file binds it.
    pub mac: Option<String>,
    /// The old driver, from udev rules, modprobe aliases or networkd `Driver=`.
    pub driver: Option<String>,
    /// How it gets its address (from the first file that says).
    pub method: Option<Method>,
    pub addresses: Vec<String>,
    pub gateway: Option<String>,
    /// Files that configure it, in the order read.
    pub config_files: Vec<String>,
    /// The files that bind it by MAC (what a move breaks).
    pub bound_by_mac_in: Vec<String>,
    /// Every entry, as read (file, line, kind, ...).
    pub entries: Vec<NicConfig>,
}

/// Reads every network file and returns the NICs in the guest's order (eth0, eth1, ...,
/// by name; NICs known only by MAC last), with the warnings met.
pub fn find(guest: &dyn GuestFiles) -> (Vec<Nic>, Vec<String>) {
    let mut configs = Vec::new();
    let mut warnings = Vec::new();
    for f in net::config_files(guest) {
        match guest.read(&f.real_path, 1 << 20) {
            Ok(b) => {
                let text = String::from_utf8_lossy(&b);
                configs.extend(net::parse_file(f.kind, &f.path, &text));
            }
            Err(e) => warnings.push(format!("{}: {e}", f.path)),
        }
    }
    (merge(configs), warnings)
}

/// Names that are not NICs of the hardware (bridges, bonds, VLANs, aliases, loopback).
pub fn is_virtual_name(name: &str) -> bool {
    name == "lo"
        || name.contains(['.', ':'])
        || [
            "br", "bond", "virbr", "docker", "vlan", "team", "tun", "tap", "wg", "veth",
        ]
        .iter()
        .any(|p| name.starts_with(p))
}

pub fn merge(configs: Vec<NicConfig>) -> Vec<Nic> {
    let mut nics: Vec<Nic> = Vec::new();
    // Named entries first, so MAC-only ones can join a named NIC with the same MAC.
    let (named, unnamed): (Vec<_>, Vec<_>) = configs.into_iter().partition(|c| c.name.is_some());
    for c in named.into_iter().chain(unnamed) {
        let pos = match (&c.name, &c.mac) {
            (Some(n), _) => nics.iter().position(|x| x.name.as_ref() == Some(n)),
            (None, Some(m)) => nics.iter().position(|x| x.mac.as_ref() == Some(m)),
            (None, None) => None,
        }
        // A named entry whose MAC belongs to a NIC known by MAC only joins it.
        .or_else(|| {
            c.mac.as_ref().and_then(|m| {
                nics.iter()
                    .position(|x| x.name.is_none() && x.mac.as_ref() == Some(m))
            })
        });
        let i = match pos {
            Some(i) => i,
            None => {
                nics.push(Nic {
                    name: None,
                    mac: None,
                    driver: None,
                    method: None,
                    addresses: Vec::new(),
                    gateway: None,
                    config_files: Vec::new(),
                    bound_by_mac_in: Vec::new(),
                    entries: Vec::new(),
                });
                nics.len() - 1
            }
        };
        let Some(n) = nics.get_mut(i) else { continue };
        if n.name.is_none() {
            n.name = c.name.clone();
        }
        if n.mac.is_none() {
            n.mac = c.mac.clone();
        }
        if n.driver.is_none() || c.kind == ConfigKind::UdevRules {
            if let Some(d) = c.driver.clone().filter(|d| d != "?*") {
                n.driver = Some(d);
            }
        }
        if n.method.is_none() {
            n.method = c.method;
        }
        for a in &c.addresses {
            if !n.addresses.contains(a) {
                n.addresses.push(a.clone());
            }
        }
        if n.gateway.is_none() {
            n.gateway = c.gateway.clone();
        }
        if !n.config_files.contains(&c.file) {
            n.config_files.push(c.file.clone());
        }
        if c.mac.is_some() && !n.bound_by_mac_in.contains(&c.file) {
            n.bound_by_mac_in.push(c.file.clone());
        }
        n.entries.push(c);
    }
    nics.retain(|n| n.name.as_deref().is_none_or(|x| x != "lo"));
    nics.sort_by(|a, b| match (&a.name, &b.name) {
        (Some(x), Some(y)) => name_order(x, y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.mac.cmp(&b.mac),
    });
    nics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_files::MemGuest;

    #[test]
    fn merges_rules_and_configs() {
        let g = MemGuest::new()
            .file(
                "/etc/udev/rules.d/70-persistent-net.rules",
                "# PCI device 0x15ad:0x07b0 (vmxnet3)\nSUBSYSTEM==\"net\", ATTR{address}==\"00:50:56:ab:cd:ef\", NAME=\"eth0\"\nSUBSYSTEM==\"net\", ATTR{address}==\"00:50:56:ab:cd:01\", NAME=\"eth1\"\n",
            )
            .file(
                "/etc/network/interfaces",
                "auto lo\niface lo inet loopback\niface eth1 inet dhcp\niface eth0 inet static\n address 10.0.0.2/8\n",
            )
            .file("/etc/modprobe.d/aliases.conf", "alias eth1 e1000\n")
            .file(
                "/etc/sysconfig/network/ifcfg-eth-id-00:50:56:ab:cd:ef",
                "BOOTPROTO=static\n",
            );
        let (n, w) = find(&g);
        assert!(w.is_empty());
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].name.as_deref(), Some("eth0"));
        assert_eq!(n[0].driver.as_deref(), Some("vmxnet3"));
        assert_eq!(n[0].addresses, ["10.0.0.2/8"]);
        assert_eq!(n[0].config_files.len(), 3);
        assert_eq!(n[0].bound_by_mac_in.len(), 2);
        assert_eq!(n[1].driver.as_deref(), Some("e1000"));
        assert_eq!(n[1].method, Some(Method::Dhcp));
    }
}
