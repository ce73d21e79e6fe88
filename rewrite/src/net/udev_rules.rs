//! udev persistent network names: `/etc/udev/rules.d/70-persistent-net.rules` (written by
//! the old generator on first boot) and `75-persistent-net-generator.rules` leftovers.
//!
//! A rule binds `ATTR{address}=="MAC"` (often with `DRIVERS=="vmxnet3"`) to `NAME="eth0"`.
//! On the target the NIC has another MAC and driver, so the rule no longer matches and
//! the NIC comes up as `eth1` or `ens3` with no configuration. The rule is rebound to the
//! new MAC, loses its driver constraint, or, when no new MAC is known, is commented out so
//! the first NIC takes the old name.

use super::{
    is_old_driver, mac_action, mac_like, replace_reason, unbind_reason, ConfigKind, MacAction,
    NicConfig,
};
use crate::context::{normalize_mac, Context};
use crate::edit::{lines_with_endings, split_ending, LineEditor, Patched};
use std::ops::Range;

/// One `KEY op "value"` of a rule, with byte ranges in the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub key: String,
    pub op: String,
    pub value: String,
    /// The whole pair, with the separator that follows it (`, `), for removal.
    pub span: Range<usize>,
    /// The value between its quotes.
    pub value_span: Range<usize>,
}

/// Splits one rule line into its pairs; None if it is not a rule (comment, blank, or
/// something not in the `KEY=="value"` shape).
pub fn pairs(line: &str) -> Option<Vec<Pair>> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = line.len() - t.len();
    while i < b.len() {
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_whitespace() || *c == b',')
        {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while b.get(i).is_some_and(|c| {
            !matches!(c, b'=' | b'!' | b'+' | b'-' | b':') && !c.is_ascii_whitespace()
        }) {
            i += 1;
        }
        let key = line.get(start..i)?.to_string();
        let op_start = i;
        while b
            .get(i)
            .is_some_and(|c| matches!(c, b'=' | b'!' | b'+' | b'-' | b':'))
        {
            i += 1;
        }
        let op = line.get(op_start..i)?.to_string();
        if key.is_empty() || !matches!(op.as_str(), "==" | "!=" | "=" | "+=" | "-=" | ":=") {
            return None;
        }
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let vstart = i + 1;
        let vend = vstart + line.get(vstart..)?.find('"')?;
        i = vend + 1;
        let mut end = i;
        while b
            .get(end)
            .is_some_and(|c| *c == b',' || *c == b' ' || *c == b'\t')
        {
            end += 1;
        }
        out.push(Pair {
            key,
            op,
            value: line.get(vstart..vend)?.to_string(),
            span: start..end,
            value_span: vstart..vend,
        });
    }
    (!out.is_empty()).then_some(out)
}

fn is_net_rule(p: &[Pair]) -> bool {
    p.iter().any(|x| {
        (x.key == "SUBSYSTEM" && x.value == "net" && x.op == "==")
            || (x.key == "ATTR{address}" || x.key == "ATTRS{address}")
    }) && p.iter().any(|x| x.key == "NAME" && x.op != "==")
}

fn mac_pair(p: &[Pair]) -> Option<&Pair> {
    p.iter()
        .find(|x| (x.key == "ATTR{address}" || x.key == "ATTRS{address}") && x.op == "==")
}

fn driver_pair(p: &[Pair]) -> Option<&Pair> {
    p.iter()
        .find(|x| (x.key == "DRIVERS" || x.key == "DRIVER") && x.op == "==" && x.value != "?*")
}

