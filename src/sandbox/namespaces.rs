//! A pod's namespaces without a pause process.
//!
//! [`pin`] creates the network, IPC and UTS namespaces on a throw-away
//! thread (`unshare` works on one thread of a multi-threaded process, as
//! long as the mount namespace is left alone), configures them from inside
//! (host name, sysctls), and bind-mounts each onto a file in the sandbox's
//! directory, like CRI-O's `pinns` and containerd's `pkg/netns`. The bind
//! mounts keep the namespaces alive with no process in them, runc joins
//! them by path, and they outlive a daemon restart. The thread then ends:
//! a thread whose namespaces changed never runs anything else.
//!
//! A shared PID namespace (`shareProcessNamespace`) is different: it dies
//! with its init, so [`spawn_pid_holder`] starts a tiny process as that
//! init (see [`run_pid_holder`]).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{sethostname, Pid};
use serde::{Deserialize, Serialize};

use super::files::{validate_hostname, InvalidHostname};
use crate::error::{Classify, IoError, Kind};
use crate::sys;
use crate::undo::{CleanupFailures, Undo, Undone};

/// The file a shared PID namespace is pinned on, beside the others.
pub const PID_FILE: &str = "pid";
/// What [`run_pid_holder`] prints on stdout once it is ready to reap.
pub const PID_HOLDER_READY: &str = "wharf-pid-holder-ready";
/// How long [`spawn_pid_holder`] waits for [`PID_HOLDER_READY`].
const PID_HOLDER_START_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_SYSCTL_NAME_LEN: usize = 255;
const MAX_SYSCTL_VALUE_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKind {
    Net,
    Ipc,
    Uts,
}

impl NamespaceKind {
    const ALL: [NamespaceKind; 3] = [NamespaceKind::Net, NamespaceKind::Ipc, NamespaceKind::Uts];

    /// The name under `/proc/<pid>/ns/`, also used for the pin file.
    pub fn file_name(self) -> &'static str {
        match self {
            NamespaceKind::Net => "net",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Uts => "uts",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            NamespaceKind::Net => CloneFlags::CLONE_NEWNET,
            NamespaceKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NamespaceKind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

impl fmt::Display for NamespaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

pub struct PinRequest<'a> {
    /// Where the pin files go, e.g. `<state>/sandboxes/<id>/ns`; created
    /// if missing. Must be on a filesystem that takes bind mounts.
    pub dir: &'a Path,
    /// The namespaces the pod gets of its own; the others stay the host's.
    pub kinds: &'a [NamespaceKind],
    /// Set inside the new UTS namespace (requires [`NamespaceKind::Uts`]).
    pub hostname: Option<&'a str>,
    /// `name=value` written inside the new namespaces; each must belong to
    /// one of `kinds` (`net.*` to Net, SysV IPC and `fs.mqueue.*` to Ipc,
    /// `kernel.hostname`/`kernel.domainname` to Uts), so none can change
    /// the host. Names take `.` or `/` as separator, as in Kubernetes.
    pub sysctls: &'a [(String, String)],
}

/// The pin file of each namespace the pod has of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

impl PinnedNamespaces {
    pub fn path(&self, kind: NamespaceKind) -> Option<&Path> {
        match kind {
            NamespaceKind::Net => self.net.as_deref(),
            NamespaceKind::Ipc => self.ipc.as_deref(),
            NamespaceKind::Uts => self.uts.as_deref(),
        }
    }

