//! One SPDY/3.1 server connection: a reader task that parses frames and
//! feeds each stream's inbound pipe, a writer task that owns the socket's
//! write half and the header compressor, and one pump per accepted stream
//! that turns what the session writes into DATA frames.
//!
//! Flow control: the peer's windows are always tracked, but only enforced
//! once the peer shows it does flow control (sends a WINDOW_UPDATE):
//! Go's spdystream, which kubectl, kubelet and crictl use, never sends one
//! and relies on TCP back-pressure instead. Inbound data is bounded the
//! same way: the reader stops reading the socket while a stream's pipe is
//! full, and sends WINDOW_UPDATEs as the pipe accepts data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frame::{self, goaway, rst, Control, FrameHead, FLAG_FIN, FLAG_UNIDIRECTIONAL};
use super::headers::{Compressor, Decompressor, Headers};
use crate::streaming::idle::IdleClock;

/// Bytes buffered per direction of a stream, between socket and session.
const PIPE_BYTES: usize = 32 << 10;
/// The largest DATA frame this side writes.
const MAX_WRITE_CHUNK: usize = 32 << 10;
/// SPDY's initial window, for streams and the session.
const INITIAL_WINDOW: i64 = 64 << 10;
/// Frames queued for the writer.
const WRITE_QUEUE: usize = 64;
/// Streams the peer opened and not yet accepted by the session.
const INCOMING_QUEUE: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Streams open at once; more are refused with RST_STREAM.
    pub max_streams: usize,
    /// No frame read or written for this long ends the connection.
    pub idle_timeout: Duration,
}

/// A stream the peer opened: accept it (SYN_REPLY) or refuse it.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    inbound: Option<DuplexStream>,
    state: Arc<StreamState>,
    shared: Arc<Shared>,
    answered: bool,
}

/// An accepted stream: `input` reads what the peer sends (EOF at its
/// FIN), `output` writes to the peer (shut it down or drop it to FIN).
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub input: DuplexStream,
    pub output: DuplexStream,
}

impl IncomingStream {
    pub fn accept(mut self) -> Stream {
        self.answered = true;
        let (output, pump_end) = tokio::io::duplex(PIPE_BYTES);
        let reply = Outgoing::Reply { stream_id: self.id };
        // The reply goes before any data the pump sends: both use the queue.
        let shared = Arc::clone(&self.shared);
        let state = Arc::clone(&self.state);
        let id = self.id;
        let cancel = shared.cancel.child_token();
        let tracker = shared.pumps.clone();
        tracker.spawn(async move {
            if shared.out.send(reply).await.is_ok() {
                pump(id, pump_end, &shared, &state, cancel).await;
            }
            state.local_done.store(true, Ordering::Release);
        });
        let input = self
            .inbound
            .take()
            .unwrap_or_else(|| tokio::io::duplex(1).0);
        Stream {
            id: self.id,
            headers: std::mem::take(&mut self.headers),
            input,
            output,
        }
    }

    pub fn refuse(mut self) {
        self.answered = true;
        self.reset(rst::REFUSED_STREAM);
    }

    fn reset(&self, status: u32) {
        self.state.local_done.store(true, Ordering::Release);
        // Best effort: a full queue means the peer is not reading anyway.
        let _ = self
            .shared
            .out
            .try_send(Outgoing::Control(Control::RstStream {
                stream_id: self.id,
                status,
            }));
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if !self.answered {
            self.reset(rst::CANCEL);
        }
    }
}

/// The server side of a SPDY connection.
pub struct Connection {
    incoming: mpsc::Receiver<IncomingStream>,
    shared: Arc<Shared>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl Connection {
    pub fn start<T>(io: T, limits: Limits) -> Connection
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(WRITE_QUEUE);
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
        let shared = Arc::new(Shared {
            out: out_tx,
            cancel: CancellationToken::new(),
            flow_control: AtomicBool::new(false),
            session_window: Mutex::new(INITIAL_WINDOW),
            window_changed: Notify::new(),
            idle: IdleClock::new(),
            pumps: TaskTracker::new(),
        });
        let writer = tokio::spawn(write_loop(write, out_rx, Arc::clone(&shared)));
        let reader = Reader {
            shared: Arc::clone(&shared),
            incoming: incoming_tx,
            decompressor: Decompressor::new(),
            streams: HashMap::new(),
            last_stream_id: 0,
            initial_window: INITIAL_WINDOW,
            limits,
        };
        tokio::spawn(reader.run(read));
        Connection {
            incoming,
            shared,
            writer: Some(writer),
        }
    }

