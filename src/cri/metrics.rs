//! The metrics RPCs: what kubelet serves on `/metrics/cadvisor` when its
//! `PodAndContainerStatsFromCRI` gate is on. kubelet asks for the
//! descriptors once, then turns every `ListPodSandboxMetrics` answer into
//! Prometheus samples as they are, so names, label keys and units follow
//! cAdvisor's (what dashboards and alerts query). The values come from the
//! same readings as the stats RPCs ([`stats::read_pods`]).
//!
//! Label keys are cAdvisor's as kubelet exposes them: `container` (the
//! Kubernetes container name, empty for the pod itself), `id` (the
//! cgroup), `image`, `name` (the runtime's container ID), `namespace` and
//! `pod`. CRI values are integers: CPU seconds are whole seconds, as
//! CRI-O sends them.

use std::sync::Arc;

use tonic::Status;

use super::proto::*;
use super::stats::{self, PodReading};
use super::Services;
use crate::container;
use crate::sandbox::SandboxState;
use crate::stats::{InterfaceCounters, Sample, StatsCollector};

const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric kubelet learns about from `ListMetricDescriptors`.
struct Descriptor {
    name: &'static str,
    help: &'static str,
    /// Label keys after [`BASE_LABELS`].
    extra_labels: &'static [&'static str],
    kind: MetricType,
}

const fn counter(
    name: &'static str,
    help: &'static str,
    extra_labels: &'static [&'static str],
) -> Descriptor {
    Descriptor {
        name,
        help,
        extra_labels,
        kind: MetricType::Counter,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Descriptor {
    Descriptor {
        name,
        help,
        extra_labels: &[],
        kind: MetricType::Gauge,
    }
}

const CPU_USAGE: Descriptor = counter(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
    &["cpu"],
);
const MEMORY_USAGE: Descriptor = gauge(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed",
);
const MEMORY_WORKING_SET: Descriptor = gauge(
    "container_memory_working_set_bytes",
    "Current working set in bytes.",
);
const MEMORY_RSS: Descriptor = gauge("container_memory_rss", "Size of RSS in bytes.");
const MEMORY_SWAP: Descriptor = gauge("container_memory_swap", "Container swap usage in bytes.");
const MEMORY_FAILURES: Descriptor = counter(
    "container_memory_failures_total",
    "Cumulative count of memory allocation failures.",
    &["failure_type", "scope"],
);
const MEMORY_LIMIT: Descriptor = gauge(
    "container_spec_memory_limit_bytes",
    "Memory limit for the container.",
);
const PROCESSES: Descriptor = gauge(
    "container_processes",
    "Number of processes running inside the container.",
);
const FS_USAGE: Descriptor = gauge(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
);
const FS_INODES: Descriptor = gauge(
    "container_fs_inodes_used",
    "Number of inodes used by the container's writable layer.",
);
const LAST_SEEN: Descriptor = gauge(
    "container_last_seen",
    "Last time a container was seen by the exporter",
);
const NETWORK_LABELS: &[&str] = &["interface"];
const RECEIVE_BYTES: Descriptor = counter(
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received",
    NETWORK_LABELS,
);
const RECEIVE_PACKETS: Descriptor = counter(
    "container_network_receive_packets_total",
    "Cumulative count of packets received",
    NETWORK_LABELS,
);
const RECEIVE_DROPPED: Descriptor = counter(
    "container_network_receive_packets_dropped_total",
    "Cumulative count of packets dropped while receiving",
    NETWORK_LABELS,
);
const RECEIVE_ERRORS: Descriptor = counter(
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving",
    NETWORK_LABELS,
);
const TRANSMIT_BYTES: Descriptor = counter(
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted",
    NETWORK_LABELS,
);
const TRANSMIT_PACKETS: Descriptor = counter(
    "container_network_transmit_packets_total",
    "Cumulative count of packets transmitted",
    NETWORK_LABELS,
);
const TRANSMIT_DROPPED: Descriptor = counter(
    "container_network_transmit_packets_dropped_total",
    "Cumulative count of packets dropped while transmitting",
    NETWORK_LABELS,
);
const TRANSMIT_ERRORS: Descriptor = counter(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting",
    NETWORK_LABELS,
);

const ALL: [&Descriptor; 19] = [
    &CPU_USAGE,
    &MEMORY_USAGE,
    &MEMORY_WORKING_SET,
    &MEMORY_RSS,
    &MEMORY_SWAP,
    &MEMORY_FAILURES,
    &MEMORY_LIMIT,
    &PROCESSES,
    &FS_USAGE,
    &FS_INODES,
    &LAST_SEEN,
    &RECEIVE_BYTES,
    &RECEIVE_PACKETS,
    &RECEIVE_DROPPED,
    &RECEIVE_ERRORS,
    &TRANSMIT_BYTES,
    &TRANSMIT_PACKETS,
    &TRANSMIT_DROPPED,
    &TRANSMIT_ERRORS,
];

pub fn descriptors() -> Vec<MetricDescriptor> {
    ALL.iter()
        .map(|d| MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.extra_labels)
                .map(|k| k.to_string())
                .collect(),
        })
        .collect()
}

