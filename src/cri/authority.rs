//! Lets old Go gRPC clients use the socket: kubelet and crictl up to 1.30
//! (grpc-go before it switched to "localhost") send the unix socket PATH
//! as the HTTP/2 `:authority`, e.g. `/run/wharf/wharf.sock`. h2, under
//! tonic, parses `:authority` as a URI authority, finds `/` and resets
//! every stream with PROTOCOL_ERROR (hyperium/h2#487, unfixed).
//!
//! [`AuthorityFix`] wraps each accepted connection and rewrites such a
//! value in what the client sends, before h2 reads it:
//! `/run/wharf/wharf.sock` becomes `-run-wharf-wharf.sock`. Header blocks
//! are held back until complete, decoded and, where needed, encoded again
//! ([`rewrite`]), and sent on in HEADERS and CONTINUATION frames of at
//! most the protocol's minimum frame size. Input the walk does not
//! understand turns the wrapper into a plain pipe for the rest of the
//! connection, so h2 sees it unchanged and rejects it itself, as it would
//! have without the wrapper.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use rewrite::{HeaderBlocks, Malformed};

mod rewrite;
#[cfg(test)]
mod tests;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_PUSH_PROMISE: u8 = 0x5;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
const FLAG_END_STREAM: u8 = 0x1;
/// Stream dependency and weight of a HEADERS frame with PRIORITY.
const PRIORITY_LEN: usize = 5;
/// SETTINGS_MAX_FRAME_SIZE's least value (RFC 9113 §6.5.2): every server
/// takes frames this large, so re-encoded blocks are cut to it.
const MAX_FRAME_PAYLOAD: usize = 1 << 14;
/// The most one held-back header block may take, its frames' headers and
/// padding included. A CRI call's headers take well under 1 KiB; beyond
/// this the wrapper gives up and h2 judges the block itself.
const MAX_HELD_BYTES: usize = 1 << 20;
const READ_CHUNK: usize = 16 << 10;