    /// The next stream the peer opens; `None` once the connection is gone.
    pub async fn next_stream(&mut self) -> Option<IncomingStream> {
        tokio::select! {
            stream = self.incoming.recv() => stream,
            _ = self.shared.cancel.cancelled() => None,
        }
    }

    /// Ends the connection: what the sessions wrote is sent (for at most
    /// `grace`), then GOAWAY, then the socket is closed.
    pub async fn close(mut self, grace: Duration) {
        self.incoming.close();
        let shared = Arc::clone(&self.shared);
        shared.pumps.close();
        let deadline = tokio::time::Instant::now() + grace;
        let _ = tokio::time::timeout_at(deadline, shared.pumps.wait()).await;
        let _ = shared
            .out
            .send_timeout(Outgoing::GoAway(goaway::OK), grace)
            .await;
        if let Some(mut writer) = self.writer.take() {
            if tokio::time::timeout(grace, &mut writer).await.is_err() {
                writer.abort();
            }
        }
        shared.cancel.cancel();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

enum Outgoing {
    Control(Control),
    Reply {
        stream_id: u32,
    },
    Data {
        stream_id: u32,
        data: Bytes,
        fin: bool,
    },
    GoAway(u32),
}

struct Shared {
    out: mpsc::Sender<Outgoing>,
    cancel: CancellationToken,
    flow_control: AtomicBool,
    session_window: Mutex<i64>,
    window_changed: Notify,
    idle: IdleClock,
    /// One task per accepted stream; `close` waits for them to send FIN.
    pumps: TaskTracker,
}

impl Shared {
    /// Takes up to `want` bytes of send window of `state` and of the
    /// session; waits while either is exhausted (if the peer does flow
    /// control). `None` when the stream or connection ended meanwhile.
    async fn reserve(
        &self,
        state: &StreamState,
        want: usize,
        cancel: &CancellationToken,
    ) -> Option<usize> {
        loop {
            let notified = self.window_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut stream = state.window.lock().unwrap();
                let mut session = self.session_window.lock().unwrap();
                let available = (*stream).min(*session);
                let enforced = self.flow_control.load(Ordering::Acquire);
                if !enforced || available > 0 {
                    let take = if enforced {
                        want.min(available as usize)
                    } else {
                        want
                    };
                    *stream -= take as i64;
                    *session -= take as i64;
                    return Some(take);
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = cancel.cancelled() => return None,
            }
        }
    }
}

/// What both the reader and a stream's pump know of it.
struct StreamState {
    window: Mutex<i64>,
    /// The peer reset the stream.
    reset: CancellationToken,
    /// This side finished with it (FIN sent, refused or reset).
    local_done: AtomicBool,
}

/// Copies what the session writes to `source` into DATA frames; FIN at EOF.
async fn pump(
    stream_id: u32,
    mut source: DuplexStream,
    shared: &Shared,
    state: &StreamState,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_WRITE_CHUNK];
    loop {
        let read = tokio::select! {
            read = source.read(&mut buf) => read,
            _ = cancel.cancelled() => return,
            _ = state.reset.cancelled() => return,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = shared
                    .out
                    .send(Outgoing::Data {
                        stream_id,
                        data: Bytes::new(),
                        fin: true,
                    })
                    .await;
                return;
            }
            Ok(n) => n,
        };
        let mut sent = 0;
        while sent < n {
            let Some(take) = shared.reserve(state, n - sent, &cancel).await else {
                return;
            };
            let data = Bytes::copy_from_slice(&buf[sent..sent + take]);
            let frame = Outgoing::Data {
                stream_id,
                data,
                fin: false,
            };
            tokio::select! {
                sent = shared.out.send(frame) => if sent.is_err() { return },
                _ = state.reset.cancelled() => return,
            }
            sent += take;
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    write: W,
    mut queue: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
) {
    let mut write = tokio::io::BufWriter::new(write);
    let mut compressor = Compressor::new();
    let cancel = shared.cancel.clone();
    loop {
        let next = tokio::select! {
            next = queue.recv() => next,
            _ = cancel.cancelled() => None,
        };
        let Some(next) = next else { break };
        let (bytes, last) = match next {
            Outgoing::Control(control) => (control.encode(), false),
            Outgoing::Reply { stream_id } => {
                let header_block = compressor.compress(&[]).into();
                let reply = Control::SynReply {
                    stream_id,
                    flags: 0,
                    header_block,
                };
                (reply.encode(), false)
            }
            Outgoing::Data {
                stream_id,
                data,
                fin,
            } => {
                let flags = if fin { FLAG_FIN } else { 0 };
                let head = frame::data_head(stream_id, flags, data.len());
                if write.write_all(&head).await.is_err() {
                    break;
                }
                (data, false)
            }
            Outgoing::GoAway(status) => {
                let goaway = Control::GoAway {
                    last_good_stream_id: 0,
                    status,
                };
                (goaway.encode(), true)
            }
        };
        if write.write_all(&bytes).await.is_err() {
            break;
        }
        shared.idle.touch();
        if (last || queue.is_empty()) && write.flush().await.is_err() {
            break;
        }
        if last {
            let _ = write.shutdown().await;
            break;
        }
    }
    cancel.cancel();
}

/// The reader's own view of a stream.
struct Inbound {
    /// Where the peer's data goes; `None` once it sent FIN or the
    /// session dropped its end (the data is then discarded).
    pipe: Option<DuplexStream>,
    /// The peer may still send (no FIN yet).
    remote_open: bool,
    state: Arc<StreamState>,
}

struct Reader {
    shared: Arc<Shared>,
    incoming: mpsc::Sender<IncomingStream>,
    decompressor: Decompressor,
    streams: HashMap<u32, Inbound>,
    last_stream_id: u32,
    initial_window: i64,
    limits: Limits,
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    #[error(transparent)]
    Headers(#[from] super::headers::HeaderError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, read: R) {
        let mut read = tokio::io::BufReader::new(read);
        let shared = Arc::clone(&self.shared);
        let idle = self.limits.idle_timeout;
        let watchdog = shared.idle.expired(idle);
        let result = tokio::select! {
            result = self.read_frames(&mut read) => result,
            _ = watchdog => {
                tracing::debug!("SPDY connection idle, closing");
                Ok(())
            }
            _ = shared.cancel.cancelled() => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(ReadError::Io(e)) => tracing::debug!(error = %e, "SPDY connection ended"),
            Err(e) => {
                tracing::warn!(error = %e, "SPDY protocol error, closing the connection");
                let _ = shared
                    .out
                    .send_timeout(
                        Outgoing::GoAway(goaway::PROTOCOL_ERROR),
                        Duration::from_secs(1),
                    )
                    .await;
                // Let the writer send the GOAWAY before everything stops.
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), shared.cancel.cancelled()).await;
            }
        }
        // Streams still open see EOF and broken pipes from now on.
        self.streams.clear();
        shared.cancel.cancel();
    }

