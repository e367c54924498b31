//! Ownership, permissions, times and extended attributes of an entry, from
//! its tar header and PAX records, and the xattr calls that apply them.

use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::libc;
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use super::{failed, Failure, Rejection};

pub(super) const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
pub(super) const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Ownership, permissions, times and xattrs of one entry.
pub(super) struct Attributes {
    pub(super) mode: Mode,
    pub(super) uid: Uid,
    pub(super) gid: Gid,
    pub(super) mtime: TimeSpec,
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
}

pub(super) fn read_attributes<R: Read>(entry: &mut tar::Entry<R>) -> Result<Attributes, Rejection> {
    let header = entry.header();
    let mode = header.mode().map_err(|e| bad_field("mode", e))?;
    let id = |field, value: io::Result<u64>| {
        let value = value.map_err(|e| bad_field(field, e))?;
        // u32::MAX is chown's "leave unchanged", not an ID.
        let valid = u32::try_from(value).ok().filter(|&id| id != u32::MAX);
        valid.ok_or_else(|| bad_field(field, format!("{value} is out of range")))
    };
    let uid = Uid::from_raw(id("uid", header.uid())?);
    let gid = Gid::from_raw(id("gid", header.gid())?);
    let seconds = header.mtime().map_err(|e| bad_field("mtime", e))?;
    let mut mtime = TimeSpec::new(i64::try_from(seconds).unwrap_or(i64::MAX), 0);
    let mut xattrs = Vec::new();
    let extensions = entry
        .pax_extensions()
        .map_err(|e| bad_field("PAX header", e))?;
    for extension in extensions.into_iter().flatten() {
        let extension = extension.map_err(|e| bad_field("PAX header", e))?;
        let key = extension.key().map_err(|e| bad_field("PAX key", e))?;
        let value = extension.value_bytes();
        if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
            xattrs.push((name.to_string(), value.to_vec()));
        } else if key == "mtime" {
            let detail = || bad_field("PAX mtime", String::from_utf8_lossy(value));
            mtime = parse_pax_time(value).ok_or_else(detail)?;
        }
    }
    Ok(Attributes {
        mode: Mode::from_bits_truncate(mode & 0o7777),
        uid,
        gid,
        mtime,
        xattrs,
    })
}

pub(super) fn bad_field(field: &'static str, error: impl ToString) -> Rejection {
    let detail = error.to_string();
    Rejection::BadField { field, detail }
}

/// `seconds[.fraction]`, possibly negative, as PAX writes times.
pub(super) fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let whole_seconds: i64 = seconds.parse().ok()?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanoseconds: i64 = format!("{fraction:0<9}")[..9].parse().ok()?;
    // "-1.25" is 1.25 s before the epoch: -2 s plus 0.75 s.
    Some(if seconds.starts_with('-') && nanoseconds > 0 {
        TimeSpec::new(whole_seconds - 1, 1_000_000_000 - nanoseconds)
    } else {
        TimeSpec::new(whole_seconds, nanoseconds)
    })
}

pub(super) fn file_type(mode: libc::mode_t) -> SFlag {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits())
}

/// Which extended attributes from a layer we set. `trusted.*` is refused
/// because overlayfs itself reads it (a layer could forge opaque directories
/// or redirects); other `security.*` labels belong to the host's LSM policy.
pub(super) fn xattr_is_wanted(name: &str, file_type: SFlag) -> bool {
    match name {
        "security.capability" | "system.posix_acl_access" | "system.posix_acl_default" => true,
        // The kernel allows user.* only on regular files and directories.
        _ if name.starts_with("user.") => matches!(file_type, SFlag::S_IFREG | SFlag::S_IFDIR),
        _ => false,
    }
}

/// Marks directory `name` in `parent` opaque for overlayfs.
pub(super) fn set_opaque(parent: &OwnedFd, name: &OsStr) -> Result<(), Failure> {
    set_xattr_at(parent, name, OVERLAY_OPAQUE_XATTR, b"y")
        .map_err(failed("marking directory opaque"))
}

/// Sets extended attribute `key` on `name` in `parent` (not following a
/// symlink). Linux has no `setxattrat` before 6.13, and `fsetxattr` refuses
/// `O_PATH` descriptors (opening fifos or devices for real is no option), so
/// this opens `name` with `O_PATH | O_NOFOLLOW` and goes through its
/// `/proc/self/fd` link, which always resolves to that very inode, symlinks
/// included. Unlike a path from `dest`, that works at any depth: a full
/// path may be longer than `PATH_MAX`.
pub(super) fn set_xattr_at(
    parent: &OwnedFd,
    name: &OsStr,
    key: &str,
    value: &[u8],
) -> Result<(), Errno> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let target = fcntl::openat(parent, name, flags, Mode::empty())?;
    let link = format!("/proc/self/fd/{}", target.as_raw_fd());
    setxattr(Path::new(&link), key, value)
}

/// nix has no xattr calls, so this calls libc directly. Follows symlinks:
/// meant for `/proc/self/fd` links only.
#[allow(unsafe_code)]
pub(super) fn setxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), Errno> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let (value, size) = (value.as_ptr().cast(), value.len());
    // SAFETY: `path` and `name` are NUL-terminated strings that outlive the
    // call, and `value` and `size` describe one live slice; the kernel only
    // reads from all three.
    let result = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), value, size, 0) };
    Errno::result(result).map(drop)
}
