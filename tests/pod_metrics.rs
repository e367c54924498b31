//! The metrics RPCs through the socket, read as kubelet's
//! `/metrics/cadvisor` reads them: descriptors once, then every metric's
//! label values against its descriptor's keys, on a real pod that burns
//! CPU and sends packets.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::pods::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

/// A metric as Prometheus would show it: labels by key.
#[derive(Debug)]
struct Sample {
    labels: HashMap<String, String>,
    value: u64,
    kind: i32,
}

async fn descriptors(client: &mut RuntimeServiceClient<Channel>) -> HashMap<String, Vec<String>> {
    client
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name, d.label_keys))
        .collect()
}

/// The pod's metrics as kubelet would turn them into samples: a metric
/// without a descriptor or with the wrong number of labels is a failure.
async fn pod_samples(
    client: &mut RuntimeServiceClient<Channel>,
    keys: &HashMap<String, Vec<String>>,
    pod_id: &str,
) -> Vec<(String, Sample)> {
    let pods = client
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let pod = pods
        .into_iter()
        .find(|p| p.pod_sandbox_id == pod_id)
        .expect("the pod is listed");
    let all = pod
        .metrics
        .into_iter()
        .chain(pod.container_metrics.into_iter().flat_map(|c| c.metrics));
    all.map(|m| {
        let keys = keys
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(keys.len(), m.label_values.len(), "{m:?}");
        let labels = keys.iter().cloned().zip(m.label_values).collect();
        let sample = Sample {
            labels,
            value: m.value.map(|v| v.value).unwrap_or_default(),
            kind: m.metric_type,
        };
        (m.name, sample)
    })
    .collect()
}

fn find<'a>(
    samples: &'a [(String, Sample)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a Sample> {
    samples
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, s)| s)
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
}

