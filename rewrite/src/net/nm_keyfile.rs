//! NetworkManager keyfiles, `/etc/NetworkManager/system-connections/*`.
//!
//! A profile binds to a NIC by `[ethernet] mac-address=` and/or `[connection]
//! interface-name=`. The MAC follows the MAC plan; an interface name derived from the old
//! slot (`ens192`) will not exist on the target, so it is dropped and the profile binds by
//! MAC (or applies to any Ethernet NIC when none is known). With `--network dhcp`,
//! `[ipv4] method=manual` becomes `auto` and its addresses are commented out.

use super::ini::{self, IniLine};
use super::{
    is_slot_name, mac_action, mac_like, replace_reason, unbind_reason, ConfigKind, MacAction,
    Method, NicConfig,
};
use crate::context::{normalize_mac, Context, NetworkMode};
use crate::edit::{split_ending, LineEditor, Patched};

fn is_ethernet_section(s: Option<&str>) -> bool {
    matches!(s, Some("ethernet" | "802-3-ethernet"))
}

/// A keyfile MAC: `00:50:56:AB:CD:EF`, or the old decimal byte list `0;80;86;171;205;239;`.
pub fn keyfile_mac(v: &str) -> Option<String> {
    if let Some(m) = normalize_mac(v) {
        return Some(m);
    }
    let bytes: Vec<u8> = v
        .split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().ok())
        .collect::<Option<_>>()?;
    (bytes.len() == 6).then(|| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    })
}

fn is_address_key(k: &str) -> bool {
    ["address", "addresses"].iter().any(|b| {
        k.strip_prefix(b)
            .is_some_and(|r| r.bytes().all(|c| c.is_ascii_digit()))
    }) || k == "gateway"
}

