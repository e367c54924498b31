//! The HPACK side (RFC 7541) of the rewrite: walks a complete header
//! block, keeps a model of the dynamic table, and fixes `:authority`
//! values in place.

use std::collections::VecDeque;
use std::ops::Range;

use tonic::codegen::http::uri::Authority;

use super::huffman::{self, Symbol};

/// SETTINGS_HEADER_TABLE_SIZE's default; the server keeps it.
const INITIAL_TABLE_SIZE: usize = 4096;
/// RFC 7541 §4.1: an entry's size is its name and value plus this.
const ENTRY_OVERHEAD: usize = 32;
const STATIC_TABLE_LEN: usize = 61;
const AUTHORITY: &[u8] = b":authority";

/// Input the wrapper does not understand; it then stops interfering.
#[derive(Debug, PartialEq)]
pub(super) struct Malformed;

/// An `:authority` value before and after a rewrite, for the log.
pub(super) struct Rewrite {
    pub(super) from: String,
    pub(super) to: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Name {
    len: usize,
    is_authority: bool,
}

/// What the client's encoder and h2's decoder hold in their dynamic
/// tables, as far as the rewrite needs it.
pub(super) struct DynamicTable {
    /// Newest first, as indexed: each entry's name and size.
    entries: VecDeque<(Name, usize)>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    pub(super) fn new() -> Self {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            max_size: INITIAL_TABLE_SIZE,
        }
    }

    fn name(&self, index: usize) -> Result<Name, Malformed> {
        match index {
            0 => Err(Malformed),
            1..=STATIC_TABLE_LEN => Ok(Name {
                len: STATIC_NAMES[index - 1].len(),
                is_authority: STATIC_NAMES[index - 1].as_bytes() == AUTHORITY,
            }),
            _ => self
                .entries
                .get(index - STATIC_TABLE_LEN - 1)
                .map(|&(name, _)| name)
                .ok_or(Malformed),
        }
    }

    fn insert(&mut self, name: Name, value_len: usize) {
        let size = name.len + value_len + ENTRY_OVERHEAD;
        // An entry larger than the table empties it and is not added.
        self.evict_to(self.max_size.saturating_sub(size));
        if size <= self.max_size {
            self.entries.push_front((name, size));
            self.size += size;
        }
    }

    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            let Some((_, size)) = self.entries.pop_back() else {
                break;
            };
            self.size -= size;
        }
    }

    /// Walks one complete header block (RFC 7541 §6), rewriting invalid
    /// `:authority` values in place and keeping the table in step.
    /// Returns the first rewrite, if any.
    pub(super) fn fix_block(&mut self, block: &mut [u8]) -> Result<Option<Rewrite>, Malformed> {
        let mut first_rewrite = None;
        let mut at = 0;
        while let Some(&first) = block.get(at) {
            if first & 0x80 != 0 {
                self.name(read_integer(block, &mut at, 7)?)?;
            } else if first & 0xe0 == 0x20 {
                let max_size = read_integer(block, &mut at, 5)?;
                self.set_max_size(max_size);
            } else {
                let indexing = first & 0xc0 == 0x40;
                let name = match read_integer(block, &mut at, if indexing { 6 } else { 4 })? {
                    0 => {
                        let name = read_string(block, &mut at)?;
                        let name = name.decode(&block[name.range.clone()])?;
                        Name {
                            len: name.len(),
                            is_authority: name == AUTHORITY,
                        }
                    }
                    index => self.name(index)?,
                };
                let value = read_string(block, &mut at)?;
                let encoded = &mut block[value.range.clone()];
                let value_len = if name.is_authority {
                    let (value_len, rewrite) = fix_authority(encoded, value.huffman)?;
                    first_rewrite = first_rewrite.or(rewrite);
                    value_len
                } else {
                    value.decoded_len(encoded)?
                };
                if indexing {
                    self.insert(name, value_len);
                }
            }
        }
        Ok(first_rewrite)
    }
}

/// RFC 7541 §5.1; like h2, at most four continuation bytes.
fn read_integer(block: &[u8], at: &mut usize, prefix_bits: u32) -> Result<usize, Malformed> {
    let prefix_max = (1 << prefix_bits) - 1;
    let first = usize::from(*block.get(*at).ok_or(Malformed)?) & prefix_max;
    *at += 1;
    if first < prefix_max {
        return Ok(first);
    }
    let mut value = first;
    for shift in [0, 7, 14, 21] {
        let byte = *block.get(*at).ok_or(Malformed)?;
        *at += 1;
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed)
}

