//! Applies one image layer (a tar stream) to an empty directory, so that the
//! directory can serve as an overlayfs lower layer.
//!
//! Layers come from registries and are untrusted. Every change goes through a
//! directory descriptor opened beneath `dest` without following symlinks
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, else an `O_NOFOLLOW`
//! walk), so no ordering of symlinks, hardlinks and directories can make us
//! touch anything outside `dest`. The `tar` crate only parses.
//!
//! OCI whiteouts become overlayfs ones: `dir/.wh.name` → a 0:0 character device
//! `dir/name`; `dir/.wh..wh..opq` → `trusted.overlay.opaque=y` on `dir`. Other
//! `.wh..wh.*` names are AUFS bookkeeping and are ignored, as docker does.
//!
//! Layers are also bounded in size ([`LayerControl`]): every byte of the
//! uncompressed stream, plus the holes of sparse entries, counts against the
//! layer's limit and the image's, so a decompression bomb stops at the limit.
//! Runs of zeros are written as holes, so no entry allocates disk for them.
//! The unpack can be cancelled from another thread; it notices within one
//! buffer of data.

mod attributes;
mod beneath;
mod decompress;
mod limits;
mod sparse;
mod whiteout;

pub use decompress::decompressed;
pub use limits::{
    ByteLimit, Cancel, CancelOnDrop, ImageBudget, LayerControl, LimitSetting, UnpackOptions,
};

use attributes::{
    bad_field, file_type, read_attributes, set_opaque, set_xattr_at, xattr_is_wanted, Attributes,
};
use beneath::{relative_path, Slot};
use limits::{Budgeted, HeaderBudget, Meter, Metered, Stop, HEADER_SLACK};
use sparse::write_sparse;
use whiteout::WHITEOUT_PREFIX;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self};
use tar::EntryType;

use crate::error::{Classify, Kind};

const COPY_BUFFER_SIZE: usize = 128 * 1024;
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Regular-file bytes written (runs of zeros left as holes not counted).
    pub bytes: u64,
    /// Filesystem entries created (including implicit parents, hardlinks and
    /// whiteouts).
    pub inodes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unpack destination {}: {source}", .dest.display())]
    Destination {
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unpack destination {} is not empty", .0.display())]
    DestinationNotEmpty(PathBuf),
    #[error("reading layer archive (last entry {last_entry:?}): {source}")]
    Archive {
        last_entry: Option<String>,
        #[source]
        source: io::Error,
    },
    #[error("layer archive headers after entry {last_entry:?} exceed the {limit}-byte limit")]
    HeaderTooLarge {
        last_entry: Option<String>,
        limit: usize,
    },
    #[error("layer entry {entry:?} rejected: {problem}")]
    Rejected { entry: String, problem: Rejection },
    #[error("layer entry {entry:?}: {operation}: {source}")]
    Io {
        entry: String,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "unpacked size exceeds {} bytes{}, the limit set by {}",
        .limit.bytes,
        .last_entry.as_ref().map(|e| format!(" (at entry {e:?})")).unwrap_or_default(),
        .limit.setting
    )]
    TooLarge {
        last_entry: Option<String>,
        limit: ByteLimit,
    },
    #[error("unpack cancelled")]
    Cancelled,
}

/// Why an entry of a layer is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("path is absolute")]
    AbsolutePath,
    #[error("path has a \"..\" component")]
    ParentComponent,
    #[error("name contains a NUL byte")]
    NulByte,
    #[error("{0:?} on the way is a symlink")]
    SymlinkInPath(String),
    #[error("{0:?} on the way is not a directory")]
    NotADirectory(String),
    #[error("hardlink target {target:?}: {problem}")]
    LinkTarget {
        target: String,
        problem: Box<Rejection>,
    },
    #[error("does not exist in this layer")]
    NotFound,
    #[error("is a directory")]
    IsDirectory,
    #[error("is the entry itself")]
    LinksToItself,
    #[error("symlink has no target")]
    EmptySymlinkTarget,
    #[error("device nodes are not allowed in image layers")]
    DeviceNotAllowed,
    #[error("unsupported tar entry type {:?}", char::from(*.0))]
    UnsupportedType(u8),
    #[error("the layer root can only be a directory")]
    RootNotDirectory,
    #[error("whiteout names no file")]
    EmptyWhiteout,
    #[error("bad {field}: {detail}")]
    BadField { field: &'static str, detail: String },
    #[error("extended attribute {0:?} cannot be set")]
    BadXattr(String),
}

