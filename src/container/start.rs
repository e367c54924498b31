//! StartContainer, and finishing a start a crash cut short (for
//! recovery): what became of a requested start is recorded once known.

use std::path::Path;

use super::identity::ProcessIdentity;
use super::record::{self, wrong_state, Container};
use super::{ContainerError, ContainerService, Entry};
use crate::runtime::{self, OciRuntime};
use crate::store::now_nanos;
use crate::sync::TaskFailure;
use crate::timing::step;

impl ContainerService {
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
    pub(super) async fn start_outcome_of(&self, container: &Container) -> StartOutcome {
        match self.runtime_of(container) {
            Ok(runtime) => start_outcome(runtime, &container.id).await,
            Err(e) => {
                tracing::warn!(id = %container.id, error = %e, "cannot ask the runtime whether a start happened");
                StartOutcome::Unknown
            }
        }
    }

    /// For recovery: the outcome of a start a crash cut short. A monitor
    /// of a deferred start still alive is asked to start (again): it
    /// answers at once if it did, or runs the container now, as was
    /// requested; otherwise the runtime says whether the start happened.
    pub(super) async fn finish_start(&self, container: &Container) -> StartOutcome {
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
    ContainerError::blocking("saving the record", move || {
        record::save_unsynced(&record_dir, &container)
    })
    .await
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
pub(super) enum StartOutcome {
    Started,
    NotStarted,
    /// The runtime could not say: the intent stays for the next recovery.
    Unknown,
}

impl StartOutcome {
    /// Records the outcome of the start requested at
    /// `start_requested_at_ns`; `result` is the start's own, if one ran.
    pub(super) fn apply(
        self,
        container: &mut Container,
        result: &Result<(), crate::runtime::RuntimeError>,
    ) {
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
    use crate::container::ContainerState;

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
