//! Registry endpoints: where requests go, what each endpoint is trusted
//! with, and the HTTP client settings it needs. `hosts` builds them
//! from configuration.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Url;

use super::hosts::DEFAULT_NAMESPACE_DIR;
use super::RegistryError;
use crate::error::IoResultExt;

/// containerd's default dial timeout.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const USER_AGENT: &str = concat!("wharf/", env!("CARGO_PKG_VERSION"));

/// What an endpoint is trusted to do (containerd's host capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// Fetch blobs and manifests by digest: content is verified, so little
    /// trust is needed.
    pub pull: bool,
    /// Turn a tag into a manifest: the endpoint decides what image a name
    /// means, so public mirrors usually lack it.
    pub resolve: bool,
}

impl Capabilities {
    pub(crate) const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
    };

    pub(crate) fn allow(&self, operation: Operation) -> bool {
        match operation {
            Operation::Pull => self.pull,
            Operation::Resolve => self.resolve,
        }
    }
}

/// The two read operations, each gated by its capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Manifests by tag.
    Resolve,
    /// Blobs, and manifests by digest.
    Pull,
}

impl Operation {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Operation::Resolve => "resolve",
            Operation::Pull => "pull",
        }
    }
}

/// Everything that needs its own HTTP client; endpoints with equal settings
/// share one (and its connection pool).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientSettings {
    pub skip_verify: bool,
    /// PEM files with extra trusted roots, absolute.
    pub ca_files: Vec<PathBuf>,
    pub connect_timeout: Duration,
    pub proxy: Option<String>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            skip_verify: false,
            ca_files: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            proxy: None,
        }
    }
}

impl ClientSettings {
    /// Builds the client; reads the CA files now, so a broken one is
    /// reported as configuration, not as a failing registry.
    pub(crate) fn build(&self) -> Result<reqwest::Client, RegistryError> {
        // No overall timeout here: blob downloads may take as long as they
        // make progress, and each request sets its own deadline.
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(self.connect_timeout)
            .danger_accept_invalid_certs(self.skip_verify);
        for path in &self.ca_files {
            let pem = std::fs::read(path)
                .at("reading", path)
                .map_err(RegistryError::ConfigIo)?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RegistryError::Config {
                    path: path.clone(),
                    reason: format!("invalid CA file: {e}"),
                })?;
            if certificates.is_empty() {
                return Err(RegistryError::Config {
                    path: path.clone(),
                    reason: "no PEM certificate in CA file".into(),
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(proxy) = &self.proxy {
            let proxy = reqwest::Proxy::all(proxy).map_err(RegistryError::HttpClient)?;
            builder = builder.proxy(proxy);
        }
        builder.build().map_err(RegistryError::HttpClient)
    }
}

/// One place to send registry requests to.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The API root without trailing slash: `https://registry-1.docker.io/v2`,
    /// or the configured URL as is with `override_path`.
    pub api_root: String,
    /// `scheme://host[:port]`: what authentication challenges are cached by.
    pub origin: String,
    pub capabilities: Capabilities,
    pub client: ClientSettings,
    /// Extra headers from `hosts.toml`.
    pub headers: HeaderMap,
    /// Set for endpoints serving another host's content (mirrors): sent as
    /// the `ns` query parameter, as containerd does, so a mirror serving
    /// several registries knows which one is meant.
    pub namespace: Option<String>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.api_root)
    }
}

/// Checks a registry host (`name[:port]`, `[v6]:port`) before it names a
/// directory or a URL: no path separators, no dot segments, parses as a URL
/// authority and nothing more.
pub(crate) fn validate_domain(domain: &str) -> Result<(), RegistryError> {
    let invalid = |reason| {
        Err(RegistryError::InvalidHost {
            domain: domain.to_string(),
            reason,
        })
    };
    if domain.is_empty() || domain.len() > 255 {
        return invalid("must have 1 to 255 characters");
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    {
        return invalid("may only contain letters, digits, '.', '-', '_', ':' and IPv6 brackets");
    }
    if domain.starts_with(['.', '-', ':'])
        || domain.contains("..")
        || domain == DEFAULT_NAMESPACE_DIR
    {
        return invalid("is not a host name");
    }
    match Url::parse(&format!("https://{domain}/")) {
        Ok(url) if url.host_str().is_some() && url.path() == "/" => Ok(()),
        _ => invalid("is not a host[:port]"),
    }
}

/// An empty list means every capability, as in containerd; an unknown one
/// is an error rather than silently granting or denying something.
pub(crate) fn parse_capabilities(names: &[String]) -> Result<Capabilities, String> {
    if names.is_empty() {
        return Ok(Capabilities::ALL);
    }
    let mut capabilities = Capabilities {
        pull: false,
        resolve: false,
    };
    for name in names {
        match name.to_ascii_lowercase().as_str() {
            "pull" => capabilities.pull = true,
            "resolve" => capabilities.resolve = true,
            // Wharf never pushes; accepted as containerd's files have it.
            "push" => {}
            _ => {
                return Err(format!(
                    "unknown capability {name:?} (pull, resolve or push)"
                ))
            }
        }
    }
    Ok(capabilities)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_validated() {
        for good in [
            "docker.io",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "my_registry.local",
        ] {
            assert!(validate_domain(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            "../etc",
            "a/b",
            "_default",
            ".hidden",
            "a..b",
            "user@host",
            "host:port:x",
            "a b",
        ] {
            assert!(validate_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn capability_names() {
        assert_eq!(parse_capabilities(&[]), Ok(Capabilities::ALL));
        let names = ["Pull".to_string(), "resolve".to_string()];
        let parsed = parse_capabilities(&names).unwrap();
        assert!(parsed.allow(Operation::Pull) && parsed.allow(Operation::Resolve));
        assert!(parse_capabilities(&["fly".to_string()]).is_err());
    }
}
