//! A container's root filesystem: an overlay of its image's layers under a
//! writable upper dir of its own.

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
    let upper = layer_dir.join("upper");
    let work = layer_dir.join("work");
    let empty = layer_dir.join("empty");
    for dir in [&upper, &work, target] {
        std::fs::create_dir_all(dir).map_err(|source| RootfsError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut lowers: Vec<String> = lower_dirs.iter().map(|d| d.display().to_string()).collect();
    if lowers.is_empty() {
        std::fs::create_dir_all(&empty).map_err(|source| RootfsError::Create {
            path: empty.clone(),
            source,
        })?;
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
