//! VMDK outputs. Two of VMware's hosted sparse layouts are written:
//!
//! - streamOptimized: what OVA/OVF packages carry and what ESXi and vCenter import. Grains
//!   are deflated (on the copy's worker threads) and the file is written strictly front to
//!   back, metadata after the data it describes, so it can be produced and consumed as a
//!   stream; the header defers to a footer for the grain directory's place.
//! - monolithicSparse: what Workstation and Fusion run directly, and qemu-img's default.
//!   Grains are stored as they are, in order; the grain tables are reserved up front, as
//!   VMware and qemu lay them out, so the image can grow in place once a VM writes to it.
//!
//! In both, grains that read as zero are not stored, and a virtual size that is not a
//! multiple of 512 is rounded up to the next sector (as qemu-img does): VMDK counts its
//! capacity in sectors. The padding reads as zeroes.
//!
//! Structure: `header` (the 512-byte KDMV header and footer), `descriptor` (the embedded
//! text, geometry), `marker` (stream markers), `grains` (cutting chunks into grains and
//! gathering grains that straddle chunks), `gt` (grain-table bookkeeping), and one module
//! per layout: `stream`, `sparse`.

mod descriptor;
mod grains;
mod gt;
mod header;
mod marker;
mod sparse;
mod stream;

pub use sparse::VmdkSparseSink;
pub use stream::VmdkStreamSink;

use crate::copy::Sink;
use crate::error::{Error, Result};
use std::path::Path;
use std::str::FromStr;

/// 64 KiB grains: the only size VMware writes and the one every reader expects.
const GRAIN_SECTORS: u64 = 128;
const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR;
/// Grain-table entries per table: 512, so a table covers 32 MiB and occupies 4 sectors.
const GTES_PER_GT: u64 = 512;
const SECTOR: u64 = 512;
/// Grain-table entries are 32-bit sector numbers, so nothing can be placed past 2 TiB, and
/// VMware caps a hosted sparse extent at that size as well.
const MAX_SECTORS: u64 = u32::MAX as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmdkSubformat {
    /// Compressed, written as a stream: for OVA/OVF and ESXi import.
    StreamOptimized,
    /// One growable file with uncompressed grains: qemu-img's default.
    #[default]
    MonolithicSparse,
}

impl VmdkSubformat {
    /// The descriptor's `createType`, also what `qemu-img -o subformat=` calls it.
    pub fn as_str(self) -> &'static str {
        match self {
            VmdkSubformat::StreamOptimized => "streamOptimized",
            VmdkSubformat::MonolithicSparse => "monolithicSparse",
        }
    }
}

impl FromStr for VmdkSubformat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "streamOptimized" => Ok(VmdkSubformat::StreamOptimized),
            "monolithicSparse" => Ok(VmdkSubformat::MonolithicSparse),
            _ => Err(Error::unsupported(
                "vmdk",
                format!("subformat '{s}' (streamOptimized and monolithicSparse can be written)"),
            )),
        }
    }
}

/// The virtual controller the disk is attached to. VMware derives the disk's geometry from
/// it, and a guest without the matching driver may not find its disk after an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdapterType {
    Ide,
    BusLogic,
    /// The default: what VMware picks for most Linux and Windows guests, and what OVAs
    /// built by VMware tools say.
    #[default]
    LsiLogic,
    LegacyEsx,
}

impl AdapterType {
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterType::Ide => "ide",
            AdapterType::BusLogic => "buslogic",
            AdapterType::LsiLogic => "lsilogic",
            AdapterType::LegacyEsx => "legacyESX",
        }
    }
}

impl FromStr for AdapterType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ide" => Ok(AdapterType::Ide),
            "buslogic" => Ok(AdapterType::BusLogic),
            "lsilogic" => Ok(AdapterType::LsiLogic),
            "legacyESX" => Ok(AdapterType::LegacyEsx),
            _ => Err(Error::unsupported(
                "vmdk",
                format!("adapter type '{s}' (ide, buslogic, lsilogic or legacyESX)"),
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VmdkOptions {
    pub subformat: VmdkSubformat,
    pub adapter_type: AdapterType,
    /// `ddb.virtualHWVersion`: the oldest VMware hardware version that may use the disk.
    /// "4" (qemu-img's default) lets every VMware product open it.
    pub hw_version: String,
    /// `ddb.toolsVersion`, left out when `None`.
    pub tools_version: Option<String>,
    /// Deflate level for streamOptimized grains, 1 (fast) to 12 (small); libdeflate's 6 by
    /// default, which is zlib's default ratio at a fraction of its time.
    pub compression_level: i32,
}

impl Default for VmdkOptions {
    fn default() -> Self {
        VmdkOptions {
            subformat: VmdkSubformat::default(),
            adapter_type: AdapterType::default(),
            hw_version: "4".into(),
            tools_version: None,
            compression_level: 6,
        }
    }
}

/// Creates the sink for `opts.subformat`.
pub fn create_sink(
    dest: &Path,
    virtual_size: u64,
    opts: &VmdkOptions,
    overwrite: bool,
) -> Result<Box<dyn Sink>> {
    Ok(match opts.subformat {
        VmdkSubformat::StreamOptimized => {
            Box::new(VmdkStreamSink::create(dest, virtual_size, opts, overwrite)?)
        }
        VmdkSubformat::MonolithicSparse => {
            Box::new(VmdkSparseSink::create(dest, virtual_size, opts, overwrite)?)
        }
    })
}

/// Capacity in sectors, refusing sizes whose grains could not all be addressed.
fn capacity_sectors(dest: &Path, virtual_size: u64) -> Result<u64> {
    let sectors = virtual_size.div_ceil(SECTOR);
    if sectors == 0 {
        // A zero capacity tells readers (qemu among them) that the embedded descriptor
        // describes other files: the disk would not open as itself.
        return Err(Error::unsupported(
            dest.display().to_string(),
            "a VMDK of zero bytes",
        ));
    }
    if sectors > MAX_SECTORS - 1024 * 1024 {
        return Err(Error::unsupported(
            dest.display().to_string(),
            format!(
                "a {virtual_size}-byte disk: a single-file VMDK holds at most 2 TiB \
                 (split extents are not written)"
            ),
        ));
    }
    Ok(sectors)
}

/// Sector number of byte offset `pos`, checked to fit a 32-bit table entry.
fn sector_u32(name: &str, pos: u64) -> Result<u32> {
    u32::try_from(pos / SECTOR).map_err(|_| {
        Error::unsupported(
            name,
            "the VMDK grows past 2 TiB, beyond what 32-bit grain-table entries address",
        )
    })
}
