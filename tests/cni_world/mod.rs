//! The CNI test world shared by tests/network.rs and benches/cni.rs: a
//! "host" network namespace with the bridge, a dedicated thread running
//! `Cni` inside it, and pod namespaces; everything goes when dropped.

#![allow(dead_code)]
use std::fs::{self, File};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};
use wharf::network::{Cni, CniConfig, CniError, PodNetwork};

pub const PLUGINS: &str = "/usr/lib/cni";
pub const BRIDGE: &str = "wharft0";
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const HOST_PORT: u16 = 12080;

pub fn run(command: &mut Command) -> Output {
    command.output().expect("running a command")
}

pub fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("wharf-nt-{role}-{}-{n}", std::process::id());
        let out = ip(&["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        Self {
            path: PathBuf::from("/var/run/netns").join(&name),
            name,
        }
    }

    /// `ip -n <ns> <args>`, stdout as text.
    pub fn ip(&self, args: &[&str]) -> (bool, String) {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn spawn(&self, program: &[&str]) -> ChildGuard {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(program)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip netns exec");
        ChildGuard(child)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `body` on a thread inside `netns`.
pub fn in_netns<T: Send>(netns: &Path, body: impl FnOnce() -> T + Send) -> T {
    let file = File::open(netns).expect("opening netns");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
                body()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Drives `future` on a current-thread runtime inside `netns`, so that the
/// plugins it spawns run there too.
pub fn block_on_in<F>(netns: &Path, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    in_netns(netns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    })
}

/// `GET /` from inside `netns`; the body, or why not.
pub fn http_get(netns: &Path, addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    in_netns(netns, || {
        let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        Ok(response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or(response))
    })
}

pub fn wait_for_http(netns: &Path, addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match http_get(netns, addr, Duration::from_millis(500)) {
            Ok(body) => return body,
            Err(e) if Instant::now() > deadline => panic!("GET http://{addr}/: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// One test's world: a host netns, a conf dir, plugin dirs, a cache dir and
/// host-local's data dir, all its own.
pub struct World {
    pub dir: tempfile::TempDir,
    pub host: Netns,
    pub cni: Cni,
}

impl World {
    /// `plugins` go after the bridge; `ipam` replaces host-local's default
    /// config (10.99.0.0/24).
    pub fn new(bridge_extra: Value, ipam: Option<Value>, plugins: Vec<Value>) -> Self {
        // RUST_LOG=wharf::network=debug shows each plugin run and its time.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let world_dir = dir.path();
        for sub in ["net.d", "bin", "plugins", "cache", "ipam", "www"] {
            fs::create_dir(world_dir.join(sub)).unwrap();
        }
        // Only these: without the loopback plugin, `lo` must come up in-process.
        for plugin in ["bridge", "host-local", "portmap"] {
            std::os::unix::fs::symlink(
                Path::new(PLUGINS).join(plugin),
                world_dir.join("plugins").join(plugin),
            )
            .unwrap();
        }
        fs::write(world_dir.join("www/index.html"), "hello from the pod\n").unwrap();
        let mut ipam = ipam.unwrap_or_else(|| {
            json!({"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]})
        });
        ipam["dataDir"] = json!(world_dir.join("ipam"));
        let mut bridge = json!({
            "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true,
            "hairpinMode": true, "ipam": ipam
        });
        for (key, value) in bridge_extra.as_object().unwrap() {
            bridge[key] = value.clone();
        }
        let mut all = vec![bridge];
        all.extend(plugins);
        let conflist = json!({"cniVersion": "1.0.0", "name": "wharf-test", "plugins": all});
        fs::write(
            world_dir.join("net.d/10-test.conflist"),
            serde_json::to_vec_pretty(&conflist).unwrap(),
        )
        .unwrap();
        let host = Netns::new("host");
        assert!(host.ip(&["link", "set", "lo", "up"]).0);
        let cni = Cni::new(CniConfig {
            conf_dir: world_dir.join("net.d"),
            // Fakes first; bridge finds host-local in the second dir through CNI_PATH.
            bin_dirs: vec![world_dir.join("bin"), world_dir.join("plugins")],
            cache_dir: world_dir.join("cache"),
        });
        World { dir, host, cni }
    }

    pub fn with_portmap(snat: bool) -> Self {
        let portmap =
            json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": snat});
        World::new(json!({}), None, vec![portmap])
    }

    pub fn pod(&self, netns: &Netns, id: &str) -> PodNetwork {
        PodNetwork {
            id: id.to_string(),
            name: format!("pod-{id}"),
            namespace: "wharf-test".into(),
            uid: format!("uid-{id}"),
            netns: netns.path.clone(),
            ..Default::default()
        }
    }

    pub fn setup(&self, pod: &PodNetwork) -> Result<wharf::network::NetworkStatus, CniError> {
        block_on_in(&self.host.path, self.cni.setup(pod))
    }

    pub fn teardown(&self, pod: &PodNetwork) -> Result<(), CniError> {
        block_on_in(&self.host.path, self.cni.teardown(pod))
    }

    /// IPs host-local has handed out and not released.
    pub fn allocated_ips(&self) -> Vec<IpAddr> {
        let dir = self.dir.path().join("ipam/wharf-test");
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    pub fn host_veths(&self) -> String {
        self.host.ip(&["-o", "link", "show", "type", "veth"]).1
    }

    pub fn cached(&self, pod: &PodNetwork) -> bool {
        self.dir
            .path()
            .join(format!("cache/{}.json", pod.id))
            .exists()
    }

    pub fn httpd(&self, pod: &Netns) -> ChildGuard {
        let www = self.dir.path().join("www");
        pod.spawn(&[
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            www.to_str().unwrap(),
        ])
    }

    /// A plugin script in the world's first bin dir.
    pub fn fake_plugin(&self, name: &str, script: &str) {
        let path = self.dir.path().join("bin").join(name);
        fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
}
