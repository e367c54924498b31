//! SPDY/3.1 frames on the wire (spec section 2.2): an 8-byte header, then
//! the payload. Control frames are parsed whole (their length is bounded
//! by [`MAX_CONTROL_FRAME`]); a data frame's payload is read by the caller
//! in pieces, so a 16 MiB data frame never sits in memory at once.

use bytes::{BufMut, Bytes, BytesMut};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
pub const HEADER_LEN: usize = 8;

/// A control frame larger than this ends the connection: the biggest
/// legitimate one is a SYN_STREAM with a compressed header block, a few
/// hundred bytes from kubectl.
pub const MAX_CONTROL_FRAME: usize = 64 << 10;

/// SETTINGS entries accepted in one frame (there are 8 defined ids).
const MAX_SETTINGS: usize = 32;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

pub mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes (spec 2.6.3).
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes (spec 2.6.6).
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// The fixed 8 bytes that start every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHead {
    Control {
        version: u16,
        kind: u16,
        flags: u8,
        length: usize,
    },
    Data {
        stream_id: u32,
        flags: u8,
        length: usize,
    },
}

impl FrameHead {
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> FrameHead {
        let flags = bytes[4];
        let length = u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]) as usize;
        if bytes[0] & 0x80 != 0 {
            FrameHead::Control {
                version: u16::from_be_bytes([bytes[0] & 0x7f, bytes[1]]),
                kind: u16::from_be_bytes([bytes[2], bytes[3]]),
                flags,
                length,
            }
        } else {
            FrameHead::Data {
                stream_id: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
                flags,
                length,
            }
        }
    }
}

/// A control frame's content; header blocks are still compressed here
/// (they must be decompressed in arrival order, by the connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        header_block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings(Vec<(u32, u32)>),
    Ping(u32),
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A type this implementation does not know: ignored, as the spec asks.
    Unknown(u16),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("control frame of {0} bytes exceeds the limit of {MAX_CONTROL_FRAME}")]
    TooLarge(usize),
    #[error("malformed {what} frame: {reason}")]
    Malformed {
        what: &'static str,
        reason: &'static str,
    },
}

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn need(what: &'static str, payload: &[u8], len: usize) -> Result<(), FrameError> {
    if payload.len() < len {
        return Err(FrameError::Malformed {
            what,
            reason: "too short",
        });
    }
    Ok(())
}

impl Control {
    /// Parses the payload of a control frame whose head was `kind`/`flags`.
    pub fn parse(kind: u16, flags: u8, payload: Bytes) -> Result<Control, FrameError> {
        let p = &payload[..];
        Ok(match kind {
            kind::SYN_STREAM => {
                need("SYN_STREAM", p, 10)?;
                Control::SynStream {
                    stream_id: be32(p, 0) & STREAM_ID_MASK,
                    associated_to: be32(p, 4) & STREAM_ID_MASK,
                    priority: p[8] >> 5,
                    flags,
                    header_block: payload.slice(10..),
                }
            }
            kind::SYN_REPLY => {
                need("SYN_REPLY", p, 4)?;
                Control::SynReply {
                    stream_id: be32(p, 0) & STREAM_ID_MASK,
                    flags,
                    header_block: payload.slice(4..),
                }
            }
            kind::RST_STREAM => {
                need("RST_STREAM", p, 8)?;
                Control::RstStream {
                    stream_id: be32(p, 0) & STREAM_ID_MASK,
                    status: be32(p, 4),
                }
            }
            kind::SETTINGS => {
                need("SETTINGS", p, 4)?;
                let count = be32(p, 0) as usize;
                if count > MAX_SETTINGS || p.len() != 4 + count * 8 {
                    return Err(FrameError::Malformed {
                        what: "SETTINGS",
                        reason: "entry count does not match the length",
                    });
                }
                let entries = (0..count)
                    .map(|i| {
                        let at = 4 + i * 8;
                        (be32(p, at) & 0x00ff_ffff, be32(p, at + 4))
                    })
                    .collect();
                Control::Settings(entries)
            }
            kind::PING => {
                need("PING", p, 4)?;
                Control::Ping(be32(p, 0))
            }
            kind::GOAWAY => {
                need("GOAWAY", p, 4)?;
                // SPDY/3 adds the status; SPDY/2-style short frames carry none.
                let status = if p.len() >= 8 { be32(p, 4) } else { goaway::OK };
                Control::GoAway {
                    last_good_stream_id: be32(p, 0) & STREAM_ID_MASK,
                    status,
                }
            }
            kind::HEADERS => {
                need("HEADERS", p, 4)?;
                Control::Headers {
                    stream_id: be32(p, 0) & STREAM_ID_MASK,
                    flags,
                    header_block: payload.slice(4..),
                }
            }
            kind::WINDOW_UPDATE => {
                need("WINDOW_UPDATE", p, 8)?;
                Control::WindowUpdate {
                    stream_id: be32(p, 0) & STREAM_ID_MASK,
                    delta: be32(p, 4) & STREAM_ID_MASK,
                }
            }
            other => Control::Unknown(other),
        })
    }

