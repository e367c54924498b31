//! Kernel calls shared by the services that std and nix do not offer
//! safely, or that need one tolerant wrapper instead of several.
//! One of the few places with `unsafe` (see the crate root).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{signal, SigHandler, Signal};

/// Lets the kernel reap every child of this process as soon as it exits,
/// including processes re-parented to it: with SIGCHLD set to SIG_IGN no
/// zombie is ever left for `wait` (POSIX.1-2001 semantics, honoured by
/// Linux). Meant for a process whose only job is to be a PID namespace's
/// init; it inherits to nothing because such a process never forks.
#[allow(unsafe_code)]
pub fn reap_children_automatically() -> nix::Result<()> {
    // SAFETY: SIG_IGN installs no handler, so no code of ours ever runs in
    // signal context and nothing can violate async-signal-safety.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) }.map(drop)
}

/// Lazily unmounts whatever is mounted on `path` without following a
/// symlink there. `Ok(false)` when nothing was mounted or `path` is gone,
/// so callers can undo a mount they may or may not have made.
pub fn unmount_detached(path: &Path) -> io::Result<bool> {
    match umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(true),
        // EINVAL: `path` is not a mount point.
        Err(Errno::EINVAL | Errno::ENOENT) => Ok(false),
        Err(errno) => Err(errno.into()),
    }
}

/// Whether something is mounted on `path`: a mount shows up as a device
/// different from its parent directory's. Holds for every mount made here
/// (tmpfs, nsfs bind mounts), not for a bind mount within one filesystem.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    Ok(std::fs::symlink_metadata(path)?.dev() != std::fs::metadata(parent)?.dev())
}

/// Sets a terminal's size (`TIOCSWINSZ` on its master): the kernel sends
/// SIGWINCH to the terminal's foreground process group.
#[allow(unsafe_code)]
pub fn set_window_size(
    terminal: impl std::os::fd::AsFd,
    columns: u16,
    rows: u16,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let size = nix::libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which
    // points to a live, initialised value for the duration of the call.
    let result = unsafe {
        nix::libc::ioctl(
            terminal.as_fd().as_raw_fd(),
            nix::libc::TIOCSWINSZ,
            &size as *const nix::libc::winsize,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_nonblocking(fd: impl std::os::fd::AsFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Registers a non-blocking descriptor with tokio's reactor.
#[allow(unsafe_code)]
pub fn register_async(
    fd: std::os::fd::OwnedFd,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the `AsyncFd` takes the `OwnedFd` by value and is then its
    // only owner; it never replaces or closes the descriptor while
    // registered, and deregisters it before closing it on drop.
    Ok(unsafe { tokio::io::unix::AsyncFd::register(fd) }?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmounting_a_plain_directory_or_a_missing_path_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!unmount_detached(dir.path()).unwrap());
        assert!(!unmount_detached(&dir.path().join("missing")).unwrap());
    }

    #[test]
    fn mount_points() {
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()).unwrap());
    }
}
