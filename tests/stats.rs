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
    let memory = first.memory.unwrap();
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
    // Low bar: the test host is shared, a busy loop may get a fraction
    // of a core.
    assert!(rate > 50_000_000, "a busy loop uses {rate} nano-cores");
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

    // The writable layer is reported. Its figure is the one cached when the
    // container was created (empty: runc mounts nothing into it before the
    // start), refreshed at most every 30 s; src/stats/layer.rs tests the
    // refresh.
    let layer = first.writable_layer.unwrap();
    assert!(number(&layer.inodes_used) >= 1, "{layer:?}");
    assert!(
        layer
            .fs_id
            .as_ref()
            .is_some_and(|fs| !fs.mountpoint.is_empty()),
        "{layer:?}"
    );

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
    let id = run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("net", &["sleep", "3600"]),
    )
    .await;
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

type Events = tonic::Streaming<ContainerEventResponse>;

async fn subscribe(client: &mut RuntimeServiceClient<Channel>) -> Events {
    client
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The next `count` events of `stream`, failing after 20 s.
async fn next_events(stream: &mut Events, count: usize) -> Vec<ContainerEventResponse> {
    let mut events = Vec::new();
    for _ in 0..count {
        let next = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no event after {events:?}"));
        events.push(next.unwrap().expect("the stream ended"));
    }
    events
}

fn kinds(events: &[ContainerEventResponse]) -> Vec<(String, ContainerEventType)> {
    events
        .iter()
        .map(|e| (e.container_id.clone(), e.container_event_type()))
        .collect()
}

#[tokio::test]
async fn a_pod_lifecycle_reaches_two_subscribers_complete_and_in_order() {
    use ContainerEventType::*;
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let mut first = subscribe(&mut client).await;
    let mut second = subscribe(&mut daemon.runtime().await).await;
    let pod = pod_config(&daemon, "events");
    let pod_id = run_pod(&mut client, pod.clone()).await;

    // Each step's events are read before the next step, from both
    // subscribers, so that the statuses they carry are that step's.
    async fn step(
        subscribers: [&mut Events; 2],
        expected: &[(&str, ContainerEventType)],
    ) -> Vec<ContainerEventResponse> {
        let expected: Vec<(String, ContainerEventType)> = expected
            .iter()
            .map(|(id, k)| (id.to_string(), *k))
            .collect();
        let mut seen = Vec::new();
        for subscriber in subscribers {
            let events = next_events(subscriber, expected.len()).await;
            assert_eq!(kinds(&events), expected);
            seen = events;
        }
        seen
    }

    let events = step(
        [&mut first, &mut second],
        &[
            (&pod_id, ContainerCreatedEvent),
            (&pod_id, ContainerStartedEvent),
        ],
    )
    .await;
    let pod_status = events[1].pod_sandbox_status.as_ref().unwrap();
    assert_eq!(pod_status.id, pod_id);
    assert_eq!(pod_status.state(), PodSandboxState::SandboxReady);
    assert!(events[1].created_at > 0);

    let id = create(
        &mut client,
        &pod_id,
        &pod,
        container_config("main", &["sleep", "3600"]),
    )
    .await
    .unwrap();
    let events = step([&mut first, &mut second], &[(&id, ContainerCreatedEvent)]).await;
    assert_eq!(events[0].containers_statuses.len(), 1);
    assert_eq!(events[0].containers_statuses[0].id, id);
    assert_eq!(
        events[0].containers_statuses[0].state(),
        ContainerState::ContainerCreated
    );

    start(&mut client, &id).await;
    let events = step([&mut first, &mut second], &[(&id, ContainerStartedEvent)]).await;
    assert_eq!(
        events[0].containers_statuses[0].state(),
        ContainerState::ContainerRunning
    );

    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    let events = step(
        [&mut first, &mut second],
        &[
            (&id, ContainerStoppedEvent),
            (&pod_id, ContainerStoppedEvent),
        ],
    )
    .await;
    assert_eq!(
        events[1].containers_statuses[0].state(),
        ContainerState::ContainerExited
    );
    assert_eq!(
        events[1].pod_sandbox_status.as_ref().unwrap().state(),
        PodSandboxState::SandboxNotready
    );

    remove_pod(&mut client, &pod_id).await;
    let events = step(
        [&mut first, &mut second],
        &[
            (&id, ContainerDeletedEvent),
            (&pod_id, ContainerDeletedEvent),
        ],
    )
    .await;
    // Gone, but with the pod's status as it was last (as containerd sends
    // it, and as kubelet's evented PLEG needs it to drop the pod from its
    // cache); no containers left to report.
    for event in &events {
        let status = event.pod_sandbox_status.as_ref().expect("the pod's status");
        assert_eq!(status.id, pod_id);
        assert_eq!(status.state(), PodSandboxState::SandboxNotready);
    }
    assert!(events[1].containers_statuses.is_empty());

    // Nothing else was sent.
    let extra = tokio::time::timeout(Duration::from_millis(300), first.message()).await;
    assert!(extra.is_err(), "unexpected event {extra:?}");
}

#[tokio::test]
async fn verbose_status_names_the_init_pid_and_the_spec() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = own_cgroup_pod(&daemon, "verbose");
    let cgroup = pod.linux.as_ref().unwrap().cgroup_parent.clone();
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let id = create(
        &mut client,
        &pod_id,
        &pod,
        container_config("main", &["sleep", "3600"]),
    )
    .await
    .unwrap();
    let info = |response: ContainerStatusResponse| -> serde_json::Value {
        serde_json::from_str(&response.info["info"]).unwrap()
    };
    let verbose = ContainerStatusRequest {
        container_id: id.clone(),
        verbose: true,
    };
    let created = info(
        client
            .container_status(verbose.clone())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(created["pid"], 0, "not running yet");
    start(&mut client, &id).await;
    let running = info(client.container_status(verbose).await.unwrap().into_inner());

    // The only process of the container's cgroup is its init.
    let procs = format!("/sys/fs/cgroup/pids{cgroup}/{id}/cgroup.procs");
    let init: u64 = std::fs::read_to_string(&procs)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(running["pid"], init);
    let cmdline = std::fs::read(format!("/proc/{init}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"sleep\0"), "{cmdline:?}");
    assert_eq!(running["sandboxID"], pod_id);
    assert_eq!(running["privileged"], false);
    assert_eq!(running["runtimeType"], "runc");
    assert_eq!(running["config"]["metadata"]["name"], "main");
    assert_eq!(running["runtimeSpec"]["process"]["args"][0], "sleep");

    let pod_info = client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let pod_info: serde_json::Value = serde_json::from_str(&pod_info.info["info"]).unwrap();
    assert_eq!(pod_info["runtimeHandler"], "runc");
    assert_eq!(pod_info["config"]["metadata"]["name"], "verbose");
    assert!(pod_info["namespaces"]["net"].is_string(), "{pod_info}");

    // A pod sharing one PID namespace reports its holder's pid.
    let mut shared = own_cgroup_pod(&daemon, "verbose-pid");
    shared.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let shared_id = run_pod(&mut client, shared).await;
    let shared_info = client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: shared_id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let shared_info: serde_json::Value = serde_json::from_str(&shared_info.info["info"]).unwrap();
    let holder = shared_info["pid"].as_u64().unwrap();
    assert_ne!(holder, 0, "{shared_info}");
    let cmdline = std::fs::read(format!("/proc/{holder}/cmdline")).unwrap();
    assert!(
        cmdline.windows(6).any(|w| w == b"pause\0"),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    assert_eq!(pod_info["pid"], 0, "no PID namespace holder");
    remove_pod(&mut client, &shared_id).await;

    // CheckpointContainer: refused, with the reason.
    let checkpoint = client
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(checkpoint.code(), tonic::Code::Unimplemented);
    assert!(checkpoint.message().contains("CRIU"), "{checkpoint:?}");
    remove_pod(&mut client, &pod_id).await;
}
