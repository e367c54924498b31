//! cgroup v2 readers: one directory for every controller.

use std::path::Path;

use super::parse::{
    parse_flat_keyed, parse_limit, parse_pressure, parse_single_value, working_set,
};
use super::{read, CpuUsage, MemoryUsage};

/// `cpu.stat` `usage_usec`, and `cpu.pressure` where the kernel has PSI.
pub fn cpu(dir: &Path) -> Option<CpuUsage> {
    let text = read(&dir.join("cpu.stat"))?;
    let usage_us = *parse_flat_keyed(&text).get("usage_usec")?;
    Some(CpuUsage {
        usage_ns: usage_us.saturating_mul(1000),
        psi: read(&dir.join("cpu.pressure")).map(|t| parse_pressure(&t)),
    })
}

/// `memory.current`, `memory.stat` (not prefixed: v2 counters are
/// hierarchical), `memory.max` and `memory.swap.*`.
pub fn memory(dir: &Path) -> Option<MemoryUsage> {
    let usage = parse_single_value(&read(&dir.join("memory.current"))?)?;
    let stat_text = read(&dir.join("memory.stat")).unwrap_or_default();
    let stat = parse_flat_keyed(&stat_text);
    let key = |name: &str| stat.get(name).copied().unwrap_or(0);
    Some(MemoryUsage {
        usage,
        working_set: working_set(usage, key("inactive_file")),
        rss: key("anon"),
        limit: read(&dir.join("memory.max")).and_then(|t| parse_limit(&t)),
        page_faults: key("pgfault"),
        major_page_faults: key("pgmajfault"),
        swap_usage: read(&dir.join("memory.swap.current")).and_then(|t| parse_single_value(&t)),
        swap_limit: read(&dir.join("memory.swap.max")).and_then(|t| parse_limit(&t)),
        psi: read(&dir.join("memory.pressure")).map(|t| parse_pressure(&t)),
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
        set_fixture(
            dir,
            "cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
        );
        set_fixture(
            dir,
            "cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=42\n",
        );
        set_fixture(dir, "memory.current", "10485760\n");
        set_fixture(
            dir,
            "memory.stat",
            "anon 6291456\nfile 4194304\ninactive_file 1048576\npgfault 10\npgmajfault 1\n",
        );
        set_fixture(dir, "memory.max", "max\n");
        set_fixture(dir, "memory.swap.current", "4096\n");
        set_fixture(dir, "memory.swap.max", "max\n");
        let c = cpu(dir).unwrap();
        assert_eq!(c.usage_ns, 2_500_000);
        assert_eq!(c.psi.unwrap().some.unwrap().total_us, 42);
        let m = memory(dir).unwrap();
        assert_eq!(
            (m.usage, m.working_set, m.rss),
            (10 << 20, 9 << 20, 6 << 20)
        );
        assert_eq!((m.page_faults, m.major_page_faults), (10, 1));
        assert_eq!(
            (m.limit, m.swap_usage, m.swap_limit),
            (None, Some(4096), None)
        );
        assert!(m.psi.is_none());

        set_fixture(dir, "memory.max", "33554432\n");
        assert_eq!(memory(dir).unwrap().limit, Some(32 << 20));
    }
}