    fn set(&mut self, kind: NamespaceKind, path: PathBuf) {
        match kind {
            NamespaceKind::Net => self.net = Some(path),
            NamespaceKind::Ipc => self.ipc = Some(path),
            NamespaceKind::Uts => self.uts = Some(path),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("invalid sysctl {name:?}: {reason}")]
    InvalidSysctl { name: String, reason: &'static str },
    #[error("sysctl {name} needs the pod's own {kind} namespace; with the host's it would change the host")]
    SysctlNeedsNamespace { name: String, kind: NamespaceKind },
    #[error("sysctl {name} is not namespaced; setting it would change the host")]
    SysctlNotNamespaced { name: String },
    #[error("sysctl {name} does not exist in the pod's namespaces")]
    UnknownSysctl { name: String },
    #[error("sysctl {name}={value:?} rejected by the kernel")]
    SysctlRejected {
        name: String,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    InvalidHostname(#[from] InvalidHostname),
    #[error("a host name needs the pod's own UTS namespace")]
    HostnameWithoutUts,
    #[error("{path} already exists: namespaces are pinned there")]
    AlreadyPinned { path: PathBuf },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("the thread creating namespaces for {dir} panicked")]
    ThreadPanicked { dir: PathBuf },
    #[error("PID namespace holder {program}: {reason}")]
    HolderFailed { program: PathBuf, reason: String },
    /// A step failed and undoing the earlier ones failed too: something
    /// may be left mounted.
    #[error("{error}; undoing also failed: {cleanup}")]
    Undone {
        error: Box<NamespaceError>,
        cleanup: CleanupFailures,
    },
}

impl Undone for NamespaceError {
    fn with_cleanup_failures(self, cleanup: CleanupFailures) -> Self {
        NamespaceError::Undone {
            error: Box::new(self),
            cleanup,
        }
    }
}

impl Classify for NamespaceError {
    fn kind(&self) -> Kind {
        match self {
            NamespaceError::InvalidSysctl { .. }
            | NamespaceError::SysctlNeedsNamespace { .. }
            | NamespaceError::SysctlNotNamespaced { .. }
            | NamespaceError::UnknownSysctl { .. }
            | NamespaceError::SysctlRejected { .. }
            | NamespaceError::InvalidHostname(_)
            | NamespaceError::HostnameWithoutUts => Kind::InvalidArgument,
            NamespaceError::AlreadyPinned { .. } => Kind::AlreadyExists,
            NamespaceError::Undone { error, .. } => error.kind(),
            NamespaceError::Io(_)
            | NamespaceError::ThreadPanicked { .. }
            | NamespaceError::HolderFailed { .. } => Kind::Internal,
        }
    }
}

fn os_error<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> NamespaceError + 'a {
    move |errno| IoError::new(step, path, errno).into()
}

fn io_error<'a>(
    step: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> NamespaceError + 'a {
    move |source| IoError::new(step, path, source).into()
}

/// Creates the requested namespaces, configures them and pins them under
/// `request.dir`. On failure nothing is left behind.
pub fn pin(request: &PinRequest) -> Result<PinnedNamespaces, NamespaceError> {
    let kinds: Vec<NamespaceKind> = NamespaceKind::ALL
        .into_iter()
        .filter(|kind| request.kinds.contains(kind))
        .collect();
    if let Some(hostname) = request.hostname {
        validate_hostname(hostname)?;
        if !kinds.contains(&NamespaceKind::Uts) {
            return Err(NamespaceError::HostnameWithoutUts);
        }
    }
    let sysctls = request
        .sysctls
        .iter()
        .map(|(name, value)| Sysctl::parse(name, value, &kinds))
        .collect::<Result<Vec<_>, _>>()?;
    if kinds.is_empty() {
        return Ok(PinnedNamespaces::default());
    }

    let mut undo = Undo::default();
    let result = create_dir(request.dir, &mut undo).and_then(|()| {
        on_throwaway_thread(request.dir, || {
            let flags = kinds
                .iter()
                .fold(CloneFlags::empty(), |f, k| f | k.clone_flag());
            unshare(flags).map_err(os_error("unsharing namespaces for", request.dir))?;
            if let Some(hostname) = request.hostname {
                sethostname(hostname).map_err(os_error("setting the host name of", request.dir))?;
            }
            sysctls.iter().try_for_each(Sysctl::write)?;
            let mut pinned = PinnedNamespaces::default();
            for &kind in &kinds {
                let source = format!("/proc/thread-self/ns/{}", kind.file_name());
                let target = request.dir.join(kind.file_name());
                bind_pin(Path::new(&source), &target, &mut undo)?;
                pinned.set(kind, target);
            }
            Ok(pinned)
        })
    });
    undo.finish_now(result)
}

/// Unmounts and removes every pin file in `dir`, then `dir` if empty.
/// Missing files, files nothing is mounted on, and a missing `dir` are fine.
pub fn unpin(dir: &Path) -> Result<(), NamespaceError> {
    let names = NamespaceKind::ALL.map(NamespaceKind::file_name);
    remove_pins(names.iter().chain([&PID_FILE]).map(|name| dir.join(name)))?;
    match fs::remove_dir(dir) {
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Err(io_error("removing", dir)(e))
        }
        _ => Ok(()),
    }
}

/// Runs `work` on a thread of its own that ends with it: whatever
/// namespaces `work` enters or creates die with the thread.
fn on_throwaway_thread<T: Send>(
    dir: &Path,
    work: impl FnOnce() -> Result<T, NamespaceError> + Send,
) -> Result<T, NamespaceError> {
    thread::scope(|scope| {
        thread::Builder::new()
            .name("wharf-ns".into())
            .spawn_scoped(scope, work)
            .map_err(io_error("starting a thread to create namespaces for", dir))?
            .join()
            .unwrap_or_else(|_| {
                Err(NamespaceError::ThreadPanicked {
                    dir: dir.to_path_buf(),
                })
            })
    })
}

fn create_dir(dir: &Path, undo: &mut Undo<'_>) -> Result<(), NamespaceError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io_error("creating", dir))?;
    let dir = dir.to_path_buf();
    undo.push("removing the namespace directory", move || {
        fs::remove_dir(&dir).map_err(io_error("removing", &dir))
    });
    Ok(())
}

/// Bind-mounts the namespace file `source` onto a new empty file `target`.
fn bind_pin(source: &Path, target: &Path, undo: &mut Undo<'_>) -> Result<(), NamespaceError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(target)
    {
        Ok(_) => {
            let pin = target.to_path_buf();
            undo.push("unpinning", move || remove_pins(std::iter::once(pin)));
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(NamespaceError::AlreadyPinned {
                path: target.to_path_buf(),
            })
        }
        Err(e) => return Err(io_error("creating", target)(e)),
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(os_error("bind-mounting a namespace onto", target))
}

/// Tries every pin even after a failure; the first failure is returned.
fn remove_pins(pins: impl Iterator<Item = PathBuf>) -> Result<(), NamespaceError> {
    let mut first_error = None;
    for pin in pins {
        if let Err(e) = remove_pin(&pin) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn remove_pin(path: &Path) -> Result<(), NamespaceError> {
    sys::unmount_detached(path).map_err(io_error("unmounting", path))?;
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("removing", path)(e)),
        _ => Ok(()),
    }
}

/// A validated sysctl, ready to be written from inside the namespaces.
struct Sysctl<'a> {
    name: &'a str,
    value: &'a str,
    /// Under /proc/sys.
    path: PathBuf,
}

impl<'a> Sysctl<'a> {
    /// Checks the name's form and that it belongs to one of `kinds`.
    /// Kubernetes' forms: `net.ipv4.ip_forward`, or `net/ipv4/ip_forward`
    /// where a `.` is part of a component (`net/ipv4/conf/eth0.100/...`);
    /// in the dotted form a `/` stands for such a `.`.
    fn parse(
        name: &'a str,
        value: &'a str,
        kinds: &[NamespaceKind],
    ) -> Result<Self, NamespaceError> {
        let invalid = |reason| NamespaceError::InvalidSysctl {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() || name.len() > MAX_SYSCTL_NAME_LEN {
            return Err(invalid("empty or too long"));
        }
        let dotted = name
            .find(['.', '/'])
            .is_none_or(|i| name.as_bytes()[i] == b'.');
        let (separator, literal_dot) = if dotted { ('.', '/') } else { ('/', '.') };
        let components: Vec<String> = name
            .split(separator)
            .map(|c| c.replace(literal_dot, "."))
            .collect();
        for component in &components {
            if component.is_empty() || component == "." || component == ".." {
                return Err(invalid("empty, '.' or '..' component"));
            }
            if !component
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'))
            {
                return Err(invalid(
                    "only lowercase letters, digits, '_', '-' and separators are allowed",
                ));
            }
        }
        match sysctl_namespace(&components) {
            None => {
                return Err(NamespaceError::SysctlNotNamespaced {
                    name: name.to_string(),
                })
            }
            Some(kind) if !kinds.contains(&kind) => {
                return Err(NamespaceError::SysctlNeedsNamespace {
                    name: name.to_string(),
                    kind,
                })
            }
            Some(_) => {}
        }
        let value_ok = !value.is_empty()
            && value.len() <= MAX_SYSCTL_VALUE_LEN
            && !value.chars().any(|c| c.is_control() && c != '\t');
        if !value_ok {
            return Err(invalid("the value is empty, too long or not one line"));
        }
        let path = components
            .iter()
            .fold(PathBuf::from("/proc/sys"), |p, c| p.join(c));
        Ok(Sysctl { name, value, path })
    }

    /// Must run on the thread that created the namespaces: /proc/sys shows
    /// the net and IPC sysctls of the namespaces of the thread that looks
    /// them up, whatever the procfs mount.
    fn write(&self) -> Result<(), NamespaceError> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    NamespaceError::UnknownSysctl {
                        name: self.name.to_string(),
                    }
                } else {
                    self.rejected(e)
                }
            })?;
        // A sysctl takes its value in one write.
        match file.write(self.value.as_bytes()) {
            Ok(n) if n == self.value.len() => Ok(()),
            Ok(_) => Err(self.rejected(io::Error::new(io::ErrorKind::WriteZero, "short write"))),
            Err(e) => Err(self.rejected(e)),
        }
    }

    fn rejected(&self, source: io::Error) -> NamespaceError {
        NamespaceError::SysctlRejected {
            name: self.name.to_string(),
            value: self.value.to_string(),
            source,
        }
    }
}