/// A string literal (RFC 7541 §5.2): where its octets are, and their coding.
struct HpackString {
    huffman: bool,
    range: Range<usize>,
}

fn read_string(block: &[u8], at: &mut usize) -> Result<HpackString, Malformed> {
    let huffman = block.get(*at).ok_or(Malformed)? & 0x80 != 0;
    let len = read_integer(block, at, 7)?;
    let end = at
        .checked_add(len)
        .filter(|&end| end <= block.len())
        .ok_or(Malformed)?;
    let range = *at..end;
    *at = end;
    Ok(HpackString { huffman, range })
}

impl HpackString {
    fn decode(&self, encoded: &[u8]) -> Result<Vec<u8>, Malformed> {
        if !self.huffman {
            return Ok(encoded.to_vec());
        }
        let mut decoded = Vec::with_capacity(encoded.len() * 8 / 5);
        huffman::decode(encoded, |symbol| decoded.push(symbol.byte))?;
        Ok(decoded)
    }

    fn decoded_len(&self, encoded: &[u8]) -> Result<usize, Malformed> {
        if !self.huffman {
            return Ok(encoded.len());
        }
        let mut len = 0;
        huffman::decode(encoded, |_| len += 1)?;
        Ok(len)
    }
}

/// Makes an `:authority` value that h2 would reject parse, keeping its
/// encoded length: every byte outside a registered name's characters
/// becomes one inside (of the same code length if Huffman-coded). Returns
/// the decoded length and what changed. A value with a symbol that has no
/// valid symbol of the same code length stays as it is.
fn fix_authority(encoded: &mut [u8], huffman: bool) -> Result<(usize, Option<Rewrite>), Malformed> {
    let mut symbols = Vec::new();
    if huffman {
        huffman::decode(encoded, |symbol| symbols.push(symbol))?;
    } else {
        symbols.extend(encoded.iter().enumerate().map(|(at, &byte)| Symbol {
            byte,
            bit_offset: at * 8,
            bits: 8,
        }));
    }
    let value: Vec<u8> = symbols.iter().map(|symbol| symbol.byte).collect();
    if value.is_empty() || Authority::try_from(&value[..]).is_ok() {
        return Ok((value.len(), None));
    }
    let fixed: Option<Vec<u8>> = symbols
        .iter()
        .map(|symbol| match is_reg_name(symbol.byte) {
            true => Some(symbol.byte),
            false if huffman => same_length_replacement(symbol.bits),
            false => Some(b'-'),
        })
        .collect();
    let Some(fixed) = fixed else {
        return Ok((value.len(), None));
    };
    if huffman {
        for (symbol, &byte) in symbols.iter().zip(&fixed) {
            huffman::write_symbol(encoded, symbol.bit_offset, byte);
        }
    } else {
        encoded.copy_from_slice(&fixed);
    }
    let rewrite = Rewrite {
        from: String::from_utf8_lossy(&value).into_owned(),
        to: String::from_utf8_lossy(&fixed).into_owned(),
    };
    Ok((value.len(), Some(rewrite)))
}

/// Unreserved and sub-delims: what a host name may hold, `:`, `@`, `[`,
/// `]` and `%` excluded, as they give an authority structure.
fn is_reg_name(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&byte)
}

/// Symbols to write instead of invalid ones, most readable first.
const REPLACEMENTS: &[u8] =
    b"-._~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!$&'()*+,;=";

fn same_length_replacement(bits: u8) -> Option<u8> {
    REPLACEMENTS
        .iter()
        .copied()
        .find(|&byte| huffman::code_len(byte) == bits)
}

