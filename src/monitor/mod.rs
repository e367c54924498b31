//! `wharf-monitor`: one small process per container that outlives the
//! daemon. It runs `runtime create` with stdio it keeps, writes the
//! container's output to the CRI log, reaps the init (it is the
//! subreaper of everything the container leaves behind), records the
//! exit atomically in `exit.json`, and serves the control socket and the
//! attach socket (the container's stdio for `kubectl attach`).
//!
//! No async runtime and no threads: a single poll loop ([`supervise`])
//! over the output pipes, a SIGCHLD signalfd and the sockets keeps
//! the resident set small. The protocol with the daemon lives in
//! [`crate::runtime::protocol`].

mod attach;
mod control;
mod create;
mod deferred;
pub mod log;
mod oom;
mod supervise;
mod sys;

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::IoError;
use crate::runtime::protocol::{
    files, ControlReply, ExitStatus, MonitorArgs, Started, SyncMessage,
};
use crate::store::{self, StoreError};
use attach::AttachServer;
use control::ControlServer;
use create::Launch;
use log::CriLogWriter;
use oom::OomProbe;
use supervise::Supervisor;

/// How long leftover children get to die once the exit is recorded.
const REAP_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{op}")]
    Sys {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("starting the runtime {runtime}")]
    SpawnRuntime {
        runtime: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The runtime failed; the message is its own.
    #[error("{message}")]
    Runtime { message: String },
    #[error("terminal: {0}")]
    Terminal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MonitorError {
    fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| IoError::new(op, path, source).into()
    }

    fn sys(op: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| MonitorError::Sys { op, source }
    }

    fn errno(op: &'static str) -> impl FnOnce(nix::Error) -> Self {
        move |errno| MonitorError::Sys {
            op,
            source: io::Error::from(errno),
        }
    }

    /// The text for the sync line: the runtime's message as it is, so
    /// the daemon can classify it; the whole chain otherwise.
    fn sync_text(&self) -> String {
        match self {
            MonitorError::Runtime { message } => message.clone(),
            other => crate::error::chain(other),
        }
    }
}

/// Entry point of the `wharf-monitor` binary; `args` excludes the
/// program name.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let parsed = MonitorArgs::parse(args)
        .map_err(|e| e.to_string())
        .and_then(|args| absolute_paths(args).map_err(|e| format!("resolving paths: {e}")));
    let args = match parsed {
        Ok(args) => args,
        Err(message) => {
            eprintln!("wharf-monitor: {message}");
            return ExitCode::from(2);
        }
    };
    let sync = match sys::adopt_inherited_fd(args.sync_fd) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("wharf-monitor: --sync-fd {}: {e}", args.sync_fd);
            return ExitCode::from(2);
        }
    };
    let failed = |sync, e: MonitorError| {
        let error = e.sync_text();
        report(sync, &SyncMessage::Failed { error });
        ExitCode::FAILURE
    };
    let prepared = match prepare(&args) {
        Ok(prepared) => prepared,
        Err(e) => return failed(sync, e),
    };
    if args.defer_start {
        report(sync, &SyncMessage::Ready { ready: true });
        redirect_diagnostics(&args.state_file(files::MONITOR_LOG));
        return run_deferred(&args, prepared);
    }
    let supervisor = match create::create(&args, Launch::Create).and_then(|container| {
        prepared
            .supervise(&args, container)
            .map_err(|(e, _control)| e)
    }) {
        Ok(supervisor) => supervisor,
        Err(e) => return failed(sync, e),
    };
    let container_pid = supervisor.init_pid();
    report(sync, &SyncMessage::Created { container_pid });
    redirect_diagnostics(&args.state_file(files::MONITOR_LOG));
    let (status, control) = supervisor.run();
    finish(&args, &status, control)
}

