//! Registry documents as the pull path reads them (src/image/pull.rs):
//! a manifest or index under the Content-Type the registry sent, the
//! platform choice in an index, the sums over a manifest's layers, and the
//! image config, both as the pull probes it and as container creation
//! reads it (oci-spec's `ImageConfiguration`, then the stop signal).
//!
//! Input: one byte choosing the Content-Type, then the document.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::image::manifest::{self, media_type, ConfigProbe, Parsed, Platform};

const CONTENT_TYPES: &[&str] = &[
    "",
    media_type::OCI_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST,
    media_type::DOCKER_LIST,
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    media_type::DOCKER_SCHEMA1_SIGNED,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, document)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];

    let mut layer_count = None;
    match manifest::parse(content_type, document) {
        Err(error) => {
            let _ = error.to_string();
        }
        Ok(Parsed::Index(entries)) => {
            assert!(entries.len() <= manifest::MAX_INDEX_ENTRIES);
            for platform in platforms() {
                match manifest::select_platform(&entries, &platform) {
                    Ok(chosen) => {
                        let offered = chosen.platform.as_ref().expect("chosen without platform");
                        assert_eq!(offered.os, platform.os);
                        assert_eq!(offered.architecture, platform.architecture);
                    }
                    Err(error) => {
                        let _ = error.to_string();
                    }
                }
            }
        }
        Ok(Parsed::Manifest(manifest)) => {
            assert!(manifest.layers.len() <= manifest::MAX_LAYERS);
            assert!(manifest.config.size <= manifest::MAX_CONFIG_BYTES);
            // What the pull computes from a manifest before fetching
            // anything (progress total, then the image record's size).
            assert!(manifest.layers_size() <= manifest.image_size());
            layer_count = Some(manifest.layers.len());
        }
    }

    // The same bytes as an image config.
    if let Ok(probe) = ConfigProbe::parse(document) {
        let _ = probe.user();
        if let Some(layers) = layer_count {
            let _matches = probe.diff_ids().len() == layers;
        }
    }
    if let Ok(image) = serde_json::from_slice::<oci_spec::image::ImageConfiguration>(document) {
        let config = image.config().clone().unwrap_or_default();
        let _ = wharf::container::spec::stop_signal(&config);
    }
});

fn platforms() -> Vec<Platform> {
    let mut platforms = vec![Platform::host()];
    for (architecture, variant) in [("arm64", Some("v8")), ("arm", Some("v7")), ("amd64", None)] {
        platforms.push(Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: variant.map(String::from),
        });
    }
    platforms
}