/// RFC 7541 Appendix A: the static table's names, from index 1.
#[rustfmt::skip]
const STATIC_NAMES: [&str; STATIC_TABLE_LEN] = [
    ":authority", ":method", ":method", ":path", ":path", ":scheme", ":scheme", ":status",
    ":status", ":status", ":status", ":status", ":status", ":status", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "accept", "access-control-allow-origin",
    "age", "allow", "authorization", "cache-control", "content-disposition", "content-encoding",
    "content-language", "content-length", "content-location", "content-range", "content-type",
    "cookie", "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "link", "location",
    "max-forwards", "proxy-authenticate", "proxy-authorization", "range", "referer", "refresh",
    "retry-after", "server", "set-cookie", "strict-transport-security", "transfer-encoding",
    "user-agent", "vary", "via", "www-authenticate",
];

/// Builds header blocks the way an HPACK encoder does, for tests.
#[cfg(test)]
pub(super) mod encode {
    use super::super::huffman;

    pub const INCREMENTAL: (u8, u32) = (0x40, 6);
    pub const WITHOUT_INDEXING: (u8, u32) = (0x00, 4);
    pub const NEVER_INDEXED: (u8, u32) = (0x10, 4);
    pub const FIRST_DYNAMIC: usize = super::STATIC_TABLE_LEN + 1;

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

