//! netplan, `/etc/netplan/*.yaml` (Ubuntu 18.04+).
//!
//! An `ethernets` entry binds to a NIC by `match: macaddress:` (often with `set-name:`),
//! `match: driver:` or its id. The text is edited in place, line by line, so comments and
//! layout stay as the administrator wrote them; the YAML is never re-serialised. A MAC
//! binding follows the MAC plan; without a new MAC the `match` goes and with it
//! `set-name` (netplan refuses `set-name` without `match`). With `--network dhcp`,
//! `dhcp4` becomes `true` and `addresses`, `gateway4` and `routes` are commented out.

use super::{
    is_old_driver, mac_action, mac_like, replace_reason, unbind_reason, ConfigKind, MacAction,
    Method, NicConfig,
};
use crate::context::{normalize_mac, Context, NetworkMode};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};

/// One line of the YAML as this module reads it.
#[derive(Debug, Clone)]
struct YLine<'a> {
    number: usize,
    raw: &'a str,
    /// Column of the line's first character.
    col: usize,
    key: Option<&'a str>,
    /// The inline value, comment and quotes stripped.
    value: String,
    /// A `- item` line.
    item: bool,
    /// Keys of the enclosing mappings, outermost first (`-` for a list item).
    path: Vec<String>,
}

impl YLine<'_> {
    /// The `ethernets` entry id the line is inside (or is), and the keys below it.
    fn under_ethernet(&self) -> Option<(&str, Vec<&str>)> {
        let full: Vec<&str> = self
            .path
            .iter()
            .map(String::as_str)
            .chain(self.key)
            .collect();
        let pos = full.iter().position(|k| *k == "ethernets")?;
        if full.first() != Some(&"network") || pos != 1 {
            return None;
        }
        let id = *full.get(pos + 1)?;
        Some((id, full.get(pos + 2..).unwrap_or(&[]).to_vec()))
    }
}

fn strip_comment(v: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in v.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return v.get(..i).unwrap_or(v).trim_end(),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    v.trim_end()
}

fn scalar(v: &str) -> String {
    super::unquote(v).0.to_string()
}

fn scan(text: &str) -> Vec<YLine<'_>> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (number, raw) in lines_with_endings(text) {
        let body = split_ending(raw).0;
        let t = body.trim_start();
        let col = body.len() - t.len();
        if t.is_empty() || t.starts_with('#') || t.starts_with("---") {
            out.push(YLine {
                number,
                raw,
                col,
                key: None,
                value: String::new(),
                item: false,
                path: Vec::new(),
            });
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= col) {
            stack.pop();
        }
        let (item, rest) = if t == "-" {
            (true, "")
        } else if let Some(r) = t.strip_prefix("- ") {
            (true, r.trim_start())
        } else {
            (false, t)
        };
        let indent = col + (t.len() - rest.len());
        if item {
            stack.push((col, "-".into()));
        }
        let (key, value) = match rest.split_once(':') {
            Some((k, v))
                if !k.is_empty()
                    && !k.starts_with(['[', '{', '"', '\''])
                    && (v.is_empty() || v.starts_with([' ', '\t'])) =>
            {
                (Some(k.trim()), strip_comment(v.trim()))
            }
            _ => (None, strip_comment(rest)),
        };
        let path: Vec<String> = stack.iter().map(|(_, k)| k.clone()).collect();
        if let Some(k) = key {
            stack.push((indent, k.to_string()));
        }
        out.push(YLine {
            number,
            raw,
            col,
            key,
            value: value.to_string(),
            item,
            path,
        });
    }
    out
}

/// The items of an inline list `[a, "b"]`, or the one value.
fn inline_list(v: &str) -> Vec<String> {
    let v = v.trim();
    match v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(inner) => inner
            .split(',')
            .map(|s| scalar(s.trim()))
            .filter(|s| !s.is_empty())
            .collect(),
        None if !v.is_empty() => vec![scalar(v)],
        None => Vec::new(),
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        scalar(v).to_ascii_lowercase().as_str(),
        "true" | "yes" | "on" | "y"
    )
}

