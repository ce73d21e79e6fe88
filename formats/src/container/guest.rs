//! What a VMware export says about its machine, whatever the container: the disks in the
//! order the source attaches them, NICs with their MACs, memory, CPUs, firmware. The libvirt
//! domain written beside converted disks, and the guest rewrite, start from this; fields the
//! source does not give stay `None` so callers choose (and say) their defaults.

/// Where the source put the VM description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Ova,
    Ovf,
    Vmx,
    /// A bare disk image: no description at all.
    Disk,
}

/// The controller type a disk hangs off in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceBus {
    Scsi,
    Sata,
    Ide,
    Nvme,
    Unknown,
}

impl SourceBus {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceBus::Scsi => "scsi",
            SourceBus::Sata => "sata",
            SourceBus::Ide => "ide",
            SourceBus::Nvme => "nvme",
            SourceBus::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    #[default]
    Bios,
    Efi,
}

/// Where a disk's bytes are: a host file, or a member of the OVA being read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskLocation {
    File(std::path::PathBuf),
    Member(String),
}

impl std::fmt::Display for DiskLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskLocation::File(p) => write!(f, "{}", p.display()),
            DiskLocation::Member(m) => f.write_str(m),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestDisk {
    pub location: DiskLocation,
    pub bus: SourceBus,
    /// Controller number and unit on it (`scsi0:1` is 0, 1), as the source numbers them.
    pub controller: u32,
    pub unit: u32,
    /// The controller's model: lsilogic, pvscsi, ahci, ...
    pub controller_model: Option<String>,
    /// Capacity the description claims, in bytes (the image itself is the authority).
    pub capacity: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestNic {
    /// `aa:bb:cc:dd:ee:ff`, lower case, when the source records it.
    pub mac: Option<String>,
    /// vmxnet3, e1000, e1000e, vlance, ...
    pub virtual_dev: Option<String>,
    /// The network (port group) name the source connects it to.
    pub network: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestDescription {
    pub name: String,
    pub source: SourceKind,
    pub disks: Vec<GuestDisk>,
    pub nics: Vec<GuestNic>,
    pub memory_mib: Option<u64>,
    pub cpus: Option<u32>,
    pub firmware: Firmware,
    /// The source's OS type id (VMware `guestOS`, OVF `vmw:osType` or the CIM OS id).
    pub os_type: Option<String>,
    /// What was odd or skipped in the description (a CD-ROM, an unknown controller, ...).
    pub warnings: Vec<String>,
}

impl GuestDescription {
    pub fn new(name: impl Into<String>, source: SourceKind) -> Self {
        GuestDescription {
            name: name.into(),
            source,
            disks: Vec::new(),
            nics: Vec::new(),
            memory_mib: None,
            cpus: None,
            firmware: Firmware::Bios,
            os_type: None,
            warnings: Vec::new(),
        }
    }
}

/// Normalises a MAC to `aa:bb:cc:dd:ee:ff`; `None` when it is not six hex bytes.
pub fn normalise_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = parts
        .iter()
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    let b = bytes?;
    Some(
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// A guest name made safe for a folder name and a libvirt domain name.
pub fn safe_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    while out.starts_with('.') {
        out.remove(0);
    }
    if out.is_empty() {
        out.push_str("guest");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_names() {
        assert_eq!(
            normalise_mac("00:50:56:AB:cd:EF").as_deref(),
            Some("00:50:56:ab:cd:ef")
        );
        assert_eq!(
            normalise_mac("00-50-56-ab-cd-ef").as_deref(),
            Some("00:50:56:ab:cd:ef")
        );
        assert!(normalise_mac("0050.56ab.cdef").is_none());
        assert_eq!(safe_name("../web 01"), "_web_01");
        assert_eq!(safe_name(""), "guest");
    }
}
