//! Compression of layer blobs, detected by magic bytes: gzip, zstd or
//! plain tar. Decompression runs on the unpack thread, never an async
//! worker.

use std::io::{self, Read};

/// Detects gzip (1f 8b), zstd (28 b5 2f fd) or plain tar by magic bytes and
/// returns a decompressing reader.
pub fn decompressed<R: Read + Send + 'static>(mut r: R) -> io::Result<Box<dyn Read + Send>> {
    let mut magic = Vec::with_capacity(4);
    r.by_ref().take(4).read_to_end(&mut magic)?;
    let is_gzip = magic.starts_with(&[0x1f, 0x8b]);
    let is_zstd = magic == [0x28, 0xb5, 0x2f, 0xfd];
    let stream = io::Cursor::new(magic).chain(r);
    Ok(if is_gzip {
        Box::new(flate2::read::MultiGzDecoder::new(stream))
    } else if is_zstd {
        // libzstd, the reference decoder: hardened against hostile input
        // (ruzstd 0.8 and 0.9 panic on a 58-byte frame the fuzzer found),
        // decodes concatenated frames and skips skippable ones, and caps
        // the window at 128 MiB of memory.
        Box::new(zstd::stream::read::Decoder::new(stream)?)
    } else {
        Box::new(stream)
    })
}
