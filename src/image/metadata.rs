//! The image records and the names pointing at them.
//!
//! The whole index is one small JSON document replaced atomically on every
//! change: a tag that moves from one image to another, or an image that
//! loses its last name, changes in a single step, so a crash can never
//! leave a name pointing at two images or at none half-way.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use crate::store::{self, StoreError};

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, as containerd and CRI-O use.
    pub id: Digest,
    /// `docker.io/library/busybox:latest`
    pub repo_tags: Vec<String>,
    /// `docker.io/library/busybox@sha256:…` (the digest of what was pulled:
    /// the index when the tag pointed at one).
    pub repo_digests: Vec<String>,
    /// The platform manifest the layers came from.
    pub manifest: Digest,
    /// Blobs of this image kept in the content store (manifest, config,
    /// index when there was one).
    pub blobs: Vec<Digest>,
    /// Diff IDs, bottom layer first.
    pub layers: Vec<Digest>,
    /// Bytes of the config and compressed layers, as the registry served them.
    pub size: u64,
    /// `User` of the image config.
    pub user: String,
    pub pinned: bool,
}

impl ImageRecord {
    fn names(&self) -> impl Iterator<Item = &String> {
        self.repo_tags.iter().chain(&self.repo_digests)
    }

    fn has_names(&self) -> bool {
        !self.repo_tags.is_empty() || !self.repo_digests.is_empty()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: Vec<ImageRecord>,
}

/// Images by ID. Cheap to clone: changes are made on a copy, persisted,
/// then swapped in.
#[derive(Debug, Clone, Default)]
pub struct ImageIndex {
    images: BTreeMap<Digest, ImageRecord>,
}

/// How a lookup string matched.
pub enum Lookup<'a> {
    Found(&'a ImageRecord),
    Missing,
    /// A short ID that fits more than one image.
    Ambiguous,
}

impl ImageIndex {
    pub fn load(path: &Path) -> Result<ImageIndex, StoreError> {
        let Some(file) = store::read_json::<IndexFile>(path)? else {
            return Ok(ImageIndex::default());
        };
        if file.version != FORMAT_VERSION {
            tracing::warn!(
                version = file.version,
                "image index has an unknown format version; reading it anyway"
            );
        }
        let images = file.images.into_iter().map(|i| (i.id.clone(), i)).collect();
        Ok(ImageIndex { images })
    }

    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let file = IndexFile {
            version: FORMAT_VERSION,
            images: self.images.values().cloned().collect(),
        };
        store::write_json_atomic(path, &file)
    }

    pub fn images(&self) -> impl Iterator<Item = &ImageRecord> {
        self.images.values()
    }

    pub fn get(&self, id: &Digest) -> Option<&ImageRecord> {
        self.images.get(id)
    }

    /// The image with this exact name (a normalised tag or digest reference).
    pub fn by_name(&self, name: &str) -> Option<&ImageRecord> {
        self.images.values().find(|i| i.names().any(|n| n == name))
    }

    /// The image whose ID starts with `prefix` (hex, with or without
    /// `sha256:`), as crictl prints truncated IDs.
    pub fn by_id_prefix(&self, prefix: &str) -> Lookup<'_> {
        let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Lookup::Missing;
        }
        let mut matches = self.images.values().filter(|i| i.id.hex().starts_with(hex));
        match (matches.next(), matches.next()) {
            (Some(image), None) => Lookup::Found(image),
            (Some(_), Some(_)) => Lookup::Ambiguous,
            (None, _) => Lookup::Missing,
        }
    }

    /// Adds a pulled image or merges its names into the record with the same
    /// ID. Each name moves away from any other image; images left without a
    /// name are dropped and returned.
    pub fn add(&mut self, mut record: ImageRecord) -> Vec<ImageRecord> {
        let new_names: HashSet<String> = record.names().cloned().collect();
        for other in self.images.values_mut().filter(|i| i.id != record.id) {
            other.repo_tags.retain(|n| !new_names.contains(n));
            other.repo_digests.retain(|n| !new_names.contains(n));
        }
        if let Some(existing) = self.images.remove(&record.id) {
            record.repo_tags = union(existing.repo_tags, record.repo_tags);
            record.repo_digests = union(existing.repo_digests, record.repo_digests);
            record.pinned |= existing.pinned;
        }
        self.images.insert(record.id.clone(), record);
        self.drop_nameless()
    }

    /// Removes one tag from an image; the image goes when nothing names it.
    pub fn untag(&mut self, id: &Digest, tag: &str) -> Vec<ImageRecord> {
        if let Some(image) = self.images.get_mut(id) {
            image.repo_tags.retain(|t| t != tag);
            if image.repo_tags.is_empty() {
                // A repo digest alone would keep an image the user asked to
                // remove by its last tag; CRI-O removes it too.
                image.repo_digests.clear();
            }
        }
        self.drop_nameless()
    }

    pub fn remove(&mut self, id: &Digest) -> Option<ImageRecord> {
        self.images.remove(id)
    }

    fn drop_nameless(&mut self) -> Vec<ImageRecord> {
        let nameless: Vec<Digest> = self
            .images
            .values()
            .filter(|i| !i.has_names())
            .map(|i| i.id.clone())
            .collect();
        nameless
            .iter()
            .filter_map(|id| self.images.remove(id))
            .collect()
    }

    /// Layers and blobs that some image still uses.
    pub fn referenced(&self) -> (HashSet<Digest>, HashSet<Digest>) {
        let layers = self
            .images
            .values()
            .flat_map(|i| i.layers.iter().cloned())
            .collect();
        let blobs = self
            .images
            .values()
            .flat_map(|i| i.blobs.iter().cloned())
            .collect();
        (layers, blobs)
    }
}

