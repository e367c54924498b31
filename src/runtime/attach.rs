//! The daemon's side of attach: a connection to the monitor's attach
//! socket (beside its control socket in the state directory, so it is
//! found again after a daemon restart), framed as [`super::attach_frames`]
//! says.

use std::path::Path;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::attach_frames::{self, FrameKind, HEADER_LEN, MAX_PAYLOAD};
use super::error::RuntimeError;
use super::protocol::files;
use super::session::{SessionIo, SessionReader, SessionWriter, WindowSize};
use futures_util::stream::BoxStream;

/// Joins the stdio of the container whose monitor serves `state_dir`
/// until the container exits (the monitor closes the connection; it
/// also does when this client cannot keep up with the output) or the
/// client stops reading its output.
pub async fn attach(state_dir: &Path, io: SessionIo) -> Result<(), RuntimeError> {
    let socket = state_dir.join(files::ATTACH_SOCKET);
    // Through socket_path: a long state dir cannot name the socket itself.
    let stream = super::socket_path::connect(&socket)
        .await
        .map_err(|source| RuntimeError::MonitorGone {
            state_dir: state_dir.to_path_buf(),
            source,
        })?;
    // The write half lives as long as the session: dropping it would shut
    // the connection down, which the monitor takes for the client leaving.
    let (from_monitor, mut to_monitor) = stream.into_split();
    let SessionIo {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    let wants_output = stdout.is_some() || stderr.is_some();
    let output = deliver_output(from_monitor, stdout, stderr);
    let input = send_input(&mut to_monitor, stdin, resize);
    tokio::pin!(output, input);
    tokio::select! {
        () = &mut output => {}
        // Input that ended (or failed) leaves the output flowing; with no
        // output asked for, the session is over.
        () = async {
            (&mut input).await;
            if wants_output {
                std::future::pending::<()>().await;
            }
        } => {}
    }
    Ok(())
}

/// Frames from the monitor to the client's writers, until the monitor
/// closes the connection or no writer is left that takes output.
async fn deliver_output(
    mut from: OwnedReadHalf,
    mut stdout: Option<SessionWriter>,
    mut stderr: Option<SessionWriter>,
) {
    let mut header = [0u8; HEADER_LEN];
    let mut payload = vec![0u8; MAX_PAYLOAD];
    let wanted_any = stdout.is_some() || stderr.is_some();
    loop {
        if from.read_exact(&mut header).await.is_err() {
            break;
        }
        let Ok((kind, len)) = attach_frames::decode_header(&header) else {
            break;
        };
        let data = &mut payload[..len];
        if from.read_exact(data).await.is_err() {
            break;
        }
        let writer = match kind {
            FrameKind::Stdout => &mut stdout,
            FrameKind::Stderr => &mut stderr,
            _ => continue,
        };
        if let Some(out) = writer {
            if out.write_all(data).await.is_err() || out.flush().await.is_err() {
                *writer = None;
            }
        }
        if wanted_any && stdout.is_none() && stderr.is_none() {
            break;
        }
    }
    for writer in [&mut stdout, &mut stderr].into_iter().flatten() {
        let _ = writer.flush().await;
    }
}

async fn send_input(
    to: &mut OwnedWriteHalf,
    stdin: Option<SessionReader>,
    resize: Option<BoxStream<'static, WindowSize>>,
) {
    let mut stdin = stdin;
    let mut resize = resize;
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let mut frame = Vec::with_capacity(HEADER_LEN + MAX_PAYLOAD);
    while stdin.is_some() || resize.is_some() {
        frame.clear();
        tokio::select! {
            read = async { stdin.as_mut().unwrap().read(&mut buf).await }, if stdin.is_some() => {
                match read {
                    Ok(n) if n > 0 => attach_frames::encode(FrameKind::Stdin, &buf[..n], &mut frame),
                    _ => {
                        stdin = None;
                        attach_frames::encode(FrameKind::StdinClose, &[], &mut frame);
                    }
                }
            }
            size = async { resize.as_mut().unwrap().next().await }, if resize.is_some() => {
                match size {
                    Some(size) => attach_frames::encode_resize(size.columns, size.rows, &mut frame),
                    None => resize = None,
                }
            }
        }
        if !frame.is_empty() && to.write_all(&frame).await.is_err() {
            return;
        }
    }
}
