//! The `linux` section pieces that need no I/O: namespaces, cgroup resources,
//! sysctls and the masked/read-only `/proc` and `/sys` paths.

use std::collections::HashMap;

use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory, LinuxNamespace,
    LinuxNamespaceType, LinuxResources,
};

use super::{clean_absolute, HostFeatures, NamespacePath, Namespaces, SpecError};
use crate::api;

const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// IPC-namespaced sysctls outside `fs.mqueue.*` (the list runc validates).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// `New` namespaces are listed without a path, `Join` ones with it, `Host`
/// ones not at all. The mount namespace is always new; a cgroup namespace
/// hides the host hierarchy on cgroup v2 (containerd does the same, and skips
/// it on v1 and for privileged containers).
pub fn namespaces(requested: &Namespaces, cgroup_namespace: bool) -> Vec<LinuxNamespace> {
    let shared = [
        (LinuxNamespaceType::Pid, &requested.pid),
        (LinuxNamespaceType::Ipc, &requested.ipc),
        (LinuxNamespaceType::Uts, &requested.uts),
        (LinuxNamespaceType::Network, &requested.network),
    ];
    let mut out: Vec<LinuxNamespace> = shared
        .into_iter()
        .filter_map(|(typ, path)| match path {
            NamespacePath::Host => None,
            NamespacePath::New => Some(namespace(typ, None)),
            NamespacePath::Join(path) => Some(namespace(typ, Some(path.clone()))),
        })
        .collect();
    out.push(namespace(LinuxNamespaceType::Mount, None));
    if cgroup_namespace {
        out.push(namespace(LinuxNamespaceType::Cgroup, None));
    }
    out
}

fn namespace(typ: LinuxNamespaceType, path: Option<std::path::PathBuf>) -> LinuxNamespace {
    let mut namespace = LinuxNamespace::default();
    namespace.set_typ(typ);
    namespace.set_path(path);
    namespace
}

/// CRI resources as OCI ones, as containerd maps them. Zero means "not set".
/// Swap follows the memory limit when only the limit is given (so the
/// container cannot swap), and is left out where the kernel has no swap
/// accounting. Hugepage limits are dropped when the host has no hugetlb
/// controller (containerd's default `tolerate_missing_hugetlb_controller`).
pub fn resources(
    requested: Option<&api::LinuxContainerResources>,
    host: &HostFeatures,
    device_rules: Vec<LinuxDeviceCgroup>,
) -> Result<LinuxResources, SpecError> {
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(device_rules));
    let Some(requested) = requested else {
        return Ok(resources);
    };

    let mut cpu = LinuxCpu::default();
    if requested.cpu_period != 0 {
        cpu.set_period(Some(in_range(
            "cpu_period",
            requested.cpu_period,
            CPU_PERIOD_US,
        )?));
    }
    if requested.cpu_quota != 0 {
        cpu.set_quota(Some(cpu_quota(requested.cpu_quota)?));
    }
    if requested.cpu_shares != 0 {
        cpu.set_shares(Some(in_range(
            "cpu_shares",
            requested.cpu_shares,
            CPU_SHARES,
        )?));
    }
    if !requested.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(cpu_list("cpuset_cpus", &requested.cpuset_cpus)?));
    }
    if !requested.cpuset_mems.is_empty() {
        cpu.set_mems(Some(cpu_list("cpuset_mems", &requested.cpuset_mems)?));
    }
    if cpu != LinuxCpu::default() {
        resources.set_cpu(Some(cpu));
    }

    let mut memory = LinuxMemory::default();
    if requested.memory_limit_in_bytes != 0 {
        non_negative("memory_limit_in_bytes", requested.memory_limit_in_bytes)?;
        memory.set_limit(Some(requested.memory_limit_in_bytes));
    }
    if host.swap_accounting {
        let swap = match requested.memory_swap_limit_in_bytes {
            0 => requested.memory_limit_in_bytes,
            swap if swap < -1 => {
                return Err(invalid_value(
                    "memory_swap_limit_in_bytes",
                    swap,
                    "must be -1 (unlimited) or a byte count",
                ))
            }
            swap => swap,
        };
        if swap != 0 {
            memory.set_swap(Some(swap));
        }
    }
    check_swap(&memory)?;
    if memory != LinuxMemory::default() {
        resources.set_memory(Some(memory));
    }

    if !host.hugepage_sizes.is_empty() && !requested.hugepage_limits.is_empty() {
        let limits = requested
            .hugepage_limits
            .iter()
            .map(|limit| hugepage_limit(limit, &host.hugepage_sizes))
            .collect::<Result<Vec<_>, _>>()?;
        resources.set_hugepage_limits(Some(limits));
    }

    if !requested.unified.is_empty() {
        if !host.cgroup_v2 {
            return Err(SpecError::InvalidValue {
                field: "unified resources",
                value: requested
                    .unified
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
                reason: "they need cgroup v2, and this host's OCI runtime uses cgroup v1"
                    .to_string(),
            });
        }
        resources.set_unified(Some(requested.unified.clone()));
    }
    Ok(resources)
}

