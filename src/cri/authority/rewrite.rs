//! The HPACK side (RFC 7541) of the rewrite. loona-hpack decodes every
//! header block the client sends, which keeps a copy of the client's
//! dynamic table. A block whose `:authority` h2 would reject is encoded
//! again, fixed, as literals without indexing and without Huffman coding;
//! and so is every block after it. The server's decoder then never adds
//! an entry after the first rewrite, so nothing the client indexes later
//! has to mean the same in both tables: each re-encoded block spells out
//! what the client's table holds. A client that never needs the fix gets
//! its blocks through byte for byte.

use std::borrow::Cow;

use loona_hpack::Decoder;
use tonic::codegen::http::uri::Authority;

/// SETTINGS_HEADER_TABLE_SIZE's default, which the server keeps: a client
/// asking for a larger table is malformed, as h2 would find it.
const SERVER_TABLE_SIZE: usize = 4096;
/// The most one decoded header list may take (names, values and RFC 7541's
/// 32 bytes an entry). A CRI call's headers take well under 1 KiB; a few
/// bytes of indexes can name a 4 KiB entry each, so decoding is bounded
/// here, not by the block's length.
const MAX_HEADER_LIST: usize = 1 << 20;
const ENTRY_OVERHEAD: usize = 32;
const AUTHORITY: &[u8] = b":authority";

/// Input the wrapper does not understand; it then stops interfering.
#[derive(Debug, PartialEq)]
pub(super) struct Malformed;

/// An `:authority` value before and after a rewrite, for the log.
#[derive(Debug, PartialEq)]
pub(super) struct Rewrite {
    pub(super) from: String,
    pub(super) to: String,
}

/// A header block to send instead of the client's.
#[derive(Debug, PartialEq)]
pub(super) struct Rewritten {
    pub(super) block: Vec<u8>,
    /// The first `:authority` value fixed in it; later blocks that only
    /// spell out indexed entries have none.
    pub(super) rewrite: Option<Rewrite>,
}

/// The client's header blocks, in the order it sent them.
pub(super) struct HeaderBlocks {
    decoder: Decoder<'static>,
    /// A block was re-encoded: every later one is too.
    reencoding: bool,
}

impl HeaderBlocks {
    pub(super) fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(SERVER_TABLE_SIZE);
        HeaderBlocks {
            decoder,
            reencoding: false,
        }
    }

    /// Decodes one complete header block. Returns the block to send
    /// instead, with the first `:authority` rewrite in it, or `None` when
    /// the block goes through as it is.
    pub(super) fn rewrite(&mut self, block: &[u8]) -> Result<Option<Rewritten>, Malformed> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut list_size = 0usize;
        self.decoder
            .decode_with_cb(block, |name: Cow<[u8]>, value: Cow<[u8]>| {
                list_size = list_size.saturating_add(name.len() + value.len() + ENTRY_OVERHEAD);
                if list_size <= MAX_HEADER_LIST {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|_| Malformed)?;
        if list_size > MAX_HEADER_LIST {
            return Err(Malformed);
        }
        let mut first_rewrite = None;
        for (name, value) in &mut fields {
            if name == AUTHORITY {
                if let Some(fixed) = fixed_authority(value) {
                    first_rewrite.get_or_insert_with(|| Rewrite {
                        from: String::from_utf8_lossy(value).into_owned(),
                        to: String::from_utf8_lossy(&fixed).into_owned(),
                    });
                    *value = fixed;
                }
            }
        }
        if first_rewrite.is_none() && !self.reencoding {
            return Ok(None);
        }
        self.reencoding = true;
        Ok(Some(Rewritten {
            block: literal_block(&fields),
            rewrite: first_rewrite,
        }))
    }
}

/// An `:authority` value h2 accepts, when `value` is not one: every byte
/// outside a registered name's characters becomes `-`. Nothing is routed
/// by authority, so the value only has to parse.
fn fixed_authority(value: &[u8]) -> Option<Vec<u8>> {
    if value.is_empty() || Authority::try_from(value).is_ok() {
        return None;
    }
    Some(
        value
            .iter()
            .map(|&byte| if is_reg_name(byte) { byte } else { b'-' })
            .collect(),
    )
}

/// Unreserved and sub-delims: what a host name may hold, `:`, `@`, `[`,
/// `]` and `%` excluded, as they give an authority structure.
fn is_reg_name(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&byte)
}

/// Each field as a literal without indexing with a literal name, plain
/// octets (RFC 7541 §6.2.2): nothing for the server's table to keep.
fn literal_block(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        put_string(&mut block, name);
        put_string(&mut block, value);
    }
    block
}

