//! The gRPC edge: CRI v1 `RuntimeService` and `ImageService` on a unix
//! socket. Handlers validate and translate; the work happens in the
//! services below. Every call goes through [`handle`], which logs it with
//! its duration and maps library errors to gRPC codes in one place.

mod authority;
mod containers;
mod convert;
mod image;
mod pods;
mod runtime;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::{Code, Response, Status};

use crate::config::Config;
use crate::container::ContainerService;
use crate::error::{chain, Classify, Kind};
use crate::image::ImageService;
use crate::network::Cni;

use crate::api as proto;

/// kubelet's limit: image lists and exec output can be large.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// What the gRPC handlers serve.
pub struct Services {
    pub config: Arc<Config>,
    pub images: Arc<ImageService>,
    pub containers: Arc<ContainerService>,
    pub cni: Arc<Cni>,
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
pub async fn serve(
    socket: &Path,
    services: Services,
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
fn bind(socket: &Path) -> Result<UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ServeError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::debug!("removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(socket).map_err(io)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

/// Runs one RPC: logs it at debug with its duration, failures at warn
/// (error for internal faults).
pub(crate) async fn handle<T>(
    rpc: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = call.await;
    let elapsed_us = started.elapsed().as_micros() as u64;
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

/// Maps a library error to a status carrying its whole cause chain.
pub(crate) fn status_of<E: Classify + std::error::Error>(error: E) -> Status {
    let code = match error.kind() {
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
    Status::new(code, chain(&error))
}

/// The answer of an RPC whose issue has not landed yet.
pub(crate) fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by wharf yet"))
}

/// A missing or empty required field.
pub(crate) fn required(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}
