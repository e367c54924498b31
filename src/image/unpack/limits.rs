//! The bounds of one unpack: the layer's and the image's byte limits, the
//! allowance for tar headers, and cancellation.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Besides extension bodies, the parser reads between two entries some padding,
/// up to four 512-byte headers (long name, long link, PAX, the entry itself)
/// and possibly GNU sparse maps; this allowance covers those.
pub(super) const HEADER_SLACK: u64 = 16 * 512;

pub(super) const GIB: u64 = 1024 * 1024 * 1024;

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
    pub(super) fn charge(&self, bytes: u64) -> bool {
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

/// Why [`Meter`] stopped the stream.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stop {
    TooLarge(ByteLimit),
    Cancelled,
}

/// Counts unpacked bytes against the layer's and the image's limits and
/// watches for cancellation. Once it stops, every read fails, and
/// [`unpack_layer`] reports the stop whatever became of that read error.
pub(super) struct Meter<'c> {
    pub(super) control: &'c LayerControl,
    pub(super) used: Cell<u64>,
    pub(super) stopped: Cell<Option<Stop>>,
    pub(super) last_entry: std::cell::RefCell<Option<String>>,
}

impl Meter<'_> {
    pub(super) fn stop(&self, why: Stop) -> io::Error {
        if self.stopped.get().is_none() {
            self.stopped.set(Some(why));
        }
        io::Error::other(match why {
            Stop::TooLarge(_) => "layer exceeds its unpacked size limit",
            Stop::Cancelled => "unpack cancelled",
        })
    }

    /// Fails if the unpack was stopped or cancelled.
    pub(super) fn check(&self) -> io::Result<()> {
        if let Some(why) = self.stopped.get() {
            return Err(self.stop(why));
        }
        if self.control.cancel.is_cancelled() {
            return Err(self.stop(Stop::Cancelled));
        }
        Ok(())
    }

    /// Counts `bytes` more unpacked bytes.
    pub(super) fn charge(&self, bytes: u64) -> io::Result<()> {
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
pub(super) struct Metered<'m, 'c, R> {
    pub(super) inner: R,
    pub(super) meter: &'m Meter<'c>,
}

impl<R: Read> Read for Metered<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.meter.check()?;
        let read = self.inner.read(buf)?;
        self.meter.charge(read as u64)?;
        Ok(read)
    }
}

/// Bounds what the tar parser may read while producing the next entry. The
/// `tar` crate buffers PAX and GNU long-name bodies whole before yielding the
/// entry they describe, so unbounded they would let a layer exhaust memory.
pub(super) struct HeaderBudget {
    pub(super) remaining: Cell<u64>,
    pub(super) exceeded: Cell<bool>,
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
    pub(super) fn limit(&self, bytes: u64) {
        self.remaining.set(bytes);
    }

    /// No limit while entry data is read: that is streamed, never buffered.
    pub(super) fn lift(&self) {
        self.remaining.set(u64::MAX);
    }
}

pub(super) struct Budgeted<'b, R> {
    pub(super) inner: R,
    pub(super) budget: &'b HeaderBudget,
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
