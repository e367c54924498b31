//! The container operations of [`ContainerService`], and recovery.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::identity::ProcessIdentity;
use super::record::{self, Container, ContainerState};
use super::spec;
use super::{rootfs, state_name, ContainerError, ContainerService, Entry};
use crate::api;
use crate::error::Classify;
use crate::runtime::{self, ContainerEnd, ExecOutput, OciRuntime};

use crate::store::now_nanos;
use crate::timing::{step, step_sync};

/// Cap on ExecSync's stdout and stderr together (not each), so that the
/// reply fits in one gRPC message; what is cut ends with a marker.
pub const EXEC_OUTPUT_CAP: usize = crate::cri::MAX_EXEC_OUTPUT_BYTES;
/// How long an ExecSync may still finish on its own once the container
/// exited (an exec in the container's own PID namespace dies with its
/// init and reports that); then it is cancelled, and its process killed.
pub(super) const EXEC_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long to wait for a SIGKILLed container to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long a failed kill waits for the monitor's exit report before the
/// failure stands: the runtime's delete at exit takes tens of milliseconds.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(2);

impl ContainerService {
    pub(super) fn record_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub(super) fn state_dir(&self, id: &str) -> PathBuf {
        self.state.join(id)
    }

    /// StartContainer.
    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let entry = self.get(id)?;
        let _op = entry.op.lock().await;
        let container = entry.get();
        if !container.state().can_start() {
            return Err(wrong_state(&container, "start", "created"));
        }
        let runtime = self.runtime_of(&container)?;
        let record_dir = self.record_dir(&container.id);
        // Taken before the start: a short-lived container may have exited
        // (and its exit time been recorded) by the time `start` returns.
        // Written ahead, so that a crash during the start leaves the time
        // for recovery to confirm with the runtime.
        let requested_at = now_nanos();
        let pending = entry.update(|c| {
            c.start_requested_at_ns = Some(requested_at);
            c.start_in_flight = true;
        });
        let _in_flight = StartInFlight(&entry);
        step(
            "recording the start intent",
            save_unsynced(&record_dir, &pending),
        )
        .await
        .inspect_err(|_| {
            // Not started, and not recorded as requested either.
            entry.update(|c| c.start_requested_at_ns = None);
        })?;
        let result = self.run_start(runtime, &container).await;
        let (result, identity) = match result {
            Ok(identity) => (Ok(()), identity),
            Err(error) => (Err(error), None),
        };
        let outcome = match &result {
            Ok(()) => StartOutcome::Started,
            // It may have started all the same (a start that a crash cut
            // short, retried): the runtime says which, and only a container
            // that never ran is a failed one.
            Err(_) => start_outcome(runtime, &container.id).await,
        };
        let recorded = entry.update(|c| {
            outcome.apply(c, &result);
            c.identity = identity.or(c.identity.take());
            c.start_in_flight = false;
        });
        // Unsynced: a reboot ends the container, and recovery then finds
        // its monitor gone whether or not the start reached the disk.
        step("recording the start", save_unsynced(&record_dir, &recorded)).await?;
        match (result, outcome) {
            (Ok(()), _) => Ok(()),
            (Err(_), StartOutcome::Started) => Err(wrong_state(&recorded, "start", "created")),
            (Err(error), _) => Err(error.into()),
        }
    }

    /// Starts the user process: a deferred start through the monitor (one
    /// `runtime run --detach`), else `runtime start` of the created
    /// container. The identity the init runs with, when read.
    async fn run_start(
        &self,
        runtime: &OciRuntime,
        container: &Container,
    ) -> Result<Option<ProcessIdentity>, runtime::RuntimeError> {
        if !container.deferred_start {
            step("runtime start", runtime.start(&container.id)).await?;
            return Ok(None);
        }
        let started = runtime::start_with_monitor(runtime, &container.id, &container.state_dir);
        let pid = step("monitor start (runtime run)", started).await?;
        let userns = self
            .sandboxes
            .get(&container.sandbox_id)
            .ok()
            .and_then(|entry| entry.get().userns);
        if userns.is_some() {
            // The container has its own mounts of them now: ours go, so
            // that nothing of the host's is left mounted in the state dir.
            let volumes = super::create::idmapped_volumes_dir(&container.state_dir);
            let unmounted =
                tokio::task::spawn_blocking(move || crate::idmap::unmount_all(&volumes)).await;
            if let Ok(Err(e)) = unmounted {
                tracing::warn!(id = %container.id, error = %e, "unmounting ID-mapped volume sources");
            }
        }
        Ok(ProcessIdentity::of_process(pid)
            .await
            .map(|identity| identity.seen_from(userns.as_ref())))
    }

    /// Whether a container whose start was requested has started, by the
    /// runtime's account.
    async fn start_outcome_of(&self, container: &Container) -> StartOutcome {
        match self.runtime_of(container) {
            Ok(runtime) => start_outcome(runtime, &container.id).await,
            Err(e) => {
                tracing::warn!(id = %container.id, error = %e, "cannot ask the runtime whether a start happened");
                StartOutcome::Unknown
            }
        }
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
            state @ (ContainerState::Created | ContainerState::Unknown) => {
                // Never started (or not known to have): nothing to signal,
                // but it must not start later.
                if container.deferred_start {
                    let cancel = runtime::cancel_with_monitor(&container.state_dir);
                    match step("cancelling the start", cancel).await {
                        // Gone: the watch records how it ended.
                        Ok(()) | Err(runtime::RuntimeError::MonitorGone { .. }) => {}
                        // The unresolved start happened after all ("already
                        // started"): killed as a running container is.
                        Err(_) if state == ContainerState::Unknown => {
                            self.kill(entry, Signal::SIGKILL).await?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    self.kill(entry, Signal::SIGKILL).await?;
                }
                step("waiting for the exit", entry.wait_exited(KILL_WAIT)).await;
                return Ok(());
            }
            ContainerState::Exited => return Ok(()),
        }
        if !timeout.is_zero() {
            let signal = Signal::try_from(container.stop_signal).unwrap_or(Signal::SIGTERM);
            self.kill(entry, signal).await?;
            if entry.wait_exited(timeout).await {
                return Ok(());
            }
        }
        step("runtime kill", self.kill(entry, Signal::SIGKILL)).await?;
        if !step("waiting for the exit", entry.wait_exited(KILL_WAIT)).await {
            tracing::warn!(id = %container.id, "container not reaped after SIGKILL");
        }
        Ok(())
    }

    async fn kill(&self, entry: &Entry, signal: Signal) -> Result<(), ContainerError> {
        let container = entry.get();
        match self
            .runtime_of(&container)?
            .kill(&container.id, signal, true)
            .await
        {
            Ok(()) => Ok(()),
            // Exited meanwhile: the monitor records it.
            Err(e) if e.is_not_found() || e.kind() == crate::error::Kind::FailedPrecondition => {
                Ok(())
            }
            // A deferred start's monitor deletes the runtime's container as
            // soon as the init exits, before it reports the exit: a kill in
            // between finds it half-deleted (its cgroup gone) and fails with
            // whatever the runtime trips on. The exit report settles it.
            Err(e) if container.deferred_start && entry.wait_exited(EXIT_REPORT_WAIT).await => {
                tracing::debug!(id = %container.id, error = %e, "killed a container that had exited");
                Ok(())
            }
            Err(e) => Err(e.into()),
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
        self.remove_locked(&entry, LayerDeletion::Background).await
    }

    async fn remove_locked(
        &self,
        entry: &Entry,
        layer_deletion: LayerDeletion,
    ) -> Result<(), ContainerError> {
        step("stopping", self.stop_locked(entry, Duration::ZERO)).await?;
        let container = entry.get();
        // A deferred start's monitor deleted it when it exited.
        if !container.exit.is_some_and(|exit| exit.runtime_deleted) {
            let runtime = self.runtime_of(&container)?;
            step("runtime delete", runtime.delete(&container.id, true)).await?;
        }
        // Its files are going: the watch (if it still runs) ends here.
        entry.stop_watching();
        step_sync("unmounting the rootfs", || {
            rootfs::unmount(&container.rootfs)
        })?;
        let (record_dir, state_dir) = (self.record_dir(&container.id), container.state_dir.clone());
        let (images, id) = (std::sync::Arc::clone(&self.images), container.id.clone());
        let remove = tokio::task::spawn_blocking(move || {
            let detached = remove_files(&record_dir, &state_dir)?;
            images.release_layers(&id)?;
            Ok::<_, ContainerError>(detached)
        });
        let detached = step("removing the files", remove)
            .await
            .map_err(|e| ContainerError::Task("removing the container's files", e))??;
        if let Some(detached) = detached {
            layer_deletion.delete(detached).await?;
        }
        self.containers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&container.id);
        let _ = self.changes.send(super::StateChange {
            id: container.id.clone(),
            sandbox_id: container.sandbox_id.clone(),
            state: None,
        });
        self.names.release(&container.name);
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
        let entry = self.get(id)?;
        let container = entry.get();
        if container.state() != ContainerState::Running {
            return Err(wrong_state(&container, "exec", "running"));
        }
        let process = exec_process(&container, cmd, false).await?;
        let exec = self.runtime_of(&container)?.exec_sync(
            &container.id,
            &process,
            timeout,
            EXEC_OUTPUT_CAP,
        );
        let container_gone = async {
            entry.exited().await;
            tokio::time::sleep(EXEC_AFTER_EXIT).await;
        };
        tokio::select! {
            output = exec => Ok(output?),
            () = container_gone => Err(wrong_state(&entry.get(), "exec", "running")),
        }
    }

    /// ReopenContainerLog: returns once the monitor writes to a fresh file.
    pub async fn reopen_log(&self, id: &str) -> Result<(), ContainerError> {
        let container = self.get(id)?.get();
        if container.state() != ContainerState::Running {
            return Err(wrong_state(&container, "reopening the log", "running"));
        }
        Ok(runtime::reopen_log(&container.state_dir).await?)
    }

    /// UpdateContainerResources, as containerd does it: the request is laid
    /// over the current resources; a created or running container's cgroup
    /// gets them through the runtime (`runc update`), an exited one only
    /// keeps them in its record (nothing runs to apply them to). The record
    /// changes only once the runtime has applied them.
    pub async fn update_resources(
        &self,
        id: &str,
        requested: Option<&api::LinuxContainerResources>,
    ) -> Result<(), ContainerError> {
        let entry = self.get(id)?;
        let _op = entry.op.lock().await;
        let container = entry.get();
        let current = match &container.resources {
            Some(current) => current.clone(),
            None => spec::resources_at_create(&container.config, &self.options.host)?,
        };
        let updated = spec::update_resources(Some(&current), requested, &self.options.host)?;
        // The bundle spec first, as containerd updates its spec first: it
        // is put back if the runtime refuses.
        let config_json = container.state_dir.join("config.json");
        let previous_spec = {
            let (path, resources) = (config_json.clone(), updated.clone());
            tokio::task::spawn_blocking(move || spec::rewrite_bundle_resources(&path, &resources))
                .await
                .map_err(|e| ContainerError::Task("rewriting the bundle spec", e))??
        };
        let applied = if container.state().may_run() {
            self.apply_resources(&container, &current, &updated).await
        } else {
            tracing::info!(id = %container.id, "container not running: resources recorded only");
            Ok(())
        };
        if let (Err(_), Some(previous)) = (&applied, previous_spec) {
            let restored = tokio::task::spawn_blocking(move || {
                crate::store::write_atomic(&config_json, &previous)
            })
            .await;
            if !matches!(restored, Ok(Ok(()))) {
                tracing::error!(id = %container.id, ?restored, "putting back the bundle spec of a refused update");
            }
        }
        applied?;
        let recorded = entry.update(|c| c.resources = Some(updated));
        record::save(&self.record_dir(&container.id), &recorded, false)?;
        Ok(())
    }

    /// `runc update`. The kernel may refuse part of an update (a memory
    /// limit below the usage, a CPU the host lacks) after runc wrote the
    /// rest: the previous resources are then put back, so that a refused
    /// update changes nothing. A container gone meanwhile is not an error
    /// (containerd: "task exited already").
    async fn apply_resources(
        &self,
        container: &Container,
        current: &oci_spec::runtime::LinuxResources,
        updated: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), ContainerError> {
        let runtime = self.runtime_of(container)?;
        let before = self.enforced_limits(container).await?;
        let error = match runtime.update(&container.id, updated).await {
            Ok(()) => return Ok(()),
            Err(error) if error.is_not_found() => return Ok(()),
            Err(error) => error,
        };
        let previous = spec::restoring(current, updated, &before);
        if let Err(e) = runtime.update(&container.id, &previous).await {
            tracing::error!(id = %container.id, error = %e, "putting back the resources of a refused update");
        }
        Err(match error {
            refused @ runtime::RuntimeError::Failed { .. } => {
                ContainerError::UpdateRefused(refused)
            }
            other => other.into(),
        })
    }

    /// What the container's cgroup enforces now, read from its files.
    async fn enforced_limits(
        &self,
        container: &Container,
    ) -> Result<crate::stats::limits::EnforcedLimits, ContainerError> {
        let sandbox = self.sandboxes.get(&container.sandbox_id)?.get();
        let parent = sandbox
            .config
            .linux
            .as_ref()
            .map_or("", |l| l.cgroup_parent.as_str());
        let cgroup = PathBuf::from(super::cgroups_path(parent, &container.id));
        tokio::task::spawn_blocking(move || {
            // Without cgroups mounted nothing is enforced: nothing to read.
            crate::cgroup::Hierarchies::detect()
                .map(|hierarchies| crate::stats::limits::enforced(&hierarchies, &cgroup))
                .unwrap_or_default()
        })
        .await
        .map_err(|e| ContainerError::Task("reading the cgroup limits", e))
    }

    /// Stops every container of pod `sandbox_id` (for StopPodSandbox, which
    /// holds the pod's lock meanwhile).
    pub async fn stop_all_in(&self, sandbox_id: &str) -> Result<(), ContainerError> {
        for container in self.in_sandbox(sandbox_id) {
            let _op = container.op.lock().await;
            self.stop_locked(&container, Duration::ZERO).await?;
        }
        Ok(())
    }

    /// Removes every container of pod `sandbox_id` (for RemovePodSandbox).
    pub async fn remove_all_in(&self, sandbox_id: &str) -> Result<(), ContainerError> {
        for container in self.in_sandbox(sandbox_id) {
            let _op = container.op.lock().await;
            // The pod's removal ends with nothing of it left on disk.
            self.remove_locked(&container, LayerDeletion::Inline)
                .await?;
        }
        Ok(())
    }

    /// Loads every container record and reconciles it with what is running;
    /// removes what a CreateContainer interrupted by a crash left behind.
    pub(super) async fn recover(&self) -> Result<(), ContainerError> {
        // Writable layers whose deletion a crash or stop cut short.
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || match crate::store::remove_temporaries(&root) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "deleted the leftovers of removed containers"),
            Err(e) => tracing::warn!(error = %e, "deleting the leftovers of removed containers"),
        });
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
            let entry = Entry::new(container, self.changes.clone());
            if entry.get().start_requested_at_ns.is_some() {
                // A StartContainer was cut short: did the runtime start it?
                // A deferred one whose monitor lives is asked to finish it.
                let outcome = self.finish_start(&entry.get()).await;
                tracing::warn!(id = %id, ?outcome, "reconciling a start interrupted by a crash");
                let reconciled = entry.update(|c| outcome.apply(c, &Ok(())));
                record::save(&dir, &reconciled, false)?;
            }
            let container = entry.get();
            if container.state().may_run() {
                // Read once, so that an exit while no daemon ran shows at
                // once; from here on the watcher reports it.
                let alive = runtime::monitor_alive(&container.state_dir);
                match runtime::read_exit(&container.state_dir) {
                    Ok(Some(exit)) => {
                        entry.record_end(ContainerEnd::Exited(exit));
                    }
                    _ if !alive => {
                        tracing::warn!(id = %id, "monitor gone without recording an exit");
                        let lost = entry.record_end(ContainerEnd::Lost);
                        record::save(&dir, &lost, false)?;
                    }
                    _ => entry.watch_exit(),
                }
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
        crate::metrics::global().containers_recovered(recovered.len() as u64);
        *self.containers.write().unwrap_or_else(|e| e.into_inner()) = recovered;
        Ok(())
    }

    /// Best-effort removal of everything a container ID may have on the host.
    async fn discard(&self, id: &str) {
        let state_dir = self.state_dir(id);
        // A monitor waiting for a start that will never come.
        if runtime::monitor_alive(&state_dir) {
            if let Err(e) = runtime::cancel_with_monitor(&state_dir).await {
                tracing::warn!(id, error = %e, "cancelling the monitor");
            }
        }
        // Which handler ran it is in the record, which may be gone: ask
        // them all (deleting an unknown container is fine).
        for handler in self.options.handlers.all() {
            if let Err(e) = handler.runtime.delete(id, true).await {
                tracing::warn!(id, handler = %handler.name, error = %e, "deleting runtime container");
            }
        }
        if let Err(e) = rootfs::unmount(&state_dir.join("rootfs")) {
            tracing::warn!(id, error = %e, "unmounting rootfs");
        }
        // Never delete through a host volume left mounted by a crash.
        match crate::idmap::unmount_all(&super::create::idmapped_volumes_dir(&state_dir)) {
            Ok(()) => drop(std::fs::remove_dir_all(&state_dir)),
            Err(e) => {
                tracing::warn!(id, error = %e, "keeping the state of a container with volumes still mounted")
            }
        }
        let _ = crate::store::remove_dir_atomic(&self.record_dir(id));
    }
}

