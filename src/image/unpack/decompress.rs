//! Compression of layer blobs, detected by magic bytes: gzip, zstd or
//! plain tar.

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
        Box::new(ZstdFrames::new(stream))
    } else {
        Box::new(stream)
    })
}

/// Decodes a zstd stream of any number of frames, skipping skippable ones
/// (`ruzstd::StreamingDecoder` stops after the first frame).
struct ZstdFrames<R: Read> {
    source: io::BufReader<R>,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: Read> ZstdFrames<R> {
    fn new(source: R) -> Self {
        ZstdFrames {
            source: io::BufReader::new(source),
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        use ruzstd::decoding::BlockDecodingStrategy;
        use std::io::BufRead;

        let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                    let wanted =
                        BlockDecodingStrategy::UptoBytes(buf.len() - self.decoder.can_collect());
                    self.decoder
                        .decode_blocks(&mut self.source, wanted)
                        .map_err(invalid)?;
                }
                match self.decoder.read(buf)? {
                    0 => self.in_frame = false,
                    read => return Ok(read),
                }
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.init(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let mut frame = (&mut self.source).take(length.into());
                    if io::copy(&mut frame, &mut io::sink())? < u64::from(length) {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => return Err(invalid(e)),
            }
        }
    }
}
