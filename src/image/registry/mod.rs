//! The registry transport: Docker Registry HTTP API v2 / OCI distribution,
//! read side only, configured like containerd's `certs.d` (see `hosts`).
//!
//! A [`Resolver`] is built once from [`RegistryConfig`]; it caches parsed
//! `hosts.toml` files, one HTTP client per TLS setting, and what it learnt
//! about authentication (see `auth`). [`Resolver::repository`] gives a
//! [`Repository`]: one image repository on one registry host, reachable
//! through the endpoints its `hosts.toml` lists (mirrors first, the server
//! last), with one pull's credentials.
//!
//! Each fetch tries the endpoints allowed for it in order and moves to the
//! next on any failure of an endpoint (unreachable, 5xx, 404 on a mirror,
//! refused credentials, bad content), logging a warning; the last
//! endpoint's error is the one returned, since it is normally the
//! registry itself. Credentials go to every endpoint of the host, as in
//! containerd: whoever writes `hosts.toml` decides which mirrors to trust.
//!
//! Remote data is untrusted: bodies read into memory are size-capped,
//! digests are verified where we know them, and headers or JSON that do
//! not parse become errors, never panics. See [`RegistryError`] for how
//! failures are classified.

mod auth;
mod body;
mod endpoint;
mod error;
mod hosts;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Response, StatusCode, Url};

use self::auth::{AuthCache, Authenticator};
use self::body::{error_detail, manifest_media_type, read_capped};
use self::endpoint::{ClientSettings, Endpoint, Operation};
use self::hosts::HostsCache;
use crate::image::digest::Digest;

pub use self::auth::Credentials;
pub use self::body::BlobStream;
pub use self::error::{RegistryError, RemoteDetail};
#[doc(hidden)]
pub use self::hosts::parse_hosts_toml;

/// Manifests and indexes are a few KiB; 4 MiB is what containerd allows.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Manifest types we understand, most wanted first. Registries convert or
/// refuse what is not listed (schema 1, for one).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The `certs.d`-style directory of per-host `hosts.toml` files, e.g.
    /// `/etc/wharf/certs.d`; it need not exist.
    pub config_path: PathBuf,
    /// Deadline for a manifest or token request, and for the response
    /// headers (and each body chunk) of a blob request.
    pub request_timeout: Duration,
}

/// Turns registry hosts into [`Repository`] handles. Cheap to clone; clones
/// share caches.
#[derive(Clone)]
pub struct Resolver {
    shared: Arc<Shared>,
}

struct Shared {
    request_timeout: Duration,
    hosts: HostsCache,
    clients: Mutex<HashMap<ClientSettings, reqwest::Client>>,
    auth: Arc<AuthCache>,
}

impl Resolver {
    pub fn new(config: RegistryConfig) -> Self {
        let shared = Shared {
            request_timeout: config.request_timeout,
            hosts: HostsCache::new(config.config_path),
            clients: Mutex::new(HashMap::new()),
            auth: Arc::new(AuthCache::default()),
        };
        Resolver {
            shared: Arc::new(shared),
        }
    }

    /// The repository `path` on registry host `domain`, reachable through the
    /// endpoints hosts.toml lists (mirrors first, then `server`), with these
    /// credentials. Reads configuration files (small, local) synchronously.
    pub fn repository(
        &self,
        domain: &str,
        path: &str,
        creds: Credentials,
    ) -> Result<Repository, RegistryError> {
        endpoint::validate_domain(domain)?;
        validate_repository_path(path)?;
        let endpoints = self.shared.hosts.endpoints(domain)?;
        let connected = endpoints
            .iter()
            .map(|endpoint| {
                Ok(Connected {
                    client: self.client(&endpoint.client)?,
                    endpoint: endpoint.clone(),
                })
            })
            .collect::<Result<Vec<_>, RegistryError>>()?;
        let authenticator = Authenticator::new(
            self.shared.auth.clone(),
            creds,
            path,
            self.shared.request_timeout,
        );
        Ok(Repository {
            domain: domain.to_string(),
            path: path.to_string(),
            endpoints: connected.into(),
            auth: Arc::new(authenticator),
            request_timeout: self.shared.request_timeout,
        })
    }

