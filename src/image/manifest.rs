//! Manifests and indexes, Docker schema 2 and OCI, parsed from untrusted
//! registry bytes; and the choice of this host's platform in an index.

use serde::Deserialize;

use super::digest::Digest;

pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

/// Layer media types we can unpack. Compression is detected from the bytes,
/// so the `+gzip`/`+zstd` suffix is only checked for being one we know.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Bounds on what a manifest may declare, so that a hostile one cannot make
/// us allocate or download without end.
pub const MAX_LAYERS: usize = 256;
pub const MAX_INDEX_ENTRIES: usize = 1024;
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("malformed {what}: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("Docker schema 1 manifests are not supported (deprecated); push the image with schema 2 or OCI")]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("unsupported layer media type {0:?}")]
    UnsupportedLayer(String),
    #[error("unsupported config media type {0:?} (not a container image?)")]
    UnsupportedConfig(String),
    #[error("manifest has {0} layers, more than the {MAX_LAYERS} allowed")]
    TooManyLayers(usize),
    #[error("index has {0} entries, more than the {MAX_INDEX_ENTRIES} allowed")]
    TooManyEntries(usize),
    #[error("config blob declares {0} bytes, more than the {MAX_CONFIG_BYTES} allowed")]
    ConfigTooLarge(u64),
    #[error("the config and layer sizes the manifest declares add up to more than 2^64 bytes")]
    SizeOverflow,
    #[error("no image for platform {wanted} in the index (it has: {available})")]
    NoMatchingPlatform { wanted: String, available: String },
}

impl crate::error::Classify for ManifestError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            ManifestError::NoMatchingPlatform { .. } => crate::error::Kind::NotFound,
            _ => crate::error::Kind::InvalidArgument,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// The platform this binary runs on, in OCI terms.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.into(),
            os: std::env::consts::OS.into(),
            variant: variant.map(String::from),
        }
    }

    /// Whether an index entry can run here. An arm64 entry without a variant
    /// matches v8, as containerd's platform matcher does.
    fn accepts(&self, candidate: &Platform) -> bool {
        if candidate.os != self.os || candidate.architecture != self.architecture {
            return false;
        }
        match (&self.variant, &candidate.variant) {
            (_, None) => true,
            (Some(wanted), Some(offered)) => wanted == offered,
            (None, Some(offered)) => offered.is_empty(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIndex {
    manifests: Vec<Descriptor>,
}

/// A platform manifest: the config and the layers, bottom first.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    /// Compressed bytes of the layers, as declared.
    pub fn layers_size(&self) -> u64 {
        // `parse` refused manifests whose sizes overflow.
        self.layers.iter().map(|l| l.size).sum()
    }

    /// The image's size as CRI reports it: config and layers, as declared.
    pub fn image_size(&self) -> u64 {
        self.config.size + self.layers_size()
    }
}

/// What a pull needs from the image config: the layers' diff IDs and the
/// user (ImageStatus reports it).
#[derive(Debug, Deserialize)]
pub struct ConfigProbe {
    #[serde(default)]
    config: Option<ConfigSection>,
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct ConfigSection {
    #[serde(rename = "User", default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

impl ConfigProbe {
    pub fn parse(bytes: &[u8]) -> Result<ConfigProbe, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn diff_ids(&self) -> &[Digest] {
        &self.rootfs.diff_ids
    }

    pub fn user(&self) -> &str {
        self.config
            .as_ref()
            .and_then(|c| c.user.as_deref())
            .unwrap_or_default()
    }
}

pub enum Parsed {
    Manifest(Manifest),
    Index(Vec<Descriptor>),
}

/// Parses a manifest or an index. `content_type` is what the registry said;
/// when it is missing or generic the document's own `mediaType` decides.
pub fn parse(content_type: &str, bytes: &[u8]) -> Result<Parsed, ManifestError> {
    let media_type = effective_media_type(content_type, bytes);
    match media_type.as_str() {
        media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => parse_manifest(bytes),
        media_type::OCI_INDEX | media_type::DOCKER_LIST => parse_index(bytes),
        media_type::DOCKER_SCHEMA1 | media_type::DOCKER_SCHEMA1_SIGNED => {
            Err(ManifestError::Schema1)
        }
        other => Err(ManifestError::UnsupportedMediaType(other.to_string())),
    }
}

fn effective_media_type(content_type: &str, bytes: &[u8]) -> String {
    let declared = content_type.split(';').next().unwrap_or("").trim();
    if !declared.is_empty() && declared != "application/json" && declared != "text/plain" {
        return declared.to_string();
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        layers: Option<serde::de::IgnoredAny>,
        schema_version: Option<u32>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(t),
            ..
        }) => t,
        Ok(Probe {
            manifests: Some(_), ..
        }) => media_type::OCI_INDEX.into(),
        Ok(Probe {
            layers: Some(_), ..
        }) => media_type::OCI_MANIFEST.into(),
        Ok(Probe {
            schema_version: Some(1),
            ..
        }) => media_type::DOCKER_SCHEMA1.into(),
        _ => declared.to_string(),
    }
}

fn parse_manifest(bytes: &[u8]) -> Result<Parsed, ManifestError> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Malformed {
            what: "manifest",
            source,
        })?;
    if let Some(t) = raw.media_type.as_deref() {
        if t == media_type::OCI_INDEX || t == media_type::DOCKER_LIST {
            return Err(ManifestError::UnsupportedMediaType(t.to_string()));
        }
    }
    if raw.layers.len() > MAX_LAYERS {
        return Err(ManifestError::TooManyLayers(raw.layers.len()));
    }
    if !CONFIG_TYPES.contains(&raw.config.media_type.as_str()) {
        return Err(ManifestError::UnsupportedConfig(raw.config.media_type));
    }
    if raw.config.size > MAX_CONFIG_BYTES {
        return Err(ManifestError::ConfigTooLarge(raw.config.size));
    }
    // The pull adds these up (progress, the image's size): no sum may wrap.
    let total = raw
        .layers
        .iter()
        .try_fold(raw.config.size, |sum, layer| sum.checked_add(layer.size));
    if total.is_none() {
        return Err(ManifestError::SizeOverflow);
    }
    if let Some(layer) = raw
        .layers
        .iter()
        .find(|l| !LAYER_TYPES.contains(&l.media_type.as_str()))
    {
        return Err(ManifestError::UnsupportedLayer(layer.media_type.clone()));
    }
    Ok(Parsed::Manifest(Manifest {
        config: raw.config,
        layers: raw.layers,
    }))
}