    async fn read_frames<R: AsyncRead + Unpin>(&mut self, read: &mut R) -> Result<(), ReadError> {
        let mut head = [0u8; frame::HEADER_LEN];
        let mut chunk = vec![0u8; PIPE_BYTES];
        loop {
            match read.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            self.shared.idle.touch();
            match FrameHead::parse(&head) {
                FrameHead::Control {
                    version,
                    kind,
                    flags,
                    length,
                } => {
                    frame::check_control(version, length)?;
                    let mut payload = vec![0u8; length];
                    read.read_exact(&mut payload).await?;
                    let control = Control::parse(kind, flags, payload.into())?;
                    self.on_control(control).await?;
                }
                FrameHead::Data {
                    stream_id,
                    flags,
                    length,
                } => {
                    self.on_data(read, &mut chunk, stream_id, flags, length)
                        .await?;
                }
            }
        }
    }

    async fn on_data<R: AsyncRead + Unpin>(
        &mut self,
        read: &mut R,
        chunk: &mut [u8],
        stream_id: u32,
        flags: u8,
        length: usize,
    ) -> Result<(), ReadError> {
        let (known, mut pipe) = match self.streams.get_mut(&stream_id) {
            Some(inbound) if inbound.remote_open => (true, inbound.pipe.take()),
            Some(_) => {
                self.send(Control::RstStream {
                    stream_id,
                    status: rst::STREAM_ALREADY_CLOSED,
                })
                .await;
                (false, None)
            }
            None => {
                self.send(Control::RstStream {
                    stream_id,
                    status: rst::INVALID_STREAM,
                })
                .await;
                (false, None)
            }
        };
        let mut left = length;
        while left > 0 {
            let n = left.min(chunk.len());
            read.read_exact(&mut chunk[..n]).await?;
            if let Some(target) = &mut pipe {
                // The session dropped its end: discard the rest.
                if target.write_all(&chunk[..n]).await.is_err() {
                    pipe = None;
                }
            }
            left -= n;
        }
        if !known {
            return Ok(());
        }
        if length > 0 {
            let delta = length as u32;
            self.send(Control::WindowUpdate { stream_id, delta }).await;
            self.send(Control::WindowUpdate {
                stream_id: 0,
                delta,
            })
            .await;
        }
        if let Some(inbound) = self.streams.get_mut(&stream_id) {
            if flags & FLAG_FIN == 0 {
                inbound.pipe = pipe;
            } else {
                // Dropping the pipe is the session's end of file.
                inbound.remote_open = false;
            }
        }
        Ok(())
    }

