//! The reading side of a SPDY connection: parses frames, answers the
//! control frames, feeds each stream's inbound pipe and hands new
//! streams to the session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn::{IncomingStream, Limits, Outgoing, Shared, StreamState, PIPE_BYTES};
use super::frame::{self, goaway, rst, Control, FrameHead, FLAG_FIN, FLAG_UNIDIRECTIONAL};
use super::headers::{Decompressor, Headers};

/// The reader's own view of a stream.
struct Inbound {
    /// Where the peer's data goes; `None` once it sent FIN or the
    /// session dropped its end (the data is then discarded).
    pipe: Option<DuplexStream>,
    /// The peer may still send (no FIN yet).
    remote_open: bool,
    state: Arc<StreamState>,
}

pub(super) struct Reader {
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
    pub(super) fn new(
        shared: Arc<Shared>,
        incoming: mpsc::Sender<IncomingStream>,
        initial_window: i64,
        limits: Limits,
    ) -> Self {
        Reader {
            shared,
            incoming,
            decompressor: Decompressor::new(),
            streams: HashMap::new(),
            last_stream_id: 0,
            initial_window,
            limits,
        }
    }

    pub(super) async fn run<R: AsyncRead + Unpin>(mut self, read: R) {
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
        let stream =
            IncomingStream::new(stream_id, headers, inbound, state, Arc::clone(&self.shared));
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
