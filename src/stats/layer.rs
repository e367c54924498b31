//! Disk usage of writable layers: walking a big upper dir costs far more
//! than a stats call may, so each result is cached and refreshed at most
//! every [`REFRESH`], on a blocking thread, while callers get the last
//! value. A layer seen for the first time is walked inline only up to
//! [`INLINE_BUDGET`] entries.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const REFRESH: Duration = Duration::from_secs(30);
/// Entries walked inline when a layer has no cached value yet.
pub const INLINE_BUDGET: u64 = 10_000;
/// Entries a background walk visits at most: beyond, the figure is a
/// lower bound (a layer with more files than this is pathological).
const WALK_LIMIT: u64 = 10_000_000;
/// Layers not asked about for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Allocated bytes (`st_blocks`), as `du` counts.
    pub bytes: u64,
    pub inodes: u64,
}

struct Cached {
    usage: Option<DiskUsage>,
    computed_at: Option<Instant>,
    asked_at: Instant,
    refreshing: bool,
}

#[derive(Default)]
pub struct LayerCache {
    layers: Mutex<HashMap<PathBuf, Cached>>,
}

impl LayerCache {
    /// The cached usage of `dir`, starting a refresh when it is stale. On
    /// a blocking thread: a first sight walks inline (bounded).
    pub fn usage(self: &Arc<Self>, dir: &Path) -> Option<DiskUsage> {
        let now = Instant::now();
        let previous = {
            let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
            let entry = layers.entry(dir.to_path_buf()).or_insert(Cached {
                usage: None,
                computed_at: None,
                asked_at: now,
                refreshing: false,
            });
            entry.asked_at = now;
            let stale = entry.computed_at.is_none_or(|at| now - at >= REFRESH);
            if !stale || entry.refreshing {
                return entry.usage;
            }
            entry.refreshing = true;
            entry.usage
        };
        if previous.is_none() {
            if let Some(usage) = walk(dir, INLINE_BUDGET) {
                self.store(dir, Some(usage));
                return Some(usage);
            }
        }
        let cache = Arc::clone(self);
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let usage = walk(&dir, WALK_LIMIT);
            cache.store(&dir, usage);
        });
        previous
    }

    fn store(&self, dir: &Path, usage: Option<DiskUsage>) {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = layers.get_mut(dir) {
            entry.refreshing = false;
            entry.computed_at = Some(Instant::now());
            if usage.is_some() {
                entry.usage = usage;
            }
        }
        let now = Instant::now();
        layers.retain(|_, c| now - c.asked_at < FORGET_AFTER);
    }
}

/// Bytes and inodes below `dir` (itself included), on its own file system,
/// without following symbolic links; a hard-linked file counts once.
/// `None` if `dir` is unreadable or more than `budget` entries were seen.
pub fn walk(dir: &Path, budget: u64) -> Option<DiskUsage> {
    let root = std::fs::symlink_metadata(dir).ok()?;
    let device = root.dev();
    let mut seen_links: HashSet<u64> = HashSet::new();
    let mut usage = DiskUsage {
        bytes: root.blocks() * 512,
        inodes: 1,
    };
    let mut visited = 1u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        // Entries may vanish while the container runs: skip them.
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > budget {
                return None;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != device {
                continue;
            }
            if meta.nlink() > 1 && !meta.is_dir() && !seen_links.insert(meta.ino()) {
                continue;
            }
            usage.bytes += meta.blocks() * 512;
            usage.inodes += 1;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_and_directories_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a"), vec![1u8; 64 << 10]).unwrap();
        std::fs::hard_link(dir.join("sub/a"), dir.join("b")).unwrap();
        std::os::unix::fs::symlink("sub/a", dir.join("link")).unwrap();
        let usage = walk(dir, 100).unwrap();
        // dir, sub, a (b is the same inode), link.
        assert_eq!(usage.inodes, 4);
        assert!(usage.bytes >= 64 << 10, "{usage:?}");
        assert_eq!(walk(dir, 2), None, "over budget");
        assert_eq!(walk(&dir.join("missing"), 100), None);
    }

    #[tokio::test]
    async fn a_cached_value_is_served_until_it_is_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Arc::new(LayerCache::default());
        let first = cache.usage(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("new"), vec![1u8; 64 << 10]).unwrap();
        // Within the refresh interval: the cached figure, no walk.
        assert_eq!(cache.usage(tmp.path()), Some(first));
    }

    #[tokio::test]
    async fn a_stale_value_is_refreshed_in_the_background_from_a_blocking_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let cache = Arc::new(LayerCache::default());
        let first = cache.usage(&dir).unwrap();
        std::fs::write(dir.join("new"), vec![1u8; 64 << 10]).unwrap();
        cache
            .layers
            .lock()
            .unwrap()
            .get_mut(&dir)
            .unwrap()
            .computed_at = Some(Instant::now() - REFRESH);
        // As the stats batch calls it: on a blocking thread. The stale
        // value is answered at once, the walk happens behind it.
        let (c, d) = (Arc::clone(&cache), dir.clone());
        let answered = tokio::task::spawn_blocking(move || c.usage(&d))
            .await
            .unwrap();
        assert_eq!(answered, Some(first));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = cache.usage(&dir).unwrap();
            if now.inodes == first.inodes + 1 {
                assert!(now.bytes >= first.bytes + (64 << 10));
                break;
            }
            assert!(Instant::now() < deadline, "never refreshed: {now:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
