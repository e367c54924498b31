//! Stats RPCs: which cgroups, layers and namespaces to read for the
//! containers and pods asked about, one batch per call
//! ([`StatsCollector::collect`]), and the samples as CRI messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::Status;

use super::proto::*;
use super::{status_of, validate, Services};
use crate::container::{self, ContainerFilter as Filter};
use crate::sandbox::{Sandbox, SandboxState};
use crate::stats::{self, InterfaceCounters, Sample, StatsCollector, Target};

/// Interface kubelet's pod network stats are about, as containerd names it.
const DEFAULT_INTERFACE: &str = "eth0";

pub async fn container(
    services: &Services,
    collector: &Arc<StatsCollector>,
    request: ContainerStatsRequest,
) -> Result<ContainerStatsResponse, Status> {
    let id = validate::id(&request.container_id, "container_id")?;
    let record = services.containers.get(id).map_err(status_of)?.snapshot();
    let stats = containers(services, collector, vec![record]).await;
    Ok(ContainerStatsResponse {
        stats: stats.into_iter().next(),
    })
}

pub async fn list_containers(
    services: &Services,
    collector: &Arc<StatsCollector>,
    filter: Option<&ContainerStatsFilter>,
) -> Result<Vec<ContainerStats>, Status> {
    let filter = match filter {
        None => Filter::default(),
        Some(f) => {
            validate::optional_id(&f.id, "filter.id")?;
            validate::optional_id(&f.pod_sandbox_id, "filter.pod_sandbox_id")?;
            Filter {
                id: Some(f.id.clone()).filter(|id| !id.is_empty()),
                sandbox_id: Some(f.pod_sandbox_id.clone()).filter(|id| !id.is_empty()),
                state: None,
                labels: f.label_selector.clone(),
            }
        }
    };
    let records = services.containers.list(&filter);
    Ok(containers(services, collector, records).await)
}

/// The cgroup parent each pod gave its containers, by pod ID.
fn cgroup_parents(services: &Services) -> HashMap<String, String> {
    services
        .sandboxes
        .list()
        .into_iter()
        .map(|s| (s.id.clone(), cgroup_parent(&s)))
        .collect()
}

pub(super) fn cgroup_parent(sandbox: &Sandbox) -> String {
    sandbox
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default()
}

fn container_target(
    services: &Services,
    parents: &HashMap<String, String>,
    record: &container::Container,
) -> Target {
    let parent = parents
        .get(&record.sandbox_id)
        .map(String::as_str)
        .unwrap_or("");
    Target {
        id: record.id.clone(),
        cgroup: PathBuf::from(container::cgroups_path(parent, &record.id)),
        writable_layer: Some(services.containers.writable_layer(&record.id)),
    }
}

async fn containers(
    services: &Services,
    collector: &Arc<StatsCollector>,
    records: Vec<Arc<container::Container>>,
) -> Vec<ContainerStats> {
    let parents = cgroup_parents(services);
    let targets = records
        .iter()
        .map(|r| container_target(services, &parents, r))
        .collect();
    let samples = collector.collect(targets).await;
    let mountpoint = services.containers.root().display().to_string();
    records
        .iter()
        .zip(&samples)
        .map(|(record, sample)| container_stats(record, sample, &mountpoint))
        .collect()
}

