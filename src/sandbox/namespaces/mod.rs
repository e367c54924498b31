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
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::sethostname;
use serde::{Deserialize, Serialize};

use super::files::{validate_hostname, InvalidHostname};
use crate::error::{Classify, IoError, Kind};
use crate::sys;
use crate::undo::{CleanupFailures, Undo, Undone};

mod pid_holder;
mod sysctl;
mod userns;

pub use pid_holder::{run_pid_holder, spawn_pid_holder, PidHolder};
use sysctl::Sysctl;
pub use userns::{pin_in_userns, UsernsPins, USER_FILE};

/// The file a shared PID namespace is pinned on, beside the others.
pub const PID_FILE: &str = "pid";
/// What [`run_pid_holder`] prints on stdout once it is ready to reap.
pub const PID_HOLDER_READY: &str = "wharf-pid-holder-ready";

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
    /// The pod's own user namespace, which owns the others
    /// (`userns_options` mode POD).
    #[serde(default)]
    pub user: Option<PathBuf>,
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
    #[error(transparent)]
    Userns(#[from] crate::idmap::IdmapError),
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
            NamespaceError::Userns(e) => e.kind(),
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
    let (kinds, sysctls) = checked(request)?;
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

/// The requested kinds in [`NamespaceKind::ALL`] order, and the sysctls,
/// checked against them and the host name.
fn checked<'a>(
    request: &PinRequest<'a>,
) -> Result<(Vec<NamespaceKind>, Vec<Sysctl<'a>>), NamespaceError> {
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
    Ok((kinds, sysctls))
}

/// Unmounts and removes every pin file in `dir`, then `dir` if empty.
/// Missing files, files nothing is mounted on, and a missing `dir` are fine.
pub fn unpin(dir: &Path) -> Result<(), NamespaceError> {
    let names = NamespaceKind::ALL.map(NamespaceKind::file_name);
    remove_pins(
        names
            .iter()
            .chain([&PID_FILE, &USER_FILE])
            .map(|name| dir.join(name)),
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_namespaces_round_trip_through_json() {
        let pinned = PinnedNamespaces {
            net: Some("/run/wharf/ns/net".into()),
            ipc: None,
            uts: Some("/run/wharf/ns/uts".into()),
            user: None,
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