/// The rest of a `--defer-start` monitor's life: wait for `start` or
/// `cancel`, run the container, answer the start, supervise.
fn run_deferred(args: &MonitorArgs, mut prepared: Prepared) -> ExitCode {
    match deferred::wait_for_decision(&mut prepared.control, &mut prepared.log) {
        deferred::Decision::Start => {}
        deferred::Decision::Cancel => {
            // As `runtime kill` of a created container would have it; the
            // runtime never had the container.
            let mut status = ExitStatus::killed(Signal::SIGKILL as i32, store::now_nanos());
            status.runtime_deleted = true;
            return finish(args, &status, prepared.control);
        }
    }
    let runtime_started = std::time::Instant::now();
    let container = match create::create(args, Launch::Run) {
        Ok(container) => container,
        Err(e) => {
            // No exit record: the daemon keeps the start's error as the
            // container's failure.
            eprintln!("wharf-monitor: {}", crate::error::chain(&e));
            // The runtime may have started it before the step that
            // failed (its pid file, the terminal): unsupervised, it goes.
            sys::kill_and_reap_children(REAP_LIMIT);
            prepared
                .control
                .answer_start(&ControlReply::Error(e.sync_text()));
            return ExitCode::FAILURE;
        }
    };
    let runtime_took = runtime_started.elapsed();
    let init = container.pid;
    let mut supervisor = match prepared.supervise(args, container) {
        Ok(supervisor) => supervisor,
        Err((e, mut control)) => {
            // The container runs: kill it, record how it ended, and tell
            // the start why (it finds the exit recorded).
            eprintln!("wharf-monitor: {}", crate::error::chain(&e));
            let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
            let status = ExitStatus::killed(Signal::SIGKILL as i32, store::now_nanos());
            let recorded = record_exit(args, &status);
            control.answer_start(&ControlReply::Error(e.sync_text()));
            control.notify_exit(&status);
            drop(control);
            sys::kill_and_reap_children(REAP_LIMIT);
            return recorded;
        }
    };
    let runtime_us = args.timed_start.then_some(runtime_took.as_micros() as u64);
    supervisor.answer_start(&ControlReply::Started(Started {
        pid: init.as_raw(),
        runtime_us,
    }));
    let (mut status, control) = supervisor.run();
    // The runtime's container goes with its exit, as containerd's shim
    // deletes it when the task exits: RemoveContainer then has no runtime
    // command to wait for. Before the exit is recorded, so that whoever
    // learns of the exit finds it deleted (or knows to delete it).
    match create::delete(args) {
        Ok(()) => status.runtime_deleted = true,
        Err(message) => eprintln!("wharf-monitor: deleting the container: {message}"),
    }
    finish(args, &status, control)
}

/// The paths stay valid after the monitor leaves its working directory.
fn absolute_paths(mut args: MonitorArgs) -> io::Result<MonitorArgs> {
    for path in [
        &mut args.bundle,
        &mut args.state_dir,
        &mut args.log_path,
        &mut args.runtime_root,
    ] {
        *path = std::path::absolute(&*path)?;
    }
    // A bare runtime name is looked up in PATH, as the daemon would.
    if args.runtime.components().count() > 1 {
        args.runtime = std::path::absolute(&args.runtime)?;
    }
    Ok(args)
}

/// What the monitor sets up before the container exists, so that failing
/// here leaves nothing behind.
struct Prepared {
    signals: SignalFd,
    log: CriLogWriter,
    control: ControlServer,
    attach: AttachServer,
}

/// Detaches from the daemon, opens the log, binds the sockets.
fn prepare(args: &MonitorArgs) -> Result<Prepared, MonitorError> {
    let signals = detach(args)?;
    // In the state directory, which a reboot empties: no fsync needed.
    store::write_atomic_unsynced(
        &args.state_file(files::MONITOR_PID),
        std::process::id().to_string().as_bytes(),
    )?;
    let log = CriLogWriter::open(&args.log_path).map_err(MonitorError::io(
        "opening the container log",
        &args.log_path,
    ))?;
    let control = ControlServer::bind(&args.state_file(files::CONTROL_SOCKET))?;
    let attach = AttachServer::bind(&args.state_file(files::ATTACH_SOCKET))?;
    Ok(Prepared {
        signals,
        log,
        control,
        attach,
    })
}