    pub fn string(text: &[u8], huffman: bool) -> Vec<u8> {
        let octets = match huffman {
            true => huffman::encode(text),
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
        /// The name and whether it is Huffman-coded.
        Literal(&'a [u8], bool),
    }

    pub fn literal(kind: (u8, u32), name: FieldName, value: &[u8], huffman: bool) -> Vec<u8> {
        let mut field = match name {
            FieldName::Index(index) => integer(index, kind),
            FieldName::Literal(name, name_huffman) => {
                let mut field = integer(0, kind);
                field.extend(string(name, name_huffman));
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

    /// What a gRPC request's block starts with, before `:authority`.
    pub fn request_start() -> Vec<u8> {
        let path = b"/runtime.v1.RuntimeService/Version";
        let path = literal(INCREMENTAL, FieldName::Index(4), path, true);
        [vec![0x83, 0x86], path].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;

    /// Runs successive header blocks through one table.
    fn fixed(blocks: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, Malformed> {
        let mut table = DynamicTable::new();
        let mut blocks = blocks.to_vec();
        for block in &mut blocks {
            table.fix_block(block)?;
        }
        Ok(blocks)
    }

    #[test]
    fn integers_decode_per_rfc_7541() {
        let decode = |bytes: &[u8], prefix_bits| read_integer(bytes, &mut 0, prefix_bits);
        assert_eq!(decode(&[0x0a], 5), Ok(10));
        assert_eq!(decode(&[0xff, 0x9a, 0x0a], 5), Ok(1337));
        assert_eq!(decode(&[0x2a], 8), Ok(42));
        assert_eq!(decode(&[0x1f, 0x9a], 5), Err(Malformed));
        assert_eq!(
            decode(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x0f], 5),
            Err(Malformed)
        );
        for value in [0, 14, 15, 62, 63, 127, 128, 4096, 1 << 20] {
            let encoded = integer(value, INCREMENTAL);
            let mut at = 0;
            assert_eq!(read_integer(&encoded, &mut at, 6), Ok(value));
            assert_eq!(at, encoded.len());
        }
    }

    #[test]
    fn socket_path_becomes_a_host_name_of_the_same_length() {
        for huffman in [false, true] {
            let mut block = authority(b"/run/wharf/wharf.sock", huffman);
            let rewrite = DynamicTable::new().fix_block(&mut block).unwrap().unwrap();
            assert_eq!(block, authority(b"-run-wharf-wharf.sock", huffman));
            assert_eq!(
                (&*rewrite.from, &*rewrite.to),
                ("/run/wharf/wharf.sock", "-run-wharf-wharf.sock")
            );
        }
        // Structure characters go too, so that the result always parses.
        let fix = |value: &[u8], huffman| fixed(&[authority(value, huffman)]).unwrap();
        assert_eq!(fix(b"/a:b@[c]%", false), [authority(b"-a-b--c--", false)]);
        assert_eq!(fix(b"/a:b@[c]", true), [authority(b"-ajb~~c~", true)]);
    }

    #[test]
    fn valid_authorities_and_other_headers_pass_unchanged() {
        let block = [
            request_start(),
            authority(b"localhost:10250", true),
            literal(
                WITHOUT_INDEXING,
                FieldName::Literal(b"x-path", false),
                b"/a b",
                false,
            ),
            literal(
                NEVER_INDEXED,
                FieldName::Index(58),
                b"grpc-go/1.51.0 /x",
                true,
            ),
            literal(
                INCREMENTAL,
                FieldName::Literal(b":authorit", true),
                b"/x",
                true,
            ),
            literal(INCREMENTAL, FieldName::Index(FIRST_DYNAMIC), b"/y", false),
        ]
        .concat();
        assert_eq!(fixed(std::slice::from_ref(&block)), Ok(vec![block]));
    }

    #[test]
    fn references_to_a_rewritten_entry_pass_unchanged() {
        let first = [request_start(), authority(b"/x.sock", true)].concat();
        let second = [
            vec![0x83, 0x86],
            indexed(FIRST_DYNAMIC + 1),
            indexed(FIRST_DYNAMIC),
        ]
        .concat();
        let fixed_first = [request_start(), authority(b"-x.sock", true)].concat();
        assert_eq!(
            fixed(&[first, second.clone()]),
            Ok(vec![fixed_first, second])
        );
    }

    #[test]
    fn literal_named_by_a_dynamic_authority_entry_is_fixed() {
        let first = literal(
            INCREMENTAL,
            FieldName::Literal(AUTHORITY, true),
            b"localhost",
            true,
        );
        for kind in [WITHOUT_INDEXING, NEVER_INDEXED, INCREMENTAL] {
            for huffman in [false, true] {
                let second =
                    |value: &[u8]| literal(kind, FieldName::Index(FIRST_DYNAMIC), value, huffman);
                assert_eq!(
                    fixed(&[first.clone(), second(b"/y.sock")]),
                    Ok(vec![first.clone(), second(b"-y.sock")])
                );
            }
        }
    }

    #[test]
    fn eviction_follows_the_encoder() {
        // `:authority: localhost` takes 51 bytes of the table, `x-a: b` 36.
        let entries = [
            authority(b"localhost", false),
            literal(INCREMENTAL, FieldName::Literal(b"x-a", false), b"b", false),
        ]
        .concat();
        let with_table = |max_size| [size_update(max_size), entries.clone()].concat();
        let older = |value: &[u8]| {
            literal(
                WITHOUT_INDEXING,
                FieldName::Index(FIRST_DYNAMIC + 1),
                value,
                false,
            )
        };
        assert_eq!(
            fixed(&[with_table(87), older(b"/x")]),
            Ok(vec![with_table(87), older(b"-x")]),
            "room for both"
        );
        assert_eq!(
            fixed(&[with_table(86), older(b"/x")]).err(),
            Some(Malformed),
            "room for one"
        );
        let just_fits = [size_update(51), authority(b"localhost", false)].concat();
        assert!(
            fixed(&[just_fits, indexed(FIRST_DYNAMIC)]).is_ok(),
            "an entry as large as the table fits"
        );
        let too_large = [authority(&[b'a'; 60], false), indexed(FIRST_DYNAMIC)].concat();
        assert_eq!(
            fixed(&[with_table(87), too_large]).err(),
            Some(Malformed),
            "an entry larger than the table empties it"
        );
    }

    #[test]
    fn symbol_without_a_same_length_replacement_is_left() {
        // `#` has a 12-bit code and no valid symbol does; the entry still
        // counts, so the next block's index 63 is the first `:authority`.
        let first = authority(b"/a#b", true);
        let second = [
            authority(b"/c", true),
            literal(
                WITHOUT_INDEXING,
                FieldName::Index(FIRST_DYNAMIC + 1),
                b"/d",
                true,
            ),
        ]
        .concat();
        let fixed_second = [
            authority(b"-c", true),
            literal(
                WITHOUT_INDEXING,
                FieldName::Index(FIRST_DYNAMIC + 1),
                b"-d",
                true,
            ),
        ]
        .concat();
        assert_eq!(
            fixed(&[first.clone(), second]),
            Ok(vec![first, fixed_second])
        );
    }

    #[test]
    fn malformed_blocks_are_reported() {
        for block in [
            indexed(0),
            indexed(FIRST_DYNAMIC),
            vec![0x41, 0x85, 0xff],
            vec![0x41, 0x81, 0x00],
        ] {
            assert_eq!(fixed(&[block]).err(), Some(Malformed));
        }
    }
}
