//! The container's mount list: containerd's default pseudo-filesystems, the
//! pod's shared files (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`,
//! `/dev/shm`) and the CRI bind mounts, ordered so that a parent directory is
//! always mounted before anything beneath it.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;

use super::{clean_absolute, SandboxFiles, SpecError};
use crate::api;
use crate::runtime::RuntimeFeatures;

/// The runtime's own mounts; `/run` is left out as containerd's CRI does.
/// `/dev/shm` here is a private tmpfs, normally replaced by the pod's.
const DEFAULT_MOUNTS: &[(&str, &str, &str, &[&str])] = &[
    ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
    (
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ),
    (
        "/dev/pts",
        "devpts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ],
    ),
    (
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    ),
    (
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    ),
    (
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", "ro"],
    ),
    (
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", "ro"],
    ),
];

const HOST_DEV_SHM: &str = "/dev/shm";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Propagation {
    Private,
    HostToContainer,
    Bidirectional,
}

impl Propagation {
    fn option(self) -> &'static str {
        match self {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        }
    }
}

/// A validated bind mount from the host into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BindMount {
    container_path: PathBuf,
    host_path: PathBuf,
    readonly: bool,
    /// Read-only with everything mounted beneath the source too (`rro`).
    recursive_read_only: bool,
    propagation: Propagation,
}

impl BindMount {
    fn into_oci(self) -> Mount {
        let mut mount = Mount::default();
        mount.set_destination(self.container_path);
        mount.set_typ(Some("bind".to_string()));
        mount.set_source(Some(self.host_path));
        let mut options = vec![
            "rbind".to_string(),
            self.propagation.option().to_string(),
            if self.readonly { "ro" } else { "rw" }.to_string(),
        ];
        if self.recursive_read_only {
            options.push("rro".to_string());
        }
        mount.set_options(Some(options));
        mount
    }
}

/// Mounts plus the root propagation the binds need (`rshared` if any bind
/// is bidirectional, else `rslave` if any receives host mounts).
#[derive(Debug)]
pub struct MountPlan {
    pub mounts: Vec<Mount>,
    pub rootfs_propagation: Option<String>,
}

pub fn plan(
    config: &api::ContainerConfig,
    files: &SandboxFiles,
    host_ipc: bool,
    readonly_rootfs: bool,
    privileged: bool,
    runtime: RuntimeFeatures,
) -> Result<MountPlan, SpecError> {
    let mut binds = config
        .mounts
        .iter()
        .map(|mount| validate_cri_mount(mount, runtime))
        .collect::<Result<Vec<_>, _>>()?;
    let requested: Vec<PathBuf> = binds.iter().map(|b| b.container_path.clone()).collect();
    for extra in sandbox_file_mounts(files, host_ipc, readonly_rootfs) {
        if !requested.contains(&extra.container_path) {
            binds.push(extra);
        }
    }
    // Fewer components first; stable, so equal depths keep CRI order.
    binds.sort_by_key(|bind| bind.container_path.components().count());

    let replaces_dev = binds.iter().any(|b| b.container_path == Path::new("/dev"));
    let mut mounts: Vec<Mount> = DEFAULT_MOUNTS
        .iter()
        .filter(|(destination, ..)| {
            let destination = Path::new(destination);
            let overridden = binds.iter().any(|b| b.container_path == destination);
            let under_replaced_dev = replaces_dev && destination.starts_with("/dev");
            !overridden && !under_replaced_dev
        })
        .map(|&(destination, typ, source, options)| {
            default_mount(destination, typ, source, options, privileged)
        })
        .collect();

    let rootfs_propagation = if binds
        .iter()
        .any(|b| b.propagation == Propagation::Bidirectional)
    {
        Some("rshared".to_string())
    } else if binds
        .iter()
        .any(|b| b.propagation == Propagation::HostToContainer)
    {
        Some("rslave".to_string())
    } else {
        None
    };
    mounts.extend(binds.into_iter().map(BindMount::into_oci));
    Ok(MountPlan {
        mounts,
        rootfs_propagation,
    })
}

fn default_mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
    privileged: bool,
) -> Mount {
    let writable_when_privileged = matches!(typ, "sysfs" | "cgroup");
    let options = options
        .iter()
        .map(|&option| match option {
            "ro" if privileged && writable_when_privileged => "rw".to_string(),
            other => other.to_string(),
        })
        .collect();
    let mut mount = Mount::default();
    mount.set_destination(PathBuf::from(destination));
    mount.set_typ(Some(typ.to_string()));
    mount.set_source(Some(PathBuf::from(source)));
    mount.set_options(Some(options));
    mount
}