    /// The frame on the wire, head included.
    pub fn encode(&self) -> Bytes {
        let (kind, flags, mut payload) = match self {
            Control::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                header_block,
            } => {
                let mut p = BytesMut::with_capacity(10 + header_block.len());
                p.put_u32(*stream_id & STREAM_ID_MASK);
                p.put_u32(*associated_to & STREAM_ID_MASK);
                p.put_u8(priority << 5);
                p.put_u8(0);
                p.put_slice(header_block);
                (kind::SYN_STREAM, *flags, p)
            }
            Control::SynReply {
                stream_id,
                flags,
                header_block,
            } => {
                let mut p = BytesMut::with_capacity(4 + header_block.len());
                p.put_u32(*stream_id & STREAM_ID_MASK);
                p.put_slice(header_block);
                (kind::SYN_REPLY, *flags, p)
            }
            Control::RstStream { stream_id, status } => {
                let mut p = BytesMut::with_capacity(8);
                p.put_u32(*stream_id & STREAM_ID_MASK);
                p.put_u32(*status);
                (kind::RST_STREAM, 0, p)
            }
            Control::Settings(entries) => {
                let mut p = BytesMut::with_capacity(4 + entries.len() * 8);
                p.put_u32(entries.len() as u32);
                for (id, value) in entries {
                    p.put_u32(id & 0x00ff_ffff);
                    p.put_u32(*value);
                }
                (kind::SETTINGS, 0, p)
            }
            Control::Ping(id) => {
                let mut p = BytesMut::with_capacity(4);
                p.put_u32(*id);
                (kind::PING, 0, p)
            }
            Control::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut p = BytesMut::with_capacity(8);
                p.put_u32(*last_good_stream_id & STREAM_ID_MASK);
                p.put_u32(*status);
                (kind::GOAWAY, 0, p)
            }
            Control::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                let mut p = BytesMut::with_capacity(4 + header_block.len());
                p.put_u32(*stream_id & STREAM_ID_MASK);
                p.put_slice(header_block);
                (kind::HEADERS, *flags, p)
            }
            Control::WindowUpdate { stream_id, delta } => {
                let mut p = BytesMut::with_capacity(8);
                p.put_u32(*stream_id & STREAM_ID_MASK);
                p.put_u32(*delta & STREAM_ID_MASK);
                (kind::WINDOW_UPDATE, 0, p)
            }
            Control::Unknown(kind) => (*kind, 0, BytesMut::new()),
        };
        let mut frame = BytesMut::with_capacity(HEADER_LEN + payload.len());
        frame.put_u16(0x8000 | VERSION);
        frame.put_u16(kind);
        frame.put_u8(flags);
        put_u24(&mut frame, payload.len());
        frame.put(payload.split());
        frame.freeze()
    }
}

fn put_u24(buf: &mut BytesMut, value: usize) {
    debug_assert!(value < 1 << 24);
    buf.put_slice(&(value as u32).to_be_bytes()[1..]);
}

/// The largest data payload one frame can carry (24-bit length).
pub const MAX_DATA_PAYLOAD: usize = (1 << 24) - 1;

/// The head of a data frame carrying `length` bytes.
pub fn data_head(stream_id: u32, flags: u8, length: usize) -> [u8; HEADER_LEN] {
    let mut head = [0u8; HEADER_LEN];
    head[..4].copy_from_slice(&(stream_id & STREAM_ID_MASK).to_be_bytes());
    head[4] = flags;
    head[5..].copy_from_slice(&(length as u32).to_be_bytes()[1..]);
    head
}

