//! The network half of a conversion: every network file the guest has, patched for the
//! target, with a report of what each NIC becomes; and the MAC plan built from the
//! command line (`--mac OLD=NEW`, `--macs NEW,...`).

use super::{config_files, ifcfg, mac_action, patch_file, ConfigKind, MacAction, Method};
use crate::context::{normalize_mac, Context, Target};
use crate::edit::{Edit, Warning};
use crate::guest_files::GuestFiles;
use crate::inspect::nics::{self, Nic};
use serde::Serialize;

/// Network files change the way text files do (one type for the whole plan).
pub use crate::patch::{Action, FileChange};

/// What one NIC of the guest becomes on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicReport {
    pub name: Option<String>,
    pub old_mac: Option<String>,
    pub old_driver: Option<String>,
    pub method: Option<Method>,
    pub addresses: Vec<String>,
    /// The MAC it is bound to on the target (None: not bound by MAC any more).
    pub new_mac: Option<String>,
    /// The driver on the target (`virtio_net`; for physical hardware, the real NIC's).
    pub new_driver: String,
    /// `dhcp` when `--network dhcp` turns its static addresses into DHCP.
    pub new_method: Option<Method>,
    pub config_files: Vec<String>,
    /// In words.
    pub becomes: String,
}

/// Patches every network file of the guest for `ctx` and reports every NIC.
pub fn plan_network(
    guest: &dyn GuestFiles,
    ctx: &Context,
) -> (Vec<FileChange>, Vec<Warning>, Vec<NicReport>) {
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    for f in config_files(guest) {
        let text = match guest.read(&f.real_path, 1 << 20) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                warnings.push(Warning::new(Some(&f.path), None, e));
                continue;
            }
        };
        let Some(p) = patch_file(f.kind, &f.real_path, &text, ctx) else {
            continue;
        };
        warnings.extend(p.warnings);
        // SUSE's ifcfg-eth-id-MAC binds by its file name.
        let renamed = (f.kind == ConfigKind::Ifcfg)
            .then(|| ifcfg::name_from_path(&f.real_path).1)
            .flatten()
            .map(|old| (old.clone(), mac_action(ctx, &old)));
        match renamed {
            Some((old, MacAction::Replace(new))) => {
                let dir = f.real_path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let new_path = format!("{dir}/ifcfg-eth-id-{new}");
                let mut edits = p.edits;
                edits.push(Edit {
                    file: f.real_path.clone(),
                    line: None,
                    before: f.real_path.clone(),
                    after: new_path.clone(),
                    reason: format!(
                        "the file name binds the configuration to MAC {old}; the NIC is {new} \
                         on the target (--mac)"
                    ),
                });
                let data = p.text.unwrap_or(text).into_bytes();
                changes.push(FileChange {
                    path: new_path,
                    action: Action::Replace(data),
                    edits,
                });
                changes.push(FileChange {
                    path: f.real_path.clone(),
                    action: Action::Remove,
                    edits: Vec::new(),
                });
                continue;
            }
            Some((old, MacAction::Unbind)) => warnings.push(Warning::new(
                Some(&f.real_path),
                None,
                format!(
                    "this file applies to the NIC with MAC {old} only (by its name); no new MAC \
                     was given, so it will not apply on the target: give --mac {old}=NEW, or \
                     rename it to ifcfg-eth0"
                ),
            )),
            _ => {}
        }
        if let Some(t) = p.text {
            changes.push(FileChange {
                path: f.real_path.clone(),
                action: Action::Replace(t.into_bytes()),
                edits: p.edits,
            });
        }
    }
    let (found, _) = nics::find(guest);
    let reports = found.iter().map(|n| report(n, ctx)).collect();
    (changes, warnings, reports)
}

