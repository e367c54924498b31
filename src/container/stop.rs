//! StopContainer (the stop signal, then SIGKILL), and stopping every
//! container of a pod for StopPodSandbox.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::record::ContainerState;
use super::{ContainerError, ContainerService, Entry};
use crate::error::Classify;
use crate::runtime;
use crate::timing::step;

/// How long to wait for a SIGKILLed container to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long a failed kill waits for the monitor's exit report before the
/// failure stands: the runtime's delete at exit takes tens of milliseconds.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(2);

impl ContainerService {
    /// StopContainer: the stop signal, then SIGKILL after `timeout`.
    /// Stopping a container that is not running succeeds.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let entry = self.get(id)?;
        let _op = entry.op.lock().await;
        self.stop_locked(&entry, timeout).await
    }

    pub(super) async fn stop_locked(
        &self,
        entry: &Entry,
        timeout: Duration,
    ) -> Result<(), ContainerError> {
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

    /// Stops every container of pod `sandbox_id` (for StopPodSandbox, which
    /// holds the pod's lock meanwhile).
    pub async fn stop_all_in(&self, sandbox_id: &str) -> Result<(), ContainerError> {
        for container in self.in_sandbox(sandbox_id) {
            let _op = container.op.lock().await;
            self.stop_locked(&container, Duration::ZERO).await?;
        }
        Ok(())
    }
}