fn hugepage_limit(
    limit: &api::HugepageLimit,
    host_sizes: &[String],
) -> Result<LinuxHugepageLimit, SpecError> {
    if !host_sizes.contains(&limit.page_size) {
        return Err(SpecError::InvalidValue {
            field: "hugepage page_size",
            value: limit.page_size.clone(),
            reason: format!("this host supports {}", host_sizes.join(", ")),
        });
    }
    let bytes = i64::try_from(limit.limit)
        .map_err(|_| invalid_value("hugepage limit", limit.limit, "too large"))?;
    let mut out = LinuxHugepageLimit::default();
    out.set_page_size(limit.page_size.clone());
    out.set_limit(bytes);
    Ok(out)
}

/// What the kernel accepts for `cpu.cfs_period_us` (1 ms to 1 s).
const CPU_PERIOD_US: std::ops::RangeInclusive<i64> = 1_000..=1_000_000;
/// What cgroup v1 accepts for `cpu.shares` (runc maps it onto v2's weight).
const CPU_SHARES: std::ops::RangeInclusive<i64> = 2..=262_144;
/// The kernel's smallest CFS quota, in microseconds.
const MIN_CPU_QUOTA_US: i64 = 1_000;
/// A cpuset list longer than this is not a list of this machine's CPUs.
const MAX_CPU_LIST_LEN: usize = 4096;

