//! The descriptor embedded after the header: the text VMware reads first (create type,
//! extent list, content ID) and its disk database (adapter, geometry, hardware version).

use super::{AdapterType, VmdkOptions, SECTOR};
use crate::error::{Error, Result};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

/// Sectors reserved for the descriptor: qemu and VMware both reserve 20 and read that much.
pub const DESC_SECTORS: u64 = 20;

/// A fresh content ID. It changes whenever a disk's content changes, and a child disk
/// records its parent's; a random one says "new content" to anything that cached the old.
pub fn random_cid() -> u32 {
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.write_u128(now);
        h.write_u32(std::process::id());
        let cid = h.finish() as u32;
        // 0xffffffff means "no parent" in parentCID; keep the two apart.
        if cid != 0 && cid != u32::MAX {
            return cid;
        }
    }
}

/// Cylinders, heads and sectors per track as VMware reports them: 16 heads for IDE
/// (cylinders capped at 16383, the ATA limit), 255 heads for SCSI adapters, always 63
/// sectors. Guests that still look at CHS (old BIOS boot loaders) see the same geometry
/// as on the original VMware host.
pub fn geometry(capacity: u64, adapter: AdapterType) -> (u64, u32, u32) {
    let (heads, cap) = match adapter {
        AdapterType::Ide => (16u32, 16383u64),
        _ => (255u32, u64::MAX),
    };
    let cylinders = (capacity / (u64::from(heads) * 63)).clamp(1, cap);
    (cylinders, heads, 63)
}

/// The extent's file name as the descriptor names it: the output's own name, with
/// characters that would break the quoted field replaced.
fn extent_name(dest: &Path) -> String {
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk.vmdk".into());
    base.chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect()
}

/// The descriptor text, NUL-padded to `DESC_SECTORS` sectors.
pub fn build(
    dest: &Path,
    create_type: &str,
    capacity: u64,
    cid: u32,
    opts: &VmdkOptions,
) -> Result<Vec<u8>> {
    let (c, h, s) = geometry(capacity, opts.adapter_type);
    let mut t = String::new();
    t.push_str("# Disk DescriptorFile\n");
    t.push_str("version=1\n");
    t.push_str("encoding=\"UTF-8\"\n");
    t.push_str(&format!("CID={cid:08x}\n"));
    t.push_str("parentCID=ffffffff\n");
    t.push_str(&format!("createType=\"{create_type}\"\n\n"));
    t.push_str("# Extent description\n");
    t.push_str(&format!(
        "RW {capacity} SPARSE \"{}\"\n\n",
        extent_name(dest)
    ));
    t.push_str("# The Disk Data Base\n#DDB\n\n");
    t.push_str(&format!(
        "ddb.virtualHWVersion = \"{}\"\n",
        quoted_value(&opts.hw_version)
    ));
    t.push_str(&format!("ddb.geometry.cylinders = \"{c}\"\n"));
    t.push_str(&format!("ddb.geometry.heads = \"{h}\"\n"));
    t.push_str(&format!("ddb.geometry.sectors = \"{s}\"\n"));
    t.push_str(&format!(
        "ddb.adapterType = \"{}\"\n",
        opts.adapter_type.as_str()
    ));
    if let Some(tools) = &opts.tools_version {
        t.push_str(&format!("ddb.toolsVersion = \"{}\"\n", quoted_value(tools)));
    }
    let room = (DESC_SECTORS * SECTOR) as usize;
    // Readers stop at the first NUL; keep at least one.
    if t.len() >= room {
        return Err(Error::unsupported(
            dest.display().to_string(),
            format!(
                "a VMDK descriptor of {} bytes (at most {} fit the reserved sectors)",
                t.len(),
                room - 1
            ),
        ));
    }
    let mut b = t.into_bytes();
    b.resize(room, 0);
    Ok(b)
}

fn quoted_value(v: &str) -> String {
    v.chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_vmware() {
        // 40 GiB on SCSI: 5221 cylinders of 255 heads.
        assert_eq!(geometry(40 << 21, AdapterType::LsiLogic), (5221, 255, 63));
        // The same on IDE hits the ATA cap.
        assert_eq!(geometry(40 << 21, AdapterType::Ide), (16383, 16, 63));
        // 1 GiB on IDE: 2080 cylinders.
        assert_eq!(geometry(1 << 21, AdapterType::Ide), (2080, 16, 63));
        // Tiny disks still get one cylinder.
        assert_eq!(geometry(100, AdapterType::BusLogic), (1, 255, 63));
    }

    #[test]
    fn descriptor_text() {
        let opts = VmdkOptions {
            tools_version: Some("12345".into()),
            ..Default::default()
        };
        let b = build(
            Path::new("/x/we\"ird.vmdk"),
            "streamOptimized",
            9766,
            0xabc,
            &opts,
        )
        .unwrap();
        assert_eq!(b.len(), 10240);
        let text = String::from_utf8_lossy(&b);
        let text = text.trim_end_matches('\0');
        assert!(text.contains("CID=00000abc\n"));
        assert!(text.contains("createType=\"streamOptimized\"\n"));
        assert!(text.contains("RW 9766 SPARSE \"we_ird.vmdk\"\n"));
        assert!(text.contains("ddb.adapterType = \"lsilogic\"\n"));
        assert!(text.contains("ddb.toolsVersion = \"12345\"\n"));
        assert!(text.contains("ddb.geometry.heads = \"255\"\n"));
        let cid = random_cid();
        assert!(cid != 0 && cid != u32::MAX);
    }
}
