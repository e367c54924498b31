//! [`Backend`] on Wharf's own services: exec through the OCI runtime,
//! attach through the container's monitor, port-forward inside the pod's
//! network namespace. Thin: the work is in `container`, `runtime` and
//! [`port_forward`].

mod port_forward;

use std::sync::Arc;

use futures_util::StreamExt;

use super::backend::{
    AttachTarget, Backend, BackendError, BackendErrorKind, ExecTarget, Stdio, TerminalSize,
};
use crate::container::ContainerService;
use crate::error::{Classify, Kind};
use crate::runtime::{SessionIo, WindowSize};
use crate::sandbox::{SandboxService, SandboxState};

pub struct RuntimeBackend {
    containers: Arc<ContainerService>,
    sandboxes: Arc<SandboxService>,
}

impl RuntimeBackend {
    pub fn new(containers: Arc<ContainerService>, sandboxes: Arc<SandboxService>) -> Self {
        Self {
            containers,
            sandboxes,
        }
    }
}

/// A service error as the transport reports it: a container or pod that
/// is gone or not running is `NotFound`, a request that cannot be served
/// as asked is `Invalid`.
fn backend_error(error: &(impl Classify + std::error::Error)) -> BackendError {
    let kind = match error.kind() {
        Kind::NotFound | Kind::FailedPrecondition => BackendErrorKind::NotFound,
        Kind::InvalidArgument => BackendErrorKind::Invalid,
        _ => BackendErrorKind::Internal,
    };
    BackendError::new(kind, crate::error::chain(error))
}

fn session_io(stdio: Stdio) -> SessionIo {
    let resize = stdio.resize.map(|sizes| {
        futures_util::stream::unfold(sizes, |mut sizes| async move {
            let TerminalSize { width, height } = sizes.recv().await?;
            let size = WindowSize {
                columns: width,
                rows: height,
            };
            Some((size, sizes))
        })
        .boxed()
    });
    SessionIo {
        stdin: stdio.stdin,
        stdout: stdio.stdout,
        stderr: stdio.stderr,
        resize,
    }
}

impl Backend for RuntimeBackend {
    async fn exec(&self, target: ExecTarget, stdio: Stdio) -> Result<i32, BackendError> {
        self.containers
            .exec_session(
                &target.container_id,
                target.cmd,
                target.tty,
                session_io(stdio),
            )
            .await
            .map_err(|e| backend_error(&e))
    }

    async fn attach(&self, target: AttachTarget, stdio: Stdio) -> Result<(), BackendError> {
        let has_tty = self
            .containers
            .has_tty(&target.container_id)
            .map_err(|e| backend_error(&e))?;
        if target.tty != has_tty {
            let which = if has_tty { "with" } else { "without" };
            return Err(BackendError::new(
                BackendErrorKind::Invalid,
                format!(
                    "container {} was created {which} a terminal; attach {which} one",
                    target.container_id
                ),
            ));
        }
        self.containers
            .attach(&target.container_id, session_io(stdio))
            .await
            .map_err(|e| backend_error(&e))
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, BackendError> {
        if port == 0 {
            return Err(BackendError::new(
                BackendErrorKind::Invalid,
                "port 0 cannot be forwarded; ports are 1 to 65535",
            ));
        }
        let sandbox = self
            .sandboxes
            .get(pod_sandbox_id)
            .map_err(|e| backend_error(&e))?
            .get();
        if sandbox.state != SandboxState::Ready {
            return Err(BackendError::new(
                BackendErrorKind::NotFound,
                format!("pod sandbox {} is not ready", sandbox.id),
            ));
        }
        // A host-network pod has no namespace of its own: the daemon's is
        // the host's.
        let netns = sandbox.namespaces.net.clone();
        if netns.is_none() && !sandbox.modes.host_network {
            return Err(BackendError::new(
                BackendErrorKind::Internal,
                format!("pod sandbox {} has no network namespace pinned", sandbox.id),
            ));
        }
        port_forward::connect_loopback(netns, port)
            .await
            .map_err(|e| {
                BackendError::new(
                    e.kind(),
                    format!("port-forward to port {port} of pod {}: {e}", sandbox.id),
                )
            })
    }
}