fn union(mut a: Vec<String>, b: Vec<String>) -> Vec<String> {
    for name in b {
        if !a.contains(&name) {
            a.push(name);
        }
    }
    a
}

/// Where the index lives under the image root.
pub fn index_path(image_root: &Path) -> PathBuf {
    image_root.join("images.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(config: &str, tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord {
            id: Digest::of(config.as_bytes()),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            manifest: Digest::of(b"manifest"),
            blobs: vec![],
            layers: vec![Digest::of(config.as_bytes())],
            size: 1,
            user: String::new(),
            pinned: false,
        }
    }

    #[test]
    fn a_moved_tag_leaves_the_old_image_with_its_digest() {
        let mut index = ImageIndex::default();
        assert!(index
            .add(image("a", &["r:latest"], &["r@sha256:1"]))
            .is_empty());
        assert!(index
            .add(image("b", &["r:latest"], &["r@sha256:2"]))
            .is_empty());
        let a = index.get(&Digest::of(b"a")).unwrap();
        assert!(a.repo_tags.is_empty());
        assert_eq!(a.repo_digests, vec!["r@sha256:1"]);
        assert_eq!(index.by_name("r:latest").unwrap().id, Digest::of(b"b"));
    }

    #[test]
    fn an_image_without_names_is_dropped() {
        let mut index = ImageIndex::default();
        index.add(image("a", &["r:latest"], &[]));
        let dropped = index.add(image("b", &["r:latest"], &[]));
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].id, Digest::of(b"a"));
        assert_eq!(index.images().count(), 1);
    }

    #[test]
    fn repull_under_another_tag_merges_names() {
        let mut index = ImageIndex::default();
        index.add(image("a", &["r:1"], &["r@sha256:1"]));
        index.add(image("a", &["r:2"], &["r@sha256:1"]));
        let a = index.get(&Digest::of(b"a")).unwrap();
        assert_eq!(a.repo_tags, vec!["r:1", "r:2"]);
        assert_eq!(a.repo_digests, vec!["r@sha256:1"]);
    }

    #[test]
    fn untag_keeps_image_until_last_tag() {
        let mut index = ImageIndex::default();
        let id = Digest::of(b"a");
        index.add(image("a", &["r:1", "r:2"], &["r@sha256:1"]));
        assert!(index.untag(&id, "r:1").is_empty());
        assert_eq!(index.get(&id).unwrap().repo_tags, vec!["r:2"]);
        assert_eq!(index.untag(&id, "r:2").len(), 1);
        assert!(index.get(&id).is_none());
    }

    #[test]
    fn id_prefix_lookup() {
        let mut index = ImageIndex::default();
        index.add(image("a", &["r:1"], &[]));
        let id = Digest::of(b"a");
        assert!(matches!(index.by_id_prefix(&id.hex()[..12]), Lookup::Found(i) if i.id == id));
        assert!(matches!(index.by_id_prefix("sha256:"), Lookup::Missing));
        assert!(matches!(index.by_id_prefix("zz"), Lookup::Missing));
        assert!(matches!(index.by_id_prefix(""), Lookup::Missing));
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = index_path(dir.path());
        let mut index = ImageIndex::default();
        index.add(image("a", &["r:1"], &["r@sha256:1"]));
        index.save(&path).unwrap();
        let loaded = ImageIndex::load(&path).unwrap();
        assert_eq!(
            loaded.images().collect::<Vec<_>>(),
            index.images().collect::<Vec<_>>()
        );
    }
}
