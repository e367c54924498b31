//! Unpacked layers, one directory per layer keyed by its diff ID (the digest
//! of the uncompressed tar). Each is unpacked on its own, never on top of its
//! parent, so it is a ready overlayfs lower dir and can be shared by every
//! image that has it.
//!
//! A layer is unpacked into a temporary directory and renamed into place
//! only once complete and verified: `layers/sha256-<hex>` existing means the
//! layer is whole.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use crate::error::IoResultExt;
use crate::store::{self, StoreError};

const FS_DIR: &str = "fs";
const USAGE_FILE: &str = "usage.json";

/// Disk use of one layer, counted while it was unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerUsage {
    pub bytes: u64,
    pub inodes: u64,
}

pub struct LayerStore {
    dir: PathBuf,
    /// What is on disk, read once at open and kept in step by `commit` and
    /// `detach`: ImageFsInfo and GC need it often, kubelet polls the former.
    stored: Mutex<HashMap<Digest, LayerUsage>>,
}

/// A layer being unpacked; dropped without [`LayerStore::commit`], its
/// directory is removed.
pub struct PendingLayer {
    dir: PathBuf,
    committed: bool,
}

impl PendingLayer {
    /// Where the layer's files go.
    pub fn fs_dir(&self) -> PathBuf {
        self.dir.join(FS_DIR)
    }
}

impl Drop for PendingLayer {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "removing unfinished layer");
            }
        }
    }
}

impl LayerStore {
    pub fn open(dir: PathBuf) -> Result<LayerStore, StoreError> {
        store::create_dir_all(&dir)?;
        let removed = store::remove_temporaries(&dir)?;
        if removed > 0 {
            tracing::info!(removed, "removed layers left unfinished by a crash");
        }
        let stored = Mutex::new(scan(&dir)?);
        Ok(LayerStore { dir, stored })
    }

    fn stored(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, LayerUsage>> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(diff_id.file_name())
    }

    /// The overlayfs lower dir of a stored layer.
    pub fn lower_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id).join(FS_DIR)
    }

    pub fn contains(&self, diff_id: &Digest) -> bool {
        self.stored().contains_key(diff_id)
    }

    pub fn begin(&self) -> Result<PendingLayer, StoreError> {
        let dir = self.dir.join(store::unique_temp_name(store::TEMP_PREFIX));
        let fs_dir = dir.join(FS_DIR);
        store::create_dir_all(&fs_dir)?;
        Ok(PendingLayer {
            dir,
            committed: false,
        })
    }

    /// Publishes a fully unpacked and verified layer. Flushes the layer's
    /// filesystem first so that the image record written after this never
    /// points at data still only in memory.
    pub fn commit(
        &self,
        mut pending: PendingLayer,
        diff_id: &Digest,
        usage: LayerUsage,
    ) -> Result<(), StoreError> {
        let usage_path = pending.dir.join(USAGE_FILE);
        let data = serde_json::to_vec(&usage).expect("usage serializes");
        fs::write(&usage_path, data).at("writing", &usage_path)?;
        sync_filesystem(&pending.dir)?;
        let target = self.layer_dir(diff_id);
        match fs::rename(&pending.dir, &target) {
            Ok(()) => pending.committed = true,
            // Another pull finished the same layer first: keep theirs.
            Err(_) if target.is_dir() => return Ok(()),
            Err(e) => return Err(crate::error::IoError::new("publishing layer", &target, e).into()),
        }
        store::sync_dir(&self.dir)?;
        self.stored().insert(diff_id.clone(), usage);
        Ok(())
    }

    /// Takes a layer out of the store at once (a rename) and returns the
    /// directory for the caller to delete at leisure; a crash before that
    /// leaves a temporary that start-up removes.
    pub fn detach(&self, diff_id: &Digest) -> Result<Option<PathBuf>, StoreError> {
        let doomed = self.dir.join(store::unique_temp_name(store::TEMP_PREFIX));
        let detached = match fs::rename(self.layer_dir(diff_id), &doomed) {
            Ok(()) => Some(doomed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(crate::error::IoError::new(
                    "detaching layer",
                    self.layer_dir(diff_id),
                    e,
                )
                .into())
            }
        };
        self.stored().remove(diff_id);
        Ok(detached)
    }

    /// Every stored layer with its usage.
    pub fn list(&self) -> HashMap<Digest, LayerUsage> {
        self.stored().clone()
    }
}

/// The layers in `dir`, with the usage each recorded when it was unpacked.
fn scan(dir: &Path) -> Result<HashMap<Digest, LayerUsage>, StoreError> {
    let mut layers = HashMap::new();
    for entry in fs::read_dir(dir).at("listing", dir)? {
        let entry = entry.at("listing", dir)?;
        let name = entry.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_prefix("sha256-")) else {
            continue;
        };
        let Ok(diff_id) = Digest::parse_lenient(hex) else {
            continue;
        };
        let usage = store::read_json(&entry.path().join(USAGE_FILE))?.unwrap_or_default();
        layers.insert(diff_id, usage);
    }
    Ok(layers)
}

fn sync_filesystem(path: &Path) -> Result<(), StoreError> {
    let dir = fs::File::open(path).at("opening", path)?;
    nix::unistd::syncfs(&dir)
        .map_err(io::Error::from)
        .at("syncing filesystem of", path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_layer_is_invisible_until_commit_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = LayerStore::open(dir.path().join("layers")).unwrap();
        let diff_id = Digest::of(b"layer");
        {
            let pending = store.begin().unwrap();
            fs::write(pending.fs_dir().join("file"), b"x").unwrap();
            assert!(!store.contains(&diff_id));
        }
        assert_eq!(fs::read_dir(dir.path().join("layers")).unwrap().count(), 0);

        let pending = store.begin().unwrap();
        fs::write(pending.fs_dir().join("file"), b"x").unwrap();
        let usage = LayerUsage {
            bytes: 1,
            inodes: 1,
        };
        store.commit(pending, &diff_id, usage).unwrap();
        assert!(store.contains(&diff_id));
        assert!(store.lower_dir(&diff_id).join("file").exists());
        assert_eq!(store.list().get(&diff_id), Some(&usage));
        let reopened = LayerStore::open(dir.path().join("layers")).unwrap();
        assert_eq!(
            reopened.list().get(&diff_id),
            Some(&usage),
            "usage survives a restart"
        );
        let detached = store.detach(&diff_id).unwrap().expect("detached");
        fs::remove_dir_all(detached).unwrap();
        assert!(store.list().is_empty());
        assert!(!store.contains(&diff_id));
    }
}