    fn client(&self, settings: &ClientSettings) -> Result<reqwest::Client, RegistryError> {
        let mut clients = self
            .shared
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(settings) {
            return Ok(client.clone());
        }
        let client = settings.build()?;
        clients.insert(settings.clone(), client.clone());
        Ok(client)
    }
}

/// A manifest or index as the registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The sha256 of `bytes`, computed here.
    pub digest: Digest,
    /// The Content-Type, or the body's `mediaType` when the header is missing
    /// or generic (`application/json`); may be empty if neither says.
    pub media_type: String,
    pub bytes: Bytes,
}

/// One image repository on one registry host. Cheap to clone.
#[derive(Clone)]
pub struct Repository {
    domain: String,
    path: String,
    endpoints: Arc<[Connected]>,
    auth: Arc<Authenticator>,
    request_timeout: Duration,
}

/// An endpoint with the HTTP client for its TLS settings.
struct Connected {
    endpoint: Endpoint,
    client: reqwest::Client,
}

impl fmt::Debug for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints: Vec<&str> = self
            .endpoints
            .iter()
            .map(|c| c.endpoint.api_root.as_str())
            .collect();
        f.debug_struct("Repository")
            .field("domain", &self.domain)
            .field("path", &self.path)
            .field("endpoints", &endpoints)
            .finish_non_exhaustive()
    }
}

/// What `request_timeout` bounds. A manifest is small: its whole transfer.
/// A blob may be large: only the wait for response headers (then each chunk
/// of a fully read blob gets its own idle deadline, and streams are watched
/// for stalls by the caller).
#[derive(Clone, Copy)]
enum Deadline {
    WholeRequest,
    ResponseHeaders,
}

impl Repository {
    /// `GET /v2/<path>/manifests/<object>`, accepting OCI and Docker manifests
    /// and indexes. If `object` is a digest (`sha256:...`), verifies the body
    /// against it. Always returns the body's computed digest, media type and
    /// bytes; refuses bodies over [`MAX_MANIFEST_SIZE`].
    pub async fn fetch_manifest(&self, object: &str) -> Result<FetchedManifest, RegistryError> {
        let expected = parse_object(object)?;
        // A tag needs an endpoint trusted to resolve names; a digest only one
        // that serves content, since the content is verified.
        let operation = if expected.is_some() {
            Operation::Pull
        } else {
            Operation::Resolve
        };
        self.first_success(operation, |connected| {
            Box::pin(self.fetch_manifest_from(connected, object, expected.as_ref()))
        })
        .await
    }

    /// `GET /v2/<path>/blobs/<digest>` as a stream of chunks, following
    /// redirects (reqwest drops `Authorization` when one leaves the host).
    /// The caller verifies the digest while streaming; this checks the size:
    /// a Content-Length other than `expected_size` is an error before any
    /// byte, and the stream fails if the body runs longer or shorter.
    pub async fn fetch_blob(
        &self,
        digest: &Digest,
        expected_size: u64,
    ) -> Result<BlobStream, RegistryError> {
        self.first_success(Operation::Pull, |connected| {
            Box::pin(self.open_blob(connected, digest, expected_size))
        })
        .await
    }

    /// A small blob (an image config) fetched whole, at most `max` bytes, its
    /// digest verified.
    pub async fn fetch_small_blob(
        &self,
        digest: &Digest,
        max: u64,
    ) -> Result<Bytes, RegistryError> {
        self.first_success(Operation::Pull, |connected| {
            Box::pin(self.fetch_small_blob_from(connected, digest, max))
        })
        .await
    }

    /// Runs `attempt` on each endpoint allowed to do `operation`, in order,
    /// until one succeeds; otherwise returns the last endpoint's error.
    async fn first_success<'a, T>(
        &'a self,
        operation: Operation,
        attempt: impl Fn(&'a Connected) -> BoxFuture<'a, Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        let candidates = self.candidates(operation);
        let Some((last, earlier)) = candidates.split_last() else {
            return Err(RegistryError::NoEndpoint {
                domain: self.domain.clone(),
                operation: operation.name(),
            });
        };
        for connected in earlier {
            match attempt(connected).await {
                Ok(value) => return Ok(value),
                Err(error) => tracing::warn!(
                    endpoint = %connected.endpoint,
                    repository = %self.path,
                    error = %crate::error::chain(&error),
                    "registry endpoint failed; trying the next one"
                ),
            }
        }
        attempt(last).await
    }