/// Every `ethernets` entry, in file order.
pub fn parse(file: &str, text: &str) -> Vec<NicConfig> {
    let ls = scan(text);
    let mut out: Vec<(String, NicConfig, Option<String>, bool)> = Vec::new();
    for l in &ls {
        let Some((id, below)) = l.under_ethernet() else {
            continue;
        };
        if !out.iter().any(|(i, ..)| i == id) {
            let c = NicConfig::new(file, Some(l.number), ConfigKind::Netplan);
            out.push((id.to_string(), c, None, false));
        }
        let Some((_, c, set_name, has_match)) = out.iter_mut().find(|(i, ..)| i == id) else {
            continue;
        };
        match below[..] {
            ["match"] => {
                *has_match = true;
                // Flow style: match: {macaddress: "..."}
                if let Some(m) = flow_value(&l.value, "macaddress") {
                    c.mac = normalize_mac(&m);
                }
            }
            ["match", "macaddress"] => c.mac = normalize_mac(&scalar(&l.value)),
            ["match", "name"] if c.name.is_none() => {
                c.name = Some(scalar(&l.value));
            }
            ["match", "driver"] => c.driver = Some(scalar(&l.value)),
            ["set-name"] => *set_name = Some(scalar(&l.value)),
            ["dhcp4"] if truthy(&l.value) => {
                c.method = Some(Method::Dhcp);
            }
            ["addresses"] => c.addresses.extend(inline_list(&l.value)),
            ["addresses", "-"] if l.item => c.addresses.extend(inline_list(&l.value)),
            ["gateway4"] => c.gateway = Some(scalar(&l.value)),
            ["routes", "-", "via"] if c.gateway.is_none() => c.gateway = Some(scalar(&l.value)),
            _ => {}
        }
    }
    out.into_iter()
        .map(|(id, mut c, set_name, has_match)| {
            if let Some(n) = set_name {
                c.name = Some(n);
            } else if !has_match {
                c.name = Some(id);
            }
            if c.method.is_none() {
                c.method = Some(if c.addresses.is_empty() {
                    Method::Manual
                } else {
                    Method::Static
                });
            }
            c
        })
        .collect()
}

/// `key`'s value inside a flow mapping `{a: 1, key: "v"}`.
fn flow_value(v: &str, key: &str) -> Option<String> {
    let inner = v.trim().strip_prefix('{')?.strip_suffix('}')?;
    inner.split(',').find_map(|kv| {
        let (k, v) = kv.split_once(':')?;
        (k.trim() == key).then(|| scalar(v.trim()))
    })
}

fn comment(body: &str) -> String {
    let t = body.trim_start();
    format!("{}# {t}", body.get(..body.len() - t.len()).unwrap_or(""))
}

pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let ls = scan(text);
    let mut ed = LineEditor::new(file);
    // Decide per entry first: which lines go, which change.
    let mut drop_match_of: Vec<String> = Vec::new();
    for l in &ls {
        let Some((id, below)) = l.under_ethernet() else {
            continue;
        };
        let unbind = |m: &str| mac_action(ctx, m) == MacAction::Unbind;
        let only_key = |key: &str| {
            // Every key of this entry's match block.
            let keys: Vec<&str> = ls
                .iter()
                .filter_map(|x| x.under_ethernet().map(|(i, b)| (i, b, x)))
                .filter(|(i, b, _)| *i == id && b.len() == 2 && b.first() == Some(&"match"))
                .filter_map(|(_, b, _)| b.get(1).copied())
                .collect();
            keys.iter().all(|k| *k == key || *k == "driver")
        };
        let drop = match below[..] {
            ["match", "macaddress"] => unbind(&scalar(&l.value)) && only_key("macaddress"),
            ["match"] => flow_value(&l.value, "macaddress").is_some_and(|m| unbind(&m)),
            _ => false,
        };
        if drop && !drop_match_of.iter().any(|d| d == id) {
            drop_match_of.push(id.to_string());
        }
    }
    let converting = |id: &str| {
        ctx.network == NetworkMode::Dhcp
            && ls.iter().any(|x| {
                x.under_ethernet()
                    .is_some_and(|(i, b)| i == id && b.first() == Some(&"addresses"))
            })
    };
    let mut commenting_below: Option<usize> = None;
    for l in &ls {
        let body = split_ending(l.raw).0;
        if let Some(col) = commenting_below {
            if l.key.is_none() && l.value.is_empty() && !l.item {
                ed.keep(l.raw);
                continue;
            }
            if l.col > col {
                ed.replace(
                    l.number,
                    l.raw,
                    &comment(body),
                    "part of a block commented out above",
                );
                continue;
            }
            commenting_below = None;
        }
        let Some((id, below)) = l.under_ethernet() else {
            ed.keep(l.raw);
            continue;
        };
        let dropping = drop_match_of.iter().any(|d| d == id);
        let to_dhcp = converting(id);
        match below[..] {
            ["match"] if dropping => {
                ed.replace(
                    l.number,
                    l.raw,
                    &comment(body),
                    format!(
                        "{id}: matched the old NIC by MAC only; {}",
                        unbind_reason("of the old NIC")
                    ),
                );
                commenting_below = Some(l.col);
            }
            ["set-name"] if dropping => {
                let name = scalar(&l.value);
                ed.replace(
                    l.number,
                    l.raw,
                    &comment(body),
                    format!("{id}: set-name needs a match, which was removed"),
                );
                if name != id {
                    ed.warn(
                        Some(l.number),
                        format!(
                            "{id}: the NIC was renamed to {name} by its old MAC; it now keeps \
                             the kernel's name and this entry matches an interface named {id}: \
                             give --mac OLD=NEW to keep the binding"
                        ),
                    );
                }
            }
            ["match", "macaddress"] | ["macaddress"] => {
                let old = scalar(&l.value);
                match mac_action(ctx, &old) {
                    MacAction::Keep => ed.keep(l.raw),
                    MacAction::Replace(new) => ed.replace(
                        l.number,
                        l.raw,
                        &body.replacen(&old, &mac_like(&old, &new), 1),
                        format!("{id}: {}", replace_reason(&old, &new)),
                    ),
                    MacAction::Unbind => ed.replace(
                        l.number,
                        l.raw,
                        &comment(body),
                        format!("{id}: {}", unbind_reason(&old)),
                    ),
                }
            }
            ["match"] => match flow_value(&l.value, "macaddress") {
                Some(old) => match mac_action(ctx, &old) {
                    MacAction::Replace(new) => ed.replace(
                        l.number,
                        l.raw,
                        &body.replacen(&old, &mac_like(&old, &new), 1),
                        format!("{id}: {}", replace_reason(&old, &new)),
                    ),
                    _ => ed.keep(l.raw),
                },
                None => ed.keep(l.raw),
            },
            ["match", "driver"] if is_old_driver(ctx, &scalar(&l.value)) => ed.replace(
                l.number,
                l.raw,
                &comment(body),
                format!(
                    "{id}: the driver {} is the old hardware's; the target's NIC uses {}",
                    scalar(&l.value),
                    ctx.target.net_modules().join(" or ")
                ),
            ),
            ["dhcp4"] if to_dhcp && !truthy(&l.value) => {
                let colon = body.find(':').unwrap_or(0);
                let (k, v) = body.split_at(colon);
                let new = format!("{k}{}", v.replacen(l.value.as_str(), "true", 1));
                ed.replace(
                    l.number,
                    l.raw,
                    &new,
                    format!("{id}: static address turned into DHCP (--network dhcp)"),
                );
            }
            ["addresses"] | ["gateway4"] | ["routes"] if to_dhcp => {
                if below[..] == ["addresses"]
                    && !ls.iter().any(|x| {
                        x.under_ethernet()
                            .is_some_and(|(i, b)| i == id && b[..] == ["dhcp4"])
                    })
                {
                    let indent = body.get(..l.col).unwrap_or("");
                    ed.insert(
                        l.number.saturating_sub(1),
                        &format!("{indent}dhcp4: true"),
                        format!("{id}: static address turned into DHCP (--network dhcp)"),
                    );
                }
                ed.replace(
                    l.number,
                    l.raw,
                    &comment(body),
                    format!("{id}: the address comes from DHCP now (--network dhcp)"),
                );
                commenting_below = Some(l.col);
            }
            _ => ed.keep(l.raw),
        }
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::super::test_ctx;
    use super::*;

    const NP: &str = r#"# This is the network config written by 'subiquity'
network:
  version: 2
  renderer: networkd
  ethernets:
    id0:
      match:
        macaddress: "00:50:56:ab:cd:ef"
      set-name: eth0
      dhcp4: no
      addresses:
        - 192.0.2.50/24   # primary
      gateway4: 192.0.2.1
      nameservers:
        addresses: [192.0.2.53]
    ens224:
      dhcp4: true
"#;

    #[test]
    fn parses() {
        let n = parse("/etc/netplan/50-cloud-init.yaml", NP);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].name.as_deref(), Some("eth0"));
        assert_eq!(n[0].mac.as_deref(), Some("00:50:56:ab:cd:ef"));
        assert_eq!(n[0].addresses, ["192.0.2.50/24"]);
        assert_eq!(n[0].gateway.as_deref(), Some("192.0.2.1"));
        assert_eq!(n[0].method, Some(Method::Static));
        assert_eq!(n[1].name.as_deref(), Some("ens224"));
        assert_eq!(n[1].method, Some(Method::Dhcp));
        let flow = "network:\n  ethernets:\n    eth0: {match: {macaddress: 00:50:56:AB:CD:EF}, addresses: [10.0.0.5/8]}\n";
        // Flow style below the id is not descended into; the id is still a NIC.
        assert_eq!(parse("/x", flow)[0].name.as_deref(), Some("eth0"));
    }

    #[test]
    fn replace_and_dhcp() {
        let c = test_ctx::dhcp();
        let p = patch("/x", NP, &c);
        let t = p.text.clone().unwrap();
        assert!(t.contains("        macaddress: \"52:54:00:12:34:56\"\n      set-name: eth0\n      dhcp4: true\n"), "{t}");
        assert!(t.contains("      # addresses:\n        # - 192.0.2.50/24   # primary\n      # gateway4: 192.0.2.1\n      nameservers:\n        addresses: [192.0.2.53]\n"), "{t}");
        assert_eq!(patch("/x", &t, &c).text, None);
    }

    #[test]
    fn unbind_drops_match_and_set_name() {
        let c = test_ctx::unbind();
        let p = patch("/x", NP, &c);
        let t = p.text.clone().unwrap();
        assert!(t.contains("      # match:\n        # macaddress: \"00:50:56:ab:cd:ef\"\n      # set-name: eth0\n      dhcp4: no\n"), "{t}");
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(patch("/x", &t, &c).text, None);
    }

    #[test]
    fn inserts_dhcp4_when_missing() {
        let c = test_ctx::dhcp();
        let t = "network:\n  ethernets:\n    eth0:\n      addresses: [192.0.2.5/24]\n      gateway4: 192.0.2.1\n";
        let p = patch("/x", t, &c);
        assert_eq!(
            p.text.as_deref(),
            Some("network:\n  ethernets:\n    eth0:\n      dhcp4: true\n      # addresses: [192.0.2.5/24]\n      # gateway4: 192.0.2.1\n")
        );
    }
}
