//! User namespaces for pods: the ID mappings a pod asks for, checked; a
//! short-lived process that creates a user namespace with them (and, in
//! the same step, the namespaces it must own); and ID-mapped mounts
//! (`mount_setattr(MOUNT_ATTR_IDMAP)`, Linux 5.12+, under overlayfs 5.19+),
//! which runc 1.1 cannot make itself.
//!
//! A user namespace can only be created or entered by a single-threaded
//! process, and the daemon has many threads: [`with_new_userns`] forks a
//! child that does nothing but `unshare` and wait, while the daemon writes
//! its maps and looks at its `/proc/<pid>/ns`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::api;
use crate::error::{Classify, IoError, Kind};

/// One contiguous range: container IDs `container_id..container_id+length`
/// are host IDs `host_id..host_id+length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdRange {
    /// The host ID of container ID `id`, if mapped.
    pub fn host_of(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.container_id)?;
        (offset < self.length).then(|| self.host_id + offset)
    }

    /// The container ID of host ID `id`; the overflow ID 65534 (what the
    /// kernel shows for an unmapped ID) when not mapped.
    pub fn container_of(&self, id: u32) -> u32 {
        id.checked_sub(self.host_id)
            .filter(|offset| *offset < self.length)
            .map_or(OVERFLOW_ID, |offset| self.container_id + offset)
    }

    /// As `/proc/<pid>/uid_map` takes it.
    fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }
}

/// The ID the kernel shows for one a user namespace does not map.
const OVERFLOW_ID: u32 = 65534;

/// A pod's user namespace: one UID and one GID range, each mapping
/// container ID 0, as kubelet asks for and containerd accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsernsMappings {
    pub uids: IdRange,
    pub gids: IdRange,
}

