//! Pod namespaces and shared files for real: pins checked from outside with
//! nsenter and from inside a runc container, PID namespace holders, and
//! the `/dev/shm` tmpfs. Needs root, runc, nsenter and /bin/busybox.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::statfs::{statfs, TMPFS_MAGIC};
use nix::sys::statvfs::{statvfs, FsFlags};
use tempfile::TempDir;
use wharf::error::{Classify, Kind};
use wharf::sandbox::files::{mount_shm, unmount_shm, DEFAULT_SHM_SIZE};
use wharf::sandbox::namespaces::{
    pin, spawn_pid_holder, unpin, NamespaceError, NamespaceKind, PidHolder, PinRequest,
    PinnedNamespaces,
};

const ALL_KINDS: &[NamespaceKind] = &[NamespaceKind::Net, NamespaceKind::Ipc, NamespaceKind::Uts];

/// A state directory whose pins are removed however the test ends.
struct PinDir {
    _temp: TempDir,
    ns: PathBuf,
}

impl PinDir {
    fn new() -> PinDir {
        let temp = tempfile::tempdir().unwrap();
        let ns = temp.path().join("ns");
        PinDir { _temp: temp, ns }
    }

    fn pin(
        &self,
        hostname: &str,
        sysctls: &[(&str, &str)],
    ) -> Result<PinnedNamespaces, NamespaceError> {
        let sysctls: Vec<(String, String)> = sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        pin(&PinRequest {
            dir: &self.ns,
            kinds: ALL_KINDS,
            hostname: Some(hostname),
            sysctls: &sysctls,
        })
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = unpin(&self.ns);
    }
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `nsenter --<kind>=<path> <args>`'s stdout.
fn nsenter(kind: &str, path: &Path, args: &[&str]) -> String {
    run(Command::new("nsenter")
        .arg(format!("--{kind}={}", path.display()))
        .args(args))
}

/// Mount points at or below `dir`, from this process's mountinfo.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount_point| mount_point.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

fn host_sysctl(path: &str) -> String {
    fs::read_to_string(Path::new("/proc/sys").join(path)).unwrap()
}

fn hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

#[test]
fn pinned_namespaces_are_configured_and_outlive_the_pinning_thread() {
    let host_ping_range = host_sysctl("net/ipv4/ping_group_range");
    let host_shmmni = host_sysctl("kernel/shmmni");
    let host_name = hostname();
    let dir = PinDir::new();

    let started = Instant::now();
    let pinned = dir
        .pin(
            "pod-a",
            &[
                ("net.ipv4.ping_group_range", "0 2147483647"),
                ("kernel/shmmni", "8192"),
            ],
        )
        .unwrap();
    eprintln!(
        "pin net+ipc+uts with hostname and 2 sysctls: {:?}",
        started.elapsed()
    );

    let net = pinned.net.clone().unwrap();
    let ipc = pinned.ipc.clone().unwrap();
    let uts = pinned.uts.clone().unwrap();
    assert_eq!(net, dir.ns.join("net"));
    assert_eq!(nsenter("uts", &uts, &["hostname"]), "pod-a\n");
    assert_eq!(
        nsenter("net", &net, &["cat", "/proc/sys/net/ipv4/ping_group_range"]),
        "0\t2147483647\n"
    );
    assert_eq!(
        nsenter("ipc", &ipc, &["cat", "/proc/sys/kernel/shmmni"]),
        "8192\n"
    );
    let links = nsenter("net", &net, &["ip", "-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.starts_with("1: lo:"), "{links}");

    assert_eq!(host_sysctl("net/ipv4/ping_group_range"), host_ping_range);
    assert_eq!(host_sysctl("kernel/shmmni"), host_shmmni);
    assert_eq!(hostname(), host_name);
    for kind in ["net", "ipc", "uts"] {
        let own = fs::metadata(format!("/proc/self/ns/{kind}")).unwrap().ino();
        assert_ne!(
            fs::metadata(dir.ns.join(kind)).unwrap().ino(),
            own,
            "{kind} is the host's"
        );
    }

    assert!(matches!(
        dir.pin("pod-a", &[]),
        Err(NamespaceError::AlreadyPinned { .. })
    ));
    assert_eq!(
        mounts_under(&dir.ns).len(),
        3,
        "a failed second pin took the first one down"
    );

    unpin(&dir.ns).unwrap();
    unpin(&dir.ns).unwrap();
    assert!(mounts_under(&dir.ns).is_empty());
    assert!(!dir.ns.exists());
}

#[test]
fn a_failing_step_leaves_nothing_behind() {
    let dir = PinDir::new();
    let error = dir
        .pin("pod-b", &[("net.ipv4.no_such_sysctl", "1")])
        .unwrap_err();
    assert!(
        matches!(error, NamespaceError::UnknownSysctl { .. }),
        "{error}"
    );
    assert_eq!(error.kind(), Kind::InvalidArgument);
    assert!(!dir.ns.exists());

    // The kernel refuses the value: after the namespaces exist.
    fs::create_dir(&dir.ns).unwrap();
    let error = dir
        .pin("pod-b", &[("kernel.shmmni", "not-a-number")])
        .unwrap_err();
    assert!(
        matches!(error, NamespaceError::SysctlRejected { .. }),
        "{error}"
    );
    assert!(dir.ns.is_dir(), "removed a directory it did not create");
    assert_eq!(fs::read_dir(&dir.ns).unwrap().count(), 0);
    assert!(mounts_under(&dir.ns).is_empty());

    // The last pin fails after two are mounted: both come down again, and
    // the file that was in the way stays.
    fs::write(dir.ns.join("uts"), "").unwrap();
    let error = dir.pin("pod-b", &[]).unwrap_err();
    assert!(
        matches!(error, NamespaceError::AlreadyPinned { .. }),
        "{error}"
    );
    assert!(mounts_under(&dir.ns).is_empty());
    let left: Vec<_> = fs::read_dir(&dir.ns)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["uts"]);
    fs::remove_file(dir.ns.join("uts")).unwrap();

    // Refused before anything is created.
    let error = pin(&PinRequest {
        dir: &dir.ns,
        kinds: &[NamespaceKind::Ipc],
        hostname: None,
        sysctls: &[("net.ipv4.ip_forward".into(), "1".into())],
    })
    .unwrap_err();
    assert!(matches!(
        error,
        NamespaceError::SysctlNeedsNamespace {
            kind: NamespaceKind::Net,
            ..
        }
    ));
    let error = pin(&PinRequest {
        dir: &dir.ns,
        kinds: &[NamespaceKind::Net],
        hostname: Some("pod-b"),
        sysctls: &[],
    })
    .unwrap_err();
    assert!(matches!(error, NamespaceError::HostnameWithoutUts));
    assert_eq!(fs::read_dir(&dir.ns).unwrap().count(), 0);
}

#[test]
fn a_pin_directory_is_reusable_after_unpin() {
    const ROUNDS: usize = 20;
    let dir = PinDir::new();
    let (mut pins, mut unpins) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let started = Instant::now();
        let pinned = dir
            .pin(&format!("round-{round}"), &[("kernel.shmmni", "8192")])
            .unwrap();
        pins.push(started.elapsed());
        assert!(pinned.net.unwrap().exists());
        let started = Instant::now();
        unpin(&dir.ns).unwrap();
        unpins.push(started.elapsed());
        assert!(!dir.ns.exists());
    }
    pins.sort_unstable();
    unpins.sort_unstable();
    eprintln!(
        "pin net+ipc+uts, {ROUNDS} rounds: median {:?}, max {:?}; unpin median {:?}",
        pins[ROUNDS / 2],
        pins[ROUNDS - 1],
        unpins[ROUNDS / 2]
    );
    assert!(mounts_under(&dir.ns).is_empty());
}

#[test]
fn fifty_pods_pin_at_once() {
    const PODS: usize = 50;
    let dirs: Vec<PinDir> = (0..PODS).map(|_| PinDir::new()).collect();
    let started = Instant::now();
    let results: Vec<(Result<PinnedNamespaces, NamespaceError>, Duration)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = dirs
                .iter()
                .enumerate()
                .map(|(i, dir)| {
                    scope.spawn(move || {
                        let started = Instant::now();
                        let result = dir.pin(
                            &format!("pod-{i}"),
                            &[("net.ipv4.ip_unprivileged_port_start", "80")],
                        );
                        (result, started.elapsed())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
    let total = started.elapsed();
    let slowest = results.iter().map(|(_, took)| *took).max().unwrap();
    eprintln!("{PODS} concurrent pins: {total:?} in all, slowest {slowest:?}");

    let mut net_inodes = Vec::new();
    for (i, (result, _)) in results.into_iter().enumerate() {
        let pinned = result.unwrap_or_else(|e| panic!("pod {i}: {e}"));
        net_inodes.push(fs::metadata(pinned.net.unwrap()).unwrap().ino());
        if i % 10 == 0 {
            assert_eq!(
                nsenter("uts", &pinned.uts.unwrap(), &["hostname"]),
                format!("pod-{i}\n")
            );
        }
    }
    net_inodes.sort_unstable();
    net_inodes.dedup();
    assert_eq!(net_inodes.len(), PODS, "namespaces shared between pods");

    for dir in &dirs {
        unpin(&dir.ns).unwrap();
        assert!(mounts_under(&dir.ns).is_empty());
    }
}

/// A runc container removed however the test ends.
struct RuncContainer {
    root: TempDir,
    id: String,
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.root.path())
            .args(["delete", "--force", &self.id])
            .output();
    }
}

#[test]
fn runc_joins_pinned_namespaces_by_path() {
    let dir = PinDir::new();
    let pinned = dir
        .pin("pod-runc", &[("net.ipv4.ping_group_range", "0 2147483647")])
        .unwrap();

    let bundle = tempfile::tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    for sub in ["bin", "proc", "dev"] {
        fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let script = "busybox hostname; busybox ip -o link show; busybox cat /proc/sys/net/ipv4/ping_group_range";
    let path = |p: &Option<PathBuf>| p.as_ref().unwrap().to_string_lossy().into_owned();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/busybox", "sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "mount"},
                {"type": "network", "path": path(&pinned.net)},
                {"type": "uts", "path": path(&pinned.uts)},
                {"type": "ipc", "path": path(&pinned.ipc)}
            ]
        }
    });
    fs::write(bundle.path().join("config.json"), config.to_string()).unwrap();

    let container = RuncContainer {
        root: tempfile::tempdir().unwrap(),
        id: format!("wharf-ns-test-{}", std::process::id()),
    };
    let output = run(Command::new("runc")
        .arg("--root")
        .arg(container.root.path())
        .arg("run")
        .arg("--bundle")
        .arg(bundle.path())
        .arg(&container.id));
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 3, "{output}");
    assert_eq!(lines[0], "pod-runc");
    assert!(lines[1].starts_with("1: lo:"), "{output}");
    assert_eq!(lines[2], "0\t2147483647");
}

