//! SPDY/3 header blocks (spec 2.6.10): a count, then length-prefixed
//! names and values, compressed with zlib primed with the SPDY dictionary.
//! Each direction of a connection has one compression context that spans
//! all its header blocks, so blocks must be (de)compressed in wire order.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::HEADER_DICTIONARY;

/// A decompressed header block larger than this ends the connection.
pub const MAX_HEADER_BLOCK: usize = 64 << 10;
/// Name/value pairs accepted in one block.
const MAX_HEADER_PAIRS: usize = 128;

/// Header names lowercased (SPDY requires it; Go's spdystream sends them
/// so) and values as sent; a value with NULs holds several values.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name` (compared without case).
pub fn get<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("header block is not valid zlib data: {0}")]
    Zlib(String),
    #[error("header block exceeds {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
    #[error("malformed header block: {0}")]
    Malformed(&'static str),
}

pub struct Compressor(Compress);

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Compressor {
    pub fn new() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&HEADER_DICTIONARY)
            .expect("setting a dictionary on a fresh zlib stream cannot fail");
        Compressor(zlib)
    }

    /// The compressed block of `headers`, sync-flushed so that the peer
    /// can decompress it on its own.
    pub fn compress(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for part in [name.to_ascii_lowercase().as_bytes(), value.as_bytes()] {
                plain.extend_from_slice(&(part.len() as u32).to_be_bytes());
                plain.extend_from_slice(part);
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut consumed = 0;
        loop {
            out.reserve(plain.len() + 64);
            let before = self.0.total_in();
            self.0
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .expect("compressing into a vector with spare room cannot fail");
            consumed += (self.0.total_in() - before) as usize;
            // Done once all input is in and the flush left spare room.
            if consumed == plain.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

pub struct Decompressor(Decompress);

impl Default for Decompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Decompressor {
    pub fn new() -> Self {
        Decompressor(Decompress::new(true))
    }

    /// Decompresses and parses one block.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let plain = self.inflate(block)?;
        parse_block(&plain)
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(1024);
        let mut consumed = 0;
        loop {
            let room = (MAX_HEADER_BLOCK + 1)
                .saturating_sub(out.len())
                .min(16 << 10);
            if room == 0 {
                return Err(HeaderError::TooLarge);
            }
            out.reserve(room);
            let before_in = self.0.total_in();
            let before_out = out.len();
            match self
                .0
                .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => {
                    return Err(HeaderError::Malformed("zlib stream ended"));
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(&HEADER_DICTIONARY)
                        .map_err(|e| HeaderError::Zlib(e.to_string()))?;
                }
                Err(e) => return Err(HeaderError::Zlib(e.to_string())),
            }
            consumed += (self.0.total_in() - before_in) as usize;
            if out.len() > MAX_HEADER_BLOCK {
                return Err(HeaderError::TooLarge);
            }
            if consumed == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            let progressed = out.len() > before_out || self.0.total_in() > before_in;
            if !progressed {
                // Everything decoded (the output had filled up exactly),
                // or a truncated block zlib cannot continue.
                return if consumed == block.len() {
                    Ok(out)
                } else {
                    Err(HeaderError::Malformed("zlib stream stalled"))
                };
            }
        }
    }
}

fn parse_block(plain: &[u8]) -> Result<Headers, HeaderError> {
    let count_bytes = plain.get(0..4).ok_or(HeaderError::Malformed("no count"))?;
    let count = u32::from_be_bytes(count_bytes.try_into().unwrap()) as usize;
    if count > MAX_HEADER_PAIRS {
        return Err(HeaderError::Malformed("too many headers"));
    }
    let mut at = 4;
    let mut next = |what: &'static str| -> Result<&[u8], HeaderError> {
        let len_bytes = plain.get(at..at + 4).ok_or(HeaderError::Malformed(what))?;
        let len = u32::from_be_bytes(len_bytes.try_into().unwrap()) as usize;
        let part = plain
            .get(at + 4..at + 4 + len)
            .ok_or(HeaderError::Malformed(what))?;
        at += 4 + len;
        Ok(part)
    };
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = next("truncated name")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| HeaderError::Malformed("name is not UTF-8"))?
            .to_ascii_lowercase();
        let value = String::from_utf8_lossy(next("truncated value")?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::super::dictionary::HEADER_DICTIONARY_ID;
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        // The DICTID that every SPDY/3 header stream announces.
        assert_eq!(HEADER_DICTIONARY.len(), 1423);
        assert_eq!(HEADER_DICTIONARY_ID, 0xe3c6_a7c2);
        let mut compressor = Compressor::new();
        let block = compressor.compress(&[("streamtype", "error")]);
        // zlib header with FDICT set, then the dictionary id.
        assert_eq!(block[0], 0x78);
        assert_ne!(block[1] & 0x20, 0);
        assert_eq!(
            u32::from_be_bytes(block[2..6].try_into().unwrap()),
            HEADER_DICTIONARY_ID
        );
    }

    #[test]
    fn blocks_share_one_context_per_direction() {
        let mut compressor = Compressor::new();
        let mut decompressor = Decompressor::new();
        let first = compressor.compress(&[("streamType", "stdout"), ("x", "a\0b")]);
        let second = compressor.compress(&[("streamtype", "stdout")]);
        // The second block refers back to the first: it is smaller.
        assert!(
            second.len() < first.len(),
            "{} {}",
            second.len(),
            first.len()
        );
        let h1 = decompressor.decompress(&first).unwrap();
        assert_eq!(get(&h1, "StreamType"), Some("stdout"));
        assert_eq!(get(&h1, "x"), Some("a"));
        let h2 = decompressor.decompress(&second).unwrap();
        assert_eq!(h2, vec![("streamtype".to_string(), "stdout".to_string())]);
        // The second block alone cannot be decoded by a fresh context.
        assert!(Decompressor::new().decompress(&second).is_err());
    }

    /// The first three SYN_STREAMs of `crictl exec` (v1.34, Go's
    /// spdystream), captured with strace from its socket writes: error,
    /// stdout and stderr streams, one compression context across them.
    const CRICTL_SYN_STREAMS: [&str; 3] = [
        "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff",
        "800300010000001900000003000000000000c22ac5565c92925f5a02000000ffff",
        "800300010000001500000005000000000000c229975a5404000000ffff",
    ];

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_real_clients_header_blocks_decode() {
        use super::super::frame::{Control, FrameHead};
        let mut decompressor = Decompressor::new();
        let mut seen = Vec::new();
        for hex in CRICTL_SYN_STREAMS {
            let wire = unhex(hex);
            let FrameHead::Control {
                kind,
                flags,
                length,
                ..
            } = FrameHead::parse(wire[..8].try_into().unwrap())
            else {
                panic!("not a control frame");
            };
            assert_eq!(length, wire.len() - 8);
            let Control::SynStream {
                stream_id,
                header_block,
                ..
            } = Control::parse(kind, flags, wire[8..].to_vec().into()).unwrap()
            else {
                panic!("not a SYN_STREAM");
            };
            let headers = decompressor.decompress(&header_block).unwrap();
            seen.push((stream_id, get(&headers, "streamType").unwrap().to_string()));
        }
        assert_eq!(
            seen,
            [
                (1, "error".to_string()),
                (3, "stdout".into()),
                (5, "stderr".into())
            ]
        );
    }

    #[test]
    fn empty_block_and_garbage() {
        let mut compressor = Compressor::new();
        let block = compressor.compress(&[]);
        assert_eq!(Decompressor::new().decompress(&block).unwrap(), vec![]);
        assert!(Decompressor::new().decompress(b"not zlib at all").is_err());
    }

    #[test]
    fn oversized_blocks_are_refused() {
        let big = "v".repeat(MAX_HEADER_BLOCK);
        let block = Compressor::new().compress(&[("k", &big)]);
        assert_eq!(
            Decompressor::new().decompress(&block),
            Err(HeaderError::TooLarge)
        );
        // A count claiming more pairs than the block holds.
        let mut plain = 5u32.to_be_bytes().to_vec();
        plain.extend_from_slice(&1u32.to_be_bytes());
        plain.push(b'a');
        assert!(parse_block(&plain).is_err());
    }
}
