//! OVF descriptors (`.ovf`, DMTF DSP0243 1.x and 2.0): the file references, the disks with
//! their capacities, and the virtual hardware (CPUs, memory, controllers, disks, NICs with
//! their MACs where the exporter kept them, firmware from VMware's `vmw:Config`).
//!
//! Names are matched by local name, ignoring namespaces: 1.x puts everything under `rasd:`,
//! 2.0 adds `sasd:` (StorageItem) and `epasd:` (EthernetPortItem) and exporters disagree on
//! prefixes. The text is parsed into a small bounded tree first (element count, depth,
//! size), so a hostile descriptor cannot make us allocate or recurse without end;
//! quick-xml expands no custom entities, so entity bombs fail as errors.

use super::guest::{
    normalise_mac, DiskLocation, Firmware, GuestDescription, GuestDisk, GuestNic, SourceBus,
    SourceKind,
};
use crate::error::{Error, Result};
use quick_xml::events::{BytesStart, Event};

pub const MAX_OVF_BYTES: usize = 16 << 20;
const MAX_ELEMENTS: usize = 200_000;
const MAX_DEPTH: usize = 64;

struct Node {
    name: String,
    /// (local name, value)
    attrs: Vec<(String, String)>,
    /// Namespace declarations on this element (`xmlns`, `xmlns:ovf`): values only.
    namespaces: Vec<String>,
    text: String,
    children: Vec<usize>,
}

struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i)
    }

    fn children<'a>(&'a self, i: usize, name: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.node(i)
            .map(|n| n.children.as_slice())
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(move |&c| self.node(c).is_some_and(|n| n.name == name))
    }

    fn child(&self, i: usize, name: &str) -> Option<usize> {
        self.children(i, name).next()
    }

    fn attr(&self, i: usize, name: &str) -> Option<&str> {
        self.node(i)?
            .attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text_of(&self, i: usize, child: &str) -> Option<&str> {
        let c = self.child(i, child)?;
        Some(self.node(c)?.text.trim())
    }
}

fn start_node(e: &BytesStart, file: &str, at: u64) -> Result<Node> {
    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    let mut namespaces = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| Error::corrupt(file, "ovf xml attribute", at, err.to_string()))?;
        let v = a
            .unescape_value()
            .map_err(|err| Error::corrupt(file, "ovf xml attribute", at, err.to_string()))?
            .into_owned();
        let raw = a.key.as_ref();
        if raw == b"xmlns" || raw.starts_with(b"xmlns:") {
            namespaces.push(v);
            continue;
        }
        attrs.push((
            String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
            v,
        ));
    }
    Ok(Node {
        name,
        attrs,
        namespaces,
        text: String::new(),
        children: Vec::new(),
    })
}

