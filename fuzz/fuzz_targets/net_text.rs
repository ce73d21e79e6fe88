//! Every NIC parser and patcher on arbitrary text: no panic, and patching the output
//! again changes nothing (a conversion run twice is the same as once).

#![no_main]

use libfuzzer_sys::fuzz_target;
use transplant_rewrite::net::{self, ConfigKind};
use transplant_rewrite::{Context, NetworkMode, Target};

const FILES: &[(ConfigKind, &str)] = &[
    (ConfigKind::UdevRules, "/etc/udev/rules.d/70-persistent-net.rules"),
    (ConfigKind::Interfaces, "/etc/network/interfaces"),
    (ConfigKind::Ifcfg, "/etc/sysconfig/network-scripts/ifcfg-eth0"),
    (ConfigKind::Ifcfg, "/etc/sysconfig/network/ifcfg-eth-id-00:50:56:ab:cd:ef"),
    (ConfigKind::NmKeyfile, "/etc/NetworkManager/system-connections/eth0.nmconnection"),
    (ConfigKind::Netplan, "/etc/netplan/50-cloud-init.yaml"),
    (ConfigKind::Networkd, "/etc/systemd/network/10-eth0.network"),
    (ConfigKind::Networkd, "/etc/systemd/network/10-eth0.link"),
    (ConfigKind::Modprobe, "/etc/modprobe.d/aliases.conf"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut ctx = Context::new(match sel % 3 {
        0 => Target::Kvm,
        1 => Target::KvmScsi,
        _ => Target::Physical,
    });
    if sel & 4 != 0 {
        ctx.network = NetworkMode::Dhcp;
    }
    if sel & 8 != 0 {
        ctx.mac_map = vec![
            ("00:50:56:ab:cd:ef".into(), "52:54:00:12:34:56".into()),
            ("00:0c:29:00:00:01".into(), "52:54:00:12:34:57".into()),
        ];
    }
    for (kind, file) in FILES {
        let _ = net::parse_file(*kind, file, &text);
        let Some(p) = net::patch_file(*kind, file, &text, &ctx) else {
            continue;
        };
        if let Some(out) = p.text {
            let again = net::patch_file(*kind, file, &out, &ctx).and_then(|q| q.text);
            assert!(
                again.is_none(),
                "{file}: re-patching changed\n{out:?}\ninto\n{again:?}"
            );
        }
    }
});
