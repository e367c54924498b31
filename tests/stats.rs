//! Stats, events and verbose status through the socket, on real
//! containers: the numbers are checked against what the container was
//! made to do and against the cgroup files themselves.

mod common;

use std::time::{Duration, Instant};

use common::pods::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

const MIB: u64 = 1 << 20;

/// A pod with a cgroup of its own, as kubelet gives each pod.
fn own_cgroup_pod(daemon: &common::Daemon, name: &str) -> PodSandboxConfig {
    let mut pod = pod_config(daemon, name);
    pod.linux.as_mut().unwrap().cgroup_parent =
        format!("/wharf-test/{name}-{}", std::process::id());
    pod
}

async fn container_stats(client: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStats {
    client
        .container_stats(ContainerStatsRequest {
            container_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
}

async fn pod_stats(client: &mut RuntimeServiceClient<Channel>, id: &str) -> PodSandboxStats {
    client
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
}

/// Asks for `probe` every 100 ms until it yields a value; fails after
/// `limit`, showing the last value seen.
macro_rules! poll {
    ($what:expr, $limit:expr, $probe:expr) => {{
        let deadline = Instant::now() + $limit;
        loop {
            let (done, last) = $probe;
            if let Some(value) = done {
                break value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {}: last {:?}",
                $what,
                last
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

fn number(v: &Option<UInt64Value>) -> u64 {
    v.as_ref().map(|v| v.value).unwrap_or(0)
}

#[tokio::test]
async fn cpu_and_memory_of_a_busy_container_match_what_it_does() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = own_cgroup_pod(&daemon, "stats-busy");
    let cgroup = pod.linux.as_ref().unwrap().cgroup_parent.clone();
    let pod_id = run_pod(&mut client, pod.clone()).await;
    // 48 MiB in the pod's /dev/shm (tmpfs: charged to the writer, never
    // inactive file cache), then a busy loop.
    let command = [
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null && touch /tmp/filled && while :; do :; done",
    ];
    let mut config = container_config("burner", &command);
    config.labels.insert("role".into(), "burner".into());
    let id = create(&mut client, &pod_id, &pod, config).await.unwrap();
    let idle = container_stats(&mut client, &id).await;
    assert_eq!(idle.attributes.as_ref().unwrap().id, id);
    assert!(idle.cpu.as_ref().unwrap().timestamp > 0);
    start(&mut client, &id).await;
    poll!("the fill", Duration::from_secs(30), {
        let out = exec(&mut client, &id, &["ls", "/tmp/filled"]).await;
        ((out.exit_code == 0).then_some(()), out)
    });

    let first = container_stats(&mut client, &id).await;
    let memory = first.memory.clone().unwrap();
    let working_set = number(&memory.working_set_bytes);
    assert!(
        (48 * MIB..48 * MIB + 32 * MIB).contains(&working_set),
        "working set {working_set} for 48 MiB in tmpfs: {memory:?}"
    );
    assert!(number(&memory.usage_bytes) >= working_set);
    assert!(number(&memory.page_faults) > 0);
    // The cgroup's own figure agrees.
    let usage_file = format!("/sys/fs/cgroup/memory{cgroup}/{id}/memory.usage_in_bytes");
    let usage: u64 = std::fs::read_to_string(&usage_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        usage.abs_diff(number(&memory.usage_bytes)) < 8 * MIB,
        "{usage} vs {memory:?}"
    );

    // The busy loop: cumulative CPU grows, and a rate appears once two
    // samples are a second apart.
    let first_cpu = number(&first.cpu.as_ref().unwrap().usage_core_nano_seconds);
    let rate = poll!("a CPU rate", Duration::from_secs(30), {
        let stats = container_stats(&mut client, &id).await;
        let cpu = stats.cpu.unwrap();
        let rate = cpu.usage_nano_cores.as_ref().map(|v| v.value);
        (
            rate.filter(|_| number(&cpu.usage_core_nano_seconds) > first_cpu),
            cpu,
        )
    });
    assert!(rate > 100_000_000, "a busy loop uses {rate} nano-cores");
    assert!(rate < 2_100_000_000, "{rate} nano-cores on a 2-core host");
    let cpuacct_root = ["/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct"]
        .into_iter()
        .find(|dir| std::path::Path::new(dir).join("cpuacct.usage").exists())
        .expect("a cgroup v1 cpuacct hierarchy");
    let cpuacct = format!("{cpuacct_root}{cgroup}/{id}/cpuacct.usage");
    let reported = number(
        &container_stats(&mut client, &id)
            .await
            .cpu
            .unwrap()
            .usage_core_nano_seconds,
    );
    let file: u64 = std::fs::read_to_string(&cpuacct)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        file >= reported && reported > first_cpu,
        "{file} {reported}"
    );

    // The writable layer holds /tmp/filled.
    let layer = first.writable_layer.unwrap();
    assert!(number(&layer.inodes_used) >= 2, "{layer:?}");

    // Listing: by ID, by pod, by label, and nothing for another label.
    let list = |filter: ContainerStatsFilter| ListContainerStatsRequest {
        filter: Some(filter),
    };
    for filter in [
        ContainerStatsFilter {
            id: id.clone(),
            ..Default::default()
        },
        ContainerStatsFilter {
            pod_sandbox_id: pod_id.clone(),
            ..Default::default()
        },
        ContainerStatsFilter {
            label_selector: [("role".to_string(), "burner".to_string())].into(),
            ..Default::default()
        },
    ] {
        let stats = client
            .list_container_stats(list(filter.clone()))
            .await
            .unwrap()
            .into_inner()
            .stats;
        assert_eq!(stats.len(), 1, "{filter:?}");
        assert_eq!(stats[0].attributes.as_ref().unwrap().id, id);
    }
    let none = ContainerStatsFilter {
        label_selector: [("role".to_string(), "other".to_string())].into(),
        ..Default::default()
    };
    assert!(client
        .list_container_stats(list(none))
        .await
        .unwrap()
        .into_inner()
        .stats
        .is_empty());

    // The pod: its own cgroup holds the container's memory and processes.
    let pod_stats = pod_stats(&mut client, &pod_id).await;
    let linux = pod_stats.linux.unwrap();
    assert!(number(&linux.memory.unwrap().working_set_bytes) >= 48 * MIB);
    assert!(number(&linux.process.unwrap().process_count) >= 1);
    assert_eq!(linux.containers.len(), 1);
    assert!(number(&linux.cpu.unwrap().usage_core_nano_seconds) >= first_cpu);

    // Unknown IDs: NotFound.
    let missing = client
        .container_stats(ContainerStatsRequest {
            container_id: "0123456789ab".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    remove_pod(&mut client, &pod_id).await;
}

#[tokio::test]
async fn pod_network_counters_grow_with_traffic() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = own_cgroup_pod(&daemon, "stats-net");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let id = create(
        &mut client,
        &pod_id,
        &pod,
        container_config("net", &["sleep", "3600"]),
    )
    .await
    .unwrap();
    start(&mut client, &id).await;
    let lo_bytes = |stats: &PodSandboxStats| {
        let network = stats.linux.as_ref()?.network.as_ref()?;
        let lo = network.interfaces.iter().find(|i| i.name == "lo")?;
        Some((number(&lo.rx_bytes), number(&lo.tx_bytes)))
    };
    let before = lo_bytes(&pod_stats(&mut client, &pod_id).await).expect("lo counters");
    // A connection to a closed port (SYN, RST) and two pings, on lo.
    let traffic = "echo x | nc 127.0.0.1 9; ping -c 2 -W 1 127.0.0.1 >/dev/null; true";
    exec(&mut client, &id, &["sh", "-c", traffic]).await;
    let after = lo_bytes(&pod_stats(&mut client, &pod_id).await).unwrap();
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "{before:?} -> {after:?}"
    );

    // The host's lo is not what is reported: a listing shows each pod's.
    let listed = client
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    assert!(lo_bytes(&listed[0]).unwrap().0 >= after.0);
    remove_pod(&mut client, &pod_id).await;
}
