//! The client's side of an interactive session (streaming exec or
//! attach), as the runtime layer sees it: plain readers and writers, so
//! that it knows nothing of the streaming protocols above it.

use std::pin::Pin;

use futures_util::stream::BoxStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub type SessionReader = Pin<Box<dyn AsyncRead + Send>>;
pub type SessionWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    pub columns: u16,
    pub rows: u16,
}

/// A stream the client did not ask for is `None`; end of file on `stdin`
/// closes the process's stdin.
pub struct SessionIo {
    pub stdin: Option<SessionReader>,
    pub stdout: Option<SessionWriter>,
    pub stderr: Option<SessionWriter>,
    pub resize: Option<BoxStream<'static, WindowSize>>,
}

/// Bytes copied at a time.
pub(super) const CHUNK: usize = 32 * 1024;

/// Copies `from` to `to` until end of file. Once `to` fails (the client
/// went away) the rest is read and dropped, so the process never blocks
/// on a full pipe.
pub(super) async fn copy_output(mut from: impl AsyncRead + Unpin, mut to: Option<SessionWriter>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(writer) = &mut to {
            if writer.write_all(&buf[..n]).await.is_err() {
                to = None;
            }
        }
    }
    if let Some(writer) = &mut to {
        let _ = writer.flush().await;
    }
}
