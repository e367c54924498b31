//! Resource usage of containers and pods, read from their cgroups (v1, v2
//! or hybrid), their writable layers and their network namespaces.
//!
//! kubelet asks for every container every 10 s, so one call reads all the
//! cgroups it needs in one blocking task ([`StatsCollector::collect`]),
//! never one task per file; writable layers come from a cache
//! ([`layer`]); network counters from one thread that visits each pod's
//! namespace ([`network`]). CPU rates need the previous sample of the same
//! cgroup, which is kept here (bounded, and forgotten when unused).

pub mod layer;
pub mod limits;
pub mod network;
pub mod parse;
mod v1;
mod v2;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cgroup::{Controller, Hierarchies, Version};
pub use layer::DiskUsage;
pub use parse::{InterfaceCounters, Pressure};

/// Samples closer together than this reuse the last rate rather than
/// computing a noisy one from a few milliseconds.
const MIN_RATE_WINDOW_NS: i64 = 1_000_000_000;
/// Previous CPU samples kept at most, and how long an unused one is kept.
const MAX_PREVIOUS: usize = 65_536;
const FORGET_AFTER_NS: i64 = 600 * 1_000_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUsage {
    /// Cumulative CPU time of all the cgroup's processes.
    pub usage_ns: u64,
    pub psi: Option<Pressure>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MemoryUsage {
    pub usage: u64,
    /// Usage minus inactive file cache (what kubelet evicts on).
    pub working_set: u64,
    pub rss: u64,
    pub limit: Option<u64>,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub swap_usage: Option<u64>,
    pub swap_limit: Option<u64>,
    pub psi: Option<Pressure>,
}

impl MemoryUsage {
    pub fn available(&self) -> Option<u64> {
        parse::available(self.limit, self.working_set)
    }

    pub fn swap_available(&self) -> Option<u64> {
        self.swap_limit
            .zip(self.swap_usage)
            .map(|(limit, used)| limit.saturating_sub(used))
    }
}

/// What to read for one container or pod.
#[derive(Debug, Clone)]
pub struct Target {
    /// The container or pod ID: the key of its previous CPU sample.
    pub id: String,
    /// The cgroup path (as in the OCI spec), from the hierarchy root.
    pub cgroup: PathBuf,
    pub writable_layer: Option<PathBuf>,
}

/// One reading; a part is `None` when its cgroup (or controller) is not
/// there — a created or exited container has no cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub at_ns: i64,
    pub cpu: Option<CpuUsage>,
    /// Cores in use since the previous sample, in billionths.
    pub nano_cores: Option<u64>,
    pub memory: Option<MemoryUsage>,
    pub processes: Option<u64>,
    pub writable_layer: Option<DiskUsage>,
    /// `io.pressure`: cgroup v2 only (v1's blkio has no PSI).
    pub io_psi: Option<Pressure>,
}

impl Sample {
    /// The sum of several samples (a pod without a cgroup of its own).
    pub fn sum<'a>(at_ns: i64, samples: impl IntoIterator<Item = &'a Sample>) -> Sample {
        let mut total = Sample {
            at_ns,
            ..Default::default()
        };
        for s in samples {
            if let Some(cpu) = s.cpu {
                total.cpu.get_or_insert_with(Default::default).usage_ns += cpu.usage_ns;
            }
            if let Some(rate) = s.nano_cores {
                *total.nano_cores.get_or_insert(0) += rate;
            }
            if let Some(m) = s.memory {
                let t = total.memory.get_or_insert_with(Default::default);
                t.usage += m.usage;
                t.working_set += m.working_set;
                t.rss += m.rss;
                t.page_faults += m.page_faults;
                t.major_page_faults += m.major_page_faults;
            }
            if let Some(p) = s.processes {
                *total.processes.get_or_insert(0) += p;
            }
        }
        total
    }
}

#[derive(Debug, Clone, Copy)]
struct Previous {
    usage_ns: u64,
    at_ns: i64,
    nano_cores: Option<u64>,
}

pub struct StatsCollector {
    hierarchies: Option<Hierarchies>,
    previous: Mutex<HashMap<String, Previous>>,
    layers: Arc<layer::LayerCache>,
}

