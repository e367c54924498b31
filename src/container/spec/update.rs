//! UpdateContainerResources as containerd does it: the request is laid over
//! the container's current resources (a zero or empty field keeps what is
//! there), and the result is both what the runtime applies and what
//! `ContainerStatus.resources` reports from then on.

use std::path::Path;

use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::{linux, HostFeatures, SpecError};
use crate::api;
use crate::stats::limits::EnforcedLimits;
use crate::store::StoreError;
use serde_json::Value;

/// The resources a new container's spec gets, without device rules (they
/// are fixed at creation and not the caller's to change): what the record
/// keeps as the container's current resources.
pub fn resources_at_create(
    config: &api::ContainerConfig,
    host: &HostFeatures,
) -> Result<LinuxResources, SpecError> {
    let requested = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    without_devices(linux::resources(requested, host, Vec::new())?)
}

/// `current` with `requested` laid over it, validated as a whole (a new
/// memory limit above the current swap limit is refused, as the kernel
/// would refuse it).
pub fn update_resources(
    current: Option<&LinuxResources>,
    requested: Option<&api::LinuxContainerResources>,
    host: &HostFeatures,
) -> Result<LinuxResources, SpecError> {
    let change = linux::resources(requested, host, Vec::new())?;
    let mut merged = current.cloned().unwrap_or_default();
    if let Some(change) = change.cpu() {
        let mut cpu = merged.cpu().clone().unwrap_or_default();
        merge_cpu(&mut cpu, change);
        merged.set_cpu(Some(cpu));
    }
    if let Some(change) = change.memory() {
        let mut memory = merged.memory().unwrap_or_default();
        if let Some(limit) = change.limit() {
            memory.set_limit(Some(limit));
        }
        if let Some(swap) = change.swap() {
            memory.set_swap(Some(swap));
        }
        linux::check_swap(&memory)?;
        merged.set_memory(Some(memory));
    }
    if let Some(change) = change.hugepage_limits() {
        let mut limits = merged.hugepage_limits().clone().unwrap_or_default();
        for limit in change {
            limits.retain(|l: &LinuxHugepageLimit| l.page_size() != limit.page_size());
            limits.push(limit.clone());
        }
        merged.set_hugepage_limits(Some(limits));
    }
    if let Some(change) = change.unified() {
        let mut unified = merged.unified().clone().unwrap_or_default();
        unified.extend(change.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged.set_unified(Some(unified));
    }
    without_devices(merged)
}

/// What puts the cgroup back as it was before `updated` was (partly)
/// written: `current`, plus, for each field the update set and `current`
/// leaves unset, the value the kernel enforced before (`before`): an unset
/// field would otherwise keep what runc wrote. Unlimited is -1 in OCI.
pub fn restoring(
    current: &LinuxResources,
    updated: &LinuxResources,
    before: &EnforcedLimits,
) -> LinuxResources {
    let mut out = current.clone();
    if let Some(new) = updated.cpu() {
        let mut cpu = out.cpu().clone().unwrap_or_default();
        if new.quota().is_some() && cpu.quota().is_none() {
            let quota = before.cpu_quota_us.and_then(|q| i64::try_from(q).ok());
            cpu.set_quota(Some(quota.unwrap_or(-1)));
        }
        if new.period().is_some() && cpu.period().is_none() {
            cpu.set_period(before.cpu_period_us);
        }
        if new.shares().is_some() && cpu.shares().is_none() {
            cpu.set_shares(before.cpu_shares);
        }
        if new.cpus().is_some() && cpu.cpus().is_none() {
            cpu.set_cpus(before.cpuset_cpus.clone().filter(|c| !c.is_empty()));
        }
        if new.mems().is_some() && cpu.mems().is_none() {
            cpu.set_mems(before.cpuset_mems.clone().filter(|m| !m.is_empty()));
        }
        out.set_cpu(Some(cpu));
    }
    if let Some(new) = updated.memory() {
        let mut memory = out.memory().unwrap_or_default();
        let bytes = |value: Option<u64>| value.and_then(|v| i64::try_from(v).ok()).unwrap_or(-1);
        if new.limit().is_some() && memory.limit().is_none() {
            memory.set_limit(Some(bytes(before.memory_limit)));
        }
        if new.swap().is_some() && memory.swap().is_none() {
            memory.set_swap(Some(bytes(before.memory_swap_limit)));
        }
        out.set_memory(Some(memory));
    }
    out
}

/// Lays `resources` (all but the device rules) into the bundle's
/// `config.json`, which stays the container's whole spec as containerd
/// keeps it (`crictl inspect` shows it as `runtimeSpec`); returns the file's
/// previous bytes, to put back if the runtime then refuses the update.
/// Fields this Wharf does not model are kept as they are. `None` when
/// there is no bundle (any more).
pub fn rewrite_bundle_resources(
    config_json: &Path,
    resources: &LinuxResources,
) -> Result<Option<Vec<u8>>, StoreError> {
    let previous = match std::fs::read(config_json) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::error::IoError::new("reading", config_json, e).into()),
    };
    let decode = |source| StoreError::Decode {
        path: config_json.to_path_buf(),
        source,
    };
    let mut spec: Value = serde_json::from_slice(&previous).map_err(decode)?;
    let Value::Object(new) = serde_json::to_value(resources).map_err(decode)? else {
        return Ok(Some(previous));
    };
    let Some(linux) = spec.get_mut("linux").and_then(Value::as_object_mut) else {
        return Ok(Some(previous));
    };
    let target = linux
        .entry("resources")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Value::Object(target) = target {
        for (key, value) in new.into_iter().filter(|(key, _)| key != "devices") {
            target.insert(key, value);
        }
    }
    crate::store::write_json_atomic(config_json, &spec)?;
    Ok(Some(previous))
}

