//! [`Backend`] on Wharf's own services: exec through the OCI runtime,
//! attach through the container's monitor, port-forward inside the pod's
//! network namespace.

use std::sync::Arc;

use super::backend::{AttachTarget, Backend, BackendError, BackendErrorKind, ExecTarget, Stdio};
use crate::container::ContainerService;
use crate::sandbox::SandboxService;

pub struct RuntimeBackend {
    #[allow(dead_code)]
    containers: Arc<ContainerService>,
    #[allow(dead_code)]
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

fn not_built(what: &str) -> BackendError {
    BackendError::new(
        BackendErrorKind::Internal,
        format!("{what} is not implemented by wharf yet"),
    )
}

impl Backend for RuntimeBackend {
    async fn exec(&self, _target: ExecTarget, _stdio: Stdio) -> Result<i32, BackendError> {
        Err(not_built("exec"))
    }

    async fn attach(&self, _target: AttachTarget, _stdio: Stdio) -> Result<(), BackendError> {
        Err(not_built("attach"))
    }

    async fn port_forward(
        &self,
        _pod_sandbox_id: &str,
        _port: u16,
    ) -> Result<tokio::net::TcpStream, BackendError> {
        Err(not_built("port-forward"))
    }
}
