//! vmdk reader (being written).

use crate::blockdev::BlockDev;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::open::OpenCtx;
use std::path::Path;
use std::sync::Arc;

/// Opens a vmdk image whose host file is `file` (at `path`, for messages and for resolving
/// the files it names).
pub fn open(_file: Arc<dyn BlockDev>, path: &Path, _ctx: &OpenCtx) -> Result<Arc<dyn Image>> {
    Err(Error::unsupported(path.display().to_string(), "vmdk images are not readable yet"))
}