/// The pod-wide files every container shares. `/etc/hosts`,
/// `/etc/resolv.conf` and `/etc/hostname` are writable unless the rootfs is
/// read-only (as in containerd); `/dev/shm` is the pod's, or the host's for a
/// host-IPC pod. With neither, the private tmpfs default stays.
fn sandbox_file_mounts(
    files: &SandboxFiles,
    host_ipc: bool,
    readonly_rootfs: bool,
) -> Vec<BindMount> {
    let pod_file = |container_path: &str, host_path: &Option<PathBuf>| {
        host_path.as_ref().map(|host_path| BindMount {
            container_path: PathBuf::from(container_path),
            host_path: host_path.clone(),
            readonly: readonly_rootfs,
            recursive_read_only: false,
            propagation: Propagation::Private,
        })
    };
    let shm = match (&files.shm, host_ipc) {
        (Some(shm), _) => Some(shm.clone()),
        (None, true) => Some(PathBuf::from(HOST_DEV_SHM)),
        (None, false) => None,
    };
    [
        pod_file("/etc/hostname", &files.hostname),
        pod_file("/etc/hosts", &files.hosts),
        pod_file("/etc/resolv.conf", &files.resolv_conf),
        shm.map(|host_path| BindMount {
            container_path: PathBuf::from(HOST_DEV_SHM),
            host_path,
            readonly: false,
            recursive_read_only: false,
            propagation: Propagation::Private,
        }),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn validate_cri_mount(
    mount: &api::Mount,
    runtime: RuntimeFeatures,
) -> Result<BindMount, SpecError> {
    let container_path = clean_absolute("mount container", &mount.container_path)?;
    if !mount.uid_mappings.is_empty() || !mount.gid_mappings.is_empty() {
        return Err(SpecError::Unsupported(format!(
            "ID-mapped mount at {}",
            container_path.display()
        )));
    }
    if mount
        .image
        .as_ref()
        .is_some_and(|image| !image.image.is_empty())
    {
        return Err(SpecError::Unsupported(format!(
            "image volume mount at {}",
            container_path.display()
        )));
    }
    let host_path = host_path_of(mount)?;
    let propagation = match api::MountPropagation::try_from(mount.propagation) {
        Ok(api::MountPropagation::PropagationPrivate) => Propagation::Private,
        Ok(api::MountPropagation::PropagationHostToContainer) => Propagation::HostToContainer,
        Ok(api::MountPropagation::PropagationBidirectional) => Propagation::Bidirectional,
        Err(_) => {
            return Err(SpecError::InvalidValue {
                field: "mount propagation",
                value: mount.propagation.to_string(),
                reason: "not a CRI MountPropagation value".to_string(),
            })
        }
    };
    if mount.recursive_read_only {
        check_recursive_read_only(mount, &container_path, propagation, runtime)?;
    }
    Ok(BindMount {
        container_path,
        host_path,
        readonly: mount.readonly,
        recursive_read_only: mount.recursive_read_only,
        propagation,
    })
}

/// kubelet's and containerd's rules: a recursive read-only mount is
/// read-only, private (a mount propagated in later could not be made
/// read-only), and needs a runtime that can make one.
fn check_recursive_read_only(
    mount: &api::Mount,
    container_path: &Path,
    propagation: Propagation,
    runtime: RuntimeFeatures,
) -> Result<(), SpecError> {
    let invalid = |reason: &str| SpecError::InvalidValue {
        field: "recursive_read_only mount",
        value: container_path.display().to_string(),
        reason: reason.to_string(),
    };
    if !mount.readonly {
        return Err(invalid(
            "a recursive read-only mount must also be read-only",
        ));
    }
    if propagation != Propagation::Private {
        return Err(invalid(
            "a recursive read-only mount needs PROPAGATION_PRIVATE, since mounts propagated into it later could not be made read-only",
        ));
    }
    if !runtime.recursive_read_only_mounts {
        return Err(SpecError::Unsupported(format!(
            "recursive read-only mount at {} (the OCI runtime has no \"rro\" mount option)",
            container_path.display()
        )));
    }
    Ok(())
}

/// The absolute host path of a CRI bind mount.
pub fn host_path_of(mount: &api::Mount) -> Result<PathBuf, SpecError> {
    if mount.host_path.is_empty() {
        return Err(SpecError::EmptyPath {
            what: "mount host",
            context: format!(" (mount at {:?})", mount.container_path),
        });
    }
    let host_path = PathBuf::from(&mount.host_path);
    if !host_path.is_absolute() {
        return Err(SpecError::RelativePath {
            what: "mount host",
            path: mount.host_path.clone(),
        });
    }
    Ok(host_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    type ErrorCheck = fn(&SpecError) -> bool;

    const WITH_RRO: RuntimeFeatures = RuntimeFeatures {
        recursive_read_only_mounts: true,
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
}
