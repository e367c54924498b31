//! Pulling an image: resolve the manifest for this platform, fetch the
//! config, stream every missing layer through digest verification straight
//! into its unpacked directory, then publish the image record.
//!
//! Each layer is unpacked on a blocking thread, within the size limits of
//! [`UnpackOptions`]. Dropping a layer's future (the client went away, the
//! pull stalled, another layer failed) cancels its thread, which then removes
//! its partial layer; a failed pull waits for that before it answers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::digest::{Digest, DigestWriter};
use super::layers::{LayerUsage, PendingLayer};
use super::manifest::ConfigProbe;
use super::manifest::{self, Descriptor, Manifest, Parsed, Platform};
use super::metadata::ImageRecord;
use super::progress::{InFlight, Progress};
use super::reference::Reference;
use super::registry::{Credentials, Repository};
use super::unpack::{self, Cancel, ImageBudget, LayerControl, UnpackOptions};
use super::{ImageError, ImageService};
use crate::metrics::{self, PullResult};
use crate::sync::TaskFailure;

const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Channel depth between the download and the unpacker: enough to keep the
/// network busy while a large file is written, small enough to bound memory.
const CHUNKS_IN_FLIGHT: usize = 32;

/// What the layers of one pull share.
struct PullShared {
    /// Unpacked bytes of all the layers this pull unpacks.
    budget: Arc<ImageBudget>,
    /// Cloned into every unpack thread, which drops it last, after removing
    /// its layer if unfinished: once every clone is gone, no thread of this
    /// pull writes anything any more.
    unpacking: mpsc::Sender<()>,
}