    fn candidates(&self, operation: Operation) -> Vec<&Connected> {
        self.endpoints
            .iter()
            .filter(|c| c.endpoint.capabilities.allow(operation))
            .collect()
    }

    async fn fetch_manifest_from(
        &self,
        connected: &Connected,
        object: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = self.url(&connected.endpoint, "manifests", object)?;
        let response = self
            .get(
                connected,
                &url,
                Some(MANIFEST_ACCEPT),
                Deadline::WholeRequest,
            )
            .await?;
        let response = self.successful(response, &url, "manifest").await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_capped(
            response,
            MAX_MANIFEST_SIZE,
            url.as_str(),
            self.request_timeout,
        )
        .await?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = expected.filter(|expected| **expected != digest) {
            return Err(RegistryError::DigestMismatch {
                url: url.to_string(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        let media_type = manifest_media_type(content_type.as_deref(), &bytes);
        Ok(FetchedManifest {
            digest,
            media_type,
            bytes,
        })
    }

    async fn open_blob(
        &self,
        connected: &Connected,
        digest: &Digest,
        expected_size: u64,
    ) -> Result<BlobStream, RegistryError> {
        let url = self.url(&connected.endpoint, "blobs", &digest.to_string())?;
        let response = self
            .get(connected, &url, None, Deadline::ResponseHeaders)
            .await?;
        let response = self.successful(response, &url, "blob").await?;
        if let Some(length) = response
            .content_length()
            .filter(|length| *length != expected_size)
        {
            return Err(RegistryError::SizeMismatch {
                url: url.to_string(),
                expected: expected_size,
                actual: length,
            });
        }
        let endpoint = connected.endpoint.api_root.clone();
        Ok(BlobStream::new(
            endpoint,
            url.to_string(),
            response,
            expected_size,
        ))
    }

    async fn fetch_small_blob_from(
        &self,
        connected: &Connected,
        digest: &Digest,
        max: u64,
    ) -> Result<Bytes, RegistryError> {
        let url = self.url(&connected.endpoint, "blobs", &digest.to_string())?;
        let response = self
            .get(connected, &url, None, Deadline::ResponseHeaders)
            .await?;
        let response = self.successful(response, &url, "blob").await?;
        let bytes = read_capped(response, max, url.as_str(), self.request_timeout).await?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                url: url.to_string(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// `<api root>/<path>/<kind>/<object>`, plus `ns=<host>` for mirrors.
    fn url(&self, endpoint: &Endpoint, kind: &str, object: &str) -> Result<Url, RegistryError> {
        let text = format!("{}/{}/{kind}/{object}", endpoint.api_root, self.path);
        let mut url = Url::parse(&text).map_err(|e| RegistryError::InvalidUrl {
            url: text,
            reason: e.to_string(),
        })?;
        if let Some(namespace) = &endpoint.namespace {
            url.query_pairs_mut().append_pair("ns", namespace);
        }
        Ok(url)
    }

    /// GETs `url`, answering one authentication challenge. Returns the
    /// response whatever its status; a 401 only when retrying cannot help.
    async fn get(
        &self,
        connected: &Connected,
        url: &Url,
        accept: Option<&'static str>,
        deadline: Deadline,
    ) -> Result<Response, RegistryError> {
        let origin = connected.endpoint.origin.as_str();
        let mut authorization = self.auth.authorization(&connected.client, origin).await?;
        let mut answered_challenge = false;
        loop {
            let response = self
                .send(connected, url, accept, authorization.as_ref(), deadline)
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED || answered_challenge {
                return Ok(response);
            }
            if !self
                .auth
                .learn_challenge(origin, response.headers(), authorization.as_ref())
            {
                return Ok(response);
            }
            let renewed = self.auth.authorization(&connected.client, origin).await?;
            if renewed.is_none() || renewed == authorization {
                return Ok(response); // nothing new to send
            }
            authorization = renewed;
            answered_challenge = true;
        }
    }

    async fn send(
        &self,
        connected: &Connected,
        url: &Url,
        accept: Option<&'static str>,
        authorization: Option<&HeaderValue>,
        deadline: Deadline,
    ) -> Result<Response, RegistryError> {
        // Ours replace same-named headers from hosts.toml rather than adding
        // a second Accept or Authorization.
        let mut headers = connected.endpoint.headers.clone();
        if let Some(accept) = accept {
            headers.insert(ACCEPT, HeaderValue::from_static(accept));
        }
        if let Some(authorization) = authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        let request = connected.client.get(url.clone()).headers(headers);
        let timeout = self.request_timeout;
        let result = match deadline {
            Deadline::WholeRequest => request.timeout(timeout).send().await,
            Deadline::ResponseHeaders => {
                match tokio::time::timeout(timeout, request.send()).await {
                    Ok(result) => result,
                    Err(_) => {
                        return Err(RegistryError::Timeout {
                            url: url.to_string(),
                            timeout,
                        })
                    }
                }
            }
        };
        let response =
            result.map_err(|e| RegistryError::from_transport(url.as_str(), timeout, e))?;
        tracing::debug!(
            endpoint = %connected.endpoint,
            %url,
            status = response.status().as_u16(),
            authenticated = authorization.is_some(),
            "registry request"
        );
        Ok(response)
    }

    /// Passes a 2xx response; turns any other into its error.
    async fn successful(
        &self,
        response: Response,
        url: &Url,
        what: &'static str,
    ) -> Result<Response, RegistryError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = RegistryError::retry_after(&response);
        let detail = error_detail(response, self.request_timeout).await;
        Err(RegistryError::from_status(
            status,
            url.to_string(),
            detail,
            Some(what),
            retry_after,
        ))
    }
}

/// A tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) gives `None`, a digest its
/// value; anything else is refused before it reaches a URL.
fn parse_object(object: &str) -> Result<Option<Digest>, RegistryError> {
    if object.contains(':') {
        return object
            .parse()
            .map(Some)
            .map_err(|_| RegistryError::InvalidObject {
                object: object.to_string(),
            });
    }
    let valid_tag = object.len() <= 128
        && object
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && object
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid_tag {
        Ok(None)
    } else {
        Err(RegistryError::InvalidObject {
            object: object.to_string(),
        })
    }
}

/// A repository path as the distribution spec defines it: lowercase
/// components of `[a-z0-9]` joined by `.`, `_`, `__` or dashes, separated
/// by `/`. Checked here too because it goes into URLs and token scopes.
fn validate_repository_path(path: &str) -> Result<(), RegistryError> {
    let invalid = |reason| {
        Err(RegistryError::InvalidRepositoryPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() || path.len() > 255 {
        return invalid("must have 1 to 255 characters");
    }
    for component in path.split('/') {
        let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let bytes = component.as_bytes();
        let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
            return invalid("has an empty component");
        };
        if !alphanumeric(first) || !alphanumeric(last) {
            return invalid("components must start and end with a lowercase letter or digit");
        }
        if !bytes
            .iter()
            .all(|&b| alphanumeric(b) || b"._-".contains(&b))
        {
            return invalid("components may only contain a-z, 0-9, '.', '_' and '-'");
        }
        if component.contains("..")
            || component.contains("___")
            || component.contains("._")
            || component.contains("_.")
        {
            return invalid("has an invalid separator");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_tags_or_digests() {
        assert!(parse_object("latest").unwrap().is_none());
        assert!(parse_object("_v1.2-rc_3").unwrap().is_none());
        let digest = Digest::of(b"x");
        assert_eq!(parse_object(&digest.to_string()).unwrap(), Some(digest));
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a?b",
            "sha256:abc",
            "md5:00",
            &"a".repeat(129),
            "../x",
        ] {
            assert!(
                matches!(parse_object(bad), Err(RegistryError::InvalidObject { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn repository_paths() {
        for good in [
            "busybox",
            "library/busybox",
            "a/b/c",
            "my-org/my_app",
            "a__b",
            "a--b",
            "x.y/z9",
        ] {
            assert!(validate_repository_path(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "A/b", "a/../b", "a/.b", "a/b-", "a b", "a?b", "a%2fb", "a..b",
            "a___b",
        ] {
            assert!(validate_repository_path(bad).is_err(), "{bad}");
        }
    }

    /// Pulls run on a multi-threaded runtime and share these across tasks.
    #[test]
    fn handles_and_futures_cross_threads() {
        fn send<T: Send>(_: &T) {}
        fn shared<T: Send + Sync>() {}
        fn stream<T: futures_util::Stream + Send + Unpin>() {}
        shared::<Resolver>();
        shared::<Repository>();
        stream::<BlobStream>();
        let resolver = Resolver::new(RegistryConfig {
            config_path: PathBuf::from("/nonexistent"),
            request_timeout: Duration::from_secs(5),
        });
        let repository = resolver
            .repository("registry.example", "app", Credentials::None)
            .unwrap();
        let digest = Digest::of(b"");
        send(&repository.fetch_manifest("latest"));
        send(&repository.fetch_blob(&digest, 0));
        send(&repository.fetch_small_blob(&digest, 0));
    }

    #[tokio::test]
    async fn an_operation_no_endpoint_may_do_fails_before_any_request() {
        let config = tempfile::tempdir().unwrap();
        let dir = config.path().join("pull-only.example");
        std::fs::create_dir(&dir).unwrap();
        let hosts = "server = \"https://pull-only.example\"\ncapabilities = [\"pull\"]\n";
        std::fs::write(dir.join("hosts.toml"), hosts).unwrap();
        let resolver = Resolver::new(RegistryConfig {
            config_path: config.path().to_path_buf(),
            request_timeout: Duration::from_secs(5),
        });
        let repository = resolver
            .repository("pull-only.example", "app", Credentials::None)
            .unwrap();
        let error = repository.fetch_manifest("latest").await.unwrap_err();
        assert!(
            matches!(
                error,
                RegistryError::NoEndpoint {
                    operation: "resolve",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(
            crate::error::Classify::kind(&error),
            crate::error::Kind::FailedPrecondition
        );
    }

    #[test]
    fn resolver_builds_repositories_and_refuses_bad_input() {
        let config = tempfile::tempdir().unwrap();
        let resolver = Resolver::new(RegistryConfig {
            config_path: config.path().to_path_buf(),
            request_timeout: Duration::from_secs(5),
        });
        let repository = resolver
            .repository("docker.io", "library/busybox", Credentials::None)
            .unwrap();
        assert!(format!("{repository:?}").contains("https://registry-1.docker.io/v2"));
        let url = repository
            .url(&repository.endpoints[0].endpoint, "manifests", "latest")
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://registry-1.docker.io/v2/library/busybox/manifests/latest"
        );
        assert!(matches!(
            resolver.repository("../etc", "x", Credentials::None),
            Err(RegistryError::InvalidHost { .. })
        ));
        assert!(matches!(
            resolver.repository("docker.io", "../x", Credentials::None),
            Err(RegistryError::InvalidRepositoryPath { .. })
        ));
    }

    #[test]
    fn mirrors_get_the_namespace_and_capabilities_filter_candidates() {
        let config = tempfile::tempdir().unwrap();
        let dir = config.path().join("docker.io");
        std::fs::create_dir(&dir).unwrap();
        let hosts = "[host.\"https://public-mirror.example\"]\ncapabilities = [\"pull\"]\n";
        std::fs::write(dir.join("hosts.toml"), hosts).unwrap();
        let resolver = Resolver::new(RegistryConfig {
            config_path: config.path().to_path_buf(),
            request_timeout: Duration::from_secs(5),
        });
        let repository = resolver
            .repository("docker.io", "library/busybox", Credentials::None)
            .unwrap();
        let roots = |op| -> Vec<String> {
            repository
                .candidates(op)
                .iter()
                .map(|c| c.endpoint.api_root.clone())
                .collect()
        };
        assert_eq!(
            roots(Operation::Resolve),
            ["https://registry-1.docker.io/v2"]
        );
        assert_eq!(
            roots(Operation::Pull),
            [
                "https://public-mirror.example/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        let url = repository
            .url(&repository.endpoints[0].endpoint, "blobs", "sha256:00")
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://public-mirror.example/v2/library/busybox/blobs/sha256:00?ns=docker.io"
        );
    }
}
