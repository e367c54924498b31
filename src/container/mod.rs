//! Containers: create (an overlay rootfs, an OCI spec, a monitor running
//! `runc create`), start, stop, remove, status, exec. Pods are the
//! [`SandboxService`]'s: a container is created while its pod is locked and
//! Ready ([`SandboxService::while_ready`]), and stopping or removing a pod
//! calls back into [`ContainerService::stop_all_in`] and
//! [`ContainerService::remove_all_in`].
//!
//! Records live under `<root>/containers/<id>` (with the writable layer);
//! the bundle, the monitor's files and the rootfs mount under
//! `<state>/containers/<id>`.

mod create;
mod lifecycle;
pub mod record;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod user;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::error::{Classify, Kind};
use crate::image::{ImageError, ImageService};
use crate::runtime::{OciRuntime, RuntimeError};
use crate::sandbox::{SandboxError, SandboxService};
use crate::store::StoreError;
use crate::sync::{by_id_or_prefix, LookupMiss, NameTaken, Registrar};

pub use record::{Container, ContainerState};
use spec::{HostFeatures, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container ID prefix {0:?} matches more than one container")]
    Ambiguous(String),
    #[error("image {0:?} is not present; pull it first")]
    ImageNotFound(String),
    #[error("container {id} is {state}, {action} needs it {needed}")]
    WrongState {
        id: String,
        state: &'static str,
        action: &'static str,
        needed: &'static str,
    },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    NameTaken(#[from] NameTaken),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} did not finish: {1}")]
    Task(&'static str, #[source] tokio::task::JoinError),
    #[error("{error} (and rolling back failed: {cleanup})")]
    Undone {
        error: Box<ContainerError>,
        cleanup: crate::undo::CleanupFailures,
    },
}

impl crate::undo::Undone for ContainerError {
    fn with_cleanup_failures(self, cleanup: crate::undo::CleanupFailures) -> Self {
        ContainerError::Undone {
            error: Box::new(self),
            cleanup,
        }
    }
}

impl Classify for ContainerError {
    fn kind(&self) -> Kind {
        match self {
            ContainerError::Missing(_)
            | ContainerError::Ambiguous(_)
            | ContainerError::Invalid { .. } => Kind::InvalidArgument,
            ContainerError::NotFound(_) | ContainerError::ImageNotFound(_) => Kind::NotFound,
            ContainerError::WrongState { .. } => Kind::FailedPrecondition,
            ContainerError::NameTaken(_) => Kind::AlreadyExists,
            ContainerError::Sandbox(e) => e.kind(),
            ContainerError::Image(e) => e.kind(),
            ContainerError::Spec(e) => e.kind(),
            ContainerError::Rootfs(e) => e.kind(),
            ContainerError::Runtime(e) => e.kind(),
            ContainerError::Store(_) | ContainerError::Task(..) => Kind::Internal,
            // What the caller sees is the cause; the rollback is extra.
            ContainerError::Undone { error, .. } => error.kind(),
        }
    }
}

/// One container: `op` serialises lifecycle operations; `record` is held
/// only for a moment so that listing never waits behind a slow stop.
pub struct Entry {
    op: tokio::sync::Mutex<()>,
    record: RwLock<Container>,
}

impl Entry {
    fn new(container: Container) -> Arc<Entry> {
        Arc::new(Entry {
            op: Default::default(),
            record: RwLock::new(container),
        })
    }

    /// The record, with the monitor's exit picked up if the container has
    /// exited since last looked at.
    pub fn get(&self) -> Container {
        let current = self
            .record
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if current.state() != ContainerState::Running && current.state() != ContainerState::Created
        {
            return current;
        }
        match crate::runtime::read_exit(&current.state_dir) {
            Ok(Some(exit)) => self.update(|c| c.exit = Some(exit)),
            _ => current,
        }
    }

    fn update(&self, change: impl FnOnce(&mut Container)) -> Container {
        let mut record = self.record.write().unwrap_or_else(|e| e.into_inner());
        change(&mut record);
        record.clone()
    }
}

pub struct ContainerOptions {
    pub runtime: OciRuntime,
    pub monitor_binary: PathBuf,
    pub host: HostFeatures,
}

pub struct ContainerService {
    root: PathBuf,
    state: PathBuf,
    options: ContainerOptions,
    images: Arc<ImageService>,
    sandboxes: Arc<SandboxService>,
    containers: RwLock<HashMap<String, Arc<Entry>>>,
    names: Registrar,
}

/// What ListContainers filters on.
#[derive(Debug, Default)]
pub struct ContainerFilter {
    pub id: Option<String>,
    pub sandbox_id: Option<String>,
    pub state: Option<ContainerState>,
    pub labels: HashMap<String, String>,
}

impl ContainerService {
    pub async fn new(
        root: PathBuf,
        state: PathBuf,
        options: ContainerOptions,
        images: Arc<ImageService>,
        sandboxes: Arc<SandboxService>,
    ) -> Result<ContainerService, ContainerError> {
        let root = root.join("containers");
        let state = state.join("containers");
        // Wharf's own directories: made private also when an older Wharf
        // left them open.
        crate::store::ensure_dir_mode(&root, crate::store::PRIVATE_DIR_MODE)?;
        crate::store::ensure_dir_mode(&state, crate::store::PRIVATE_DIR_MODE)?;
        let service = ContainerService {
            root,
            state,
            options,
            images,
            sandboxes,
            containers: RwLock::new(HashMap::new()),
            names: Registrar::default(),
        };
        service.recover().await?;
        Ok(service)
    }

    pub fn get(&self, id_or_prefix: &str) -> Result<Arc<Entry>, ContainerError> {
        let containers = self.containers.read().unwrap_or_else(|e| e.into_inner());
        by_id_or_prefix(&containers, id_or_prefix).map_err(|miss| match miss {
            LookupMiss::NotFound => ContainerError::NotFound(id_or_prefix.to_string()),
            LookupMiss::Ambiguous => ContainerError::Ambiguous(id_or_prefix.to_string()),
        })
    }

    pub fn list(&self, filter: &ContainerFilter) -> Vec<Container> {
        let containers = self.containers.read().unwrap_or_else(|e| e.into_inner());
        let sandbox_prefix = filter.sandbox_id.as_deref().unwrap_or("");
        let id_prefix = filter.id.as_deref().unwrap_or("");
        containers
            .iter()
            .filter(|(id, _)| id.starts_with(id_prefix))
            .map(|(_, entry)| entry.get())
            .filter(|c| c.sandbox_id.starts_with(sandbox_prefix))
            .filter(|c| filter.state.is_none_or(|s| c.state() == s))
            .filter(|c| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| c.config.labels.get(k) == Some(v))
            })
            .collect()
    }

    fn in_sandbox(&self, sandbox_id: &str) -> Vec<Arc<Entry>> {
        let containers = self.containers.read().unwrap_or_else(|e| e.into_inner());
        containers
            .values()
            .filter(|e| {
                e.record
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .sandbox_id
                    == sandbox_id
            })
            .cloned()
            .collect()
    }
}

fn state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Unknown => "unknown",
    }
}
