//! Small blobs by digest: manifests, indexes and image configs.
//!
//! Layers never land here: they are unpacked while they stream (see
//! `layers`), so a pull writes each layer's bytes to disk once.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::digest::Digest;
use crate::error::IoResultExt;
use crate::store::{self, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob content does not match digest {expected} (got {actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::Classify for ContentError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            ContentError::DigestMismatch { .. } => crate::error::Kind::InvalidArgument,
            ContentError::Store(_) => crate::error::Kind::Internal,
        }
    }
}

pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    pub fn open(dir: PathBuf) -> Result<ContentStore, StoreError> {
        store::create_dir_all(&dir)?;
        store::remove_temporaries(&dir)?;
        Ok(ContentStore { dir })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.file_name())
    }

    /// Stores `data` under `digest` after checking that it matches.
    pub fn put(&self, digest: &Digest, data: &[u8]) -> Result<(), ContentError> {
        let actual = Digest::of(data);
        if &actual != digest {
            return Err(ContentError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let path = self.path(digest);
        if path.exists() {
            return Ok(());
        }
        store::write_atomic(&path, data)?;
        Ok(())
    }

    pub fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(digest);
        match fs::read(&path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::error::IoError::new("reading blob", &path, e).into()),
        }
    }

    pub fn remove(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::error::IoError::new("removing blob", &path, e).into()),
        }
    }

    /// Every stored digest with its size in bytes.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let mut blobs = Vec::new();
        for entry in fs::read_dir(&self.dir).at("listing", &self.dir)? {
            let entry = entry.at("listing", &self.dir)?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_prefix("sha256-")) else {
                continue;
            };
            let Ok(digest) = Digest::parse_lenient(hex) else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            blobs.push((digest, size));
        }
        Ok(blobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_verifies_and_get_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("blobs")).unwrap();
        let digest = Digest::of(b"config");
        assert!(matches!(
            store.put(&digest, b"tampered"),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert_eq!(store.get(&digest).unwrap(), None);
        store.put(&digest, b"config").unwrap();
        assert_eq!(store.get(&digest).unwrap().as_deref(), Some(&b"config"[..]));
        assert_eq!(store.list().unwrap(), vec![(digest.clone(), 6)]);
        store.remove(&digest).unwrap();
        store.remove(&digest).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
