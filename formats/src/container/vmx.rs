//! VMware `.vmx` files: `key = "value"` lines. Keys are case-insensitive (VMware writes
//! `scsi0:0.fileName` and reads `SCSI0:0.FILENAME` alike); values may hold `|XX` hex escapes
//! for characters the format cannot quote (`|22` is `"`).
//!
//! Disks are taken from `scsiX:Y`, `sataX:Y`, `nvmeX:Y` and `ideX:Y` entries that are
//! present and name a `.vmdk`, in that controller order and then by controller and unit
//! numbers: the order VMware's BIOS tries them by default, so the first one is the boot
//! disk. The `.vmx` names the running snapshot delta when snapshots exist; the delta's own
//! descriptor leads the VMDK reader down the chain to the base.

use super::guest::{
    normalise_mac, DiskLocation, Firmware, GuestDescription, GuestDisk, GuestNic, SourceBus,
    SourceKind,
};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// A `.vmx` is a few kilobytes; anything past this is not one.
pub const MAX_VMX_BYTES: usize = 4 << 20;

/// The parsed key/value pairs, keys lower-cased.
#[derive(Debug, Clone, Default)]
pub struct Vmx {
    pub values: BTreeMap<String, String>,
}

impl Vmx {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
    }

    fn flag(&self, key: &str) -> Option<bool> {
        self.get(key)
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1" | "on"))
    }
}

fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'|' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(x) = hex {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of a `.vmx`. Lines that are not `key = value` are skipped (VMware
/// ignores them too), but a file without a single pair is not a VMX.
pub fn parse(text: &[u8], file: &str) -> Result<Vmx> {
    if text.len() > MAX_VMX_BYTES {
        return Err(Error::corrupt(
            file,
            "vmx file",
            0,
            format!(
                "{} bytes is far larger than any .vmx (at most {MAX_VMX_BYTES} are read)",
                text.len()
            ),
        ));
    }
    if text.contains(&0) {
        return Err(Error::corrupt(
            file,
            "vmx file",
            0,
            "it holds NUL bytes: not a text .vmx file",
        ));
    }
    let text = String::from_utf8_lossy(text);
    let mut vmx = Vmx::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(".encoding") {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim();
        let v = match v.strip_prefix('"') {
            Some(rest) => rest.rfind('"').and_then(|e| rest.get(..e)).unwrap_or(rest),
            None => v,
        };
        if k.is_empty() {
            continue;
        }
        vmx.values.insert(k, unescape(v));
    }
    if vmx.values.is_empty() {
        return Err(Error::corrupt(
            file,
            "vmx file",
            0,
            "no 'key = \"value\"' line found: not a .vmx file",
        ));
    }
    Ok(vmx)
}

/// Splits `scsi0:1.filename` into (bus, controller, unit, attribute).
fn disk_key(k: &str) -> Option<(SourceBus, u32, u32, &str)> {
    let (bus, rest) = [
        ("scsi", SourceBus::Scsi),
        ("sata", SourceBus::Sata),
        ("nvme", SourceBus::Nvme),
        ("ide", SourceBus::Ide),
    ]
    .iter()
    .find_map(|(p, b)| k.strip_prefix(p).map(|r| (*b, r)))?;
    let (dev, attr) = rest.split_once('.')?;
    let (c, u) = dev.split_once(':')?;
    let c: u32 = c.parse().ok()?;
    let u: u32 = u.parse().ok()?;
    (c < 64 && u < 256).then_some((bus, c, u, attr))
}

fn bus_rank(b: SourceBus) -> u8 {
    match b {
        SourceBus::Scsi => 0,
        SourceBus::Sata => 1,
        SourceBus::Nvme => 2,
        SourceBus::Ide => 3,
        SourceBus::Unknown => 4,
    }
}

/// The VM as the `.vmx` describes it. Disk file names are left as written (relative to the
/// `.vmx`'s folder, usually): the caller resolves them under its folder policy.
pub fn describe(vmx: &Vmx, fallback_name: &str) -> GuestDescription {
    let name = vmx
        .get("displayName")
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(fallback_name)
        .to_string();
    let mut g = GuestDescription::new(name, SourceKind::Vmx);
    g.memory_mib = vmx.get("memsize").and_then(|v| v.trim().parse().ok());
    g.cpus = vmx.get("numvcpus").and_then(|v| v.trim().parse().ok());
    if vmx.get("numvcpus").is_none() {
        g.cpus = Some(1);
    }
    g.firmware = match vmx.get("firmware").map(|f| f.to_ascii_lowercase()) {
        Some(f) if f == "efi" => Firmware::Efi,
        _ => Firmware::Bios,
    };
    g.os_type = vmx.get("guestOS").map(str::to_string);

    let mut disks: Vec<(u8, u32, u32, GuestDisk)> = Vec::new();
    for (k, v) in &vmx.values {
        let Some((bus, c, u, attr)) = disk_key(k) else {
            continue;
        };
        if attr != "filename" {
            continue;
        }
        let prefix = format!("{}{c}:{u}", bus.as_str());
        let present = vmx.flag(&format!("{prefix}.present")).unwrap_or(false);
        let dtype = vmx
            .get(&format!("{prefix}.deviceType"))
            .unwrap_or("")
            .to_ascii_lowercase();
        if !present {
            continue;
        }
        if dtype.contains("cdrom") || dtype.contains("floppy") {
            continue;
        }
        if !v.to_ascii_lowercase().ends_with(".vmdk") {
            if !v.is_empty() {
                g.warnings.push(format!(
                    "{prefix} names '{v}', which is not a .vmdk; it is not converted"
                ));
            }
            continue;
        }
        let model = vmx
            .get(&format!("{}{c}.virtualDev", bus.as_str()))
            .map(str::to_string);
        disks.push((
            bus_rank(bus),
            c,
            u,
            GuestDisk {
                location: DiskLocation::File(v.into()),
                bus,
                controller: c,
                unit: u,
                controller_model: model,
                capacity: None,
            },
        ));
    }
    disks.sort_by_key(|(r, c, u, _)| (*r, *c, *u));
    g.disks = disks.into_iter().map(|d| d.3).collect();

    let mut nic_ids: Vec<u32> = vmx
        .values
        .keys()
        .filter_map(|k| {
            let rest = k.strip_prefix("ethernet")?;
            let (n, attr) = rest.split_once('.')?;
            (attr == "present").then(|| n.parse().ok()).flatten()
        })
        .filter(|&n: &u32| n < 100)
        .collect();
    nic_ids.sort_unstable();
    nic_ids.dedup();
    for n in nic_ids {
        let p = format!("ethernet{n}");
        if vmx.flag(&format!("{p}.present")) != Some(true) {
            continue;
        }
        let address_type = vmx
            .get(&format!("{p}.addressType"))
            .unwrap_or("")
            .to_ascii_lowercase();
        let static_mac = vmx.get(&format!("{p}.address"));
        let generated = vmx.get(&format!("{p}.generatedAddress"));
        let raw = if address_type == "static" {
            static_mac.or(generated)
        } else {
            generated.or(static_mac)
        };
        let mac = raw.and_then(normalise_mac);
        if raw.is_some() && mac.is_none() {
            g.warnings.push(format!(
                "{p} has a MAC address that is not six hex bytes; the NIC keeps none"
            ));
        }
        g.nics.push(GuestNic {
            mac,
            virtual_dev: Some(
                vmx.get(&format!("{p}.virtualDev"))
                    .unwrap_or("vlance")
                    .to_string(),
            ),
            network: vmx
                .get(&format!("{p}.networkName"))
                .or_else(|| vmx.get(&format!("{p}.vnet")))
                .map(str::to_string),
        });
    }
    if g.disks.is_empty() {
        g.warnings
            .push("the .vmx attaches no .vmdk disk that is present".into());
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMX: &str = r#".encoding = "UTF-8"
config.version = "8"
displayName = "web |2201|22"
memsize = "2048"
numvcpus = "2"
firmware = "efi"
guestOS = "debian11-64"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "web-1.vmdk"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web-000002.vmdk"
SATA0:0.present = "TRUE"
sata0:0.fileName = "data.vmdk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"
ide1:0.fileName = "debian.iso"
nvme0:0.present = "FALSE"
nvme0:0.fileName = "gone.vmdk"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.addressType = "generated"
ethernet0.generatedAddress = "00:0C:29:12:34:56"
ethernet1.present = "TRUE"
ethernet1.addressType = "static"
ethernet1.address = "00:50:56:01:02:03"
ethernet1.networkName = "VM Network"
"#;

    #[test]
    fn describes_disks_nics_and_machine() {
        let v = parse(VMX.as_bytes(), "web.vmx").unwrap();
        let g = describe(&v, "fallback");
        assert_eq!(g.name, "web \"01\"");
        assert_eq!(g.memory_mib, Some(2048));
        assert_eq!(g.cpus, Some(2));
        assert_eq!(g.firmware, Firmware::Efi);
        let files: Vec<String> = g.disks.iter().map(|d| d.location.to_string()).collect();
        assert_eq!(files, ["web-000002.vmdk", "web-1.vmdk", "data.vmdk"]);
        assert_eq!(g.disks[0].controller_model.as_deref(), Some("pvscsi"));
        assert_eq!(g.disks[2].bus, SourceBus::Sata);
        assert_eq!(g.nics.len(), 2);
        assert_eq!(g.nics[0].mac.as_deref(), Some("00:0c:29:12:34:56"));
        assert_eq!(g.nics[0].virtual_dev.as_deref(), Some("vmxnet3"));
        assert_eq!(g.nics[1].mac.as_deref(), Some("00:50:56:01:02:03"));
        assert_eq!(g.nics[1].virtual_dev.as_deref(), Some("vlance"));
        assert_eq!(g.nics[1].network.as_deref(), Some("VM Network"));
    }

    #[test]
    fn rejects_non_vmx() {
        assert!(parse(b"\x00\x01binary", "x.vmx").is_err());
        assert!(parse(b"just words\n", "x.vmx").is_err());
    }
}