/// Wraps an accepted connection and rewrites what the client sends so
/// that h2 accepts a socket path as `:authority`. Writes pass through.
pub struct AuthorityFix<S> {
    inner: S,
    /// Bytes read from `inner`: `..consumed` already returned to the
    /// reader, `consumed..released` ready for it, `released..filled` held
    /// back (an unfinished frame or header block), `filled..` spare.
    buf: Vec<u8>,
    consumed: usize,
    released: usize,
    filled: usize,
    eof: bool,
    scanner: Scanner,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            buf: Vec::new(),
            consumed: 0,
            released: 0,
            filled: 0,
            eof: false,
            scanner: Scanner::new(),
        }
    }

    /// Drops what the reader has taken and makes room for one more read.
    fn make_room(&mut self) {
        self.buf.copy_within(self.consumed..self.filled, 0);
        self.filled -= self.consumed;
        self.released -= self.consumed;
        self.consumed = 0;
        if self.filled == 0 && self.buf.len() > 4 * READ_CHUNK {
            // Grown for a large header block: give it back.
            self.buf = Vec::new();
        }
        if self.buf.len() < self.filled + READ_CHUNK {
            self.buf.resize(self.filled + READ_CHUNK, 0);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.consumed < this.released || this.eof || out.remaining() == 0 {
                let n = out.remaining().min(this.released - this.consumed);
                out.put_slice(&this.buf[this.consumed..this.consumed + n]);
                this.consumed += n;
                return Poll::Ready(Ok(()));
            }
            if this.scanner.phase == Phase::Passthrough && this.consumed == this.filled {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.make_room();
            let mut spare = ReadBuf::new(&mut this.buf[this.filled..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut spare))?;
            let read = spare.filled().len();
            if read == 0 {
                // An unfinished frame goes to h2 as it is, to reject.
                this.eof = true;
                this.released = this.filled;
                continue;
            }
            this.filled += read;
            this.released += this
                .scanner
                .scan(&mut this.buf, this.released, &mut this.filled);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Preface,
    FrameHeader,
    /// Inside the payload of a frame that carries no header block.
    Payload(usize),
    Passthrough,
}

/// The frames of a header block seen so far, before END_HEADERS.
struct HeldBlock {
    stream_id: u32,
    /// The HEADERS frame's END_STREAM flag and PRIORITY fields, kept when
    /// the block is sent again in new frames.
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
    /// Where the block's fragments are, from the first frame's start.
    fragments: Vec<Range<usize>>,
}

/// Walks the client's frames and fixes complete header blocks in place.
struct Scanner {
    phase: Phase,
    /// How much of the pending input is already parsed: the frames of the
    /// held block.
    parsed: usize,
    held: Option<HeldBlock>,
    blocks: HeaderBlocks,
    logged: bool,
}

impl Scanner {
    fn new() -> Self {
        Scanner {
            phase: Phase::Preface,
            parsed: 0,
            held: None,
            blocks: HeaderBlocks::new(),
            logged: false,
        }
    }

    /// Takes the input not yet released, `buf[start..*filled]`, fixes what
    /// it can (a fixed header block may change `*filled`), and returns how
    /// many bytes from `start` the reader may now have.
    fn scan(&mut self, buf: &mut Vec<u8>, start: usize, filled: &mut usize) -> usize {
        let mut released = 0;
        let mut pos = self.parsed;
        loop {
            let pending = &buf[start..*filled];
            match self.phase {
                Phase::Passthrough => {
                    released = pending.len();
                    pos = released;
                    break;
                }
                Phase::Preface => {
                    if pending.len() < PREFACE.len() {
                        break;
                    }
                    if &pending[..PREFACE.len()] != PREFACE {
                        self.give_up();
                        continue;
                    }
                    pos = PREFACE.len();
                    released = pos;
                    self.phase = Phase::FrameHeader;
                }
                Phase::Payload(remaining) => {
                    let n = remaining.min(pending.len() - pos);
                    pos += n;
                    released = pos;
                    if n < remaining {
                        self.phase = Phase::Payload(remaining - n);
                        break;
                    }
                    self.phase = Phase::FrameHeader;
                }
                Phase::FrameHeader => {
                    let Some(header) = pending.get(pos..pos + FRAME_HEADER_LEN) else {
                        break;
                    };
                    let header = FrameHeader::parse(header);
                    let frame_end = pos + FRAME_HEADER_LEN + header.length;
                    match header.kind {
                        FRAME_HEADERS | FRAME_CONTINUATION => {
                            if frame_end - released > MAX_HELD_BYTES {
                                self.give_up();
                                continue;
                            }
                            if pending.len() < frame_end {
                                break;
                            }
                            let payload_start = pos + FRAME_HEADER_LEN;
                            let held = self.hold(
                                &header,
                                &pending[payload_start..frame_end],
                                payload_start - released,
                            );
                            if held.is_err() {
                                self.give_up();
                                continue;
                            }
                            pos = frame_end;
                            if header.flags & FLAG_END_HEADERS != 0 {
                                let Some(held) = self.held.take() else {
                                    self.give_up();
                                    continue;
                                };
                                let frames = start + released..start + pos;
                                let Ok(fixed) = self.fix_block(&buf[frames.clone()], &held) else {
                                    self.give_up();
                                    continue;
                                };
                                if let Some(fixed) = fixed {
                                    pos = released + fixed.len();
                                    *filled = *filled - frames.len() + fixed.len();
                                    buf.splice(frames, fixed);
                                }
                                released = pos;
                            }
                        }
                        // A client must not push; h2 ends the connection.
                        FRAME_PUSH_PROMISE => self.give_up(),
                        _ if self.held.is_some() => self.give_up(),
                        _ => {
                            pos += FRAME_HEADER_LEN;
                            released = pos;
                            self.phase = Phase::Payload(header.length);
                        }
                    }
                }
            }
        }
        self.parsed = pos - released;
        released
    }

    fn give_up(&mut self) {
        self.phase = Phase::Passthrough;
        self.held = None;
    }

    /// Records where a HEADERS or CONTINUATION frame's fragment is;
    /// `offset` is where its payload starts, from the block's start.
    fn hold(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        offset: usize,
    ) -> Result<(), Malformed> {
        if header.kind == FRAME_CONTINUATION {
            let held = self.held.as_mut().ok_or(Malformed)?;
            if held.stream_id != header.stream_id {
                return Err(Malformed);
            }
            held.fragments.push(offset..offset + payload.len());
            return Ok(());
        }
        if self.held.is_some() {
            return Err(Malformed);
        }
        let mut start = 0;
        let mut end = payload.len();
        if header.flags & FLAG_PADDED != 0 {
            let padding = *payload.first().ok_or(Malformed)? as usize;
            start = 1;
            end = end.checked_sub(padding).ok_or(Malformed)?;
        }
        if header.flags & FLAG_PRIORITY != 0 {
            start += PRIORITY_LEN;
        }
        if start > end {
            return Err(Malformed);
        }
        let priority = (header.flags & FLAG_PRIORITY != 0)
            .then(|| payload[start - PRIORITY_LEN..start].try_into().ok())
            .flatten();
        let fragment = offset + start..offset + end;
        self.held = Some(HeldBlock {
            stream_id: header.stream_id,
            end_stream: header.flags & FLAG_END_STREAM != 0,
            priority,
            fragments: vec![fragment],
        });
        Ok(())
    }

    /// Decodes the header block held in `frames`; returns the frames to
    /// send instead when it had to change.
    fn fix_block(&mut self, frames: &[u8], held: &HeldBlock) -> Result<Option<Vec<u8>>, Malformed> {
        let block: Vec<u8> = held
            .fragments
            .iter()
            .flat_map(|range| frames[range.clone()].iter().copied())
            .collect();
        let Some(fixed) = self.blocks.rewrite(&block)? else {
            return Ok(None);
        };
        if let Some(rewrite) = fixed.rewrite.filter(|_| !self.logged) {
            self.logged = true;
            tracing::debug!(
                from = %rewrite.from,
                to = %rewrite.to,
                "rewrote the client's :authority so that h2 accepts it"
            );
        }
        Ok(Some(header_frames(&fixed.block, held)))
    }
}

/// `block` in a HEADERS frame and as many CONTINUATION frames as it
/// needs, none larger than every server takes; no padding.
fn header_frames(block: &[u8], held: &HeldBlock) -> Vec<u8> {
    let priority = held.priority.as_ref().map_or(&[][..], |p| &p[..]);
    let first_len = block.len().min(MAX_FRAME_PAYLOAD - priority.len());
    let (first, rest) = block.split_at(first_len);
    let mut kind = FRAME_HEADERS;
    let mut flags = if held.end_stream { FLAG_END_STREAM } else { 0 };
    if !priority.is_empty() {
        flags |= FLAG_PRIORITY;
    }
    let mut out = Vec::with_capacity(block.len() + 2 * FRAME_HEADER_LEN + priority.len());
    let mut chunks = std::iter::once(first)
        .chain(rest.chunks(MAX_FRAME_PAYLOAD))
        .peekable();
    let mut prefix = priority;
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= FLAG_END_HEADERS;
        }
        let length = prefix.len() + chunk.len();
        out.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
        out.extend([kind, flags]);
        out.extend(held.stream_id.to_be_bytes());
        out.extend_from_slice(prefix);
        out.extend_from_slice(chunk);
        (kind, flags, prefix) = (FRAME_CONTINUATION, 0, &[]);
    }
    out
}

struct FrameHeader {
    length: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    fn parse(header: &[u8]) -> Self {
        FrameHeader {
            length: usize::from(header[0]) << 16
                | usize::from(header[1]) << 8
                | usize::from(header[2]),
            kind: header[3],
            flags: header[4],
            stream_id: u32::from_be_bytes([header[5], header[6], header[7], header[8]])
                & 0x7fff_ffff,
        }
    }
}