impl Classify for UnpackError {
    fn kind(&self) -> Kind {
        match self {
            UnpackError::Rejected { .. } | UnpackError::HeaderTooLarge { .. } => {
                Kind::InvalidArgument
            }
            UnpackError::TooLarge { .. } => Kind::ResourceExhausted,
            // Only ever seen by a caller that stopped waiting, or alongside
            // the download failure that caused it.
            UnpackError::Cancelled => Kind::Unavailable,
            // An OS error means reading our own blob failed; anything else
            // (tar format, gzip or zstd data, truncation) is the layer's fault.
            UnpackError::Archive { source, .. } if source.raw_os_error().is_none() => {
                Kind::InvalidArgument
            }
            UnpackError::Archive { .. }
            | UnpackError::Destination { .. }
            | UnpackError::DestinationNotEmpty(_)
            | UnpackError::Io { .. } => Kind::Internal,
        }
    }
}

/// Reads a (decompressed) tar stream to its end and writes it under `dest`,
/// which must exist and be empty, within the limits of `control`. On error
/// `dest` holds partial output for the caller to remove; nothing outside it
/// is ever written.
pub fn unpack_layer<R: Read>(
    tar: R,
    dest: &Path,
    opts: &UnpackOptions,
    control: &LayerControl,
) -> Result<UnpackStats, UnpackError> {
    let meter = Meter {
        control,
        used: Cell::new(0),
        stopped: Cell::new(None),
        last_entry: Default::default(),
    };
    let result = unpack_metered(tar, dest, opts, &meter);
    // Whatever error the parser or a write made of it, a stop is the cause.
    match meter.stopped.get() {
        Some(Stop::Cancelled) => Err(UnpackError::Cancelled),
        Some(Stop::TooLarge(limit)) => Err(UnpackError::TooLarge {
            last_entry: meter.last_entry.take(),
            limit,
        }),
        None => result,
    }
}

fn unpack_metered<R: Read>(
    tar: R,
    dest: &Path,
    opts: &UnpackOptions,
    meter: &Meter<'_>,
) -> Result<UnpackStats, UnpackError> {
    let mut unpacker = Unpacker::new(dest, opts, meter)?;
    let budget = HeaderBudget::default();
    let reader = Budgeted {
        inner: Metered { inner: tar, meter },
        budget: &budget,
    };
    let mut archive = tar::Archive::new(reader);
    let archive_error = |last_entry, source| UnpackError::Archive { last_entry, source };
    let mut entries = archive.entries().map_err(|e| archive_error(None, e))?;
    let mut last_entry = None;
    loop {
        budget.limit(opts.max_header_bytes as u64 + HEADER_SLACK);
        let next = entries.next();
        budget.lift();
        let mut entry = match next {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(_)) if budget.exceeded.get() => {
                let limit = opts.max_header_bytes;
                return Err(UnpackError::HeaderTooLarge { last_entry, limit });
            }
            Some(Err(source)) => return Err(archive_error(last_entry, source)),
        };
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        meter.last_entry.replace(Some(name.clone()));
        unpacker
            .apply(&mut entry)
            .map_err(|failure| failure.for_entry(&name))?;
        // Drain unread data (a symlink may claim a size) so that the budget
        // window above only ever sees headers.
        io::copy(&mut entry, &mut io::sink()).map_err(|e| archive_error(Some(name.clone()), e))?;
        last_entry = Some(name);
    }
    // Tar readers stop at the end-of-archive marker; read (and count) what
    // follows too, so the caller's digest covers the whole stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| archive_error(last_entry, e))?;
    unpacker.finish()
}

