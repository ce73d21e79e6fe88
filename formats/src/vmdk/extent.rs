//! One extent of the virtual disk: a flat run of a host file, zeroes, or a sparse file with
//! its grain map. Each extent file is opened through the folder policy and its own header
//! read from it, so a descriptor cannot make us parse bytes it did not name.

use super::cowd;
use super::descriptor::{clip, ExtentLine};
use super::grain_map::GrainMap;
use super::sesparse;
use super::sparse_header;
use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use crate::image::ExtentFile;
use crate::open::OpenCtx;
use crate::raw::RawFile;
use std::path::Path;
use std::sync::Arc;

pub enum Body {
    /// Bytes at `offset` in `file`; past the file's end they read as zeroes (thin or
    /// truncated flat files, as qemu reads them).
    Flat {
        file: Arc<RawFile>,
        offset: u64,
    },
    Zero,
    Sparse(Box<GrainMap>),
}

pub struct Extent {
    /// Where it starts in the virtual disk, in bytes.
    pub start: u64,
    pub len: u64,
    pub body: Body,
    pub info: ExtentFile,
    /// Host path, for `file_bytes`.
    pub host_path: Option<std::path::PathBuf>,
}

/// Opens the extent named by a descriptor line, starting at `start` bytes.
pub fn open_line(
    line: &ExtentLine,
    start: u64,
    from: &Path,
    desc_file: &str,
    ctx: &OpenCtx,
    notes: &mut Vec<String>,
) -> Result<Extent> {
    let len = line.sectors.checked_mul(512).ok_or_else(|| {
        Error::corrupt(
            desc_file,
            "vmdk descriptor extent line",
            line.at,
            "the extent size overflows",
        )
    })?;
    let mut info = ExtentFile {
        filename: None,
        kind: line.kind.clone(),
        virtual_offset: start,
        virtual_size: len,
        file_offset: 0,
        cluster_size: None,
    };
    let kind = line.kind.as_str();
    if kind == "ZERO" {
        return Ok(Extent {
            start,
            len,
            body: Body::Zero,
            info,
            host_path: None,
        });
    }
    match kind {
        "FLAT" | "VMFS" | "SPARSE" | "VMFSSPARSE" | "SESPARSE" => {}
        "VMFSRDM" | "VMFSRAW" => {
            return Err(Error::unsupported(
                desc_file,
                format!("{kind} extents (raw device mappings name host devices, not files); copy the device itself instead"),
            ))
        }
        other => return Err(Error::unsupported(desc_file, format!("extent type '{}'", clip(other)))),
    }
    let name = line.file.as_deref().unwrap_or("");
    let (path, file) = ctx.open_file(from, name)?;
    info.filename = Some(path.display().to_string());
    let host_path = Some(path);
    match kind {
        "FLAT" | "VMFS" => {
            let offset = line.offset.unwrap_or(0).checked_mul(512).ok_or_else(|| {
                Error::corrupt(
                    desc_file,
                    "vmdk descriptor extent line",
                    line.at,
                    "the file offset overflows",
                )
            })?;
            info.file_offset = offset;
            let flen = file.len();
            if offset.saturating_add(len) > flen {
                notes.push(format!(
                    "{}: the file holds {} of the extent's {len} bytes; the rest reads as zeroes",
                    file.name(),
                    flen.saturating_sub(offset)
                ));
            }
            Ok(Extent {
                start,
                len,
                body: Body::Flat { file, offset },
                info,
                host_path,
            })
        }
        _ => {
            let dev: Arc<dyn BlockDev> = file;
            let map = open_sparse(dev, kind, notes)?;
            info.cluster_size = Some(map.grain_bytes);
            if map.layout.capacity_sectors != line.sectors {
                notes.push(format!(
                    "{}: its header says {} sectors, the descriptor {}; the descriptor's size is used",
                    map.file().name(),
                    map.layout.capacity_sectors,
                    line.sectors
                ));
            }
            Ok(Extent {
                start,
                len,
                body: Body::Sparse(Box::new(map)),
                info,
                host_path,
            })
        }
    }
}

/// Reads the sparse header of `file` for an extent of type `kind`.
pub fn open_sparse(
    file: Arc<dyn BlockDev>,
    kind: &str,
    notes: &mut Vec<String>,
) -> Result<GrainMap> {
    let mut magic = [0u8; 4];
    if file.len() >= 4 {
        file.read_at(&mut magic, 0)?;
    }
    let layout = if kind == "SESPARSE" {
        sesparse::read(&*file)?
    } else if &magic == sparse_header::MAGIC {
        let h = sparse_header::read(&*file)?;
        h.layout(&*file, notes)?
    } else if &magic == cowd::MAGIC {
        cowd::read(&*file)?
    } else {
        return Err(Error::corrupt(
            file.name(),
            "vmdk sparse header",
            0,
            format!("a {kind} extent must start with KDMV or COWD"),
        ));
    };
    GrainMap::open(file, layout, notes)
}
