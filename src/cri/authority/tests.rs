//! The wrapper as h2 meets it: frames in, frames out, and tonic serving
//! an old client through it.

use std::task::Waker;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codegen::{http, Service};

use loona_hpack::Decoder;

use super::rewrite::encode::*;
use super::*;

const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = FLAG_END_STREAM;
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
    output
}

/// A frame of the wrapper's output.
#[derive(Debug, PartialEq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream_id: u32,
    payload: Vec<u8>,
}

/// Splits a connection (after the preface) into frames.
fn frames_of(connection: &[u8]) -> Vec<Frame> {
    let mut rest = connection.strip_prefix(PREFACE).expect("a preface");
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let header = FrameHeader::parse(&rest[..FRAME_HEADER_LEN]);
        let end = FRAME_HEADER_LEN + header.length;
        frames.push(Frame {
            kind: header.kind,
            flags: header.flags,
            stream_id: header.stream_id,
            payload: rest[FRAME_HEADER_LEN..end].to_vec(),
        });
        rest = &rest[end..];
    }
    frames
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// What h2 would see: the header blocks of the output, decoded in order
/// by one decoder, and the other frames unchanged.
fn served(output: &[u8]) -> (Vec<Fields>, Vec<Frame>) {
    let mut decoder = Decoder::new();
    let mut blocks = Vec::new();
    let mut others = Vec::new();
    let mut block = Vec::new();
    for frame in frames_of(output) {
        match frame.kind {
            FRAME_HEADERS | FRAME_CONTINUATION => {
                assert!(frame.payload.len() <= MAX_FRAME_PAYLOAD);
                let mut payload = &frame.payload[..];
                if frame.kind == FRAME_HEADERS && frame.flags & FLAG_PRIORITY != 0 {
                    payload = &payload[PRIORITY_LEN..];
                }
                block.extend_from_slice(payload);
                if frame.flags & FLAG_END_HEADERS != 0 {
                    blocks.push(decoder.decode(&block).expect("h2 can decode it"));
                    block.clear();
                }
            }
            _ => others.push(frame),
        }
    }
    (blocks, others)
}

#[test]
fn socket_path_is_fixed_and_other_frames_kept() {
    for huffman in [false, true] {
        let block = [
            request_start(),
            authority(b"/run/wharf/wharf.sock", huffman),
        ]
        .concat();
        let input = connection(&[headers(1, &block), frame(DATA, END_STREAM, 1, &[0; 5])]);
        let (blocks, others) = served(&rewritten(&input));
        assert_eq!(
            blocks,
            [request_fields("-run-wharf-wharf.sock")],
            "huffman {huffman}"
        );
        assert_eq!(others, served(&input).1, "SETTINGS and DATA unchanged");
    }
}

#[test]
fn a_client_that_needs_no_fix_passes_byte_for_byte() {
    let block = [request_start(), authority(b"localhost:10250", true)].concat();
    let input = connection(&[headers(1, &block), frame(DATA, END_STREAM, 1, &[0; 5])]);
    assert_eq!(rewritten(&input), input);
}

#[test]
fn block_split_over_continuation_frames_is_fixed() {
    let block = [request_start(), authority(b"/tmp/x.sock", true)].concat();
    // The cuts fall inside the value.
    let (a, rest) = block.split_at(block.len() - 6);
    let (b, c) = rest.split_at(3);
    let input = connection(&[
        frame(FRAME_HEADERS, 0, 1, a),
        frame(FRAME_CONTINUATION, 0, 1, b),
        frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, c),
    ]);
    assert_eq!(
        served(&rewritten(&input)).0,
        [request_fields("-tmp-x.sock")]
    );
}

#[test]
fn padding_goes_and_priority_and_end_stream_stay() {
    let priority = [0x80, 0, 0, 3, 15];
    let block = [request_start(), authority(b"/x", false)].concat();
    let payload = [&[3][..], &priority, &block, b"///"].concat();
    let flags = FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM;
    let output = rewritten(&connection(&[frame(FRAME_HEADERS, flags, 1, &payload)]));
    let frames = frames_of(&output);
    let headers = frames.last().unwrap();
    assert_eq!(
        headers.flags,
        FLAG_END_HEADERS | FLAG_PRIORITY | FLAG_END_STREAM
    );
    assert_eq!(headers.payload[..PRIORITY_LEN], priority);
    assert_eq!(served(&output).0, [request_fields("-x")]);
}

#[test]
fn a_large_rewritten_block_is_cut_into_continuations() {
    // Incompressible values, so that the literals exceed one frame.
    let filler =
        |i: usize| -> Vec<u8> { (0..8000).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect() };
    let block = [
        request_start(),
        authority(b"/x", false),
        literal(
            WITHOUT_INDEXING,
            FieldName::Literal(b"x-a"),
            &filler(1),
            false,
        ),
        literal(
            WITHOUT_INDEXING,
            FieldName::Literal(b"x-b"),
            &filler(2),
            false,
        ),
        literal(
            WITHOUT_INDEXING,
            FieldName::Literal(b"x-c"),
            &filler(3),
            false,
        ),
    ]
    .concat();
    let output = rewritten(&connection(&[headers(1, &block)]));
    let frames = frames_of(&output);
    let kinds: Vec<u8> = frames.iter().skip(1).map(|f| f.kind).collect();
    assert_eq!(kinds, [FRAME_HEADERS, FRAME_CONTINUATION]);
    let (blocks, _) = served(&output);
    assert_eq!(blocks[0][3], (b":authority".to_vec(), b"-x".to_vec()));
    assert_eq!(blocks[0][6].1, filler(3));
}

#[test]
fn data_and_other_frames_pass_unchanged() {
    let lookalike = headers(1, &authority(b"/x", false));
    let input = connection(&[
        frame(DATA, 0, 1, &lookalike),
        frame(WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]),
        headers(3, &authority(b"/x", false)),
        frame(DATA, END_STREAM, 3, &[b'/'; 40_000]),
    ]);
    let (blocks, others) = served(&rewritten(&input));
    assert_eq!(blocks, [vec![(b":authority".to_vec(), b"-x".to_vec())]]);
    assert_eq!(others, served(&input).1);
}

#[test]
fn input_it_does_not_understand_passes_unchanged() {
    let bad = headers(3, &authority(b"/x", false));
    let continuation =
        |flags, stream_id, fragment: &[u8]| frame(FRAME_CONTINUATION, flags, stream_id, fragment);
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
        literal(INCREMENTAL, FieldName::Literal(b"te"), b"trailers", true),
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
