//! ExecSync, and the process of an exec (also for streaming exec).

use std::sync::Arc;
use std::time::Duration;

use super::record::{wrong_state, Container, ContainerState};
use super::{ContainerError, ContainerService, Entry};
use crate::runtime::ExecOutput;
use crate::sync::TaskFailure;

/// Cap on ExecSync's stdout and stderr together (not each), so that the
/// reply fits in one gRPC message; what is cut ends with a marker.
pub const EXEC_OUTPUT_CAP: usize = crate::cri::MAX_EXEC_OUTPUT_BYTES;
/// How long an ExecSync may still finish on its own once the container
/// exited (an exec in the container's own PID namespace dies with its
/// init and reports that); then it is cancelled, and its process killed.
const EXEC_AFTER_EXIT: Duration = Duration::from_secs(2);

impl ContainerService {
    /// ExecSync: runs `cmd` in the container with its process settings.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, ContainerError> {
        let (entry, container, process) = self.exec_target(id, cmd, false).await?;
        let exec = self.runtime_of(&container)?.exec_sync(
            &container.id,
            &process,
            timeout,
            EXEC_OUTPUT_CAP,
        );
        tokio::select! {
            output = exec => Ok(output?),
            gone = exec_outlived(&entry) => Err(gone),
        }
    }
}

/// Resolves [`EXEC_AFTER_EXIT`] after the container exited, with the error
/// of an exec still running then: a process that outlives its container
/// (it kept the pipes open) must not hold the call forever.
pub(super) async fn exec_outlived(entry: &Entry) -> ContainerError {
    entry.exited().await;
    tokio::time::sleep(EXEC_AFTER_EXIT).await;
    wrong_state(&entry.get(), "exec", "running")
}

impl ContainerService {
    /// For an exec of `cmd` in container `id`: its entry, its record (it
    /// must be running) and the process to run.
    pub(super) async fn exec_target(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
    ) -> Result<(Arc<Entry>, Container, oci_spec::runtime::Process), ContainerError> {
        if cmd.is_empty() {
            return Err(ContainerError::Missing("cmd"));
        }
        let entry = self.get(id)?;
        let container = entry.get();
        if container.state() != ContainerState::Running {
            return Err(wrong_state(&container, "exec", "running"));
        }
        let process = exec_process(&container, cmd, tty).await?;
        Ok((entry, container, process))
    }
}

/// The process of an exec in `container`: the container's own (user,
/// environment, capabilities, working directory) running `cmd`.
async fn exec_process(
    container: &Container,
    cmd: Vec<String>,
    tty: bool,
) -> Result<oci_spec::runtime::Process, ContainerError> {
    // Wharf's own file (a fault reading it is Internal, not the
    // caller's), read off the async workers.
    let bundle = container.state_dir.join("config.json");
    let spec: oci_spec::runtime::Spec = ContainerError::blocking("reading the bundle", move || {
        crate::store::read_json(&bundle)
    })
    .await?
    .ok_or_else(|| ContainerError::NotFound(container.id.clone()))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(cmd));
    process.set_terminal(Some(tty));
    process.set_console_size(None);
    Ok(process)
}
