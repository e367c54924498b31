//! Containers, one file per operation, each an `impl ContainerService`
//! block (as youki's `container_*.rs`): `create` (with `bundle`: the
//! overlay rootfs and the OCI spec; a monitor that runs the container at
//! the start), `start`, `stop`, `remove`, `exec`, `update` (resources and
//! log reopening), `streaming` (exec and attach sessions) and `recover`
//! (start-up); the record and its derived state in `record`. Pods are the
//! [`SandboxService`]'s: a container is created while its pod is locked and
//! Ready ([`SandboxService::while_ready`]), and stopping or removing a pod
//! calls back into [`ContainerService::stop_all_in`] and
//! [`ContainerService::remove_all_in`].
//!
//! Records live under `<root>/containers/<id>` (with the writable layer);
//! the bundle, the monitor's files and the rootfs mount under
//! `<state>/containers/<id>`.
//!
//! Exits are pushed, not polled: each created or running container has
//! one watcher task ([`crate::runtime::watch_exit`], a `wait-exit`
//! connection to its monitor, started at create and at recovery) that
//! records the exit in memory once and wakes whoever waits on the entry's
//! state (StopContainer, ExecSync) and [`ContainerService::subscribe`]rs.
//! Get, List and Status read memory only. The exit itself stays in the
//! monitor's `exit.json`, which recovery reads once per container.

mod bundle;
mod create;
mod exec;
pub mod identity;
pub mod record;
mod recover;
mod remove;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
mod start;
mod stop;
mod streaming;
mod update;
pub mod user;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};

use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;

use crate::error::{Classify, Kind};
use crate::image::{ImageError, ImageService};
use crate::runtime::{ContainerEnd, OciRuntime, RuntimeError, RuntimeHandlers, UnknownHandler};
use crate::sandbox::{SandboxError, SandboxService};
use crate::store::StoreError;
use crate::sync::{by_id_or_prefix, LookupMiss, NameTaken, Registrar};