/// Checks a control frame's head before its payload is read.
pub fn check_control(version: u16, length: usize) -> Result<(), FrameError> {
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    if length > MAX_CONTROL_FRAME {
        return Err(FrameError::TooLarge(length));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(control: Control) {
        let wire = control.encode();
        let head: [u8; 8] = wire[..8].try_into().unwrap();
        let FrameHead::Control {
            version,
            kind,
            flags,
            length,
        } = FrameHead::parse(&head)
        else {
            panic!("not a control frame")
        };
        assert_eq!(version, 3);
        assert_eq!(length, wire.len() - 8);
        assert_eq!(
            Control::parse(kind, flags, wire.slice(8..)).unwrap(),
            control
        );
    }

    #[test]
    fn control_frames_match_the_spec_layout() {
        // RST_STREAM stream 5, CANCEL: 80 03 00 03 | 00 | 00 00 08 | id | status
        let rst = Control::RstStream {
            stream_id: 5,
            status: rst::CANCEL,
        };
        assert_eq!(
            &rst.encode()[..],
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 5]
        );
        // PING id 1.
        assert_eq!(
            &Control::Ping(1).encode()[..],
            &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]
        );
        // WINDOW_UPDATE stream 1, delta 0x10000.
        assert_eq!(
            &Control::WindowUpdate {
                stream_id: 1,
                delta: 0x10000
            }
            .encode()[..],
            &[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 1, 0, 0]
        );
        // GOAWAY last good 7, PROTOCOL_ERROR.
        assert_eq!(
            &Control::GoAway {
                last_good_stream_id: 7,
                status: goaway::PROTOCOL_ERROR
            }
            .encode()[..],
            &[0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 1]
        );
        // SETTINGS with one entry: initial window 65536.
        assert_eq!(
            &Control::Settings(vec![(SETTINGS_INITIAL_WINDOW_SIZE, 65536)]).encode()[..],
            &[0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 7, 0, 1, 0, 0]
        );
    }

    #[test]
    fn syn_stream_parses_from_bytes() {
        // SYN_STREAM, FIN, stream 3, associated 0, priority 2, block "xy".
        let wire = [
            0x80, 3, 0, 1, 1, 0, 0, 12, 0, 0, 0, 3, 0, 0, 0, 0, 0x40, 0, b'x', b'y',
        ];
        let head = FrameHead::parse(wire[..8].try_into().unwrap());
        assert_eq!(
            head,
            FrameHead::Control {
                version: 3,
                kind: kind::SYN_STREAM,
                flags: FLAG_FIN,
                length: 12
            }
        );
        let parsed = Control::parse(
            kind::SYN_STREAM,
            FLAG_FIN,
            Bytes::copy_from_slice(&wire[8..]),
        )
        .unwrap();
        assert_eq!(
            parsed,
            Control::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 2,
                flags: FLAG_FIN,
                header_block: Bytes::from_static(b"xy"),
            }
        );
        round_trip(parsed);
    }

    #[test]
    fn every_kind_round_trips() {
        for control in [
            Control::SynReply {
                stream_id: 9,
                flags: 0,
                header_block: Bytes::from_static(b"abc"),
            },
            Control::Headers {
                stream_id: 1,
                flags: FLAG_FIN,
                header_block: Bytes::new(),
            },
            Control::Settings(vec![(4, 100), (7, 1 << 20)]),
            Control::GoAway {
                last_good_stream_id: 0,
                status: goaway::OK,
            },
        ] {
            round_trip(control);
        }
    }

    #[test]
    fn data_head_and_bad_frames() {
        let head = data_head(3, FLAG_FIN, 0x012345);
        assert_eq!(head, [0, 0, 0, 3, 1, 0x01, 0x23, 0x45]);
        assert_eq!(
            FrameHead::parse(&head),
            FrameHead::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                length: 0x012345
            }
        );
        assert_eq!(check_control(2, 8), Err(FrameError::Version(2)));
        assert!(matches!(
            check_control(3, MAX_CONTROL_FRAME + 1),
            Err(FrameError::TooLarge(_))
        ));
        assert!(Control::parse(kind::RST_STREAM, 0, Bytes::from_static(&[0, 0, 0])).is_err());
        // A SETTINGS count that does not match the length.
        assert!(Control::parse(
            kind::SETTINGS,
            0,
            Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1])
        )
        .is_err());
        assert_eq!(
            Control::parse(77, 0, Bytes::new()).unwrap(),
            Control::Unknown(77)
        );
    }
}