/// The namespace a sysctl belongs to, as runc's validator sees it.
fn sysctl_namespace(components: &[String]) -> Option<NamespaceKind> {
    let parts: Vec<&str> = components.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["net", _, ..] => Some(NamespaceKind::Net),
        ["fs", "mqueue", _, ..] => Some(NamespaceKind::Ipc),
        ["kernel", "sem" | "shmall" | "shmmax" | "shmmni" | "shm_rmid_forced"] => {
            Some(NamespaceKind::Ipc)
        }
        ["kernel", "msgmax" | "msgmnb" | "msgmni"] => Some(NamespaceKind::Ipc),
        ["kernel", "hostname" | "domainname"] => Some(NamespaceKind::Uts),
        _ => None,
    }
}

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
        wait_until_ready(&mut child, &program)
            .and_then(|()| {
                let source = PathBuf::from(format!("/proc/{}/ns/pid", child.id()));
                let ns_inode = fs::metadata(&source)
                    .map_err(io_error("inspecting", &source))?
                    .ino();
                let path = dir.join(PID_FILE);
                bind_pin(&source, &path, &mut undo)?;
                Ok(PidHolder {
                    pid: child.id(),
                    path,
                    ns_inode,
                })
            })
            .inspect_err(|_| {
                let _ = child.kill();
                let _ = child.wait();
            })
        // Dropping `child` neither kills nor reaps it; `stop` reaps it.
    })();
    undo.finish_now(started)
}

