//! cgroup v1 readers: one directory per controller.

use std::path::Path;

use super::parse::{parse_flat_keyed, parse_limit, parse_single_value, working_set};
use super::{read, CpuUsage, MemoryUsage};

/// `cpuacct.usage`: nanoseconds, all CPUs.
pub fn cpu(cpuacct: &Path) -> Option<CpuUsage> {
    let usage_ns = parse_single_value(&read(&cpuacct.join("cpuacct.usage"))?)?;
    Some(CpuUsage {
        usage_ns,
        psi: None,
    })
}

/// `memory.usage_in_bytes` and the hierarchical (`total_`) counters of
/// `memory.stat`; swap from `memory.memsw.*` when swap accounting is on.
pub fn memory(dir: &Path) -> Option<MemoryUsage> {
    let usage = parse_single_value(&read(&dir.join("memory.usage_in_bytes"))?)?;
    let stat_text = read(&dir.join("memory.stat")).unwrap_or_default();
    let stat = parse_flat_keyed(&stat_text);
    let key = |name: &str| stat.get(name).copied().unwrap_or(0);
    let limit = read(&dir.join("memory.limit_in_bytes")).and_then(|t| parse_limit(&t));
    let memsw_usage =
        read(&dir.join("memory.memsw.usage_in_bytes")).and_then(|t| parse_single_value(&t));
    // Without swap accounting neither memsw file exists: one failed open.
    let memsw_limit = memsw_usage
        .and_then(|_| read(&dir.join("memory.memsw.limit_in_bytes")).and_then(|t| parse_limit(&t)));
    Some(MemoryUsage {
        usage,
        working_set: working_set(usage, key("total_inactive_file")),
        rss: key("total_rss"),
        limit,
        page_faults: key("total_pgfault"),
        major_page_faults: key("total_pgmajfault"),
        // memsw counts memory and swap together.
        swap_usage: memsw_usage.map(|both| both.saturating_sub(usage)),
        swap_limit: memsw_limit
            .zip(limit)
            .map(|(both, mem)| both.saturating_sub(mem)),
        psi: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::set_fixture;

    #[test]
    fn reads_memory_and_cpu() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        set_fixture(dir, "cpuacct.usage", "123456789\n");
        set_fixture(dir, "memory.usage_in_bytes", "10485760\n");
        set_fixture(
            dir,
            "memory.stat",
            "cache 999\nrss 1\ntotal_cache 4194304\ntotal_rss 6291456\n\
             total_inactive_file 2097152\ntotal_pgfault 77\ntotal_pgmajfault 3\n",
        );
        set_fixture(dir, "memory.limit_in_bytes", "9223372036854771712\n");
        assert_eq!(cpu(dir).unwrap().usage_ns, 123456789);
        let m = memory(dir).unwrap();
        assert_eq!(m.usage, 10 << 20);
        assert_eq!(m.working_set, 8 << 20);
        assert_eq!(m.rss, 6 << 20);
        assert_eq!((m.page_faults, m.major_page_faults), (77, 3));
        assert_eq!(m.limit, None);
        assert_eq!(m.swap_usage, None);

        set_fixture(dir, "memory.limit_in_bytes", "16777216\n");
        set_fixture(dir, "memory.memsw.usage_in_bytes", "11534336\n");
        set_fixture(dir, "memory.memsw.limit_in_bytes", "33554432\n");
        let m = memory(dir).unwrap();
        assert_eq!(m.limit, Some(16 << 20));
        assert_eq!(m.swap_usage, Some(1 << 20));
        assert_eq!(m.swap_limit, Some(16 << 20));
    }

    #[test]
    fn a_missing_cgroup_reads_as_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(cpu(&tmp.path().join("gone")).is_none());
        assert!(memory(&tmp.path().join("gone")).is_none());
    }
}