impl ContainerService {
    /// For recovery: the outcome of a start a crash cut short. A monitor
    /// of a deferred start still alive is asked to start (again): it
    /// answers at once if it did, or runs the container now, as was
    /// requested; otherwise the runtime says whether the start happened.
    async fn finish_start(&self, container: &Container) -> StartOutcome {
        if container.deferred_start && runtime::monitor_alive(&container.state_dir) {
            if let Ok(runtime) = self.runtime_of(container) {
                let started =
                    runtime::start_with_monitor(runtime, &container.id, &container.state_dir).await;
                match started {
                    Ok(_) => return StartOutcome::Started,
                    Err(e) => {
                        tracing::warn!(id = %container.id, error = %e, "finishing an interrupted start")
                    }
                }
            }
        }
        self.start_outcome_of(container).await
    }
}

/// [`record::save_unsynced`] off the async workers: no fsync, but a file
/// created and renamed on a journaled filesystem can wait for a commit
/// that other calls' fsyncs started.
async fn save_unsynced(record_dir: &Path, container: &Container) -> Result<(), ContainerError> {
    let (record_dir, container) = (record_dir.to_path_buf(), container.clone());
    tokio::task::spawn_blocking(move || record::save_unsynced(&record_dir, &container))
        .await
        .map_err(|e| ContainerError::Task("saving the record", e))??;
    Ok(())
}

