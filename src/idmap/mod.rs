//! User namespaces for pods: the ID mappings a pod asks for, checked; a
//! short-lived process that creates a user namespace with them (and, in
//! the same step, the namespaces it must own); and ID-mapped mounts
//! (`mount_setattr(MOUNT_ATTR_IDMAP)`, Linux 5.12+, under overlayfs 5.19+),
//! which runc 1.1 cannot make itself.
//!
//! A user namespace can only be created or entered by a single-threaded
//! process, and the daemon has many threads: [`with_new_userns`] forks a
//! child that does nothing but `unshare` and wait, while the daemon writes
//! its maps and looks at its `/proc/<pid>/ns`.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use crate::api;
use crate::error::{Classify, IoError, Kind};

mod helper;
mod mount;

pub use helper::{kill_and_reap, with_new_userns, PidInit, StartedInit};
pub use mount::{attach, attach_on_new, idmapped_tree, mount_idmapped, unmount_all, TreeOptions};

/// One contiguous range: container IDs `container_id..container_id+length`
/// are host IDs `host_id..host_id+length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdRange {
    /// The host ID of container ID `id`, if mapped.
    pub fn host_of(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.container_id)?;
        (offset < self.length).then(|| self.host_id + offset)
    }

    /// The container ID of host ID `id`; the overflow ID 65534 (what the
    /// kernel shows for an unmapped ID) when not mapped.
    pub fn container_of(&self, id: u32) -> u32 {
        id.checked_sub(self.host_id)
            .filter(|offset| *offset < self.length)
            .map_or(OVERFLOW_ID, |offset| self.container_id + offset)
    }

    /// As `/proc/<pid>/uid_map` takes it.
    fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }
}

/// The ID the kernel shows for one a user namespace does not map.
const OVERFLOW_ID: u32 = 65534;

/// A pod's user namespace: one UID and one GID range, each mapping
/// container ID 0, as kubelet asks for and containerd accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsernsMappings {
    pub uids: IdRange,
    pub gids: IdRange,
}