/// Values the kernel would refuse are refused here, before the runtime
/// half-applies an update and fails with an opaque error.
fn in_range(
    field: &'static str,
    value: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<u64, SpecError> {
    if !range.contains(&value) {
        let reason = format!("must be between {} and {}", range.start(), range.end());
        return Err(invalid_value(field, value, &reason));
    }
    non_negative(field, value)
}

/// The swap limit counts memory plus swap: below the memory limit the
/// kernel refuses it.
pub(super) fn check_swap(memory: &LinuxMemory) -> Result<(), SpecError> {
    match (memory.limit(), memory.swap()) {
        (Some(limit), Some(swap)) if limit > 0 && swap != -1 && swap < limit => Err(invalid_value(
            "memory_swap_limit_in_bytes",
            swap,
            &format!("must be -1 or at least the memory limit ({limit})"),
        )),
        _ => Ok(()),
    }
}

/// -1 (no limit) or at least the kernel's 1 ms.
fn cpu_quota(value: i64) -> Result<i64, SpecError> {
    if value == -1 || value >= MIN_CPU_QUOTA_US {
        return Ok(value);
    }
    Err(invalid_value(
        "cpu_quota",
        value,
        "must be -1 (no limit) or at least 1000 microseconds",
    ))
}

/// A kernel list such as `0-3,7`: numbers and ascending ranges.
fn cpu_list(field: &'static str, list: &str) -> Result<String, SpecError> {
    let well_formed = list.len() <= MAX_CPU_LIST_LEN
        && list.split(',').all(|item| {
            let mut bounds = item.splitn(2, '-').map(|n| {
                (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| n.parse::<u32>().ok())
                    .flatten()
            });
            match (bounds.next().flatten(), bounds.next()) {
                (Some(_), None) => true,
                (Some(low), Some(Some(high))) => low <= high,
                _ => false,
            }
        });
    if !well_formed {
        return Err(invalid_value(
            field,
            list,
            "must be a list such as 0-3,7 (numbers and ascending ranges)",
        ));
    }
    Ok(list.to_string())
}

fn non_negative(field: &'static str, value: i64) -> Result<u64, SpecError> {
    u64::try_from(value).map_err(|_| invalid_value(field, value, "must not be negative"))
}

fn invalid_value(field: &'static str, value: impl ToString, reason: &str) -> SpecError {
    SpecError::InvalidValue {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The pod's sysctls for the container. Only sysctls that belong to a
/// namespace the pod owns are accepted: writing a host-wide one, or a
/// network one in a host-network pod, would change the node.
pub fn sysctls(
    requested: &HashMap<String, String>,
    namespaces: &Namespaces,
) -> Result<HashMap<String, String>, SpecError> {
    let mut out = HashMap::with_capacity(requested.len());
    for (name, value) in requested {
        let name = dotted_sysctl_name(name);
        let (owner, namespace) = if name.starts_with("net.") {
            ("network", &namespaces.network)
        } else if IPC_SYSCTLS.contains(&name.as_str()) || name.starts_with("fs.mqueue.") {
            ("IPC", &namespaces.ipc)
        } else if name == "kernel.domainname" {
            ("UTS", &namespaces.uts)
        } else {
            return Err(SpecError::Sysctl {
                name,
                reason: "it is not namespaced, so setting it would change the whole node"
                    .to_string(),
            });
        };
        if matches!(namespace, NamespacePath::Host) {
            return Err(SpecError::Sysctl {
                name,
                reason: format!("the pod shares the host's {owner} namespace"),
            });
        }
        out.insert(name, value.clone());
    }
    Ok(out)
}

/// Kubernetes accepts `net/ipv4/conf/eth0.100/rp_filter`, where `/`
/// separates and `.` belongs to a name; the kernel form swaps them.
fn dotted_sysctl_name(name: &str) -> String {
    if !name.contains('/') {
        return name.to_string();
    }
    name.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            other => other,
        })
        .collect()
}

/// Masked and read-only paths: the CRI lists when given, containerd's
/// defaults otherwise, none for a privileged container.
///
/// An empty CRI list means "use the defaults": proto3 cannot tell an empty
/// list from an absent one, and kubelet sends the defaults anyway unless a
/// pod asks for an unmasked /proc (which needs user namespaces, unsupported).
pub fn protected_paths(
    security: Option<&api::LinuxContainerSecurityContext>,
    privileged: bool,
) -> Result<(Vec<String>, Vec<String>), SpecError> {
    if privileged {
        return Ok((Vec::new(), Vec::new()));
    }
    let choose = |requested: Option<&Vec<String>>, defaults: &[&str]| match requested {
        Some(paths) if !paths.is_empty() => paths
            .iter()
            .map(|path| {
                clean_absolute("masked or read-only", path).map(|p| p.display().to_string())
            })
            .collect::<Result<Vec<_>, _>>(),
        _ => Ok(defaults.iter().map(|path| path.to_string()).collect()),
    };
    Ok((
        choose(security.map(|s| &s.masked_paths), &DEFAULT_MASKED_PATHS)?,
        choose(security.map(|s| &s.readonly_paths), &DEFAULT_READONLY_PATHS)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn host(cgroup_v2: bool) -> HostFeatures {
        HostFeatures {
            cgroup_v2,
            swap_accounting: true,
            hugepage_sizes: vec!["2MB".into(), "1GB".into()],
            ..HostFeatures::unconfined_for_tests()
        }
    }

    fn pod_namespaces() -> Namespaces {
        Namespaces {
            network: NamespacePath::Join("/run/wharf/netns/pod".into()),
            ipc: NamespacePath::Join("/run/wharf/ipc/pod".into()),
            uts: NamespacePath::Join("/run/wharf/uts/pod".into()),
            pid: NamespacePath::New,
        }
    }

    #[test]
    fn namespaces_host_new_and_join() {
        let requested = Namespaces {
            network: NamespacePath::Host,
            ipc: NamespacePath::Join("/pinned/ipc".into()),
            uts: NamespacePath::New,
            pid: NamespacePath::Join("/proc/42/ns/pid".into()),
        };
        let listed: Vec<(LinuxNamespaceType, Option<PathBuf>)> = namespaces(&requested, false)
            .into_iter()
            .map(|ns| (ns.typ(), ns.path().clone()))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    LinuxNamespaceType::Pid,
                    Some(PathBuf::from("/proc/42/ns/pid"))
                ),
                (LinuxNamespaceType::Ipc, Some(PathBuf::from("/pinned/ipc"))),
                (LinuxNamespaceType::Uts, None),
                (LinuxNamespaceType::Mount, None),
            ]
        );
        let with_cgroup = namespaces(&requested, true);
        assert_eq!(
            with_cgroup.last().unwrap().typ(),
            LinuxNamespaceType::Cgroup
        );
    }

    #[test]
    fn resources_map_like_containerd() {
        let requested = api::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![api::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            ..Default::default()
        };
        let out = resources(Some(&requested), &host(false), vec![]).unwrap();
        let cpu = out.cpu().clone().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let memory = out.memory().unwrap();
        assert_eq!(memory.limit(), Some(64 << 20));
        assert_eq!(memory.swap(), Some(64 << 20), "swap follows the limit");
        let hugepages = out.hugepage_limits().clone().unwrap();
        assert_eq!(hugepages[0].page_size(), "2MB");
        assert_eq!(hugepages[0].limit(), 4 << 20);
        assert_eq!(out.unified(), &None);
    }

    #[test]
    fn resources_edge_cases() {
        let none = resources(None, &host(false), vec![]).unwrap();
        assert_eq!(none.cpu(), &None);
        assert_eq!(none.memory(), &None);

        let swap = api::LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: 300,
            ..Default::default()
        };
        let out = resources(Some(&swap), &host(false), vec![]).unwrap();
        assert_eq!(out.memory().unwrap().swap(), Some(300));
        let no_swap_accounting = HostFeatures {
            swap_accounting: false,
            ..host(false)
        };
        let out = resources(Some(&swap), &no_swap_accounting, vec![]).unwrap();
        assert_eq!(out.memory().unwrap().swap(), None);

        let unified = api::LinuxContainerResources {
            unified: HashMap::from([("memory.high".to_string(), "1000000".to_string())]),
            ..Default::default()
        };
        let on_v2 = resources(Some(&unified), &host(true), vec![]).unwrap();
        assert_eq!(on_v2.unified().as_ref().unwrap()["memory.high"], "1000000");
        assert!(matches!(
            resources(Some(&unified), &host(false), vec![]),
            Err(SpecError::InvalidValue {
                field: "unified resources",
                ..
            })
        ));

        let odd_page = api::LinuxContainerResources {
            hugepage_limits: vec![api::HugepageLimit {
                page_size: "3MB".into(),
                limit: 1,
            }],
            ..Default::default()
        };
        assert!(resources(Some(&odd_page), &host(false), vec![]).is_err());
        let no_hugetlb = HostFeatures {
            hugepage_sizes: vec![],
            ..host(false)
        };
        let tolerated = resources(Some(&odd_page), &no_hugetlb, vec![]).unwrap();
        assert_eq!(tolerated.hugepage_limits(), &None);

        let negative = api::LinuxContainerResources {
            cpu_shares: -2,
            ..Default::default()
        };
        assert!(matches!(
            resources(Some(&negative), &host(false), vec![]),
            Err(SpecError::InvalidValue {
                field: "cpu_shares",
                ..
            })
        ));
    }

    #[test]
    fn sysctls_only_in_namespaces_the_pod_owns() {
        let requested = HashMap::from([
            (
                "net.ipv4.ip_local_port_range".to_string(),
                "1024 65000".to_string(),
            ),
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
            ("fs.mqueue.msg_max".to_string(), "20".to_string()),
            (
                "net/ipv4/conf/eth0.100/rp_filter".to_string(),
                "0".to_string(),
            ),
        ]);
        let out = sysctls(&requested, &pod_namespaces()).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(out["net.ipv4.conf.eth0/100.rp_filter"], "0");

        let host_wide = HashMap::from([("kernel.panic".to_string(), "1".to_string())]);
        assert!(matches!(
            sysctls(&host_wide, &pod_namespaces()),
            Err(SpecError::Sysctl { name, .. }) if name == "kernel.panic"
        ));
        let host_network = Namespaces {
            network: NamespacePath::Host,
            ..pod_namespaces()
        };
        let net = HashMap::from([("net.ipv4.tcp_syncookies".to_string(), "1".to_string())]);
        assert!(matches!(
            sysctls(&net, &host_network),
            Err(SpecError::Sysctl { reason, .. }) if reason.contains("network")
        ));
    }

    #[test]
    fn protected_paths_defaults_overrides_and_privileged() {
        let (masked, readonly) = protected_paths(None, false).unwrap();
        assert!(masked.contains(&"/proc/kcore".to_string()));
        assert!(readonly.contains(&"/proc/sys".to_string()));

        let custom = api::LinuxContainerSecurityContext {
            masked_paths: vec!["/proc/secret/".into()],
            readonly_paths: vec!["/proc/ro".into()],
            ..Default::default()
        };
        let (masked, readonly) = protected_paths(Some(&custom), false).unwrap();
        assert_eq!(masked, ["/proc/secret"]);
        assert_eq!(readonly, ["/proc/ro"]);

        assert_eq!(
            protected_paths(Some(&custom), true).unwrap(),
            (vec![], vec![])
        );

        let relative = api::LinuxContainerSecurityContext {
            masked_paths: vec!["proc/x".into()],
            ..Default::default()
        };
        assert!(protected_paths(Some(&relative), false).is_err());
    }
}