fn parse_index(bytes: &[u8]) -> Result<Parsed, ManifestError> {
    let raw: RawIndex =
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Malformed {
            what: "index",
            source,
        })?;
    if raw.manifests.len() > MAX_INDEX_ENTRIES {
        return Err(ManifestError::TooManyEntries(raw.manifests.len()));
    }
    Ok(Parsed::Index(raw.manifests))
}

/// The first index entry that runs on `platform` (indexes list the
/// preferred entry first). Entries without a platform are attestations or
/// artifacts and are never chosen.
pub fn select_platform<'a>(
    entries: &'a [Descriptor],
    platform: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    entries
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.accepts(p)))
        .ok_or_else(|| ManifestError::NoMatchingPlatform {
            wanted: platform.to_string(),
            available: entries
                .iter()
                .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    fn index_json() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
            {{"mediaType":"{m}","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"{m}","digest":"{}","size":1}},
            {{"mediaType":"{m}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"{m}","digest":"{}","size":1,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#,
            media_type::OCI_INDEX,
            digest(1),
            digest(2),
            digest(3),
            digest(4),
            m = media_type::OCI_MANIFEST
        )
    }

    #[test]
    fn selects_host_platform_from_index() {
        let Parsed::Index(entries) = parse("", index_json().as_bytes()).unwrap() else {
            panic!("expected an index");
        };
        let amd64 = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(
            select_platform(&entries, &amd64)
                .unwrap()
                .digest
                .to_string(),
            digest(3)
        );
        let arm64 = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(
            select_platform(&entries, &arm64)
                .unwrap()
                .digest
                .to_string(),
            digest(1)
        );
        let armv6 = Platform {
            architecture: "arm".into(),
            os: "linux".into(),
            variant: Some("v6".into()),
        };
        let err = select_platform(&entries, &armv6).unwrap_err().to_string();
        assert!(
            err.contains("linux/arm/v6") && err.contains("linux/amd64"),
            "{err}"
        );
    }

    #[test]
    fn parses_docker_manifest_by_content_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":10}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":20}}]}}"#,
            digest(1),
            digest(2)
        );
        let Parsed::Manifest(m) = parse(media_type::DOCKER_MANIFEST, body.as_bytes()).unwrap()
        else {
            panic!("expected a manifest");
        };
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.config.size, 10);
    }

    #[test]
    fn rejects_hostile_or_unsupported_documents() {
        assert!(matches!(
            parse(media_type::OCI_MANIFEST, b"{"),
            Err(ManifestError::Malformed { .. })
        ));
        assert!(matches!(
            parse("", br#"{"schemaVersion":1,"fsLayers":[]}"#),
            Err(ManifestError::Schema1)
        ));
        let bad_digest = r#"{"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:../../etc","size":1},"layers":[]}"#;
        assert!(matches!(
            parse(media_type::OCI_MANIFEST, bad_digest.as_bytes()),
            Err(ManifestError::Malformed { .. })
        ));
        let artifact = format!(
            r#"{{"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{}","size":1}},"layers":[]}}"#,
            digest(1)
        );
        assert!(matches!(
            parse(media_type::OCI_MANIFEST, artifact.as_bytes()),
            Err(ManifestError::UnsupportedConfig(_))
        ));
        let huge_config = format!(
            r#"{{"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":99999999999}},"layers":[]}}"#,
            digest(1)
        );
        assert!(matches!(
            parse(media_type::OCI_MANIFEST, huge_config.as_bytes()),
            Err(ManifestError::ConfigTooLarge(_))
        ));
        assert!(matches!(
            parse("text/html", b"<html>"),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn rejects_sizes_that_add_up_past_u64() {
        // Found by fuzz/fuzz_targets/manifest.rs: the pull's sum of layer
        // sizes overflowed (a panic in debug builds, a wrapped size in release).
        let layer = |size: u64, n: u8| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{size}}}"#,
                digest(n)
            )
        };
        let manifest = |layers: &[String]| {
            format!(
                r#"{{"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":10}},"layers":[{}]}}"#,
                digest(0),
                layers.join(",")
            )
        };
        let overflowing = manifest(&[layer(u64::MAX, 1), layer(1, 2)]);
        assert!(matches!(
            parse(media_type::OCI_MANIFEST, overflowing.as_bytes()),
            Err(ManifestError::SizeOverflow)
        ));
        let largest = manifest(&[layer(u64::MAX - 11, 1), layer(1, 2)]);
        assert!(parse(media_type::OCI_MANIFEST, largest.as_bytes()).is_ok());
    }
}
