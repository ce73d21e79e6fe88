//! Red Hat's `/etc/sysconfig/network-scripts/ifcfg-*` and SUSE's
//! `/etc/sysconfig/network/ifcfg-*`: shell-style `KEY=value` files, one per NIC.
//!
//! `HWADDR=` binds the file (and on Red Hat the NIC's name) to the old MAC; `MACADDR=`
//! (SUSE: `LLADDR=`) sets the old MAC on the new NIC. Both follow the MAC plan. With
//! `--network dhcp`, `BOOTPROTO` becomes `dhcp` and the address keys are commented out.
//! Quoting is kept as found.

use super::{
    mac_action, mac_like, replace_reason, requote, unbind_reason, unquote, ConfigKind, MacAction,
    Method, NicConfig,
};
use crate::context::{normalize_mac, Context, NetworkMode};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

/// `(key, raw value)` of a `KEY=value` line (an `export ` prefix allowed).
fn assignment(body: &str) -> Option<(&str, &str)> {
    let t = body.trim_start();
    if t.starts_with('#') {
        return None;
    }
    let t = t.strip_prefix("export ").unwrap_or(t);
    let (k, v) = t.split_once('=')?;
    (!k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then_some((k, v.trim_end()))
}

/// Strips a trailing `# comment` outside quotes.
fn value_only(v: &str) -> &str {
    if v.starts_with('"') || v.starts_with('\'') {
        let q = v.chars().next().unwrap_or('"');
        return match v.get(1..).and_then(|r| r.find(q)) {
            Some(i) => v.get(..i + 2).unwrap_or(v),
            None => v,
        };
    }
    v.split_whitespace().next().unwrap_or("")
}

/// The interface a file names by its own name (`ifcfg-eth0`), and the MAC of SUSE's old
/// `ifcfg-eth-id-00:50:56:ab:cd:ef` form.
pub fn name_from_path(file: &str) -> (Option<String>, Option<String>) {
    let base = file.rsplit('/').next().unwrap_or(file);
    let Some(n) = base.strip_prefix("ifcfg-") else {
        return (None, None);
    };
    if let Some(m) = n.strip_prefix("eth-id-") {
        return (None, normalize_mac(m));
    }
    (Some(n.to_string()), None)
}

/// Address keys: `IPADDR`, `IPADDR0`, `IPADDR_1` (SUSE), and the same for the rest.
fn is_key(k: &str, base: &str) -> bool {
    k.strip_prefix(base).is_some_and(|rest| {
        rest.trim_start_matches('_')
            .bytes()
            .all(|b| b.is_ascii_digit())
    })
}

const ADDRESS_KEYS: &[&str] = &[
    "IPADDR",
    "PREFIX",
    "PREFIXLEN",
    "NETMASK",
    "GATEWAY",
    "BROADCAST",
    "NETWORK",
];

fn values(text: &str) -> Vec<(usize, &str, String)> {
    lines_with_endings(text)
        .filter_map(|(n, raw)| {
            let (k, v) = assignment(split_ending(raw).0)?;
            Some((n, k, unquote(value_only(v)).0.to_string()))
        })
        .collect()
}

/// What the file says about its NIC (none for the loopback).
pub fn parse(file: &str, text: &str) -> Vec<NicConfig> {
    let vals = values(text);
    let get = |key: &str| {
        vals.iter()
            .rev()
            .find(|(_, k, _)| *k == key)
            .map(|(_, _, v)| v.clone())
    };
    let (path_name, path_mac) = name_from_path(file);
    let name = get("DEVICE").or(path_name);
    if name.as_deref() == Some("lo") {
        return Vec::new();
    }
    let mut c = NicConfig::new(file, None, ConfigKind::Ifcfg);
    c.name = name;
    c.mac = get("HWADDR")
        .or_else(|| get("MACADDR"))
        .or_else(|| get("LLADDR"))
        .and_then(|m| normalize_mac(&m))
        .or(path_mac);
    let boot = get("BOOTPROTO").map(|b| b.to_ascii_lowercase());
    let mut prefixes = Vec::new();
    for (_, k, v) in &vals {
        if is_key(k, "IPADDR") && !v.is_empty() {
            c.addresses.push(v.clone());
        }
        if (is_key(k, "PREFIX") || is_key(k, "PREFIXLEN")) && !v.is_empty() {
            prefixes.push(v.clone());
        }
        if is_key(k, "NETMASK") {
            if let Some(p) = super::interfaces::netmask_prefix(v) {
                prefixes.push(p.to_string());
            }
        }
    }
    for (a, p) in c.addresses.iter_mut().zip(prefixes) {
        if !a.contains('/') {
            *a = format!("{a}/{p}");
        }
    }
    c.gateway = get("GATEWAY").or_else(|| get("GATEWAY0"));
    c.method = Some(match boot.as_deref() {
        Some(b) if b.starts_with("dhcp") || b == "bootp" => Method::Dhcp,
        _ if !c.addresses.is_empty() => Method::Static,
        Some("static") => Method::Static,
        Some("none") | None => Method::Manual,
        Some(_) => Method::Other,
    });
    vec![c]
}

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let vals = values(text);
    let name = vals
        .iter()
        .find(|(_, k, _)| *k == "DEVICE")
        .map(|(_, _, v)| v.clone())
        .or(name_from_path(file).0)
        .unwrap_or_else(|| file.to_string());
    let has_addr = vals
        .iter()
        .any(|(_, k, v)| is_key(k, "IPADDR") && !v.is_empty());
    let to_dhcp = ctx.network == NetworkMode::Dhcp && has_addr && name != "lo";
    let mut ed = LineEditor::new(file);
    let mut saw_bootproto = false;
    let mut last_line = 0;
    for (n, raw) in lines_with_endings(text) {
        last_line = n;
        let body = split_ending(raw).0;
        let Some((k, v)) = assignment(body) else {
            ed.keep(raw);
            continue;
        };
        let (val, q) = unquote(value_only(v));
        let key_start = body.len() - body.trim_start().len();
        let prefix = body.get(..key_start).unwrap_or("");
        match k {
            "HWADDR" | "MACADDR" | "LLADDR" if !val.is_empty() => match mac_action(ctx, val) {
                MacAction::Keep => ed.keep(raw),
                MacAction::Replace(new) => ed.replace(
                    n,
                    raw,
                    &format!("{prefix}{k}={}", requote(&mac_like(val, &new), q)),
                    format!("{name}: {}", replace_reason(val, &new)),
                ),
                MacAction::Unbind => {
                    ed.replace(
                        n,
                        raw,
                        &format!("{prefix}#{}", body.trim_start()),
                        format!("{name}: {}", unbind_reason(val)),
                    );
                    if super::is_slot_name(&name) {
                        ed.warn(
                            Some(n),
                            format!(
                                "{name} is named after the old hardware's slot; without its MAC \
                                 binding the new NIC gets another name and this file may not \
                                 apply: give --mac OLD=NEW to keep it"
                            ),
                        );
                    }
                }
            },
            "BOOTPROTO" if to_dhcp => {
                saw_bootproto = true;
                if val.to_ascii_lowercase().starts_with("dhcp") {
                    ed.keep(raw);
                } else {
                    ed.replace(
                        n,
                        raw,
                        &format!("{prefix}{k}={}", requote("dhcp", q)),
                        format!("{name}: static address turned into DHCP (--network dhcp)"),
                    );
                }
            }
            _ if to_dhcp && ADDRESS_KEYS.iter().any(|b| is_key(k, b)) => ed.replace(
                n,
                raw,
                &format!("{prefix}#{}", body.trim_start()),
                format!("{name}: the address comes from DHCP now (--network dhcp)"),
            ),
            _ => ed.keep(raw),
        }
    }
    if to_dhcp && !saw_bootproto {
        ed.insert(
            last_line,
            "BOOTPROTO=dhcp",
            format!("{name}: static address turned into DHCP (--network dhcp)"),
        );
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::super::test_ctx;
    use super::*;

    const RHEL: &str = "TYPE=Ethernet\n\
BOOTPROTO=none\n\
DEFROUTE=yes\n\
NAME=ens192\n\
UUID=0c3c1ff4-5b6a-4c0e-9a4e-1d2e3f4a5b6c\n\
DEVICE=ens192\n\
ONBOOT=yes\n\
HWADDR=00:50:56:AB:CD:EF\n\
IPADDR=192.0.2.20\n\
PREFIX=24\n\
GATEWAY=192.0.2.1\n\
DNS1=192.0.2.53\n";

    const SUSE: &str = "BOOTPROTO='static'\nSTARTMODE='auto'\nIPADDR='192.0.2.30/24'\nLLADDR='00:50:56:ab:cd:ef'\n";

    #[test]
    fn parses_rhel_and_suse() {
        let n = parse("/etc/sysconfig/network-scripts/ifcfg-ens192", RHEL);
        assert_eq!(n[0].name.as_deref(), Some("ens192"));
        assert_eq!(n[0].mac.as_deref(), Some("00:50:56:ab:cd:ef"));
        assert_eq!(n[0].addresses, ["192.0.2.20/24"]);
        assert_eq!(n[0].method, Some(Method::Static));
        assert_eq!(n[0].gateway.as_deref(), Some("192.0.2.1"));
        let n = parse("/etc/sysconfig/network/ifcfg-eth0", SUSE);
        assert_eq!(n[0].name.as_deref(), Some("eth0"));
        assert_eq!(n[0].addresses, ["192.0.2.30/24"]);
        let n = parse(
            "/etc/sysconfig/network/ifcfg-eth-id-00:50:56:ab:cd:ef",
            "BOOTPROTO='dhcp'\n",
        );
        assert_eq!(n[0].mac.as_deref(), Some("00:50:56:ab:cd:ef"));
        assert_eq!(n[0].method, Some(Method::Dhcp));
        assert!(parse("/x/ifcfg-lo", "DEVICE=lo\nIPADDR=127.0.0.1\n").is_empty());
    }

    #[test]
    fn patches_rhel() {
        let c = test_ctx::dhcp();
        let p = patch("/etc/sysconfig/network-scripts/ifcfg-ens192", RHEL, &c);
        let t = p.text.clone().unwrap();
        assert!(t.contains("BOOTPROTO=dhcp\n"));
        assert!(t.contains("HWADDR=52:54:00:12:34:56\n"));
        assert!(t.contains("#IPADDR=192.0.2.20\n#PREFIX=24\n#GATEWAY=192.0.2.1\nDNS1="));
        assert_eq!(patch("/f", &t, &c).text, None);
    }

    #[test]
    fn patches_suse_keeping_quotes() {
        let c = test_ctx::dhcp();
        let p = patch("/etc/sysconfig/network/ifcfg-eth0", SUSE, &c);
        let t = p.text.clone().unwrap();
        assert_eq!(
            t,
            "BOOTPROTO='dhcp'\nSTARTMODE='auto'\n#IPADDR='192.0.2.30/24'\nLLADDR='52:54:00:12:34:56'\n"
        );
        let c = test_ctx::unbind();
        let p = patch("/etc/sysconfig/network-scripts/ifcfg-ens192", RHEL, &c);
        assert!(p.text.unwrap().contains("\n#HWADDR=00:50:56:AB:CD:EF\n"));
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn no_bootproto_gets_one() {
        let c = test_ctx::dhcp();
        let p = patch("/f/ifcfg-eth0", "DEVICE=eth0\nIPADDR=10.0.0.2", &c);
        assert_eq!(
            p.text.as_deref(),
            Some("DEVICE=eth0\n#IPADDR=10.0.0.2\nBOOTPROTO=dhcp\n")
        );
    }
}
