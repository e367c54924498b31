//! What this host lets a container have, read once at daemon start.

use std::fs;
use std::path::Path;

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};

use super::capabilities::CapabilitySet;
use super::HostFeatures;

impl HostFeatures {
    /// Probes /proc and /sys of the running host.
    pub fn detect() -> HostFeatures {
        detect_in(Path::new("/proc"), Path::new("/sys"))
    }
}

fn detect_in(proc_root: &Path, sys_root: &Path) -> HostFeatures {
    let status = fs::read_to_string(proc_root.join("self/status")).unwrap_or_default();
    let capabilities = status_field(&status, "CapEff")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .map(|mask| CapabilitySet(mask & CapabilitySet::KNOWN.0))
        .unwrap_or_else(|| {
            tracing::warn!("cannot read this process's capabilities; assuming the default set");
            CapabilitySet::container_default()
        });
    // Without CAP_SYS_RESOURCE the kernel refuses an oom_score_adj below our own.
    let oom_score_adj_min = if capabilities.contains(oci_spec::runtime::Capability::SysResource) {
        -1000
    } else {
        fs::read_to_string(proc_root.join("self/oom_score_adj"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    };
    let cgroup_root = sys_root.join("fs/cgroup");
    let cgroup_v2 =
        statfs(&cgroup_root).is_ok_and(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC);
    let hugetlb_controller = if cgroup_v2 {
        fs::read_to_string(cgroup_root.join("cgroup.controllers"))
            .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "hugetlb"))
    } else {
        cgroup_root.join("hugetlb").is_dir()
    };
    let hugepage_sizes = if hugetlb_controller {
        hugepage_sizes(&sys_root.join("kernel/mm/hugepages"))
    } else {
        Vec::new()
    };
    let swap_accounting = if cgroup_v2 {
        fs::read_to_string(proc_root.join("self/cgroup"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("0::").map(str::to_string))
            })
            .is_some_and(|own| {
                cgroup_root
                    .join(own.trim_start_matches('/'))
                    .join("memory.swap.max")
                    .exists()
            })
    } else {
        cgroup_root
            .join("memory/memory.memsw.limit_in_bytes")
            .exists()
    };
    HostFeatures {
        oom_score_adj_min,
        apparmor: fs::read_to_string(sys_root.join("module/apparmor/parameters/enabled"))
            .is_ok_and(|enabled| enabled.starts_with('Y')),
        seccomp: status_field(&status, "Seccomp").is_some(),
        cgroup_v2,
        hugepage_sizes,
        capabilities,
        swap_accounting,
    }
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

/// `hugepages-2048kB` → `2MB`, the names of the hugetlb cgroup files.
fn hugepage_sizes(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<(u64, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let kib: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some((kib, format_kib(kib)))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().map(|(_, name)| name).collect()
}

fn format_kib(kib: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    let mut value = kib;
    let mut unit = 0;
    while value >= 1024 && value.is_multiple_of(1024) && unit + 1 < UNITS.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugepage_names_match_the_cgroup_files() {
        assert_eq!(format_kib(2048), "2MB");
        assert_eq!(format_kib(1_048_576), "1GB");
        assert_eq!(format_kib(64), "64KB");
    }

    #[test]
    fn detects_from_proc_and_sys() {
        let root = tempfile::tempdir().unwrap();
        let proc_root = root.path().join("proc");
        let sys_root = root.path().join("sys");
        fs::create_dir_all(proc_root.join("self")).unwrap();
        fs::write(
            proc_root.join("self/status"),
            "Name:\tx\nCapEff:\t000001fffeffffff\nSeccomp:\t0\n",
        )
        .unwrap();
        fs::write(proc_root.join("self/oom_score_adj"), "-500\n").unwrap();
        fs::create_dir_all(sys_root.join("fs/cgroup/hugetlb")).unwrap();
        fs::create_dir_all(sys_root.join("fs/cgroup/memory")).unwrap();
        fs::write(
            sys_root.join("fs/cgroup/memory/memory.memsw.limit_in_bytes"),
            "",
        )
        .unwrap();
        for size in ["hugepages-1048576kB", "hugepages-2048kB"] {
            fs::create_dir_all(sys_root.join("kernel/mm/hugepages").join(size)).unwrap();
        }
        fs::create_dir_all(sys_root.join("module/apparmor/parameters")).unwrap();
        fs::write(sys_root.join("module/apparmor/parameters/enabled"), "Y\n").unwrap();

        let host = detect_in(&proc_root, &sys_root);
        assert_eq!(host.capabilities, CapabilitySet(0x1fffeffffff));
        assert_eq!(
            host.oom_score_adj_min, -500,
            "no CAP_SYS_RESOURCE: our own value"
        );
        assert!(host.seccomp);
        assert!(host.apparmor);
        assert!(!host.cgroup_v2);
        assert_eq!(host.hugepage_sizes, ["2MB", "1GB"]);
        assert!(host.swap_accounting);
    }

    #[test]
    fn detects_this_host() {
        let host = HostFeatures::detect();
        assert!(host
            .capabilities
            .contains(oci_spec::runtime::Capability::Chown));
    }
}
