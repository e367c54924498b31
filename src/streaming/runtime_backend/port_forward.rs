//! A TCP connection to loopback inside a pod's network namespace, with no
//! helper binary: a short-lived thread of our own enters the namespace
//! (`setns` changes only the calling thread, which is why it is never a
//! tokio worker), makes the socket there (a socket belongs to the
//! namespace it was created in, wherever it is used later), connects, and
//! hands the connection back to tokio.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::CloneFlags;
use tokio::sync::oneshot;

use crate::streaming::backend::BackendErrorKind;

/// How long a connection to the pod's port may take to be accepted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("opening network namespace {path}: {source}")]
    OpenNamespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    EnterNamespace {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("connecting to 127.0.0.1:{port}: {source}")]
    Connect {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the connecting thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the connecting thread ended without an answer")]
    NoAnswer,
}

impl ConnectError {
    pub fn kind(&self) -> BackendErrorKind {
        match self {
            // The pod's namespace is gone: so is the pod, for our purpose.
            ConnectError::OpenNamespace { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                BackendErrorKind::NotFound
            }
            _ => BackendErrorKind::Internal,
        }
    }
}

/// Connects to `127.0.0.1:port` in the network namespace pinned at
/// `netns` (the daemon's own when `None`: a host-network pod). Dropped
/// early, the thread still finishes its connect (within the timeout)
/// and closes what it made.
pub async fn connect_loopback(
    netns: Option<PathBuf>,
    port: u16,
) -> Result<tokio::net::TcpStream, ConnectError> {
    let (answer, answered) = oneshot::channel();
    std::thread::Builder::new()
        .name("wharf-port-forward".into())
        .spawn(move || {
            let _ = answer.send(connect_blocking(netns.as_deref(), port));
        })
        .map_err(ConnectError::Thread)?;
    let stream = answered.await.map_err(|_| ConnectError::NoAnswer)??;
    tokio::net::TcpStream::from_std(stream).map_err(|source| ConnectError::Connect { port, source })
}

/// Runs on a thread of its own, which ends with this call: the namespace
/// it entered dies with it.
fn connect_blocking(netns: Option<&Path>, port: u16) -> Result<std::net::TcpStream, ConnectError> {
    if let Some(path) = netns {
        let namespace =
            std::fs::File::open(path).map_err(|source| ConnectError::OpenNamespace {
                path: path.to_path_buf(),
                source,
            })?;
        nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|source| {
            ConnectError::EnterNamespace {
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let connect_error = |source| ConnectError::Connect { port, source };
    let stream =
        std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(connect_error)?;
    stream.set_nonblocking(true).map_err(connect_error)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