/// A string literal without Huffman coding: its length with a 7-bit
/// prefix (RFC 7541 §5.1), then its octets.
fn put_string(out: &mut Vec<u8>, octets: &[u8]) {
    const PREFIX_MAX: usize = 0x7f;
    let len = octets.len();
    if len < PREFIX_MAX {
        out.push(len as u8);
    } else {
        out.push(PREFIX_MAX as u8);
        let mut rest = len - PREFIX_MAX;
        while rest >= 0x80 {
            out.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        out.push(rest as u8);
    }
    out.extend_from_slice(octets);
}

/// Builds header blocks as clients' encoders do, for tests.
#[cfg(test)]
pub(super) mod encode {
    /// The Huffman codes (RFC 7541 Appendix B) of strings the tests send,
    /// as grpc-go's encoder sends them.
    pub const HUFFMAN: &[(&[u8], &[u8])] = &[
        (
            b"/tmp/x.sock",
            &[0x61, 0x34, 0xd6, 0xc7, 0x95, 0xd0, 0x72, 0x75],
        ),
        (
            b"/run/wharf/wharf.sock",
            &[
                0x62, 0xcb, 0x6a, 0x63, 0xc4, 0xe3, 0xb2, 0x56, 0x3c, 0x4e, 0x3b, 0x25, 0x5d, 0x07,
                0x27, 0x5f,
            ],
        ),
        (
            b"application/grpc",
            &[
                0x1d, 0x75, 0xd0, 0x62, 0x0d, 0x26, 0x3d, 0x4c, 0x4d, 0x65, 0x64,
            ],
        ),
        (b"trailers", &[0x4d, 0x83, 0x35, 0x05, 0xb1, 0x1f]),
        (
            b"localhost:10250",
            &[
                0xa0, 0xe4, 0x1d, 0x13, 0x9d, 0x09, 0xb8, 0x10, 0x09, 0xb0, 0x7f,
            ],
        ),
    ];

    pub const INCREMENTAL: (u8, u32) = (0x40, 6);
    pub const WITHOUT_INDEXING: (u8, u32) = (0x00, 4);
    pub const NEVER_INDEXED: (u8, u32) = (0x10, 4);
    /// The first dynamic table index, after the static table's 61.
    pub const FIRST_DYNAMIC: usize = 62;

    pub fn integer(value: usize, (pattern, prefix_bits): (u8, u32)) -> Vec<u8> {
        let prefix_max = (1 << prefix_bits) - 1;
        if value < prefix_max {
            return vec![pattern | value as u8];
        }
        let mut encoded = vec![pattern | prefix_max as u8];
        let mut rest = value - prefix_max;
        while rest >= 0x80 {
            encoded.push(rest as u8 | 0x80);
            rest >>= 7;
        }
        encoded.push(rest as u8);
        encoded
    }

    /// `text` as a string literal, Huffman-coded when asked (only the
    /// strings of [`HUFFMAN`] can be).
    pub fn string(text: &[u8], huffman: bool) -> Vec<u8> {
        let octets = match huffman {
            true => HUFFMAN
                .iter()
                .find(|(plain, _)| *plain == text)
                .map(|(_, coded)| coded.to_vec())
                .expect("a Huffman code in the table"),
            false => text.to_vec(),
        };
        let mut encoded = integer(octets.len(), (if huffman { 0x80 } else { 0 }, 7));
        encoded.extend(octets);
        encoded
    }

    pub fn indexed(index: usize) -> Vec<u8> {
        integer(index, (0x80, 7))
    }

    pub fn size_update(max_size: usize) -> Vec<u8> {
        integer(max_size, (0x20, 5))
    }

    pub enum FieldName<'a> {
        Index(usize),
        Literal(&'a [u8]),
    }

    pub fn literal(kind: (u8, u32), name: FieldName, value: &[u8], huffman: bool) -> Vec<u8> {
        let mut field = match name {
            FieldName::Index(index) => integer(index, kind),
            FieldName::Literal(name) => {
                let mut field = integer(0, kind);
                field.extend(string(name, false));
                field
            }
        };
        field.extend(string(value, huffman));
        field
    }

    /// `:authority` as Go's encoder sends it: indexed name, added to the table.
    pub fn authority(value: &[u8], huffman: bool) -> Vec<u8> {
        literal(INCREMENTAL, FieldName::Index(1), value, huffman)
    }

    /// A gRPC request's pseudo-headers as a decoder gives them back.
    pub fn request_fields(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/runtime.v1.RuntimeService/Version"),
            (":authority", authority),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// What a gRPC request's block starts with, before `:authority`:
    /// `:method POST`, `:scheme http`, `:path` (added to the table).
    pub fn request_start() -> Vec<u8> {
        let path = b"/runtime.v1.RuntimeService/Version";
        let path = literal(INCREMENTAL, FieldName::Index(4), path, false);
        [vec![0x83, 0x86], path].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Runs blocks through one rewriter, then decodes what would reach
    /// the server with one decoder, as h2's would: the server's view.
    fn served(blocks: &[Vec<u8>]) -> Result<Vec<Fields>, Malformed> {
        let mut rewriter = HeaderBlocks::new();
        let mut server = Decoder::new();
        let mut seen = Vec::new();
        for block in blocks {
            let sent = match rewriter.rewrite(block)? {
                Some(fixed) => fixed.block,
                None => block.clone(),
            };
            seen.push(server.decode(&sent).expect("the server can decode it"));
        }
        Ok(seen)
    }

    #[test]
    fn socket_path_becomes_a_host_name() {
        for huffman in [false, true] {
            let block = [
                request_start(),
                authority(b"/run/wharf/wharf.sock", huffman),
            ]
            .concat();
            let Rewritten {
                block: fixed,
                rewrite,
            } = HeaderBlocks::new().rewrite(&block).unwrap().unwrap();
            assert_eq!(
                rewrite,
                Some(Rewrite {
                    from: "/run/wharf/wharf.sock".into(),
                    to: "-run-wharf-wharf.sock".into()
                })
            );
            assert_eq!(
                Decoder::new().decode(&fixed).unwrap(),
                request_fields("-run-wharf-wharf.sock")
            );
        }
        // Structure characters go too, so that the result always parses.
        assert_eq!(fixed_authority(b"/a:b@[c]%"), Some(b"-a-b--c--".to_vec()));
        assert_eq!(fixed_authority(b"localhost"), None);
    }

    #[test]
    fn a_client_that_needs_no_fix_passes_byte_for_byte() {
        let block = [
            request_start(),
            authority(b"localhost:10250", true),
            literal(
                WITHOUT_INDEXING,
                FieldName::Literal(b"x-path"),
                b"/a b",
                false,
            ),
            literal(
                NEVER_INDEXED,
                FieldName::Index(58),
                b"grpc-go/1.51.0",
                false,
            ),
        ]
        .concat();
        let second = [
            vec![0x83, 0x86],
            indexed(FIRST_DYNAMIC + 1),
            indexed(FIRST_DYNAMIC),
        ]
        .concat();
        let mut rewriter = HeaderBlocks::new();
        assert_eq!(rewriter.rewrite(&block), Ok(None));
        assert_eq!(rewriter.rewrite(&second), Ok(None));
    }

    #[test]
    fn blocks_after_a_rewrite_spell_out_what_they_index() {
        // The second block indexes the first's entries: `:authority`
        // (newest) and `:path`. The server never saw them added.
        let first = [request_start(), authority(b"/x.sock", false)].concat();
        let second = [
            vec![0x83, 0x86],
            indexed(FIRST_DYNAMIC + 1),
            indexed(FIRST_DYNAMIC),
        ]
        .concat();
        assert_eq!(
            served(&[first, second]),
            Ok(vec![request_fields("-x.sock"), request_fields("-x.sock")])
        );
    }

    #[test]
    fn a_literal_named_by_a_dynamic_authority_entry_is_fixed() {
        let first = literal(
            INCREMENTAL,
            FieldName::Literal(AUTHORITY),
            b"localhost",
            false,
        );
        for kind in [WITHOUT_INDEXING, NEVER_INDEXED, INCREMENTAL] {
            let second = literal(kind, FieldName::Index(FIRST_DYNAMIC), b"/y.sock", false);
            let seen = served(&[first.clone(), second]).unwrap();
            assert_eq!(seen[1], fields(&[(":authority", "-y.sock")]));
        }
    }

    #[test]
    fn size_updates_and_eviction_follow_the_client() {
        // `:authority: localhost` takes 51 bytes of the table, `x-a: b` 36:
        // with a table of 86 the older entry is evicted.
        let entries = [
            authority(b"localhost", false),
            literal(INCREMENTAL, FieldName::Literal(b"x-a"), b"b", false),
        ]
        .concat();
        let with_table = |max_size| [size_update(max_size), entries.clone()].concat();
        let older = literal(
            WITHOUT_INDEXING,
            FieldName::Index(FIRST_DYNAMIC + 1),
            b"/x",
            false,
        );
        let seen = served(&[with_table(87), older.clone()]).unwrap();
        assert_eq!(seen[1], fields(&[(":authority", "-x")]), "room for both");
        assert_eq!(
            served(&[with_table(86), older]),
            Err(Malformed),
            "room for one"
        );
        assert_eq!(
            HeaderBlocks::new().rewrite(&with_table(SERVER_TABLE_SIZE + 1)),
            Err(Malformed),
            "a table larger than the server's"
        );
    }

    #[test]
    fn malformed_and_oversized_blocks_are_reported() {
        for block in [
            indexed(0),
            indexed(FIRST_DYNAMIC),
            vec![0x41, 0x85, 0xff],
            vec![0x41, 0x81, 0x00],
        ] {
            assert_eq!(HeaderBlocks::new().rewrite(&block), Err(Malformed));
        }
        // One 4 KiB entry, then a million-odd bytes of references to it.
        let big = literal(
            INCREMENTAL,
            FieldName::Literal(b"x-big"),
            &[b'a'; 4000],
            false,
        );
        let references = indexed(FIRST_DYNAMIC).repeat(300);
        let mut rewriter = HeaderBlocks::new();
        assert_eq!(rewriter.rewrite(&big), Ok(None));
        assert_eq!(rewriter.rewrite(&references), Err(Malformed));
    }
}
