//! The OCI runtime driver: a typed wrapper around a runc-compatible CLI,
//! and the daemon's side of the per-container monitor.
//!
//! Every runtime call passes `--log-format json`; failures are read from
//! the runtime's JSON log (or its stderr) and classified once, in
//! [`error::classify`].
//!
//! Containers are created by `wharf-monitor` (see [`create_with_monitor`]),
//! which runs `runtime create` with pipes it keeps, so logs and the exit
//! code survive the daemon. Everything else (`start`, `kill`, `delete`,
//! `state`, `exec`, `update`) the daemon runs itself.

mod attach;
pub mod attach_frames;
mod console;
pub mod error;
mod exec;
mod exec_session;
pub mod features;
pub mod handlers;
mod monitor;
pub mod protocol;
mod session;
pub mod socket_path;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

pub use attach::attach;
pub use error::{Failure, RuntimeError};
pub use exec::ExecOutput;
pub use features::RuntimeFeatures;
pub use handlers::{RuntimeHandler, RuntimeHandlers, UnknownHandler};
pub use monitor::{
    cancel_with_monitor, create_with_monitor, default_monitor_binary, monitor_alive, read_exit,
    reopen_log, start_with_monitor, watch_exit, ContainerEnd, Created, MonitorConfig,
};
pub use protocol::ExitStatus;
pub use session::{SessionIo, SessionReader, SessionWriter, WindowSize};

/// A runc-compatible runtime with its own state root, so that Wharf
/// instances never see each other's containers.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    binary: PathBuf,
    root: PathBuf,
    /// Global options given before every command (after `--root`), from a
    /// runtime handler's `options`.
    options: Vec<OsString>,
    /// How long one runtime command (start, kill, delete, state, update)
    /// may take before it is killed and the call fails: a hung runtime
    /// must not hold a container's lock, and its caller, forever.
    command_timeout: Duration,
}

/// containerd waits for its shim without a limit and CRI-O gives the runtime
/// minutes; two minutes covers a slow start on a loaded node.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A container's status as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "creating" => Status::Creating,
            "created" => Status::Created,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "stopped" => Status::Stopped,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerState {
    pub status: Status,
    /// The init process (0 once stopped).
    pub pid: i32,
}

/// The part of `runtime state` Wharf reads.
#[derive(Deserialize)]
struct StateOutput {
    status: String,
    #[serde(default)]
    pid: i32,
}

/// Where `runtime create` puts its outputs; see [`OciRuntime::create_args`].
pub struct CreateOptions<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: &'a Path,
    pub log_file: &'a Path,
    /// With a terminal: the unix socket receiving the pty master.
    pub console_socket: Option<&'a Path>,
}

