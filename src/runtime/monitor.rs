//! The daemon's side of the monitor protocol: spawn `wharf-monitor`, wait
//! for its sync line, learn of the container's exit, talk to its control
//! socket.
//!
//! Exits are pushed: [`watch_exit`] holds a `wait-exit` connection to the
//! monitor's control socket, which the monitor answers with the exit
//! record when the container has exited. This rather than inotify on
//! `exit.json`: one connection tells both that the container exited (the
//! answer, with the record in it) and that the monitor died without
//! recording an exit (the connection closes unanswered and `exit.json` is
//! still missing), which a file watch cannot see; the monitor already
//! serves the socket from its poll loop, so a held connection costs it a
//! few bytes and no wake-ups. The cost is one descriptor per live
//! container in the daemon.
//!
//! Nothing is missed between `create` and the subscription: the monitor
//! writes `exit.json` before it closes any connection or removes its
//! socket, so a watch that starts late, is refused, or is cut off reads
//! the file, and a missing file with a dead monitor means the exit is lost.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::error::RuntimeError;
use super::protocol::{
    files, is_monitor_cmdline, ControlReply, ControlRequest, ExitStatus, MonitorArgs, SyncMessage,
    MONITOR_BINARY_NAME,
};
use super::{socket_path, OciRuntime};

/// The monitor writes its sync line on its stdout: a pipe set up by the
/// spawn itself, so no other child of this multi-threaded daemon can
/// inherit (and hold open) the write end.
const SYNC_FD: i32 = 1;
/// Longest sync line or control reply accepted.
const MAX_LINE: u64 = 64 * 1024;
/// The read buffer of a control reply (one short line; a longer one takes
/// more reads). Small, because every container's `wait-exit` holds one
/// for as long as the container runs.
const REPLY_BUFFER: usize = 512;
/// How much of the monitor's stderr is kept when it fails.
const MAX_STDERR: u64 = 16 * 1024;
/// How long a control request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause before [`watch_exit`] asks again, when a live
/// monitor turned its `wait-exit` away (busy, or an older monitor that
/// does not know the request: then this is a slow poll of `exit.json`).
const WATCH_RETRY_FIRST: Duration = Duration::from_millis(50);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);

/// How a container ended, as far as its monitor can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEnd {
    Exited(ExitStatus),
    /// The monitor is gone and recorded no exit (killed, host reboot).
    Lost,
}

/// What the daemon tells a new monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// The `wharf-monitor` executable; [`default_monitor_binary`] is the
    /// one installed next to the running `wharf`.
    pub monitor_binary: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    /// The monitor's directory (pid files, exit record, sockets); created
    /// if missing. Of any depth: see [`super::socket_path`].
    pub state_dir: PathBuf,
    /// The CRI log file.
    pub log_path: PathBuf,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    /// No runtime runs at create: the container is run by
    /// [`start_with_monitor`] (one `runtime run --detach`).
    pub defer_start: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    /// The init, blocked before its exec; `None` for a deferred start.
    pub container_pid: Option<i32>,
    pub monitor_pid: i32,
}

/// `wharf-monitor` in the directory of the running executable.
pub fn default_monitor_binary() -> io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(MONITOR_BINARY_NAME))
}

