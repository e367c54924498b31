//! The daemon's side of the monitor protocol: spawn `wharf-monitor`, wait
//! for its sync line, read the exit record, talk to its control socket.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::Command;

use super::error::RuntimeError;
use super::protocol::{
    files, is_monitor_cmdline, ControlReply, ControlRequest, ExitStatus, MonitorArgs, SyncMessage,
    MONITOR_BINARY_NAME,
};
use super::OciRuntime;

/// The monitor writes its sync line on its stdout: a pipe set up by the
/// spawn itself, so no other child of this multi-threaded daemon can
/// inherit (and hold open) the write end.
const SYNC_FD: i32 = 1;
/// Longest sync line or control reply accepted.
const MAX_LINE: u64 = 64 * 1024;
/// How much of the monitor's stderr is kept when it fails.
const MAX_STDERR: u64 = 16 * 1024;
/// How long a control request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the daemon tells a new monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// The `wharf-monitor` executable; [`default_monitor_binary`] is the
    /// one installed next to the running `wharf`.
    pub monitor_binary: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    /// The monitor's directory (pid files, exit record, sockets); created
    /// if missing. Its path must leave room for `/monitor.sock` within
    /// the 107 bytes a unix socket path may have.
    pub state_dir: PathBuf,
    /// The CRI log file.
    pub log_path: PathBuf,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    pub container_pid: i32,
    pub monitor_pid: i32,
}

/// `wharf-monitor` in the directory of the running executable.
pub fn default_monitor_binary() -> io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(MONITOR_BINARY_NAME))
}

/// Spawns the container's monitor, which runs `runtime create`; returns
/// once the container exists (created, not started) or creation failed.
///
/// The monitor stays this process's child (it only leaves the session);
/// a task reaps it whenever it exits, so it never lingers as a zombie. If
/// this future is dropped, the monitor carries on and is still reaped.
pub async fn create_with_monitor(
    runtime: &OciRuntime,
    config: &MonitorConfig,
) -> Result<Created, RuntimeError> {
    let io_error = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::Io { op, path, source }
    };
    tokio::fs::create_dir_all(&config.state_dir)
        .await
        .map_err(io_error("creating directory", &config.state_dir))?;
    let args = MonitorArgs {
        id: config.id.clone(),
        bundle: config.bundle.clone(),
        state_dir: config.state_dir.clone(),
        log_path: config.log_path.clone(),
        runtime: runtime.binary().to_path_buf(),
        runtime_root: runtime.root().to_path_buf(),
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        tty: config.tty,
        sync_fd: SYNC_FD,
    };
    let mut child = Command::new(&config.monitor_binary)
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        .spawn()
        .map_err(io_error("starting", &config.monitor_binary))?;
    let monitor_pid = child.id().map(|pid| pid as i32).unwrap_or(0);
    let (sync, stderr) = (child.stdout.take(), child.stderr.take());
    let id = config.id.clone();
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) => tracing::debug!(container = %id, %status, "monitor exited"),
            Err(e) => tracing::warn!(container = %id, error = %e, "waiting for monitor"),
        }
    });

    let monitor_error = |message: String| RuntimeError::Monitor {
        id: config.id.clone(),
        message,
    };
    let mut line = String::new();
    if let Some(sync) = sync {
        BufReader::new(sync.take(MAX_LINE))
            .read_line(&mut line)
            .await
            .map_err(|e| monitor_error(format!("reading its sync pipe: {e}")))?;
    }
    if line.trim().is_empty() {
        let mut text = String::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(MAX_STDERR).read_to_string(&mut text).await;
        }
        return Err(monitor_error(format!(
            "exited without reporting: {}",
            text.trim()
        )));
    }
    match serde_json::from_str::<SyncMessage>(&line) {
        Ok(SyncMessage::Created { container_pid }) => Ok(Created {
            container_pid,
            monitor_pid,
        }),
        Ok(SyncMessage::Failed { error }) => Err(RuntimeError::failed("create", &config.id, error)),
        Err(e) => Err(monitor_error(format!(
            "invalid sync line {:?}: {e}",
            line.trim()
        ))),
    }
}

/// The container's exit, once its monitor recorded it.
pub fn read_exit(state_dir: &Path) -> Result<Option<ExitStatus>, RuntimeError> {
    Ok(crate::store::read_json(&state_dir.join(files::EXIT))?)
}

/// Asks the monitor to reopen the container log; returns once it has.
pub async fn reopen_log(state_dir: &Path) -> Result<(), RuntimeError> {
    let request = ControlRequest::ReopenLog;
    let reply = tokio::time::timeout(CONTROL_TIMEOUT, send_control(state_dir, request))
        .await
        .unwrap_or_else(|_| {
            Err(RuntimeError::ControlFailed {
                state_dir: state_dir.to_path_buf(),
                request: request.as_str(),
                message: format!("no reply within {CONTROL_TIMEOUT:?}"),
            })
        })?;
    match reply {
        ControlReply::Ok => Ok(()),
        ControlReply::Error(message) => Err(RuntimeError::ControlFailed {
            state_dir: state_dir.to_path_buf(),
            request: request.as_str(),
            message,
        }),
    }
}

async fn send_control(
    state_dir: &Path,
    request: ControlRequest,
) -> Result<ControlReply, RuntimeError> {
    let socket = state_dir.join(files::CONTROL_SOCKET);
    let mut stream =
        UnixStream::connect(&socket)
            .await
            .map_err(|source| RuntimeError::MonitorGone {
                state_dir: state_dir.to_path_buf(),
                source,
            })?;
    let failed = |message: String| RuntimeError::ControlFailed {
        state_dir: state_dir.to_path_buf(),
        request: request.as_str(),
        message,
    };
    let line = format!("{}\n", request.as_str());
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(|e| failed(format!("sending: {e}")))?;
    let mut reply = String::new();
    BufReader::new(stream.take(MAX_LINE))
        .read_line(&mut reply)
        .await
        .map_err(|e| failed(format!("reading the reply: {e}")))?;
    ControlReply::parse(&reply).ok_or_else(|| failed(format!("invalid reply {:?}", reply.trim())))
}

/// Whether the pid in `monitor.pid` is a live `wharf-monitor` serving
/// `state_dir` (its command line is checked, so a reused pid does not
/// count, and a zombie has an empty one).
pub fn monitor_alive(state_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(state_dir.join(files::MONITOR_PID)) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return false;
    };
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| is_monitor_cmdline(&cmdline, state_dir))
        .unwrap_or(false)
}
