//! Test harness: a real registry with the `wharf` image set, and real wharf
//! daemons on their own sockets and roots, driven through the independent
//! `k8s-cri` client.

#![allow(dead_code)]

pub mod fake_registry;
pub mod monitor_fixture;
pub mod pods;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub const AUTH_USER: &str = "wharf";
pub const AUTH_PASSWORD: &str = "s3cret-pass";

/// A registry started by `hack/start-registry.sh` with the test images
/// pushed. One per state directory; reused across test binaries and runs
/// (the script reuses a running registry and the images are reproducible).
pub struct TestRegistry {
    pub addr: String,
    pub state_dir: PathBuf,
    digests: HashMap<String, String>,
}

impl TestRegistry {
    /// `repo:tag` (or `repo:tag#config`, `repo:tag#linux/amd64#config`) → digest.
    pub fn digest(&self, key: &str) -> String {
        let full = format!("{}/{key}", self.addr);
        self.digests
            .get(&full)
            .unwrap_or_else(|| panic!("no digest for {full} in the pushed set"))
            .clone()
    }

    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// Lines of the registry's access log that fetch `digest`'s blob.
    pub fn blob_fetches(&self, digest: &str) -> usize {
        let log = std::fs::read_to_string(self.state_dir.join("registry.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
            .count()
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn start_registry(state_dir: &Path, auth: Option<&str>) -> TestRegistry {
    let mut start = Command::new(repo_root().join("hack/start-registry.sh"));
    if let Some(auth) = auth {
        start.args(["--auth", auth]);
    }
    let output = start
        .arg(state_dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("running start-registry.sh");
    assert!(output.status.success(), "start-registry.sh failed");
    let addr = String::from_utf8(output.stdout).unwrap().trim().to_string();

    let mut push = Command::new(repo_root().join("hack/testimages.py"));
    push.args(["--registry", &addr]);
    if let Some(auth) = auth {
        push.args(["--user", auth]);
    }
    let output = push
        .args(["push", "wharf"])
        .stderr(Stdio::inherit())
        .output()
        .expect("running testimages.py");
    assert!(output.status.success(), "pushing test images failed");
    let digests = serde_json::from_slice(&output.stdout).expect("testimages.py prints JSON");
    TestRegistry {
        addr,
        state_dir: state_dir.to_path_buf(),
        digests,
    }
}

fn state_base() -> PathBuf {
    std::env::var_os("WHARF_TEST_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp/wharf-test".into())
}

/// The open registry with the `wharf` set.
pub fn registry() -> &'static TestRegistry {
    static REGISTRY: OnceLock<TestRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| start_registry(&state_base().join("registry"), None))
}

/// A registry that demands basic auth (htpasswd).
pub fn auth_registry() -> &'static TestRegistry {
    static REGISTRY: OnceLock<TestRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        start_registry(
            &state_base().join("registry-auth"),
            Some(&format!("{AUTH_USER}:{AUTH_PASSWORD}")),
        )
    })
}

/// A wharf daemon with its own socket, root, state and registry config.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra_config: String,
    /// Run inside this network namespace, so that pod
    /// networks never touch the machine's own.
    netns: Option<String>,
    /// A state directory other than the default `<dir>/s`.
    state_dir: Option<PathBuf>,
}