impl StatsCollector {
    /// Finds the host's cgroup hierarchies; without any, samples are empty.
    pub fn new() -> StatsCollector {
        let hierarchies = match Hierarchies::detect() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "no cgroup hierarchies: stats will be empty");
                None
            }
        };
        Self::with_hierarchies(hierarchies)
    }

    pub fn with_hierarchies(hierarchies: Option<Hierarchies>) -> StatsCollector {
        StatsCollector {
            hierarchies,
            previous: Mutex::new(HashMap::new()),
            layers: Arc::new(layer::LayerCache::default()),
        }
    }

    /// Reads every target in one blocking task; samples in target order.
    pub async fn collect(self: &Arc<Self>, targets: Vec<Target>) -> Vec<Sample> {
        if targets.is_empty() {
            return Vec::new();
        }
        let this = Arc::clone(self);
        let count = targets.len();
        match tokio::task::spawn_blocking(move || this.collect_blocking(&targets)).await {
            Ok(samples) => samples,
            Err(e) => {
                tracing::error!(error = %e, "stats task failed");
                vec![Sample::default(); count]
            }
        }
    }

    fn collect_blocking(&self, targets: &[Target]) -> Vec<Sample> {
        let samples: Vec<Sample> = targets.iter().map(|t| self.read(t)).collect();
        self.remember(targets, samples)
    }

    /// One target's cgroup files and writable layer.
    fn read(&self, target: &Target) -> Sample {
        let at_ns = crate::store::now_nanos();
        let writable_layer = target
            .writable_layer
            .as_deref()
            .and_then(|dir| self.layers.usage(dir));
        let Some(h) = &self.hierarchies else {
            return Sample {
                at_ns,
                writable_layer,
                ..Default::default()
            };
        };
        let cgroup = &target.cgroup;
        let cpu = h
            .locate(Controller::Cpuacct, cgroup)
            .and_then(|dir| match dir.version {
                Version::V1 => v1::cpu(&dir.path),
                // cpuacct has no v2 counterpart: `cpu.stat` serves.
                Version::V2 => v2::cpu(&dir.path),
            });
        let memory = h
            .locate(Controller::Memory, cgroup)
            .and_then(|dir| match dir.version {
                Version::V1 => v1::memory(&dir.path),
                Version::V2 => v2::memory(&dir.path),
            });
        let processes = h
            .locate(Controller::Pids, cgroup)
            .and_then(|dir| read(&dir.path.join("pids.current")))
            .and_then(|t| parse::parse_single_value(&t));
        let io_psi = h
            .locate(Controller::Blkio, cgroup)
            .filter(|dir| dir.version == Version::V2)
            .and_then(|dir| read(&dir.path.join("io.pressure")))
            .map(|t| parse::parse_pressure(&t));
        Sample {
            at_ns,
            cpu,
            nano_cores: None,
            memory,
            processes,
            writable_layer,
            io_psi,
        }
    }

    /// Fills in CPU rates from the previous samples and keeps these.
    fn remember(&self, targets: &[Target], mut samples: Vec<Sample>) -> Vec<Sample> {
        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        for (target, sample) in targets.iter().zip(samples.iter_mut()) {
            let Some(cpu) = sample.cpu else {
                previous.remove(&target.id);
                continue;
            };
            let current = Previous {
                usage_ns: cpu.usage_ns,
                at_ns: sample.at_ns,
                nano_cores: None,
            };
            match previous.get(&target.id).copied() {
                Some(last) if sample.at_ns - last.at_ns < MIN_RATE_WINDOW_NS => {
                    sample.nano_cores = last.nano_cores;
                }
                Some(last) => {
                    sample.nano_cores =
                        parse::nano_cores(last.usage_ns, last.at_ns, cpu.usage_ns, sample.at_ns);
                    previous.insert(
                        target.id.clone(),
                        Previous {
                            nano_cores: sample.nano_cores,
                            ..current
                        },
                    );
                }
                None => {
                    previous.insert(target.id.clone(), current);
                }
            }
        }
        if previous.len() > MAX_PREVIOUS / 2 {
            let now = crate::store::now_nanos();
            previous.retain(|_, p| now - p.at_ns < FORGET_AFTER_NS);
            if previous.len() > MAX_PREVIOUS {
                previous.clear();
            }
        }
        samples
    }
}

impl Default for StatsCollector {
    fn default() -> Self {
        Self::new()
    }
}

