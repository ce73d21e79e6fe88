//! Debian's ifupdown: `/etc/network/interfaces` and `/etc/network/interfaces.d/*`.
//!
//! Each `iface NAME inet METHOD` stanza configures one NIC by name; the name survives the
//! move when the udev rule keeps it. What binds a stanza to the old hardware is a
//! `hwaddress` line (the old MAC set on whatever NIC takes the name); with
//! `--network dhcp` a static stanza becomes `dhcp` and its address lines are commented
//! out, every other line of the stanza kept.

use super::{
    mac_action, mac_like, replace_reason, unbind_reason, ConfigKind, MacAction, Method, NicConfig,
};
use crate::context::{normalize_mac, Context, NetworkMode};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

/// Keywords that start a new stanza (and so end the options of an `iface`).
const STANZA: &[&str] = &[
    "iface",
    "mapping",
    "auto",
    "source",
    "source-directory",
    "rename",
    "no-auto-down",
    "no-scripts",
];

/// Address options of a static `inet` stanza, commented out when it becomes DHCP.
const STATIC_OPTIONS: &[&str] = &[
    "address",
    "netmask",
    "gateway",
    "broadcast",
    "network",
    "pointopoint",
    "metric",
];

/// A line's role: the stanza it is in, and its first word.
struct Line<'a> {
    number: usize,
    raw: &'a str,
    words: Vec<&'a str>,
    /// Index into the stanza list of the `iface` this line belongs to.
    iface: Option<usize>,
}

struct Iface {
    name: String,
    family: String,
    method: String,
    line: usize,
}

fn scan(text: &str) -> (Vec<Line<'_>>, Vec<Iface>) {
    let mut lines = Vec::new();
    let mut ifaces: Vec<Iface> = Vec::new();
    let mut current = None;
    for (number, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let t = body.trim();
        let words: Vec<&str> = if t.starts_with('#') {
            Vec::new()
        } else {
            t.split_whitespace().collect()
        };
        if let Some(first) = words.first() {
            if STANZA.contains(first) || first.starts_with("allow-") {
                current = None;
            }
            if *first == "iface" {
                if let [_, name, family, method, ..] = words[..] {
                    ifaces.push(Iface {
                        name: name.to_string(),
                        family: family.to_string(),
                        method: method.to_string(),
                        line: number,
                    });
                    current = Some(ifaces.len() - 1);
                }
            }
        }
        lines.push(Line {
            number,
            raw,
            words,
            iface: current,
        });
    }
    (lines, ifaces)
}

fn method(m: &str) -> Method {
    match m {
        "dhcp" => Method::Dhcp,
        "static" => Method::Static,
        "manual" => Method::Manual,
        _ => Method::Other,
    }
}

/// The prefix length of a dotted netmask (`255.255.255.0` → 24).
pub fn netmask_prefix(mask: &str) -> Option<u32> {
    let octets: Vec<u8> = mask
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d] = octets[..] else {
        return None;
    };
    let v = u32::from_be_bytes([a, b, c, d]);
    let ones = v.leading_ones();
    (v.checked_shl(ones).unwrap_or(0) == 0).then_some(ones)
}

/// The MAC of a `hwaddress [ether] MAC` line.
fn hwaddress(words: &[&str]) -> Option<usize> {
    match words {
        ["hwaddress", "ether", _, ..] => Some(2),
        ["hwaddress", _, ..] => Some(1),
        _ => None,
    }
}