impl Daemon {
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("wharf.sock")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn certs_d(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| self.dir.path().join("s"))
    }
    pub fn cni_dir(&self) -> PathBuf {
        self.dir.path().join("cni")
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.root().join("image/layers")
    }

    /// Starts a daemon; `extra_config` is appended to its config file.
    pub async fn start(extra_config: &str) -> Daemon {
        Self::start_with_state_dir(extra_config, None).await
    }

    /// [`start`](Self::start) with the state directory at `relative`
    /// below the daemon's own directory.
    pub async fn start_with_state_dir(extra_config: &str, relative: Option<&str>) -> Daemon {
        let dir = tempfile::Builder::new().prefix("w").tempdir().unwrap();
        let state_dir = relative.map(|relative| dir.path().join(relative));
        let mut daemon = Daemon {
            dir,
            child: None,
            extra_config: extra_config.to_string(),
            netns: None,
            state_dir,
        };
        std::fs::create_dir_all(daemon.certs_d()).unwrap();
        std::fs::create_dir_all(daemon.cni_dir()).unwrap();
        daemon.spawn().await;
        daemon
    }

    fn config_text(&self) -> String {
        format!(
            "socket = {:?}\nroot = {:?}\nstate_dir = {:?}\nlog_level = \"info,wharf=debug\"\n{}\n\n[registry]\nconfig_path = {:?}\n\n[cni]\nconf_dir = {:?}\n",
            self.socket(),
            self.root(),
            self.state_dir(),
            self.extra_config,
            self.certs_d(),
            self.cni_dir(),
        )
    }

    /// (Re)starts the process on the same directories.
    pub async fn spawn(&mut self) {
        let config = self.dir.path().join("wharf.toml");
        let text = self.config_text();
        // A [registry] or [cni] table in extra_config would clash: merge by
        // hand.
        let text = merge_registry_section(&text);
        std::fs::write(&config, text).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("wharf.log"))
            .unwrap();
        let mut command = match &self.netns {
            // nsenter enters the network namespace only; `ip netns exec`
            // would also remount /sys and hide the cgroup hierarchies.
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net=/run/netns/{netns}"))
                    .arg(env!("CARGO_BIN_EXE_wharf"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_wharf")),
        };
        let child = command
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting wharf");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::UnixStream::connect(self.socket())
            .await
            .is_err()
        {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("wharf exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "wharf did not open its socket; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// From now on (re)start inside the network namespace `netns`.
    pub fn set_netns(&mut self, netns: &str) {
        self.netns = Some(netns.to_string());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wharf.log")).unwrap_or_default()
    }

    /// The daemon's process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM; waits without blocking the test's
    /// runtime, which must keep serving its client connections meanwhile.
    pub async fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap()
    }

    pub async fn channel(&self) -> Channel {
        let socket = self.socket();
        Endpoint::try_from("http://wharf.invalid")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .expect("connecting to wharf")
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// Writes `<certs.d>/<host>/hosts.toml`.
    pub fn write_hosts_toml(&self, host: &str, text: &str) {
        let dir = self.certs_d().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts.toml"), text).unwrap();
    }

    /// Entries of the layer store, temporaries included.
    pub fn layer_entries(&self) -> Vec<String> {
        match std::fs::read_dir(self.layers_dir()) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => vec![],
        }
    }
}

impl Drop for Daemon {
    /// Kills the daemon and whatever it left running or mounted, so that a
    /// failing test leaks nothing into the next ones.
    fn drop(&mut self) {
        self.kill9();
        let runc_root = self.state_dir().join("runc");
        let list = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output();
        for id in list
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
        {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", id])
                .stderr(Stdio::null())
                .status();
        }
        let dir = self.dir.path().display().to_string();
        for proc_entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(proc_entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("wharf-monitor") && cmdline.contains(&dir) {
                if let Ok(pid) = proc_entry.file_name().to_string_lossy().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        kill_pid_holders(&self.root().join("sandboxes"));
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Moves `key = value` lines given before `[registry]` under it when they
/// are registry keys, so tests can pass `stall_timeout_secs = 2`.
fn merge_registry_section(text: &str) -> String {
    // Keys of the [registry] and [cni] tables the harness writes itself.
    let moved_keys = [
        ("[registry]\n", "stall_timeout_secs"),
        ("[registry]\n", "stall_warning_secs"),
        ("[registry]\n", "request_timeout_secs"),
        ("[registry]\n", "max_concurrent_downloads"),
        ("[cni]\n", "bin_dirs"),
    ];
    let mut top = String::new();
    let mut moved: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        match moved_keys
            .iter()
            .find(|(_, key)| line.trim_start().starts_with(key))
        {
            Some((table, _)) => moved.push((table, format!("{line}\n"))),
            None => {
                top.push_str(line);
                top.push('\n');
            }
        }
    }
    for (table, line) in moved {
        top = top.replacen(table, &format!("{table}{line}"), 1);
    }
    top
}

/// Polls `probe` every 20 ms until it yields a value; fails the test
/// after `limit`.
pub async fn poll_until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live processes (zombies excluded) whose command line is exactly `args`.
pub fn processes_running(args: &[&str]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let found: Vec<&[u8]> = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .collect();
            let matches = found.len() == args.len()
                && found.iter().zip(args).all(|(a, b)| *a == b.as_bytes());
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            (matches && !stat.contains(") Z ")).then_some(pid)
        })
        .collect()
}

/// Shorthand for a pull request.
pub fn pull_request(
    image: &str,
    auth: Option<k8s_cri::v1::AuthConfig>,
) -> k8s_cri::v1::PullImageRequest {
    k8s_cri::v1::PullImageRequest {
        image: Some(image_spec(image)),
        auth,
        sandbox_config: None,
    }
}

pub fn image_spec(image: &str) -> k8s_cri::v1::ImageSpec {
    k8s_cri::v1::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// A network namespace made for one test, deleted on drop.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> TestNetns {
        let name = format!("wharf-t-{tag}-{}", std::process::id());
        let ok = |args: &[&str]| {
            let status = Command::new("ip").args(args).stderr(Stdio::null()).status();
            status.map(|s| s.success()).unwrap_or(false)
        };
        // A namespace of the same name left by a killed run of this test.
        ok(&["netns", "delete", &name]);
        assert!(ok(&["netns", "add", &name]), "creating netns {name}");
        assert!(ok(&["-n", &name, "link", "set", "lo", "up"]));
        TestNetns { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Connects to `addr` from inside the namespace and returns what an
    /// HTTP GET of `/` answers.
    pub fn http_get(&self, addr: std::net::SocketAddr) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let netns = std::fs::File::open(self.path())?;
        std::thread::spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })
        .join()
        .expect("http thread")
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Kills the PID-namespace holders (`wharf-monitor pause`, whose command
/// line names no directory) of the pods recorded under `sandboxes`, each
/// only if its PID namespace is still the recorded one.
fn kill_pid_holders(sandboxes: &Path) {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(sandboxes).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read(entry.path().join("sandbox.json")) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        let holder = &record["pid_holder"];
        let (Some(pid), Some(inode)) = (holder["pid"].as_u64(), holder["ns_inode"].as_u64()) else {
            continue;
        };
        let same_namespace =
            std::fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok_and(|ns| ns.ino() == inode);
        if same_namespace {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Mount points at or below `dir` in this process's (the daemons') mount
/// namespace.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount_point| mount_point.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}
