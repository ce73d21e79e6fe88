//! systemd-networkd, `/etc/systemd/network/*.network` and `*.link` (also the udev side of
//! `.link` files, which name NICs).
//!
//! `[Match] MACAddress=`, `Driver=` and `OriginalName=` tie a unit to the old NIC. The MAC
//! follows the MAC plan; an old virtual driver is dropped from the match. When nothing is
//! left to match on, `Type=ether` is put in its place (an empty `[Match]` would match
//! every link, the loopback too). With `--network dhcp`, a `.network` with `Address=`
//! gets `DHCP=ipv4` and its `Address=`/`Gateway=` lines and `[Address]`/`[Route]` sections
//! are commented out.

use super::ini::{self, IniLine};
use super::{
    is_old_driver, is_slot_name, mac_action, mac_like, replace_reason, unbind_reason, ConfigKind,
    MacAction, Method, NicConfig,
};
use crate::context::{normalize_mac, Context, NetworkMode};
use crate::edit::{split_ending, LineEditor, Patched};

fn is_link(file: &str) -> bool {
    file.ends_with(".link")
}

pub fn parse(file: &str, text: &str) -> Vec<NicConfig> {
    let ls = ini::lines(text);
    if !ls.iter().any(|l| l.section == Some("Match")) {
        return Vec::new();
    }
    let mut c = NicConfig::new(file, None, ConfigKind::Networkd);
    c.mac = ini::get(&ls, "Match", "MACAddress")
        .and_then(|v| v.split_whitespace().next())
        .and_then(normalize_mac);
    c.driver = ini::get(&ls, "Match", "Driver").map(str::to_string);
    if is_link(file) {
        c.name = ini::get(&ls, "Link", "Name").map(str::to_string);
        return vec![c];
    }
    c.name = ini::get(&ls, "Match", "Name")
        .or(ini::get(&ls, "Match", "OriginalName"))
        .map(str::to_string);
    if c.name.as_deref().is_some_and(|n| n == "lo") {
        return Vec::new();
    }
    c.addresses = ini::get_all(&ls, "Network", "Address")
        .into_iter()
        .chain(ini::get_all(&ls, "Address", "Address"))
        .map(str::to_string)
        .collect();
    c.gateway = ini::get(&ls, "Network", "Gateway")
        .or(ini::get(&ls, "Route", "Gateway"))
        .map(str::to_string);
    let dhcp = ini::get(&ls, "Network", "DHCP").map(|v| v.to_ascii_lowercase());
    c.method = Some(match dhcp.as_deref() {
        Some("yes" | "true" | "ipv4" | "both") => Method::Dhcp,
        _ if !c.addresses.is_empty() => Method::Static,
        _ => Method::Manual,
    });
    vec![c]
}

/// What happens to one `[Match]` line.
enum MatchFate {
    Keep,
    Drop(String),
    Replace(String, String),
}