    async fn on_control(&mut self, control: Control) -> Result<(), ReadError> {
        match control {
            Control::SynStream {
                stream_id,
                flags,
                header_block,
                ..
            } => {
                let headers = self.decompressor.decompress(&header_block)?;
                if stream_id % 2 == 0 || stream_id <= self.last_stream_id {
                    return Err(ReadError::Protocol(
                        "SYN_STREAM with a stream id out of order",
                    ));
                }
                self.last_stream_id = stream_id;
                self.open_stream(stream_id, flags, headers).await;
            }
            Control::SynReply { stream_id, .. } => {
                // This server opens no streams, so nothing to reply to.
                self.send(Control::RstStream {
                    stream_id,
                    status: rst::PROTOCOL_ERROR,
                })
                .await;
            }
            Control::RstStream { stream_id, .. } => {
                if let Some(inbound) = self.streams.remove(&stream_id) {
                    inbound.state.reset.cancel();
                }
            }
            Control::Settings(entries) => {
                for (id, value) in entries {
                    if id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                        let value = i64::from(value & 0x7fff_ffff);
                        let change = value - self.initial_window;
                        self.initial_window = value;
                        for inbound in self.streams.values() {
                            *inbound.state.window.lock().unwrap() += change;
                        }
                        self.shared.window_changed.notify_waiters();
                    }
                }
            }
            Control::Ping(id) => {
                // Only the peer's pings (odd ids from a client) are echoed.
                if id % 2 == 1 {
                    self.send(Control::Ping(id)).await;
                }
            }
            Control::GoAway { .. } => {
                // The peer opens no more streams; the open ones carry on.
            }
            Control::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                // Decompressed even if unused: the context must stay in step.
                self.decompressor.decompress(&header_block)?;
                match self.streams.get_mut(&stream_id) {
                    Some(inbound) if flags & FLAG_FIN != 0 => {
                        inbound.remote_open = false;
                        inbound.pipe = None;
                    }
                    Some(_) => {}
                    None => {
                        self.send(Control::RstStream {
                            stream_id,
                            status: rst::INVALID_STREAM,
                        })
                        .await
                    }
                }
            }
            Control::WindowUpdate { stream_id, delta } => {
                if delta == 0 {
                    return Err(ReadError::Protocol("WINDOW_UPDATE with a zero delta"));
                }
                self.shared.flow_control.store(true, Ordering::Release);
                if stream_id == 0 {
                    *self.shared.session_window.lock().unwrap() += i64::from(delta);
                } else if let Some(inbound) = self.streams.get(&stream_id) {
                    *inbound.state.window.lock().unwrap() += i64::from(delta);
                }
                self.shared.window_changed.notify_waiters();
            }
            Control::Unknown(kind) => tracing::debug!(kind, "ignoring unknown SPDY control frame"),
        }
        Ok(())
    }

    async fn open_stream(&mut self, stream_id: u32, flags: u8, headers: Headers) {
        self.streams.retain(|_, inbound| {
            inbound.remote_open || !inbound.state.local_done.load(Ordering::Acquire)
        });
        if self.streams.len() >= self.limits.max_streams {
            tracing::debug!(stream_id, "too many SPDY streams, refusing one");
            self.send(Control::RstStream {
                stream_id,
                status: rst::REFUSED_STREAM,
            })
            .await;
            return;
        }
        let state = Arc::new(StreamState {
            window: Mutex::new(self.initial_window),
            reset: CancellationToken::new(),
            local_done: AtomicBool::new(flags & FLAG_UNIDIRECTIONAL != 0),
        });
        let (pipe, inbound) = tokio::io::duplex(PIPE_BYTES);
        let remote_open = flags & FLAG_FIN == 0;
        self.streams.insert(
            stream_id,
            Inbound {
                pipe: remote_open.then_some(pipe),
                remote_open,
                state: Arc::clone(&state),
            },
        );
        let stream = IncomingStream {
            id: stream_id,
            headers,
            inbound: Some(inbound),
            state,
            shared: Arc::clone(&self.shared),
            answered: false,
        };
        if let Err(
            mpsc::error::TrySendError::Full(stream) | mpsc::error::TrySendError::Closed(stream),
        ) = self.incoming.try_send(stream)
        {
            stream.refuse();
        }
    }

    async fn send(&self, control: Control) {
        let _ = self.shared.out.send(Outgoing::Control(control)).await;
    }
}