pub async fn list(
    services: &Services,
    collector: &Arc<StatsCollector>,
) -> Result<Vec<PodSandboxMetrics>, Status> {
    // Ready pods only: a stopped pod kubelet has replaced shares its cgroup
    // (and so every label) with its successor, and kubelet's registry
    // rejects a series sent twice.
    let sandboxes = services
        .sandboxes
        .list()
        .into_iter()
        .filter(|s| s.state == SandboxState::Ready)
        .collect();
    // Running containers only: an exited one's cgroup stays until it is
    // removed, and its series would live on with stale values.
    let running = |c: &container::Container| c.state() == container::ContainerState::Running;
    let readings = stats::read_pods(services, collector, sandboxes, running).await;
    Ok(readings.iter().map(|r| pod_metrics(services, r)).collect())
}

/// Collects the metrics of one pod or container under its base labels.
struct Emitter {
    base: Vec<String>,
    metrics: Vec<Metric>,
}

impl Emitter {
    fn new(base: [String; 6]) -> Emitter {
        Emitter {
            base: base.into(),
            metrics: Vec::new(),
        }
    }

    fn emit(&mut self, descriptor: &Descriptor, extra: &[&str], value: Option<u64>) {
        debug_assert_eq!(extra.len(), descriptor.extra_labels.len());
        let Some(value) = value else { return };
        let mut label_values = self.base.clone();
        label_values.extend(extra.iter().map(|v| v.to_string()));
        self.metrics.push(Metric {
            name: descriptor.name.into(),
            // Read now, not cached: kubelet stamps it with the scrape time.
            timestamp: 0,
            metric_type: descriptor.kind as i32,
            label_values,
            value: Some(UInt64Value { value }),
        });
    }

    /// What a pod's cgroup and a container's cgroup both have.
    fn cgroup(&mut self, sample: &Sample) {
        self.emit(
            &CPU_USAGE,
            &["total"],
            sample.cpu.map(|c| c.usage_ns / 1_000_000_000),
        );
        let memory = sample.memory;
        self.emit(&MEMORY_USAGE, &[], memory.map(|m| m.usage));
        self.emit(&MEMORY_WORKING_SET, &[], memory.map(|m| m.working_set));
        self.emit(&MEMORY_RSS, &[], memory.map(|m| m.rss));
        self.emit(&MEMORY_SWAP, &[], memory.and_then(|m| m.swap_usage));
        let faults = memory.map(|m| m.page_faults);
        let major = memory.map(|m| m.major_page_faults);
        // Counted over the cgroup and its children (v1 `total_*`, v2
        // always): cAdvisor's scope `hierarchy`.
        self.emit(&MEMORY_FAILURES, &["pgfault", "hierarchy"], faults);
        self.emit(&MEMORY_FAILURES, &["pgmajfault", "hierarchy"], major);
        // cAdvisor reports an unlimited cgroup's limit as 0.
        self.emit(&MEMORY_LIMIT, &[], memory.map(|m| m.limit.unwrap_or(0)));
        self.emit(&PROCESSES, &[], sample.processes);
        let seen = sample.cpu.map(|_| seconds(sample.at_ns));
        self.emit(&LAST_SEEN, &[], seen);
    }

