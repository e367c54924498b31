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

mod decompress;

pub use decompress::decompressed;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::libc;
use nix::sys::stat::{self, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};
use tar::EntryType;

use crate::error::{Classify, Kind};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// What follows [`WHITEOUT_PREFIX`] in `.wh..wh..opq`, the opaque-directory marker.
const OPAQUE_MARKER: &[u8] = b".wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Besides extension bodies, the parser reads between two entries some padding,
/// up to four 512-byte headers (long name, long link, PAX, the entry itself)
/// and possibly GNU sparse maps; this allowance covers those.
const HEADER_SLACK: u64 = 16 * 512;
const COPY_BUFFER_SIZE: usize = 128 * 1024;
/// Zero runs this long, aligned in the file, are left as holes.
const HOLE_BLOCK: usize = 4096;
static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

const GIB: u64 = 1024 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Create block and character devices. Off by default: layers have no
    /// business shipping them. Whiteouts are created either way.
    pub allow_devices: bool,
    /// Cap on the PAX and GNU long-name/long-link data describing one entry,
    /// which the parser must hold in memory.
    pub max_header_bytes: usize,
    /// `[image] max_layer_unpacked_bytes`: what one layer may unpack to.
    /// Unpacked bytes are those of the uncompressed stream plus the holes of
    /// sparse entries.
    pub max_layer_bytes: u64,
    /// `[image] max_image_unpacked_bytes`: what all the layers one pull
    /// unpacks may add up to (layers already stored are not unpacked again).
    pub max_image_bytes: u64,
    /// `[image] max_unpack_ratio` and `[image] unpack_ratio_allowance_bytes`:
    /// a layer of `n` compressed bytes may unpack to `n * max_ratio +
    /// ratio_allowance` bytes. The allowance lets small layers of, say,
    /// zero-filled files through.
    pub max_ratio: u64,
    pub ratio_allowance: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            allow_devices: false,
            max_header_bytes: 1024 * 1024,
            max_layer_bytes: 32 * GIB,
            max_image_bytes: 64 * GIB,
            max_ratio: 100,
            ratio_allowance: GIB,
        }
    }
}

impl UnpackOptions {
    /// The tighter of the per-layer limits, for a layer of `compressed` bytes.
    pub fn layer_limit(&self, compressed: u64) -> ByteLimit {
        let by_ratio = compressed
            .saturating_mul(self.max_ratio)
            .saturating_add(self.ratio_allowance);
        if by_ratio < self.max_layer_bytes {
            ByteLimit {
                bytes: by_ratio,
                setting: LimitSetting::Ratio {
                    ratio: self.max_ratio,
                    compressed,
                    allowance: self.ratio_allowance,
                },
            }
        } else {
            ByteLimit {
                bytes: self.max_layer_bytes,
                setting: LimitSetting::Layer,
            }
        }
    }

    /// A budget for all the layers of one image.
    pub fn image_budget(&self) -> Arc<ImageBudget> {
        Arc::new(ImageBudget::new(self.max_image_bytes))
    }

    /// Control for unpacking a layer of `compressed` bytes on its own: a
    /// fresh image budget, never cancelled.
    pub fn standalone(&self, compressed: u64) -> LayerControl {
        LayerControl {
            limit: self.layer_limit(compressed),
            image: self.image_budget(),
            cancel: Cancel::default(),
        }
    }
}

/// Which configuration setting a [`ByteLimit`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSetting {
    /// `[image] max_layer_unpacked_bytes`.
    Layer,
    /// `[image] max_unpack_ratio` times the compressed size, plus
    /// `[image] unpack_ratio_allowance_bytes`.
    Ratio {
        ratio: u64,
        compressed: u64,
        allowance: u64,
    },
    /// `[image] max_image_unpacked_bytes`.
    Image,
}

impl LimitSetting {
    /// The configuration key that raises this limit.
    pub fn config_key(&self) -> &'static str {
        match self {
            LimitSetting::Layer => "[image] max_layer_unpacked_bytes",
            LimitSetting::Ratio { .. } => "[image] max_unpack_ratio",
            LimitSetting::Image => "[image] max_image_unpacked_bytes",
        }
    }
}

impl fmt::Display for LimitSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitSetting::Layer => f.write_str(self.config_key()),
            LimitSetting::Ratio {
                ratio,
                compressed,
                allowance,
            } => write!(
                f,
                "{} = {ratio} times the {compressed} compressed bytes, plus \
                 [image] unpack_ratio_allowance_bytes = {allowance}",
                self.config_key()
            ),
            LimitSetting::Image => write!(
                f,
                "{}, for all the layers of the image together",
                self.config_key()
            ),
        }
    }
}

/// A number of unpacked bytes not to exceed, and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteLimit {
    pub bytes: u64,
    pub setting: LimitSetting,
}

/// Unpacked bytes shared by the layers of one image, which may be unpacked
/// at the same time on different threads.
#[derive(Debug)]
pub struct ImageBudget {
    limit: u64,
    used: AtomicU64,
}

