//! Resolving entry paths beneath the layer root: no component may leave it,
//! no symlink is followed on the way, and a later entry replaces an earlier one.

use std::ffi::OsStr;
use std::fs::{self};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{self, FchmodatFlags, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};

use super::attributes::file_type;
use super::{failed, Failure, Rejection, Unpacker};

/// What [`Unpacker::clear_slot`] found where a new entry goes.
pub(super) enum Slot {
    Free,
    KeptDirectory,
    /// A whiteout from earlier in this layer was removed.
    FreedWhiteout,
}

/// The entry's path relative to the layer root ("" for the root itself),
/// refusing anything that could leave it.
pub(super) fn relative_path(raw: &[u8]) -> Result<PathBuf, Rejection> {
    if raw.contains(&0) {
        return Err(Rejection::NulByte);
    }
    let mut relative = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(Rejection::AbsolutePath),
            Component::ParentDir => return Err(Rejection::ParentComponent),
        }
    }
    Ok(relative)
}

impl Unpacker<'_> {
    /// Opens the directory at `relative` beneath `dest`, refusing symlinks
    /// anywhere on the way and creating missing directories (mode 0755) if asked.
    pub(super) fn open_directory(
        &mut self,
        relative: &Path,
        create_missing: bool,
    ) -> Result<OwnedFd, Failure> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
        let how = OpenHow::new().flags(flags).resolve(resolve);
        let relative_or_dot = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        // One syscall in the common case. On any failure (missing directory,
        // symlink, a kernel or sandbox without openat2) the walk below decides.
        if let Ok(directory) = fcntl::openat2(&self.root, relative_or_dot, how) {
            return Ok(directory);
        }
        let mut directory = self.root.try_clone().map_err(failed("dup"))?;
        let mut walked = PathBuf::new();
        for component in relative {
            walked.push(component);
            let open_child = |directory: &OwnedFd| {
                fcntl::openat(
                    directory,
                    component,
                    flags | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                )
            };
            directory = match open_child(&directory) {
                Ok(child) => child,
                Err(Errno::ENOENT) if create_missing => {
                    let mode = Mode::from_bits_truncate(0o755);
                    stat::mkdirat(&directory, component, mode).map_err(failed("mkdir"))?;
                    // Set the mode explicitly: mkdir's is filtered by the umask.
                    stat::fchmodat(&directory, component, mode, FchmodatFlags::FollowSymlink)
                        .map_err(failed("chmod"))?;
                    self.stats.inodes += 1;
                    open_child(&directory).map_err(failed("opening directory"))?
                }
                Err(Errno::ENOENT) => return Err(Rejection::NotFound.into()),
                // O_NOFOLLOW | O_DIRECTORY gives ENOTDIR for a symlink, too.
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let walked = walked.display().to_string();
                    let found = stat::fstatat(&directory, component, AtFlags::AT_SYMLINK_NOFOLLOW);
                    return Err(match found.map(|found| file_type(found.st_mode)) {
                        Ok(SFlag::S_IFLNK) => Rejection::SymlinkInPath(walked),
                        _ => Rejection::NotADirectory(walked),
                    }
                    .into());
                }
                Err(errno) => return Err(failed("opening directory")(errno)),
            };
        }
        Ok(directory)
    }

    /// Makes room for a new entry: later entries replace earlier ones. A
    /// directory is kept (for its metadata to be updated) if `keep_directory`.
    pub(super) fn clear_slot(
        &mut self,
        parent: &OwnedFd,
        path: &Path,
        name: &OsStr,
        keep_directory: bool,
    ) -> Result<Slot, Failure> {
        let existing = match stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(existing) => existing,
            Err(Errno::ENOENT) => return Ok(Slot::Free),
            Err(errno) => return Err(failed("inspecting replaced entry")(errno)),
        };
        match file_type(existing.st_mode) {
            SFlag::S_IFDIR if keep_directory => Ok(Slot::KeptDirectory),
            SFlag::S_IFDIR => {
                // std's remove_dir_all never follows symlinks inside the tree,
                // and `parent` was reached without any. Through the
                // descriptor's link, as the full path may exceed PATH_MAX.
                let link = format!("/proc/self/fd/{}", parent.as_raw_fd());
                fs::remove_dir_all(Path::new(&link).join(name))
                    .map_err(failed("removing replaced directory"))?;
                self.directory_times.retain(|dir, _| !dir.starts_with(path));
                Ok(Slot::Free)
            }
            replaced => {
                unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                    .map_err(failed("removing replaced entry"))?;
                let whiteout = replaced == SFlag::S_IFCHR && existing.st_rdev == 0;
                Ok(if whiteout {
                    Slot::FreedWhiteout
                } else {
                    Slot::Free
                })
            }
        }
    }
}
