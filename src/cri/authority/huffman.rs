//! The Huffman code of RFC 7541 §5.2 and Appendix B.

use super::hpack::Malformed;

/// How many bits `byte`'s code has.
pub(super) fn code_len(byte: u8) -> u8 {
    HUFFMAN[usize::from(byte)].1
}

/// Writes `byte`'s code at `bit_offset` of `encoded`, over what is there.
pub(super) fn write_symbol(encoded: &mut [u8], bit_offset: usize, byte: u8) {
    let (code, bits) = HUFFMAN[usize::from(byte)];
    for i in 0..usize::from(bits) {
        let at = bit_offset + i;
        let mask = 0x80 >> (at % 8);
        if code >> (usize::from(bits) - 1 - i) & 1 == 1 {
            encoded[at / 8] |= mask;
        } else {
            encoded[at / 8] &= !mask;
        }
    }
}

/// One decoded octet and where its code sits in the encoded string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Symbol {
    pub(super) byte: u8,
    pub(super) bit_offset: usize,
    pub(super) bits: u8,
}

const EOS: u16 = 256;
const MAX_CODE_BITS: usize = 30;

/// Decodes a Huffman-coded string (RFC 7541 §5.2), rejecting EOS and
/// padding that is longer than 7 bits or not EOS's prefix.
pub(super) fn decode(encoded: &[u8], mut on_symbol: impl FnMut(Symbol)) -> Result<(), Malformed> {
    let mut code = 0u32;
    let mut bits = 0;
    let mut bit_offset = 0;
    for at in 0..encoded.len() * 8 {
        code = code << 1 | u32::from(encoded[at / 8] >> (7 - at % 8) & 1);
        bits += 1;
        match CANONICAL.symbol(code, bits) {
            Some(EOS) => return Err(Malformed),
            Some(symbol) => {
                on_symbol(Symbol {
                    byte: symbol as u8,
                    bit_offset,
                    bits: bits as u8,
                });
                (code, bits, bit_offset) = (0, 0, at + 1);
            }
            None if bits >= MAX_CODE_BITS => return Err(Malformed),
            None => {}
        }
    }
    if bits > 7 || code != (1 << bits) - 1 {
        return Err(Malformed);
    }
    Ok(())
}

/// The Huffman code is canonical: codes of one length are consecutive,
/// in symbol order, and shorter codes come first. Decoding needs, per
/// length, the first code and where its symbols start in length order.
struct Canonical {
    first_code: [u32; MAX_CODE_BITS + 1],
    count: [u32; MAX_CODE_BITS + 1],
    first_rank: [usize; MAX_CODE_BITS + 1],
    by_rank: [u16; 257],
}

static CANONICAL: Canonical = Canonical::build();

impl Canonical {
    const fn build() -> Self {
        let mut canonical = Canonical {
            first_code: [0; MAX_CODE_BITS + 1],
            count: [0; MAX_CODE_BITS + 1],
            first_rank: [0; MAX_CODE_BITS + 1],
            by_rank: [0; 257],
        };
        let mut rank = 0;
        let mut bits = 1;
        while bits <= MAX_CODE_BITS {
            canonical.first_rank[bits] = rank;
            let mut symbol = 0;
            while symbol < HUFFMAN.len() {
                let (code, len) = HUFFMAN[symbol];
                if len as usize == bits {
                    if canonical.count[bits] == 0 {
                        canonical.first_code[bits] = code;
                    }
                    canonical.count[bits] += 1;
                    canonical.by_rank[rank] = symbol as u16;
                    rank += 1;
                }
                symbol += 1;
            }
            bits += 1;
        }
        canonical
    }

    fn symbol(&self, code: u32, bits: usize) -> Option<u16> {
        let offset = code.checked_sub(self.first_code[bits])?;
        (offset < self.count[bits]).then(|| self.by_rank[self.first_rank[bits] + offset as usize])
    }
}