impl UsernsMappings {
    /// The host UID and GID of the container's root.
    pub fn host_root(&self) -> (u32, u32) {
        (self.uids.host_id, self.gids.host_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("invalid user namespace options: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("the process creating a user namespace failed: {0}")]
    Helper(String),
}

impl Classify for IdmapError {
    fn kind(&self) -> Kind {
        match self {
            IdmapError::Invalid(_) => Kind::InvalidArgument,
            IdmapError::Io(_) | IdmapError::Helper(_) => Kind::Internal,
        }
    }
}

fn invalid(reason: impl Into<String>) -> IdmapError {
    IdmapError::Invalid(reason.into())
}

/// What a pod's `userns_options` ask for: `Ok(None)` for the host's user
/// namespace (no options, or mode NODE without mappings), the mappings for
/// mode POD. CONTAINER and TARGET modes, several ranges, an unmapped
/// container root, a range that maps the host's root or overflows are
/// refused, as containerd and kubelet refuse them.
pub fn from_cri(
    options: Option<&api::UserNamespace>,
) -> Result<Option<UsernsMappings>, IdmapError> {
    let Some(options) = options else {
        return Ok(None);
    };
    match api::NamespaceMode::try_from(options.mode) {
        Ok(api::NamespaceMode::Node) => {
            if options.uids.is_empty() && options.gids.is_empty() {
                Ok(None)
            } else {
                Err(invalid("mode NODE takes no ID mappings"))
            }
        }
        Ok(api::NamespaceMode::Pod) => Ok(Some(UsernsMappings {
            uids: one_range("uids", &options.uids)?,
            gids: one_range("gids", &options.gids)?,
        })),
        Ok(mode) => Err(invalid(format!(
            "mode {} is not supported: only POD and NODE are",
            mode.as_str_name()
        ))),
        Err(_) => Err(invalid(format!("unknown mode {}", options.mode))),
    }
}

fn one_range(what: &str, mappings: &[api::IdMapping]) -> Result<IdRange, IdmapError> {
    let [mapping] = mappings else {
        return Err(invalid(format!(
            "{what}: exactly one mapping is supported, got {}",
            mappings.len()
        )));
    };
    let range = IdRange {
        container_id: mapping.container_id,
        host_id: mapping.host_id,
        length: mapping.length,
    };
    if range.container_id != 0 {
        return Err(invalid(format!(
            "{what}: container ID 0 must be mapped (the mapping starts at {})",
            range.container_id
        )));
    }
    if range.length == 0 {
        return Err(invalid(format!("{what}: the mapping is empty")));
    }
    if range.host_id == 0 {
        return Err(invalid(format!(
            "{what}: the mapping includes the host's ID 0, which would make the pod's root the host's"
        )));
    }
    // The kernel's IDs are u32 with u32::MAX meaning "no ID".
    if u64::from(range.host_id) + u64::from(range.length) > u64::from(u32::MAX) {
        return Err(invalid(format!(
            "{what}: host IDs {}+{} go past the largest ID",
            range.host_id, range.length
        )));
    }
    Ok(range)
}

/// The mapping the start-up probe uses: any range will do.
const PROBE_MAPPINGS: UsernsMappings = UsernsMappings {
    uids: IdRange {
        container_id: 0,
        host_id: 65536,
        length: 65536,
    },
    gids: IdRange {
        container_id: 0,
        host_id: 65536,
        length: 65536,
    },
};

/// Whether ID-mapped mounts of directories on `dir`'s filesystem work on
/// this kernel (what critest checks before its user-namespace specs, and
/// what the rootfs of a user-namespaced pod needs). Nothing is left
/// mounted: the ID-mapped copy is never attached.
pub fn probe(dir: &Path) -> Result<(), IdmapError> {
    with_new_userns(&PROBE_MAPPINGS, CloneFlags::empty(), None, |ns, _| {
        let userns = open_ns(&ns.join("user"))?;
        let layer = TreeOptions {
            recursive: false,
            read_only: true,
        };
        idmapped_tree(dir, userns.as_fd(), layer).map(drop)
    })
}

/// Whether others may pass through `dir` and each of its parents (the
/// execute bit for others): a container whose root is not the host's must
/// reach its rootfs and the pod's files below it.
pub fn check_traversable(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for dir in dir.ancestors() {
        let mode = fs::metadata(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) cannot be passed through by others",
                dir.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

fn open_ns(path: &Path) -> Result<File, IdmapError> {
    File::open(path).map_err(|e| IoError::new("opening", path, e).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(mode: api::NamespaceMode, uids: &[(u32, u32, u32)]) -> api::UserNamespace {
        let mappings: Vec<api::IdMapping> = uids
            .iter()
            .map(|&(container_id, host_id, length)| api::IdMapping {
                container_id,
                host_id,
                length,
            })
            .collect();
        api::UserNamespace {
            mode: mode as i32,
            uids: mappings.clone(),
            gids: mappings,
        }
    }

    #[test]
    fn pod_mode_takes_one_range_from_container_root() {
        let mappings = from_cri(Some(&options(
            api::NamespaceMode::Pod,
            &[(0, 1000, 100_000)],
        )))
        .unwrap()
        .unwrap();
        assert_eq!(mappings.host_root(), (1000, 1000));
        assert_eq!(mappings.uids.host_of(5), Some(1005));
        assert_eq!(mappings.uids.host_of(100_000), None);
        assert_eq!(mappings.uids.container_of(1005), 5);
        assert_eq!(mappings.uids.container_of(999), 65534);
        assert_eq!(mappings.uids.container_of(101_000), 65534);
        assert_eq!(mappings.uids.map_line(), "0 1000 100000\n");
    }

    #[test]
    fn the_helper_writes_the_maps_and_idmapped_mounts_work_here() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let mappings = from_cri(Some(&options(
            api::NamespaceMode::Pod,
            &[(0, 200_000, 1000)],
        )))
        .unwrap()
        .unwrap();
        let seen = with_new_userns(&mappings, CloneFlags::CLONE_NEWNET, None, |ns, init| {
            assert!(init.is_none());
            let map = ns.parent().unwrap().join("uid_map");
            // The network namespace made with it is not this process's.
            let net = fs::read_link(ns.join("net")).map_err(|e| IoError::new("reading", ns, e))?;
            assert_ne!(net, fs::read_link("/proc/self/ns/net").unwrap());
            fs::read_to_string(&map).map_err(|e| IdmapError::from(IoError::new("reading", &map, e)))
        })
        .unwrap();
        let fields: Vec<&str> = seen.split_whitespace().collect();
        assert_eq!(fields, ["0", "200000", "1000"]);
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path()).unwrap();
    }

    #[test]
    fn node_mode_and_no_options_are_the_hosts() {
        assert_eq!(from_cri(None).unwrap(), None);
        assert_eq!(
            from_cri(Some(&options(api::NamespaceMode::Node, &[]))).unwrap(),
            None
        );
    }

    #[test]
    fn what_critest_and_kubelet_refuse_is_refused() {
        for bad in [
            options(
                api::NamespaceMode::Pod,
                &[(0, 1000, 100_000), (0, 2000, 100_000)],
            ),
            options(api::NamespaceMode::Pod, &[(1, 1000, 100_000)]),
            options(api::NamespaceMode::Pod, &[]),
            options(api::NamespaceMode::Pod, &[(0, 0, 65536)]),
            options(api::NamespaceMode::Pod, &[(0, 1000, 0)]),
            options(api::NamespaceMode::Pod, &[(0, u32::MAX - 10, 100)]),
            options(api::NamespaceMode::Container, &[]),
            options(api::NamespaceMode::Target, &[]),
            options(api::NamespaceMode::Node, &[(0, 1000, 10)]),
        ] {
            let error = from_cri(Some(&bad)).unwrap_err();
            assert_eq!(error.kind(), Kind::InvalidArgument, "{bad:?}: {error}");
        }
    }
}