/// A stats file's text; `None` when it cannot be read (the cgroup is gone,
/// the controller or the kernel feature is missing).
fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
pub(crate) fn set_fixture(dir: &Path, file: &str, content: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(file), content).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hybrid(base: &Path) -> Hierarchies {
        let b = base.display();
        Hierarchies::from_mountinfo(&format!(
            "32 31 0:29 / {b}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / {b}/memory rw - cgroup cgroup rw,memory\n\
             39 31 0:36 / {b}/pids rw - cgroup cgroup rw,pids\n\
             41 31 0:38 / {b}/unified rw - cgroup2 cgroup2 rw\n"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn reads_a_v1_cgroup_and_computes_the_rate_from_the_previous_sample() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let collector = Arc::new(StatsCollector::with_hierarchies(Some(hybrid(base))));
        let cpu = base.join("cpu,cpuacct/pod/c1");
        set_fixture(&cpu, "cpuacct.usage", "1000\n");
        set_fixture(
            &base.join("memory/pod/c1"),
            "memory.usage_in_bytes",
            "4096\n",
        );
        set_fixture(&base.join("pids/pod/c1"), "pids.current", "3\n");
        let target = Target {
            id: "c1".into(),
            cgroup: "/pod/c1".into(),
            writable_layer: None,
        };
        let missing = Target {
            id: "gone".into(),
            cgroup: "/pod/gone".into(),
            writable_layer: Some(base.join("nothing")),
        };
        let first = collector.collect(vec![target.clone(), missing]).await;
        assert_eq!(first[0].cpu.unwrap().usage_ns, 1000);
        assert_eq!(first[0].nano_cores, None, "no previous sample");
        assert_eq!(first[0].memory.unwrap().usage, 4096);
        assert_eq!(first[0].processes, Some(3));
        assert_eq!(
            (
                first[1].cpu,
                first[1].memory,
                first[1].processes,
                first[1].writable_layer
            ),
            (None, None, None, None)
        );

        // A sample taken as if 2 s earlier, half a core since.
        collector.previous.lock().unwrap().insert(
            "c1".into(),
            Previous {
                usage_ns: 0,
                at_ns: crate::store::now_nanos() - 2_000_000_000,
                nano_cores: None,
            },
        );
        set_fixture(&cpu, "cpuacct.usage", "1000000000\n");
        let second = collector.collect(vec![target]).await;
        let rate = second[0].nano_cores.unwrap();
        assert!((450_000_000..=500_000_000).contains(&rate), "{rate}");
    }

    #[tokio::test]
    async fn reads_io_pressure_on_a_v2_host_only() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let v2 = Hierarchies::from_mountinfo(&format!(
            "30 25 0:26 / {} rw - cgroup2 cgroup2 rw\n",
            base.display()
        ))
        .unwrap();
        let dir = base.join("pod/c1");
        set_fixture(&dir, "cpu.stat", "usage_usec 5\n");
        set_fixture(
            &dir,
            "io.pressure",
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=42\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        );
        let target = Target {
            id: "c1".into(),
            cgroup: "/pod/c1".into(),
            writable_layer: None,
        };
        let collector = Arc::new(StatsCollector::with_hierarchies(Some(v2)));
        let sample = collector.collect(vec![target.clone()]).await.remove(0);
        let psi = sample.io_psi.expect("io.pressure read");
        assert_eq!(psi.some.unwrap().total_us, 42);
        assert_eq!(psi.full.unwrap().total_us, 7);

        // On a hybrid host blkio is v1, which has no PSI: the same file
        // in the empty v2 hierarchy is not read.
        let hybrid_base = base.join("hybrid");
        set_fixture(
            &hybrid_base.join("unified/pod/c1"),
            "io.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n",
        );
        let hybrid = Hierarchies::from_mountinfo(&format!(
            "33 25 0:29 / {b}/blkio rw - cgroup cgroup rw,blkio\n\
             34 25 0:30 / {b}/unified rw - cgroup2 cgroup2 rw\n",
            b = hybrid_base.display()
        ))
        .unwrap();
        let collector = Arc::new(StatsCollector::with_hierarchies(Some(hybrid)));
        assert_eq!(collector.collect(vec![target]).await[0].io_psi, None);
    }

    #[test]
    fn a_pod_without_its_own_cgroup_sums_its_containers() {
        let a = Sample {
            cpu: Some(CpuUsage {
                usage_ns: 5,
                psi: None,
            }),
            memory: Some(MemoryUsage {
                usage: 10,
                working_set: 7,
                ..Default::default()
            }),
            processes: Some(2),
            ..Default::default()
        };
        let total = Sample::sum(9, [&a, &a, &Sample::default()]);
        assert_eq!(total.at_ns, 9);
        assert_eq!(total.cpu.unwrap().usage_ns, 10);
        assert_eq!(total.memory.unwrap().working_set, 14);
        assert_eq!(total.processes, Some(4));
    }
}