pub async fn pod(
    services: &Services,
    collector: &Arc<StatsCollector>,
    request: PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse, Status> {
    let id = validate::id(&request.pod_sandbox_id, "pod_sandbox_id")?;
    let sandbox = services.sandboxes.get(id).map_err(status_of)?.snapshot();
    let stats = pods(services, collector, vec![sandbox]).await;
    Ok(PodSandboxStatsResponse {
        stats: stats.into_iter().next(),
    })
}

pub async fn list_pods(
    services: &Services,
    collector: &Arc<StatsCollector>,
    filter: Option<&PodSandboxStatsFilter>,
) -> Result<Vec<PodSandboxStats>, Status> {
    let id_prefix = filter.map(|f| f.id.as_str()).unwrap_or("");
    validate::optional_id(id_prefix, "filter.id")?;
    let labels = filter.map(|f| &f.label_selector);
    let sandboxes = services
        .sandboxes
        .list()
        .into_iter()
        .filter(|s| s.id.starts_with(id_prefix))
        .filter(|s| labels.is_none_or(|l| l.iter().all(|(k, v)| s.config.labels.get(k) == Some(v))))
        .collect();
    Ok(pods(services, collector, sandboxes).await)
}

/// One pod's reading: its own sample (or its containers' sum), each
/// container's, and its network interfaces when it has a namespace.
pub(super) struct PodReading {
    pub sandbox: Arc<Sandbox>,
    pub sample: Sample,
    pub containers: Vec<(Arc<container::Container>, Sample)>,
    pub interfaces: Option<Vec<InterfaceCounters>>,
}

async fn pods(
    services: &Services,
    collector: &Arc<StatsCollector>,
    sandboxes: Vec<Arc<Sandbox>>,
) -> Vec<PodSandboxStats> {
    let mountpoint = services.containers.root().display().to_string();
    read_pods(services, collector, sandboxes, |_| true)
        .await
        .into_iter()
        .map(|reading| {
            let containers = reading
                .containers
                .iter()
                .map(|(r, s)| container_stats(r, s, &mountpoint))
                .collect();
            pod_stats(
                &reading.sandbox,
                &reading.sample,
                reading.interfaces.as_ref(),
                containers,
            )
        })
        .collect()
}

/// All the pods' cgroups and their containers' (those `wanted`) in one
/// batch, and their network namespaces on one thread, both at once.
pub(super) async fn read_pods(
    services: &Services,
    collector: &Arc<StatsCollector>,
    sandboxes: Vec<Arc<Sandbox>>,
    wanted: fn(&container::Container) -> bool,
) -> Vec<PodReading> {
    let parents = cgroup_parents(services);
    let mut by_pod: HashMap<String, Vec<Arc<container::Container>>> = sandboxes
        .iter()
        .map(|s| (s.id.clone(), Vec::new()))
        .collect();
    for record in services.containers.list(&Filter::default()) {
        if !wanted(&record) {
            continue;
        }
        if let Some(list) = by_pod.get_mut(&record.sandbox_id) {
            list.push(record);
        }
    }
    // Targets: each pod with a cgroup of its own, then its containers.
    let mut targets = Vec::new();
    for sandbox in &sandboxes {
        let parent = cgroup_parent(sandbox);
        if !parent.is_empty() {
            targets.push(Target {
                id: format!("pod:{}", sandbox.id),
                cgroup: PathBuf::from(parent),
                writable_layer: None,
            });
        }
        for record in by_pod.get(&sandbox.id).into_iter().flatten() {
            targets.push(container_target(services, &parents, record));
        }
    }
    let namespaces: Vec<(usize, PathBuf)> = sandboxes
        .iter()
        .enumerate()
        .filter(|(_, s)| s.state == SandboxState::Ready)
        .filter_map(|(i, s)| Some((i, s.namespaces.net.clone()?)))
        .collect();
    let (samples, counters) = tokio::join!(
        collector.collect(targets),
        stats::network::read_all(namespaces.iter().map(|(_, ns)| ns.clone()).collect())
    );
    let mut network: HashMap<usize, Vec<InterfaceCounters>> = HashMap::new();
    for ((index, _), read) in namespaces.iter().zip(counters) {
        if let Some(read) = read {
            network.insert(*index, read);
        }
    }
    let mut samples = samples.into_iter();
    let now = crate::store::now_nanos();
    sandboxes
        .into_iter()
        .enumerate()
        .map(|(index, sandbox)| {
            let own =
                (!cgroup_parent(&sandbox).is_empty()).then(|| samples.next().unwrap_or_default());
            let records = by_pod.remove(&sandbox.id).unwrap_or_default();
            let containers: Vec<(Arc<container::Container>, Sample)> = records
                .into_iter()
                .map(|r| (r, samples.next().unwrap_or_default()))
                .collect();
            let sample = own.unwrap_or_else(|| Sample::sum(now, containers.iter().map(|(_, s)| s)));
            PodReading {
                sandbox,
                sample,
                containers,
                interfaces: network.remove(&index),
            }
        })
        .collect()
}

fn pod_stats(
    sandbox: &Sandbox,
    sample: &Sample,
    interfaces: Option<&Vec<InterfaceCounters>>,
    containers: Vec<ContainerStats>,
) -> PodSandboxStats {
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: sandbox.id.clone(),
            metadata: Some(sandbox.metadata()),
            labels: sandbox.config.labels.clone(),
            annotations: sandbox.config.annotations.clone(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: Some(cpu_usage(sample)),
            memory: Some(memory_usage(sample)),
            network: interfaces.map(|i| network_usage(sample.at_ns, i)),
            process: Some(ProcessUsage {
                timestamp: sample.at_ns,
                process_count: sample.processes.map(value),
            }),
            containers,
            io: io_usage(sample),
        }),
        windows: None,
    }
}

