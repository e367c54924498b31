//! Lets old Go gRPC clients use the socket: kubelet and crictl up to 1.30
//! (grpc-go before it switched to "localhost") send the unix socket PATH
//! as the HTTP/2 `:authority`, e.g. `/run/wharf/wharf.sock`. h2, under
//! tonic, parses `:authority` as a URI authority, finds `/` and resets
//! every stream with PROTOCOL_ERROR (hyperium/h2#487, unfixed).
//!
//! [`AuthorityFix`] wraps each accepted connection and rewrites such a
//! value in what the client sends, before h2 reads it:
//! `/run/wharf/wharf.sock` becomes `-run-wharf-wharf.sock`. Nothing is
//! routed by authority, so the value only has to parse.
//!
//! The rewrite never changes a length. HPACK counts every value's length
//! into the dynamic table's size, and the client's encoder and the
//! server's decoder must agree on that size or they evict different
//! entries; a plain value keeps its bytes' count, a Huffman-coded one gets
//! codes of the same bit lengths. Header blocks are held back until
//! complete, walked with a model of the dynamic table (entry sizes, and
//! which entries are named `:authority`), and released with the same frame
//! lengths. Input the walk does not understand turns the wrapper into a
//! plain pipe for the rest of the connection, so h2 sees it unchanged and
//! rejects it itself, as it would have without the wrapper.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use hpack::{DynamicTable, Malformed};

mod hpack;
mod huffman;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_PUSH_PROMISE: u8 = 0x5;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Stream dependency and weight of a HEADERS frame with PRIORITY.
const PRIORITY_LEN: usize = 5;
/// The most one held-back header block may take: h2's default limit on a
/// header list, plus one frame header. Beyond it the wrapper gives up.
const MAX_HELD_BYTES: usize = (16 << 20) + FRAME_HEADER_LEN;
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
            this.released += this.scanner.scan(&mut this.buf[this.released..this.filled]);
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
    table: DynamicTable,
    logged: bool,
}

impl Scanner {
    fn new() -> Self {
        Scanner {
            phase: Phase::Preface,
            parsed: 0,
            held: None,
            table: DynamicTable::new(),
            logged: false,
        }
    }