impl OciRuntime {
    /// `binary`: a path or a name looked up in `PATH`; `root`: the
    /// runtime's `--root`, private to this Wharf instance (e.g.
    /// `<state_dir>/runc`).
    pub fn new(binary: PathBuf, root: PathBuf) -> Self {
        Self {
            binary,
            root,
            options: Vec::new(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    pub fn with_command_timeout(self, command_timeout: Duration) -> Self {
        Self {
            command_timeout,
            ..self
        }
    }

    pub fn with_options(self, options: Vec<OsString>) -> Self {
        Self { options, ..self }
    }

    pub fn options(&self) -> &[OsString] {
        &self.options
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Arguments of `runtime create` (after the program name), for the
    /// monitor, which runs it without tokio.
    pub fn create_args(&self, options: &CreateOptions<'_>) -> Vec<OsString> {
        self.container_args(&["create"], options)
    }

    /// Arguments of `runtime run --detach`: `create` and `start` in one
    /// runtime process, for the monitor of a deferred start.
    pub fn run_args(&self, options: &CreateOptions<'_>) -> Vec<OsString> {
        self.container_args(&["run", "--detach"], options)
    }

    /// Arguments of `runtime delete ID` (a stopped container), for the
    /// monitor, which deletes its container once it exited.
    pub fn delete_args(&self, id: &str) -> Vec<OsString> {
        let mut args = self.global_args(None);
        args.extend(["delete".into(), id.into()]);
        args
    }

    fn container_args(&self, verb: &[&str], options: &CreateOptions<'_>) -> Vec<OsString> {
        let mut args = self.global_args(Some(options.log_file));
        args.extend(verb.iter().map(OsString::from));
        args.push("--bundle".into());
        args.push(options.bundle.into());
        args.push("--pid-file".into());
        args.push(options.pid_file.into());
        if let Some(socket) = options.console_socket {
            args.push("--console-socket".into());
            args.push(socket.into());
        }
        args.push(options.id.into());
        args
    }

    /// `--root R [OPTIONS...] [--log L] --log-format json`. Without a log
    /// file runc writes its JSON log lines to stderr.
    fn global_args(&self, log_file: Option<&Path>) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--root".into(), self.root.clone().into()];
        args.extend(self.options.iter().cloned());
        if let Some(log) = log_file {
            args.push("--log".into());
            args.push(log.into());
        }
        args.push("--log-format".into());
        args.push("json".into());
        args
    }

    fn command(&self, log_file: Option<&Path>) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(self.global_args(log_file))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `runtime <command> <args...>`; stdout on success, else the
    /// classified error from the JSON log lines runc wrote to stderr.
    async fn run(
        &self,
        command: &'static str,
        id: &str,
        args: &[&OsStr],
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let mut cmd = self.command(None);
        cmd.arg(command).args(args);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let spawn_error = |source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            command,
            id: id.to_owned(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_error)?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            // A runtime that exits early closes the pipe: its stderr says why.
            let _ = stdin.write_all(input).await;
        }
        // On a timeout the child is dropped, which kills it (kill_on_drop)
        // and leaves its reaping to tokio.
        let output = tokio::time::timeout(self.command_timeout, child.wait_with_output())
            .await
            .map_err(|_| RuntimeError::TimedOut {
                command,
                id: id.to_owned(),
                timeout: self.command_timeout,
            })?
            .map_err(spawn_error)?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let message = error::runtime_message(&output.stderr, &output.stderr);
        Err(RuntimeError::failed(command, id, message))
    }

    /// Starts a created container's user process.
    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", id, &[OsStr::new(id)], None).await?;
        Ok(())
    }

    /// Sends `signal` to the init process, or to every process of the
    /// container with `all`.
    pub async fn kill(
        &self,
        id: &str,
        signal: nix::sys::signal::Signal,
        all: bool,
    ) -> Result<(), RuntimeError> {
        let number = (signal as i32).to_string();
        let mut args = Vec::with_capacity(3);
        if all {
            args.push(OsStr::new("--all"));
        }
        args.extend([OsStr::new(id), OsStr::new(&number)]);
        self.run("kill", id, &args, None).await?;
        Ok(())
    }

    /// Deletes the container; one that does not exist is already deleted.
    /// `force` kills a running container first.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let mut args = Vec::with_capacity(2);
        if force {
            args.push(OsStr::new("--force"));
        }
        args.push(OsStr::new(id));
        match self.run("delete", id, &args, None).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(drop),
        }
    }

    /// `None` when the container does not exist.
    pub async fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        let stdout = match self.run("state", id, &[OsStr::new(id)], None).await {
            Ok(stdout) => stdout,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad_output = |detail: String| RuntimeError::BadOutput {
            command: "state",
            id: id.to_owned(),
            detail,
        };
        let state: StateOutput =
            serde_json::from_slice(&stdout).map_err(|e| bad_output(e.to_string()))?;
        let status = Status::parse(&state.status)
            .ok_or_else(|| bad_output(format!("unknown status {:?}", state.status)))?;
        Ok(Some(ContainerState {
            status,
            pid: state.pid,
        }))
    }

    /// Applies new resource limits to a running container.
    pub async fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), RuntimeError> {
        let json = serde_json::to_vec(resources).map_err(|e| RuntimeError::BadOutput {
            command: "update",
            id: id.to_owned(),
            detail: format!("encoding resources: {e}"),
        })?;
        let args = [OsStr::new("--resources"), OsStr::new("-"), OsStr::new(id)];
        self.run("update", id, &args, Some(&json)).await?;
        Ok(())
    }
}

/// Where a configured runtime (or other) binary is: a path as is, a bare
/// name looked up in PATH, as the daemon runs it. `None` when not there.
pub fn find_binary(configured: &Path) -> Option<PathBuf> {
    if configured.components().count() > 1 {
        return configured.is_file().then(|| configured.to_path_buf());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(configured))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_args_put_globals_first() {
        let runtime = OciRuntime::new("runc".into(), "/run/wharf/runc".into());
        let args = runtime.create_args(&CreateOptions {
            id: "c1",
            bundle: Path::new("/b"),
            pid_file: Path::new("/s/container.pid"),
            log_file: Path::new("/s/runtime.log"),
            console_socket: Some(Path::new("/s/console.sock")),
        });
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--root",
                "/run/wharf/runc",
                "--log",
                "/s/runtime.log",
                "--log-format",
                "json",
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/s/container.pid",
                "--console-socket",
                "/s/console.sock",
                "c1"
            ]
        );
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(Status::parse("running"), Some(Status::Running));
        assert_eq!(Status::parse("creating"), Some(Status::Creating));
        assert_eq!(Status::parse("weird"), None);
    }
}
