//! What both transports share once the client's streams are in place:
//! running an exec or attach on the backend, and reading terminal sizes.

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::backend::{AttachTarget, Backend, ExecTarget, Stdio, TerminalSize};
use super::status::{self, Outcome};
use super::tokens::Streams;

/// An exec or attach, as its token named it.
#[derive(Debug, Clone)]
pub enum Command {
    Exec(ExecTarget),
    Attach(AttachTarget),
}

impl Command {
    pub async fn run<B: Backend>(&self, backend: &B, stdio: Stdio) -> Outcome {
        match self {
            Command::Exec(target) => match backend.exec(target.clone(), stdio).await {
                Ok(code) => Outcome::Exited(code),
                Err(e) => Outcome::Failed(e),
            },
            Command::Attach(target) => match backend.attach(target.clone(), stdio).await {
                Ok(()) => Outcome::Exited(0),
                Err(e) => Outcome::Failed(e),
            },
        }
    }

    /// The bytes for the error stream (`json`: protocol v4 and later).
    pub fn error_stream_bytes(&self, outcome: &Outcome, json: bool) -> Vec<u8> {
        match self {
            Command::Exec(target) => status::error_stream_bytes(
                outcome,
                "error executing command in container",
                &target.cmd,
                json,
            ),
            Command::Attach(_) => {
                status::error_stream_bytes(outcome, "error attaching to container", &[], json)
            }
        }
    }
}

/// An exec or attach with the streams its CRI request asked for.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub command: Command,
    pub streams: Streams,
}

/// Terminal sizes queued between the client and the backend.
const RESIZE_QUEUE: usize = 8;
/// A resize message larger than this ends the resize stream.
const MAX_RESIZE_MESSAGE: usize = 4 << 10;

#[derive(Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Parses the resize stream (JSON objects `{"Width":w,"Height":h}`, one
/// after the other, as Go's json.Encoder writes them) into sizes. The
/// task ends at the stream's end, at garbage, or when the backend drops
/// the receiver.
pub fn read_sizes(input: impl AsyncRead + Send + Unpin + 'static) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(RESIZE_QUEUE);
    tokio::spawn(async move {
        let mut input = input;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let n = match input.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut sizes = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
            let mut used = 0;
            loop {
                match sizes.next() {
                    Some(Ok(size)) => {
                        used = sizes.byte_offset();
                        let size = TerminalSize {
                            width: size.width,
                            height: size.height,
                        };
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "bad terminal size, ignoring the resize stream");
                        return;
                    }
                    None => break,
                }
            }
            buf.drain(..used);
            if buf.len() > MAX_RESIZE_MESSAGE {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn sizes_are_read_across_chunk_boundaries() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut sizes = read_sizes(server);
        client.write_all(b"{\"Width\":80,\"Hei").await.unwrap();
        client
            .write_all(b"ght\":24}\n{\"Width\":100,\"Height\":50}")
            .await
            .unwrap();
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 100,
                height: 50
            })
        );
        client.write_all(b"garbage").await.unwrap();
        assert_eq!(sizes.recv().await, None);
    }
}
