//! The version 3 header as this writer lays it out: the fixed 112-byte part (with the
//! compression type byte), a backing format extension when there is a backing file, the
//! end marker, then the backing file name. qemu only looks for all of it in the first
//! cluster, so the whole must fit there; `encode` refuses a name that would not.

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Fixed header length, including the compression type byte and its padding.
const HEADER_LEN: usize = 112;
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Incompatible bit 3: the compression type field is not zlib.
pub const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
/// qemu refuses longer backing file names.
const MAX_BACKING_NAME: usize = 1023;

/// What goes into the header beyond the geometry.
pub struct HeaderFields<'a> {
    pub cluster_bits: u32,
    pub virtual_size: u64,
    pub l1_size: u32,
    pub l1_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub zstd: bool,
    pub backing_file: Option<&'a str>,
    pub backing_format: Option<&'a str>,
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_be_bytes());
}

fn push_ext(out: &mut Vec<u8>, kind: u32, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(8), 0);
}

/// The bytes of the header area, checked to fit in one cluster.
pub fn encode(file: &str, h: &HeaderFields) -> Result<Vec<u8>> {
    let mut out = vec![0u8; HEADER_LEN];
    out[..4].copy_from_slice(MAGIC);
    put32(&mut out, 4, 3);
    put32(&mut out, 20, h.cluster_bits);
    put64(&mut out, 24, h.virtual_size);
    put32(&mut out, 36, h.l1_size);
    put64(&mut out, 40, h.l1_offset);
    put64(&mut out, 48, h.refcount_table_offset);
    put32(&mut out, 56, h.refcount_table_clusters);
    let incompat = if h.zstd { INCOMPAT_COMPRESSION_TYPE } else { 0 };
    put64(&mut out, 72, incompat);
    // refcount_order 4: 16-bit refcounts, qemu's default.
    put32(&mut out, 96, 4);
    put32(&mut out, 100, HEADER_LEN as u32);
    out[104] = u8::from(h.zstd);
    if let Some(fmt) = h.backing_format {
        push_ext(&mut out, EXT_BACKING_FORMAT, fmt.as_bytes());
    }
    push_ext(&mut out, EXT_END, &[]);
    if let Some(name) = h.backing_file {
        if name.is_empty() || name.len() > MAX_BACKING_NAME {
            return Err(Error::refused(
                file,
                format!(
                    "a qcow2 backing file name must be 1 to {MAX_BACKING_NAME} bytes long, this one is {}",
                    name.len()
                ),
            ));
        }
        let off = out.len();
        put64(&mut out, 8, off as u64);
        put32(&mut out, 16, name.len() as u32);
        out.extend_from_slice(name.as_bytes());
    }
    if out.len() as u64 > 1u64 << h.cluster_bits {
        return Err(Error::refused(
            file,
            format!(
                "the qcow2 header with its backing file name needs {} bytes, more than one \
                 {}-byte cluster; choose a larger cluster size or a shorter backing name",
                out.len(),
                1u64 << h.cluster_bits
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_out_fields_and_extensions() {
        let bytes = encode(
            "t",
            &HeaderFields {
                cluster_bits: 16,
                virtual_size: 1 << 30,
                l1_size: 2,
                l1_offset: 0x30000,
                refcount_table_offset: 0x40000,
                refcount_table_clusters: 1,
                zstd: true,
                backing_file: Some("base.raw"),
                backing_format: Some("raw"),
            },
        )
        .unwrap();
        assert_eq!(&bytes[..4], MAGIC);
        assert_eq!(bytes[104], 1);
        assert_eq!(u64::from_be_bytes(bytes[72..80].try_into().unwrap()), 8);
        // Backing format extension right after the fixed part, then the end marker.
        assert_eq!(&bytes[112..116], &EXT_BACKING_FORMAT.to_be_bytes());
        assert_eq!(&bytes[120..123], b"raw");
        assert_eq!(&bytes[128..136], &[0u8; 8]);
        let o = u64::from_be_bytes(bytes[8..16].try_into().unwrap()) as usize;
        assert_eq!(o, 136);
        assert_eq!(&bytes[o..], b"base.raw");
    }

    #[test]
    fn refuses_names_that_do_not_fit() {
        let name = "x".repeat(600);
        let f = HeaderFields {
            cluster_bits: 9,
            virtual_size: 1,
            l1_size: 1,
            l1_offset: 512,
            refcount_table_offset: 1024,
            refcount_table_clusters: 1,
            zstd: false,
            backing_file: Some(&name),
            backing_format: None,
        };
        assert!(encode("t", &f).is_err());
    }
}
