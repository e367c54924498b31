//! ID-mapped mounts with the new mount API (`open_tree`,
//! `mount_setattr`, `move_mount`), as raw system calls.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::libc;

use super::IdmapError;
use crate::error::IoError;

/// What a detached ID-mapped copy of a mount covers and allows.
#[derive(Debug, Clone, Copy)]
pub struct TreeOptions {
    /// With every mount beneath the source.
    pub recursive: bool,
    /// Read-only: image layers, which only overlayfs reads (a writable
    /// copy left mounted by a crash would let a cleanup that removes the
    /// state dir delete through it into the shared layer).
    pub read_only: bool,
}

pub(super) fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// A detached copy of the mount at `source` (with everything beneath it
/// when `recursive`), ID-mapped through `userns`: a file owned by ID `n` on
/// disk shows up owned by the host ID that `n` maps to in `userns`.
#[allow(unsafe_code)]
pub fn idmapped_tree(
    source: &Path,
    userns: BorrowedFd<'_>,
    options: TreeOptions,
) -> Result<OwnedFd, IdmapError> {
    let TreeOptions {
        recursive,
        read_only,
    } = options;
    let path = c_path(source).map_err(|e| IoError::new("opening", source, e))?;
    let recursive_flag = if recursive {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    // SAFETY: open_tree reads the NUL-terminated `path`, alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | recursive_flag,
        )
    };
    if fd < 0 {
        return Err(
            IoError::new("cloning the mount at", source, io::Error::last_os_error()).into(),
        );
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let read_only_flag = if read_only {
        libc::MOUNT_ATTR_RDONLY
    } else {
        0
    };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | read_only_flag,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr reads `attr` (its size given) and the empty
    // NUL-terminated path, both alive for the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if result < 0 {
        return Err(
            IoError::new("ID-mapping a mount of", source, io::Error::last_os_error()).into(),
        );
    }
    Ok(tree)
}

/// Attaches the detached mount `tree` on `target` (an existing directory).
#[allow(unsafe_code)]
pub fn attach(tree: OwnedFd, target: &Path) -> Result<(), IdmapError> {
    let path = c_path(target).map_err(|e| IoError::new("mounting on", target, e))?;
    // SAFETY: move_mount reads the two NUL-terminated paths, alive for the
    // call; `tree` stays open until after it.
    let result = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if result < 0 {
        return Err(IoError::new(
            "attaching an ID-mapped mount on",
            target,
            io::Error::last_os_error(),
        )
        .into());
    }
    Ok(())
}

/// ID-maps `source` through `userns` onto `target`, created for it: a
/// directory (mode 0711: the container's root, a host ID the directory's
/// owner does not map to, passes through it to the mount) or, for any
/// other kind of source, an empty file.
pub fn mount_idmapped(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    options: TreeOptions,
) -> Result<(), IdmapError> {
    let tree = idmapped_tree(source, userns, options)?;
    attach_on_new(tree, source, target)
}

/// Attaches `tree`, a detached mount of `source`, on `target`, created as
/// [`mount_idmapped`] says.
pub fn attach_on_new(tree: OwnedFd, source: &Path, target: &Path) -> Result<(), IdmapError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let is_dir = fs::metadata(source)
        .map_err(|e| IoError::new("inspecting", source, e))?
        .is_dir();
    let created = if is_dir {
        fs::DirBuilder::new().mode(0o711).create(target)
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(target)
            .map(drop)
    };
    match created {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(IoError::new("creating", target, e).into())
        }
        _ => {}
    }
    attach(tree, target)
}

/// Detaches whatever is mounted on each entry of `dir`, then removes them
/// and `dir`: never deletes through a mount (an entry still mounted on is
/// left, and reported). Missing `dir` is fine.
pub fn unmount_all(dir: &Path) -> Result<(), IdmapError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IoError::new("listing", dir, e).into()),
    };
    let mut first_error = None;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let result = crate::sys::unmount_detached(&path)
            .and_then(|_| {
                if is_dir {
                    fs::remove_dir(&path)
                } else {
                    fs::remove_file(&path)
                }
            })
            .map_err(|e| IdmapError::from(IoError::new("unmounting", &path, e)));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(IoError::new("removing", dir, e).into())
        }
        _ => Ok(()),
    }
}
