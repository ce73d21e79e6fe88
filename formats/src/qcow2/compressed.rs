//! Compressed clusters: raw deflate (no zlib header) or a zstd frame, always inflating to
//! exactly one cluster. The stored length is rounded up to 512-byte sectors, so the input
//! usually carries the start of the next cluster's data after the stream: both decoders
//! stop at the end of their stream and ignore it.
//!
//! Decoder state is kept per thread: a zstd context costs more to set up than inflating a
//! 64 KiB cluster, and readers inflate thousands of them.

use super::header::Compression;
use std::cell::RefCell;
use zstd::stream::raw::{InBuffer, Operation, OutBuffer};

thread_local! {
    static INFLATER: RefCell<Option<libdeflater::Decompressor>> = const { RefCell::new(None) };
    static ZSTD: RefCell<Option<zstd::stream::raw::Decoder<'static>>> = const { RefCell::new(None) };
}

/// Inflates `src` into all of `out`; the error says what went wrong, for a Corrupt error.
pub fn decompress(kind: Compression, src: &[u8], out: &mut [u8]) -> Result<(), String> {
    match kind {
        Compression::Zlib => INFLATER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let d = slot.get_or_insert_with(libdeflater::Decompressor::new);
            let n = d
                .deflate_decompress(src, out)
                .map_err(|e| format!("deflate: {e}"))?;
            if n != out.len() {
                return Err(format!(
                    "inflates to {n} bytes, not a {}-byte cluster",
                    out.len()
                ));
            }
            Ok(())
        }),
        Compression::Zstd => ZSTD.with(|cell| {
            let mut slot = cell.borrow_mut();
            let d = match slot.as_mut() {
                Some(d) => {
                    d.reinit().map_err(|e| format!("zstd: {e}"))?;
                    d
                }
                None => {
                    let mut d =
                        zstd::stream::raw::Decoder::new().map_err(|e| format!("zstd: {e}"))?;
                    // A frame may claim a window of up to 128 MiB; a cluster needs at most
                    // 2 MiB, so refuse bigger windows instead of allocating them.
                    d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(22))
                        .map_err(|e| format!("zstd: {e}"))?;
                    slot.insert(d)
                }
            };
            let want = out.len();
            let mut input = InBuffer::around(src);
            let mut output = OutBuffer::around(out);
            // Each round either consumes input or fills output; stop when neither moves.
            loop {
                let (before_in, before_out) = (input.pos(), output.pos());
                d.run(&mut input, &mut output)
                    .map_err(|e| format!("zstd: {e}"))?;
                if output.pos() == want {
                    return Ok(());
                }
                if input.pos() == before_in && output.pos() == before_out {
                    return Err(format!(
                        "the zstd data ends after {} bytes of a {want}-byte cluster",
                        output.pos()
                    ));
                }
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_round_trip_with_trailing_bytes() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut z = vec![0u8; c.deflate_compress_bound(data.len())];
        let n = c.deflate_compress(&data, &mut z).unwrap();
        z.truncate(n);
        z.extend_from_slice(&[0xaa; 300]);
        let mut out = vec![0u8; 65536];
        decompress(Compression::Zlib, &z, &mut out).unwrap();
        assert_eq!(out, data);
        let mut s = zstd::bulk::compress(&data, 3).unwrap();
        s.extend_from_slice(&[0x55; 300]);
        out.fill(0);
        decompress(Compression::Zstd, &s, &mut out).unwrap();
        assert_eq!(out, data);
        // Short or garbage input is an error, never a hang.
        assert!(decompress(Compression::Zstd, &s[..100], &mut out).is_err());
        assert!(decompress(Compression::Zlib, &z[..100], &mut out).is_err());
        assert!(decompress(Compression::Zstd, &[0u8; 64], &mut out).is_err());
    }
}