/// The holder the daemon uses: the monitor binary's `pause` subcommand.
fn holder_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf-monitor"));
    command.arg("pause");
    command
}

/// A holder stopped however the test ends.
struct HolderGuard(PidHolder);

impl Drop for HolderGuard {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// `pid` as seen from each PID namespace it is in, outermost first.
fn ns_pids(pid: u32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a `sleep` in the namespace whose parent exits at once, so the
/// holder inherits it; its PID in this namespace.
fn orphan_in(ns: &Path) -> u32 {
    let script = "busybox sleep 1000 </dev/null >/dev/null 2>&1 & echo $!";
    let inner: u32 = nsenter("pid", ns, &["/bin/busybox", "sh", "-c", script])
        .trim()
        .parse()
        .unwrap();
    let mut found = None;
    wait_until("the orphan shows up", || {
        found = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| {
                fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|_| {
                    let pids = ns_pids(pid);
                    pids.len() == 2
                        && pids[1] == inner
                        && fs::metadata(format!("/proc/{pid}/ns/pid"))
                            .is_ok_and(|m| m.ino() == fs::metadata(ns).unwrap().ino())
                })
            });
        found.is_some()
    });
    found.unwrap()
}

fn parent_of(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(|p| p.trim().parse().unwrap())
}

#[test]
fn pid_holder_is_init_reaps_orphans_and_takes_the_namespace_down() {
    let dir = PinDir::new();
    let started = Instant::now();
    let holder = HolderGuard(spawn_pid_holder(&dir.ns, holder_command()).unwrap());
    eprintln!(
        "spawn_pid_holder (re-executing the test binary): {:?}",
        started.elapsed()
    );
    let ns = dir.ns.join("pid");
    assert_eq!(holder.0.path, ns);
    assert!(holder.0.is_running());
    assert_eq!(ns_pids(holder.0.pid), vec![holder.0.pid, 1]);
    assert_eq!(fs::metadata(&ns).unwrap().ino(), holder.0.ns_inode);

    // Joinable by path: the shell gets a low PID of the new namespace (the
    // holder is 1; when it is this test binary, its threads take a few more).
    let inner_pid = nsenter("pid", &ns, &["/bin/busybox", "sh", "-c", "echo $$"]);
    let inner_pid: u32 = inner_pid.trim().parse().unwrap();
    assert!((2..10).contains(&inner_pid), "{inner_pid}");

    let orphan = orphan_in(&ns);
    wait_until("the holder adopts the orphan", || {
        parent_of(orphan) == Some(holder.0.pid)
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(orphan as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // A zombie keeps its /proc entry until reaped.
    wait_until("the holder reaps the orphan", || {
        !Path::new(&format!("/proc/{orphan}")).exists()
    });

    let survivor = orphan_in(&ns);
    holder.0.stop().unwrap();
    assert!(!holder.0.is_running());
    wait_until("the namespace's last process dies", || {
        !Path::new(&format!("/proc/{survivor}")).exists()
    });
    assert!(!ns.exists());
    assert!(mounts_under(&dir.ns).is_empty());
    holder.0.stop().unwrap();
}

#[test]
fn a_holder_that_dies_at_start_leaves_nothing_behind() {
    let dir = PinDir::new();
    let error = spawn_pid_holder(&dir.ns, Command::new("/bin/true")).unwrap_err();
    assert!(
        matches!(error, NamespaceError::HolderFailed { .. }),
        "{error}"
    );
    assert!(!dir.ns.exists());
    let error = spawn_pid_holder(&dir.ns, Command::new("/nonexistent/holder")).unwrap_err();
    assert!(
        matches!(error, NamespaceError::HolderFailed { .. }),
        "{error}"
    );
    assert!(!dir.ns.exists());
}

/// A state directory whose shm is unmounted however the test ends.
struct ShmDir(TempDir);

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = unmount_shm(self.0.path());
    }
}

#[test]
fn shm_is_a_sized_restricted_tmpfs() {
    let dir = ShmDir(tempfile::tempdir().unwrap());
    let shm = mount_shm(dir.0.path(), 0).unwrap();
    assert_eq!(shm, dir.0.path().join("shm"));
    let fs_stat = statfs(&shm).unwrap();
    assert_eq!(fs_stat.filesystem_type(), TMPFS_MAGIC);
    assert_eq!(
        fs_stat.blocks() * fs_stat.block_size() as u64,
        DEFAULT_SHM_SIZE
    );
    let flags = statvfs(&shm).unwrap().flags();
    assert!(
        flags.contains(FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_NOEXEC),
        "{flags:?}"
    );
    assert_eq!(
        fs::metadata(&shm).unwrap().permissions().mode() & 0o7777,
        0o1777
    );

    // Again (a restarted daemon): no second mount on top.
    mount_shm(dir.0.path(), 0).unwrap();
    assert_eq!(mounts_under(&shm).len(), 1);

    unmount_shm(dir.0.path()).unwrap();
    unmount_shm(dir.0.path()).unwrap();
    assert!(mounts_under(&shm).is_empty());
    assert!(!shm.exists());

    let shm = mount_shm(dir.0.path(), 1 << 20).unwrap();
    let fs_stat = statfs(&shm).unwrap();
    assert_eq!(fs_stat.blocks() * fs_stat.block_size() as u64, 1 << 20);
    unmount_shm(dir.0.path()).unwrap();
}
