//! CNI networking with the real plugins from /usr/lib/cni.
//!
//! Everything happens in network namespaces each test makes itself: a
//! "host" namespace (bridge, iptables rules) in which a dedicated thread
//! runs `Cni` (plugins inherit the namespace of the thread that spawns
//! them), and pod namespaces. host-local keeps its state in the test's
//! tempdir. The root namespace is never touched; dropping the guards
//! deletes the namespaces and with them every veth, bridge and rule.

mod cni_world;

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cni_world::*;
use serde_json::json;
use wharf::error::Kind;
use wharf::network::{
    prepare_host_for_hostport_on_localhost, Cni, CniConfig, CniError, PodNetwork, PortMapping,
    Protocol,
};
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
