//! Disk image formats as block devices.
//!
//! Every format reader is a [`BlockDev`] over host files; partitions and volumes are
//! [`Slice`]s of one; every rewrite goes through an [`Overlay`]. Image bytes are untrusted:
//! readers return [`Error::Corrupt`] naming the file, structure and offset, never panic, and
//! bound every allocation by what the file could really hold.

pub mod blockdev;
pub mod container;
pub mod copy;
pub mod error;
pub mod hostdev;
pub mod image;
pub mod layout;
pub mod lvm;
pub mod mem;
pub mod open;
pub mod output;
pub mod overlay;
pub mod overlay_delta;
pub mod partition;
pub mod probe;
pub mod raw;
pub mod slice;
pub mod undo;
pub mod verify;

pub mod qcow2;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

pub use blockdev::{extents_in, BlockDev, Extent, ExtentKind};
pub use error::{Error, ErrorKind, Result};
pub use image::{ExtentFile, Image, ImageInfo, RawImage};
pub use mem::MemDev;
pub use open::{open_image, open_image_rw, open_image_with, OpenCtx, OpenOptions};
pub use overlay::Overlay;
pub use overlay_delta::OverlayDelta;
pub use probe::{probe, Format, Probe};
pub use raw::RawFile;
pub use slice::Slice;
