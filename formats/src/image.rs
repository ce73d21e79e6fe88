//! An opened image: a block device that can also describe itself for `info`. The
//! description is a plain serialisable struct because `info --json` is a stable interface
//! that scripts parse (documented in the README); format-specific facts that have no common
//! field go into `details` as strings.

use crate::blockdev::{BlockDev, Extent};
use crate::error::Result;
use crate::probe::Format;
use crate::raw::RawFile;
use std::collections::BTreeMap;
use std::sync::Arc;

pub trait Image: BlockDev {
    fn info(&self) -> ImageInfo;
}

/// One host file that holds part of an image (a VMDK extent), for `info`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExtentFile {
    /// Path of the host file, or `null` for extents with no file (VMDK ZERO).
    pub filename: Option<String>,
    /// The extent's type as the format names it: "SPARSE", "FLAT", "VMFS", "ZERO", ...
    pub kind: String,
    /// Where the extent starts in the virtual disk.
    pub virtual_offset: u64,
    pub virtual_size: u64,
    /// Where its data starts in the host file (FLAT extents).
    pub file_offset: u64,
    /// Grain or cluster size of a sparse extent.
    pub cluster_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    pub filename: String,
    pub format: Format,
    /// "v2"/"v3" (qcow2), "monolithicSparse"... (VMDK), "dynamic"/"fixed"/"differencing"
    /// (VHDX, VHD), null for raw.
    pub subformat: Option<String>,
    /// True when nothing but raw matched: a renamed or unknown file.
    pub probed_as_raw: bool,
    pub virtual_size: u64,
    /// Bytes the host stores for this image's own files (not its backing chain).
    pub file_bytes: u64,
    pub cluster_size: Option<u64>,
    /// The backing/parent file as named inside the image.
    pub backing_reference: Option<String>,
    /// The opened backing image, recursively.
    pub backing: Option<Box<ImageInfo>>,
    pub extents: Vec<ExtentFile>,
    /// Dirty/needs-repair state: qcow2 dirty bit or corrupt bit, VHDX log not empty.
    pub dirty: bool,
    /// Human notes: "log replayed in memory", "compression: zstd", ...
    pub notes: Vec<String>,
    /// Format-specific facts, as strings ("refcount_bits": "16", "compression": "zlib").
    pub details: BTreeMap<String, String>,
}

impl ImageInfo {
    pub fn new(filename: impl Into<String>, format: Format, virtual_size: u64) -> Self {
        ImageInfo {
            filename: filename.into(),
            format,
            subformat: None,
            probed_as_raw: false,
            virtual_size,
            file_bytes: 0,
            cluster_size: None,
            backing_reference: None,
            backing: None,
            extents: Vec::new(),
            dirty: false,
            notes: Vec::new(),
            details: BTreeMap::new(),
        }
    }
}

/// A raw file as an image.
pub struct RawImage {
    file: Arc<RawFile>,
    probed_as_raw: bool,
}

impl RawImage {
    pub fn new(file: Arc<RawFile>, probed_as_raw: bool) -> Self {
        RawImage {
            file,
            probed_as_raw,
        }
    }
}

impl BlockDev for RawImage {
    fn len(&self) -> u64 {
        self.file.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_at(buf, offset)
    }
    fn flush(&self) -> Result<()> {
        self.file.flush()
    }
    fn extent_at(&self, offset: u64) -> Result<Extent> {
        self.file.extent_at(offset)
    }
    fn name(&self) -> &str {
        self.file.name()
    }
}

impl Image for RawImage {
    fn info(&self) -> ImageInfo {
        let mut i = ImageInfo::new(self.file.name(), Format::Raw, self.file.len());
        i.probed_as_raw = self.probed_as_raw;
        i.file_bytes = self.file.allocated_bytes();
        if self.file.is_block_device() {
            i.subformat = Some("block device".into());
        }
        if self.probed_as_raw {
            i.notes
                .push("probed as raw: no known image header was found".into());
        }
        i
    }
}