fn value(value: u64) -> UInt64Value {
    UInt64Value { value }
}

fn container_stats(
    record: &container::Container,
    sample: &Sample,
    mountpoint: &str,
) -> ContainerStats {
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: record.id.clone(),
            metadata: Some(record.metadata()),
            labels: record.config.labels.clone(),
            annotations: record.config.annotations.clone(),
        }),
        cpu: Some(cpu_usage(sample)),
        memory: Some(memory_usage(sample)),
        writable_layer: Some(FilesystemUsage {
            timestamp: sample.at_ns,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: mountpoint.to_string(),
            }),
            used_bytes: sample.writable_layer.map(|u| value(u.bytes)),
            inodes_used: sample.writable_layer.map(|u| value(u.inodes)),
        }),
        swap: sample.memory.map(|m| SwapUsage {
            timestamp: sample.at_ns,
            swap_available_bytes: m.swap_available().map(value),
            swap_usage_bytes: m.swap_usage.map(value),
        }),
        io: io_usage(sample),
    }
}

/// Present when the cgroup is (kubelet then reports the pod's IO, as
/// cAdvisor does), with PSI where the kernel gives it (cgroup v2).
fn io_usage(sample: &Sample) -> Option<IoUsage> {
    sample.cpu.map(|_| IoUsage {
        timestamp: sample.at_ns,
        psi: sample.io_psi.map(psi),
    })
}

/// Values stay unset (not zero) when the cgroup could not be read, as
/// containerd does for a container that is not running.
fn cpu_usage(sample: &Sample) -> CpuUsage {
    CpuUsage {
        timestamp: sample.at_ns,
        usage_core_nano_seconds: sample.cpu.map(|c| value(c.usage_ns)),
        usage_nano_cores: sample.nano_cores.map(value),
        psi: sample.cpu.and_then(|c| c.psi).map(psi),
    }
}

fn memory_usage(sample: &Sample) -> MemoryUsage {
    let m = sample.memory;
    MemoryUsage {
        timestamp: sample.at_ns,
        working_set_bytes: m.map(|m| value(m.working_set)),
        available_bytes: m.and_then(|m| m.available()).map(value),
        usage_bytes: m.map(|m| value(m.usage)),
        rss_bytes: m.map(|m| value(m.rss)),
        page_faults: m.map(|m| value(m.page_faults)),
        major_page_faults: m.map(|m| value(m.major_page_faults)),
        psi: m.and_then(|m| m.psi).map(psi),
    }
}

fn psi(pressure: stats::Pressure) -> PsiStats {
    let line = |l: Option<stats::parse::PressureLine>| {
        l.map(|l| PsiData {
            total: l.total_us,
            avg10: l.avg10,
            avg60: l.avg60,
            avg300: l.avg300,
        })
    };
    PsiStats {
        full: line(pressure.full),
        some: line(pressure.some),
    }
}

fn network_usage(at_ns: i64, interfaces: &[InterfaceCounters]) -> NetworkUsage {
    let usage = |i: &InterfaceCounters| NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: Some(value(i.rx_bytes)),
        rx_errors: Some(value(i.rx_errors)),
        tx_bytes: Some(value(i.tx_bytes)),
        tx_errors: Some(value(i.tx_errors)),
    };
    let default = interfaces
        .iter()
        .find(|i| i.name == DEFAULT_INTERFACE)
        .or_else(|| interfaces.iter().find(|i| i.name != "lo"));
    NetworkUsage {
        timestamp: at_ns,
        default_interface: default.map(usage),
        interfaces: interfaces.iter().map(usage).collect(),
    }
}