fn match_fate(ctx: &Context, file: &str, l: &IniLine<'_>) -> MatchFate {
    let Some((k, v)) = l.entry else {
        return MatchFate::Keep;
    };
    let body = split_ending(l.raw).0;
    match k {
        "MACAddress" | "PermanentMACAddress" => {
            // Several MACs may be listed; rebind each, drop the ones without a new MAC.
            let mut kept = Vec::new();
            let mut reasons = Vec::new();
            for m in v.split_whitespace() {
                match mac_action(ctx, m) {
                    MacAction::Keep => kept.push(m.to_string()),
                    MacAction::Replace(n) => {
                        reasons.push(replace_reason(m, &n));
                        kept.push(mac_like(m, &n));
                    }
                    MacAction::Unbind => reasons.push(unbind_reason(m)),
                }
            }
            if reasons.is_empty() {
                MatchFate::Keep
            } else if kept.is_empty() {
                MatchFate::Drop(reasons.join("; "))
            } else {
                MatchFate::Replace(ini::set_value(body, &kept.join(" ")), reasons.join("; "))
            }
        }
        "Driver" if v.split_whitespace().all(|d| is_old_driver(ctx, d)) => {
            MatchFate::Drop(format!(
                "the driver {v} is the old hardware's; the target's NIC uses {}",
                ctx.target.net_modules().join(" or ")
            ))
        }
        "OriginalName" if is_link(file) && v.split_whitespace().all(is_slot_name) => {
            MatchFate::Drop(format!(
                "{v} is the kernel's name for the old hardware's slot and will not exist on \
                 the target"
            ))
        }
        _ => MatchFate::Keep,
    }
}

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let ls = ini::lines(text);
    let mut ed = LineEditor::new(file);
    let fates: Vec<MatchFate> = ls
        .iter()
        .map(|l| {
            if l.section == Some("Match") {
                match_fate(ctx, file, l)
            } else {
                MatchFate::Keep
            }
        })
        .collect();
    let match_entries = ls
        .iter()
        .filter(|l| l.section == Some("Match") && l.entry.is_some())
        .count();
    let dropped = fates
        .iter()
        .filter(|f| matches!(f, MatchFate::Drop(_)))
        .count();
    let emptied = dropped > 0 && dropped == match_entries;
    let to_dhcp = !is_link(file)
        && ctx.network == NetworkMode::Dhcp
        && (!ini::get_all(&ls, "Network", "Address").is_empty()
            || ls.iter().any(|l| l.section == Some("Address")));
    let has_dhcp = ini::get(&ls, "Network", "DHCP").is_some();
    let mut type_added = false;
    for (l, fate) in ls.iter().zip(&fates) {
        let body = split_ending(l.raw).0;
        let comment = format!("#{body}");
        match fate {
            MatchFate::Replace(new, why) => {
                ed.replace(l.number, l.raw, new, why.clone());
                continue;
            }
            MatchFate::Drop(why) => {
                if emptied && !type_added {
                    type_added = true;
                    let ending = match split_ending(l.raw).1 {
                        "" => "\n",
                        e => e,
                    };
                    ed.replace(
                        l.number,
                        l.raw,
                        &format!("Type=ether{ending}{comment}"),
                        format!("{why}; the unit now matches any Ethernet NIC"),
                    );
                    ed.warn(
                        Some(l.number),
                        "this unit matched the old NIC only by its hardware; it now applies to \
                         every Ethernet NIC (fine with one NIC; give --mac OLD=NEW with several)",
                    );
                } else {
                    ed.replace(l.number, l.raw, &comment, why.clone());
                }
                continue;
            }
            MatchFate::Keep => {}
        }
        if to_dhcp {
            let in_static_section = matches!(l.section, Some("Address" | "Route"));
            match (l.section, l.entry) {
                (Some("Network"), Some(("Address" | "Gateway", _))) => {
                    ed.replace(
                        l.number,
                        l.raw,
                        &comment,
                        "the address comes from DHCP now (--network dhcp)",
                    );
                    continue;
                }
                (Some("Network"), Some(("DHCP", v)))
                    if !matches!(
                        v.to_ascii_lowercase().as_str(),
                        "yes" | "ipv4" | "true" | "both"
                    ) =>
                {
                    ed.replace(
                        l.number,
                        l.raw,
                        &ini::set_value(body, "ipv4"),
                        "static address turned into DHCP (--network dhcp)",
                    );
                    continue;
                }
                (Some("Network"), _) if l.is_header && !has_dhcp => {
                    ed.keep(l.raw);
                    ed.insert(
                        l.number,
                        "DHCP=ipv4",
                        "static address turned into DHCP (--network dhcp)",
                    );
                    continue;
                }
                _ if in_static_section
                    && !body.trim().is_empty()
                    && !body.trim_start().starts_with('#') =>
                {
                    ed.replace(
                        l.number,
                        l.raw,
                        &comment,
                        "the address comes from DHCP now (--network dhcp)",
                    );
                    continue;
                }
                _ => {}
            }
        }
        ed.keep(l.raw);
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::super::test_ctx;
    use super::*;

    const NET: &str = "[Match]\nMACAddress=00:50:56:ab:cd:ef\n\n[Network]\nAddress=192.0.2.60/24\nGateway=192.0.2.1\nDNS=192.0.2.53\n";
    const LINK: &str =
        "[Match]\r\nMACAddress=00:50:56:ab:cd:ef\r\nDriver=vmxnet3\r\n\r\n[Link]\r\nName=lan0\r\n";

    #[test]
    fn parses() {
        let n = parse("/etc/systemd/network/10-lan.network", NET);
        assert_eq!(n[0].mac.as_deref(), Some("00:50:56:ab:cd:ef"));
        assert_eq!(n[0].addresses, ["192.0.2.60/24"]);
        assert_eq!(n[0].method, Some(Method::Static));
        let n = parse("/etc/systemd/network/10-lan.link", LINK);
        assert_eq!(n[0].name.as_deref(), Some("lan0"));
        assert_eq!(n[0].driver.as_deref(), Some("vmxnet3"));
    }

    #[test]
    fn patches_network() {
        let c = test_ctx::dhcp();
        let p = patch("/x.network", NET, &c);
        let t = p.text.clone().unwrap();
        assert_eq!(
            t,
            "[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nDHCP=ipv4\n#Address=192.0.2.60/24\n#Gateway=192.0.2.1\nDNS=192.0.2.53\n"
        );
        assert_eq!(patch("/x.network", &t, &c).text, None);
    }

    #[test]
    fn unbind_link_matches_ether() {
        let c = test_ctx::unbind();
        let p = patch("/x.link", LINK, &c);
        let t = p.text.clone().unwrap();
        assert_eq!(
            t,
            "[Match]\r\nType=ether\r\n#MACAddress=00:50:56:ab:cd:ef\r\n#Driver=vmxnet3\r\n\r\n[Link]\r\nName=lan0\r\n"
        );
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(patch("/x.link", &t, &c).text, None);
    }
}