/// When the writable layer of a removed container is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerDeletion {
    /// Before the removal returns.
    Inline,
    /// After: the layer can be any size, and once its directory is renamed
    /// away the container is gone (as containerd's snapshots go in its
    /// garbage collection, after RemoveContainer). A crash first leaves a
    /// temporary that the next start deletes (see `recover`).
    Background,
}

impl LayerDeletion {
    async fn delete(self, detached: PathBuf) -> Result<(), ContainerError> {
        let delete = move || {
            std::fs::remove_dir_all(&detached)
                .map_err(|e| crate::error::IoError::new("removing", detached, e))
        };
        match self {
            LayerDeletion::Inline => step(
                "deleting the writable layer",
                tokio::task::spawn_blocking(delete),
            )
            .await
            .map_err(|e| ContainerError::Task("deleting the writable layer", e))?
            .map_err(|e| ContainerError::Store(e.into())),
            LayerDeletion::Background => {
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = delete() {
                        tracing::warn!(error = %e, "deleting a removed container's writable layer");
                    }
                });
                Ok(())
            }
        }
    }
}

/// Removes a container's state and renames its record (with its writable
/// layer) away: the renamed directory is returned, to be deleted.
///
/// The rename is not synced: a machine crash right after may bring the
/// record back whole, an exited container (its monitor gone with the
/// reboot) that kubelet removes again; a directory sync here would be a
/// journal commit on every RemoveContainer.
fn remove_files(record_dir: &Path, state_dir: &Path) -> Result<Option<PathBuf>, ContainerError> {
    let detached = crate::store::detach_dir_unsynced(record_dir)?;
    // Never delete through a host volume left mounted by a crash.
    crate::idmap::unmount_all(&super::create::idmapped_volumes_dir(state_dir))?;
    if let Err(e) = std::fs::remove_dir_all(state_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %state_dir.display(), error = %e, "removing container state");
        }
    }
    Ok(detached)
}