/// Every `iface` stanza except the loopback.
pub fn parse(file: &str, text: &str) -> Vec<NicConfig> {
    let (lines, ifaces) = scan(text);
    let mut out = Vec::new();
    for (i, f) in ifaces.iter().enumerate() {
        if f.method == "loopback" || f.name == "lo" {
            continue;
        }
        let mut c = NicConfig::new(file, Some(f.line), ConfigKind::Interfaces);
        c.name = Some(f.name.clone());
        c.method = Some(method(&f.method));
        let opts = lines.iter().filter(|l| l.iface == Some(i));
        let mut mask = None;
        for l in opts {
            match l.words[..] {
                ["address", a, ..] => c.addresses.push(a.to_string()),
                ["netmask", m, ..] => mask = Some(m.to_string()),
                ["gateway", g, ..] => c.gateway = Some(g.to_string()),
                _ => {
                    if let Some(k) = hwaddress(&l.words) {
                        c.mac = l.words.get(k).and_then(|m| normalize_mac(m));
                    }
                }
            }
        }
        if let Some(p) = mask.as_deref().and_then(netmask_prefix) {
            for a in c.addresses.iter_mut().filter(|a| !a.contains('/')) {
                *a = format!("{a}/{p}");
            }
        }
        out.push(c);
    }
    out
}

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let (lines, ifaces) = scan(text);
    let mut ed = LineEditor::new(file);
    for l in &lines {
        let body = split_ending(l.raw).0;
        let indent = super::indent_of(body);
        let iface = l.iface.and_then(|i| ifaces.get(i));
        let to_dhcp = ctx.network == NetworkMode::Dhcp
            && iface.is_some_and(|f| f.family == "inet" && f.method == "static");
        if let (true, Some(f), ["iface", ..]) = (to_dhcp, iface, &l.words[..]) {
            if l.number == f.line {
                let new = body.replacen(" static", " dhcp", 1);
                ed.replace(
                    l.number,
                    l.raw,
                    &new,
                    format!(
                        "{}: static address turned into DHCP (--network dhcp)",
                        f.name
                    ),
                );
                continue;
            }
        }
        if to_dhcp && l.words.first().is_some_and(|w| STATIC_OPTIONS.contains(w)) {
            let name = iface.map(|f| f.name.as_str()).unwrap_or("?");
            ed.replace(
                l.number,
                l.raw,
                &format!("{indent}#{}", body.trim_start()),
                format!("{name}: the address comes from DHCP now (--network dhcp)"),
            );
            continue;
        }
        if let Some(k) = hwaddress(&l.words) {
            let old = l.words.get(k).copied().unwrap_or("");
            let name = iface.map(|f| f.name.as_str()).unwrap_or("?");
            match mac_action(ctx, old) {
                MacAction::Keep => ed.keep(l.raw),
                MacAction::Replace(new) => {
                    let new_line = body.replacen(old, &mac_like(old, &new), 1);
                    ed.replace(
                        l.number,
                        l.raw,
                        &new_line,
                        format!("{name}: {}", replace_reason(old, &new)),
                    );
                }
                MacAction::Unbind => {
                    ed.replace(
                        l.number,
                        l.raw,
                        &format!("{indent}#{}", body.trim_start()),
                        format!("{name}: {}", unbind_reason(old)),
                    );
                    ed.warn(
                        Some(l.number),
                        format!(
                            "{name} set MAC {old} on its NIC; the new NIC keeps its own MAC: \
                             update DHCP reservations or firewall rules tied to the old one"
                        ),
                    );
                }
            }
            continue;
        }
        ed.keep(l.raw);
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::super::test_ctx;
    use super::*;

    const DEB: &str = "# interfaces(5) file used by ifup(8) and ifdown(8)\n\
source /etc/network/interfaces.d/*\n\
\n\
auto lo\n\
iface lo inet loopback\n\
\n\
allow-hotplug eth0\n\
iface eth0 inet static\n\
\taddress 192.0.2.10\n\
\tnetmask 255.255.255.0\n\
\tgateway 192.0.2.1\n\
\thwaddress ether 00:50:56:AB:CD:EF\n\
\tdns-nameservers 192.0.2.53\n\
\n\
iface eth0 inet6 static\n\
\taddress 2001:db8::10/64\n\
\n\
auto eth1\n\
iface eth1 inet dhcp";

    #[test]
    fn parses_stanzas() {
        let n = parse("/etc/network/interfaces", DEB);
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].name.as_deref(), Some("eth0"));
        assert_eq!(n[0].method, Some(Method::Static));
        assert_eq!(n[0].addresses, ["192.0.2.10/24"]);
        assert_eq!(n[0].gateway.as_deref(), Some("192.0.2.1"));
        assert_eq!(n[0].mac.as_deref(), Some("00:50:56:ab:cd:ef"));
        assert_eq!(n[1].addresses, ["2001:db8::10/64"]);
        assert_eq!(n[2].method, Some(Method::Dhcp));
        assert_eq!(netmask_prefix("255.255.252.0"), Some(22));
        assert_eq!(netmask_prefix("255.0.255.0"), None);
    }

    #[test]
    fn dhcp_and_mac() {
        let c = test_ctx::dhcp();
        let p = patch("/etc/network/interfaces", DEB, &c);
        let t = p.text.clone().unwrap();
        assert!(
            t.contains("iface eth0 inet dhcp\n\t#address 192.0.2.10\n\t#netmask"),
            "{t}"
        );
        assert!(t.contains("\thwaddress ether 52:54:00:12:34:56\n"), "{t}");
        assert!(t.contains("\tdns-nameservers 192.0.2.53\n"), "{t}");
        // inet6 static is left alone.
        assert!(
            t.contains("iface eth0 inet6 static\n\taddress 2001:db8::10/64"),
            "{t}"
        );
        assert!(t.ends_with("iface eth1 inet dhcp"));
        assert_eq!(p.edits.len(), 5);
        assert_eq!(patch("/f", &t, &c).text, None);
    }

    #[test]
    fn unbind_comments_hwaddress_and_keep_leaves_static() {
        let c = test_ctx::unbind();
        let p = patch("/f", DEB, &c);
        let t = p.text.unwrap();
        assert!(t.contains("\t#hwaddress ether 00:50:56:AB:CD:EF\n"));
        assert!(t.contains("iface eth0 inet static\n\taddress 192.0.2.10"));
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(
            patch("/f", "auto lo\niface lo inet loopback\n", &c).text,
            None
        );
    }
}
