//! What ADD did, kept per pod so that DEL repeats it exactly, even after
//! the conf dir changed or Wharf restarted (libcni keeps the same under
//! /var/lib/cni/results; Wharf keeps it under its own root).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::{self, StoreError};

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Attachment {
    pub version: u32,
    /// Where the network list came from, for messages.
    pub conf_path: PathBuf,
    /// The list exactly as ADD ran it.
    pub network: Value,
    pub capability_args: Map<String, Value>,
    /// The last plugin's result: DEL's `prevResult`.
    pub result: Value,
}

impl Attachment {
    pub fn new(
        conf_path: PathBuf,
        network: Value,
        capability_args: Map<String, Value>,
        result: Value,
    ) -> Self {
        Self {
            version: VERSION,
            conf_path,
            network,
            capability_args,
            result,
        }
    }
}

/// Pod IDs are validated (`[A-Za-z0-9][A-Za-z0-9_.-]*`), so they are safe
/// file names.
pub(crate) fn path(cache_dir: &Path, pod_id: &str) -> PathBuf {
    cache_dir.join(format!("{pod_id}.json"))
}

/// Writes durably: a pod whose ADD succeeded must be torn down with it.
pub(crate) fn save(
    cache_dir: &Path,
    pod_id: &str,
    attachment: &Attachment,
) -> Result<(), StoreError> {
    store::create_dir_all(cache_dir)?;
    store::write_json_atomic(&path(cache_dir, pod_id), attachment)
}

/// `Ok(None)` when nothing is cached, or what is cached is from another
/// format version.
pub(crate) fn load(cache_dir: &Path, pod_id: &str) -> Result<Option<Attachment>, StoreError> {
    let attachment: Option<Attachment> = store::read_json(&path(cache_dir, pod_id))?;
    Ok(attachment.filter(|a| a.version == VERSION))
}

/// Not synced: should a crash bring the file back, a second DEL is harmless.
pub(crate) fn remove(cache_dir: &Path, pod_id: &str) -> Result<(), StoreError> {
    let path = path(cache_dir, pod_id);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::Io(
            crate::error::IoError::new("removing", path, e),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cni-cache");
        assert!(load(&cache, "p1").unwrap().is_none());
        let caps = Map::from_iter([("portMappings".to_string(), json!([]))]);
        let attachment = Attachment::new(
            "/n.conflist".into(),
            json!({"name": "n"}),
            caps,
            json!({"ips": []}),
        );
        save(&cache, "p1", &attachment).unwrap();
        let loaded = load(&cache, "p1").unwrap().unwrap();
        assert_eq!(loaded.network, json!({"name": "n"}));
        assert_eq!(loaded.capability_args["portMappings"], json!([]));
        remove(&cache, "p1").unwrap();
        remove(&cache, "p1").unwrap();
        assert!(load(&cache, "p1").unwrap().is_none());
    }
}