#[tokio::test]
async fn a_busy_pod_shows_cadvisor_metrics_that_rise() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let keys = descriptors(&mut client).await;
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    ] {
        let labels = keys
            .get(name)
            .unwrap_or_else(|| panic!("{name} not described"));
        for key in ["container", "pod", "namespace", "id", "image", "name"] {
            assert!(labels.iter().any(|l| l == key), "{name}: {labels:?}");
        }
    }

    let mut pod = pod_config(&daemon, "metrics-busy");
    let cgroup = format!("/wharf-test/metrics-busy-{}", std::process::id());
    pod.linux.as_mut().unwrap().cgroup_parent = cgroup.clone();
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let burner = container_config("burner", &["sh", "-c", "while :; do :; done"]);
    let image = burner.image.as_ref().unwrap().image.clone();
    let id = run_container(&mut client, &pod_id, &pod, burner).await;
    // A container that has exited has no cgroup and no metrics.
    let done = container_config("done", &["true"]);
    let done_id = run_container(&mut client, &pod_id, &pod, done).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while container_state(&mut client, &done_id).await != ContainerState::ContainerExited as i32 {
        assert!(Instant::now() < deadline, "`true` still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let container = [("container", "burner"), ("pod", "metrics-busy")];
    let first = pod_samples(&mut client, &keys, &pod_id).await;
    let cpu = find(&first, "container_cpu_usage_seconds_total", &container)
        .expect("the running container's CPU");
    assert_eq!(cpu.kind, MetricType::Counter as i32);
    assert_eq!(cpu.labels["cpu"], "total");
    assert_eq!(cpu.labels["namespace"], "default");
    assert_eq!(cpu.labels["name"], id);
    assert_eq!(cpu.labels["image"], image);
    assert_eq!(cpu.labels["id"], format!("{cgroup}/{id}"));
    let working_set = find(&first, "container_memory_working_set_bytes", &container).unwrap();
    assert_eq!(working_set.kind, MetricType::Gauge as i32);
    assert!(working_set.value > 0, "{working_set:?}");
    // The pod's own row: its cgroup, no container name.
    let pod_cpu = find(
        &first,
        "container_cpu_usage_seconds_total",
        &[("container", "")],
    )
    .unwrap();
    assert_eq!(pod_cpu.labels["id"], cgroup);

    // Whole CPU seconds: the busy loop adds one within a few seconds even
    // on a shared host.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = pod_samples(&mut client, &keys, &pod_id).await;
        let value = find(&now, "container_cpu_usage_seconds_total", &container)
            .unwrap()
            .value;
        if value > cpu.value {
            let pod_value = find(
                &now,
                "container_cpu_usage_seconds_total",
                &[("container", "")],
            )
            .unwrap()
            .value;
            assert!(pod_value >= value, "pod {pod_value} < container {value}");
            break;
        }
        assert!(Instant::now() < deadline, "CPU seconds stuck at {value}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Traffic on an interface other than lo (the test network is
    // loopback only): a veth pair made in the pod's namespace from the
    // host, and pings the container sends out of it.
    let pid = container_pid(&mut client, &id).await;
    let setup = "ip link add m0 type veth peer name m1 && ip link set m0 up && \
                 ip link set m1 up && ip addr add 10.250.0.1/24 dev m0";
    let status = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "sh", "-c", setup])
        .status()
        .unwrap();
    assert!(status.success());
    let m0 = [("interface", "m0"), ("container", "")];
    let sent = |samples: &[(String, Sample)]| {
        find(samples, "container_network_transmit_bytes_total", &m0).map(|s| s.value)
    };
    let before = sent(&pod_samples(&mut client, &keys, &pod_id).await).expect("m0 listed");
    exec(
        &mut client,
        &id,
        &["ping", "-c", "2", "-W", "1", "10.250.0.2"],
    )
    .await;
    let after_samples = pod_samples(&mut client, &keys, &pod_id).await;
    let after = sent(&after_samples).unwrap();
    assert!(after > before, "{before} -> {after}");
    let received = find(
        &after_samples,
        "container_network_receive_bytes_total",
        &[("interface", "m1")],
    )
    .unwrap();
    assert!(received.value > 0, "{received:?}");
    assert!(
        find(
            &after_samples,
            "container_network_receive_bytes_total",
            &[("interface", "lo")]
        )
        .is_none(),
        "lo is left out, as cAdvisor does"
    );

    // The stream carries the same pods.
    let streamed = stream_pod_sandbox_metrics(&daemon).await;
    let ours = streamed
        .iter()
        .find(|p| p.pod_sandbox_id == pod_id)
        .unwrap();
    // The burner only: `done` has exited.
    assert_eq!(ours.container_metrics.len(), 1);
    assert_eq!(ours.container_metrics[0].container_id, id);

    // A stopped pod is left out: kubelet's replacement for it would share
    // its cgroup, so its series would be sent twice.
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    let listed = client
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    assert!(listed.iter().all(|p| p.pod_sandbox_id != pod_id));
    remove_pod(&mut client, &pod_id).await;
}

async fn container_pid(client: &mut RuntimeServiceClient<Channel>, id: &str) -> u64 {
    let status = client
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    info["pid"]
        .as_u64()
        .filter(|pid| *pid > 0)
        .expect("a running container's pid")
}

/// StreamPodSandboxMetrics (the k8s-cri client predates it), every pod.
async fn stream_pod_sandbox_metrics(daemon: &common::Daemon) -> Vec<wharf::api::PodSandboxMetrics> {
    use wharf::api::{StreamPodSandboxMetricsRequest, StreamPodSandboxMetricsResponse};
    let mut grpc = tonic::client::Grpc::new(daemon.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<
        StreamPodSandboxMetricsRequest,
        StreamPodSandboxMetricsResponse,
    >::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/runtime.v1.RuntimeService/StreamPodSandboxMetrics",
    );
    let request = tonic::Request::new(StreamPodSandboxMetricsRequest {});
    let mut stream = grpc
        .server_streaming(request, path, codec)
        .await
        .unwrap()
        .into_inner();
    let mut pods = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        pods.extend(message.pod_sandbox_metrics);
    }
    pods
}

async fn container_state(client: &mut RuntimeServiceClient<Channel>, id: &str) -> i32 {
    client
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .state
}