fn holder_failed(program: &Path, reason: String) -> NamespaceError {
    NamespaceError::HolderFailed {
        program: program.to_path_buf(),
        reason,
    }
}

/// Reads the holder's stdout until its ready line: from then on it reaps
/// whatever joins the namespace. End of file means it died.
fn wait_until_ready(child: &mut Child, program: &Path) -> Result<(), NamespaceError> {
    let Some(mut stdout) = child.stdout.take() else {
        return Err(holder_failed(program, "no pipe on its stdout".into()));
    };
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
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, kinds: &[NamespaceKind]) -> Result<PathBuf, NamespaceError> {
        Sysctl::parse(name, "1", kinds).map(|s| s.path)
    }

    const ALL: &[NamespaceKind] = &NamespaceKind::ALL;

    #[test]
    fn sysctl_names_map_to_proc_sys_paths() {
        for (name, path) in [
            ("net.ipv4.ip_forward", "net/ipv4/ip_forward"),
            ("net/ipv4/ip_forward", "net/ipv4/ip_forward"),
            (
                "net.ipv4.conf.eth0/100.rp_filter",
                "net/ipv4/conf/eth0.100/rp_filter",
            ),
            (
                "net/ipv4/conf/eth0.100/rp_filter",
                "net/ipv4/conf/eth0.100/rp_filter",
            ),
            ("kernel.shmmni", "kernel/shmmni"),
            ("fs.mqueue.msg_max", "fs/mqueue/msg_max"),
            ("kernel.domainname", "kernel/domainname"),
        ] {
            assert_eq!(parse(name, ALL).unwrap(), Path::new("/proc/sys").join(path));
        }
    }

    #[test]
    fn sysctl_names_cannot_escape_proc_sys() {
        for name in [
            "",
            "net..ipv4",
            "net/../../etc/passwd",
            "net/ipv4/..",
            ".net.x",
            "net.x.",
            "net.IPv4.x",
            "net.ipv4.a b",
            "net.ipv4.x\n",
        ] {
            assert!(
                matches!(parse(name, ALL), Err(NamespaceError::InvalidSysctl { .. })),
                "{name:?} accepted"
            );
        }
    }

    #[test]
    fn sysctls_that_would_change_the_host_are_refused() {
        let no_net = &[NamespaceKind::Ipc, NamespaceKind::Uts];
        assert!(matches!(
            parse("net.ipv4.ip_forward", no_net),
            Err(NamespaceError::SysctlNeedsNamespace {
                kind: NamespaceKind::Net,
                ..
            })
        ));
        assert!(matches!(
            parse("kernel.shmmax", &[NamespaceKind::Net]),
            Err(NamespaceError::SysctlNeedsNamespace {
                kind: NamespaceKind::Ipc,
                ..
            })
        ));
        for name in [
            "kernel.pid_max",
            "vm.overcommit_memory",
            "fs.file-max",
            "net",
            "fs.mqueue",
            "kernel.sem.x",
        ] {
            assert!(
                matches!(
                    parse(name, ALL),
                    Err(NamespaceError::SysctlNotNamespaced { .. })
                ),
                "{name} accepted"
            );
        }
        let error = parse("net.core.somaxconn", &[]).unwrap_err();
        assert_eq!(error.kind(), Kind::InvalidArgument);
    }

    #[test]
    fn sysctl_values_are_one_line() {
        for value in ["", "1\n2", "1\r"] {
            assert!(
                Sysctl::parse("net.ipv4.ip_forward", value, ALL).is_err(),
                "{value:?}"
            );
        }
        assert!(Sysctl::parse("net.ipv4.ping_group_range", "0\t2147483647", ALL).is_ok());
    }

    #[test]
    fn pinned_namespaces_round_trip_through_json() {
        let pinned = PinnedNamespaces {
            net: Some("/run/wharf/ns/net".into()),
            ipc: None,
            uts: Some("/run/wharf/ns/uts".into()),
        };
        let json = serde_json::to_string(&pinned).unwrap();
        assert_eq!(
            serde_json::from_str::<PinnedNamespaces>(&json).unwrap(),
            pinned
        );
        assert_eq!(
            pinned.path(NamespaceKind::Uts),
            Some(Path::new("/run/wharf/ns/uts"))
        );
        assert_eq!(pinned.path(NamespaceKind::Ipc), None);
    }

    #[test]
    fn a_request_without_namespaces_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ns_dir = dir.path().join("ns");
        let request = PinRequest {
            dir: &ns_dir,
            kinds: &[],
            hostname: None,
            sysctls: &[],
        };
        assert_eq!(pin(&request).unwrap(), PinnedNamespaces::default());
        assert!(!ns_dir.exists());
        unpin(&ns_dir).unwrap();
    }
}
