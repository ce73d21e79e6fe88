//! A sparse raw file: data blocks written, zero blocks left as holes. The file is sized to
//! the virtual disk first, so trailing holes need no write.

use super::staged::StagedFile;
use super::writepool::{WritePool, WRITE_THREADS};
use crate::copy::{Chunk, Sink};
use crate::error::{Error, Result};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub struct RawSink {
    out: StagedFile,
    pool: WritePool,
}

impl RawSink {
    pub fn create(dest: &Path, size: u64, overwrite: bool) -> Result<Self> {
        let out = StagedFile::create(dest, overwrite)?;
        let name = dest.display().to_string();
        out.file()?.set_len(size).map_err(|e| Error::io(&name, e))?;
        let pool = WritePool::new(out.file()?, &name, WRITE_THREADS)?;
        Ok(RawSink { out, pool })
    }
}

impl Sink for RawSink {
    fn write(&mut self, chunk: Chunk) -> Result<()> {
        if chunk.nonzero.is_empty() {
            return Ok(());
        }
        // Offsets are in the chunk: its writes may land in any order.
        self.pool.submit(Box::new(move |f| {
            for &(s, e) in &chunk.nonzero {
                let data = chunk.data.get(s..e).unwrap_or(&[]);
                f.write_all_at(data, chunk.offset + s as u64)?;
            }
            Ok(())
        }))
    }

    fn finish(&mut self) -> Result<()> {
        self.pool.finish()?;
        self.out.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::BlockDev;
    use crate::copy::{copy, CopyOptions};
    use crate::mem::MemDev;

    #[test]
    fn copies_and_keeps_holes() {
        let mut data = vec![0u8; 5 * 1024 * 1024 + 300];
        for (i, b) in data
            .iter_mut()
            .enumerate()
            .skip(3 * 1024 * 1024)
            .take(70_000)
        {
            *b = (i % 253) as u8 + 1;
        }
        let n = data.len();
        data[n - 1] = 9;
        let src = MemDev::new("src", data.clone());
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.raw");
        let mut sink = RawSink::create(&dest, src.len(), false).unwrap();
        let stats = copy(&src, &mut sink, &CopyOptions::default(), &mut |_| {}).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert!(stats.written_bytes < 80_000, "{stats:?}");
        // Only the output remains in the folder: no temporary left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A second copy refuses to overwrite.
        assert!(RawSink::create(&dest, 1, false).is_err());
    }

    #[test]
    fn cancel_leaves_nothing() {
        let src = MemDev::new("src", vec![1u8; 8 * 1024 * 1024]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.raw");
        let mut sink = RawSink::create(&dest, src.len(), false).unwrap();
        let opts = CopyOptions::default();
        opts.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(copy(&src, &mut sink, &opts, &mut |_| {}).is_err());
        drop(sink);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