impl Prepared {
    /// The supervisor of the container just created; on failure, the
    /// control server, to answer with the error.
    fn supervise(
        self,
        args: &MonitorArgs,
        mut container: create::Container,
    ) -> Result<Supervisor, (MonitorError, ControlServer)> {
        let attach = match self
            .attach
            .with_input(container.stdin.take(), args.tty, args.stdin_once)
        {
            Ok(attach) => attach,
            Err(e) => return Err((e, self.control)),
        };
        let oom = OomProbe::resolve(&args.bundle, container.pid)
            .map_err(|e| eprintln!("wharf-monitor: OOM detection is off: {e}"))
            .ok();
        Ok(Supervisor::new(
            container,
            self.log,
            self.signals,
            self.control,
            attach,
            oom,
            args.defer_start,
        ))
    }
}

/// Survives the daemon: own session (no SIGHUP or terminal signals from
/// the daemon's), subreaper of the container's orphans, no inherited
/// descriptors, and SIGCHLD delivered through a descriptor. Signal
/// actions are reset to default, and std clears the signal mask for the
/// children it spawns, so the runtime and the container start clean.
fn detach(args: &MonitorArgs) -> Result<SignalFd, MonitorError> {
    sys::close_inherited_fds(args.sync_fd)
        .map_err(MonitorError::sys("closing inherited descriptors"))?;
    sys::reset_signal_dispositions();
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(MonitorError::errno("becoming child subreaper"))?;
    // Fails only if already a group leader, i.e. detached on purpose.
    let _ = nix::unistd::setsid();
    let _ = nix::unistd::chdir("/");
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGCHLD);
    blocked.add(Signal::SIGHUP);
    blocked
        .thread_block()
        .map_err(MonitorError::errno("blocking signals"))?;
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(MonitorError::errno("creating the SIGCHLD signalfd"))
}

/// Writes the sync line and closes the sync descriptor (a standard one is
/// pointed at /dev/null instead, so it stays taken). A daemon that died
/// meanwhile finds the container when it recovers.
fn report(sync: OwnedFd, message: &SyncMessage) {
    let mut line = serde_json::to_vec(message).unwrap_or_default();
    line.push(b'\n');
    let mut file = File::from(sync);
    let _ = file.write_all(&line);
    if file.as_raw_fd() <= 2 {
        let mut standard = OwnedFd::from(file);
        if let Ok(null) = File::open("/dev/null") {
            let _ = nix::unistd::dup2(&null, &mut standard);
        }
        let _ = standard.into_raw_fd();
    }
}

/// From now on diagnostics go to the state directory, not to the
/// daemon, which may be gone.
fn redirect_diagnostics(path: &Path) {
    let opened = OpenOptions::new().create(true).append(true).open(path);
    if let Ok(file) = opened {
        let _ = nix::unistd::dup2_stderr(&file);
    }
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
}

/// Records the exit, tells the daemon, then leaves nothing behind. The
/// order matters: `exit.json` is written before any control connection
/// closes, so a daemon whose connection closes unanswered finds the exit
/// in the file (or knows there will be none).
fn finish(args: &MonitorArgs, status: &ExitStatus, mut control: ControlServer) -> ExitCode {
    let recorded = record_exit(args, status);
    control.notify_exit(status);
    drop(control);
    sys::kill_and_reap_children(REAP_LIMIT);
    recorded
}

/// Writes `exit.json`. In the state directory, which a reboot empties:
/// renamed into place (never torn), not synced.
fn record_exit(args: &MonitorArgs, status: &ExitStatus) -> ExitCode {
    match store::write_json_atomic_unsynced(&args.state_file(files::EXIT), status) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf-monitor: {}", crate::error::chain(&e));
            ExitCode::FAILURE
        }
    }
}
