//! The libvirt domain written beside a converted guest's disks, so `virsh define` brings
//! it up as the source ran: disks in the source's order on the chosen bus, NICs with the
//! source's MACs (the guest's MAC bindings stay true), memory, CPUs, BIOS or UEFI, and a
//! serial console (what `console=ttyS0` needs).

use std::fmt::Write as _;
use std::path::PathBuf;
use transplant_formats::container::{Firmware, GuestDescription};

/// The bus the domain attaches disks to, chosen by `--to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBus {
    /// virtio-blk, `/dev/vdX` (`--to kvm`, and the default).
    Virtio,
    /// virtio-scsi, `/dev/sdX` (`--to kvm-scsi`).
    Scsi,
    /// AHCI, `/dev/sdX`: the closest a VM gets to a physical machine (`--to physical`).
    Sata,
}

/// A converted disk as the domain names it.
pub struct XmlDisk {
    /// Absolute path of the disk where it will live (after the output folder is in place).
    pub path: PathBuf,
    /// `qcow2`, `raw`, `vmdk`, `vhdx` (libvirt's driver type names).
    pub format: String,
}

/// Defaults used when the source says nothing, reported as warnings.
pub const DEFAULT_MEMORY_MIB: u64 = 1024;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '\'' => o.push_str("&apos;"),
            '"' => o.push_str("&quot;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// `vda`, ..., `vdz`, `vdaa`, ...: libvirt's target names.
pub fn target_name(prefix: &str, index: usize) -> String {
    let mut n = index;
    let mut letters = Vec::new();
    loop {
        letters.push((b'a' + (n % 26) as u8) as char);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    letters.reverse();
    format!("{prefix}{}", letters.into_iter().collect::<String>())
}

/// libvirt's NIC model for the target bus: virtio on KVM, e1000e standing in for a real
/// NIC on `physical`.
fn nic_model(bus: DiskBus) -> &'static str {
    match bus {
        DiskBus::Virtio | DiskBus::Scsi => "virtio",
        DiskBus::Sata => "e1000e",
    }
}

/// The domain XML. `name` is the domain name (already made safe); `warnings` receives the
/// defaults chosen for what the source did not say.
pub fn domain_xml(
    name: &str,
    guest: &GuestDescription,
    disks: &[XmlDisk],
    bus: DiskBus,
    warnings: &mut Vec<String>,
) -> String {
    let memory = guest.memory_mib.filter(|&m| m > 0).unwrap_or_else(|| {
        warnings.push(format!(
            "the source gives no memory size; the domain gets {DEFAULT_MEMORY_MIB} MiB"
        ));
        DEFAULT_MEMORY_MIB
    });
    let cpus = guest.cpus.filter(|&c| c > 0).unwrap_or_else(|| {
        warnings.push("the source gives no CPU count; the domain gets 1".into());
        1
    });
    let mut x = String::new();
    let _ = writeln!(x, "<domain type='kvm'>");
    let _ = writeln!(x, "  <name>{}</name>", esc(name));
    let _ = writeln!(
        x,
        "  <description>converted by transplant from '{}' ({:?}, OS type {})</description>",
        esc(&guest.name),
        guest.source,
        esc(guest.os_type.as_deref().unwrap_or("unknown"))
    );
    let _ = writeln!(x, "  <memory unit='MiB'>{memory}</memory>");
    let _ = writeln!(x, "  <vcpu placement='static'>{cpus}</vcpu>");
    match guest.firmware {
        Firmware::Efi => {
            let _ = writeln!(x, "  <os firmware='efi'>");
        }
        Firmware::Bios => {
            let _ = writeln!(x, "  <os>");
        }
    }
    let _ = writeln!(x, "    <type arch='x86_64' machine='q35'>hvm</type>");
    let _ = writeln!(x, "  </os>");
    let _ = writeln!(x, "  <features>\n    <acpi/>\n    <apic/>\n  </features>");
    let _ = writeln!(x, "  <cpu mode='host-model'/>");
    let _ = writeln!(x, "  <clock offset='utc'/>");
    let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
    let _ = writeln!(x, "  <devices>");
    if bus == DiskBus::Scsi {
        let _ = writeln!(
            x,
            "    <controller type='scsi' index='0' model='virtio-scsi'/>"
        );
    }
    let (prefix, bus_name) = match bus {
        DiskBus::Virtio => ("vd", "virtio"),
        DiskBus::Scsi => ("sd", "scsi"),
        DiskBus::Sata => ("sd", "sata"),
    };
    for (i, d) in disks.iter().enumerate() {
        let _ = writeln!(x, "    <disk type='file' device='disk'>");
        let _ = writeln!(x, "      <driver name='qemu' type='{}'/>", esc(&d.format));
        let _ = writeln!(
            x,
            "      <source file='{}'/>",
            esc(&d.path.display().to_string())
        );
        let _ = writeln!(
            x,
            "      <target dev='{}' bus='{bus_name}'/>",
            target_name(prefix, i)
        );
        if i == 0 {
            let _ = writeln!(x, "      <boot order='1'/>");
        }
        let _ = writeln!(x, "    </disk>");
    }
    for n in &guest.nics {
        let _ = writeln!(x, "    <interface type='network'>");
        match &n.mac {
            Some(m) => {
                let _ = writeln!(x, "      <mac address='{}'/>", esc(m));
            }
            None => warnings.push(
                "a NIC has no MAC in the source; libvirt will choose one (MAC bindings in the guest will not match)"
                    .into(),
            ),
        }
        let _ = writeln!(x, "      <source network='default'/>");
        let _ = writeln!(x, "      <model type='{}'/>", nic_model(bus));
        let _ = writeln!(x, "    </interface>");
    }
    let _ = writeln!(
        x,
        "    <serial type='pty'>\n      <target port='0'/>\n    </serial>"
    );
    let _ = writeln!(
        x,
        "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>"
    );
    let _ = writeln!(x, "    <graphics type='vnc' autoport='yes'/>");
    let _ = writeln!(x, "    <video>\n      <model type='virtio'/>\n    </video>");
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use transplant_formats::container::{GuestNic, SourceKind};

    #[test]
    fn names_and_escaping() {
        assert_eq!(target_name("vd", 0), "vda");
        assert_eq!(target_name("vd", 25), "vdz");
        assert_eq!(target_name("vd", 26), "vdaa");
        assert_eq!(target_name("sd", 27), "sdab");
        let mut g = GuestDescription::new("a<b>'c", SourceKind::Vmx);
        g.nics.push(GuestNic {
            mac: Some("00:50:56:aa:bb:cc".into()),
            virtual_dev: None,
            network: None,
        });
        let mut w = Vec::new();
        let x = domain_xml(
            "ab",
            &g,
            &[XmlDisk {
                path: "/o/disk1.qcow2".into(),
                format: "qcow2".into(),
            }],
            DiskBus::Scsi,
            &mut w,
        );
        assert!(x.contains("a&lt;b&gt;&apos;c"));
        assert!(x.contains("model='virtio-scsi'"));
        assert!(x.contains("<target dev='sda' bus='scsi'/>"));
        assert!(x.contains("<mac address='00:50:56:aa:bb:cc'/>"));
        assert_eq!(w.len(), 2, "{w:?}");
    }
}