fn report(n: &Nic, ctx: &Context) -> NicReport {
    let name = n.name.clone().unwrap_or_else(|| "the NIC".into());
    let (new_mac, mut becomes) = match n.mac.as_deref().map(|m| (m, mac_action(ctx, m))) {
        Some((_, MacAction::Replace(new))) => (
            Some(new.clone()),
            format!("{name} keeps its name and configuration, bound to MAC {new}"),
        ),
        Some((m, MacAction::Keep)) => (
            Some(m.to_string()),
            format!("{name} stays bound to MAC {m}"),
        ),
        Some((m, MacAction::Unbind)) => (
            None,
            format!(
                "{name}: the binding to MAC {m} is removed; the first NIC on the target takes \
                 this configuration"
            ),
        ),
        None => (
            None,
            format!("{name} keeps its configuration (bound by name)"),
        ),
    };
    let new_driver = match ctx.target {
        Target::Kvm | Target::KvmScsi => "virtio_net".to_string(),
        Target::Physical => "the physical NIC's driver".to_string(),
    };
    let new_method = match (ctx.network, n.method) {
        (crate::context::NetworkMode::Dhcp, Some(Method::Static)) => {
            becomes.push_str("; its static address becomes DHCP");
            Some(Method::Dhcp)
        }
        (_, m) => m,
    };
    NicReport {
        name: n.name.clone(),
        old_mac: n.mac.clone(),
        old_driver: n.driver.clone(),
        method: n.method,
        addresses: n.addresses.clone(),
        new_mac,
        new_driver,
        new_method,
        config_files: n.config_files.clone(),
        becomes,
    }
}

