//! The init of a pod's shared PID namespace (`shareProcessNamespace`):
//! a namespace that dies with its init needs a process to hold it.

use std::fs::{self};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::sys;

use super::{
    bind_pin, create_dir, io_error, on_throwaway_thread, os_error, remove_pin, NamespaceError,
    PID_FILE, PID_HOLDER_READY,
};
use crate::undo::Undo;

/// How long [`spawn_pid_holder`] waits for [`PID_HOLDER_READY`].
const PID_HOLDER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// The init of a pod's shared PID namespace, pinned on `<dir>/pid`.
/// Persist it with the sandbox: after a daemon restart the holder keeps
/// running, and `ns_inode` tells it apart from a process that reused its
/// PID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidHolder {
    /// In the daemon's PID namespace.
    pub pid: u32,
    pub path: PathBuf,
    /// The namespace's inode, as in `/proc/<pid>/ns/pid`.
    pub ns_inode: u64,
}

/// Starts `holder` as init of a new PID namespace and pins the namespace
/// on `<dir>/pid`. `holder` must end up in [`run_pid_holder`] (e.g.
/// `wharf-monitor pause`); it gets `/` as working directory, no stdin
/// and a pipe as stdout, and keeps the caller's stderr for its complaints.
///
/// The namespace lives exactly as long as the holder, and the holder dies
/// only by SIGKILL (an init ignores other signals it has no handler for),
/// which kills every process in the namespace: see [`PidHolder::stop`].
pub fn spawn_pid_holder(dir: &Path, mut holder: Command) -> Result<PidHolder, NamespaceError> {
    let program = PathBuf::from(holder.get_program());
    holder
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0);
    let mut undo = Undo::default();
    let started = (|| {
        create_dir(dir, &mut undo)?;
        // Only children are born into a namespace made by
        // unshare(CLONE_NEWPID), so the holder is spawned from the thread
        // that made it.
        let mut child = on_throwaway_thread(dir, || {
            unshare(CloneFlags::CLONE_NEWPID)
                .map_err(os_error("unsharing a PID namespace for", dir))?;
            holder
                .spawn()
                .map_err(|e| holder_failed(&program, format!("starting: {e}")))
        })?;
        let Some(mut stdout) = child.stdout.take() else {
            return Err(holder_failed(&program, "no pipe on its stdout".into()));
        };
        wait_until_ready(&mut stdout, &program, || {
            child.wait().map(|s| s.to_string()).unwrap_or_default()
        })
        .and_then(|()| pin_holder(dir, child.id(), &mut undo))
        .inspect_err(|_| {
            let _ = child.kill();
            let _ = child.wait();
        })
        // Dropping `child` neither kills nor reaps it; `stop` reaps it.
    })();
    undo.finish_now(started)
}

/// Takes over a holder started by [`crate::idmap::with_new_userns`] as
/// init of a PID namespace a pod's user namespace owns: waits until it is
/// ready and pins its namespace on `<dir>/pid`. On failure the holder is
/// killed and reaped.
pub(super) fn adopt_holder(
    dir: &Path,
    program: &Path,
    mut started: crate::idmap::StartedInit,
    undo: &mut Undo<'_>,
) -> Result<PidHolder, NamespaceError> {
    let pid = started.pid;
    // Reaped once: a second kill could hit a process that reused the PID.
    let reaped = std::cell::Cell::new(false);
    let kill_and_reap = || {
        if !reaped.replace(true) {
            crate::idmap::kill_and_reap(pid);
        }
    };
    wait_until_ready(&mut started.stdout, program, || {
        kill_and_reap();
        String::new()
    })
    .and_then(|()| pin_holder(dir, pid, undo))
    .inspect_err(|_| kill_and_reap())
}

/// Pins the PID namespace of the holder `pid` on `<dir>/pid`.
fn pin_holder(dir: &Path, pid: u32, undo: &mut Undo<'_>) -> Result<PidHolder, NamespaceError> {
    let source = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    let ns_inode = fs::metadata(&source)
        .map_err(io_error("inspecting", &source))?
        .ino();
    let path = dir.join(PID_FILE);
    bind_pin(&source, &path, undo)?;
    Ok(PidHolder {
        pid,
        path,
        ns_inode,
    })
}

fn holder_failed(program: &Path, reason: String) -> NamespaceError {
    NamespaceError::HolderFailed {
        program: program.to_path_buf(),
        reason,
    }
}

/// Reads the holder's stdout until its ready line: from then on it reaps
/// whatever joins the namespace. End of file means it died: `reap`
/// collects it and says how it ended.
fn wait_until_ready(
    stdout: &mut (impl Read + AsFd),
    program: &Path,
    reap: impl FnOnce() -> String,
) -> Result<(), NamespaceError> {
    let deadline = Instant::now() + PID_HOLDER_START_TIMEOUT;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 512];
    loop {
        if seen
            .windows(PID_HOLDER_READY.len())
            .any(|w| w == PID_HOLDER_READY.as_bytes())
        {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => return Err(holder_failed(program, "not ready within 10s".into())),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(holder_failed(program, format!("polling its stdout: {e}"))),
        }
        match stdout.read(&mut buffer) {
            Ok(0) => {
                let status = reap();
                return Err(holder_failed(
                    program,
                    format!("exited before it was ready: {status}"),
                ));
            }
            // Only the tail can still complete the ready line.
            Ok(n) => {
                seen = [
                    &seen[seen.len().saturating_sub(PID_HOLDER_READY.len())..],
                    &buffer[..n],
                ]
                .concat()
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(holder_failed(program, format!("reading its stdout: {e}"))),
        }
    }
}

impl PidHolder {
    /// Whether the holder still runs (its PID was not reused by another
    /// process).
    pub fn is_running(&self) -> bool {
        fs::metadata(format!("/proc/{}/ns/pid", self.pid)).is_ok_and(|m| m.ino() == self.ns_inode)
    }

    /// Kills the holder, and with it every process left in the namespace,
    /// reaps it if it is this process's child, and unpins the namespace.
    /// Idempotent.
    pub fn stop(&self) -> Result<(), NamespaceError> {
        let pid = Pid::from_raw(self.pid as i32);
        if self.is_running() {
            // ESRCH: it died since the check.
            let killed = kill(pid, Signal::SIGKILL).or_else(|e| match e {
                Errno::ESRCH => Ok(()),
                e => Err(e),
            });
            killed.map_err(os_error("killing the PID namespace holder of", &self.path))?;
            // ECHILD: the holder was spawned before a daemon restart, so
            // whoever adopted it reaps it.
            let _ = waitpid(pid, None);
        } else {
            // Collects a holder that died by itself; never blocks on a
            // process that merely reuses the PID.
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        }
        remove_pin(&self.path)
    }
}

/// The body of the PID namespace holder process: signals it is ready and
/// sleeps forever as the namespace's init, with orphans reaped by the
/// kernel. Call it early in a process's `main` (the monitor binary's
/// `pause` subcommand); it never returns.
pub fn run_pid_holder() -> ! {
    if let Err(e) = sys::reap_children_automatically() {
        eprintln!("wharf pid holder: ignoring SIGCHLD: {e}");
        std::process::exit(1);
    }
    let mut stdout = io::stdout();
    if writeln!(stdout, "{PID_HOLDER_READY}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(1);
    }
    loop {
        nix::unistd::pause();
    }
}