/// Clears the in-flight mark of a start when StartContainer ends, also
/// when its call is dropped half-way (a cancelled request): a start whose
/// outcome was not recorded by then is unresolved, and the container
/// Unknown.
struct StartInFlight<'a>(&'a Entry);

impl Drop for StartInFlight<'_> {
    fn drop(&mut self) {
        self.0.update(|c| c.start_in_flight = false);
    }
}

/// What became of a requested start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartOutcome {
    Started,
    NotStarted,
    /// The runtime could not say: the intent stays for the next recovery.
    Unknown,
}

impl StartOutcome {
    /// Records the outcome of the start requested at
    /// `start_requested_at_ns`; `result` is the start's own, if one ran.
    fn apply(self, container: &mut Container, result: &Result<(), crate::runtime::RuntimeError>) {
        match self {
            StartOutcome::Started => {
                container.started_at_ns = container.start_requested_at_ns.take();
            }
            StartOutcome::NotStarted => {
                container.start_requested_at_ns = None;
                if let Err(error) = result {
                    container.failure = Some(crate::error::chain(error));
                }
            }
            StartOutcome::Unknown => {}
        }
    }
}

/// The process of an exec in `container`: the container's own (user,
/// environment, capabilities, working directory) running `cmd`.
pub(super) async fn exec_process(
    container: &Container,
    cmd: Vec<String>,
    tty: bool,
) -> Result<oci_spec::runtime::Process, ContainerError> {
    // Wharf's own file (a fault reading it is Internal, not the
    // caller's), read off the async workers.
    let bundle = container.state_dir.join("config.json");
    let spec: oci_spec::runtime::Spec =
        tokio::task::spawn_blocking(move || crate::store::read_json(&bundle))
            .await
            .map_err(|e| ContainerError::Task("reading the bundle", e))??
            .ok_or_else(|| ContainerError::NotFound(container.id.clone()))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(cmd));
    process.set_terminal(Some(tty));
    process.set_console_size(None);
    Ok(process)
}