/// Turns `--mac OLD=NEW` (repeatable; `by_old`) and `--macs NEW,...` (`in_order`: the
/// target's NICs for the guest's NICs in order eth0, eth1, ... among those bound by MAC)
/// into [`Context::mac_map`]. `--mac` wins over `--macs` for the same NIC.
pub fn resolve_macs(
    nics: &[Nic],
    by_old: &[(String, String)],
    in_order: &[String],
) -> Result<Vec<(String, String)>, String> {
    let known: Vec<&str> = nics.iter().filter_map(|n| n.mac.as_deref()).collect();
    let describe = || {
        if known.is_empty() {
            "the guest binds no NIC by MAC".to_string()
        } else {
            format!(
                "the guest's NICs by MAC: {}",
                nics.iter()
                    .filter_map(|n| n
                        .mac
                        .as_ref()
                        .map(|m| format!("{} {m}", n.name.as_deref().unwrap_or("?"))))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let norm = |m: &str, what: &str| {
        normalize_mac(m)
            .ok_or_else(|| format!("{what} '{m}' is not a MAC address (like 52:54:00:12:34:56)"))
    };
    if in_order.len() > known.len() {
        return Err(format!(
            "--macs gives {} new MACs but only {} NICs are bound by MAC ({})",
            in_order.len(),
            known.len(),
            describe()
        ));
    }
    let mut map: Vec<(String, String)> = Vec::new();
    for (old, new) in known.iter().zip(in_order) {
        map.push((old.to_string(), norm(new, "--macs value")?));
    }
    for (old, new) in by_old {
        let o = norm(old, "--mac old value")?;
        let n = norm(new, "--mac new value")?;
        if !known.contains(&o.as_str()) {
            return Err(format!(
                "--mac {old}={new}: no NIC of the guest has MAC {o}; {}",
                describe()
            ));
        }
        map.retain(|(x, _)| *x != o);
        map.push((o, n));
    }
    for (i, (_, n)) in map.iter().enumerate() {
        if map.iter().skip(i + 1).any(|(_, m)| m == n) {
            return Err(format!("the new MAC {n} is given to two NICs"));
        }
        if known.contains(&n.as_str()) && !map.iter().any(|(o, _)| o == n) {
            return Err(format!(
                "the new MAC {n} is already another NIC's old MAC; give that NIC a new MAC too"
            ));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::NetworkMode;
    use crate::guest_files::MemGuest;

    fn guest() -> MemGuest {
        MemGuest::new()
            .file(
                "/etc/udev/rules.d/70-persistent-net.rules",
                "SUBSYSTEM==\"net\", DRIVERS==\"?*\", ATTR{address}==\"00:50:56:ab:cd:ef\", NAME=\"eth0\"\nSUBSYSTEM==\"net\", ATTR{address}==\"00:50:56:ab:cd:01\", NAME=\"eth1\"\n",
            )
            .file(
                "/etc/sysconfig/network-scripts/ifcfg-eth0",
                "DEVICE=eth0\nHWADDR=00:50:56:ab:cd:ef\nBOOTPROTO=static\nIPADDR=192.0.2.7\nNETMASK=255.255.255.0\n",
            )
            .link(
                "/etc/sysconfig/network/ifcfg-eth0",
                "/etc/sysconfig/network-scripts/ifcfg-eth0",
            )
            .file("/etc/sysconfig/network/ifcfg-eth-id-00:50:56:ab:cd:01", "BOOTPROTO='dhcp'\n")
    }

    #[test]
    fn plans_every_file_once() {
        let g = guest();
        let (nics, _) = nics::find(&g);
        let map = resolve_macs(
            &nics,
            &[],
            &["52:54:00:00:00:01".into(), "52:54:00:00:00:02".into()],
        )
        .unwrap();
        let mut ctx = Context::new(Target::Kvm);
        ctx.mac_map = map;
        ctx.network = NetworkMode::Dhcp;
        let (changes, warnings, reports) = plan_network(&g, &ctx);
        assert!(warnings.is_empty(), "{warnings:?}");
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/udev/rules.d/70-persistent-net.rules",
                "/etc/sysconfig/network-scripts/ifcfg-eth0",
                "/etc/sysconfig/network/ifcfg-eth-id-52:54:00:00:00:02",
                "/etc/sysconfig/network/ifcfg-eth-id-00:50:56:ab:cd:01",
            ]
        );
        assert_eq!(changes[3].action, Action::Remove);
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].new_mac.as_deref(), Some("52:54:00:00:00:01"));
        assert_eq!(reports[0].addresses, ["192.0.2.7/24"]);
        assert_eq!(reports[0].new_method, Some(Method::Dhcp));
        assert_eq!(reports[1].name.as_deref(), Some("eth1"));
    }

    #[test]
    fn mac_plan_errors() {
        let (nics, _) = nics::find(&guest());
        assert!(resolve_macs(&nics, &[], &["a".into()])
            .unwrap_err()
            .contains("not a MAC"));
        let three: Vec<String> = (1..=3).map(|i| format!("52:54:00:00:00:0{i}")).collect();
        assert!(resolve_macs(&nics, &[], &three)
            .unwrap_err()
            .contains("only 2 NICs"));
        let e = resolve_macs(
            &nics,
            &[("00:0c:29:00:00:00".into(), "52:54:00:00:00:01".into())],
            &[],
        )
        .unwrap_err();
        assert!(e.contains("no NIC of the guest has MAC"), "{e}");
        let m = resolve_macs(
            &nics,
            &[("00-50-56-AB-CD-01".into(), "52:54:00:00:00:09".into())],
            &["52:54:00:00:00:01".into(), "52:54:00:00:00:02".into()],
        )
        .unwrap();
        assert_eq!(
            m,
            [
                (
                    "00:50:56:ab:cd:ef".to_string(),
                    "52:54:00:00:00:01".to_string()
                ),
                (
                    "00:50:56:ab:cd:01".to_string(),
                    "52:54:00:00:00:09".to_string()
                ),
            ]
        );
        let e = resolve_macs(
            &nics,
            &[],
            &["52:54:00:00:00:01".into(), "52:54:00:00:00:01".into()],
        )
        .unwrap_err();
        assert!(e.contains("two NICs"));
    }
}
