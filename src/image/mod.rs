//! Images: pull, list, status, remove, and the storage behind them.
//!
//! Storage under `<root>/image`: `content/` (manifests and configs by
//! digest), `layers/` (one unpacked directory per layer) and `images.json`
//! (records and names, replaced atomically). An image record is written
//! only once everything it points at is on disk, and whatever no record
//! points at is collected, at start-up too, so `kill -9` at any moment of a
//! pull leaves the whole image or nothing.

pub mod content;
pub mod digest;
pub mod layers;
pub mod manifest;
pub mod metadata;
mod progress;
mod pull;
pub mod reference;
pub mod registry;
pub mod unpack;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use content::{ContentError, ContentStore};
use digest::Digest;
use layers::LayerStore;
use metadata::{ImageIndex, ImageRecord, Lookup};
pub use progress::PullProgress;
use progress::PullsInFlight;
use reference::{Reference, ReferenceError};
use registry::{RegistryConfig, RegistryError, Resolver};
use unpack::{UnpackError, UnpackOptions};

use crate::error::{Classify, Kind};
use crate::store::StoreError;
use crate::sync::{KeyedLocks, Leases};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference: {0}")]
    InvalidReference(#[source] ReferenceError),
    #[error("image ID prefix {0:?} matches more than one image")]
    AmbiguousId(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("an index points at another index; only one level is supported")]
    NestedIndex,
    #[error("malformed image config: {0}")]
    BadConfig(#[source] serde_json::Error),
    #[error("manifest lists {manifest} layers but the config has {config} diff IDs")]
    LayerCountMismatch { manifest: usize, config: usize },
    #[error("blob {digest}: expected {expected} bytes, received {actual}")]
    BlobSize {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob content does not match its digest {expected} (got {actual})")]
    BlobDigest { expected: Digest, actual: Digest },
    #[error("layer {layer}: uncompressed content is {actual}, the config says {expected}")]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("decompressing layer: {0}")]
    Decompress(#[source] std::io::Error),
    #[error("layer {layer}: {source}")]
    Unpack {
        layer: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("pull of {reference} cancelled: no data received for {}s", timeout.as_secs())]
    Stalled {
        reference: String,
        timeout: Duration,
    },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("background task failed: {0}")]
    Task(String),
}

impl crate::sync::TaskFailure for ImageError {
    fn task_failed(what: &'static str, error: tokio::task::JoinError) -> Self {
        ImageError::Task(format!("{what} did not finish: {error}"))
    }
}

impl Classify for ImageError {
    fn kind(&self) -> Kind {
        match self {
            ImageError::InvalidReference(_) | ImageError::AmbiguousId(_) => Kind::InvalidArgument,
            ImageError::Registry(e) => e.kind(),
            ImageError::Manifest(e) => e.kind(),
            ImageError::Unpack { source, .. } => source.kind(),
            ImageError::Content(e) => e.kind(),
            // The image itself is broken: retrying will not help.
            ImageError::NestedIndex
            | ImageError::BadConfig(_)
            | ImageError::LayerCountMismatch { .. }
            | ImageError::DiffIdMismatch { .. }
            | ImageError::Decompress(_) => Kind::InvalidArgument,
            // Fewer or more bytes than promised: maybe a broken connection
            // or proxy, worth a retry.
            ImageError::BlobSize { .. } => Kind::Unavailable,
            // The right number of bytes, but not the content named by the
            // digest: the registry serves a corrupt blob, and a retry gets
            // the same one.
            ImageError::BlobDigest { .. } => Kind::DataLoss,
            ImageError::Stalled { .. } => Kind::DeadlineExceeded,
            ImageError::Store(_) | ImageError::Task(_) => Kind::Internal,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub stall_timeout: Duration,
    /// A pull whose downloads receive nothing this long is logged at warn.
    pub stall_warning: Duration,
    pub max_concurrent_downloads: usize,
    pub unpack: UnpackOptions,
}

/// Bytes and inodes the image store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub used_bytes: u64,
    pub inodes_used: u64,
}

pub struct ImageService {
    root: PathBuf,
    content: ContentStore,
    /// Shared with the blocking threads that commit layers.
    layers: Arc<LayerStore>,
    index: RwLock<Arc<ImageIndex>>,
    /// Serialises changes to the index and its file.
    commit_lock: tokio::sync::Mutex<()>,
    /// Replaced whole by [`ImageService::reload_registry`]; a pull keeps
    /// the resolver it started with.
    resolver: RwLock<Resolver>,
    pull_locks: KeyedLocks<String>,
    layer_locks: KeyedLocks<Digest>,
    leases: Arc<Leases<Digest>>,
    bytes_received: AtomicU64,
    pulls_in_flight: Arc<PullsInFlight>,
    /// Layers containers are built on, by container ID: kept even when
    /// their image is removed, until the container goes.
    held_layers: std::sync::Mutex<std::collections::HashMap<String, Vec<Digest>>>,
    options: PullOptions,
}

impl ImageService {
    /// Opens the store under `root`. Call [`ImageService::collect_garbage`]
    /// once containers have claimed the layers they use (see
    /// [`ImageService::hold_layers`]), to remove what an interrupted pull or
    /// removal left behind.
    pub fn open(
        root: PathBuf,
        registry: RegistryConfig,
        options: PullOptions,
    ) -> Result<ImageService, ImageError> {
        crate::store::ensure_dir_mode(&root, crate::store::PRIVATE_DIR_MODE)?;
        let content = ContentStore::open(root.join("content"))?;
        let layers = Arc::new(LayerStore::open(root.join("layers"))?);
        let index = ImageIndex::load(&metadata::index_path(&root))?;
        let service = ImageService {
            content,
            layers,
            index: RwLock::new(Arc::new(index)),
            commit_lock: tokio::sync::Mutex::new(()),
            resolver: RwLock::new(Resolver::new(registry)),
            pull_locks: KeyedLocks::default(),
            layer_locks: KeyedLocks::default(),
            leases: Arc::new(Leases::default()),
            bytes_received: AtomicU64::new(0),
            pulls_in_flight: Arc::default(),
            held_layers: Default::default(),
            options,
            root,
        };
        Ok(service)
    }

    /// From now on, pulls use `registry`: `hosts.toml` files, CA files and
    /// tokens are read afresh (a new resolver starts with empty caches).
    pub fn reload_registry(&self, registry: RegistryConfig) {
        *self.resolver.write().unwrap_or_else(|e| e.into_inner()) = Resolver::new(registry);
    }

    fn resolver(&self) -> Resolver {
        self.resolver
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn snapshot(&self) -> Arc<ImageIndex> {
        Arc::clone(&self.index.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.snapshot().images().cloned().collect()
    }

    /// The pulls in progress, oldest first, from memory.
    pub fn pulls_in_progress(&self) -> Vec<PullProgress> {
        self.pulls_in_flight.list()
    }

    /// Finds an image by ID (full, bare hex, or a unique prefix), or by a
    /// tag or digest reference in any form kubelet or crictl sends.
    pub fn resolve(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let index = self.snapshot();
        if let Some(id) = reference::looks_like_image_id(name) {
            if let Some(image) = index.get(&id) {
                return Ok(Some(image.clone()));
            }
        }
        if let Ok(reference) = Reference::parse(name) {
            if let Some(image) = index.by_name(&reference.to_string()) {
                return Ok(Some(image.clone()));
            }
        }
        match index.by_id_prefix(name) {
            Lookup::Found(image) => Ok(Some(image.clone())),
            Lookup::Missing => Ok(None),
            Lookup::Ambiguous => Err(ImageError::AmbiguousId(name.to_string())),
        }
    }

    /// The raw image config, for verbose status and container creation.
    pub fn config_bytes(&self, image: &ImageRecord) -> Result<Option<Vec<u8>>, ImageError> {
        Ok(self.content.get(&image.id)?)
    }

    /// Removes an image by ID, tag or digest. By a tag of an image that has
    /// others, only that tag goes. A missing image is not an error (CRI).
    pub async fn remove(&self, name: &str) -> Result<(), ImageError> {
        let Some(image) = self.resolve(name)? else {
            return Ok(());
        };
        let tag = Reference::parse(name)
            .ok()
            .and_then(|r| r.tagged())
            .filter(|t| {
                image.repo_tags.contains(t) && reference::looks_like_image_id(name).is_none()
            });
        self.commit(|index| match &tag {
            Some(tag) => index.untag(&image.id, tag),
            None => index.remove(&image.id).into_iter().collect(),
        })
        .await
    }

    /// The overlayfs lower dirs of an image, top layer first.
    pub fn lower_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .map(|l| self.layers.lower_dir(l))
            .collect()
    }

    /// Keeps `layers` on disk for `owner` (a container) until released.
    pub fn hold_layers(&self, owner: &str, layers: Vec<Digest>) {
        self.held_layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(owner.to_string(), layers);
    }

    /// Lets go of what `owner` held, collecting layers no one needs now.
    /// The collection (a walk of the content store, perhaps layer
    /// removals) runs only when a released layer is left without an image
    /// or another holder: after a RemoveImage of an image containers still
    /// used. It can block: call off the async workers.
    pub fn release_layers(&self, owner: &str) -> Result<(), ImageError> {
        let released = {
            let mut held = self.held_layers.lock().unwrap_or_else(|e| e.into_inner());
            let Some(released) = held.remove(owner) else {
                return Ok(());
            };
            let still_held: std::collections::HashSet<&Digest> = held.values().flatten().collect();
            released
                .into_iter()
                .filter(|layer| !still_held.contains(layer))
                .collect::<Vec<_>>()
        };
        let (referenced, _) = self.snapshot().referenced();
        if released.iter().any(|layer| !referenced.contains(layer)) {
            self.collect_garbage()?;
        }
        Ok(())
    }

    pub fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        let mut usage = FsUsage {
            used_bytes: 0,
            inodes_used: 0,
        };
        for layer in self.layers.list().values() {
            usage.used_bytes += layer.bytes;
            usage.inodes_used += layer.inodes;
        }
        for (_, size) in self.content.list()? {
            usage.used_bytes += size;
            usage.inodes_used += 1;
        }
        Ok(usage)
    }

    /// Where the image store lives, reported as the image filesystem.
    pub fn mountpoint(&self) -> &std::path::Path {
        &self.root
    }

    /// Applies `change` to a copy of the index, makes it durable, swaps it
    /// in, then collects what the dropped images no longer need.
    async fn commit(
        &self,
        change: impl FnOnce(&mut ImageIndex) -> Vec<ImageRecord>,
    ) -> Result<(), ImageError> {
        let _commit = self.commit_lock.lock().await;
        let mut index = (*self.snapshot()).clone();
        let dropped = change(&mut index);
        index.save(&metadata::index_path(&self.root))?;
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        for image in &dropped {
            tracing::info!(id = %image.id, "image removed");
        }
        if !dropped.is_empty() {
            self.collect_garbage()?;
        }
        Ok(())
    }

    /// Removes layers and blobs that no image record points at and no pull
    /// in progress has claimed. They leave the store under the lease lock
    /// (a rename or unlink each); the slow deletion of trees happens after.
    pub fn collect_garbage(&self) -> Result<(), ImageError> {
        let index = self.snapshot();
        let (mut used_layers, used_blobs) = index.referenced();
        used_layers.extend(
            self.held_layers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .flatten()
                .cloned(),
        );
        let stored_layers = self.layers.list();
        let stored_blobs = self.content.list()?;
        let detached = self
            .leases
            .while_frozen(|leased| -> Result<Vec<PathBuf>, StoreError> {
                let mut detached = Vec::new();
                for diff_id in stored_layers
                    .keys()
                    .filter(|d| !used_layers.contains(d) && !leased(d))
                {
                    tracing::debug!(layer = %diff_id, "removing unused layer");
                    detached.extend(self.layers.detach(diff_id)?);
                }
                for (digest, _) in stored_blobs
                    .iter()
                    .filter(|(d, _)| !used_blobs.contains(d) && !leased(d))
                {
                    self.content.remove(digest)?;
                }
                Ok(detached)
            })?;
        for dir in detached {
            std::fs::remove_dir_all(&dir).map_err(|source| {
                StoreError::Io(crate::error::IoError::new("removing", dir.clone(), source))
            })?;
        }
        Ok(())
    }
}
