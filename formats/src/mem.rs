//! An in-memory device: images under test, fuzz inputs, and host files that came out of a
//! container (an OVA member) without touching the disk.

use crate::blockdev::BlockDev;
use crate::error::{check_range, Error, Result};
use std::sync::RwLock;

pub struct MemDev {
    name: String,
    data: RwLock<Vec<u8>>,
    writable: bool,
}

impl MemDev {
    /// A read-only device over `data`.
    pub fn new(name: impl Into<String>, data: Vec<u8>) -> Self {
        MemDev {
            name: name.into(),
            data: RwLock::new(data),
            writable: false,
        }
    }

    pub fn writable(name: impl Into<String>, data: Vec<u8>) -> Self {
        MemDev {
            writable: true,
            ..MemDev::new(name, data)
        }
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.data.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlockDev for MemDev {
    fn len(&self) -> u64 {
        self.data.read().map(|d| d.len() as u64).unwrap_or(0)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        check_range(&self.name, offset, buf.len() as u64, data.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                file: self.name.clone(),
            });
        }
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        check_range(&self.name, offset, buf.len() as u64, data.len() as u64)?;
        let start = offset as usize;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}
