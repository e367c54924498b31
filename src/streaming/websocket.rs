//! Exec, attach and port-forward over WebSocket, framed as kubelet's
//! `wsstream` does: every message starts with its channel number (a byte;
//! in the base64 protocols an ASCII digit, the rest base64). Exec/attach
//! channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5 adds
//! channel 255, on which the client closes one of its channels
//! (`[255, 0]` closes stdin). Port-forward: channels 2i (data) and 2i+1
//! (error) for the i-th port, each opened by a frame carrying the port,
//! little-endian.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backend::{Backend, Reader, Stdio, Writer};
use super::idle::IdleClock;
use super::portforward::splice;
use super::session::{self, Wanted};

/// Exec/attach subprotocols, most preferred first; "" is a client that
/// names none (binary framing, v1 error reporting).
pub const EXEC_PROTOCOLS: [&str; 6] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "",
];
pub const PORT_FORWARD_PROTOCOLS: [&str; 4] = [
    super::tunnel::PROTOCOL,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: the client closes the channel named by the next byte.
const CLOSE_CHANNEL: u8 = 255;

const PIPE_BYTES: usize = 32 << 10;
const MAX_MESSAGE: usize = 1 << 20;
const OUT_QUEUE: usize = 32;
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// The first protocol of the client's list that `supported` has; `""`
/// when the client offered none. `None` when nothing matches.
pub fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    if offered.is_empty() {
        return supported.iter().copied().find(|p| p.is_empty());
    }
    offered
        .iter()
        .find_map(|o| supported.iter().copied().find(|s| !s.is_empty() && s == o))
}

pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
}

impl Framing {
    pub fn of(protocol: &str) -> Framing {
        Framing {
            base64: protocol.contains("base64"),
        }
    }

    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            text.push(char::from(b'0'.wrapping_add(channel)));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::text(text)
        } else {
            let mut frame = Vec::with_capacity(1 + data.len());
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::binary(frame)
        }
    }

    /// The channel and payload of a data message; `None` for control
    /// messages, empty ones and bad base64.
    pub fn decode(self, message: &Message) -> Option<(u8, Vec<u8>)> {
        let raw: &[u8] = match message {
            Message::Binary(data) => data,
            Message::Text(text) => text.as_bytes(),
            _ => return None,
        };
        let (&first, rest) = raw.split_first()?;
        if self.base64 {
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            Some((first.wrapping_sub(b'0'), data))
        } else {
            Some((first, rest.to_vec()))
        }
    }
}

/// The writing side of a WebSocket session: a task that owns the sink,
/// and one pump per output channel.
struct Mux {
    out: mpsc::Sender<Message>,
    framing: Framing,
    gone: CancellationToken,
    pumps: TaskTracker,
    writer: tokio::task::JoinHandle<()>,
    idle: Arc<IdleClock>,
}

type Source<S> = futures_util::stream::SplitStream<WebSocketStream<S>>;

