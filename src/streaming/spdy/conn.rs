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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frame::{self, goaway, rst, Control, FLAG_FIN};
use super::headers::{Compressor, Headers};
use super::reader::Reader;
use crate::streaming::idle::IdleClock;

/// Bytes buffered per direction of a stream, between socket and session.
pub(super) const PIPE_BYTES: usize = 32 << 10;
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
    pub(super) fn new(
        id: u32,
        headers: Headers,
        inbound: DuplexStream,
        state: Arc<StreamState>,
        shared: Arc<Shared>,
    ) -> Self {
        IncomingStream {
            id,
            headers,
            inbound: Some(inbound),
            state,
            shared,
            answered: false,
        }
    }

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
        let reader = Reader::new(Arc::clone(&shared), incoming_tx, INITIAL_WINDOW, limits);
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

pub(super) enum Outgoing {
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

pub(super) struct Shared {
    pub(super) out: mpsc::Sender<Outgoing>,
    pub(super) cancel: CancellationToken,
    pub(super) flow_control: AtomicBool,
    pub(super) session_window: Mutex<i64>,
    pub(super) window_changed: Notify,
    pub(super) idle: IdleClock,
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
pub(super) struct StreamState {
    pub(super) window: Mutex<i64>,
    /// The peer reset the stream.
    pub(super) reset: CancellationToken,
    /// This side finished with it (FIN sent, refused or reset).
    pub(super) local_done: AtomicBool,
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