pub(super) fn wrong_state(
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

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Whether a container whose start was requested has started, by the
/// runtime's account.
async fn start_outcome(runtime: &OciRuntime, id: &str) -> StartOutcome {
    use crate::runtime::Status;
    match runtime.state(id).await {
        Ok(Some(state)) => match state.status {
            Status::Running | Status::Paused | Status::Stopped => StartOutcome::Started,
            Status::Created | Status::Creating => StartOutcome::NotStarted,
        },
        Ok(None) => StartOutcome::NotStarted,
        Err(e) => {
            tracing::warn!(id, error = %e, "asking the runtime whether a start happened");
            StartOutcome::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::tests::{change, container, entry};

    fn requested() -> Container {
        let mut container = container(false);
        container.start_requested_at_ns = Some(5);
        container
    }

    #[test]
    fn a_resolved_start_leaves_created_for_running_or_exited() {
        let mut started = requested();
        StartOutcome::Started.apply(&mut started, &Ok(()));
        assert_eq!(
            (started.state(), started.started_at_ns),
            (ContainerState::Running, Some(5))
        );

        let mut failed = requested();
        let error = runtime::RuntimeError::MonitorGone {
            state_dir: "/nonexistent".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        StartOutcome::NotStarted.apply(&mut failed, &Err(error));
        assert_eq!(failed.state(), ContainerState::Exited);
        assert!(failed.failure.is_some() && failed.start_requested_at_ns.is_none());

        let mut unresolved = requested();
        StartOutcome::Unknown.apply(&mut unresolved, &Ok(()));
        assert_eq!(unresolved.state(), ContainerState::Unknown);
    }

    #[tokio::test]
    async fn a_start_dropped_half_way_leaves_the_container_unknown() {
        let (entry, mut changes) = entry(false);
        entry.update(|c| {
            c.start_requested_at_ns = Some(5);
            c.start_in_flight = true;
        });
        let in_flight = StartInFlight(&entry);
        assert_eq!(entry.get().state(), ContainerState::Created);
        drop(in_flight);
        assert_eq!(entry.get().state(), ContainerState::Unknown);
        assert_eq!(changes.try_recv().unwrap(), change(ContainerState::Unknown));
        assert!(changes.try_recv().is_err());
    }
}