/// RFC 7541 Appendix B: (code, bit length) per symbol; 256 is EOS.
#[rustfmt::skip]
const HUFFMAN: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28), (0xfffffe5, 28),
    (0xfffffe6, 28), (0xfffffe7, 28), (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28), (0xfffffed, 28), (0xfffffee, 28),
    (0xfffffef, 28), (0xffffff0, 28), (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28),
    (0xffffffa, 28), (0xffffffb, 28), (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11), (0x3fa, 10), (0x3fb, 10),
    (0xf9, 8), (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), (0x1a, 6), (0x1b, 6),
    (0x1c, 6), (0x1d, 6), (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10), (0x1ffa, 13), (0x21, 6),
    (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7),
    (0x69, 7), (0x6a, 7), (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xfc, 8), (0x73, 7),
    (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5),
    (0x25, 6), (0x26, 6), (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5), (0x2b, 6), (0x76, 7),
    (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14),
    (0x1ffd, 13), (0xffffffc, 28), (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23), (0x3fffd6, 22), (0x7fffda, 23),
    (0x7fffdb, 23), (0x7fffdc, 23), (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23), (0xffffee, 24), (0x7fffe1, 23),
    (0x7fffe2, 23), (0x7fffe3, 23), (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24), (0x3fffda, 22), (0x1fffdd, 21),
    (0xfffe9, 20), (0x3fffdb, 22), (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24), (0x1fffdf, 21), (0x3fffdf, 22),
    (0x7fffeb, 23), (0x7fffec, 23), (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23), (0xfffea, 20), (0x3fffe2, 22),
    (0x3fffe3, 22), (0x3fffe4, 22), (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19), (0x3fffe7, 22), (0x7ffff2, 23),
    (0x3fffe8, 22), (0x1ffffec, 25), (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25), (0x7fff2, 19), (0x1fffe3, 21),
    (0x3ffffe6, 26), (0x7ffffe0, 27), (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), (0xffffffd, 28), (0x7ffffe3, 27),
    (0x7ffffe4, 27), (0x7ffffe5, 27), (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23), (0x3fffea, 22), (0x3fffeb, 22),
    (0x1ffffee, 25), (0x1ffffef, 25), (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26), (0x7ffffe7, 27), (0x7ffffe8, 27),
    (0x7ffffe9, 27), (0x7ffffea, 27), (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26), (0x3fffffff, 30),
];

/// Encodes `text`, padded with EOS's prefix, as an HPACK encoder would.
#[cfg(test)]
pub(super) fn encode(text: &[u8]) -> Vec<u8> {
    let bits: usize = text.iter().map(|&byte| usize::from(code_len(byte))).sum();
    let mut encoded = vec![0xff; bits.div_ceil(8)];
    let mut bit_offset = 0;
    for &byte in text {
        write_symbol(&mut encoded, bit_offset, byte);
        bit_offset += usize::from(code_len(byte));
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(encoded: &[u8]) -> Result<Vec<u8>, Malformed> {
        let mut text = Vec::new();
        decode(encoded, |symbol| text.push(symbol.byte))?;
        Ok(text)
    }

    #[test]
    fn table_is_the_canonical_code_of_rfc_7541() {
        let mut by_length: Vec<usize> = (0..HUFFMAN.len()).collect();
        by_length.sort_by_key(|&symbol| (HUFFMAN[symbol].1, symbol));
        let mut previous = (0u32, 0u8);
        for (rank, &symbol) in by_length.iter().enumerate() {
            let (code, bits) = HUFFMAN[symbol];
            let expected = match rank {
                0 => 0,
                _ => (previous.0 + 1) << (bits - previous.1),
            };
            assert_eq!(code, expected, "symbol {symbol}");
            assert_eq!(CANONICAL.symbol(code, bits.into()), Some(symbol as u16));
            previous = (code, bits);
        }
        assert_eq!(HUFFMAN[usize::from(EOS)], (0x3fff_ffff, 30));
    }

    #[test]
    fn decodes_rfc_7541_examples_and_marks_symbol_positions() {
        let examples: [(&str, &[u8]); 4] = [
            (
                "www.example.com",
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
            ),
            ("no-cache", &[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]),
            (
                "custom-key",
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f],
            ),
            (
                "custom-value",
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf],
            ),
        ];
        for (text, encoded) in examples {
            assert_eq!(decoded(encoded), Ok(text.as_bytes().to_vec()));
            assert_eq!(encode(text.as_bytes()), encoded);
        }
        let mut symbols = Vec::new();
        decode(&encode(b"a/b"), |symbol| symbols.push(symbol)).unwrap();
        let positions: Vec<_> = symbols
            .iter()
            .map(|s| (s.byte, s.bit_offset, s.bits))
            .collect();
        assert_eq!(positions, [(b'a', 0, 5), (b'/', 5, 6), (b'b', 11, 6)]);
    }

    #[test]
    fn rejects_bad_padding_and_eos() {
        assert_eq!(decoded(&[0x00]), Err(Malformed), "padding of zeros");
        assert_eq!(decoded(&[0x07, 0xff]), Err(Malformed), "padding of 8 bits");
        assert_eq!(decoded(&[0xff, 0xff, 0xff, 0xfc]), Err(Malformed), "EOS");
        assert_eq!(decoded(&[]), Ok(Vec::new()));
    }
}
