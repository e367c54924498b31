//! What an OCI runtime can do, read once from `runtime features` (the JSON
//! document of the runtime-spec's features proposal, which runc has printed
//! since 1.1). A runtime without the subcommand, or whose output does not
//! parse, is taken to support none of the optional features.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The optional features Wharf asks a runtime about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeFeatures {
    /// The `rro` mount option: a bind mount read-only with everything
    /// mounted beneath it (`mount_setattr(AT_RECURSIVE)`).
    pub recursive_read_only_mounts: bool,
    /// Pods may have user namespaces of their own: the runtime joins the
    /// pod's by path (any runc does) and this host can make the ID-mapped
    /// mounts Wharf prepares for it (see [`crate::idmap::probe`]). Not
    /// from `runtime features`: set by [`super::RuntimeHandlers::probe`].
    pub user_namespaces: bool,
}

/// `runtime features` prints a few kilobytes; anything far larger is not it.
const MAX_FEATURES_OUTPUT: usize = 1 << 20;
/// `runtime features` does no I/O beyond printing: a runtime that takes
/// longer is hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("running {binary} features: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} features did not finish within {PROBE_TIMEOUT:?}")]
    TimedOut { binary: String },
    #[error("{binary} features failed: {stderr}")]
    Failed { binary: String, stderr: String },
    #[error("{binary} features printed something else than a features document: {reason}")]
    BadOutput { binary: String, reason: String },
}

#[derive(Deserialize)]
struct FeaturesDocument {
    #[serde(default, rename = "mountOptions")]
    mount_options: Vec<String>,
}

impl RuntimeFeatures {
    /// Parses the JSON that `runtime features` prints.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        if json.len() > MAX_FEATURES_OUTPUT {
            return Err(format!(
                "{} bytes, more than {MAX_FEATURES_OUTPUT}",
                json.len()
            ));
        }
        let document: FeaturesDocument = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        Ok(Self {
            recursive_read_only_mounts: document.mount_options.iter().any(|o| o == "rro"),
            user_namespaces: false,
        })
    }

    /// Runs `binary features` and waits for it: call it on a blocking
    /// thread.
    pub fn probe(binary: &Path) -> Result<Self, ProbeError> {
        let name = binary.display().to_string();
        let mut child = Command::new(binary)
            .arg("features")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ProbeError::Spawn {
                binary: name.clone(),
                source,
            })?;
        // The output is small enough for the pipes' buffers, so the child
        // is not blocked on writing while we poll for its exit.
        let deadline = Instant::now() + PROBE_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ProbeError::TimedOut { binary: name });
                }
                Err(source) => {
                    return Err(ProbeError::Spawn {
                        binary: name,
                        source,
                    })
                }
            }
        }
        let output = child
            .wait_with_output()
            .map_err(|source| ProbeError::Spawn {
                binary: name.clone(),
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(ProbeError::Failed {
                binary: name,
                stderr: stderr.chars().take(512).collect(),
            });
        }
        Self::parse(&output.stdout).map_err(|reason| ProbeError::BadOutput {
            binary: name,
            reason,
        })
    }

    /// [`probe`](Self::probe), logging a failure and answering "nothing
    /// optional" then.
    pub fn probe_or_none(binary: &Path) -> Self {
        Self::probe(binary).unwrap_or_else(|e| {
            tracing::warn!(error = %crate::error::chain(&e), "optional runtime features are off");
            Self::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rro_is_read_from_the_mount_options() {
        let with = br#"{"ociVersionMin":"1.0.0","mountOptions":["ro","rro","rbind"]}"#;
        assert!(
            RuntimeFeatures::parse(with)
                .unwrap()
                .recursive_read_only_mounts
        );
        let without = br#"{"mountOptions":["ro","rbind"]}"#;
        assert!(
            !RuntimeFeatures::parse(without)
                .unwrap()
                .recursive_read_only_mounts
        );
        assert!(
            !RuntimeFeatures::parse(b"{}")
                .unwrap()
                .recursive_read_only_mounts
        );
        assert!(RuntimeFeatures::parse(b"usage: runc").is_err());
    }

    #[test]
    fn probing_a_missing_runtime_fails_cleanly() {
        let err = RuntimeFeatures::probe(Path::new("/nonexistent/runc")).unwrap_err();
        assert!(matches!(err, ProbeError::Spawn { .. }), "{err}");
        assert_eq!(
            RuntimeFeatures::probe_or_none(Path::new("/nonexistent/runc")),
            RuntimeFeatures::default()
        );
        // `false features` exits 1.
        assert!(matches!(
            RuntimeFeatures::probe(Path::new("false")),
            Err(ProbeError::Failed { .. })
        ));
    }

    #[test]
    fn the_installed_runc_is_probed() {
        if !Path::new("/usr/bin/runc").exists() {
            return;
        }
        let features = RuntimeFeatures::probe(Path::new("/usr/bin/runc")).unwrap();
        assert!(features.recursive_read_only_mounts);
    }
}
