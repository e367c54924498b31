//! The short-lived process that creates a pod's user namespace: the
//! daemon has many threads, and only a single-threaded process may create
//! or enter a user namespace.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

use super::mount::c_path;
use super::{IdmapError, UsernsMappings};
use crate::error::IoError;

/// A program [`with_new_userns`] starts as init of the new PID namespace
/// (a shared one's holder): with `/` as working directory, no stdin, a
/// pipe as stdout and a process group of its own, as a child of this
/// process.
pub struct PidInit {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// The init [`with_new_userns`] started: this process's child.
#[derive(Debug)]
pub struct StartedInit {
    /// In this process's PID namespace.
    pub pid: u32,
    /// The read end of its stdout.
    pub stdout: File,
}

/// Runs `work` with `/proc/<pid>/ns` of a child process that has just
/// unshared a user namespace with `mappings` (written by this process),
/// together with the namespaces in `also`, which that user namespace owns.
/// With `init`, a PID namespace is made too and `init` started in it (a
/// PID namespace cannot be entered before it has an init). The child is
/// released and reaped when `work` returns: whatever `work` wants to keep
/// it must pin (bind-mount) or hold open; the init is `work`'s to stop.
pub fn with_new_userns<T, E: From<IdmapError>>(
    mappings: &UsernsMappings,
    also: CloneFlags,
    init: Option<&PidInit>,
    work: impl FnOnce(&Path, Option<StartedInit>) -> Result<T, E>,
) -> Result<T, E> {
    let mut flags = also | CloneFlags::CLONE_NEWUSER;
    if init.is_some() {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    let (child, started) = UsernsChild::spawn(flags, init)?;
    let proc_dir = PathBuf::from(format!("/proc/{}", child.pid));
    for (file, range) in [("uid_map", &mappings.uids), ("gid_map", &mappings.gids)] {
        let path = proc_dir.join(file);
        // One write: the kernel takes a map once, whole.
        let written = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(range.map_line().as_bytes()));
        if let Err(e) = written {
            if let Some(started) = &started {
                kill_and_reap(started.pid);
            }
            return Err(IdmapError::from(IoError::new("writing", &path, e)).into());
        }
    }
    work(&proc_dir.join("ns"), started)
    // `child` drops here: released and reaped.
}

/// Kills and reaps a child of this process.
pub fn kill_and_reap(pid: u32) {
    let pid = Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// The forked child of [`with_new_userns`]. Dropping it closes the pipe
/// the child waits on, so it exits, and reaps it.
struct UsernsChild {
    pid: Pid,
    release: Option<OwnedFd>,
}

/// What the child reports: a status byte (0, or the errno of the failed
/// step) and the init's PID (0 without one), little-endian.
const REPORT_LEN: usize = 5;

/// `execv`'s arguments, made before the fork (the child must not
/// allocate).
struct PreparedExec {
    program: std::ffi::CString,
    _args: Vec<std::ffi::CString>,
    argv: Vec<*const libc::c_char>,
    stdin: OwnedFd,
    stdout_write: OwnedFd,
    stdout_read: OwnedFd,
}

impl PreparedExec {
    fn new(init: &PidInit) -> Result<Self, IdmapError> {
        let helper_error =
            |what: &str| IdmapError::Helper(format!("{what} for {}", init.program.display()));
        let program = c_path(&init.program).map_err(|_| helper_error("a path with NUL"))?;
        let args = std::iter::once(program.clone())
            .chain(
                init.args
                    .iter()
                    .map(|a| std::ffi::CString::new(a.as_str()).unwrap_or_default()),
            )
            .collect::<Vec<_>>();
        let argv = args
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let stdin: OwnedFd = File::open("/dev/null")
            .map_err(|e| IoError::new("opening", Path::new("/dev/null"), e))?
            .into();
        let (stdout_read, stdout_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| IoError::new("creating the stdout pipe of", &init.program, e))?;
        Ok(PreparedExec {
            program,
            _args: args,
            argv,
            stdin,
            stdout_write,
            stdout_read,
        })
    }
}

impl UsernsChild {
    #[allow(unsafe_code)]
    fn spawn(
        flags: CloneFlags,
        init: Option<&PidInit>,
    ) -> Result<(Self, Option<StartedInit>), IdmapError> {
        let pipe = |what: &'static str| {
            nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(|e| IdmapError::from(IoError::new(what, Path::new("pipe"), e)))
        };
        let (ready_read, ready_write) = pipe("creating the ready pipe of")?;
        let (release_read, release_write) = pipe("creating the release pipe of")?;
        let exec = init.map(PreparedExec::new).transpose()?;
        // The child never execs, so O_CLOEXEC does not close what it
        // inherits: it closes every fd but these itself. Another helper's
        // pipes, inherited, would keep that helper from seeing its
        // release, and the parent's ends of its own pipes would keep it
        // from seeing its own.
        let mut keep = [
            ready_write.as_raw_fd(),
            release_read.as_raw_fd(),
            exec.as_ref().map_or(-1, |e| e.stdin.as_raw_fd()),
            exec.as_ref().map_or(-1, |e| e.stdout_write.as_raw_fd()),
        ];
        keep.sort_unstable();
        // SAFETY: the child runs only async-signal-safe system calls
        // (close, close_range, prctl, unshare, clone, dup2, setpgid, chdir, execv,
        // write, read, _exit) on values made before the fork, and never
        // returns into Rust code that could allocate or take a lock
        // another thread held at the fork.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                // SAFETY: raw system calls on fds and C strings this
                // process owns; see the comment on the fork.
                unsafe {
                    close_all_but(&keep);
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    let errno = || (*libc::__errno_location()).clamp(1, 255) as u8;
                    let mut report = [0u8; REPORT_LEN];
                    if libc::unshare(flags.bits()) != 0 {
                        report[0] = errno();
                    } else if let Some(exec) = &exec {
                        // CLONE_PARENT: the init is the daemon's child, so
                        // the daemon reaps it.
                        let pid = libc::syscall(
                            libc::SYS_clone,
                            libc::CLONE_PARENT | libc::SIGCHLD,
                            0,
                            0,
                            0,
                            0,
                        );
                        if pid == 0 {
                            libc::dup2(exec.stdin.as_raw_fd(), 0);
                            libc::dup2(exec.stdout_write.as_raw_fd(), 1);
                            libc::setpgid(0, 0);
                            libc::chdir(c"/".as_ptr());
                            libc::execv(exec.program.as_ptr(), exec.argv.as_ptr());
                            libc::_exit(127);
                        }
                        // The init's stdio is its own now: with the
                        // pipe's write end open here, the parent would not
                        // see the init die before it reports ready.
                        libc::close(exec.stdin.as_raw_fd());
                        libc::close(exec.stdout_write.as_raw_fd());
                        if pid < 0 {
                            report[0] = errno();
                        } else {
                            report[1..].copy_from_slice(&(pid as u32).to_le_bytes());
                        }
                    }
                    libc::write(ready_write.as_raw_fd(), report.as_ptr().cast(), REPORT_LEN);
                    let mut byte = 0u8;
                    while libc::read(release_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1)
                        != 0
                    {
                        if *libc::__errno_location() != libc::EINTR {
                            break;
                        }
                    }
                    libc::_exit(0);
                }
            }
            Ok(ForkResult::Parent { child }) => {
                drop((ready_write, release_read));
                let child = UsernsChild {
                    pid: child,
                    release: Some(release_write),
                };
                let mut report = [0u8; REPORT_LEN];
                let mut filled = 0;
                while filled < REPORT_LEN {
                    match nix::unistd::read(&ready_read, &mut report[filled..]) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        Ok(0) | Err(_) => break,
                        Ok(n) => filled += n,
                    }
                }
                if filled < REPORT_LEN {
                    return Err(IdmapError::Helper(
                        "it ended before creating the namespaces".into(),
                    ));
                }
                if report[0] != 0 {
                    return Err(IdmapError::Helper(format!(
                        "creating the namespaces: {}",
                        nix::errno::Errno::from_raw(i32::from(report[0]))
                    )));
                }
                let pid = u32::from_le_bytes([report[1], report[2], report[3], report[4]]);
                let started = exec.map(|exec| StartedInit {
                    pid,
                    stdout: File::from(exec.stdout_read),
                });
                Ok((child, started))
            }
            Err(e) => Err(IoError::new("forking", Path::new("a user namespace helper"), e).into()),
        }
    }
}

/// Closes every file descriptor from 3 on but `keep` (ascending; -1s
/// first are skipped), with raw `close_range` calls: safe after a fork.
/// On a kernel without `close_range` (before 5.9) nothing is closed.
///
/// # Safety
/// Closes descriptors other code may own: only for a forked child that
/// never returns into Rust code.
#[allow(unsafe_code)]
unsafe fn close_all_but(keep: &[i32]) {
    let mut next = 3;
    for &fd in keep {
        if fd < next {
            continue;
        }
        if fd > next {
            // SAFETY: a raw system call on descriptor numbers; see above.
            unsafe { libc::syscall(libc::SYS_close_range, next as u32, (fd - 1) as u32, 0u32) };
        }
        next = fd + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next as u32, u32::MAX, 0u32) };
}

impl Drop for UsernsChild {
    fn drop(&mut self) {
        drop(self.release.take());
        let _ = waitpid(self.pid, None);
    }
}
