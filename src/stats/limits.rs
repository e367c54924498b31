//! The limits a cgroup enforces, read back from its files on v1 (one
//! directory per controller) and v2 (one directory): what proves that an
//! UpdateContainerResources reached the kernel, whichever version the
//! runtime drives.

use std::path::Path;

use super::parse::{parse_limit, parse_single_value};
use super::read;
use crate::cgroup::{Controller, Hierarchies, Version};

/// `None` means no limit (or no such file). Memory figures are bytes and
/// `memory_swap_limit` counts memory plus swap, as OCI and CRI do (v2's
/// `memory.swap.max` counts swap alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnforcedLimits {
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: Option<u64>,
    /// v1 `cpu.shares`.
    pub cpu_shares: Option<u64>,
    /// v2 `cpu.weight` (runc derives it from the shares: [`weight_of_shares`]).
    pub cpu_weight: Option<u64>,
    pub memory_limit: Option<u64>,
    pub memory_swap_limit: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_max: Option<u64>,
}

/// The limits of `cgroup` (a path relative to the hierarchies' roots).
pub fn enforced(hierarchies: &Hierarchies, cgroup: &Path) -> EnforcedLimits {
    let mut limits = EnforcedLimits::default();
    if let Some(dir) = hierarchies.locate(Controller::Cpu, cgroup) {
        match dir.version {
            Version::V1 => v1_cpu(&dir.path, &mut limits),
            Version::V2 => v2_cpu(&dir.path, &mut limits),
        }
    }
    if let Some(dir) = hierarchies.locate(Controller::Memory, cgroup) {
        match dir.version {
            Version::V1 => v1_memory(&dir.path, &mut limits),
            Version::V2 => v2_memory(&dir.path, &mut limits),
        }
    }
    if let Some(dir) = hierarchies.locate(Controller::Cpuset, cgroup) {
        // Same names on both versions (v1 without the `cpuset.` prefix
        // only under the noprefix option, which nothing uses any more).
        let list = |file: &str| read(&dir.path.join(file)).map(|t| t.trim().to_string());
        limits.cpuset_cpus = list("cpuset.cpus");
        limits.cpuset_mems = list("cpuset.mems");
    }
    if let Some(dir) = hierarchies.locate(Controller::Pids, cgroup) {
        limits.pids_max = read(&dir.path.join("pids.max")).and_then(|t| parse_single_value(&t));
    }
    limits
}