impl UsernsMappings {
    /// The host UID and GID of the container's root.
    pub fn host_root(&self) -> (u32, u32) {
        (self.uids.host_id, self.gids.host_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("invalid user namespace options: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("the process creating a user namespace failed: {0}")]
    Helper(String),
}

impl Classify for IdmapError {
    fn kind(&self) -> Kind {
        match self {
            IdmapError::Invalid(_) => Kind::InvalidArgument,
            IdmapError::Io(_) | IdmapError::Helper(_) => Kind::Internal,
        }
    }
}

fn invalid(reason: impl Into<String>) -> IdmapError {
    IdmapError::Invalid(reason.into())
}

/// What a pod's `userns_options` ask for: `Ok(None)` for the host's user
/// namespace (no options, or mode NODE without mappings), the mappings for
/// mode POD. CONTAINER and TARGET modes, several ranges, an unmapped
/// container root, a range that maps the host's root or overflows are
/// refused, as containerd and kubelet refuse them.
pub fn from_cri(
    options: Option<&api::UserNamespace>,
) -> Result<Option<UsernsMappings>, IdmapError> {
    let Some(options) = options else {
        return Ok(None);
    };
    match api::NamespaceMode::try_from(options.mode) {
        Ok(api::NamespaceMode::Node) => {
            if options.uids.is_empty() && options.gids.is_empty() {
                Ok(None)
            } else {
                Err(invalid("mode NODE takes no ID mappings"))
            }
        }
        Ok(api::NamespaceMode::Pod) => Ok(Some(UsernsMappings {
            uids: one_range("uids", &options.uids)?,
            gids: one_range("gids", &options.gids)?,
        })),
        Ok(mode) => Err(invalid(format!(
            "mode {} is not supported: only POD and NODE are",
            mode.as_str_name()
        ))),
        Err(_) => Err(invalid(format!("unknown mode {}", options.mode))),
    }
}

fn one_range(what: &str, mappings: &[api::IdMapping]) -> Result<IdRange, IdmapError> {
    let [mapping] = mappings else {
        return Err(invalid(format!(
            "{what}: exactly one mapping is supported, got {}",
            mappings.len()
        )));
    };
    let range = IdRange {
        container_id: mapping.container_id,
        host_id: mapping.host_id,
        length: mapping.length,
    };
    if range.container_id != 0 {
        return Err(invalid(format!(
            "{what}: container ID 0 must be mapped (the mapping starts at {})",
            range.container_id
        )));
    }
    if range.length == 0 {
        return Err(invalid(format!("{what}: the mapping is empty")));
    }
    if range.host_id == 0 {
        return Err(invalid(format!(
            "{what}: the mapping includes the host's ID 0, which would make the pod's root the host's"
        )));
    }
    // The kernel's IDs are u32 with u32::MAX meaning "no ID".
    if u64::from(range.host_id) + u64::from(range.length) > u64::from(u32::MAX) {
        return Err(invalid(format!(
            "{what}: host IDs {}+{} go past the largest ID",
            range.host_id, range.length
        )));
    }
    Ok(range)
}

/// The mapping the start-up probe uses: any range will do.
const PROBE_MAPPINGS: UsernsMappings = UsernsMappings {
    uids: IdRange {
        container_id: 0,
        host_id: 65536,
        length: 65536,
    },
    gids: IdRange {
        container_id: 0,
        host_id: 65536,
        length: 65536,
    },
};

/// Whether ID-mapped mounts of directories on `dir`'s filesystem work on
/// this kernel (what critest checks before its user-namespace specs, and
/// what the rootfs of a user-namespaced pod needs). Nothing is left
/// mounted: the ID-mapped copy is never attached.
pub fn probe(dir: &Path) -> Result<(), IdmapError> {
    with_new_userns(&PROBE_MAPPINGS, CloneFlags::empty(), None, |ns, _| {
        let userns = open_ns(&ns.join("user"))?;
        idmapped_tree(dir, userns.as_fd(), false).map(drop)
    })
}

/// Whether others may pass through `dir` and each of its parents (the
/// execute bit for others): a container whose root is not the host's must
/// reach its rootfs and the pod's files below it.
pub fn check_traversable(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for dir in dir.ancestors() {
        let mode = fs::metadata(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) cannot be passed through by others",
                dir.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

fn open_ns(path: &Path) -> Result<File, IdmapError> {
    File::open(path).map_err(|e| IoError::new("opening", path, e).into())
}

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
        // SAFETY: the child runs only async-signal-safe system calls
        // (close, prctl, unshare, clone, dup2, setpgid, chdir, execv,
        // write, read, _exit) on values made before the fork, and never
        // returns into Rust code that could allocate or take a lock
        // another thread held at the fork.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                // SAFETY: raw system calls on fds and C strings this
                // process owns; see the comment on the fork.
                unsafe {
                    // The parent's ends: with the release end open here too
                    // the read below would never see end of file.
                    libc::close(release_write.as_raw_fd());
                    libc::close(ready_read.as_raw_fd());
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

impl Drop for UsernsChild {
    fn drop(&mut self) {
        drop(self.release.take());
        let _ = waitpid(self.pid, None);
    }
}

// The new mount API, not (yet) in nix or libc's stable surface for every
// target: the x86_64/aarch64 numbers and flags from <linux/mount.h>.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// A detached copy of the mount at `source` (with everything beneath it
/// when `recursive`), ID-mapped through `userns`: a file owned by ID `n` on
/// disk shows up owned by the host ID that `n` maps to in `userns`.
#[allow(unsafe_code)]
pub fn idmapped_tree(
    source: &Path,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> Result<OwnedFd, IdmapError> {
    let path = c_path(source).map_err(|e| IoError::new("opening", source, e))?;
    let recursive_flag = if recursive {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    // SAFETY: open_tree reads the NUL-terminated `path`, alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | recursive_flag,
        )
    };
    if fd < 0 {
        return Err(
            IoError::new("cloning the mount at", source, io::Error::last_os_error()).into(),
        );
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr reads `attr` (its size given) and the empty
    // NUL-terminated path, both alive for the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if result < 0 {
        return Err(
            IoError::new("ID-mapping a mount of", source, io::Error::last_os_error()).into(),
        );
    }
    Ok(tree)
}

/// Attaches the detached mount `tree` on `target` (an existing directory).
#[allow(unsafe_code)]
pub fn attach(tree: OwnedFd, target: &Path) -> Result<(), IdmapError> {
    let path = c_path(target).map_err(|e| IoError::new("mounting on", target, e))?;
    // SAFETY: move_mount reads the two NUL-terminated paths, alive for the
    // call; `tree` stays open until after it.
    let result = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if result < 0 {
        return Err(IoError::new(
            "attaching an ID-mapped mount on",
            target,
            io::Error::last_os_error(),
        )
        .into());
    }
    Ok(())
}

/// ID-maps `source` through `userns` onto `target`, created for it: a
/// directory (mode 0711: the container's root, a host ID the directory's
/// owner does not map to, passes through it to the mount) or, for any
/// other kind of source, an empty file.
pub fn mount_idmapped(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> Result<(), IdmapError> {
    let tree = idmapped_tree(source, userns, recursive)?;
    attach_on_new(tree, source, target)
}

/// Attaches `tree`, a detached mount of `source`, on `target`, created as
/// [`mount_idmapped`] says.
pub fn attach_on_new(tree: OwnedFd, source: &Path, target: &Path) -> Result<(), IdmapError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let is_dir = fs::metadata(source)
        .map_err(|e| IoError::new("inspecting", source, e))?
        .is_dir();
    let created = if is_dir {
        fs::DirBuilder::new().mode(0o711).create(target)
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(target)
            .map(drop)
    };
    match created {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(IoError::new("creating", target, e).into())
        }
        _ => {}
    }
    attach(tree, target)
}

/// Detaches whatever is mounted on each entry of `dir`, then removes them
/// and `dir`: never deletes through a mount (an entry still mounted on is
/// left, and reported). Missing `dir` is fine.
pub fn unmount_all(dir: &Path) -> Result<(), IdmapError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IoError::new("listing", dir, e).into()),
    };
    let mut first_error = None;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let result = crate::sys::unmount_detached(&path)
            .and_then(|_| {
                if is_dir {
                    fs::remove_dir(&path)
                } else {
                    fs::remove_file(&path)
                }
            })
            .map_err(|e| IdmapError::from(IoError::new("unmounting", &path, e)));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(IoError::new("removing", dir, e).into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(mode: api::NamespaceMode, uids: &[(u32, u32, u32)]) -> api::UserNamespace {
        let mappings: Vec<api::IdMapping> = uids
            .iter()
            .map(|&(container_id, host_id, length)| api::IdMapping {
                container_id,
                host_id,
                length,
            })
            .collect();
        api::UserNamespace {
            mode: mode as i32,
            uids: mappings.clone(),
            gids: mappings,
        }
    }

    #[test]
    fn pod_mode_takes_one_range_from_container_root() {
        let mappings = from_cri(Some(&options(
            api::NamespaceMode::Pod,
            &[(0, 1000, 100_000)],
        )))
        .unwrap()
        .unwrap();
        assert_eq!(mappings.host_root(), (1000, 1000));
        assert_eq!(mappings.uids.host_of(5), Some(1005));
        assert_eq!(mappings.uids.host_of(100_000), None);
        assert_eq!(mappings.uids.container_of(1005), 5);
        assert_eq!(mappings.uids.container_of(999), 65534);
        assert_eq!(mappings.uids.container_of(101_000), 65534);
        assert_eq!(mappings.uids.map_line(), "0 1000 100000\n");
    }

    #[test]
    fn the_helper_writes_the_maps_and_idmapped_mounts_work_here() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let mappings = from_cri(Some(&options(
            api::NamespaceMode::Pod,
            &[(0, 200_000, 1000)],
        )))
        .unwrap()
        .unwrap();
        let seen = with_new_userns(&mappings, CloneFlags::CLONE_NEWNET, None, |ns, init| {
            assert!(init.is_none());
            let map = ns.parent().unwrap().join("uid_map");
            // The network namespace made with it is not this process's.
            let net = fs::read_link(ns.join("net")).map_err(|e| IoError::new("reading", ns, e))?;
            assert_ne!(net, fs::read_link("/proc/self/ns/net").unwrap());
            fs::read_to_string(&map).map_err(|e| IdmapError::from(IoError::new("reading", &map, e)))
        })
        .unwrap();
        let fields: Vec<&str> = seen.split_whitespace().collect();
        assert_eq!(fields, ["0", "200000", "1000"]);
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path()).unwrap();
    }

    #[test]
    fn node_mode_and_no_options_are_the_hosts() {
        assert_eq!(from_cri(None).unwrap(), None);
        assert_eq!(
            from_cri(Some(&options(api::NamespaceMode::Node, &[]))).unwrap(),
            None
        );
    }

    #[test]
    fn what_critest_and_kubelet_refuse_is_refused() {
        for bad in [
            options(
                api::NamespaceMode::Pod,
                &[(0, 1000, 100_000), (0, 2000, 100_000)],
            ),
            options(api::NamespaceMode::Pod, &[(1, 1000, 100_000)]),
            options(api::NamespaceMode::Pod, &[]),
            options(api::NamespaceMode::Pod, &[(0, 0, 65536)]),
            options(api::NamespaceMode::Pod, &[(0, 1000, 0)]),
            options(api::NamespaceMode::Pod, &[(0, u32::MAX - 10, 100)]),
            options(api::NamespaceMode::Container, &[]),
            options(api::NamespaceMode::Target, &[]),
            options(api::NamespaceMode::Node, &[(0, 1000, 10)]),
        ] {
            let error = from_cri(Some(&bad)).unwrap_err();
            assert_eq!(error.kind(), Kind::InvalidArgument, "{bad:?}: {error}");
        }
    }
}
