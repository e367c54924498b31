//! The gRPC edge: CRI v1 `RuntimeService` and `ImageService` on a unix
//! socket. Handlers validate and translate; the work happens in the
//! services below. Every call goes through [`handle`], which logs it with
//! its duration and maps library errors to gRPC codes in one place.

mod authority;
mod containers;
mod convert;
mod events;
mod image;
mod metrics;
mod pods;
mod runtime;
mod stats;
mod streaming;
mod validate;
mod verbose;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::{Code, Response, Status};

use crate::container::ContainerService;
use crate::error::{chain, kind_of, Classify, Kind};
use crate::image::ImageService;
use crate::network::Cni;
use crate::sandbox::SandboxService;

use crate::api as proto;

/// kubelet's limit (`maxMsgSize` of its CRI client, both ways): image
/// lists and exec output can be large. Every answer must fit in it; see
/// [`validate::fits`].
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// ExecSync's stdout and stderr together: the reply carries both and must
/// fit in one message, with room for the exit code and framing.
pub const MAX_EXEC_OUTPUT_BYTES: usize = MAX_MESSAGE_BYTES - (64 << 10);

/// What the gRPC handlers serve.
pub struct Services {
    /// Changes on reload (see [`crate::reload`]).
    pub config: Arc<crate::reload::InForce>,
    pub images: Arc<ImageService>,
    pub sandboxes: Arc<SandboxService>,
    pub containers: Arc<ContainerService>,
    pub cni: Arc<Cni>,
    /// Where Exec, Attach and PortForward sessions are served.
    pub streaming: Arc<crate::streaming::Server>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("preparing socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves, then lets calls in flight finish.
/// `ready` runs once the socket is listening: a call made from then on is
/// served.
pub async fn serve(
    socket: &Path,
    services: Services,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = bind(socket)?;
    let services = Arc::new(services);
    let runtime = proto::runtime_service_server::RuntimeServiceServer::from_arc(Arc::new(
        runtime::Runtime::new(Arc::clone(&services)),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let images = proto::image_service_server::ImageServiceServer::from_arc(Arc::new(
        image::Images::new(Arc::clone(&services)),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tracing::info!(socket = %socket.display(), "serving CRI");
    // Calls in flight get a grace period; clients that keep idle
    // connections open (kubelet does) must not hold the shutdown forever.
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    // kubelet and crictl up to 1.30 send the socket path as :authority,
    // which h2 rejects: rewrite it (same length) before h2 sees it.
    let incoming = UnixListenerStream::new(listener)
        .map(|connection| connection.map(authority::AuthorityFix::new));
    let server = tonic::transport::Server::builder()
        .add_service(runtime)
        .add_service(images)
        .serve_with_incoming_shutdown(incoming, shutdown);
    let grace_expired = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    ready();
    tokio::select! {
        result = server => result?,
        _ = grace_expired => tracing::warn!("connections still open after the grace period; stopping anyway"),
    }
    Ok(())
}

/// How long a shutdown waits for calls in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds the socket: parent directories created, a stale socket from a
/// previous run replaced, access limited to root and the socket's group.
/// Anything else at that path (a file, a directory) is left alone and
/// the daemon refuses to start.
fn bind(socket: &Path) -> Result<UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ServeError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    check_socket_path(socket)?;
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::debug!("removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(socket).map_err(io)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

/// Fails unless `socket` is free or holds a unix socket (a stale one, to
/// be replaced). Called at start-up before any other work, and again when
/// binding.
pub fn check_socket_path(socket: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let refuse = |what: &str| {
        ServeError::Socket {
        path: socket.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{what} is in the way (only a stale socket is replaced); remove it or choose another socket path"),
        ),
    }
    };
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => Ok(()),
        Ok(meta) if meta.is_dir() => Err(refuse("a directory")),
        Ok(meta) if meta.file_type().is_symlink() => Err(refuse("a symbolic link")),
        Ok(_) => Err(refuse("a file that is not a socket")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ServeError::Socket {
            path: socket.to_path_buf(),
            source,
        }),
    }
}

/// Runs one RPC: logs it at debug with its duration, failures at warn
/// (error for internal faults), and counts it in the metrics.
pub(crate) async fn handle<T>(
    rpc: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let mut counted = Counted {
        rpc,
        started,
        code: Code::Cancelled,
    };
    // The span the per-step timings (crate::timing) nest under.
    let result = tracing::Instrument::instrument(call, tracing::debug_span!("rpc", rpc)).await;
    let elapsed = started.elapsed();
    counted.code = result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
    drop(counted);
    let elapsed_us = elapsed.as_micros() as u64;
    match &result {
        Ok(_) => tracing::debug!(rpc, elapsed_us, "ok"),
        // kubelet polls the stats RPCs every few seconds: not worth a warning.
        Err(status) if status.code() == Code::Unimplemented => {
            tracing::debug!(rpc, "not implemented")
        }
        Err(status) if status.code() == Code::Internal => {
            tracing::error!(rpc, elapsed_us, code = ?status.code(), error = status.message(), "failed")
        }
        Err(status) => {
            tracing::warn!(rpc, elapsed_us, code = ?status.code(), error = status.message(), "failed")
        }
    }
    result.map(Response::new)
}

/// Counts an RPC with its code when dropped: `Cancelled` when the client
/// went away before the answer, as gRPC reports it.
struct Counted {
    rpc: &'static str,
    started: Instant,
    code: Code,
}

impl Drop for Counted {
    fn drop(&mut self) {
        crate::metrics::global().observe_rpc(self.rpc, self.code, self.started.elapsed());
    }
}

/// Maps a library error to a status carrying its cause chain (shortened
/// if huge: the middle is dropped, the outermost and innermost causes stay).
pub(crate) fn status_of<E: Classify + std::error::Error + 'static>(error: E) -> Status {
    let kind = kind_of(&error);
    crate::metrics::global().count_error(kind);
    let code = match kind {
        Kind::InvalidArgument => Code::InvalidArgument,
        Kind::NotFound => Code::NotFound,
        Kind::AlreadyExists => Code::AlreadyExists,
        Kind::FailedPrecondition => Code::FailedPrecondition,
        Kind::Unavailable => Code::Unavailable,
        Kind::DeadlineExceeded => Code::DeadlineExceeded,
        Kind::ResourceExhausted => Code::ResourceExhausted,
        Kind::DataLoss => Code::DataLoss,
        Kind::Unimplemented => Code::Unimplemented,
        Kind::Internal => Code::Internal,
    };
    Status::new(code, validate::bounded_message(chain(&error)))
}

/// A missing or empty required field.
pub(crate) fn required(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("wharf.sock");
        // Free path, then a stale socket of a previous run.
        drop(bind(&socket).unwrap());
        assert!(socket.exists());
        drop(bind(&socket).unwrap());

        let file = dir.path().join("precious.txt");
        std::fs::write(&file, b"keep me").unwrap();
        let err = bind(&file).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

        let subdir = dir.path().join("dir");
        std::fs::create_dir(&subdir).unwrap();
        assert!(bind(&subdir).unwrap_err().to_string().contains("directory"));
        assert!(subdir.is_dir());

        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(check_socket_path(&link).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }

    #[test]
    fn full_disks_and_bad_paths_get_their_own_codes() {
        use crate::store::StoreError;
        let store = |errno: nix::errno::Errno| {
            StoreError::Io(crate::error::IoError::new(
                "writing",
                "/var/lib/wharf/x",
                errno,
            ))
        };
        assert_eq!(
            status_of(store(nix::errno::Errno::ENOSPC)).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            status_of(store(nix::errno::Errno::ENAMETOOLONG)).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            status_of(store(nix::errno::Errno::EIO)).code(),
            Code::Internal
        );
    }
}
