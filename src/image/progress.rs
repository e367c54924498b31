//! What the pulls in progress have done so far: bytes and layers per pull,
//! the layers downloading and their bytes. The progress log, the stall
//! warning, `Status(verbose)` and the metrics read it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use super::digest::Digest;

/// One pull in progress, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    pub image: String,
    /// Layer bytes received, plus the sizes of layers already present.
    pub done_bytes: u64,
    /// All the layers' sizes; 0 until the manifest is read.
    pub expected_bytes: u64,
    pub layers_done: usize,
    pub layers_total: usize,
    pub started: SystemTime,
}

/// Byte and layer counters of one pull.
pub(super) struct Progress {
    pub reference: String,
    started_at: SystemTime,
    pub started: Instant,
    pub total_bytes: AtomicU64,
    pub total_layers: AtomicUsize,
    pub bytes: AtomicU64,
    pub layers: AtomicUsize,
    /// Layers being downloaded: their bytes so far, by blob digest.
    downloading: Mutex<BTreeMap<Digest, Arc<AtomicU64>>>,
}

impl Progress {
    fn new(reference: String) -> Progress {
        Progress {
            reference,
            started_at: SystemTime::now(),
            started: Instant::now(),
            total_bytes: AtomicU64::new(0),
            total_layers: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            layers: AtomicUsize::new(0),
            downloading: Mutex::new(BTreeMap::new()),
        }
    }

    /// Once the manifest is read.
    pub fn expect(&self, bytes: u64, layers: usize) {
        self.total_bytes.store(bytes, Ordering::Relaxed);
        self.total_layers.store(layers, Ordering::Relaxed);
    }

    /// Counts the bytes of layer `digest` as they arrive, until the
    /// returned guard goes.
    pub fn downloading(self: &Arc<Self>, digest: &Digest) -> LayerDownload {
        let received = Arc::new(AtomicU64::new(0));
        self.downloads()
            .insert(digest.clone(), Arc::clone(&received));
        LayerDownload {
            progress: Arc::clone(self),
            digest: digest.clone(),
            received,
        }
    }

    /// The layers downloading and their bytes so far.
    pub fn layers_downloading(&self) -> Vec<(Digest, u64)> {
        self.downloads()
            .iter()
            .map(|(digest, bytes)| (digest.clone(), bytes.load(Ordering::Relaxed)))
            .collect()
    }

    fn downloads(&self) -> std::sync::MutexGuard<'_, BTreeMap<Digest, Arc<AtomicU64>>> {
        self.downloading.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> PullProgress {
        PullProgress {
            image: self.reference.clone(),
            done_bytes: self.bytes.load(Ordering::Relaxed),
            expected_bytes: self.total_bytes.load(Ordering::Relaxed),
            layers_done: self.layers.load(Ordering::Relaxed),
            layers_total: self.total_layers.load(Ordering::Relaxed),
            started: self.started_at,
        }
    }

    pub fn log(&self) {
        let now = self.snapshot();
        tracing::info!(
            image = %now.image,
            layers = format!("{}/{}", now.layers_done, now.layers_total),
            mib = format!(
                "{:.1}/{:.1}",
                now.done_bytes as f64 / 1048576.0,
                now.expected_bytes as f64 / 1048576.0
            ),
            elapsed_s = self.started.elapsed().as_secs(),
            "pulling"
        );
    }
}

/// One layer's download; counts into its pull's progress.
pub(super) struct LayerDownload {
    progress: Arc<Progress>,
    digest: Digest,
    received: Arc<AtomicU64>,
}

impl LayerDownload {
    pub fn add(&self, bytes: u64) {
        self.received.fetch_add(bytes, Ordering::Relaxed);
        self.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for LayerDownload {
    fn drop(&mut self) {
        self.progress.downloads().remove(&self.digest);
    }
}

/// The pulls in progress.
#[derive(Default)]
pub(super) struct PullsInFlight {
    pulls: Mutex<BTreeMap<u64, Arc<Progress>>>,
    next_id: AtomicU64,
}

impl PullsInFlight {
    /// Lists a pull of `reference` until the returned guard goes.
    pub fn begin(self: &Arc<Self>, reference: String) -> InFlight {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let progress = Arc::new(Progress::new(reference));
        self.lock().insert(id, Arc::clone(&progress));
        InFlight {
            pulls: Arc::clone(self),
            id,
            progress,
        }
    }

    /// Oldest first.
    pub fn list(&self) -> Vec<PullProgress> {
        self.lock().values().map(|p| p.snapshot()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Progress>>> {
        self.pulls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A listed pull; unlisted when dropped, however the pull ends.
pub(super) struct InFlight {
    pulls: Arc<PullsInFlight>,
    id: u64,
    pub progress: Arc<Progress>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pulls.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_and_layers_are_listed_while_their_guards_live() {
        let pulls = Arc::new(PullsInFlight::default());
        let first = pulls.begin("a/b:1".into());
        let second = pulls.begin("a/c:2".into());
        first.progress.expect(300, 2);
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let layer = first.progress.downloading(&digest);
        layer.add(100);
        layer.add(20);
        assert_eq!(first.progress.layers_downloading(), [(digest.clone(), 120)]);
        let listed = pulls.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            (listed[0].image.as_str(), listed[0].done_bytes),
            ("a/b:1", 120)
        );
        assert_eq!((listed[0].expected_bytes, listed[0].layers_total), (300, 2));
        assert_eq!(listed[1].image, "a/c:2");
        drop(layer);
        assert!(first.progress.layers_downloading().is_empty());
        assert_eq!(first.progress.snapshot().done_bytes, 120, "bytes stay");
        drop(first);
        assert_eq!(pulls.list().len(), 1);
        drop(second);
        assert!(pulls.list().is_empty());
    }
}