/// runc's mapping of v1 shares [2, 262144] onto v2 weights [1, 10000].
pub fn weight_of_shares(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

fn v1_cpu(dir: &Path, limits: &mut EnforcedLimits) {
    let value = |file: &str| read(&dir.join(file)).and_then(|t| parse_single_value(&t));
    // `cpu.cfs_quota_us` is -1 without a quota: not a u64, so None.
    limits.cpu_quota_us = value("cpu.cfs_quota_us");
    limits.cpu_period_us = value("cpu.cfs_period_us");
    limits.cpu_shares = value("cpu.shares");
}

/// `cpu.max` is `<quota|max> <period>`.
fn v2_cpu(dir: &Path, limits: &mut EnforcedLimits) {
    if let Some(text) = read(&dir.join("cpu.max")) {
        let mut fields = text.split_whitespace();
        limits.cpu_quota_us = fields.next().and_then(|q| q.parse().ok());
        limits.cpu_period_us = fields.next().and_then(|p| p.parse().ok());
    }
    limits.cpu_weight = read(&dir.join("cpu.weight")).and_then(|t| parse_single_value(&t));
}

fn v1_memory(dir: &Path, limits: &mut EnforcedLimits) {
    let limit = |file: &str| read(&dir.join(file)).and_then(|t| parse_limit(&t));
    limits.memory_limit = limit("memory.limit_in_bytes");
    limits.memory_swap_limit = limit("memory.memsw.limit_in_bytes");
}

fn v2_memory(dir: &Path, limits: &mut EnforcedLimits) {
    let limit = |file: &str| read(&dir.join(file)).and_then(|t| parse_limit(&t));
    limits.memory_limit = limit("memory.max");
    let swap = limit("memory.swap.max");
    limits.memory_swap_limit = limits
        .memory_limit
        .zip(swap)
        .map(|(memory, swap)| memory.saturating_add(swap));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::set_fixture;

    fn mountinfo(base: &Path, v1: bool) -> Hierarchies {
        let b = base.display();
        let text = if v1 {
            format!(
                "30 25 0:26 / {b}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                 31 25 0:27 / {b}/memory rw - cgroup cgroup rw,memory\n\
                 32 25 0:28 / {b}/cpuset rw - cgroup cgroup rw,cpuset\n\
                 33 25 0:29 / {b}/pids rw - cgroup cgroup rw,pids\n\
                 34 25 0:30 / {b}/unified rw - cgroup2 cgroup2 rw\n"
            )
        } else {
            format!("30 25 0:26 / {b} rw - cgroup2 cgroup2 rw\n")
        };
        Hierarchies::from_mountinfo(&text).unwrap()
    }

    #[test]
    fn reads_v2_limits_in_oci_terms() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pod/c1");
        set_fixture(&dir, "cpu.max", "20000 100000\n");
        set_fixture(&dir, "cpu.weight", "20\n");
        set_fixture(&dir, "memory.max", "134217728\n");
        set_fixture(&dir, "memory.swap.max", "0\n");
        set_fixture(&dir, "cpuset.cpus", "0-1\n");
        set_fixture(&dir, "cpuset.mems", "\n");
        set_fixture(&dir, "pids.max", "max\n");
        let limits = enforced(&mountinfo(tmp.path(), false), Path::new("/pod/c1"));
        assert_eq!(
            limits,
            EnforcedLimits {
                cpu_quota_us: Some(20_000),
                cpu_period_us: Some(100_000),
                cpu_shares: None,
                cpu_weight: Some(20),
                memory_limit: Some(128 << 20),
                memory_swap_limit: Some(128 << 20),
                cpuset_cpus: Some("0-1".into()),
                cpuset_mems: Some(String::new()),
                pids_max: None,
            }
        );
        set_fixture(&dir, "cpu.max", "max 100000\n");
        set_fixture(&dir, "memory.max", "max\n");
        let unlimited = enforced(&mountinfo(tmp.path(), false), Path::new("/pod/c1"));
        assert_eq!(unlimited.cpu_quota_us, None);
        assert_eq!(unlimited.memory_limit, None);
        assert_eq!(unlimited.memory_swap_limit, None);
    }

    #[test]
    fn reads_v1_limits_from_each_controller_on_a_hybrid_host() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let cpu = base.join("cpu,cpuacct/pod/c1");
        set_fixture(&cpu, "cpu.cfs_quota_us", "-1\n");
        set_fixture(&cpu, "cpu.cfs_period_us", "100000\n");
        set_fixture(&cpu, "cpu.shares", "512\n");
        let memory = base.join("memory/pod/c1");
        set_fixture(&memory, "memory.limit_in_bytes", "67108864\n");
        set_fixture(
            &memory,
            "memory.memsw.limit_in_bytes",
            "9223372036854771712\n",
        );
        set_fixture(&base.join("cpuset/pod/c1"), "cpuset.cpus", "0\n");
        set_fixture(&base.join("pids/pod/c1"), "pids.max", "100\n");
        // The empty v2 hierarchy of a hybrid host must not be read.
        set_fixture(&base.join("unified/pod/c1"), "memory.max", "1\n");
        let limits = enforced(&mountinfo(base, true), Path::new("/pod/c1"));
        assert_eq!(limits.cpu_quota_us, None, "-1 is no quota");
        assert_eq!(limits.cpu_period_us, Some(100_000));
        assert_eq!(limits.cpu_shares, Some(512));
        assert_eq!(limits.cpu_weight, None);
        assert_eq!(limits.memory_limit, Some(64 << 20));
        assert_eq!(limits.memory_swap_limit, None, "the v1 'unlimited' value");
        assert_eq!(limits.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(limits.pids_max, Some(100));
    }

    #[test]
    fn weights_follow_runc() {
        assert_eq!(weight_of_shares(2), 1);
        assert_eq!(weight_of_shares(1024), 39);
        assert_eq!(weight_of_shares(262_144), 10_000);
    }
}