fn merge_cpu(cpu: &mut LinuxCpu, change: &LinuxCpu) {
    if let Some(period) = change.period() {
        cpu.set_period(Some(period));
    }
    if let Some(quota) = change.quota() {
        cpu.set_quota(Some(quota));
    }
    if let Some(shares) = change.shares() {
        cpu.set_shares(Some(shares));
    }
    if change.cpus().is_some() {
        cpu.set_cpus(change.cpus().clone());
    }
    if change.mems().is_some() {
        cpu.set_mems(change.mems().clone());
    }
}

fn without_devices(mut resources: LinuxResources) -> Result<LinuxResources, SpecError> {
    resources.set_devices(None);
    Ok(resources)
}

/// OCI resources as `ContainerStatus.resources.linux` reports them
/// (containerd's `copyResourcesToStatus`); unset fields are zero.
pub fn cri_resources(
    resources: &LinuxResources,
    oom_score_adj: i64,
) -> api::LinuxContainerResources {
    let cpu = resources.cpu().clone().unwrap_or_default();
    let memory: LinuxMemory = resources.memory().unwrap_or_default();
    let signed = |value: Option<u64>| value.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX));
    api::LinuxContainerResources {
        cpu_period: signed(cpu.period()),
        cpu_quota: cpu.quota().unwrap_or(0),
        cpu_shares: signed(cpu.shares()),
        memory_limit_in_bytes: memory.limit().unwrap_or(0),
        memory_swap_limit_in_bytes: memory.swap().unwrap_or(0),
        oom_score_adj,
        cpuset_cpus: cpu.cpus().clone().unwrap_or_default(),
        cpuset_mems: cpu.mems().clone().unwrap_or_default(),
        hugepage_limits: resources
            .hugepage_limits()
            .iter()
            .flatten()
            .map(|limit| api::HugepageLimit {
                page_size: limit.page_size().clone(),
                limit: u64::try_from(limit.limit()).unwrap_or(0),
            })
            .collect(),
        unified: resources.unified().clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostFeatures {
        HostFeatures {
            cgroup_v2: true,
            swap_accounting: true,
            hugepage_sizes: vec!["2MB".into()],
            ..HostFeatures::unconfined_for_tests()
        }
    }

    fn created() -> LinuxResources {
        let config = api::ContainerConfig {
            linux: Some(api::LinuxContainerConfig {
                resources: Some(api::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: 50_000,
                    cpu_shares: 512,
                    memory_limit_in_bytes: 64 << 20,
                    cpuset_cpus: "0".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        resources_at_create(&config, &host()).unwrap()
    }

    #[test]
    fn an_update_keeps_what_it_does_not_set() {
        let requested = api::LinuxContainerResources {
            cpu_quota: 20_000,
            memory_limit_in_bytes: 128 << 20,
            unified: [("memory.high".to_string(), "100000000".to_string())].into(),
            ..Default::default()
        };
        let merged = update_resources(Some(&created()), Some(&requested), &host()).unwrap();
        let reported = cri_resources(&merged, -997);
        assert_eq!(
            reported,
            api::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 20_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 128 << 20,
                memory_swap_limit_in_bytes: 128 << 20,
                oom_score_adj: -997,
                cpuset_cpus: "0".into(),
                unified: [("memory.high".to_string(), "100000000".to_string())].into(),
                ..Default::default()
            }
        );
        assert_eq!(merged.devices(), &None, "device rules are never updated");
    }

    #[test]
    fn a_refused_update_is_undone_with_the_values_enforced_before() {
        let current = created();
        let requested = api::LinuxContainerResources {
            cpuset_mems: "0".into(),
            memory_swap_limit_in_bytes: -1,
            cpu_quota: 30_000,
            ..Default::default()
        };
        let updated = update_resources(Some(&current), Some(&requested), &host()).unwrap();
        let before = EnforcedLimits {
            cpuset_mems: Some("0-1".into()),
            memory_swap_limit: None,
            ..Default::default()
        };
        let back = cri_resources(&restoring(&current, &updated, &before), 0);
        assert_eq!(back.cpuset_mems, "0-1", "unset in the record: as it was");
        assert_eq!(back.memory_swap_limit_in_bytes, 64 << 20, "the record's");
        assert_eq!(back.cpu_quota, 50_000, "the record's");
        assert_eq!(back.cpuset_cpus, "0");
        let no_swap_before = LinuxResources::default();
        let back = restoring(&no_swap_before, &updated, &before);
        assert_eq!(back.memory().unwrap().swap(), Some(-1), "unlimited before");
    }

    #[test]
    fn the_bundle_spec_gets_the_new_resources_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.json");
        let original = serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {
                "resources": {
                    "devices": [{"allow": false, "access": "rwm"}],
                    "memory": {"limit": 1024},
                    "pids": {"limit": 10}
                },
                "cgroupsPath": "/pod/c1"
            }
        });
        std::fs::write(&path, original.to_string()).unwrap();
        let requested = api::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_quota: 20_000,
            ..Default::default()
        };
        let updated = update_resources(None, Some(&requested), &host()).unwrap();
        let previous = rewrite_bundle_resources(&path, &updated).unwrap().unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&previous).unwrap(),
            original
        );
        let spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let resources = &spec["linux"]["resources"];
        assert_eq!(resources["memory"]["limit"], 64 << 20);
        assert_eq!(resources["cpu"]["quota"], 20_000);
        assert_eq!(
            resources["devices"],
            original["linux"]["resources"]["devices"]
        );
        assert_eq!(resources["pids"]["limit"], 10);
        assert_eq!(spec["linux"]["cgroupsPath"], "/pod/c1");
    }

    #[test]
    fn hugepage_limits_replace_by_page_size() {
        let limit = |bytes| api::LinuxContainerResources {
            hugepage_limits: vec![api::HugepageLimit {
                page_size: "2MB".into(),
                limit: bytes,
            }],
            ..Default::default()
        };
        let first = update_resources(None, Some(&limit(2 << 20)), &host()).unwrap();
        let second = update_resources(Some(&first), Some(&limit(4 << 20)), &host()).unwrap();
        let reported = cri_resources(&second, 0).hugepage_limits;
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].limit, 4 << 20);
    }

    #[test]
    fn absurd_values_are_refused() {
        let cases = [
            api::LinuxContainerResources {
                cpu_quota: -5,
                ..Default::default()
            },
            api::LinuxContainerResources {
                cpu_quota: 10,
                ..Default::default()
            },
            api::LinuxContainerResources {
                cpu_period: 10,
                ..Default::default()
            },
            api::LinuxContainerResources {
                cpu_period: 10_000_000,
                ..Default::default()
            },
            api::LinuxContainerResources {
                cpu_shares: 1,
                ..Default::default()
            },
            api::LinuxContainerResources {
                cpu_shares: 1 << 40,
                ..Default::default()
            },
            api::LinuxContainerResources {
                memory_limit_in_bytes: -1,
                ..Default::default()
            },
            api::LinuxContainerResources {
                memory_swap_limit_in_bytes: -2,
                ..Default::default()
            },
            api::LinuxContainerResources {
                cpuset_cpus: "3-1".into(),
                ..Default::default()
            },
            api::LinuxContainerResources {
                cpuset_mems: "zero".into(),
                ..Default::default()
            },
            // Swap counts memory plus swap: below the limit is refused.
            api::LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                memory_swap_limit_in_bytes: 16 << 20,
                ..Default::default()
            },
        ];
        for requested in cases {
            let refused = update_resources(Some(&created()), Some(&requested), &host());
            assert!(
                matches!(refused, Err(SpecError::InvalidValue { .. })),
                "{requested:?} gave {refused:?}"
            );
        }
        let unlimited = api::LinuxContainerResources {
            cpu_quota: -1,
            memory_swap_limit_in_bytes: -1,
            cpuset_cpus: "0-1,3".into(),
            ..Default::default()
        };
        let merged = update_resources(Some(&created()), Some(&unlimited), &host()).unwrap();
        assert_eq!(cri_resources(&merged, 0).cpu_quota, -1);
    }

    #[test]
    fn swap_below_the_current_limit_is_refused() {
        let current = created();
        let swap_only = api::LinuxContainerResources {
            memory_swap_limit_in_bytes: 32 << 20,
            ..Default::default()
        };
        assert!(update_resources(Some(&current), Some(&swap_only), &host()).is_err());
    }
}