fn parse_tree(text: &[u8], file: &str) -> Result<Tree> {
    if text.len() > MAX_OVF_BYTES {
        return Err(Error::corrupt(
            file,
            "ovf descriptor",
            0,
            format!(
                "{} bytes is far larger than any descriptor (at most {MAX_OVF_BYTES} are read)",
                text.len()
            ),
        ));
    }
    let mut r = quick_xml::Reader::from_reader(text);
    let mut tree = Tree { nodes: Vec::new() };
    let mut stack: Vec<usize> = Vec::new();
    let mut buf = Vec::new();
    let mut root: Option<usize> = None;
    loop {
        let at = r.buffer_position();
        let ev = r
            .read_event_into(&mut buf)
            .map_err(|e| Error::corrupt(file, "ovf xml", at, e.to_string()))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if tree.nodes.len() >= MAX_ELEMENTS {
                    return Err(Error::corrupt(
                        file,
                        "ovf xml",
                        at,
                        format!("more than {MAX_ELEMENTS} elements"),
                    ));
                }
                let node = start_node(e, file, at)?;
                let id = tree.nodes.len();
                tree.nodes.push(node);
                match stack.last() {
                    Some(&p) => {
                        if let Some(pn) = tree.nodes.get_mut(p) {
                            pn.children.push(id);
                        }
                    }
                    None => {
                        if root.is_some() {
                            return Err(Error::corrupt(
                                file,
                                "ovf xml",
                                at,
                                "more than one root element",
                            ));
                        }
                        root = Some(id);
                    }
                }
                if matches!(ev, Event::Start(_)) {
                    if stack.len() >= MAX_DEPTH {
                        return Err(Error::corrupt(
                            file,
                            "ovf xml",
                            at,
                            format!("elements nest deeper than {MAX_DEPTH}"),
                        ));
                    }
                    stack.push(id);
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(t) => {
                let s = t
                    .unescape()
                    .map_err(|e| Error::corrupt(file, "ovf xml text", at, e.to_string()))?;
                if let Some(n) = stack.last().and_then(|&p| tree.nodes.get_mut(p)) {
                    if n.text.len() + s.len() <= 1 << 20 {
                        n.text.push_str(&s);
                    }
                }
            }
            Event::CData(t) => {
                if let Some(n) = stack.last().and_then(|&p| tree.nodes.get_mut(p)) {
                    n.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if root != Some(0) || tree.nodes.first().is_none_or(|n| n.name != "Envelope") {
        return Err(Error::corrupt(
            file,
            "ovf descriptor",
            0,
            "the root element is not an OVF <Envelope>",
        ));
    }
    Ok(tree)
}

/// A file the package references (`References/File`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OvfFile {
    pub id: String,
    pub href: String,
    pub size: Option<u64>,
    /// `gzip` when the file is stored compressed in the package.
    pub compression: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovf {
    /// 1 or 2 (OVF 1.x or 2.0).
    pub version: u8,
    pub files: Vec<OvfFile>,
    /// Disks as `DiskLocation::Member(href)`, relative to the descriptor's package.
    pub guest: GuestDescription,
}

impl Ovf {
    pub fn file_by_href(&self, href: &str) -> Option<&OvfFile> {
        self.files.iter().find(|f| f.href == href)
    }
}

/// "byte * 2^30", "MegaBytes", ... -> a multiplier in bytes.
fn units(s: Option<&str>) -> Option<u64> {
    let Some(s) = s else { return Some(1) };
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let t = t.to_ascii_lowercase();
    match t.as_str() {
        "" | "byte" | "bytes" => return Some(1),
        "kilobytes" | "kb" => return Some(1 << 10),
        "megabytes" | "mb" => return Some(1 << 20),
        "gigabytes" | "gb" => return Some(1 << 30),
        "terabytes" | "tb" => return Some(1 << 40),
        _ => {}
    }
    let exp = t.strip_prefix("byte*2^")?;
    let e: u32 = exp.parse().ok()?;
    (e < 63).then(|| 1u64 << e)
}

fn number(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

struct Controller {
    instance: String,
    bus: SourceBus,
    model: Option<String>,
    /// Index among controllers of the same bus type.
    index: u32,
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

/// Parses a descriptor. `file` names it in errors; `fallback_name` names the guest when
/// the descriptor does not.
pub fn parse(text: &[u8], file: &str, fallback_name: &str) -> Result<Ovf> {
    let t = parse_tree(text, file)?;
    let root = 0usize;
    let ns = t
        .node(root)
        .map(|n| n.namespaces.join(" "))
        .unwrap_or_default();
    let version = if ns.contains("schemas.dmtf.org/ovf/envelope/2") {
        2
    } else {
        1
    };
    let bad = |what: &str, d: String| Error::corrupt(file, what, 0, d);

    let mut files = Vec::new();
    if let Some(refs) = t.child(root, "References") {
        for f in t.children(refs, "File") {
            let id = t.attr(f, "id").unwrap_or("").to_string();
            let href = t
                .attr(f, "href")
                .ok_or_else(|| bad("ovf References/File", format!("file '{id}' has no href")))?
                .to_string();
            if t.attr(f, "chunkSize").is_some() {
                return Err(Error::unsupported(
                    file,
                    format!("chunked OVF files ('{href}' has ovf:chunkSize)"),
                ));
            }
            files.push(OvfFile {
                id,
                href,
                size: t.attr(f, "size").and_then(number),
                compression: t
                    .attr(f, "compression")
                    .filter(|c| !c.is_empty() && *c != "identity")
                    .map(str::to_string),
            });
        }
    }

    // diskId -> (href, capacity)
    let mut disk_defs: Vec<(String, Option<String>, Option<u64>)> = Vec::new();
    if let Some(ds) = t.child(root, "DiskSection") {
        for d in t.children(ds, "Disk") {
            let id = t.attr(d, "diskId").unwrap_or("").to_string();
            let href = t
                .attr(d, "fileRef")
                .and_then(|r| files.iter().find(|f| f.id == r).map(|f| f.href.clone()));
            let cap = t.attr(d, "capacity").and_then(|c| {
                let n = number(c)?;
                n.checked_mul(units(t.attr(d, "capacityAllocationUnits"))?)
            });
            disk_defs.push((id, href, cap));
        }
    }

    let vs = t
        .child(root, "VirtualSystem")
        .or_else(|| {
            let c = t.child(root, "VirtualSystemCollection")?;
            t.child(c, "VirtualSystem")
        })
        .ok_or_else(|| bad("ovf descriptor", "there is no <VirtualSystem>".into()))?;
    let name = t
        .text_of(vs, "Name")
        .filter(|s| !s.is_empty())
        .or_else(|| t.attr(vs, "id"))
        .unwrap_or(fallback_name)
        .to_string();
    let mut g = GuestDescription::new(name, SourceKind::Ovf);
    if t.child(root, "VirtualSystemCollection").is_some() {
        g.warnings.push(
            "the package holds a collection of virtual systems; only the first is converted".into(),
        );
    }
    if let Some(os) = t.child(vs, "OperatingSystemSection") {
        g.os_type = t
            .attr(os, "osType")
            .map(str::to_string)
            .or_else(|| t.text_of(os, "Description").map(str::to_string))
            .or_else(|| t.attr(os, "id").map(|i| format!("cim:{i}")));
    }

    let hw = t.child(vs, "VirtualHardwareSection");
    let mut controllers: Vec<Controller> = Vec::new();
    // (rank, controller index, unit, item order, disk)
    let mut disks: Vec<(u8, u32, u32, usize, GuestDisk)> = Vec::new();
    let mut used_disk_ids: Vec<String> = Vec::new();
    if let Some(hw) = hw {
        let items: Vec<usize> = t
            .node(hw)
            .map(|n| n.children.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|&c| {
                t.node(c).is_some_and(|n| {
                    matches!(n.name.as_str(), "Item" | "StorageItem" | "EthernetPortItem")
                })
            })
            .collect();
        for &it in &items {
            let rt = t.text_of(it, "ResourceType").and_then(number).unwrap_or(0);
            let sub = t
                .text_of(it, "ResourceSubType")
                .map(|s| s.to_ascii_lowercase());
            let bus = match rt {
                5 => Some(SourceBus::Ide),
                6 => Some(SourceBus::Scsi),
                20 if sub.as_deref().is_some_and(|s| s.contains("nvme")) => Some(SourceBus::Nvme),
                20 => Some(SourceBus::Sata),
                _ => None,
            };
            if let Some(bus) = bus {
                let index = controllers.iter().filter(|c| c.bus == bus).count() as u32;
                let index = t
                    .text_of(it, "Address")
                    .and_then(number)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n < 64)
                    .unwrap_or(index);
                controllers.push(Controller {
                    instance: t.text_of(it, "InstanceID").unwrap_or("").to_string(),
                    bus,
                    model: t.text_of(it, "ResourceSubType").map(str::to_string),
                    index,
                });
            }
        }
        for (order, &it) in items.iter().enumerate() {
            let rt = t.text_of(it, "ResourceType").and_then(number).unwrap_or(0);
            match rt {
                3 => {
                    g.cpus = t
                        .text_of(it, "VirtualQuantity")
                        .and_then(number)
                        .and_then(|n| u32::try_from(n).ok())
                }
                4 => {
                    let q = t.text_of(it, "VirtualQuantity").and_then(number);
                    // Memory without units is in megabytes, as every exporter writes it.
                    let u = match t.text_of(it, "AllocationUnits") {
                        Some(s) => units(Some(s)),
                        None => Some(1 << 20),
                    };
                    g.memory_mib = q
                        .zip(u)
                        .and_then(|(q, u)| q.checked_mul(u))
                        .map(|b| b >> 20);
                }
                17 => {
                    let host = t.text_of(it, "HostResource").unwrap_or("");
                    let (href, cap) = if let Some(id) = host.rsplit_once("disk/").map(|x| x.1) {
                        let def = disk_defs.iter().find(|d| d.0 == id);
                        used_disk_ids.push(id.to_string());
                        match def {
                            Some((_, h, c)) => (h.clone(), *c),
                            None => {
                                g.warnings.push(format!(
                                    "a disk item names '{host}', which the DiskSection does not define"
                                ));
                                continue;
                            }
                        }
                    } else if let Some(fid) = host.rsplit_once("file/").map(|x| x.1) {
                        (
                            files.iter().find(|f| f.id == fid).map(|f| f.href.clone()),
                            None,
                        )
                    } else {
                        g.warnings
                            .push(format!("a disk item has no usable HostResource ('{host}')"));
                        continue;
                    };
                    let Some(href) = href else {
                        g.warnings.push(format!(
                            "disk '{host}' has no file (a blank disk the export did not carry); it is skipped"
                        ));
                        continue;
                    };
                    let parent = t.text_of(it, "Parent").unwrap_or("");
                    let ctl = controllers.iter().find(|c| c.instance == parent);
                    let unit = t
                        .text_of(it, "AddressOnParent")
                        .and_then(number)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0);
                    let bus = ctl.map(|c| c.bus).unwrap_or(SourceBus::Unknown);
                    let index = ctl.map(|c| c.index).unwrap_or(0);
                    disks.push((
                        bus_rank(bus),
                        index,
                        unit,
                        order,
                        GuestDisk {
                            location: DiskLocation::Member(href),
                            bus,
                            controller: index,
                            unit,
                            controller_model: ctl.and_then(|c| c.model.clone()),
                            capacity: cap,
                        },
                    ));
                }
                10 => {
                    let raw = t.text_of(it, "Address").filter(|a| !a.is_empty());
                    let mac = raw.and_then(normalise_mac);
                    if raw.is_some() && mac.is_none() {
                        g.warnings.push(
                            "a NIC's Address is not a MAC of six hex bytes; the NIC keeps none"
                                .into(),
                        );
                    }
                    g.nics.push(GuestNic {
                        mac,
                        virtual_dev: t
                            .text_of(it, "ResourceSubType")
                            .map(|s| s.to_ascii_lowercase()),
                        network: t.text_of(it, "Connection").map(str::to_string),
                    });
                }
                _ => {}
            }
        }
        for c in t
            .children(hw, "Config")
            .chain(t.children(hw, "ExtraConfig"))
        {
            if t.attr(c, "key")
                .is_some_and(|k| k.eq_ignore_ascii_case("firmware"))
            {
                if let Some(v) = t.attr(c, "value") {
                    if v.eq_ignore_ascii_case("efi") {
                        g.firmware = Firmware::Efi;
                    }
                }
            }
        }
    }
    disks.sort_by_key(|d| (d.0, d.1, d.2, d.3));
    g.disks = disks.into_iter().map(|d| d.4).collect();
    for (id, href, cap) in &disk_defs {
        if used_disk_ids.contains(id) {
            continue;
        }
        if let Some(h) = href {
            g.warnings.push(format!(
                "disk '{id}' is attached to no controller; it is added last"
            ));
            g.disks.push(GuestDisk {
                location: DiskLocation::Member(h.clone()),
                bus: SourceBus::Unknown,
                controller: 0,
                unit: 0,
                controller_model: None,
                capacity: *cap,
            });
        }
    }
    if g.disks.is_empty() {
        g.warnings.push("the descriptor names no disk".into());
    }
    Ok(Ovf {
        version,
        files,
        guest: g,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const OVF1: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="web-disk1.vmdk" ovf:id="file1" ovf:size="1000"/>
    <File ovf:href="web-disk2.vmdk" ovf:id="file2"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
    <Disk ovf:capacity="1073741824" ovf:diskId="vmdisk2" ovf:fileRef="file2"/>
  </DiskSection>
  <VirtualSystem ovf:id="web01">
    <Name>web01</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian10_64Guest"><Info/></OperatingSystemSection>
    <VirtualHardwareSection>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>3072</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource><rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>00:50:56:AA:BB:CC</rasd:Address><rasd:Connection>VM Network</rasd:Connection><rasd:InstanceID>6</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:InstanceID>7</rasd:InstanceID><rasd:ResourceType>15</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

    #[test]
    fn ovf1_disks_nics_and_machine() {
        let o = parse(OVF1.as_bytes(), "web.ovf", "x").unwrap();
        assert_eq!(o.version, 1);
        let g = &o.guest;
        assert_eq!(g.name, "web01");
        assert_eq!(g.cpus, Some(4));
        assert_eq!(g.memory_mib, Some(3072));
        assert_eq!(g.firmware, Firmware::Efi);
        assert_eq!(g.os_type.as_deref(), Some("debian10_64Guest"));
        let d: Vec<String> = g.disks.iter().map(|d| d.location.to_string()).collect();
        assert_eq!(d, ["web-disk1.vmdk", "web-disk2.vmdk"]);
        assert_eq!(g.disks[0].capacity, Some(64 << 20));
        assert_eq!(g.disks[0].bus, SourceBus::Scsi);
        assert_eq!(g.disks[1].capacity, Some(1 << 30));
        assert_eq!(g.nics.len(), 1);
        assert_eq!(g.nics[0].mac.as_deref(), Some("00:50:56:aa:bb:cc"));
        assert_eq!(g.nics[0].virtual_dev.as_deref(), Some("vmxnet3"));
        assert_eq!(o.file_by_href("web-disk1.vmdk").unwrap().size, Some(1000));
    }

    #[test]
    fn ovf2_storage_and_ethernet_items() {
        let x = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/2" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2" xmlns:rasd="r" xmlns:sasd="s" xmlns:epasd="e">
<References><File ovf:href="d.vmdk" ovf:id="f"/></References>
<DiskSection><Disk ovf:diskId="d1" ovf:fileRef="f" ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^30"/></DiskSection>
<VirtualSystem ovf:id="db"><VirtualHardwareSection>
<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>20</rasd:ResourceType><rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType></Item>
<StorageItem><sasd:HostResource>ovf:/disk/d1</sasd:HostResource><sasd:InstanceID>4</sasd:InstanceID><sasd:Parent>3</sasd:Parent><sasd:ResourceType>17</sasd:ResourceType></StorageItem>
<EthernetPortItem><epasd:Address>00:0c:29:00:00:01</epasd:Address><epasd:InstanceID>5</epasd:InstanceID><epasd:ResourceSubType>E1000</epasd:ResourceSubType><epasd:ResourceType>10</epasd:ResourceType></EthernetPortItem>
</VirtualHardwareSection></VirtualSystem></Envelope>"#;
        let o = parse(x.as_bytes(), "db.ovf", "x").unwrap();
        assert_eq!(o.version, 2);
        assert_eq!(o.guest.name, "db");
        assert_eq!(o.guest.disks.len(), 1);
        assert_eq!(o.guest.disks[0].bus, SourceBus::Sata);
        assert_eq!(o.guest.disks[0].capacity, Some(2 << 30));
        assert_eq!(o.guest.nics[0].mac.as_deref(), Some("00:0c:29:00:00:01"));
        assert_eq!(o.guest.firmware, Firmware::Bios);
    }

    #[test]
    fn hostile_xml_is_an_error() {
        let bomb = r#"<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><Envelope><VirtualSystem><Name>&b;</Name></VirtualSystem></Envelope>"#;
        assert!(parse(bomb.as_bytes(), "b.ovf", "x").is_err());
        let deep = "<a>".repeat(1000);
        assert!(parse(deep.as_bytes(), "d.ovf", "x").is_err());
        assert!(parse(b"<NotEnvelope/>", "n.ovf", "x").is_err());
        assert!(parse(b"<Envelope></Envelope>", "n.ovf", "x").is_err());
    }
}
