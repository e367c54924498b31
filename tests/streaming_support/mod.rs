//! What the streaming backend tests share: a world of pods and
//! containers made through a daemon and served by a backend recovered in
//! the test's process, and the client's side of sessions.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

use crate::common::pods;
use crate::common::Daemon;
use wharf::config::Config;
use wharf::streaming::backend::{ExecTarget, Stdio, TerminalSize};
use wharf::streaming::runtime_backend::RuntimeBackend;

pub const MONITOR: &str = env!("CARGO_BIN_EXE_wharf-monitor");
pub const PIPE: usize = 64 * 1024;

/// A stopped daemon's pod and containers, served by a backend on
/// services recovered in this process.
pub struct World {
    pub daemon: Daemon,
    pub pod_id: String,
    pub ids: Vec<String>,
    pub backend: RuntimeBackend,
}

/// Runs a pod with `containers` (started) through a daemon, stops the
/// daemon, and recovers its services here.
pub async fn world(name: &str, containers: Vec<ContainerConfig>) -> World {
    world_with(name, |_| {}, containers).await
}

pub async fn world_with(
    name: &str,
    tweak_pod: impl FnOnce(&mut PodSandboxConfig),
    containers: Vec<ContainerConfig>,
) -> World {
    let mut daemon = pods::daemon().await;
    let mut client = daemon.runtime().await;
    let mut pod = pods::pod_config(&daemon, name);
    tweak_pod(&mut pod);
    std::fs::create_dir_all(&pod.log_directory).unwrap();
    let pod_id = pods::run_pod(&mut client, pod.clone()).await;
    let mut ids = Vec::new();
    for config in containers {
        let id = pods::create(&mut client, &pod_id, &pod, config)
            .await
            .unwrap();
        pods::start(&mut client, &id).await;
        ids.push(id);
    }
    drop(client);
    assert!(daemon.sigterm().await.success());
    let backend = backend_of(&daemon).await;
    World {
        daemon,
        pod_id,
        ids,
        backend,
    }
}

/// What the daemon's `serve` builds, from its config file.
pub async fn backend_of(daemon: &Daemon) -> RuntimeBackend {
    let mut config = Config::load(&daemon.dir.path().join("wharf.toml")).unwrap();
    // This test binary is not installed beside the monitor.
    config.runtime.monitor_path = Some(MONITOR.into());
    let core = wharf::daemon::open(&config).await.unwrap();
    RuntimeBackend::new(core.containers, core.sandboxes)
}

/// The client's ends of a session's streams.
pub struct Client {
    pub stdin: Option<DuplexStream>,
    pub stdout: Option<DuplexStream>,
    pub stderr: Option<DuplexStream>,
    pub resize: Option<mpsc::Sender<TerminalSize>>,
}

pub fn session(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> (Stdio, Client) {
    fn pipe(wanted: bool) -> (Option<DuplexStream>, Option<DuplexStream>) {
        if wanted {
            let (ours, theirs) = tokio::io::duplex(PIPE);
            (Some(ours), Some(theirs))
        } else {
            (None, None)
        }
    }
    let (stdin_ours, stdin_theirs) = pipe(stdin);
    let (stdout_ours, stdout_theirs) = pipe(stdout);
    let (stderr_ours, stderr_theirs) = pipe(stderr);
    let (resize_ours, resize_theirs) = if tty {
        let (tx, rx) = mpsc::channel(4);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let stdio = Stdio {
        stdin: stdin_theirs.map(|s| Box::pin(s) as _),
        stdout: stdout_theirs.map(|s| Box::pin(s) as _),
        stderr: stderr_theirs.map(|s| Box::pin(s) as _),
        resize: resize_theirs,
    };
    let client = Client {
        stdin: stdin_ours,
        stdout: stdout_ours,
        stderr: stderr_ours,
        resize: resize_ours,
    };
    (stdio, client)
}

pub fn exec_target(id: &str, cmd: &[&str], tty: bool) -> ExecTarget {
    ExecTarget {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
    }
}

pub async fn read_all(stream: Option<DuplexStream>) -> Vec<u8> {
    let mut data = Vec::new();
    if let Some(mut stream) = stream {
        stream.read_to_end(&mut data).await.unwrap();
    }
    data
}

/// Reads lines until one contains `needle`; the lines read.
pub async fn read_until(reader: &mut BufReader<DuplexStream>, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(needle) {
        let mut line = String::new();
        let read = tokio::time::timeout_at(deadline.into(), reader.read_line(&mut line)).await;
        let n = read
            .unwrap_or_else(|_| panic!("no {needle:?} in {seen:?}"))
            .unwrap();
        if n == 0 {
            // The caller sees what came, and why it ended.
            break;
        }
        seen.push_str(&line);
    }
    seen
}

/// Live processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            (text.contains(needle) && !stat.contains(") Z ")).then_some(pid)
        })
        .collect()
}

/// Zombie children of this process (nobody reaped them).
pub fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            (fields[0] == "Z" && fields[1] == me).then_some(pid)
        })
        .collect()
}

pub async fn poll_until_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
