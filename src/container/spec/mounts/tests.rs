//! Unit tests of the mount plan.

use super::*;

type ErrorCheck = fn(&SpecError) -> bool;

const WITH_RRO: RuntimeFeatures = RuntimeFeatures {
    recursive_read_only_mounts: true,
    user_namespaces: false,
};

fn cri_mount(container: &str, host: &str, readonly: bool, propagation: i32) -> api::Mount {
    api::Mount {
        container_path: container.into(),
        host_path: host.into(),
        readonly,
        propagation,
        ..Default::default()
    }
}

fn config_with(mounts: Vec<api::Mount>) -> api::ContainerConfig {
    api::ContainerConfig {
        mounts,
        ..Default::default()
    }
}

fn pod_files() -> SandboxFiles {
    SandboxFiles {
        hosts: Some("/pod/hosts".into()),
        resolv_conf: Some("/pod/resolv.conf".into()),
        hostname: Some("/pod/hostname".into()),
        shm: Some("/pod/shm".into()),
    }
}

fn destinations(plan: &MountPlan) -> Vec<String> {
    plan.mounts
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect()
}

fn find<'a>(plan: &'a MountPlan, destination: &str) -> &'a Mount {
    plan.mounts
        .iter()
        .find(|m| m.destination() == Path::new(destination))
        .unwrap_or_else(|| panic!("no mount at {destination}"))
}

fn options(mount: &Mount) -> Vec<String> {
    mount.options().clone().unwrap_or_default()
}

#[test]
fn defaults_then_pod_files_then_cri_mounts_parents_first() {
    let config = config_with(vec![
        cri_mount("/data/cache/deep", "/host/deep", false, 0),
        cri_mount("/data", "/host/data", true, 0),
        cri_mount("/sys/fs/cgroup/extra/", "/host/cg", true, 0),
    ]);
    let plan = plan(&config, &pod_files(), false, false, false, WITH_RRO).unwrap();
    assert_eq!(
        destinations(&plan),
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/data",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/dev/shm",
            "/data/cache/deep",
            "/sys/fs/cgroup/extra",
        ]
    );
    assert_eq!(options(find(&plan, "/data")), ["rbind", "rprivate", "ro"]);
    let shm = find(&plan, "/dev/shm");
    assert_eq!(shm.source().as_deref(), Some(Path::new("/pod/shm")));
    assert_eq!(options(shm), ["rbind", "rprivate", "rw"]);
    assert_eq!(
        options(find(&plan, "/etc/hosts")),
        ["rbind", "rprivate", "rw"]
    );
    assert_eq!(plan.rootfs_propagation, None);
}

#[test]
fn propagation_modes_map_to_recursive_options_and_root_propagation() {
    let cases = [
        (0, "rprivate", None),
        (1, "rslave", Some("rslave")),
        (2, "rshared", Some("rshared")),
    ];
    for (propagation, option, root) in cases {
        let config = config_with(vec![cri_mount("/m", "/host/m", false, propagation)]);
        let plan = plan(
            &config,
            &SandboxFiles::default(),
            false,
            false,
            false,
            WITH_RRO,
        )
        .unwrap();
        assert_eq!(options(find(&plan, "/m")), ["rbind", option, "rw"]);
        assert_eq!(plan.rootfs_propagation.as_deref(), root);
    }
    let mixed = config_with(vec![
        cri_mount("/a", "/host/a", false, 1),
        cri_mount("/b", "/host/b", false, 2),
    ]);
    let plan = plan(
        &mixed,
        &SandboxFiles::default(),
        false,
        false,
        false,
        WITH_RRO,
    )
    .unwrap();
    assert_eq!(plan.rootfs_propagation.as_deref(), Some("rshared"));
}

#[test]
fn cri_mount_replaces_defaults_and_pod_files() {
    let config = config_with(vec![
        cri_mount("/etc/hosts", "/custom/hosts", true, 0),
        cri_mount("/dev", "/dev", false, 0),
    ]);
    let plan = plan(&config, &pod_files(), false, false, false, WITH_RRO).unwrap();
    let hosts: Vec<_> = plan
        .mounts
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        hosts[0].source().as_deref(),
        Some(Path::new("/custom/hosts"))
    );
    // A host /dev replaces the tmpfs and everything the runtime puts under it,
    // but the pod's /dev/shm still goes on top.
    let dev: Vec<_> = destinations(&plan)
        .into_iter()
        .filter(|d| d.starts_with("/dev"))
        .collect();
    assert_eq!(dev, ["/dev", "/dev/shm"]);
    assert_eq!(find(&plan, "/dev").typ().as_deref(), Some("bind"));
}

