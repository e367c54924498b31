//! Pod sandboxes: the namespaces, files and network a pod's containers
//! share. There is no pause container: the namespaces are pinned by bind
//! mounts (see [`namespaces`]), so they outlive any process and the daemon.
//!
//! Records live under `<root>/sandboxes/<id>` (`sandbox.json`, and the CRI
//! config as `config.pb`); runtime state (namespace pins, `/dev/shm`,
//! resolv.conf, hosts) under `<state>/sandboxes/<id>`, which a reboot
//! clears — a pod found without it after a restart is reported NotReady.
//!
//! RunPodSandbox is in `run.rs`, in named steps; StopPodSandbox,
//! RemovePodSandbox and the pod lock in `stop.rs`; the record in
//! `record.rs`.

pub mod files;
pub mod namespaces;
mod record;
mod run;
mod stop;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::api;
use crate::error::{Classify, Kind};
use crate::network::{Cni, CniError, PodNetwork, PortMapping, Protocol};
use crate::store::StoreError;
use crate::sync::{by_id_or_prefix, LookupMiss, NameTaken, Registrar};

use namespaces::NamespaceError;
pub use record::{Sandbox, SandboxState};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("pod sandbox {0} not found")]
    NotFound(String),
    #[error("pod sandbox ID prefix {0:?} matches more than one sandbox")]
    Ambiguous(String),
    #[error(transparent)]
    NameTaken(#[from] NameTaken),
    #[error(transparent)]
    Userns(#[from] crate::idmap::IdmapError),
    #[error("pinning namespaces: {0}")]
    Namespaces(#[from] NamespaceError),
    #[error("pod files: {0}")]
    Files(#[from] files::FilesError),
    #[error("pod network: {0}")]
    Network(#[from] CniError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} did not finish: {1}")]
    Task(&'static str, #[source] tokio::task::JoinError),
    #[error("pod sandbox {0} is not ready")]
    NotReady(String),
    #[error("{error} (and rolling back failed: {cleanup})")]
    Undone {
        error: Box<SandboxError>,
        cleanup: crate::undo::CleanupFailures,
    },
}

impl crate::undo::Undone for SandboxError {
    fn with_cleanup_failures(self, cleanup: crate::undo::CleanupFailures) -> Self {
        SandboxError::Undone {
            error: Box::new(self),
            cleanup,
        }
    }
}

impl crate::sync::TaskFailure for SandboxError {
    fn task_failed(what: &'static str, error: tokio::task::JoinError) -> Self {
        SandboxError::Task(what, error)
    }
}

impl Classify for SandboxError {
    fn kind(&self) -> Kind {
        match self {
            SandboxError::Missing(_)
            | SandboxError::Invalid { .. }
            | SandboxError::Ambiguous(_) => Kind::InvalidArgument,
            SandboxError::NotFound(_) => Kind::NotFound,
            SandboxError::NameTaken(_) => Kind::AlreadyExists,
            SandboxError::NotReady(_) => Kind::FailedPrecondition,
            SandboxError::Undone { error, .. } => error.kind(),
            SandboxError::Namespaces(e) => e.kind(),
            SandboxError::Userns(e) => e.kind(),
            SandboxError::Files(e) => e.kind(),
            SandboxError::Network(e) => e.kind(),
            SandboxError::Store(_) | SandboxError::Task(..) => Kind::Internal,
        }
    }
}

/// One sandbox: `op` serialises lifecycle operations (which may wait on
/// CNI plugins), while `record` is only held for a moment, so listing never
/// waits behind a slow stop; shared, so a listing takes a reference, not a
/// copy (a change made while one is held copies the record first).
pub struct Entry {
    op: tokio::sync::Mutex<()>,
    record: RwLock<Arc<Sandbox>>,
}

impl Entry {
    fn new(sandbox: Sandbox) -> Self {
        Self {
            op: Default::default(),
            record: RwLock::new(Arc::new(sandbox)),
        }
    }

    pub fn get(&self) -> Sandbox {
        Sandbox::clone(&self.snapshot())
    }

    /// The record as it is now, shared: nothing is copied.
    pub fn snapshot(&self) -> Arc<Sandbox> {
        Arc::clone(&self.record.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn update(&self, change: impl FnOnce(&mut Sandbox)) -> Sandbox {
        let mut shared = self.record.write().unwrap_or_else(|e| e.into_inner());
        let record = Arc::make_mut(&mut shared);
        change(record);
        record.clone()
    }
}

/// A pod's lifecycle step, as GetContainerEvents reports it for pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodEvent {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// The hook for GetContainerEvents: pod `id` went through `event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodChange {
    pub id: String,
    pub event: PodEvent,
}

/// Changes kept for a [`SandboxService::subscribe`]r that lags behind.
const CHANGES_BACKLOG: usize = 1024;

pub struct SandboxService {
    root: PathBuf,
    state: PathBuf,
    cni: Arc<Cni>,
    /// Runs as `<pid_holder> pause`: the init of shared PID namespaces.
    pid_holder: PathBuf,
    sandboxes: RwLock<HashMap<String, Arc<Entry>>>,
    names: Registrar,
    changes: tokio::sync::broadcast::Sender<PodChange>,
}

impl SandboxService {
    pub async fn new(
        root: PathBuf,
        state: PathBuf,
        cni: Arc<Cni>,
        pid_holder: PathBuf,
    ) -> Result<SandboxService, SandboxError> {
        let root = root.join("sandboxes");
        let state = state.join("sandboxes");
        // Wharf's own directories: made private also when an older Wharf
        // left them open.
        crate::store::ensure_dir_mode(&root, crate::store::PRIVATE_DIR_MODE)?;
        crate::store::ensure_dir_mode(&state, crate::store::PRIVATE_DIR_MODE)?;
        let service = SandboxService {
            root,
            state,
            cni,
            pid_holder,
            sandboxes: RwLock::new(HashMap::new()),
            names: Registrar::default(),
            changes: tokio::sync::broadcast::Sender::new(CHANGES_BACKLOG),
        };
        service.recover().await?;
        Ok(service)
    }

    /// Every pod lifecycle step from now on: the hook for
    /// GetContainerEvents.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<PodChange> {
        self.changes.subscribe()
    }

    fn announce(&self, id: &str, event: PodEvent) {
        let _ = self.changes.send(PodChange {
            id: id.to_string(),
            event,
        });
    }

    fn record_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.state.join(id)
    }

    /// Loads every sandbox record; drops what is unreadable and state left
    /// by a RunPodSandbox that never completed.
    async fn recover(&self) -> Result<(), SandboxError> {
        let mut recovered = HashMap::new();
        for dir in crate::store::list_subdirs(&self.root)? {
            let id = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match record::load(&dir) {
                Ok(Some(mut sandbox)) => {
                    if sandbox.recover_state() {
                        tracing::warn!(id = %sandbox.id, "namespaces gone (reboot?): sandbox is not ready");
                    }
                    self.names.reserve(&sandbox.name, &sandbox.id).ok();
                    recovered.insert(id, Arc::new(Entry::new(sandbox)));
                }
                Ok(None) | Err(_) => {
                    tracing::warn!(id = %id, "removing incomplete sandbox record");
                    self.discard(&id).await;
                    crate::store::remove_dir_atomic(&dir)?;
                }
            }
        }
        for dir in crate::store::list_subdirs(&self.state)? {
            let id = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !recovered.contains_key(&id) {
                tracing::warn!(id = %id, "removing state of an unknown sandbox");
                self.discard(&id).await;
            }
        }
        tracing::info!(sandboxes = recovered.len(), "sandboxes recovered");
        *self.sandboxes.write().unwrap_or_else(|e| e.into_inner()) = recovered;
        Ok(())
    }

    /// Removes what a RunPodSandbox interrupted by a crash left: its network
    /// first (an IP allocation and port mappings outlive the namespace),
    /// then its state. Best effort.
    async fn discard(&self, id: &str) {
        let pod = PodNetwork {
            id: id.to_string(),
            netns: self.state_dir(id).join("ns").join("net"),
            ..Default::default()
        };
        if let Err(e) = self.cni.teardown(&pod).await {
            tracing::warn!(id, error = %e, "tearing down the network of an unknown sandbox");
        }
        self.clean_state(id);
    }

    /// Unpins and unmounts whatever a sandbox's state dir holds; best effort.
    fn clean_state(&self, id: &str) {
        let dir = self.state_dir(id);
        if let Err(e) = namespaces::unpin(&dir.join("ns")) {
            tracing::warn!(id, error = %e, "unpinning namespaces");
        }
        if let Err(e) = files::unmount_shm(&dir) {
            tracing::warn!(id, error = %e, "unmounting shm");
        }
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(id, error = %e, "removing sandbox state");
            }
        }
    }

    pub fn get(&self, id_or_prefix: &str) -> Result<Arc<Entry>, SandboxError> {
        let sandboxes = self.sandboxes.read().unwrap_or_else(|e| e.into_inner());
        by_id_or_prefix(&sandboxes, id_or_prefix).map_err(|miss| match miss {
            LookupMiss::NotFound => SandboxError::NotFound(id_or_prefix.to_string()),
            LookupMiss::Ambiguous => SandboxError::Ambiguous(id_or_prefix.to_string()),
        })
    }

    /// Every pod's state, from memory; no record is cloned.
    pub fn states(&self) -> Vec<SandboxState> {
        let sandboxes = self.sandboxes.read().unwrap_or_else(|e| e.into_inner());
        sandboxes
            .values()
            .map(|e| e.record.read().unwrap_or_else(|p| p.into_inner()).state)
            .collect()
    }

    pub fn list(&self) -> Vec<Arc<Sandbox>> {
        let sandboxes = self.sandboxes.read().unwrap_or_else(|e| e.into_inner());
        sandboxes.values().map(|e| e.snapshot()).collect()
    }
}

pub(crate) fn pod_network(id: &str, config: &api::PodSandboxConfig, netns: &Path) -> PodNetwork {
    let metadata = config.metadata.clone().unwrap_or_default();
    PodNetwork {
        id: id.to_string(),
        name: metadata.name,
        namespace: metadata.namespace,
        uid: metadata.uid,
        netns: netns.to_path_buf(),
        port_mappings: config
            .port_mappings
            .iter()
            .filter_map(|p| {
                let protocol = match api::Protocol::try_from(p.protocol).ok()? {
                    api::Protocol::Tcp => Protocol::Tcp,
                    api::Protocol::Udp => Protocol::Udp,
                    api::Protocol::Sctp => Protocol::Sctp,
                };
                Some(PortMapping {
                    protocol,
                    container_port: u16::try_from(p.container_port).ok()?,
                    host_port: u16::try_from(p.host_port).ok()?,
                    host_ip: p.host_ip.clone(),
                })
            })
            .collect(),
        annotations: config
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}
