//! The writer.

use super::FatFs;
use crate::error::Result;
use crate::{read_only, show, NewNode, SetAttrs};

pub(crate) fn check_writable(_fs: &FatFs) -> Result<()> {
    Ok(())
}

impl FatFs {
    pub(crate) fn do_write_file(&self, path: &[u8], _data: &[u8]) -> Result<()> {
        Err(read_only(&show(path)))
    }
    pub(crate) fn do_create(&self, path: &[u8], _node: NewNode<'_>, _a: &SetAttrs) -> Result<()> {
        Err(read_only(&show(path)))
    }
    pub(crate) fn do_remove(&self, path: &[u8]) -> Result<()> {
        Err(read_only(&show(path)))
    }
    pub(crate) fn do_rename(&self, path: &[u8], _to: &[u8]) -> Result<()> {
        Err(read_only(&show(path)))
    }
    pub(crate) fn do_set_attrs(&self, path: &[u8], _a: &SetAttrs) -> Result<()> {
        Err(read_only(&show(path)))
    }
}