#[test]
fn readonly_rootfs_makes_pod_files_readonly_but_not_shm() {
    let plan = plan(
        &config_with(vec![]),
        &pod_files(),
        false,
        true,
        false,
        WITH_RRO,
    )
    .unwrap();
    for file in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
        assert_eq!(
            options(find(&plan, file)),
            ["rbind", "rprivate", "ro"],
            "{file}"
        );
    }
    assert_eq!(
        options(find(&plan, "/dev/shm")),
        ["rbind", "rprivate", "rw"]
    );
}

#[test]
fn shm_comes_from_the_pod_the_host_or_a_private_tmpfs() {
    let host_ipc = plan(
        &config_with(vec![]),
        &SandboxFiles::default(),
        true,
        false,
        false,
        WITH_RRO,
    )
    .unwrap();
    let shm = find(&host_ipc, "/dev/shm");
    assert_eq!(shm.typ().as_deref(), Some("bind"));
    assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));

    let private = plan(
        &config_with(vec![]),
        &SandboxFiles::default(),
        false,
        false,
        false,
        WITH_RRO,
    )
    .unwrap();
    assert_eq!(find(&private, "/dev/shm").typ().as_deref(), Some("tmpfs"));
}

#[test]
fn privileged_makes_sysfs_and_cgroupfs_writable() {
    let plan = plan(
        &config_with(vec![]),
        &SandboxFiles::default(),
        false,
        false,
        true,
        WITH_RRO,
    )
    .unwrap();
    assert!(options(find(&plan, "/sys")).contains(&"rw".to_string()));
    assert!(options(find(&plan, "/sys/fs/cgroup")).contains(&"rw".to_string()));
    let unprivileged = super::plan(
        &config_with(vec![]),
        &SandboxFiles::default(),
        false,
        false,
        false,
        WITH_RRO,
    )
    .unwrap();
    assert!(options(find(&unprivileged, "/sys")).contains(&"ro".to_string()));
}

#[test]
fn rejects_bad_cri_mounts() {
    let cases: Vec<(api::Mount, ErrorCheck)> = vec![
        (cri_mount("data", "/host", false, 0), |e| {
            matches!(e, SpecError::RelativePath { .. })
        }),
        (cri_mount("/data", "host", false, 0), |e| {
            matches!(e, SpecError::RelativePath { .. })
        }),
        (cri_mount("/data", "", false, 0), |e| {
            matches!(e, SpecError::EmptyPath { .. })
        }),
        (cri_mount("", "/host", false, 0), |e| {
            matches!(e, SpecError::EmptyPath { .. })
        }),
        (cri_mount("/data", "/host", false, 7), |e| {
            matches!(e, SpecError::InvalidValue { .. })
        }),
        (
            api::Mount {
                recursive_read_only: true,
                ..cri_mount("/data", "/host", false, 0)
            },
            |e| matches!(e, SpecError::InvalidValue { .. }),
        ),
        (
            api::Mount {
                recursive_read_only: true,
                ..cri_mount("/data", "/host", true, 1)
            },
            |e| matches!(e, SpecError::InvalidValue { reason, .. } if reason.contains("PRIVATE")),
        ),
        (
            api::Mount {
                recursive_read_only: true,
                ..cri_mount("/data", "/host", true, 2)
            },
            |e| matches!(e, SpecError::InvalidValue { reason, .. } if reason.contains("PRIVATE")),
        ),
        (
            api::Mount {
                image: Some(api::ImageSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..cri_mount("/data", "", true, 0)
            },
            |e| matches!(e, SpecError::Unsupported(what) if what.contains("image volume")),
        ),
    ];
    for (mount, expected) in cases {
        let err = plan(
            &config_with(vec![mount.clone()]),
            &SandboxFiles::default(),
            false,
            false,
            false,
            WITH_RRO,
        )
        .unwrap_err();
        assert!(expected(&err), "{mount:?} gave {err:?}");
    }
}

#[test]
fn recursive_read_only_adds_rro_when_the_runtime_has_it() {
    let rro = api::Mount {
        recursive_read_only: true,
        ..cri_mount("/data", "/host/data", true, 0)
    };
    let config = config_with(vec![rro]);
    let plan_with = plan(
        &config,
        &SandboxFiles::default(),
        false,
        false,
        false,
        WITH_RRO,
    )
    .unwrap();
    assert_eq!(
        options(find(&plan_with, "/data")),
        ["rbind", "rprivate", "ro", "rro"]
    );
    let err = plan(
        &config,
        &SandboxFiles::default(),
        false,
        false,
        false,
        RuntimeFeatures::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, SpecError::Unsupported(what) if what.contains("recursive read-only")),
        "{err:?}"
    );
}
