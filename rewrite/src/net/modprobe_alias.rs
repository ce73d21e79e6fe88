//! `alias eth0 vmxnet3` lines of `/etc/modprobe.conf`, `/etc/modprobe.d/*` and
//! `/etc/modules.conf`: on old guests (RHEL <= 5, SLES <= 10) the only place that says
//! which driver a NIC uses. Read here for inspection; the rewrite of aliases belongs to
//! the modprobe patcher (`patch::modprobe`).

use super::{ConfigKind, NicConfig};
use crate::edit::{lines_with_endings, split_ending};

/// `(line, alias, module)` of every `alias` line.
pub fn aliases(text: &str) -> Vec<(usize, String, String)> {
    lines_with_endings(text)
        .filter_map(|(n, raw)| {
            let body = split_ending(raw).0;
            let body = body.split('#').next().unwrap_or("");
            match body.split_whitespace().collect::<Vec<_>>()[..] {
                ["alias", a, m] => Some((n, a.to_string(), m.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// Aliases that name a NIC (`eth0`, `ens192`; not `scsi_hostadapter`, `char-major-*`).
pub fn parse(file: &str, text: &str) -> Vec<NicConfig> {
    aliases(text)
        .into_iter()
        .filter(|(_, a, m)| {
            (a.starts_with("eth") || a.starts_with("en") || a.starts_with("bond"))
                && a.bytes().all(|b| b.is_ascii_alphanumeric())
                && m != "off"
        })
        .map(|(n, a, m)| {
            let mut c = NicConfig::new(file, Some(n), ConfigKind::Modprobe);
            c.name = Some(a);
            c.driver = Some(m);
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nic_aliases() {
        let t = "alias eth0 vmxnet3\nalias scsi_hostadapter mptspi\n# alias eth1 e1000\nalias eth1 e1000 # second\noptions e1000 x=1\n";
        let n = parse("/etc/modprobe.conf", t);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].name.as_deref(), Some("eth0"));
        assert_eq!(n[0].driver.as_deref(), Some("vmxnet3"));
        assert_eq!(n[1].line, Some(4));
    }
}
