//! Streaming sessions on a container: exec with the client's stdio, and
//! attach to the stdio its monitor holds.

use super::exec::exec_outlived;
use super::record::wrong_state;
use super::record::ContainerState;
use super::{ContainerError, ContainerService};
use crate::runtime::{self, SessionIo};

impl ContainerService {
    /// Runs `cmd` in the running container `id` with `io` as its stdio (a
    /// terminal with `tty`); its exit code. Cancelled (and the process
    /// killed) shortly after the container exits, as ExecSync is.
    pub async fn exec_session(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: SessionIo,
    ) -> Result<i32, ContainerError> {
        let (entry, container, process) = self.exec_target(id, cmd, tty).await?;
        let exec = self
            .runtime_of(&container)?
            .exec_session(&container.id, &process, io);
        tokio::select! {
            exit_code = exec => Ok(exit_code?),
            gone = exec_outlived(&entry) => Err(gone),
        }
    }

    /// Joins the running container's stdio until it exits or the client
    /// stops reading. Stdin is refused for a container created without it.
    pub async fn attach(&self, id: &str, io: SessionIo) -> Result<(), ContainerError> {
        let container = self.get(id)?.get();
        if container.state() != ContainerState::Running {
            return Err(wrong_state(&container, "attach", "running"));
        }
        if io.stdin.is_some() && !container.config.stdin {
            return Err(ContainerError::Invalid {
                field: "stdin",
                reason: format!(
                    "container {} was created without stdin; attach without it",
                    container.id
                ),
            });
        }
        Ok(runtime::attach(&container.state_dir, io).await?)
    }

    /// Whether the container was created with a terminal.
    pub fn has_tty(&self, id: &str) -> Result<bool, ContainerError> {
        Ok(self.get(id)?.get().config.tty)
    }
}
