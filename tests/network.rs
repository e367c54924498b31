//! CNI networking with the real plugins from /usr/lib/cni.
//!
//! Everything happens in network namespaces each test makes itself: a
//! "host" namespace (bridge, iptables rules) in which a dedicated thread
//! runs `Cni` (plugins inherit the namespace of the thread that spawns
//! them), and pod namespaces. host-local keeps its state in the test's
//! tempdir. The root namespace is never touched; dropping the guards
//! deletes the namespaces and with them every veth, bridge and rule.

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
use wharf::error::Kind;
use wharf::network::{
    prepare_host_for_hostport_on_localhost, Cni, CniConfig, CniError, PodNetwork, PortMapping,
    Protocol,
};

const PLUGINS: &str = "/usr/lib/cni";
const BRIDGE: &str = "wharft0";
const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const HOST_PORT: u16 = 12080;

fn run(command: &mut Command) -> Output {
    command.output().expect("running a command")
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// A network namespace made with `ip netns add`, deleted on drop.
struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn new(role: &str) -> Self {
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
    fn ip(&self, args: &[&str]) -> (bool, String) {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn spawn(&self, program: &[&str]) -> ChildGuard {
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

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `body` on a thread inside `netns`.
fn in_netns<T: Send>(netns: &Path, body: impl FnOnce() -> T + Send) -> T {
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
fn block_on_in<F>(netns: &Path, future: F) -> F::Output
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
fn http_get(netns: &Path, addr: SocketAddr, timeout: Duration) -> Result<String, String> {
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

fn wait_for_http(netns: &Path, addr: SocketAddr) -> String {
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
struct World {
    dir: tempfile::TempDir,
    host: Netns,
    cni: Cni,
}

impl World {
    /// `plugins` go after the bridge; `ipam` replaces host-local's default
    /// config (10.99.0.0/24).
    fn new(bridge_extra: Value, ipam: Option<Value>, plugins: Vec<Value>) -> Self {
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

    fn with_portmap(snat: bool) -> Self {
        let portmap =
            json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": snat});
        World::new(json!({}), None, vec![portmap])
    }

    fn pod(&self, netns: &Netns, id: &str) -> PodNetwork {
        PodNetwork {
            id: id.to_string(),
            name: format!("pod-{id}"),
            namespace: "wharf-test".into(),
            uid: format!("uid-{id}"),
            netns: netns.path.clone(),
            ..Default::default()
        }
    }

    fn setup(&self, pod: &PodNetwork) -> Result<wharf::network::NetworkStatus, CniError> {
        block_on_in(&self.host.path, self.cni.setup(pod))
    }

    fn teardown(&self, pod: &PodNetwork) -> Result<(), CniError> {
        block_on_in(&self.host.path, self.cni.teardown(pod))
    }

    /// IPs host-local has handed out and not released.
    fn allocated_ips(&self) -> Vec<IpAddr> {
        let dir = self.dir.path().join("ipam/wharf-test");
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    fn host_veths(&self) -> String {
        self.host.ip(&["-o", "link", "show", "type", "veth"]).1
    }

    fn cached(&self, pod: &PodNetwork) -> bool {
        self.dir
            .path()
            .join(format!("cache/{}.json", pod.id))
            .exists()
    }

    fn httpd(&self, pod: &Netns) -> ChildGuard {
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
    fn fake_plugin(&self, name: &str, script: &str) {
        let path = self.dir.path().join("bin").join(name);
        fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn in_subnet(ip: IpAddr, prefix: [u8; 3]) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == prefix && v4.octets()[3] > 1)
}

#[test]
fn add_connects_pods_and_del_releases_everything() {
    let world = World::new(json!({}), None, vec![]);
    let (ns_a, ns_b) = (Netns::new("pod"), Netns::new("pod"));
    let (pod_a, pod_b) = (world.pod(&ns_a, "pod-a"), world.pod(&ns_b, "pod-b"));

    let a = world.setup(&pod_a).expect("ADD pod a");
    let b = world.setup(&pod_b).expect("ADD pod b");
    let again = world.setup(&pod_a).expect("second ADD of pod a");
    assert_eq!(again.ips, a.ips);
    assert_eq!(a.interface, "eth0");
    assert_eq!(a.ips.len(), 1, "{:?}", a.ips);
    assert!(in_subnet(a.ips[0], [10, 99, 0]), "{:?}", a.ips);
    assert!(in_subnet(b.ips[0], [10, 99, 0]), "{:?}", b.ips);
    assert_ne!(a.ips, b.ips);
    assert_eq!(a.result["cniVersion"], "1.0.0");
    let mut allocated = world.allocated_ips();
    allocated.sort();
    let mut expected = vec![a.ips[0], b.ips[0]];
    expected.sort();
    assert_eq!(allocated, expected);

    // The plugins ran in the host namespace of the thread, not in the root one.
    assert!(world.host.ip(&["link", "show", BRIDGE]).0);
    assert!(!ip(&["link", "show", BRIDGE]).status.success());

    let (ok, eth0) = ns_a.ip(&["-o", "addr", "show", "eth0"]);
    assert!(
        ok && eth0.contains(&format!("inet {}/24", a.ips[0])),
        "{eth0}"
    );
    let (_, lo) = ns_a.ip(&["-o", "link", "show", "lo"]);
    assert!(lo.contains(",UP"), "lo is not up: {lo}");
    let (_, lo_addr) = ns_a.ip(&["-o", "addr", "show", "lo"]);
    assert!(lo_addr.contains("inet 127.0.0.1/8"), "{lo_addr}");

    let _httpd = world.httpd(&ns_b);
    let pod_b_http = SocketAddr::new(b.ips[0], 80);
    assert_eq!(
        wait_for_http(&world.host.path, pod_b_http),
        "hello from the pod\n"
    );
    assert_eq!(
        wait_for_http(&ns_a.path, pod_b_http),
        "hello from the pod\n"
    );
    // lo works inside the pod.
    assert_eq!(
        wait_for_http(&ns_b.path, "127.0.0.1:80".parse().unwrap()),
        "hello from the pod\n"
    );

    assert!(world.cached(&pod_a));
    world.teardown(&pod_a).expect("DEL pod a");
    assert!(!world.cached(&pod_a));
    assert_eq!(world.allocated_ips(), vec![b.ips[0]]);
    assert!(!ns_a.ip(&["link", "show", "eth0"]).0, "eth0 left in pod a");
    world.teardown(&pod_a).expect("second DEL of pod a");
    world.teardown(&pod_b).expect("DEL pod b");
    assert!(world.allocated_ips().is_empty());
    assert_eq!(world.host_veths(), "");
}

#[test]
fn host_port_answers_on_localhost_and_the_bridge_address() {
    let world = World::with_portmap(true);
    assert!(!world.cni.portmap_needs_host_setup());
    let pod_ns = Netns::new("pod");
    let mut pod = world.pod(&pod_ns, "hp");
    pod.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp,
        container_port: 80,
        host_port: HOST_PORT,
        host_ip: String::new(),
    }];
    let route_localnet_before = root_route_localnet();
    let status = world.setup(&pod).expect("ADD");
    let _httpd = world.httpd(&pod_ns);
    wait_for_http(&world.host.path, SocketAddr::new(status.ips[0], 80));

    let localhost = SocketAddr::from(([127, 0, 0, 1], HOST_PORT));
    let bridge = SocketAddr::from((BRIDGE_IP, HOST_PORT));
    assert_eq!(
        wait_for_http(&world.host.path, localhost),
        "hello from the pod\n"
    );
    assert_eq!(
        wait_for_http(&world.host.path, bridge),
        "hello from the pod\n"
    );
    // portmap's snat did the host set-up on the test bridge only.
    let rules = iptables_rules(&world.host, "nat");
    assert!(rules.contains("CNI-HOSTPORT-MASQ"), "{rules}");
    assert_eq!(
        root_route_localnet(),
        route_localnet_before,
        "the root namespace changed"
    );

    world.teardown(&pod).expect("DEL");
    assert!(http_get(&world.host.path, localhost, Duration::from_millis(300)).is_err());
    assert!(!iptables_rules(&world.host, "nat").contains(&format!("dport {HOST_PORT}")));
    assert!(world.allocated_ips().is_empty());
}

/// Read from a test thread, which stays in the root namespace.
fn root_route_localnet() -> String {
    fs::read_to_string("/proc/sys/net/ipv4/conf/all/route_localnet").unwrap()
}

fn iptables_rules(netns: &Netns, table: &str) -> String {
    let out = run(Command::new("ip").args([
        "netns",
        "exec",
        &netns.name,
        "iptables",
        "-w",
        "-t",
        table,
        "-S",
    ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn host_port_on_localhost_without_portmap_snat_needs_the_host_setup() {
    let world = World::with_portmap(false);
    assert!(world.cni.portmap_needs_host_setup());
    let pod_ns = Netns::new("pod");
    let mut pod = world.pod(&pod_ns, "nosnat");
    pod.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp,
        container_port: 80,
        host_port: HOST_PORT,
        host_ip: "127.0.0.1".into(),
    }];
    let status = world.setup(&pod).expect("ADD");
    let _httpd = world.httpd(&pod_ns);
    wait_for_http(&world.host.path, SocketAddr::new(status.ips[0], 80));
    let localhost = SocketAddr::from(([127, 0, 0, 1], HOST_PORT));
    let refused = http_get(&world.host.path, localhost, Duration::from_millis(500));
    assert!(
        refused.is_err(),
        "reachable without the host set-up: {refused:?}"
    );

    let root_before = root_route_localnet();
    in_netns(&world.host.path, prepare_host_for_hostport_on_localhost).expect("host set-up");
    in_netns(&world.host.path, prepare_host_for_hostport_on_localhost).expect("second host set-up");
    assert_eq!(
        wait_for_http(&world.host.path, localhost),
        "hello from the pod\n"
    );

    let nat = iptables_rules(&world.host, "nat");
    let filter = iptables_rules(&world.host, "filter");
    assert_eq!(nat.matches("hostPort via localhost").count(), 1, "{nat}");
    assert_eq!(
        filter.matches("hostPort via localhost").count(),
        1,
        "{filter}"
    );
    assert_eq!(
        root_route_localnet(),
        root_before,
        "the root namespace changed"
    );
    world.teardown(&pod).expect("DEL");
}

#[test]
fn a_failing_plugin_fails_add_and_leaves_nothing_allocated() {
    let failing = json!({"type": "wharf-fail"});
    let world = World::new(json!({}), None, vec![failing]);
    world.fake_plugin(
        "wharf-fail",
        r#"cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  echo "about to fail" >&2
  echo '{"cniVersion":"1.0.0","code":7,"msg":"injected failure","details":"by the test"}'
  exit 1
fi"#,
    );
    let pod_ns = Netns::new("pod");
    let pod = world.pod(&pod_ns, "fails");
    let error = world.setup(&pod).expect_err("ADD must fail");
    let text = error.to_string();
    assert!(
        text.contains(
            "wharf-fail ADD failed: code 7: injected failure (by the test); stderr: about to fail"
        ),
        "{text}"
    );
    assert_eq!(wharf::error::Classify::kind(&error), Kind::Unavailable);
    assert!(
        world.allocated_ips().is_empty(),
        "{:?}",
        world.allocated_ips()
    );
    assert_eq!(world.host_veths(), "");
    assert!(!pod_ns.ip(&["link", "show", "eth0"]).0);
    assert!(!world.cached(&pod));
}

#[test]
fn a_hung_plugin_times_out_and_add_is_undone() {
    let world = World::new(json!({}), None, vec![json!({"type": "wharf-hang"})]);
    world.fake_plugin(
        "wharf-hang",
        r#"cat >/dev/null
[ "$CNI_COMMAND" = ADD ] && exec sleep 30
exit 0"#,
    );
    let cni = Cni::new(CniConfig {
        conf_dir: world.dir.path().join("net.d"),
        bin_dirs: vec![
            world.dir.path().join("bin"),
            world.dir.path().join("plugins"),
        ],
        cache_dir: world.dir.path().join("cache"),
    })
    .with_plugin_timeout(Duration::from_millis(500));
    let pod_ns = Netns::new("pod");
    let pod = world.pod(&pod_ns, "hangs");
    let started = Instant::now();
    let error = block_on_in(&world.host.path, cni.setup(&pod)).expect_err("ADD must time out");
    assert!(matches!(error, CniError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(world.allocated_ips().is_empty());
    assert_eq!(world.host_veths(), "");
}

#[test]
fn del_uses_the_cached_config_even_after_the_conf_dir_changed() {
    let world = World::new(json!({}), None, vec![]);
    let pod_ns = Netns::new("pod");
    let pod = world.pod(&pod_ns, "cached");
    world.setup(&pod).expect("ADD");
    assert_eq!(world.allocated_ips().len(), 1);
    // Another network replaces the one the pod was added to.
    fs::remove_file(world.dir.path().join("net.d/10-test.conflist")).unwrap();
    let other = json!({"cniVersion": "1.0.0", "name": "other", "type": "wharf-never-run"});
    fs::write(
        world.dir.path().join("net.d/05-other.conf"),
        other.to_string(),
    )
    .unwrap();
    world.teardown(&pod).expect("DEL");
    assert!(world.allocated_ips().is_empty());
    assert_eq!(world.host_veths(), "");
}

#[test]
fn del_without_cache_or_netns_still_releases_the_ip() {
    let world = World::new(json!({}), None, vec![]);
    let pod_ns = Netns::new("pod");
    let pod = world.pod(&pod_ns, "gone");
    world.setup(&pod).expect("ADD");
    fs::remove_file(world.dir.path().join("cache/gone.json")).unwrap();
    drop(pod_ns);
    world.teardown(&pod).expect("DEL without cache or netns");
    assert!(world.allocated_ips().is_empty());
    // The kernel destroys a deleted namespace, and the veth with it, in
    // the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.host_veths().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(world.host_veths(), "");
    let forgotten = PodNetwork {
        netns: PathBuf::new(),
        ..pod
    };
    world
        .teardown(&forgotten)
        .expect("DEL not knowing the netns");
}

#[test]
fn pod_cidr_reaches_host_local_as_ip_ranges() {
    let ipam = json!({"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}]});
    let world = World::new(
        json!({"capabilities": {"ipRanges": true}}),
        Some(ipam),
        vec![],
    );
    world.cni.set_pod_cidr("10.97.3.0/24").unwrap();
    let pod_ns = Netns::new("pod");
    let pod = world.pod(&pod_ns, "cidr");
    let status = world.setup(&pod).expect("ADD");
    assert!(in_subnet(status.ips[0], [10, 97, 3]), "{:?}", status.ips);
    world.teardown(&pod).expect("DEL");
    assert!(world.allocated_ips().is_empty());
}

#[test]
fn dual_stack_puts_ipv4_first() {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        eprintln!("skipped: no IPv6");
        return;
    }
    let ipam = json!({
        "type": "host-local",
        "ranges": [[{"subnet": "fd99:99::/64"}], [{"subnet": "10.99.0.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    });
    let world = World::new(json!({}), Some(ipam), vec![]);
    let pod_ns = Netns::new("pod");
    let pod = world.pod(&pod_ns, "dual");
    let status = world.setup(&pod).expect("ADD");
    assert_eq!(status.ips.len(), 2, "{:?}", status.ips);
    assert!(in_subnet(status.ips[0], [10, 99, 0]), "{:?}", status.ips);
    assert!(status.ips[1].is_ipv6(), "{:?}", status.ips);
    world.teardown(&pod).expect("DEL");
    assert!(world.allocated_ips().is_empty());
}

#[test]
fn ready_follows_the_conf_dir() {
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("net.d");
    let cni = Cni::new(CniConfig {
        conf_dir: conf_dir.clone(),
        bin_dirs: vec![PLUGINS.into()],
        cache_dir: dir.path().join("cache"),
    });
    assert!(cni.ready().unwrap_err().contains("no network config"));
    fs::create_dir(&conf_dir).unwrap();
    assert!(cni.ready().is_err());
    fs::write(
        conf_dir.join("10-wharf.conflist"),
        wharf::network::DEFAULT_CONFLIST,
    )
    .unwrap();
    assert_eq!(cni.ready(), Ok(()));
    let missing = json!({"cniVersion": "1.0.0", "name": "m", "type": "wharf-no-such-plugin"});
    fs::write(conf_dir.join("05-missing.conf"), missing.to_string()).unwrap();
    assert!(cni.ready().unwrap_err().contains("wharf-no-such-plugin"));
    fs::remove_file(conf_dir.join("05-missing.conf")).unwrap();
    assert_eq!(cni.ready(), Ok(()));
    fs::remove_file(conf_dir.join("10-wharf.conflist")).unwrap();
    assert!(cni.ready().is_err());
}

#[test]
fn bad_pod_names_are_rejected_before_any_plugin_runs() {
    let world = World::new(json!({}), None, vec![]);
    let pod_ns = Netns::new("pod");
    let mut pod = world.pod(&pod_ns, "bad");
    pod.name = "x;K8S_POD_NAMESPACE=kube-system".into();
    let error = world.setup(&pod).expect_err("must be rejected");
    assert_eq!(wharf::error::Classify::kind(&error), Kind::InvalidArgument);
    assert!(world.allocated_ips().is_empty());
    assert!(!world.host.ip(&["link", "show", BRIDGE]).0);
}

/// ADD and DEL of bridge + host-local + portmap, with and without a
/// hostPort, median of several rounds; printed for the record
/// (`--nocapture`).
#[test]
fn timings() {
    let world = World::with_portmap(true);
    let pod_ns = Netns::new("pod");
    let plain = world.pod(&pod_ns, "timed");
    let mut with_host_port = plain.clone();
    with_host_port.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp,
        container_port: 80,
        host_port: HOST_PORT,
        host_ip: String::new(),
    }];
    for (label, pod) in [("no hostPort", &plain), ("one hostPort", &with_host_port)] {
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            let started = Instant::now();
            world.setup(pod).expect("ADD");
            adds.push(started.elapsed());
            let started = Instant::now();
            world.teardown(pod).expect("DEL");
            dels.push(started.elapsed());
        }
        adds.sort();
        dels.sort();
        eprintln!(
            "bridge+host-local+portmap, {label}: ADD median {:?} (min {:?}), DEL median {:?} (min {:?})",
            adds[3], adds[0], dels[3], dels[0]
        );
    }
    assert!(world.allocated_ips().is_empty());
}