/// Spawns the container's monitor, which runs `runtime create`; returns
/// once the container exists (created, not started) or creation failed.
/// With `defer_start`, returns once the monitor is ready, before any
/// runtime ran.
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
        move |source| RuntimeError::Io(crate::error::IoError::new(op, path, source))
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
        runtime_options: runtime.options().to_vec(),
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        tty: config.tty,
        defer_start: config.defer_start,
        // For the step timings (debug level) of StartContainer.
        timed_start: config.defer_start,
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
        let mut sync = BufReader::new(sync.take(MAX_LINE));
        let reported = sync.read_line(&mut line);
        match tokio::time::timeout(runtime.command_timeout(), reported).await {
            Ok(read) => {
                read.map_err(|e| monitor_error(format!("reading its sync pipe: {e}")))?;
            }
            Err(_) => {
                // A hung `runtime create`: the monitor leads its own process
                // group, with the runtime and its init in it. The caller
                // deletes whatever state the runtime kept.
                let group = nix::unistd::Pid::from_raw(monitor_pid);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                return Err(RuntimeError::TimedOut {
                    command: "create",
                    id: config.id.clone(),
                    timeout: runtime.command_timeout(),
                });
            }
        }
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
            container_pid: Some(container_pid),
            monitor_pid,
        }),
        Ok(SyncMessage::Ready { .. }) => Ok(Created {
            container_pid: None,
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

/// Returns when the container of the monitor serving `state_dir` has
/// ended: its exit record, pushed by the monitor, or read from `exit.json`
/// when the control connection closed or was refused; [`ContainerEnd::Lost`]
/// when the monitor is gone without one. Cancel-safe: dropping it closes
/// the connection, and the monitor forgets it.
pub async fn watch_exit(state_dir: &Path) -> ContainerEnd {
    let mut retry = WATCH_RETRY_FIRST;
    loop {
        let why = match send_control(state_dir, ControlRequest::WaitExit).await {
            Ok(ControlReply::Exit(status)) => return ContainerEnd::Exited(status),
            Ok(other) => format!("answered {:?}", other.to_line().trim()),
            Err(e) => crate::error::chain(&e),
        };
        tracing::debug!(state_dir = %state_dir.display(), %why, "wait-exit ended without the exit");
        let dir = state_dir.to_path_buf();
        let checked = tokio::task::spawn_blocking(move || {
            // Liveness first: a monitor found dead has written all it will.
            let alive = monitor_alive(&dir);
            (alive, read_exit(&dir))
        })
        .await;
        let (alive, exit) = match checked {
            Ok(checked) => checked,
            Err(e) => (
                true,
                Err(RuntimeError::Monitor {
                    id: state_dir.display().to_string(),
                    message: format!("checking for an exit: {e}"),
                }),
            ),
        };
        match exit {
            Ok(Some(status)) => return ContainerEnd::Exited(status),
            Ok(None) if !alive => return ContainerEnd::Lost,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(state_dir = %state_dir.display(), error = %crate::error::chain(&e), "reading the exit record");
                if !alive {
                    return ContainerEnd::Lost;
                }
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(WATCH_RETRY_MAX);
    }
}

/// Asks the monitor to reopen the container log; returns once it has.
pub async fn reopen_log(state_dir: &Path) -> Result<(), RuntimeError> {
    let request = ControlRequest::ReopenLog;
    match control_within(state_dir, request, CONTROL_TIMEOUT).await? {
        ControlReply::Ok => Ok(()),
        other => Err(unexpected(state_dir, request, other)),
    }
}

/// Runs the container of a monitor created with `defer_start` (`runtime
/// run --detach`); its init's pid once it runs. A runtime failure is
/// [`RuntimeError::Failed`] with the runtime's message, as a `runtime
/// start` failure would be; the monitor then exits without an exit record.
/// Asking again after a start returns the same pid.
pub async fn start_with_monitor(
    runtime: &OciRuntime,
    id: &str,
    state_dir: &Path,
) -> Result<i32, RuntimeError> {
    let request = ControlRequest::Start;
    let timeout = runtime.command_timeout();
    let Ok(reply) = tokio::time::timeout(timeout, send_control(state_dir, request)).await else {
        // A hung runtime: the monitor leads its own process group, with
        // the runtime in it. Only if the pid is still that monitor's: after
        // a daemon restart it is no child of ours, and may have been reused.
        if let Some(pid) = monitor_pid(state_dir).filter(|_| monitor_alive(state_dir)) {
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        return Err(RuntimeError::TimedOut {
            command: "start",
            id: id.to_string(),
            timeout,
        });
    };
    match reply? {
        ControlReply::Started(started) => {
            if let Some(us) = started.runtime_us {
                crate::timing::record_step("runtime run --detach", Duration::from_micros(us));
            }
            Ok(started.pid)
        }
        ControlReply::Error(message) => Err(RuntimeError::failed("start", id, message)),
        other => Err(unexpected(state_dir, request, other)),
    }
}

/// Tells the monitor of a not yet started deferred container that it will
/// never run: it records a SIGKILL exit and exits.
pub async fn cancel_with_monitor(state_dir: &Path) -> Result<(), RuntimeError> {
    let request = ControlRequest::Cancel;
    match control_within(state_dir, request, CONTROL_TIMEOUT).await? {
        ControlReply::Ok => Ok(()),
        other => Err(unexpected(state_dir, request, other)),
    }
}

async fn control_within(
    state_dir: &Path,
    request: ControlRequest,
    timeout: Duration,
) -> Result<ControlReply, RuntimeError> {
    tokio::time::timeout(timeout, send_control(state_dir, request))
        .await
        .unwrap_or_else(|_| {
            Err(RuntimeError::ControlFailed {
                state_dir: state_dir.to_path_buf(),
                request: request.as_str(),
                message: format!("no reply within {timeout:?}"),
            })
        })
}

fn unexpected(state_dir: &Path, request: ControlRequest, reply: ControlReply) -> RuntimeError {
    RuntimeError::ControlFailed {
        state_dir: state_dir.to_path_buf(),
        request: request.as_str(),
        message: match reply {
            ControlReply::Error(message) => message,
            other => format!("unexpected answer {:?}", other.to_line().trim()),
        },
    }
}

async fn send_control(
    state_dir: &Path,
    request: ControlRequest,
) -> Result<ControlReply, RuntimeError> {
    let socket = state_dir.join(files::CONTROL_SOCKET);
    let mut stream =
        socket_path::connect(&socket)
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
    // A monitor that is finishing (its container just exited) may take the
    // connection and close it unanswered: that is a monitor gone, not a
    // protocol failure.
    let gone = |source: std::io::Error| RuntimeError::MonitorGone {
        state_dir: state_dir.to_path_buf(),
        source,
    };
    let hung_up = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    };
    let line = format!("{}\n", request.as_str());
    if let Err(e) = stream.write_all(line.as_bytes()).await {
        return Err(if hung_up(&e) {
            gone(e)
        } else {
            failed(format!("sending: {e}"))
        });
    }
    let mut reply = String::new();
    match BufReader::with_capacity(REPLY_BUFFER, stream.take(MAX_LINE))
        .read_line(&mut reply)
        .await
    {
        Ok(0) => return Err(gone(std::io::ErrorKind::UnexpectedEof.into())),
        Ok(_) => {}
        Err(e) if hung_up(&e) => return Err(gone(e)),
        Err(e) => return Err(failed(format!("reading the reply: {e}"))),
    }
    ControlReply::parse(&reply).ok_or_else(|| failed(format!("invalid reply {:?}", reply.trim())))
}

/// Whether the pid in `monitor.pid` is a live `wharf-monitor` serving
/// `state_dir` (its command line is checked, so a reused pid does not
/// count, and a zombie has an empty one).
pub fn monitor_alive(state_dir: &Path) -> bool {
    let Some(pid) = monitor_pid(state_dir) else {
        return false;
    };
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| is_monitor_cmdline(&cmdline, state_dir))
        .unwrap_or(false)
}

/// The pid in `monitor.pid`, if readable.
fn monitor_pid(state_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(state_dir.join(files::MONITOR_PID)).ok()?;
    text.trim().parse().ok()
}