fn is_ethernet(ls: &[IniLine<'_>]) -> bool {
    let t = ini::get(ls, "connection", "type");
    matches!(t, Some("ethernet" | "802-3-ethernet"))
        || (t.is_none() && ls.iter().any(|l| is_ethernet_section(l.section)))
}

pub fn parse(file: &str, text: &str) -> Vec<NicConfig> {
    let ls = ini::lines(text);
    if !is_ethernet(&ls) {
        return Vec::new();
    }
    let mut c = NicConfig::new(file, None, ConfigKind::NmKeyfile);
    c.name = ini::get(&ls, "connection", "interface-name").map(str::to_string);
    c.mac = ls
        .iter()
        .filter(|l| is_ethernet_section(l.section))
        .filter_map(|l| l.entry)
        .filter(|(k, _)| *k == "mac-address")
        .find_map(|(_, v)| keyfile_mac(v));
    c.method = ini::get(&ls, "ipv4", "method").map(|m| match m {
        "auto" => Method::Dhcp,
        "manual" => Method::Static,
        "disabled" | "shared" | "link-local" => Method::Manual,
        _ => Method::Other,
    });
    for l in ls.iter().filter(|l| l.section == Some("ipv4")) {
        let Some((k, v)) = l.entry else { continue };
        if k == "gateway" {
            c.gateway = Some(v.to_string());
        } else if is_address_key(k) {
            // address1=192.0.2.40/24,192.0.2.1 (or the old 192.0.2.40;24;192.0.2.1;)
            let mut parts = v.split([',', ';']).map(str::trim);
            let a = parts.next().unwrap_or("");
            let rest: Vec<&str> = parts.filter(|s| !s.is_empty()).collect();
            let (addr, gw) = if !a.contains('/') && rest.len() >= 2 {
                (
                    format!("{a}/{}", rest.first().copied().unwrap_or("")),
                    rest.get(1).copied(),
                )
            } else {
                (a.to_string(), rest.first().copied())
            };
            if !a.is_empty() {
                c.addresses.push(addr);
            }
            if c.gateway.is_none() {
                c.gateway = gw.map(str::to_string);
            }
        }
    }
    vec![c]
}

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let ls = ini::lines(text);
    let mut ed = LineEditor::new(file);
    if !is_ethernet(&ls) {
        return ed.finish();
    }
    let id = ini::get(&ls, "connection", "id")
        .unwrap_or(file)
        .to_string();
    let to_dhcp =
        ctx.network == NetworkMode::Dhcp && ini::get(&ls, "ipv4", "method") == Some("manual");
    for l in &ls {
        let body = split_ending(l.raw).0;
        let indent_len = body.len() - body.trim_start().len();
        let indent = body.get(..indent_len).unwrap_or("");
        let comment = || format!("{indent}#{}", body.trim_start());
        let Some((k, v)) = l.entry else {
            ed.keep(l.raw);
            continue;
        };
        match (l.section, k) {
            (s, "mac-address" | "cloned-mac-address") if is_ethernet_section(s) => {
                let Some(old) = keyfile_mac(v) else {
                    ed.keep(l.raw);
                    continue;
                };
                match mac_action(ctx, &old) {
                    MacAction::Keep => ed.keep(l.raw),
                    MacAction::Replace(new) => ed.replace(
                        l.number,
                        l.raw,
                        &ini::set_value(body, &mac_like(v, &new)),
                        format!("profile '{id}': {}", replace_reason(&old, &new)),
                    ),
                    MacAction::Unbind => ed.replace(
                        l.number,
                        l.raw,
                        &comment(),
                        format!("profile '{id}': {}", unbind_reason(&old)),
                    ),
                }
            }
            (Some("connection"), "interface-name") if is_slot_name(v) => ed.replace(
                l.number,
                l.raw,
                &comment(),
                format!(
                    "profile '{id}': {v} is named after the old hardware's slot and will not \
                     exist on the target; the profile binds by MAC (or to any Ethernet NIC)"
                ),
            ),
            (Some("ipv4"), "method") if to_dhcp => ed.replace(
                l.number,
                l.raw,
                &ini::set_value(body, "auto"),
                format!("profile '{id}': static address turned into DHCP (--network dhcp)"),
            ),
            (Some("ipv4"), k) if to_dhcp && is_address_key(k) => ed.replace(
                l.number,
                l.raw,
                &comment(),
                format!("profile '{id}': the address comes from DHCP now (--network dhcp)"),
            ),
            _ => ed.keep(l.raw),
        }
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::super::test_ctx;
    use super::*;

    const NM: &str = "[connection]\n\
id=ens192\n\
uuid=2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901\n\
type=ethernet\n\
interface-name=ens192\n\
\n\
[ethernet]\n\
mac-address=00:50:56:AB:CD:EF\n\
\n\
[ipv4]\n\
address1=192.0.2.40/24,192.0.2.1\n\
dns=192.0.2.53;\n\
method=manual\n\
\n\
[ipv6]\n\
addr-gen-mode=stable-privacy\n\
method=auto\n";

    #[test]
    fn parses() {
        let n = parse(
            "/etc/NetworkManager/system-connections/ens192.nmconnection",
            NM,
        );
        assert_eq!(n[0].name.as_deref(), Some("ens192"));
        assert_eq!(n[0].mac.as_deref(), Some("00:50:56:ab:cd:ef"));
        assert_eq!(n[0].addresses, ["192.0.2.40/24"]);
        assert_eq!(n[0].gateway.as_deref(), Some("192.0.2.1"));
        assert_eq!(n[0].method, Some(Method::Static));
        let old = "[802-3-ethernet]\nmac-address=0;80;86;171;205;239;\n[ipv4]\naddresses1=10.1.2.3;16;10.1.0.1;\nmethod=manual\n";
        let n = parse("/x", old);
        assert_eq!(n[0].mac.as_deref(), Some("00:50:56:ab:cd:ef"));
        assert_eq!(n[0].addresses, ["10.1.2.3/16"]);
        assert_eq!(n[0].gateway.as_deref(), Some("10.1.0.1"));
        assert!(parse("/x", "[connection]\ntype=wifi\n").is_empty());
    }

    #[test]
    fn patches() {
        let c = test_ctx::dhcp();
        let p = patch("/x", NM, &c);
        let t = p.text.clone().unwrap();
        assert!(t.contains("#interface-name=ens192\n"), "{t}");
        assert!(t.contains("mac-address=52:54:00:12:34:56\n"), "{t}");
        assert!(
            t.contains("#address1=192.0.2.40/24,192.0.2.1\ndns=192.0.2.53;\nmethod=auto\n"),
            "{t}"
        );
        assert!(t.ends_with("[ipv6]\naddr-gen-mode=stable-privacy\nmethod=auto\n"));
        assert_eq!(patch("/x", &t, &c).text, None);
        let p = patch("/x", NM, &test_ctx::unbind());
        assert!(p.text.unwrap().contains("#mac-address=00:50:56:AB:CD:EF\n"));
    }
}