    /// Takes the input not yet released, fixes what it can, and returns
    /// how many bytes from its start the reader may now have.
    fn scan(&mut self, pending: &mut [u8]) -> usize {
        let mut released = 0;
        let mut pos = self.parsed;
        loop {
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
                                let block = self.held.take().map(|b| b.fragments);
                                let fixed = self.fix_block(
                                    &mut pending[released..pos],
                                    &block.unwrap_or_default(),
                                );
                                if fixed.is_err() {
                                    self.give_up();
                                    continue;
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
        let fragment = offset + start..offset + end;
        self.held = Some(HeldBlock {
            stream_id: header.stream_id,
            fragments: vec![fragment],
        });
        Ok(())
    }

    /// Fixes the header block whose fragments lie at `fragments` in
    /// `frames`, writing the result back into the same places.
    fn fix_block(
        &mut self,
        frames: &mut [u8],
        fragments: &[Range<usize>],
    ) -> Result<(), Malformed> {
        let mut block: Vec<u8> = fragments
            .iter()
            .flat_map(|range| frames[range.clone()].iter().copied())
            .collect();
        let Some(rewrite) = self.table.fix_block(&mut block)? else {
            return Ok(());
        };
        let mut rest = &block[..];
        for range in fragments {
            let (fragment, after) = rest.split_at(range.len());
            frames[range.clone()].copy_from_slice(fragment);
            rest = after;
        }
        if !self.logged {
            self.logged = true;
            tracing::debug!(
                from = %rewrite.from,
                to = %rewrite.to,
                "rewrote the client's :authority so that h2 accepts it"
            );
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use std::task::Waker;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;
    use tonic::body::Body;
    use tonic::codegen::{http, Service};

    use super::hpack::encode::*;
    use super::*;

    const DATA: u8 = 0x0;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const WINDOW_UPDATE: u8 = 0x8;
    const END_STREAM: u8 = 0x1;
    const PROTOCOL_ERROR: u32 = 0x1;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = payload.len().to_be_bytes()[5..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream_id.to_be_bytes());
        frame.extend(payload);
        frame
    }

    fn headers(stream_id: u32, block: &[u8]) -> Vec<u8> {
        frame(FRAME_HEADERS, FLAG_END_HEADERS, stream_id, block)
    }

    fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
        [
            PREFACE.to_vec(),
            frame(SETTINGS, 0, 0, &[]),
            frames.concat(),
        ]
        .concat()
    }

    /// Hands the wrapper `input` `chunk` bytes at a time.
    struct Trickle {
        input: Vec<u8>,
        at: usize,
        chunk: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self
                .chunk
                .min(self.input.len() - self.at)
                .min(out.remaining());
            out.put_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    fn read_through(input: &[u8], chunk: usize, read_size: usize) -> Vec<u8> {
        let input = input.to_vec();
        let mut fix = AuthorityFix::new(Trickle {
            input,
            at: 0,
            chunk,
        });
        let mut cx = Context::from_waker(Waker::noop());
        let mut output = Vec::new();
        loop {
            let mut buf = vec![0; read_size];
            let mut buf = ReadBuf::new(&mut buf);
            let Poll::Ready(result) = Pin::new(&mut fix).poll_read(&mut cx, &mut buf) else {
                panic!("the input never blocks");
            };
            result.unwrap();
            if buf.filled().is_empty() {
                return output;
            }
            output.extend(buf.filled());
        }
    }

    /// The wrapper's output, the same however the input arrives and is read.
    fn rewritten(input: &[u8]) -> Vec<u8> {
        let output = read_through(input, usize::MAX, 1 << 16);
        for (chunk, read_size) in [(1, 7), (5, 3), (100, 1)] {
            assert_eq!(
                read_through(input, chunk, read_size),
                output,
                "chunk {chunk}"
            );
        }
        assert_eq!(output.len(), input.len());
        output
    }

    #[test]
    fn socket_path_is_fixed_in_place_and_frame_lengths_kept() {
        for huffman in [false, true] {
            let request = |value: &[u8]| {
                let block = [request_start(), authority(value, huffman)].concat();
                connection(&[headers(1, &block), frame(DATA, END_STREAM, 1, &[0; 5])])
            };
            let output = rewritten(&request(b"/run/wharf/wharf.sock"));
            assert_eq!(
                output,
                request(b"-run-wharf-wharf.sock"),
                "huffman {huffman}"
            );
        }
    }

    #[test]
    fn block_split_over_continuation_frames_is_fixed() {
        let block = |value: &[u8]| {
            [
                request_start(),
                authority(value, true),
                authority(value, false),
            ]
            .concat()
        };
        // The cuts fall inside both values.
        let split = |block: Vec<u8>| {
            let (a, rest) = block.split_at(block.len() - 12);
            let (b, c) = rest.split_at(5);
            connection(&[
                frame(FRAME_HEADERS, 0, 1, a),
                frame(FRAME_CONTINUATION, 0, 1, b),
                frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, c),
            ])
        };
        assert_eq!(
            rewritten(&split(block(b"/tmp/x.sock"))),
            split(block(b"-tmp-x.sock"))
        );
    }

    #[test]
    fn padded_prioritised_headers_are_fixed_around_padding() {
        let padded = |value: &[u8]| {
            let priority = [0x80, 0, 0, 3, 15];
            let payload = [&[3][..], &priority, &authority(value, false), b"///"].concat();
            let flags = FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY;
            connection(&[frame(FRAME_HEADERS, flags, 1, &payload)])
        };
        assert_eq!(rewritten(&padded(b"/x")), padded(b"-x"));
    }

    #[test]
    fn data_and_other_frames_pass_unchanged() {
        let lookalike = headers(1, &authority(b"/x", false));
        let with_authority = |value: &[u8]| {
            connection(&[
                frame(DATA, 0, 1, &lookalike),
                frame(WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]),
                headers(3, &authority(value, false)),
                frame(DATA, END_STREAM, 3, &[b'/'; 40_000]),
            ])
        };
        assert_eq!(rewritten(&with_authority(b"/x")), with_authority(b"-x"));
    }

    #[test]
    fn input_it_does_not_understand_passes_unchanged() {
        let bad = headers(3, &authority(b"/x", false));
        let continuation = |flags, stream_id, fragment: &[u8]| {
            frame(FRAME_CONTINUATION, flags, stream_id, fragment)
        };
        let open_block = frame(FRAME_HEADERS, 0, 1, &[0x83]);
        let cases = [
            [&b"GET / HTTP/1.1\r\nHost: /x\r\n\r\n"[..], &bad].concat(),
            connection(&[continuation(FLAG_END_HEADERS, 1, &[0x83]), bad.clone()]),
            connection(&[open_block.clone(), frame(DATA, 0, 1, &[]), bad.clone()]),
            connection(&[
                open_block,
                continuation(FLAG_END_HEADERS, 3, &[]),
                bad.clone(),
            ]),
            connection(&[headers(1, &indexed(0)), bad.clone()]),
            connection(&[
                frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &[9, 0x83]),
                bad.clone(),
            ]),
            connection(&[
                frame(FRAME_PUSH_PROMISE, FLAG_END_HEADERS, 1, &[0, 0, 0, 2]),
                bad.clone(),
            ]),
            // Cut off inside a frame: released at the end of input as it is.
            connection(&[bad[..bad.len() - 1].to_vec()]),
        ];
        for (case, input) in cases.iter().enumerate() {
            assert_eq!(&rewritten(input), input, "case {case}");
        }
    }

    /// A gRPC service that records the authority of each call.
    #[derive(Clone)]
    struct RecordAuthority(mpsc::UnboundedSender<String>);