impl ImageBudget {
    pub fn new(limit: u64) -> ImageBudget {
        ImageBudget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Counts `bytes` more; false once the total exceeds the limit.
    fn charge(&self, bytes: u64) -> bool {
        let add = |used: u64| Some(used.saturating_add(bytes));
        let before = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, add);
        before.unwrap_or(u64::MAX).saturating_add(bytes) <= self.limit
    }
}

/// Asks a running unpack to stop; it does within one buffer of data and
/// fails with [`UnpackError::Cancelled`]. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A guard that cancels when dropped: held by the future that waits for
    /// the unpack, it stops the unpack if that future is dropped.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The limits one layer's unpack runs under, and how to stop it.
#[derive(Debug, Clone)]
pub struct LayerControl {
    pub limit: ByteLimit,
    pub image: Arc<ImageBudget>,
    pub cancel: Cancel,
}

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

/// Why [`Meter`] stopped the stream.
#[derive(Debug, Clone, Copy)]
enum Stop {
    TooLarge(ByteLimit),
    Cancelled,
}

/// Counts unpacked bytes against the layer's and the image's limits and
/// watches for cancellation. Once it stops, every read fails, and
/// [`unpack_layer`] reports the stop whatever became of that read error.
struct Meter<'c> {
    control: &'c LayerControl,
    used: Cell<u64>,
    stopped: Cell<Option<Stop>>,
    last_entry: std::cell::RefCell<Option<String>>,
}

impl Meter<'_> {
    fn stop(&self, why: Stop) -> io::Error {
        if self.stopped.get().is_none() {
            self.stopped.set(Some(why));
        }
        io::Error::other(match why {
            Stop::TooLarge(_) => "layer exceeds its unpacked size limit",
            Stop::Cancelled => "unpack cancelled",
        })
    }

    /// Fails if the unpack was stopped or cancelled.
    fn check(&self) -> io::Result<()> {
        if let Some(why) = self.stopped.get() {
            return Err(self.stop(why));
        }
        if self.control.cancel.is_cancelled() {
            return Err(self.stop(Stop::Cancelled));
        }
        Ok(())
    }

    /// Counts `bytes` more unpacked bytes.
    fn charge(&self, bytes: u64) -> io::Result<()> {
        self.check()?;
        let used = self.used.get().saturating_add(bytes);
        self.used.set(used);
        if used > self.control.limit.bytes {
            return Err(self.stop(Stop::TooLarge(self.control.limit)));
        }
        if !self.control.image.charge(bytes) {
            let limit = ByteLimit {
                bytes: self.control.image.limit,
                setting: LimitSetting::Image,
            };
            return Err(self.stop(Stop::TooLarge(limit)));
        }
        Ok(())
    }
}

/// The uncompressed stream, counted by a [`Meter`].
struct Metered<'m, 'c, R> {
    inner: R,
    meter: &'m Meter<'c>,
}

impl<R: Read> Read for Metered<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.meter.check()?;
        let read = self.inner.read(buf)?;
        self.meter.charge(read as u64)?;
        Ok(read)
    }
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

/// Ownership, permissions, times and xattrs of one entry.
struct Attributes {
    mode: Mode,
    uid: Uid,
    gid: Gid,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// What [`Unpacker::clear_slot`] found where a new entry goes.
enum Slot {
    Free,
    KeptDirectory,
    /// A whiteout from earlier in this layer was removed.
    FreedWhiteout,
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

