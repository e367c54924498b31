//! A container's root filesystem: an overlay of its image's layers under a
//! writable upper dir of its own.
//!
//! In a pod with its own user namespace the layers are ID-mapped for it
//! first: overlayfs itself cannot be ID-mapped (`mount_setattr` on it gives
//! EINVAL), but it can stack over ID-mapped bind mounts of the layer
//! directories (Linux 5.19+), as containerd's overlay snapshotter does.
//! The upper dir then belongs to the container's root on the host, so what
//! the container writes is owned by its mapped IDs.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the image has too many layers for one overlay mount ({0} bytes of options)")]
    TooManyLayers(usize),
    #[error("mounting overlay at {target}: {source}")]
    Mount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("ID-mapping the image's layers: {0}")]
    Idmap(#[from] crate::idmap::IdmapError),
    #[error("giving {path} to the container's root: {source}")]
    Chown {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unmounting {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

impl crate::error::Classify for RootfsError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            RootfsError::TooManyLayers(_) => crate::error::Kind::InvalidArgument,
            _ => crate::error::Kind::Internal,
        }
    }
}

/// The mount data limit of the kernel (one page).
const MAX_MOUNT_DATA: usize = 4096;

/// Mounts `lower_dirs` (top first) with `layer_dir/upper` and
/// `layer_dir/work` at `target`. An image with no layers gets an empty
/// lower dir.
pub fn mount_overlay(
    lower_dirs: &[PathBuf],
    layer_dir: &Path,
    target: &Path,
) -> Result<(), RootfsError> {
    mount_overlay_owned(lower_dirs, layer_dir, target, None)
}

/// [`mount_overlay`] for a container in the user namespace `userns`
/// (an open `/proc/<pid>/ns/user` or its pin), whose root is `host_root`
/// (uid, gid) on the host. The layers are ID-mapped on directories under
/// `scratch`, which are detached again once the overlay holds them: nothing
/// but the overlay stays mounted.
pub fn mount_idmapped_overlay(
    lower_dirs: &[PathBuf],
    layer_dir: &Path,
    target: &Path,
    scratch: &Path,
    userns: std::os::fd::BorrowedFd<'_>,
    host_root: (u32, u32),
) -> Result<(), RootfsError> {
    create_dir_with_mode(scratch, 0o700)?;
    let mapped = lower_dirs
        .iter()
        .enumerate()
        .map(|(i, lower)| {
            let at = scratch.join(i.to_string());
            let layer = crate::idmap::TreeOptions {
                recursive: false,
                read_only: true,
            };
            crate::idmap::mount_idmapped(lower, &at, userns, layer).map(|()| at)
        })
        .collect::<Result<Vec<_>, _>>();
    let mounted = mapped
        .map_err(RootfsError::from)
        .and_then(|mapped| mount_overlay_owned(&mapped, layer_dir, target, Some(host_root)));
    // The overlay keeps its layers referenced; their mount points go.
    let detached = crate::idmap::unmount_all(scratch);
    mounted?;
    detached.map_err(|e| {
        let _ = unmount(target);
        e.into()
    })
}

fn mount_overlay_owned(
    lower_dirs: &[PathBuf],
    layer_dir: &Path,
    target: &Path,
    upper_owner: Option<(u32, u32)>,
) -> Result<(), RootfsError> {
    let upper = layer_dir.join("upper");
    let work = layer_dir.join("work");
    let empty = layer_dir.join("empty");
    // The upper dir's root becomes the container's `/`: it must be open to
    // the container's users whatever the daemon's umask (its private
    // parent keeps host users out). The others are overlayfs' own.
    for (dir, mode) in [(upper.as_path(), 0o755), (&work, 0o700), (target, 0o700)] {
        create_dir_with_mode(dir, mode)?;
    }
    if let Some((uid, gid)) = upper_owner {
        std::os::unix::fs::chown(&upper, Some(uid), Some(gid)).map_err(|source| {
            RootfsError::Chown {
                path: upper.clone(),
                source,
            }
        })?;
    }
    let mut lowers: Vec<String> = lower_dirs.iter().map(|d| d.display().to_string()).collect();
    if lowers.is_empty() {
        create_dir_with_mode(&empty, 0o755)?;
        lowers.push(empty.display().to_string());
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    if options.len() >= MAX_MOUNT_DATA {
        return Err(RootfsError::TooManyLayers(options.len()));
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|source| RootfsError::Mount {
        target: target.to_path_buf(),
        source,
    })
}

fn create_dir_with_mode(dir: &Path, mode: u32) -> Result<(), RootfsError> {
    use std::os::unix::fs::PermissionsExt;
    let error = |source| RootfsError::Create {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(error(e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(error)
}

/// Unmounts `target`; not mounted is fine.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(source) => Err(RootfsError::Unmount {
            target: target.to_path_buf(),
            source,
        }),
    }
}
