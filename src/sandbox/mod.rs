//! Pod sandboxes: the namespaces, files and network a pod's containers
//! share. There is no pause container: the namespaces are pinned by bind
//! mounts (see [`namespaces`]), so they outlive any process and the daemon.
//!
//! Records live under `<root>/sandboxes/<id>` (`sandbox.json`, and the CRI
//! config as `config.pb`); runtime state (namespace pins, `/dev/shm`,
//! resolv.conf, hosts) under `<state>/sandboxes/<id>`, which a reboot
//! clears — a pod found without it after a restart is reported NotReady.

pub mod files;
pub mod namespaces;
mod record;
mod stop;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::api;
use crate::error::{shown, Classify, Kind};
use crate::network::{Cni, CniError, PodNetwork, PortMapping, Protocol};
use crate::store::StoreError;
use crate::sync::{by_id_or_prefix, new_id, LookupMiss, NameTaken, Registrar};
use crate::undo::Undo;

use namespaces::{NamespaceError, NamespaceKind, PinRequest, PinnedNamespaces};
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

/// kubelet gives an absolute `log_directory` (or none); a relative one
/// would be resolved against the daemon's working directory.
fn check_log_directory(directory: &str) -> Result<(), SandboxError> {
    let reason = if directory.contains('\0') {
        "contains NUL"
    } else if !directory.is_empty() && !std::path::Path::new(directory).is_absolute() {
        "is not an absolute path"
    } else {
        return Ok(());
    };
    Err(SandboxError::Invalid {
        field: "log_directory",
        reason: format!("{} {reason}", shown(directory)),
    })
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
/// waits behind a slow stop.
pub struct Entry {
    op: tokio::sync::Mutex<()>,
    record: RwLock<Sandbox>,
}

impl Entry {
    pub fn get(&self) -> Sandbox {
        self.record
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut Sandbox)) -> Sandbox {
        let mut record = self.record.write().unwrap_or_else(|e| e.into_inner());
        change(&mut record);
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
                    if sandbox.state == SandboxState::Ready && !sandbox.pins_intact() {
                        tracing::warn!(id = %sandbox.id, "namespaces gone (reboot?): sandbox is not ready");
                        sandbox.state = SandboxState::NotReady;
                    }
                    self.names.reserve(&sandbox.name, &sandbox.id).ok();
                    recovered.insert(
                        id,
                        Arc::new(Entry {
                            op: Default::default(),
                            record: RwLock::new(sandbox),
                        }),
                    );
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

    pub fn list(&self) -> Vec<Sandbox> {
        let sandboxes = self.sandboxes.read().unwrap_or_else(|e| e.into_inner());
        sandboxes.values().map(|e| e.get()).collect()
    }

    /// RunPodSandbox: everything is created or nothing is left behind.
    /// `runtime_handler` is one the caller found configured; the pod's
    /// containers run with its runtime.
    pub async fn run(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<Sandbox, SandboxError> {
        let metadata = config
            .metadata
            .as_ref()
            .ok_or(SandboxError::Missing("config.metadata"))?;
        for (field, value) in [
            ("metadata.name", &metadata.name),
            ("metadata.namespace", &metadata.namespace),
            ("metadata.uid", &metadata.uid),
        ] {
            if value.is_empty() {
                return Err(SandboxError::Missing(field));
            }
            if value.contains('/') || value.contains('\0') {
                return Err(SandboxError::Invalid {
                    field,
                    reason: format!("{} contains '/' or NUL", shown(value)),
                });
            }
        }
        check_log_directory(&config.log_directory)?;
        let modes = record::NamespaceModes::from_config(&config);
        let userns = pod_userns(&config, &modes)?;
        let id = new_id();
        let name = format!(
            "{}_{}_{}_{}",
            metadata.name, metadata.namespace, metadata.uid, metadata.attempt
        );
        self.names.reserve(&name, &id)?;
        let mut undo = Undo::default();
        let made: Result<Sandbox, SandboxError> = async {
            undo.push("releasing the sandbox name", || {
                self.names.release(&name);
                Ok::<_, SandboxError>(())
            });
            let state_dir = self.state_dir(&id);
            crate::store::create_dir_all(&state_dir)?;
            if userns.is_some() {
                // The pod's root is not the host's: its containers' runtime
                // must pass through to the pod's files.
                for dir in [&self.state, &state_dir] {
                    crate::store::ensure_dir_mode(dir, crate::store::TRAVERSE_ONLY_DIR_MODE)?;
                }
            }
            {
                let dir = state_dir.clone();
                undo.push("removing sandbox state", move || {
                    std::fs::remove_dir_all(&dir)
                });
            }

            // kubelet always sets the hostname of a pod with its own
            // network; when it does not (host network, or a bare CRI
            // client), the node's name applies, as with containerd and
            // CRI-O.
            let hostname = if modes.host_network || config.hostname.is_empty() {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                config.hostname.clone()
            };
            let mut kinds = Vec::new();
            if !modes.host_network {
                kinds.extend([NamespaceKind::Net, NamespaceKind::Uts]);
            }
            if !modes.host_ipc {
                kinds.push(NamespaceKind::Ipc);
            }
            let sysctls: Vec<(String, String)> = config
                .linux
                .as_ref()
                .map(|l| {
                    l.sysctls
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let ns_dir = state_dir.join("ns");
            let mut userns_pid_holder = None;
            let pinned = if let Some(mappings) = userns {
                // A fork, and a wait for the PID holder: off the async
                // workers.
                let holder = modes.pod_pid.then(|| crate::idmap::PidInit {
                    program: self.pid_holder.clone(),
                    args: vec!["pause".into()],
                });
                let (dir, kinds, sysctls) = (ns_dir.clone(), kinds.clone(), sysctls.clone());
                let hostname = (!modes.host_network).then(|| hostname.clone());
                let pins = tokio::task::spawn_blocking(move || {
                    let request = PinRequest {
                        dir: &dir,
                        kinds: &kinds,
                        hostname: hostname.as_deref(),
                        sysctls: &sysctls,
                    };
                    namespaces::pin_in_userns(&request, &mappings, holder.as_ref())
                })
                .await
                .map_err(|e| SandboxError::Task("creating the pod's user namespace", e))??;
                let dir = ns_dir.clone();
                undo.push("unpinning namespaces", move || namespaces::unpin(&dir));
                if let Some(holder) = pins.pid_holder {
                    let stop = holder.clone();
                    undo.push("stopping the PID namespace holder", move || stop.stop());
                    userns_pid_holder = Some(holder);
                }
                pins.pinned
            } else if kinds.is_empty() && sysctls.is_empty() {
                PinnedNamespaces::default()
            } else {
                let request = PinRequest {
                    dir: &ns_dir,
                    kinds: &kinds,
                    hostname: (!modes.host_network).then_some(hostname.as_str()),
                    sysctls: &sysctls,
                };
                let pinned =
                    crate::timing::step_sync("pinning namespaces", || namespaces::pin(&request))?;
                let dir = ns_dir.clone();
                undo.push("unpinning namespaces", move || namespaces::unpin(&dir));
                pinned
            };

            // A user namespace's PID holder was started with it.
            let pid_holder = if userns_pid_holder.is_some() {
                userns_pid_holder
            } else if modes.pod_pid {
                let mut holder = std::process::Command::new(&self.pid_holder);
                holder.arg("pause");
                let dir = ns_dir.clone();
                let holder =
                    tokio::task::spawn_blocking(move || namespaces::spawn_pid_holder(&dir, holder))
                        .await
                        .map_err(|e| {
                            SandboxError::Task("starting the PID namespace holder", e)
                        })??;
                let stop = holder.clone();
                undo.push("stopping the PID namespace holder", move || stop.stop());
                Some(holder)
            } else {
                None
            };

            let resolv_conf = files::write_resolv_conf(&state_dir, config.dns_config.as_ref())?;
            let hostname_file = files::write_hostname(&state_dir, &hostname)?;
            let shm = if modes.host_ipc {
                None
            } else {
                let shm = files::mount_shm(&state_dir, files::DEFAULT_SHM_SIZE)?;
                let dir = state_dir.clone();
                undo.push("unmounting shm", move || files::unmount_shm(&dir));
                Some(shm)
            };

            let mut ips: Vec<IpAddr> = Vec::new();
            if let Some(netns) = &pinned.net {
                let pod = pod_network(&id, &config, netns);
                // Run to completion even if the caller goes away: a
                // half-done ADD is undone by `setup` itself only if it
                // finishes.
                let cni = Arc::clone(&self.cni);
                let setup = async move { cni.setup(&pod).await.map(|status| (status, pod)) };
                let setup = tokio::spawn(tracing::Instrument::in_current_span(setup));
                let (status, pod) = crate::timing::step("CNI ADD", setup)
                    .await
                    .map_err(|e| SandboxError::Task("setting up the pod network", e))??;
                ips = status.ips;
                undo.push_async("tearing down the pod network", async move || {
                    self.cni.teardown(&pod).await
                });
            }
            // A record half-written when saving failed goes too.
            let record_dir = self.record_dir(&id);
            {
                let dir = record_dir.clone();
                undo.push("removing the sandbox record", move || {
                    crate::store::remove_dir_atomic(&dir)
                });
            }
            let hosts = files::write_hosts(&state_dir, &hostname, &ips, modes.host_network)?;
            let sandbox = Sandbox {
                id: id.clone(),
                name: name.clone(),
                created_at_ns: crate::store::now_nanos(),
                state: SandboxState::Ready,
                modes,
                namespaces: pinned,
                pid_holder,
                ips: ips.iter().map(ToString::to_string).collect(),
                hostname,
                state_dir,
                resolv_conf,
                hosts,
                hostname_file,
                shm,
                userns,
                runtime_handler: runtime_handler.to_string(),
                network_released: false,
                config: config.clone(),
            };
            crate::timing::step_sync("saving the record", || {
                record::save(&record_dir, &sandbox, true)
            })?;
            Ok(sandbox)
        }
        .await;
        let sandbox = undo.finish(made).await?;
        let entry = Arc::new(Entry {
            op: Default::default(),
            record: RwLock::new(sandbox.clone()),
        });
        self.sandboxes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), entry);
        // Made and running in one step: both events, as containerd sends.
        self.announce(&id, PodEvent::Created);
        self.announce(&id, PodEvent::Started);
        Ok(sandbox)
    }
}

/// The pod's user namespace mappings (mode POD), or none for the host's.
/// A pod of its own user namespace must own its other namespaces too, as
/// Kubernetes requires (no host network, IPC or PID with `hostUsers:
/// false`).
fn pod_userns(
    config: &api::PodSandboxConfig,
    modes: &record::NamespaceModes,
) -> Result<Option<crate::idmap::UsernsMappings>, SandboxError> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|o| o.userns_options.as_ref());
    let mappings = crate::idmap::from_cri(options)?;
    if mappings.is_some() && (modes.host_network || modes.host_ipc || modes.host_pid) {
        return Err(SandboxError::Invalid {
            field: "namespace_options.userns_options",
            reason: "a pod with its own user namespace cannot share the host's network, IPC or PID namespace".into(),
        });
    }
    Ok(mappings)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_directory_must_be_absolute_or_empty() {
        assert!(check_log_directory("").is_ok());
        assert!(check_log_directory("/var/log/pods/ns_pod_uid").is_ok());
        for bad in ["logs", "./logs", "../var/log", "/var/log\0x"] {
            let err = check_log_directory(bad).unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidArgument, "{bad:?}");
            assert!(err.to_string().contains("log_directory"), "{err}");
        }
    }
}