    impl tonic::server::NamedService for RecordAuthority {
        const NAME: &'static str = "runtime.v1.RuntimeService";
    }

    impl Service<http::Request<Body>> for RecordAuthority {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let authority = request.uri().authority().map(|a| a.to_string());
            let _ = self.0.send(authority.unwrap_or_default());
            let mut response = http::Response::new(Body::empty());
            let headers = response.headers_mut();
            headers.insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", http::HeaderValue::from_static("0"));
            std::future::ready(Ok(response))
        }
    }

    /// Two Version calls as grpc-go before 1.31 sends them on a unix
    /// socket: `:authority` is the path, Huffman-coded, and the second
    /// call refers to the first's dynamic table entries.
    fn old_go_client_calls() -> Vec<u8> {
        let first = [
            request_start(),
            authority(b"/tmp/x.sock", true),
            literal(INCREMENTAL, FieldName::Index(31), b"application/grpc", true),
            literal(
                INCREMENTAL,
                FieldName::Literal(b"te", false),
                b"trailers",
                true,
            ),
        ]
        .concat();
        // Newest first: te, content-type, :authority, :path.
        let second: Vec<u8> = [vec![0x83, 0x86], indexed(FIRST_DYNAMIC + 3)]
            .into_iter()
            .chain((0..3).rev().map(|age| indexed(FIRST_DYNAMIC + age)))
            .flatten()
            .collect();
        let empty_message = [0; 5];
        connection(&[
            headers(1, &first),
            frame(DATA, END_STREAM, 1, &empty_message),
            headers(3, &second),
            frame(DATA, END_STREAM, 3, &empty_message),
        ])
    }

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Answered,
        Reset(u32),
        GoAway(u32),
    }

    /// Serves the old client's calls with tonic; returns how each stream
    /// ended and the authorities the service saw.
    async fn serve_old_go_client(wrapped: bool) -> (Vec<Outcome>, Vec<String>) {
        let (mut client, server_io) = tokio::io::duplex(1 << 16);
        let (seen, mut seen_rx) = mpsc::unbounded_channel();
        let router = tonic::transport::Server::builder().add_service(RecordAuthority(seen));
        let server = if wrapped {
            let incoming = tokio_stream::once(Ok::<_, io::Error>(AuthorityFix::new(server_io)));
            tokio::spawn(router.serve_with_incoming(incoming))
        } else {
            let incoming = tokio_stream::once(Ok::<_, io::Error>(server_io));
            tokio::spawn(router.serve_with_incoming(incoming))
        };
        client.write_all(&old_go_client_calls()).await.unwrap();
        let outcomes = tokio::time::timeout(Duration::from_secs(10), outcomes(&mut client, 2));
        let outcomes = outcomes.await.expect("the server answers both calls");
        server.abort();
        let mut authorities = Vec::new();
        while let Ok(authority) = seen_rx.try_recv() {
            authorities.push(authority);
        }
        (outcomes, authorities)
    }

    /// Reads the server's frames until streams 1, 3, ... up to `calls`
    /// have each been answered or reset.
    async fn outcomes(client: &mut DuplexStream, calls: usize) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = (0..calls).map(|_| None).collect();
        while outcomes.iter().any(Option::is_none) {
            let mut header = [0; FRAME_HEADER_LEN];
            client.read_exact(&mut header).await.unwrap();
            let header = FrameHeader::parse(&header);
            let mut payload = vec![0; header.length];
            client.read_exact(&mut payload).await.unwrap();
            let code = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
            let outcome = match header.kind {
                FRAME_HEADERS => Outcome::Answered,
                RST_STREAM => Outcome::Reset(code(0)),
                GOAWAY => {
                    let outcome = || Some(Outcome::GoAway(code(4)));
                    outcomes
                        .iter_mut()
                        .filter(|o| o.is_none())
                        .for_each(|o| *o = outcome());
                    continue;
                }
                _ => continue,
            };
            let call = (header.stream_id as usize).saturating_sub(1) / 2;
            if let Some(slot @ None) = outcomes.get_mut(call) {
                *slot = Some(outcome);
            }
        }
        outcomes.into_iter().flatten().collect()
    }

    #[tokio::test]
    async fn h2_resets_an_old_go_clients_calls_without_the_fix() {
        let (outcomes, authorities) = serve_old_go_client(false).await;
        let reset = || Outcome::Reset(PROTOCOL_ERROR);
        assert_eq!(outcomes, [reset(), reset()]);
        assert!(authorities.is_empty());
    }

    #[tokio::test]
    async fn tonic_serves_an_old_go_clients_calls_with_the_fix() {
        let (outcomes, authorities) = serve_old_go_client(true).await;
        assert_eq!(outcomes, [Outcome::Answered, Outcome::Answered]);
        assert_eq!(authorities, ["-tmp-x.sock", "-tmp-x.sock"]);
    }
}