    fn network(&mut self, interfaces: &[InterfaceCounters]) {
        for i in interfaces.iter().filter(|i| i.name != "lo") {
            let name = [i.name.as_str()];
            self.emit(&RECEIVE_BYTES, &name, Some(i.rx_bytes));
            self.emit(&RECEIVE_PACKETS, &name, Some(i.rx_packets));
            self.emit(&RECEIVE_DROPPED, &name, Some(i.rx_dropped));
            self.emit(&RECEIVE_ERRORS, &name, Some(i.rx_errors));
            self.emit(&TRANSMIT_BYTES, &name, Some(i.tx_bytes));
            self.emit(&TRANSMIT_PACKETS, &name, Some(i.tx_packets));
            self.emit(&TRANSMIT_DROPPED, &name, Some(i.tx_dropped));
            self.emit(&TRANSMIT_ERRORS, &name, Some(i.tx_errors));
        }
    }
}

fn seconds(at_ns: i64) -> u64 {
    u64::try_from(at_ns / 1_000_000_000).unwrap_or(0)
}

fn pod_metrics(services: &Services, reading: &PodReading) -> PodSandboxMetrics {
    let sandbox = &reading.sandbox;
    let metadata = sandbox.metadata();
    let parent = stats::cgroup_parent(sandbox);
    // The pod's own row, as cAdvisor reports the pod cgroup: no container.
    let mut pod = Emitter::new([
        String::new(),
        parent.clone(),
        String::new(),
        String::new(),
        metadata.namespace.clone(),
        metadata.name.clone(),
    ]);
    pod.cgroup(&reading.sample);
    if let Some(interfaces) = &reading.interfaces {
        pod.network(interfaces);
    }
    let container_metrics = reading
        .containers
        .iter()
        .map(|(record, sample)| {
            let mut c = Emitter::new([
                record.metadata().name,
                container::cgroups_path(&parent, &record.id),
                super::containers::image_name(services, record),
                record.id.clone(),
                metadata.namespace.clone(),
                metadata.name.clone(),
            ]);
            c.cgroup(sample);
            let layer = sample.writable_layer;
            c.emit(&FS_USAGE, &[], layer.map(|l| l.bytes));
            c.emit(&FS_INODES, &[], layer.map(|l| l.inodes));
            ContainerMetrics {
                container_id: record.id.clone(),
                metrics: c.metrics,
            }
        })
        .collect();
    PodSandboxMetrics {
        pod_sandbox_id: sandbox.id.clone(),
        metrics: pod.metrics,
        container_metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{CpuUsage, MemoryUsage};

    #[test]
    fn descriptor_names_are_unique_and_cadvisors() {
        let all = descriptors();
        let names: std::collections::HashSet<_> = all.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), all.len());
        for name in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_memory_usage_bytes",
            "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total",
        ] {
            assert!(names.contains(name), "{name}");
        }
    }

    /// kubelet rejects a metric whose values do not match its
    /// descriptor's keys one for one.
    #[test]
    fn every_metric_has_a_value_for_each_label_key_of_its_descriptor() {
        let keys: std::collections::HashMap<String, usize> = descriptors()
            .into_iter()
            .map(|d| (d.name, d.label_keys.len()))
            .collect();
        let sample = Sample {
            at_ns: 5_000_000_000,
            cpu: Some(CpuUsage {
                usage_ns: 3_500_000_000,
                psi: None,
            }),
            nano_cores: None,
            memory: Some(MemoryUsage {
                usage: 10,
                swap_usage: Some(1),
                ..Default::default()
            }),
            processes: Some(2),
            ..Default::default()
        };
        let mut e = Emitter::new(Default::default());
        e.cgroup(&sample);
        e.network(&[InterfaceCounters {
            name: "eth0".into(),
            rx_bytes: 7,
            ..Default::default()
        }]);
        for m in &e.metrics {
            assert_eq!(m.label_values.len(), keys[&m.name], "{}", m.name);
        }
        let cpu = e.metrics.iter().find(|m| m.name == CPU_USAGE.name).unwrap();
        assert_eq!(cpu.value.as_ref().unwrap().value, 3);
        assert_eq!(cpu.label_values.last().unwrap(), "total");
        assert_eq!(cpu.metric_type, MetricType::Counter as i32);
        let seen = e.metrics.iter().find(|m| m.name == LAST_SEEN.name).unwrap();
        assert_eq!(seen.value.as_ref().unwrap().value, 5);
        assert_eq!(
            e.metrics
                .iter()
                .filter(|m| m.name.contains("network"))
                .count(),
            8
        );
    }
}