impl ImageService {
    /// Pulls `reference` and returns the image ID. While it runs, the
    /// pull is listed by [`ImageService::pulls_in_progress`].
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Credentials,
    ) -> Result<Digest, ImageError> {
        let reference = Reference::parse(reference).map_err(ImageError::InvalidReference)?;
        // A second pull of the same name waits and then finds the layers in
        // place: each blob is fetched once.
        let _same_name = self.pull_locks.lock(&reference.to_string()).await;
        let in_flight = self.pulls_in_flight.begin(reference.to_string());
        // Counted as cancelled unless it ends here.
        let mut ended = PullEnd(PullResult::Cancelled);
        let pulled = self.pull_listed(&reference, credentials, &in_flight).await;
        ended.0 = match pulled {
            Ok(_) => PullResult::Success,
            Err(_) => PullResult::Failure,
        };
        pulled
    }

    async fn pull_listed(
        &self,
        reference: &Reference,
        credentials: Credentials,
        in_flight: &InFlight,
    ) -> Result<Digest, ImageError> {
        let repository =
            self.resolver()
                .repository(reference.domain(), reference.path(), credentials)?;

        let progress = &in_flight.progress;
        let top = repository.fetch_manifest(&reference.object()).await?;
        let (platform_manifest, index) = match manifest::parse(&top.media_type, &top.bytes)? {
            Parsed::Manifest(_) => (top, None),
            Parsed::Index(entries) => {
                let chosen = manifest::select_platform(&entries, &Platform::host())?;
                let fetched = repository
                    .fetch_manifest(&chosen.digest.to_string())
                    .await?;
                (fetched, Some((top.digest, top.bytes)))
            }
        };
        let manifest_digest = platform_manifest.digest;
        let manifest_bytes = platform_manifest.bytes;
        let Parsed::Manifest(manifest) =
            manifest::parse(&platform_manifest.media_type, &manifest_bytes)?
        else {
            return Err(ImageError::NestedIndex);
        };
        let config_bytes = repository
            .fetch_small_blob(&manifest.config.digest, manifest::MAX_CONFIG_BYTES)
            .await?;
        let config = ConfigProbe::parse(&config_bytes).map_err(ImageError::BadConfig)?;
        if config.diff_ids().len() != manifest.layers.len() {
            return Err(ImageError::LayerCountMismatch {
                manifest: manifest.layers.len(),
                config: config.diff_ids().len(),
            });
        }

        let diff_ids = config.diff_ids().to_vec();
        // Claimed before looking at what is on disk, so a concurrent removal
        // cannot collect a layer or blob this pull decided to reuse.
        let claimed = diff_ids
            .iter()
            .cloned()
            .chain([manifest_digest.clone(), manifest.config.digest.clone()]);
        let _lease = self
            .leases
            .acquire(claimed.chain(index.as_ref().map(|(d, _)| d.clone())));
        progress.expect(manifest.layers_size(), manifest.layers.len());
        let (unpacking, mut unpackers_gone) = mpsc::channel::<()>(1);
        let shared = PullShared {
            budget: self.options.unpack.image_budget(),
            unpacking,
        };
        let fetch_layers = self.fetch_layers(&repository, &manifest, &diff_ids, progress, &shared);
        let fetched = tokio::select! {
            result = fetch_layers => result,
            stalled = self.watch_progress(progress) => Err(stalled),
        };
        // On failure the layers' futures are gone, which cancelled their
        // unpack threads: wait until those have stopped and removed their
        // partial layers, so that nothing is left once the error is out.
        drop(shared);
        while unpackers_gone.recv().await.is_some() {}
        fetched?;

        let top_digest = index
            .as_ref()
            .map(|(d, _)| d.clone())
            .unwrap_or_else(|| manifest_digest.clone());
        let mut blobs = vec![
            (manifest_digest.clone(), manifest_bytes),
            (manifest.config.digest.clone(), config_bytes),
        ];
        blobs.extend(index);
        for (digest, bytes) in &blobs {
            self.content.put(digest, bytes)?;
        }
        let record = ImageRecord {
            id: manifest.config.digest.clone(),
            repo_tags: reference.tagged().into_iter().collect(),
            repo_digests: vec![reference.with_digest(&top_digest)],
            manifest: manifest_digest,
            blobs: blobs.into_iter().map(|(d, _)| d).collect(),
            layers: diff_ids,
            size: manifest.image_size(),
            user: config.user().to_string(),
            pinned: false,
        };
        let id = record.id.clone();
        self.commit(|index| index.add(record)).await?;
        tracing::info!(
            image = %reference,
            id = %id,
            mib = format!("{:.1}", manifest.layers_size() as f64 / 1048576.0),
            elapsed_ms = progress.started.elapsed().as_millis() as u64,
            "pulled"
        );
        Ok(id)
    }

    async fn fetch_layers(
        &self,
        repository: &Repository,
        manifest: &Manifest,
        diff_ids: &[Digest],
        progress: &Arc<Progress>,
        shared: &PullShared,
    ) -> Result<(), ImageError> {
        // Built up front: a closure inside the stream type trips the
        // compiler's Send inference for the calling RPC future.
        let fetches: Vec<_> = manifest
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(descriptor, diff_id)| {
                self.fetch_layer(repository, descriptor, diff_id, progress, shared)
            })
            .collect();
        stream::iter(fetches)
            .buffer_unordered(self.options.max_concurrent_downloads)
            .try_collect::<()>()
            .await
    }

    async fn fetch_layer(
        &self,
        repository: &Repository,
        descriptor: &Descriptor,
        diff_id: &Digest,
        progress: &Arc<Progress>,
        shared: &PullShared,
    ) -> Result<(), ImageError> {
        let _same_layer = self.layer_locks.lock(diff_id).await;
        if self.layers.contains(diff_id) {
            progress.bytes.fetch_add(descriptor.size, Ordering::Relaxed);
            progress.layers.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let cancel = Cancel::default();
        // Whatever drops this future stops the unpack thread within one
        // buffer of data; the thread then removes the partial layer.
        let _stop_unpacker = cancel.on_drop();
        let (chunks, receiver) = mpsc::channel::<Option<Bytes>>(CHUNKS_IN_FLIGHT);
        let unpacker = spawn_unpacker(UnpackJob {
            receiver,
            pending: self.layers.begin()?,
            options: self.options.unpack.clone(),
            control: LayerControl {
                limit: self.options.unpack.layer_limit(descriptor.size),
                image: Arc::clone(&shared.budget),
                cancel: cancel.clone(),
            },
            layer: descriptor.digest.clone(),
            diff_id: diff_id.clone(),
            running: shared.unpacking.clone(),
        });

        let downloaded = self
            .download(repository, descriptor, chunks, progress)
            .await;
        if downloaded.is_err() {
            // Not after the chunks still queued: they are not trustworthy.
            cancel.cancel();
        }
        // The unpacker sees the end of the stream only once `download` has
        // verified it all; wait for it either way so no thread writes on.
        let unpacked = unpacker
            .await
            .map_err(|e| ImageError::Task(e.to_string()))?;
        let (pending, usage) = match (downloaded, unpacked) {
            (Ok(()), Ok(unpacked)) => unpacked,
            (Err(error), Ok((pending, _))) => {
                discard(pending).await;
                return Err(error);
            }
            // A download failure causes the unpacker's: report the cause.
            (Err(error), Err(_)) | (Ok(()), Err(error)) => return Err(error),
        };
        // Flushes the layer's filesystem: seconds for a big layer, so not
        // on an async worker.
        let (layers, committed_id) = (Arc::clone(&self.layers), diff_id.clone());
        ImageError::blocking("committing the layer", move || {
            layers.commit(pending, &committed_id, usage)
        })
        .await?;
        metrics::global().layer_unpacked(usage.bytes);
        progress.layers.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Streams one blob into `chunks`, verifying size and digest; only a
    /// verified blob gets the final `None`.
    async fn download(
        &self,
        repository: &Repository,
        descriptor: &Descriptor,
        chunks: mpsc::Sender<Option<Bytes>>,
        progress: &Arc<Progress>,
    ) -> Result<(), ImageError> {
        let received = progress.downloading(&descriptor.digest);
        let mut blob = repository
            .fetch_blob(&descriptor.digest, descriptor.size)
            .await?;
        let mut digest = DigestWriter::default();
        while let Some(chunk) = blob.next().await {
            let chunk = chunk?;
            digest.update(&chunk);
            if digest.len() > descriptor.size {
                return Err(ImageError::BlobSize {
                    digest: descriptor.digest.clone(),
                    expected: descriptor.size,
                    actual: digest.len(),
                });
            }
            received.add(chunk.len() as u64);
            self.bytes_received
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            metrics::global().add_pulled_bytes(chunk.len() as u64);
            if chunks.send(Some(chunk)).await.is_err() {
                // The unpacker stopped early: its error is the one to report.
                return Ok(());
            }
        }
        if digest.len() != descriptor.size {
            return Err(ImageError::BlobSize {
                digest: descriptor.digest.clone(),
                expected: descriptor.size,
                actual: digest.len(),
            });
        }
        let actual = digest.finish();
        if actual != descriptor.digest {
            return Err(ImageError::BlobDigest {
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        // If the unpacker has stopped, its error is the one to report.
        let _ = chunks.send(None).await;
        Ok(())
    }

    /// Logs progress, warns when this pull's downloads receive nothing for
    /// the stall warning time, and resolves (with an error) only when no
    /// byte has arrived for the stall timeout. For the timeout, bytes
    /// received by any pull count, so a pull waiting for a layer another
    /// pull is fetching is not stalled.
    async fn watch_progress(&self, progress: &Progress) -> ImageError {
        let tick = PROGRESS_INTERVAL
            .min(self.options.stall_timeout / 2)
            .min(self.options.stall_warning / 2)
            .max(Duration::from_millis(100));
        let mut last_bytes = self.bytes_received.load(Ordering::Relaxed);
        let mut last_change = Instant::now();
        let mut last_log = Instant::now();
        let mut own = StallWatch::new(progress.bytes.load(Ordering::Relaxed));
        loop {
            tokio::time::sleep(tick).await;
            let bytes = self.bytes_received.load(Ordering::Relaxed);
            if bytes != last_bytes {
                last_bytes = bytes;
                last_change = Instant::now();
            } else if last_change.elapsed() >= self.options.stall_timeout {
                return ImageError::Stalled {
                    reference: progress.reference.clone(),
                    timeout: self.options.stall_timeout,
                };
            }
            let own_bytes = progress.bytes.load(Ordering::Relaxed);
            if own.stalled(own_bytes, self.options.stall_warning) {
                // Only layers this pull downloads itself: one waiting for
                // another pull's layer is not stalled by its own doing.
                let layers = progress.layers_downloading();
                if !layers.is_empty() {
                    own.warned = true;
                    for (layer, layer_bytes) in layers {
                        tracing::warn!(
                            image = %progress.reference,
                            %layer,
                            layer_bytes,
                            pull_bytes = own_bytes,
                            stalled_s = own.since.elapsed().as_secs(),
                            "pull stalled: no data received"
                        );
                    }
                }
            }
            if last_log.elapsed() >= PROGRESS_INTERVAL {
                progress.log();
                last_log = Instant::now();
            }
        }
    }
}

/// When one pull's own byte count last moved, and whether its stall has
/// been reported.
struct StallWatch {
    bytes: u64,
    since: Instant,
    warned: bool,
}

impl StallWatch {
    fn new(bytes: u64) -> StallWatch {
        StallWatch {
            bytes,
            since: Instant::now(),
            warned: false,
        }
    }

    /// Whether the count has stood still for `limit` and this stall is
    /// not reported yet.
    fn stalled(&mut self, bytes: u64, limit: Duration) -> bool {
        if bytes != self.bytes {
            *self = StallWatch::new(bytes);
            return false;
        }
        !self.warned && self.since.elapsed() >= limit
    }
}

/// Counts how a pull ended when dropped: cancelled unless told otherwise.
struct PullEnd(PullResult);

impl Drop for PullEnd {
    fn drop(&mut self) {
        metrics::global().pull_ended(self.0);
    }
}

/// Removes a layer that will not be committed, off the async threads.
async fn discard(pending: PendingLayer) {
    let _ = tokio::task::spawn_blocking(move || drop(pending)).await;
}

/// One layer for [`spawn_unpacker`].
struct UnpackJob {
    receiver: mpsc::Receiver<Option<Bytes>>,
    pending: PendingLayer,
    options: UnpackOptions,
    control: LayerControl,
    /// The blob's digest, for errors.
    layer: Digest,
    diff_id: Digest,
    running: mpsc::Sender<()>,
}

/// Unpacks the chunks arriving on the job's channel on a blocking thread and
/// checks the layer's diff ID. Returns the unpacked layer, or removes it
/// (still on that thread) and returns the error.
fn spawn_unpacker(
    job: UnpackJob,
) -> tokio::task::JoinHandle<Result<(PendingLayer, LayerUsage), ImageError>> {
    tokio::task::spawn_blocking(move || {
        let UnpackJob {
            receiver,
            pending,
            options,
            control,
            layer,
            diff_id,
            running,
        } = job;
        let unpacked = unpack_stream(receiver, &pending.fs_dir(), &options, &control, &layer);
        let outcome = match unpacked {
            Ok((usage, actual)) if actual == diff_id => Ok((pending, usage)),
            failed => {
                // Removed before the pull hears that this thread is done.
                drop(pending);
                Err(match failed {
                    Ok((_, actual)) => ImageError::DiffIdMismatch {
                        layer,
                        expected: diff_id,
                        actual,
                    },
                    Err(error) => error,
                })
            }
        };
        drop(running);
        outcome
    })
}

/// Decompresses, hashes and unpacks a layer arriving on `receiver`; returns
/// its usage and its diff ID.
fn unpack_stream(
    receiver: mpsc::Receiver<Option<Bytes>>,
    dest: &std::path::Path,
    options: &UnpackOptions,
    control: &LayerControl,
    layer: &Digest,
) -> Result<(LayerUsage, Digest), ImageError> {
    let compressed = ChannelReader {
        receiver,
        current: Bytes::new(),
        ended: false,
    };
    let decompressed = unpack::decompressed(compressed).map_err(ImageError::Decompress)?;
    let mut hashing = HashingReader {
        inner: decompressed,
        digest: DigestWriter::default(),
    };
    // Reads the stream to its end: the diff ID covers every byte, the
    // padding after the tar's end marker included.
    let stats = unpack::unpack_layer(&mut hashing, dest, options, control).map_err(|source| {
        ImageError::Unpack {
            layer: layer.clone(),
            source,
        }
    })?;
    let usage = LayerUsage {
        bytes: stats.bytes,
        inodes: stats.inodes,
    };
    Ok((usage, hashing.digest.finish()))
}

/// Blocking `Read` over chunks from an async channel; `None` marks the end.
struct ChannelReader {
    receiver: mpsc::Receiver<Option<Bytes>>,
    current: Bytes,
    ended: bool,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.receiver.blocking_recv() {
                Some(Some(chunk)) => self.current = chunk,
                Some(None) => self.ended = true,
                // Not an end: the download failed or was dropped.
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the layer download stopped before its end",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

struct HashingReader<R> {
    inner: R,
    digest: DigestWriter,
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}
