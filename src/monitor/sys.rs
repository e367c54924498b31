//! File descriptors and processes: the monitor's contact with the kernel
//! beyond what std offers. The only `unsafe` of the monitor is here.

use std::fs;
use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const SELF_FDS: &str = "/proc/self/fd";

/// Takes ownership of an open descriptor that nothing else in this
/// process refers to: one inherited from the parent and named on the
/// command line, or one the kernel just installed with `SCM_RIGHTS`.
#[allow(unsafe_code)]
fn own_fd(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 0 || fs::symlink_metadata(format!("{SELF_FDS}/{raw}")).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("file descriptor {raw} is not open"),
        ));
    }
    // SAFETY: the descriptor is open (checked above) and, per this
    // function's contract, owned by no other object of this process, so
    // the `OwnedFd` is its only owner and closes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Restores the default action of every signal the daemon (or whoever
/// started it) may have set to "ignore": ignored signals survive `exec`,
/// so the runtime and the container would inherit them, and a container
/// ignoring SIGTERM cannot be stopped gracefully. SIGPIPE stays as Rust
/// set it; std restores it for the children it spawns.
#[allow(unsafe_code)]
pub fn reset_signal_dispositions() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGPIPE) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal
        // context, and no other thread exists yet that could race.
        let _ = unsafe { sigaction(signal, &default) };
    }
}

/// A descriptor that turns readable when child `pid` exits (pidfd_open,
/// Linux 5.3): a wait with a timeout can sleep in poll instead of polling
/// the child on an interval. The child must not be reaped meanwhile, or
/// its pid could be someone else's.
#[allow(unsafe_code)]
pub fn child_exit_fd(pid: u32) -> io::Result<OwnedFd> {
    let pid = nix::libc::pid_t::try_from(pid).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: a syscall with plain integer arguments that touches no
    // memory of ours.
    let raw = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = RawFd::try_from(raw).map_err(|_| io::ErrorKind::InvalidData)?;
    // SAFETY: the kernel just installed this descriptor for us; nothing
    // else refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The sync descriptor the daemon passed, by number.
pub fn adopt_inherited_fd(raw: RawFd) -> io::Result<OwnedFd> {
    own_fd(raw)
}

/// Closes every descriptor above stderr except `keep`: whatever the
/// daemon leaked must not stay open for the container's lifetime.
pub fn close_inherited_fds(keep: RawFd) -> io::Result<()> {
    let doomed: Vec<RawFd> = fs::read_dir(SELF_FDS)?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2 && fd != keep)
        .collect();
    for fd in doomed {
        // The directory's own descriptor is in the list and already closed.
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Receives one descriptor sent with `SCM_RIGHTS` (the runtime sends a
/// terminal's master this way, with its name as the payload).
pub fn recv_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    let mut payload = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut payload)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received: Vec<RawFd> = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    let mut fds = received.into_iter();
    let first = fds.next();
    for extra in fds {
        let _ = own_fd(extra);
    }
    match first {
        Some(fd) => own_fd(fd),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the runtime sent no file descriptor on the console socket",
        )),
    }
}

/// The parent pid in the text of `/proc/<pid>/stat` (the command name in
/// parentheses may itself contain spaces and parentheses).
fn parse_stat_ppid(stat: &str) -> Option<i32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// Processes whose parent is this one (started by us or reparented to us
/// as subreaper).
fn children() -> Vec<Pid> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            (parse_stat_ppid(&stat)? == me).then(|| Pid::from_raw(pid))
        })
        .collect()
}

/// Reaps every exited child without blocking; `on_exit` sees each.
pub fn reap_exited(mut on_exit: impl FnMut(WaitStatus)) {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => on_exit(status),
        }
    }
}

/// Kills and reaps every remaining child, including processes reparented
/// to us while this runs, for at most `limit`.
pub fn kill_and_reap_children(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        reap_exited(|_| {});
        let remaining = children();
        if remaining.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in remaining {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A non-blocking listener on the unix socket `path` (reached through
/// [`crate::runtime::socket_path`] when the path is too long to bind),
/// replacing a stale socket file a previous monitor left there.
pub(super) fn listen_nonblocking(
    path: &std::path::Path,
) -> Result<std::os::unix::net::UnixListener, super::MonitorError> {
    use super::MonitorError;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(MonitorError::io("removing stale", path)(e))
        }
        _ => {}
    }
    let listener =
        crate::runtime::socket_path::bind(path).map_err(MonitorError::io("binding", path))?;
    listener
        .set_nonblocking(true)
        .map_err(MonitorError::io("configuring", path))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_after_the_command_name() {
        let stat = "1234 (weird) name)) S 77 1234 1234 0 -1 4194560 0 0";
        assert_eq!(parse_stat_ppid(stat), Some(77));
        assert_eq!(parse_stat_ppid("garbage"), None);
    }

    #[test]
    fn unopened_descriptors_are_refused() {
        assert!(adopt_inherited_fd(-1).is_err());
        assert!(adopt_inherited_fd(1_000_000).is_err());
    }
}
