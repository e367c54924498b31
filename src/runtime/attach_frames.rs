//! The attach socket's framing, shared by the monitor and the daemon: a
//! stream of frames, each a kind byte, the payload's length (u32, big
//! endian) and the payload. The monitor sends the container's output
//! (stdout and stderr kept apart); a client sends input, the end of its
//! input, and terminal sizes. The container's exit closes the connection.

/// Kind byte and length.
pub const HEADER_LEN: usize = 5;
/// Longest payload either side sends or accepts.
pub const MAX_PAYLOAD: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Monitor to client: container output.
    Stdout,
    Stderr,
    /// Client to monitor: bytes for the container's stdin.
    Stdin,
    /// Client to monitor: the client's stdin ended (closes the container's
    /// stdin if it was created with `stdin_once`).
    StdinClose,
    /// Client to monitor: a terminal size, columns then rows (u16, big
    /// endian each).
    Resize,
}

impl FrameKind {
    fn byte(self) -> u8 {
        match self {
            FrameKind::Stdout => 1,
            FrameKind::Stderr => 2,
            FrameKind::Stdin => 3,
            FrameKind::StdinClose => 4,
            FrameKind::Resize => 5,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::Stdin,
            4 => FrameKind::StdinClose,
            5 => FrameKind::Resize,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown attach frame kind {0}")]
    UnknownKind(u8),
    #[error("attach frame of {0} bytes is longer than {MAX_PAYLOAD}")]
    TooLong(usize),
}

/// Appends one frame to `out`; `payload` must not exceed [`MAX_PAYLOAD`].
pub fn encode(kind: FrameKind, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    out.push(kind.byte());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

pub fn encode_resize(columns: u16, rows: u16, out: &mut Vec<u8>) {
    let mut payload = [0u8; 4];
    payload[..2].copy_from_slice(&columns.to_be_bytes());
    payload[2..].copy_from_slice(&rows.to_be_bytes());
    encode(FrameKind::Resize, &payload, out);
}

pub fn decode_resize(payload: &[u8]) -> Option<(u16, u16)> {
    let bytes: [u8; 4] = payload.try_into().ok()?;
    Some((
        u16::from_be_bytes([bytes[0], bytes[1]]),
        u16::from_be_bytes([bytes[2], bytes[3]]),
    ))
}

/// A frame's kind and payload length, from its header.
pub fn decode_header(header: &[u8; HEADER_LEN]) -> Result<(FrameKind, usize), FrameError> {
    let kind = FrameKind::from_byte(header[0]).ok_or(FrameError::UnknownKind(header[0]))?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLong(len));
    }
    Ok((kind, len))
}

/// The first whole frame in `buf`: its kind, its payload's range in
/// `buf`, and the bytes it takes; `None` while incomplete.
pub fn decode(
    buf: &[u8],
) -> Result<Option<(FrameKind, std::ops::Range<usize>, usize)>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let (kind, len) = decode_header(header)?;
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    Ok(Some((kind, HEADER_LEN..HEADER_LEN + len, HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_end() {
        let mut buf = Vec::new();
        encode(FrameKind::Stdin, b"hello", &mut buf);
        encode_resize(80, 24, &mut buf);
        assert_eq!(&buf[..HEADER_LEN], &[3, 0, 0, 0, 5]);
        assert_eq!(decode(&buf[..7]), Ok(None));
        let (kind, range, used) = decode(&buf).unwrap().unwrap();
        assert_eq!((kind, &buf[range]), (FrameKind::Stdin, &b"hello"[..]));
        let (kind, range, _) = decode(&buf[used..]).unwrap().unwrap();
        assert_eq!(kind, FrameKind::Resize);
        assert_eq!(decode_resize(&buf[used..][range]), Some((80, 24)));
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(decode(&[9, 0, 0, 0, 0]), Err(FrameError::UnknownKind(9)));
        assert_eq!(
            decode(&[1, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLong(u32::MAX as usize))
        );
        assert_eq!(decode_resize(b"abc"), None);
    }
}
