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
mod tests;