    fn apply_whiteout(
        &mut self,
        parent_path: &Path,
        hidden: &OsStr,
        attributes: &Attributes,
    ) -> Result<(), Failure> {
        let parent = self.open_directory(parent_path, true)?;
        match hidden.as_bytes() {
            OPAQUE_MARKER => return set_opaque(&parent, OsStr::new(".")),
            aufs if aufs.starts_with(WHITEOUT_PREFIX) => {
                tracing::debug!(dir = %parent_path.display(), "ignoring AUFS metadata {hidden:?}");
                return Ok(());
            }
            b"" | b"." | b".." => return Err(Rejection::EmptyWhiteout.into()),
            _ => {}
        }
        // OCI: a whiteout hides lower layers only, never its own layer's
        // entries; over a directory of this layer that means "opaque".
        match stat::fstatat(&parent, hidden, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(existing) if file_type(existing.st_mode) == SFlag::S_IFDIR => {
                return set_opaque(&parent, hidden);
            }
            Ok(_) => return Ok(()),
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(failed("inspecting whiteout target")(errno)),
        }
        let whiteout = stat::makedev(0, 0);
        stat::mknodat(&parent, hidden, SFlag::S_IFCHR, Mode::empty(), whiteout)
            .map_err(failed("creating whiteout device"))?;
        let (uid, gid) = (Some(attributes.uid), Some(attributes.gid));
        unistd::fchownat(&parent, hidden, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(failed("chown"))?;
        self.stats.inodes += 1;
        Ok(())
    }

    /// Opens the directory at `relative` beneath `dest`, refusing symlinks
    /// anywhere on the way and creating missing directories (mode 0755) if asked.
    fn open_directory(
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
    fn clear_slot(
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

/// The entry's path relative to the layer root ("" for the root itself),
/// refusing anything that could leave it.
fn relative_path(raw: &[u8]) -> Result<PathBuf, Rejection> {
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

fn read_attributes<R: Read>(entry: &mut tar::Entry<R>) -> Result<Attributes, Rejection> {
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

fn bad_field(field: &'static str, error: impl ToString) -> Rejection {
    let detail = error.to_string();
    Rejection::BadField { field, detail }
}

/// `seconds[.fraction]`, possibly negative, as PAX writes times.
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
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

fn file_type(mode: libc::mode_t) -> SFlag {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits())
}

/// Which extended attributes from a layer we set. `trusted.*` is refused
/// because overlayfs itself reads it (a layer could forge opaque directories
/// or redirects); other `security.*` labels belong to the host's LSM policy.
fn xattr_is_wanted(name: &str, file_type: SFlag) -> bool {
    match name {
        "security.capability" | "system.posix_acl_access" | "system.posix_acl_default" => true,
        // The kernel allows user.* only on regular files and directories.
        _ if name.starts_with("user.") => matches!(file_type, SFlag::S_IFREG | SFlag::S_IFDIR),
        _ => false,
    }
}

/// Marks directory `name` in `parent` opaque for overlayfs.
fn set_opaque(parent: &OwnedFd, name: &OsStr) -> Result<(), Failure> {
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
fn set_xattr_at(parent: &OwnedFd, name: &OsStr, key: &str, value: &[u8]) -> Result<(), Errno> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let target = fcntl::openat(parent, name, flags, Mode::empty())?;
    let link = format!("/proc/self/fd/{}", target.as_raw_fd());
    setxattr(Path::new(&link), key, value)
}

/// nix has no xattr calls, so this calls libc directly. Follows symlinks:
/// meant for `/proc/self/fd` links only.
#[allow(unsafe_code)]
fn setxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), Errno> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let (value, size) = (value.as_ptr().cast(), value.len());
    // SAFETY: `path` and `name` are NUL-terminated strings that outlive the
    // call, and `value` and `size` describe one live slice; the kernel only
    // reads from all three.
    let result = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), value, size, 0) };
    Errno::result(result).map(drop)
}

/// Writes `data`, which belongs at `offset` in `file`, skipping the blocks
/// (aligned in the file) that hold only zeros. Returns the bytes written and
/// the file offset just past the last one.
fn write_sparse(file: &File, data: &[u8], offset: u64) -> io::Result<(u64, u64)> {
    let (mut written, mut end) = (0u64, 0u64);
    let mut run: Option<usize> = None;
    let mut position = 0;
    let mut flush = |from: usize, to: usize| -> io::Result<()> {
        file.write_all_at(&data[from..to], offset + from as u64)?;
        written += (to - from) as u64;
        end = offset + to as u64;
        Ok(())
    };
    while position < data.len() {
        let in_block = ((offset + position as u64) % HOLE_BLOCK as u64) as usize;
        let block_end = data.len().min(position + HOLE_BLOCK - in_block);
        let block = &data[position..block_end];
        let zero = block == &ZEROS[..block.len()];
        match (zero, run) {
            (true, Some(from)) => {
                flush(from, position)?;
                run = None;
            }
            (false, None) => run = Some(position),
            _ => {}
        }
        position = block_end;
    }
    if let Some(from) = run {
        flush(from, data.len())?;
    }
    Ok((written, end))
}

/// Bounds what the tar parser may read while producing the next entry. The
/// `tar` crate buffers PAX and GNU long-name bodies whole before yielding the
/// entry they describe, so unbounded they would let a layer exhaust memory.
struct HeaderBudget {
    remaining: Cell<u64>,
    exceeded: Cell<bool>,
}

impl Default for HeaderBudget {
    fn default() -> Self {
        HeaderBudget {
            remaining: Cell::new(u64::MAX),
            exceeded: Cell::new(false),
        }
    }
}

impl HeaderBudget {
    fn limit(&self, bytes: u64) {
        self.remaining.set(bytes);
    }

    /// No limit while entry data is read: that is streamed, never buffered.
    fn lift(&self) {
        self.remaining.set(u64::MAX);
    }
}

struct Budgeted<'b, R> {
    inner: R,
    budget: &'b HeaderBudget,
}

impl<R: Read> Read for Budgeted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.budget.remaining.get();
        if remaining == 0 && !buf.is_empty() {
            self.budget.exceeded.set(true);
            return Err(io::Error::other("tar extension headers exceed the limit"));
        }
        let allowed = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let read = self.inner.read(&mut buf[..allowed])?;
        self.budget.remaining.set(remaining - read as u64);
        Ok(read)
    }
}

#[cfg(test)]
mod tests;
