//! The `wharf-monitor` fixture: one container's bundle (a busybox rootfs),
//! state and log in a temporary directory, run through the monitor with
//! real runc, torn down on drop (runc delete --force, monitor killed,
//! cgroups removed) even when the test fails.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::poll_until;
use wharf::runtime::protocol::files;
use wharf::runtime::{
    create_with_monitor, monitor_alive, read_exit, ExitStatus, MonitorConfig, OciRuntime,
    RuntimeError,
};

pub const RUNC: &str = "/usr/sbin/runc";
pub const BUSYBOX: &str = "/bin/busybox";
pub const MONITOR: &str = env!("CARGO_BIN_EXE_wharf-monitor");
pub const APPLETS: &[&str] = &["sh", "sleep", "yes", "head", "cat"];
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One container's bundle, state and log, torn down on drop.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub runtime: OciRuntime,
    pub id: String,
    pub cgroup: String,
    pub config: MonitorConfig,
}

pub fn unique(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Fixture {
    /// A container running `script` under busybox sh; `tweak` edits the
    /// generated config.json.
    pub fn new(name: &str, script: &str, tweak: impl FnOnce(&mut Value)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let id = unique(name);
        let cgroup = format!("/wharf-test-{id}");
        let bundle = dir.path().join("bundle");
        let bin = bundle.join("rootfs/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let mut config = bundle_config(script, &cgroup);
        tweak(&mut config);
        fs::write(bundle.join("config.json"), config.to_string()).unwrap();
        fs::create_dir_all(dir.path().join("logs")).unwrap();
        let runtime = OciRuntime::new(RUNC.into(), dir.path().join("runc"));
        let config = MonitorConfig {
            monitor_binary: MONITOR.into(),
            id: id.clone(),
            bundle,
            state_dir: dir.path().join("state"),
            log_path: dir.path().join("logs/0.log"),
            stdin: false,
            stdin_once: false,
            tty: false,
            defer_start: false,
        };
        Self {
            _dir: dir,
            runtime,
            id,
            cgroup,
            config,
        }
    }

    pub async fn create(&self) -> Result<i32, RuntimeError> {
        create_with_monitor(&self.runtime, &self.config)
            .await
            .map(|created| {
                created
                    .container_pid
                    .expect("runtime create reports the init")
            })
    }

    pub async fn create_and_start(&self) -> i32 {
        let pid = self.create().await.unwrap();
        self.runtime.start(&self.id).await.unwrap();
        pid
    }

    pub async fn wait_exit(&self) -> ExitStatus {
        let state = self.config.state_dir.clone();
        poll_until("exit.json", Duration::from_secs(20), || {
            read_exit(&state).unwrap()
        })
        .await
    }

    /// Log entries as (stream, tag, content), timestamps checked.
    pub fn log_entries(&self, path: &Path) -> Vec<(String, String, String)> {
        let text = fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .map(|line| {
                let mut parts = line.splitn(4, ' ');
                let timestamp = parts.next().unwrap();
                assert_eq!(timestamp.len(), 30, "{line}");
                assert!(timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T');
                let stream = parts.next().unwrap().to_owned();
                let tag = parts.next().unwrap().to_owned();
                let content = parts.next().unwrap_or("").to_owned();
                (stream, tag, content)
            })
            .collect()
    }

    pub fn log_contents(&self, stream: &str) -> Vec<String> {
        self.log_entries(&self.config.log_path)
            .into_iter()
            .filter(|(s, _, _)| s == stream)
            .map(|(_, _, content)| content)
            .collect()
    }

    pub fn monitor_pid(&self) -> Option<Pid> {
        let text = fs::read_to_string(self.config.state_dir.join(files::MONITOR_PID)).ok()?;
        Some(Pid::from_raw(text.trim().parse().ok()?))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::process::Command::new(RUNC)
            .arg("--root")
            .arg(self.runtime.root())
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        if monitor_alive(&self.config.state_dir) {
            if let Some(pid) = self.monitor_pid() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        for controller in [
            "memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer", "systemd",
            "unified",
        ] {
            let _ = fs::remove_dir(
                Path::new(CGROUP_ROOT)
                    .join(controller)
                    .join(&self.cgroup[1..]),
            );
        }
    }
}

pub fn bundle_config(script: &str, cgroup: &str) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "wharf-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}
        ],
        "linux": {
            "cgroupsPath": cgroup,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "network"}
            ],
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}