pub use bundle::cgroups_path;
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
    #[error("ID-mapped mount: {0}")]
    Idmap(#[from] crate::idmap::IdmapError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The runtime could not apply new resources (the kernel refused them);
    /// the previous ones are back in force.
    #[error("the new resources were refused, the previous ones stay: {0}")]
    UpdateRefused(#[source] RuntimeError),
    #[error(transparent)]
    Handler(#[from] UnknownHandler),
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

impl crate::sync::TaskFailure for ContainerError {
    fn task_failed(what: &'static str, error: tokio::task::JoinError) -> Self {
        ContainerError::Task(what, error)
    }
}

impl Classify for ContainerError {
    fn kind(&self) -> Kind {
        match self {
            ContainerError::Missing(_)
            | ContainerError::Ambiguous(_)
            | ContainerError::Invalid { .. } => Kind::InvalidArgument,
            ContainerError::NotFound(_)
            | ContainerError::ImageNotFound(_)
            | ContainerError::Handler(_) => Kind::NotFound,
            ContainerError::WrongState { .. } | ContainerError::UpdateRefused(_) => {
                Kind::FailedPrecondition
            }
            ContainerError::NameTaken(_) => Kind::AlreadyExists,
            ContainerError::Sandbox(e) => e.kind(),
            ContainerError::Idmap(e) => e.kind(),
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

/// What a container's monitor vanished without recording an exit says.
const LOST: &str = "the container's monitor exited without recording its exit (host reboot?)";
/// Changes kept for a [`ContainerService::subscribe`]r that lags behind.
const CHANGES_BACKLOG: usize = 1024;

/// A container's state changed: the hook for GetContainerEvents. `state`
/// is `None` once the container is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub id: String,
    pub sandbox_id: String,
    pub state: Option<ContainerState>,
}

/// One container: `op` serialises lifecycle operations; `record` is held
/// only for a moment so that listing never waits behind a slow stop, and
/// shared: a listing takes a reference, not a copy, and a change made
/// while one is held copies the record first (copy on write).
/// `state` follows the record's derived state, for waiters.
pub struct Entry {
    op: tokio::sync::Mutex<()>,
    record: RwLock<Arc<Container>>,
    state: watch::Sender<ContainerState>,
    changes: broadcast::Sender<StateChange>,
    /// The exit watcher, while one runs; aborted when the entry goes.
    watcher: Mutex<Option<AbortHandle>>,
}

impl Entry {
    fn new(container: Container, changes: broadcast::Sender<StateChange>) -> Arc<Entry> {
        Arc::new(Entry {
            op: Default::default(),
            state: watch::Sender::new(container.state()),
            record: RwLock::new(Arc::new(container)),
            changes,
            watcher: Mutex::new(None),
        })
    }

    /// The record, from memory: exits are recorded as they happen.
    pub fn get(&self) -> Container {
        Container::clone(&self.snapshot())
    }

    /// The record as it is now, shared: nothing is copied.
    pub fn snapshot(&self) -> Arc<Container> {
        Arc::clone(&self.record.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes the record; a change of state wakes the waiters and is
    /// announced (under the record's lock, so in the order it happened).
    fn update(&self, change: impl FnOnce(&mut Container)) -> Container {
        let mut shared = self.record.write().unwrap_or_else(|e| e.into_inner());
        let record = Arc::make_mut(&mut shared);
        change(record);
        let state = record.state();
        let changed = self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
        if changed {
            let _ = self.changes.send(StateChange {
                id: record.id.clone(),
                sandbox_id: record.sandbox_id.clone(),
                state: Some(state),
            });
        }
        record.clone()
    }

    /// Records how the container ended (once: a later end changes nothing).
    fn record_end(&self, end: ContainerEnd) -> Container {
        self.update(|c| {
            if c.exit.is_some() {
                return;
            }
            match end {
                ContainerEnd::Exited(status) => c.exit = Some(status),
                ContainerEnd::Lost => {
                    c.failure.get_or_insert_with(|| LOST.into());
                }
            }
        })
    }

    /// Returns once the container is in the Exited state.
    async fn exited(&self) {
        let mut state = self.state.subscribe();
        if state
            .wait_for(|s| *s == ContainerState::Exited)
            .await
            .is_err()
        {
            // Unreachable while `self` holds the sender: never exited.
            std::future::pending::<()>().await;
        }
    }

    /// Whether the container reached the Exited state within `timeout`.
    async fn wait_exited(&self, timeout: std::time::Duration) -> bool {
        tokio::time::timeout(timeout, self.exited()).await.is_ok()
    }

    /// Starts the exit watcher: it records the end, once, in this entry
    /// (if it still exists) and ends. The task holds the entry weakly, so
    /// a removed container's watcher ends with the entry.
    fn watch_exit(self: &Arc<Self>) {
        let state_dir = self.get().state_dir;
        let entry: Weak<Entry> = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let end = crate::runtime::watch_exit(&state_dir).await;
            if let Some(entry) = entry.upgrade() {
                if end == ContainerEnd::Lost {
                    tracing::warn!(id = %entry.get().id, "monitor gone without recording an exit");
                }
                let ended = entry.record_end(end);
                // Nothing runs from it any more (the container's own mount
                // namespace keeps its copy while something is left in
                // it): unmounted now rather than in RemoveContainer.
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = rootfs::unmount(&ended.rootfs) {
                        tracing::warn!(id = %ended.id, error = %e, "unmounting an exited container's rootfs");
                    }
                });
            }
        });
        let previous = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(task.abort_handle());
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// Whether the exit watcher runs: it holds a connection to the
    /// container's monitor until the monitor reports the exit or dies.
    fn monitor_watched(&self) -> bool {
        self.watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|watcher| !watcher.is_finished())
    }

    fn stop_watching(&self) {
        if let Some(watcher) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            watcher.abort();
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.stop_watching();
    }
}

pub struct ContainerOptions {
    /// The OCI runtimes, one per runtime handler, with their features.
    pub handlers: RuntimeHandlers,
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
    changes: broadcast::Sender<StateChange>,
}

/// A container's state and whether its monitor is alive (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerSummary {
    pub state: ContainerState,
    /// The daemon is connected to its monitor, waiting for the exit.
    pub monitor_alive: bool,
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
            changes: broadcast::Sender::new(CHANGES_BACKLOG),
        };
        service.recover().await?;
        Ok(service)
    }

    /// Every container state change from now on, removals included: the
    /// hook for GetContainerEvents.
    /// The runtime handlers, with what each runtime can do.
    pub fn handlers(&self) -> &RuntimeHandlers {
        &self.options.handlers
    }

    /// What this host's cgroups offer (for checking pod-level resources).
    pub fn host_features(&self) -> &HostFeatures {
        &self.options.host
    }

    /// The runtime of the container's handler.
    fn runtime_of(&self, container: &Container) -> Result<&OciRuntime, ContainerError> {
        Ok(&self
            .options
            .handlers
            .get(&container.runtime_handler)?
            .runtime)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }

    /// Adds a new container and starts watching for its exit.
    fn insert(&self, container: Container) {
        let (id, sandbox_id, state) = (
            container.id.clone(),
            container.sandbox_id.clone(),
            container.state(),
        );
        let entry = Entry::new(container, self.changes.clone());
        entry.watch_exit();
        self.containers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), entry);
        let _ = self.changes.send(StateChange {
            id,
            sandbox_id,
            state: Some(state),
        });
    }

    pub fn get(&self, id_or_prefix: &str) -> Result<Arc<Entry>, ContainerError> {
        let containers = self.containers.read().unwrap_or_else(|e| e.into_inner());
        by_id_or_prefix(&containers, id_or_prefix).map_err(|miss| match miss {
            LookupMiss::NotFound => ContainerError::NotFound(id_or_prefix.to_string()),
            LookupMiss::Ambiguous => ContainerError::Ambiguous(id_or_prefix.to_string()),
        })
    }

    pub fn list(&self, filter: &ContainerFilter) -> Vec<Arc<Container>> {
        let containers = self.containers.read().unwrap_or_else(|e| e.into_inner());
        let sandbox_prefix = filter.sandbox_id.as_deref().unwrap_or("");
        let id_prefix = filter.id.as_deref().unwrap_or("");
        containers
            .iter()
            .filter(|(id, _)| id.starts_with(id_prefix))
            .map(|(_, entry)| entry.snapshot())
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

    /// Every container's state and monitor, from memory; no record is
    /// cloned.
    pub fn summaries(&self) -> Vec<ContainerSummary> {
        let containers = self.containers.read().unwrap_or_else(|e| e.into_inner());
        containers
            .values()
            .map(|entry| ContainerSummary {
                state: *entry.state.borrow(),
                monitor_alive: entry.monitor_watched(),
            })
            .collect()
    }

    pub(super) fn record_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub(super) fn state_dir(&self, id: &str) -> PathBuf {
        self.state.join(id)
    }

    /// Where containers' records and writable layers are.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The container's writable layer (the overlay upper dir), for stats.
    pub fn writable_layer(&self, id: &str) -> PathBuf {
        self.record_dir(id).join("upper")
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

#[cfg(test)]
mod tests;