impl Mux {
    fn start<S>(ws: WebSocketStream<S>, framing: Framing) -> (Mux, Source<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, source) = ws.split();
        let (out, mut queue) = mpsc::channel::<Message>(OUT_QUEUE);
        let gone = CancellationToken::new();
        let writer_gone = gone.clone();
        let idle = Arc::new(IdleClock::new());
        let writer_idle = Arc::clone(&idle);
        let writer = tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                let last = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() {
                    break;
                }
                writer_idle.touch();
                if last {
                    break;
                }
            }
            let _ = sink.close().await;
            writer_gone.cancel();
        });
        let mux = Mux {
            out,
            framing,
            gone,
            pumps: TaskTracker::new(),
            writer,
            idle,
        };
        (mux, source)
    }

    async fn send(&self, channel: u8, data: &[u8]) {
        let _ = self.out.send(self.framing.encode(channel, data)).await;
    }

    /// A writer whose bytes go out on `channel`.
    fn output(&self, channel: u8) -> DuplexStream {
        let (writer, mut source) = tokio::io::duplex(PIPE_BYTES);
        let out = self.out.clone();
        let framing = self.framing;
        let gone = self.gone.clone();
        self.pumps.spawn(async move {
            let mut buf = vec![0u8; PIPE_BYTES];
            loop {
                let n = tokio::select! {
                    read = source.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    },
                    _ = gone.cancelled() => return,
                };
                if out.send(framing.encode(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        });
        writer
    }

    /// Waits for the pumps to send what they hold, then closes normally.
    async fn finish(self) {
        self.pumps.close();
        let _ = tokio::time::timeout(FLUSH_GRACE, self.pumps.wait()).await;
        let close = Message::Close(Some(CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        }));
        let _ = self.out.send_timeout(close, FLUSH_GRACE).await;
        drop(self.out);
        let mut writer = self.writer;
        if tokio::time::timeout(FLUSH_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}

pub async fn accept<S>(io: S) -> WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await
}

pub async fn serve_exec<S, B>(
    ws: WebSocketStream<S>,
    protocol: &str,
    wanted: Wanted,
    backend: Arc<B>,
    idle_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
    let framing = Framing::of(protocol);
    let v5 = protocol.starts_with("v5.");
    let json_status = protocol.starts_with("v4.") || v5;
    let (mux, mut source) = Mux::start(ws, framing);
    let streams = wanted.streams;

    let stdout = streams.stdout.then(|| mux.output(STDOUT));
    let stderr = streams.stderr.then(|| mux.output(STDERR));
    let (stdin_feed, stdin) = match streams.stdin {
        true => {
            let (feed, read) = tokio::io::duplex(PIPE_BYTES);
            (Some(feed), Some(Box::pin(read) as Reader))
        }
        false => (None, None),
    };
    let (resize_feed, resize) = match streams.tty {
        true => {
            let (feed, read) = tokio::io::duplex(PIPE_BYTES);
            (Some(feed), Some(session::read_sizes(read)))
        }
        false => (None, None),
    };
    // kubelet tells the client the session is up with an empty message on
    // the lowest channel it writes.
    let first = if streams.stdout {
        STDOUT
    } else if streams.stderr {
        STDERR
    } else {
        ERROR
    };
    mux.send(first, &[]).await;

    let client_done = CancellationToken::new();
    let reader_done = client_done.clone();
    let reader_idle = Arc::clone(&mux.idle);
    let reader = tokio::spawn(async move {
        let mut stdin_feed = stdin_feed;
        let mut resize_feed = resize_feed;
        while let Some(Ok(message)) = source.next().await {
            reader_idle.touch();
            if matches!(message, Message::Close(_)) {
                break;
            }
            let Some((channel, data)) = framing.decode(&message) else {
                continue;
            };
            let feed = match channel {
                STDIN => &mut stdin_feed,
                RESIZE => &mut resize_feed,
                CLOSE_CHANNEL if v5 => {
                    match data.first() {
                        Some(&STDIN) => stdin_feed = None,
                        Some(&RESIZE) => resize_feed = None,
                        _ => {}
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some(pipe) = feed {
                if pipe.write_all(&data).await.is_err() {
                    *feed = None;
                }
            }
        }
        reader_done.cancel();
    });

    let stdio = Stdio {
        stdin,
        stdout: stdout.map(|w| Box::pin(w) as Writer),
        stderr: stderr.map(|w| Box::pin(w) as Writer),
        resize,
    };
    let outcome = tokio::select! {
        outcome = wanted.command.run(backend.as_ref(), stdio) => Some(outcome),
        _ = client_done.cancelled() => None,
        _ = mux.gone.cancelled() => None,
        _ = mux.idle.expired(idle_timeout) => None,
    };
    reader.abort();
    let Some(outcome) = outcome else {
        tracing::debug!("WebSocket client went away, session cancelled");
        return;
    };
    let report = wanted.command.error_stream_bytes(&outcome, json_status);
    // Output first, then the status, as kubelet orders them.
    mux.pumps.close();
    let _ = tokio::time::timeout(FLUSH_GRACE, mux.pumps.wait()).await;
    if !report.is_empty() {
        mux.send(ERROR, &report).await;
    }
    mux.finish().await;
}

pub async fn serve_port_forward<S, B>(
    ws: WebSocketStream<S>,
    protocol: &str,
    pod_sandbox_id: String,
    ports: Vec<u16>,
    backend: Arc<B>,
    idle_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
    let framing = Framing::of(protocol);
    let (mux, mut source) = Mux::start(ws, framing);
    let mut feeds = Vec::with_capacity(ports.len());
    let mut forwards = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let data_channel = (2 * i) as u8;
        mux.send(data_channel, &port.to_le_bytes()).await;
        mux.send(data_channel + 1, &port.to_le_bytes()).await;
        let (feed, client_in) = tokio::io::duplex(PIPE_BYTES);
        feeds.push(Some(feed));
        let client_out = mux.output(data_channel);
        let mut error_out = mux.output(data_channel + 1);
        let backend = Arc::clone(&backend);
        let pod = pod_sandbox_id.clone();
        forwards.spawn(async move {
            match backend.port_forward(&pod, port).await {
                Ok(tcp) => {
                    let (read, write) = tcp.into_split();
                    let _ = splice(client_in, client_out, read, write).await;
                }
                Err(e) => {
                    let message = format!("error forwarding port {port} to pod {pod}, uid : {e}");
                    let _ = error_out.write_all(message.as_bytes()).await;
                }
            }
        });
    }
    let reader = async {
        while let Some(Ok(message)) = source.next().await {
            mux.idle.touch();
            if matches!(message, Message::Close(_)) {
                break;
            }
            let Some((channel, data)) = framing.decode(&message) else {
                continue;
            };
            let index = usize::from(channel / 2);
            if channel % 2 != 0 || index >= feeds.len() {
                continue;
            }
            if let Some(feed) = &mut feeds[index] {
                if feed.write_all(&data).await.is_err() {
                    feeds[index] = None;
                }
            }
        }
    };
    let all_done = async { while forwards.join_next().await.is_some() {} };
    tokio::select! {
        _ = reader => {}
        _ = all_done => {}
        _ = mux.gone.cancelled() => {}
        _ = mux.idle.expired(idle_timeout) => {}
    }
    forwards.shutdown().await;
    mux.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_framing() {
        let binary = Framing { base64: false };
        let message = binary.encode(STDOUT, b"hi");
        assert_eq!(message, Message::binary(vec![1, b'h', b'i']));
        assert_eq!(binary.decode(&message), Some((1, b"hi".to_vec())));
        assert_eq!(binary.decode(&Message::binary(vec![])), None);

        let text = Framing { base64: true };
        let message = text.encode(STDERR, b"hi");
        assert_eq!(message, Message::text("2aGk="));
        assert_eq!(text.decode(&message), Some((2, b"hi".to_vec())));
        assert_eq!(text.decode(&Message::text("0!!!")), None);
        // Port-forward's opening frame: port 8080 little-endian on channel 0.
        assert_eq!(
            binary.encode(0, &8080u16.to_le_bytes()),
            Message::binary(vec![0, 0x90, 0x1f])
        );
    }

    #[test]
    fn protocol_negotiation_follows_the_client_order() {
        let offered = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(
                &offered(&["v4.channel.k8s.io", "v5.channel.k8s.io"]),
                &EXEC_PROTOCOLS
            ),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate(&offered(&[]), &EXEC_PROTOCOLS), Some(""));
        assert_eq!(negotiate(&offered(&["x"]), &EXEC_PROTOCOLS), None);
        assert_eq!(negotiate(&offered(&[""]), &EXEC_PROTOCOLS), None);
        assert_eq!(
            negotiate(
                &offered(&["base64.channel.k8s.io"]),
                &PORT_FORWARD_PROTOCOLS
            ),
            None
        );
    }
}
