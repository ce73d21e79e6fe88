//! Symbolic link targets: inline in the data fork when short, else in remote blocks
//! which on v5 each start with a self-describing header (`xfs_dsymlink_hdr`).

use super::bmbt::{self, Fork};
use super::bytes::{be32, be64, crc_ok};
use super::inode::{Inode, FMT_EXTENTS, FMT_LOCAL};
use super::volume::Volume;
use crate::error::Result;

const MAXLEN: u64 = 1024;
const MAGIC: u32 = 0x5853_4c4d; // "XSLM"
const HDR: usize = 56;

pub(crate) fn target(vol: &Volume, ino: &Inode) -> Result<Vec<u8>> {
    let what = format!("symlink inode {}", ino.ino);
    let c = |d: String| vol.corrupt(&what, ino.offset, d);
    if ino.size == 0 || ino.size > MAXLEN {
        return Err(c(format!("target length {}", ino.size)));
    }
    let size = ino.size as usize;
    match ino.format {
        FMT_LOCAL => ino
            .data_fork
            .get(..size)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| c("target longer than the inode's fork".into())),
        FMT_EXTENTS => {
            // One header per extent (the kernel reads each mapping as one buffer), not
            // per block, unlike remote attribute values.
            let map = bmbt::extents(vol, ino, Fork::Data)?;
            let mut out = Vec::with_capacity(size);
            let mut next = 0;
            for (i, e) in map.iter().enumerate() {
                if out.len() >= size {
                    break;
                }
                if e.off != next || e.len > 4 {
                    return Err(c(format!("remote extent {i} at file block {}", e.off)));
                }
                next = e.end();
                let b = vol.read_fsb(e.block, e.len, &what)?;
                let room = if vol.sb.crc { b.len() - HDR } else { b.len() };
                let want = room.min(size - out.len());
                if vol.sb.crc {
                    if be32(&b, 0) != Some(MAGIC) || !crc_ok(&b, 12) {
                        return Err(c(format!("remote extent {i}: bad magic or CRC")));
                    }
                    if be64(&b, 32) != Some(ino.ino)
                        || be32(&b, 4) != Some(out.len() as u32)
                        || be32(&b, 8) != Some(want as u32)
                    {
                        return Err(c(format!("remote extent {i}: header disagrees")));
                    }
                    out.extend_from_slice(b.get(HDR..HDR + want).unwrap_or(&[]));
                } else {
                    out.extend_from_slice(b.get(..want).unwrap_or(&[]));
                }
            }
            if out.len() != size {
                return Err(c(format!(
                    "remote blocks hold {} of {size} bytes",
                    out.len()
                )));
            }
            Ok(out)
        }
        f => Err(c(format!("data fork format {f}"))),
    }
}