enum Failure {
    Rejected(Rejection),
    Io {
        operation: &'static str,
        source: io::Error,
    },
    Archive(io::Error),
}

impl Failure {
    fn for_entry(self, entry: &str) -> UnpackError {
        let entry = entry.to_string();
        match self {
            Failure::Rejected(problem) => UnpackError::Rejected { entry, problem },
            Failure::Io { operation, source } => UnpackError::Io {
                entry,
                operation,
                source,
            },
            Failure::Archive(source) => UnpackError::Archive {
                last_entry: Some(entry),
                source,
            },
        }
    }
}

impl From<Rejection> for Failure {
    fn from(problem: Rejection) -> Failure {
        Failure::Rejected(problem)
    }
}

fn failed<E: Into<io::Error>>(operation: &'static str) -> impl FnOnce(E) -> Failure {
    move |error| Failure::Io {
        operation,
        source: error.into(),
    }
}

struct Unpacker<'a> {
    root: OwnedFd,
    options: &'a UnpackOptions,
    meter: &'a Meter<'a>,
    stats: UnpackStats,
    /// Directory mtimes, set once everything is written because creating a
    /// child changes its parent's mtime.
    directory_times: BTreeMap<PathBuf, TimeSpec>,
    copy_buffer: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    fn new(
        dest: &Path,
        options: &'a UnpackOptions,
        meter: &'a Meter<'a>,
    ) -> Result<Unpacker<'a>, UnpackError> {
        let destination_error = |source| UnpackError::Destination {
            dest: dest.to_path_buf(),
            source,
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root =
            fcntl::open(dest, flags, Mode::empty()).map_err(|e| destination_error(e.into()))?;
        let mut listing = fs::read_dir(dest).map_err(destination_error)?;
        if listing.next().is_some() {
            return Err(UnpackError::DestinationNotEmpty(dest.to_path_buf()));
        }
        Ok(Unpacker {
            root,
            options,
            meter,
            stats: UnpackStats::default(),
            directory_times: BTreeMap::new(),
            copy_buffer: vec![0; COPY_BUFFER_SIZE],
        })
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), Failure> {
        let raw_path = entry.path_bytes().into_owned();
        let typeflag = entry.header().as_old().linkflag[0];
        let entry_type = match entry.header().entry_type() {
            // Global PAX defaults; ignored, as containerd does.
            EntryType::XGlobalHeader => return Ok(()),
            // Pre-POSIX archives mark directories only with a trailing slash.
            EntryType::Regular if typeflag == 0 && raw_path.ends_with(b"/") => EntryType::Directory,
            other => other,
        };
        let path = relative_path(&raw_path)?;
        let attributes = read_attributes(entry)?;
        let (Some(parent_path), Some(name)) = (path.parent(), path.file_name()) else {
            // "./" itself carries the metadata of `dest`.
            if entry_type != EntryType::Directory {
                return Err(Rejection::RootNotDirectory.into());
            }
            let dot = OsStr::new(".");
            self.set_attributes(&self.root, dot, &path, &attributes, SFlag::S_IFDIR)?;
            self.directory_times.insert(path, attributes.mtime);
            return Ok(());
        };
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            let hidden = OsStr::from_bytes(hidden);
            return self.apply_whiteout(parent_path, hidden, &attributes);
        }
        let parent = self.open_directory(parent_path, true)?;
        let file_type = match entry_type {
            EntryType::Directory => {
                let slot = self.clear_slot(&parent, &path, name, true)?;
                if !matches!(slot, Slot::KeptDirectory) {
                    stat::mkdirat(&parent, name, Mode::S_IRWXU).map_err(failed("mkdir"))?;
                    self.stats.inodes += 1;
                }
                // The layer deleted the lower directory, then made a new one:
                // in overlayfs terms, an opaque directory.
                if matches!(slot, Slot::FreedWhiteout) {
                    set_opaque(&parent, name)?;
                }
                self.directory_times.insert(path.clone(), attributes.mtime);
                SFlag::S_IFDIR
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear_slot(&parent, &path, name, false)?;
                self.write_file(&parent, name, entry)?;
                SFlag::S_IFREG
            }
            EntryType::Symlink => {
                // The target may point anywhere: it is only ever resolved
                // inside the container, never while unpacking.
                let target = entry.link_name_bytes().unwrap_or_default();
                if target.is_empty() {
                    return Err(Rejection::EmptySymlinkTarget.into());
                }
                if target.contains(&0) {
                    return Err(Rejection::NulByte.into());
                }
                self.clear_slot(&parent, &path, name, false)?;
                unistd::symlinkat(OsStr::from_bytes(&target), &parent, name)
                    .map_err(failed("creating symlink"))?;
                self.stats.inodes += 1;
                SFlag::S_IFLNK
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                self.link(&parent, &path, name, &target)?
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (file_type, device) = self.special_file(entry)?;
                self.clear_slot(&parent, &path, name, false)?;
                let mode = Mode::S_IRUSR | Mode::S_IWUSR;
                stat::mknodat(&parent, name, file_type, mode, device).map_err(failed("mknod"))?;
                self.stats.inodes += 1;
                file_type
            }
            _ => return Err(Rejection::UnsupportedType(typeflag).into()),
        };
        self.set_attributes(&parent, name, &path, &attributes, file_type)
    }

    /// The file type and device number of a device or fifo entry.
    fn special_file<R: Read>(&self, entry: &tar::Entry<R>) -> Result<(SFlag, u64), Failure> {
        let file_type = match entry.header().entry_type() {
            EntryType::Fifo => return Ok((SFlag::S_IFIFO, 0)),
            EntryType::Char => SFlag::S_IFCHR,
            _ => SFlag::S_IFBLK,
        };
        if !self.options.allow_devices {
            return Err(Rejection::DeviceNotAllowed.into());
        }
        let number = |field, value: io::Result<Option<u32>>| match value {
            Ok(number) => Ok(u64::from(number.unwrap_or_default())),
            Err(error) => Err(bad_field(field, error)),
        };
        let major = number("device major", entry.header().device_major())?;
        let minor = number("device minor", entry.header().device_minor())?;
        Ok((file_type, stat::makedev(major, minor)))
    }

    /// Writes the entry's data, leaving aligned runs of zeros (among them
    /// the holes of a GNU sparse entry) as holes.
    fn write_file<R: Read>(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), Failure> {
        // The holes of a sparse entry are not in the stream, which the meter
        // counts: charge them up front, before spending any time on them.
        if entry.header().entry_type().is_gnu_sparse() {
            let stored = entry.header().entry_size().unwrap_or(0);
            let holes = entry.size().saturating_sub(stored);
            self.meter.charge(holes).map_err(Failure::Archive)?;
        }
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        let mode = Mode::S_IRUSR | Mode::S_IWUSR;
        let fd = fcntl::openat(parent, name, flags | OFlag::O_CLOEXEC, mode)
            .map_err(failed("creating file"))?;
        let file = File::from(fd);
        self.stats.inodes += 1;
        let mut offset = 0u64;
        let mut written_to = 0u64;
        loop {
            // Holes are produced without reading the stream: check here too.
            self.meter.check().map_err(Failure::Archive)?;
            let read = match entry.read(&mut self.copy_buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Archive(e)),
            };
            let chunk = &self.copy_buffer[..read];
            let (bytes, end) =
                write_sparse(&file, chunk, offset).map_err(failed("writing file"))?;
            self.stats.bytes += bytes;
            written_to = written_to.max(end);
            offset += read as u64;
        }
        // A file ending in a hole gets its length from truncate.
        if written_to < offset {
            file.set_len(offset).map_err(failed("extending file"))?;
        }
        Ok(())
    }

    /// Creates hardlink `name` to `target`, which must name a non-directory
    /// this layer created, reached without symlinks. Returns its file type.
    fn link(
        &mut self,
        parent: &OwnedFd,
        path: &Path,
        name: &OsStr,
        target: &[u8],
    ) -> Result<SFlag, Failure> {
        let reject = |problem| Rejection::LinkTarget {
            target: String::from_utf8_lossy(target).into_owned(),
            problem: Box::new(problem),
        };
        let target_path = relative_path(target).map_err(reject)?;
        if target_path == path {
            return Err(reject(Rejection::LinksToItself).into());
        }
        let (Some(target_parent_path), Some(target_name)) =
            (target_path.parent(), target_path.file_name())
        else {
            return Err(reject(Rejection::IsDirectory).into());
        };
        // Clear first: what is replaced may have contained the target.
        self.clear_slot(parent, path, name, false)?;
        let target_parent = match self.open_directory(target_parent_path, false) {
            Err(Failure::Rejected(problem)) => return Err(reject(problem).into()),
            other => other?,
        };
        let no_follow = AtFlags::AT_SYMLINK_NOFOLLOW;
        let file_type = match stat::fstatat(&target_parent, target_name, no_follow) {
            Ok(target_stat) => file_type(target_stat.st_mode),
            Err(Errno::ENOENT) => return Err(reject(Rejection::NotFound).into()),
            Err(errno) => return Err(failed("inspecting hardlink target")(errno)),
        };
        if file_type == SFlag::S_IFDIR {
            return Err(reject(Rejection::IsDirectory).into());
        }
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        unistd::linkat(&target_parent, target_name, parent, name, AtFlags::empty())
            .map_err(failed("creating hardlink"))?;
        self.stats.inodes += 1;
        Ok(file_type)
    }

    /// Applies ownership, then mode (chown clears setuid bits), then xattrs
    /// (chown also clears `security.capability`), then mtime except for
    /// directories, whose times are set in [`Unpacker::finish`].
    fn set_attributes(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        path: &Path,
        attributes: &Attributes,
        file_type: SFlag,
    ) -> Result<(), Failure> {
        let (uid, gid) = (Some(attributes.uid), Some(attributes.gid));
        unistd::fchownat(parent, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(failed("chown"))?;
        // Symlinks have no mode of their own on Linux.
        if file_type != SFlag::S_IFLNK {
            stat::fchmodat(parent, name, attributes.mode, FchmodatFlags::FollowSymlink)
                .map_err(failed("chmod"))?;
        }
        for (key, value) in &attributes.xattrs {
            if !xattr_is_wanted(key, file_type) {
                tracing::debug!(path = %path.display(), "skipping extended attribute {key:?}");
                continue;
            }
            match set_xattr_at(parent, name, key, value) {
                Ok(()) => {}
                Err(Errno::EOPNOTSUPP) => {
                    tracing::warn!(path = %path.display(), "extended attribute {key:?} unsupported here; skipped");
                }
                Err(Errno::EINVAL | Errno::ERANGE | Errno::E2BIG) => {
                    return Err(Rejection::BadXattr(key.clone()).into())
                }
                Err(errno) => return Err(failed("setting extended attribute")(errno)),
            }
        }
        if file_type != SFlag::S_IFDIR {
            let mtime = &attributes.mtime;
            stat::utimensat(parent, name, mtime, mtime, UtimensatFlags::NoFollowSymlink)
                .map_err(failed("setting modification time"))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<UnpackStats, UnpackError> {
        let directory_times = std::mem::take(&mut self.directory_times);
        // Children sort after their parents: in reverse, the deepest go first.
        for (path, mtime) in directory_times.iter().rev() {
            self.set_directory_time(path, mtime)
                .map_err(|failure| failure.for_entry(&path.display().to_string()))?;
        }
        Ok(self.stats)
    }

    fn set_directory_time(&mut self, path: &Path, mtime: &TimeSpec) -> Result<(), Failure> {
        let parent = self.open_directory(path.parent().unwrap_or(path), false)?;
        let name = path.file_name().unwrap_or(OsStr::new("."));
        stat::utimensat(&parent, name, mtime, mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(failed("setting directory modification time"))
    }
}

#[cfg(test)]
mod tests;