/// The driver the generator wrote in the comment above a rule:
/// `# PCI device 0x15ad:0x07b0 (vmxnet3)`.
fn comment_driver(line: &str) -> Option<String> {
    let t = line.trim();
    if !t.starts_with('#') || !t.contains("device") {
        return None;
    }
    let open = t.rfind('(')?;
    let close = t.get(open..)?.find(')')? + open;
    let d = t.get(open + 1..close)?.trim();
    (!d.is_empty()
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then(|| d.to_string())
}

/// Every NIC rule of the file.
pub fn parse(file: &str, text: &str) -> Vec<NicConfig> {
    let mut out = Vec::new();
    let mut last_comment_driver = None;
    for (n, raw) in lines_with_endings(text) {
        let line = split_ending(raw).0;
        if let Some(d) = comment_driver(line) {
            last_comment_driver = Some(d);
            continue;
        }
        let Some(p) = pairs(line) else {
            if !line.trim().is_empty() {
                last_comment_driver = None;
            }
            continue;
        };
        if !is_net_rule(&p) {
            last_comment_driver = None;
            continue;
        }
        let mut c = NicConfig::new(file, Some(n), ConfigKind::UdevRules);
        c.name = p
            .iter()
            .find(|x| x.key == "NAME" && x.op != "==")
            .map(|x| x.value.clone());
        c.mac = mac_pair(&p).and_then(|x| normalize_mac(&x.value));
        c.driver = driver_pair(&p)
            .map(|x| x.value.clone())
            .or(last_comment_driver.take());
        out.push(c);
    }
    out
}

/// Rewrites the file for `ctx`.
pub fn patch(file: &str, text: &str, ctx: &Context) -> Patched {
    let mut ed = LineEditor::new(file);
    for (n, raw) in lines_with_endings(text) {
        let (line, ending) = split_ending(raw);
        let Some(p) = pairs(line).filter(|p| is_net_rule(p)) else {
            ed.keep(raw);
            continue;
        };
        let name = p
            .iter()
            .find(|x| x.key == "NAME" && x.op != "==")
            .map(|x| x.value.as_str())
            .unwrap_or("?");
        let mut removals: Vec<Range<usize>> = Vec::new();
        let mut replace_mac: Option<(Range<usize>, String)> = None;
        let mut reasons = Vec::new();
        if let Some(m) = mac_pair(&p) {
            match mac_action(ctx, &m.value) {
                MacAction::Keep => {}
                MacAction::Replace(new) => {
                    reasons.push(replace_reason(&m.value, &new));
                    replace_mac = Some((m.value_span.clone(), mac_like(&m.value, &new)));
                }
                MacAction::Unbind => {
                    let reason = format!("{name}: {}", unbind_reason(&m.value));
                    let new = format!("# transplant: {reason}{ending}#{line}");
                    ed.replace(n, raw, &new, reason);
                    continue;
                }
            }
        }
        for d in p
            .iter()
            .filter(|x| (x.key == "DRIVERS" || x.key == "DRIVER") && x.op == "==")
        {
            if is_old_driver(ctx, &d.value) {
                reasons.push(format!(
                    "{name}: the driver {} is the old hardware's; the target's NIC uses {}",
                    d.value,
                    ctx.target.net_modules().join(" or ")
                ));
                removals.push(d.span.clone());
            }
        }
        if reasons.is_empty() {
            ed.keep(raw);
            continue;
        }
        let mut new = String::with_capacity(line.len());
        let mut pos = 0;
        let mut cuts: Vec<(Range<usize>, String)> =
            removals.into_iter().map(|r| (r, String::new())).collect();
        cuts.extend(replace_mac);
        cuts.sort_by_key(|(r, _)| r.start);
        for (r, with) in cuts {
            if r.start < pos {
                continue;
            }
            new.push_str(line.get(pos..r.start).unwrap_or(""));
            new.push_str(&with);
            pos = r.end;
        }
        new.push_str(line.get(pos..).unwrap_or(""));
        let new = new.trim_end_matches([',', ' ']).to_string();
        ed.replace(n, raw, &new, reasons.join("; "));
    }
    ed.finish()
}

#[cfg(test)]
mod tests {
    use super::super::test_ctx;
    use super::*;

    const DEB: &str = "# This file was automatically generated by the /lib/udev/write_net_rules\n\
# program, run by the persistent-net-generator.rules rules file.\n\
\n\
# PCI device 0x15ad:0x07b0 (vmxnet3)\n\
SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:50:56:ab:cd:ef\", ATTR{dev_id}==\"0x0\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n\
\n\
# PCI device 0x8086:0x100f (e1000)\n\
SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"e1000\", ATTR{address}==\"00:0c:29:11:22:33\", KERNEL==\"eth*\", NAME=\"eth1\"\n";

    #[test]
    fn parses_rules_with_their_drivers() {
        let r = parse("/etc/udev/rules.d/70-persistent-net.rules", DEB);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name.as_deref(), Some("eth0"));
        assert_eq!(r[0].mac.as_deref(), Some("00:50:56:ab:cd:ef"));
        assert_eq!(r[0].driver.as_deref(), Some("vmxnet3"));
        assert_eq!(r[0].line, Some(5));
        assert_eq!(r[1].driver.as_deref(), Some("e1000"));
    }

    #[test]
    fn rebinds_and_unbinds() {
        let c = test_ctx::replace();
        let p = patch("/r", DEB, &c);
        let t = p.text.clone().unwrap();
        assert!(t.contains("ATTR{address}==\"52:54:00:12:34:56\""), "{t}");
        // eth1 has no new MAC: commented out with the reason.
        assert!(
            t.contains("\n#SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"e1000\""),
            "{t}"
        );
        assert!(t.contains("# transplant: eth1: binds to MAC"), "{t}");
        assert_eq!(p.edits.len(), 2);
        // Re-patching changes nothing.
        assert_eq!(patch("/r", &t, &c).text, None);
    }

    #[test]
    fn drops_old_driver_constraints() {
        let c = test_ctx::replace();
        let t = "SUBSYSTEM==\"net\", DRIVERS==\"vmxnet3\", ATTR{address}==\"00:50:56:AB:CD:EF\", NAME=\"eth0\"\r\n";
        let p = patch("/r", t, &c);
        assert_eq!(
            p.text.as_deref(),
            Some("SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:12:34:56\", NAME=\"eth0\"\r\n")
        );
        assert_eq!(patch("/r", p.text.as_deref().unwrap(), &c).text, None);
        let driver_only =
            "SUBSYSTEM==\"net\", DRIVERS==\"xen-netfront\", KERNEL==\"eth*\", NAME=\"eth0\"\n";
        let p = patch("/r", driver_only, &c);
        assert_eq!(
            p.text.as_deref(),
            Some("SUBSYSTEM==\"net\", KERNEL==\"eth*\", NAME=\"eth0\"\n")
        );
    }

    #[test]
    fn leaves_other_rules_and_garbage() {
        let c = test_ctx::unbind();
        for t in [
            "ACTION==\"add\", SUBSYSTEM==\"block\", ATTR{size}==\"0\"\n",
            "garbage \"==\n",
            "SUBSYSTEM==\"net\", NAME=\"eth0\"",
            "",
        ] {
            assert_eq!(patch("/r", t, &c).text, None, "{t}");
        }
    }
}
