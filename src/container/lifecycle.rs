//! The container operations of [`ContainerService`], and recovery.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::record::{self, Container, ContainerState};
use super::spec::{self, NamespacePath, Namespaces, SandboxFiles, SpecInput};
use super::{rootfs, state_name, ContainerError, ContainerService, Entry};
use crate::api;
use crate::error::Classify;
use crate::runtime::{self, ExecOutput, MonitorConfig};
use crate::sandbox::{Sandbox, SandboxState};
use crate::store::now_nanos;

/// Cap on ExecSync's stdout and stderr together (not each), so that the
/// reply fits in one gRPC message; what is cut ends with a marker.
pub const EXEC_OUTPUT_CAP: usize = crate::cri::MAX_EXEC_OUTPUT_BYTES;
/// How often a stop checks whether the container has exited.
const EXIT_POLL: Duration = Duration::from_millis(5);
/// How long to wait for a SIGKILLed container to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl ContainerService {
    fn record_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.state.join(id)
    }

    /// CreateContainer: a created (not started) container, or nothing.
    pub async fn create(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
    ) -> Result<Container, ContainerError> {
        let metadata = config
            .metadata
            .clone()
            .ok_or(ContainerError::Missing("config.metadata"))?;
        if metadata.name.is_empty() {
            return Err(ContainerError::Missing("config.metadata.name"));
        }
        if metadata.name.contains('/') || metadata.name.contains('\0') {
            return Err(ContainerError::Invalid {
                field: "metadata.name",
                reason: "contains '/' or NUL".into(),
            });
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.trim().to_string())
            .filter(|i| !i.is_empty())
            .ok_or(ContainerError::Missing("config.image.image"))?;
        let sandbox_entry = self.sandboxes.get(sandbox_id)?;
        // Held until the container is recorded, so that a concurrent
        // StopPodSandbox either sees it or runs first and leaves the pod
        // NotReady for the check below.
        let _pod_op = sandbox_entry.op.lock().await;
        let sandbox = sandbox_entry.get();
        if sandbox.state != SandboxState::Ready {
            return Err(ContainerError::SandboxNotReady(sandbox.id));
        }
        let image = self
            .images
            .resolve(&image_name)?
            .ok_or_else(|| ContainerError::ImageNotFound(image_name.clone()))?;
        spec::prepare_host_paths(&config)?;

        let id = crate::sync::new_id();
        let pod = sandbox.metadata();
        let name = format!(
            "{}_{}_{}_{}_{}",
            metadata.name, pod.name, pod.namespace, pod.uid, metadata.attempt
        );
        self.names.reserve(&name, &id)?;
        let mut undo = crate::sync::Undo::default();
        undo.push("releasing the container name", || {
            self.names.release(&name);
            Ok(())
        });
        let record_dir = self.record_dir(&id);
        let state_dir = self.state_dir(&id);
        let rootfs_dir = state_dir.join("rootfs");
        for dir in [&record_dir, &state_dir] {
            crate::store::create_dir_all(dir)?;
        }
        {
            let (record_dir, state_dir) = (record_dir.clone(), state_dir.clone());
            undo.push("removing container directories", move || {
                let _ = std::fs::remove_dir_all(&state_dir);
                std::fs::remove_dir_all(&record_dir).map_err(|e| e.to_string())
            });
        }
        self.images.hold_layers(&id, image.layers.clone());
        {
            let id = id.clone();
            undo.push("releasing image layers", move || {
                self.images.release_layers(&id).map_err(|e| e.to_string())
            });
        }
        rootfs::mount_overlay(&self.images.lower_dirs(&image), &record_dir, &rootfs_dir)?;
        {
            let rootfs_dir = rootfs_dir.clone();
            undo.push("unmounting the rootfs", move || {
                rootfs::unmount(&rootfs_dir).map_err(|e| e.to_string())
            });
        }

        let image_config = self.image_config(&image)?;
        let security = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref());
        let user = super::user::resolve_user(
            &rootfs_dir,
            image_config.user().as_deref().unwrap_or(""),
            security,
        )?;
        let namespaces = self.namespaces_for(&sandbox, &config)?;
        let cgroup_parent = sandbox
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        let generated = spec::generate(&SpecInput {
            container_id: &id,
            sandbox_id: &sandbox.id,
            config: &config,
            sandbox: &sandbox.config,
            image: &image_config,
            image_name: &image_name,
            rootfs: &rootfs_dir,
            namespaces,
            sandbox_files: SandboxFiles {
                hosts: Some(sandbox.hosts.clone()),
                resolv_conf: Some(sandbox.resolv_conf.clone()),
                hostname: Some(sandbox.hostname_file.clone()),
                shm: sandbox.shm.clone(),
            },
            cgroups_path: cgroups_path(&cgroup_parent, &id),
            user,
            host: self.options.host.clone(),
        })?;
        let spec_json = serde_json::to_vec(&generated).map_err(|e| ContainerError::Invalid {
            field: "spec",
            reason: e.to_string(),
        })?;
        crate::store::write_atomic(&state_dir.join("config.json"), &spec_json)?;
        let stop_signal = spec::container_stop_signal(&config, &image_config)? as i32;

        let log_path = log_path(&sandbox, &config)?;
        if let Some(parent) = log_path.as_ref().and_then(|p| p.parent()) {
            crate::store::create_dir_all(parent)?;
        }
        runtime::create_with_monitor(
            &self.options.runtime,
            &MonitorConfig {
                monitor_binary: self.options.monitor_binary.clone(),
                id: id.clone(),
                bundle: state_dir.clone(),
                state_dir: state_dir.clone(),
                log_path: log_path.clone().unwrap_or_else(|| "/dev/null".into()),
                stdin: config.stdin,
                stdin_once: config.stdin_once,
                tty: config.tty,
            },
        )
        .await?;
        let container = Container {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name: name.clone(),
            created_at_ns: now_nanos(),
            started_at_ns: None,
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.to_string()),
            image_id: image.id.to_string(),
            image_name,
            layers: image.layers.clone(),
            log_path,
            state_dir,
            rootfs: rootfs_dir,
            stop_signal,
            failure: None,
            exit: None,
            config,
        };
        if let Err(error) = record::save(&record_dir, &container, true) {
            // The one undo step that is asynchronous, so it is not in `undo`
            // (which runs the rest, unmounting the rootfs, on return).
            if let Err(e) = self.options.runtime.delete(&id, true).await {
                tracing::error!(id = %id, error = %e, "deleting the container of a failed create");
            }
            return Err(error.into());
        }
        undo.disarm();
        self.containers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Entry::new(container.clone()));
        Ok(container)
    }

    fn image_config(
        &self,
        image: &crate::image::metadata::ImageRecord,
    ) -> Result<oci_spec::image::Config, ContainerError> {
        let bytes = self.images.config_bytes(image)?.unwrap_or_default();
        let parsed: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&bytes).map_err(|e| ContainerError::Invalid {
                field: "image config",
                reason: e.to_string(),
            })?;
        Ok(parsed.config().clone().unwrap_or_default())
    }

    fn namespaces_for(
        &self,
        sandbox: &Sandbox,
        config: &api::ContainerConfig,
    ) -> Result<Namespaces, ContainerError> {
        let pinned = |path: &Option<PathBuf>| match path {
            Some(path) => NamespacePath::Join(path.clone()),
            None => NamespacePath::Host,
        };
        let options = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let pid_mode = options
            .map(|o| api::NamespaceMode::try_from(o.pid).unwrap_or(api::NamespaceMode::Container))
            .unwrap_or(api::NamespaceMode::Container);
        let pid = match pid_mode {
            api::NamespaceMode::Node => NamespacePath::Host,
            api::NamespaceMode::Container => NamespacePath::New,
            api::NamespaceMode::Pod => match &sandbox.pid_holder {
                Some(holder) => NamespacePath::Join(holder.path.clone()),
                None => {
                    return Err(ContainerError::Invalid {
                        field: "namespace_options.pid",
                        reason: "POD, but the pod has no shared PID namespace".into(),
                    })
                }
            },
            api::NamespaceMode::Target => {
                let target_id = options.map(|o| o.target_id.as_str()).unwrap_or("");
                let target = self.get(target_id)?.get();
                let pid = runtime_pid(&target)?;
                NamespacePath::Join(PathBuf::from(format!("/proc/{pid}/ns/pid")))
            }
        };
        Ok(Namespaces {
            network: pinned(&sandbox.namespaces.net),
            ipc: pinned(&sandbox.namespaces.ipc),
            uts: pinned(&sandbox.namespaces.uts),
            pid,
        })
    }

    /// StartContainer.
    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let entry = self.get(id)?;
        let _op = entry.op.lock().await;
        let container = entry.get();
        if container.state() != ContainerState::Created {
            return Err(wrong_state(&container, "start", "created"));
        }
        // Taken before the start: a short-lived container may have exited
        // (and its exit time been recorded) by the time `start` returns.
        let started_at = now_nanos();
        if let Err(error) = self.options.runtime.start(&container.id).await {
            let failed = entry.update(|c| c.failure = Some(crate::error::chain(&error)));
            record::save(&self.record_dir(&failed.id), &failed, false)?;
            return Err(error.into());
        }
        let started = entry.update(|c| c.started_at_ns = Some(started_at));
        record::save(&self.record_dir(&started.id), &started, false)?;
        Ok(())
    }

    /// StopContainer: the stop signal, then SIGKILL after `timeout`.
    /// Stopping a container that is not running succeeds.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let entry = self.get(id)?;
        let _op = entry.op.lock().await;
        self.stop_locked(&entry, timeout).await
    }

    async fn stop_locked(&self, entry: &Entry, timeout: Duration) -> Result<(), ContainerError> {
        let container = entry.get();
        match container.state() {
            ContainerState::Running => {}
            ContainerState::Created => {
                // Never started: nothing to signal, but it must not start later.
                self.kill(&container, Signal::SIGKILL).await?;
                self.wait_exit(entry, KILL_WAIT).await;
                return Ok(());
            }
            ContainerState::Exited | ContainerState::Unknown => return Ok(()),
        }
        if !timeout.is_zero() {
            let signal = Signal::try_from(container.stop_signal).unwrap_or(Signal::SIGTERM);
            self.kill(&container, signal).await?;
            if self.wait_exit(entry, timeout).await {
                return Ok(());
            }
        }
        self.kill(&container, Signal::SIGKILL).await?;
        if !self.wait_exit(entry, KILL_WAIT).await {
            tracing::warn!(id = %container.id, "container not reaped after SIGKILL");
        }
        Ok(())
    }

    async fn kill(&self, container: &Container, signal: Signal) -> Result<(), ContainerError> {
        match self.options.runtime.kill(&container.id, signal, true).await {
            Ok(()) => Ok(()),
            // Exited meanwhile: the monitor records it.
            Err(e) if e.is_not_found() || e.kind() == crate::error::Kind::FailedPrecondition => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the container exited within `timeout`.
    async fn wait_exit(&self, entry: &Entry, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if entry.get().exit.is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// RemoveContainer: forcibly, and succeeding for an unknown container.
    pub async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let entry = match self.get(id) {
            Ok(entry) => entry,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = entry.op.lock().await;
        self.remove_locked(&entry).await
    }

    async fn remove_locked(&self, entry: &Entry) -> Result<(), ContainerError> {
        self.stop_locked(entry, Duration::ZERO).await?;
        let container = entry.get();
        self.options.runtime.delete(&container.id, true).await?;
        rootfs::unmount(&container.rootfs)?;
        crate::store::remove_dir_atomic(&self.record_dir(&container.id))?;
        if let Err(e) = std::fs::remove_dir_all(&container.state_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(id = %container.id, error = %e, "removing container state");
            }
        }
        self.containers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&container.id);
        self.names.release(&container.name);
        self.images.release_layers(&container.id)?;
        Ok(())
    }

    /// ExecSync: runs `cmd` in the container with its process settings.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, ContainerError> {
        if cmd.is_empty() {
            return Err(ContainerError::Missing("cmd"));
        }
        let container = self.get(id)?.get();
        if container.state() != ContainerState::Running {
            return Err(wrong_state(&container, "exec", "running"));
        }
        let bundle = std::fs::read(container.state_dir.join("config.json")).map_err(|e| {
            ContainerError::Invalid {
                field: "bundle",
                reason: e.to_string(),
            }
        })?;
        let spec: oci_spec::runtime::Spec =
            serde_json::from_slice(&bundle).map_err(|e| ContainerError::Invalid {
                field: "bundle",
                reason: e.to_string(),
            })?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cmd));
        process.set_terminal(Some(false));
        process.set_console_size(None);
        Ok(self
            .options
            .runtime
            .exec_sync(&container.id, &process, timeout, EXEC_OUTPUT_CAP)
            .await?)
    }

    /// ReopenContainerLog: returns once the monitor writes to a fresh file.
    pub async fn reopen_log(&self, id: &str) -> Result<(), ContainerError> {
        let container = self.get(id)?.get();
        if container.state() != ContainerState::Running {
            return Err(wrong_state(&container, "reopening the log", "running"));
        }
        Ok(runtime::reopen_log(&container.state_dir).await?)
    }

    /// UpdateContainerResources.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: Option<&api::LinuxContainerResources>,
    ) -> Result<(), ContainerError> {
        let entry = self.get(id)?;
        let _op = entry.op.lock().await;
        let container = entry.get();
        if !matches!(
            container.state(),
            ContainerState::Created | ContainerState::Running
        ) {
            return Err(wrong_state(
                &container,
                "updating resources",
                "created or running",
            ));
        }
        let resources = spec::update_resources(resources, &self.options.host)?;
        self.options
            .runtime
            .update(&container.id, &resources)
            .await?;
        Ok(())
    }

    /// StopPodSandbox: every container of the pod is killed, then the pod's
    /// network and namespaces go. Unknown pods succeed (CRI).
    pub async fn stop_sandbox(&self, sandbox_id: &str) -> Result<(), ContainerError> {
        self.with_sandbox(sandbox_id, false).await
    }

    /// RemovePodSandbox: its containers too. Unknown pods succeed (CRI).
    pub async fn remove_sandbox(&self, sandbox_id: &str) -> Result<(), ContainerError> {
        self.with_sandbox(sandbox_id, true).await
    }

    /// Stops (or removes) a pod's containers, then the pod itself, holding
    /// the pod's lock throughout so no container is created meanwhile.
    async fn with_sandbox(&self, sandbox_id: &str, remove: bool) -> Result<(), ContainerError> {
        let entry = match self.sandboxes.get(sandbox_id) {
            Ok(entry) => entry,
            Err(crate::sandbox::SandboxError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let _op = entry.op.lock().await;
        let sandbox_id = entry.get().id;
        for container in self.in_sandbox(&sandbox_id) {
            let _container_op = container.op.lock().await;
            if remove {
                self.remove_locked(&container).await?;
            } else {
                self.stop_locked(&container, Duration::ZERO).await?;
            }
        }
        if remove {
            self.sandboxes.remove(&entry).await?;
        } else {
            self.sandboxes.stop(&entry).await?;
        }
        Ok(())
    }

    /// Loads every container record and reconciles it with what is running;
    /// removes what a CreateContainer interrupted by a crash left behind.
    pub(super) async fn recover(&self) -> Result<(), ContainerError> {
        let mut recovered = std::collections::HashMap::new();
        for dir in crate::store::list_subdirs(&self.root)? {
            let id = file_name(&dir);
            let container = match record::load(&dir) {
                Ok(Some(container)) if self.sandboxes.get(&container.sandbox_id).is_ok() => {
                    container
                }
                _ => {
                    tracing::warn!(id = %id, "removing an incomplete or orphaned container");
                    self.discard(&id).await;
                    continue;
                }
            };
            self.images.hold_layers(&id, container.layers.clone());
            self.names.reserve(&container.name, &id).ok();
            let entry = Entry::new(container);
            let container = entry.get();
            if matches!(
                container.state(),
                ContainerState::Running | ContainerState::Created
            ) && !runtime::monitor_alive(&container.state_dir)
                && entry.get().exit.is_none()
            {
                tracing::warn!(id = %id, "monitor gone without recording an exit");
                let lost = entry.update(|c| {
                    c.failure = Some(
                        "the container's monitor exited without recording its exit (host reboot?)"
                            .into(),
                    )
                });
                record::save(&dir, &lost, false)?;
            }
            recovered.insert(id, entry);
        }
        for dir in crate::store::list_subdirs(&self.state)? {
            let id = file_name(&dir);
            if !recovered.contains_key(&id) {
                tracing::warn!(id = %id, "removing state of an unknown container");
                self.discard(&id).await;
            }
        }
        tracing::info!(containers = recovered.len(), "containers recovered");
        *self.containers.write().unwrap_or_else(|e| e.into_inner()) = recovered;
        Ok(())
    }

    /// Best-effort removal of everything a container ID may have on the host.
    async fn discard(&self, id: &str) {
        if let Err(e) = self.options.runtime.delete(id, true).await {
            tracing::warn!(id, error = %e, "deleting runtime container");
        }
        let state_dir = self.state_dir(id);
        if let Err(e) = rootfs::unmount(&state_dir.join("rootfs")) {
            tracing::warn!(id, error = %e, "unmounting rootfs");
        }
        let _ = std::fs::remove_dir_all(&state_dir);
        let _ = crate::store::remove_dir_atomic(&self.record_dir(id));
    }
}

fn wrong_state(
    container: &Container,
    action: &'static str,
    needed: &'static str,
) -> ContainerError {
    ContainerError::WrongState {
        id: container.id.clone(),
        state: state_name(container.state()),
        action,
        needed,
    }
}

/// The init pid of a running container, from the pid file `runc create`
/// wrote.
fn runtime_pid(container: &Container) -> Result<i32, ContainerError> {
    if container.state() != ContainerState::Running {
        return Err(wrong_state(
            container,
            "sharing its PID namespace",
            "running",
        ));
    }
    std::fs::read_to_string(
        container
            .state_dir
            .join(runtime::protocol::files::CONTAINER_PID),
    )
    .ok()
    .and_then(|pid| pid.trim().parse().ok())
    .ok_or_else(|| ContainerError::Invalid {
        field: "target container",
        reason: "its pid is unknown".into(),
    })
}

/// kubelet gives the pod's log directory and a path relative to it.
fn log_path(
    sandbox: &Sandbox,
    config: &api::ContainerConfig,
) -> Result<Option<PathBuf>, ContainerError> {
    if config.log_path.is_empty() {
        return Ok(None);
    }
    let relative = Path::new(&config.log_path);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ContainerError::Invalid {
            field: "log_path",
            reason: format!("{:?} must be relative, without '..'", config.log_path),
        });
    }
    let directory = &sandbox.config.log_directory;
    if directory.is_empty() {
        return Err(ContainerError::Invalid {
            field: "log_path",
            reason: "the sandbox has no log_directory".into(),
        });
    }
    Ok(Some(Path::new(directory).join(relative)))
}

/// cgroupfs driver: `<parent>/<id>`, or a `wharf` parent when kubelet gave
/// none.
fn cgroups_path(parent: &str, id: &str) -> String {
    let parent = if parent.is_empty() { "/wharf" } else { parent };
    format!("{}/{id}", parent.trim_end_matches('/'))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
