//! The registry client's error type and its classification.
//!
//! Kinds, decided once for the whole client:
//! - the caller's input is malformed (host, repository path, tag, CRI
//!   credentials) → `InvalidArgument`;
//! - the manifest or blob does not exist at the last endpoint tried → `NotFound`;
//! - the registry refused our credentials (or lack of them), or the local
//!   registry configuration (`hosts.toml`, CA files) is unusable →
//!   `FailedPrecondition`: retrying cannot help until someone changes
//!   credentials or configuration;
//! - the remote could not be reached, answered 5xx or another unexpected
//!   status, or sent bad data (size mismatch, oversized or malformed body)
//!   → `Unavailable`: the caller did nothing wrong, and a later retry or
//!   another mirror may succeed;
//! - the content received does not hash to the digest it was asked by →
//!   `DataLoss`: a transfer error would have failed the connection or the
//!   length check first, so what is served is corrupt and retrying fetches
//!   the same bytes;
//! - a request got no answer within the configured timeout → `DeadlineExceeded`;
//! - a URL we built does not parse, or the HTTP client cannot be built →
//!   `Internal` (a bug, since inputs are validated first).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Classify, Kind};
use crate::image::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid registry host {domain:?}: {reason}")]
    InvalidHost {
        domain: String,
        reason: &'static str,
    },

    #[error("invalid repository path {path:?}: {reason}")]
    InvalidRepositoryPath { path: String, reason: &'static str },

    #[error("{object:?} is neither a valid tag nor a sha256 digest")]
    InvalidObject { object: String },

    #[error("invalid registry credentials: {reason}")]
    InvalidCredentials { reason: &'static str },

    #[error("registry configuration {path}: {reason}")]
    Config { path: PathBuf, reason: String },

    /// The registry configuration (hosts.toml, CA files) could not be
    /// read: the node is misconfigured, hence FailedPrecondition.
    #[error("registry configuration: {0}")]
    ConfigIo(#[source] crate::error::IoError),

    #[error(
        "no endpoint configured for {domain} may {operation} (see capabilities in its hosts.toml)"
    )]
    NoEndpoint {
        domain: String,
        operation: &'static str,
    },

    #[error("building an HTTP client for registry endpoints")]
    HttpClient(#[source] reqwest::Error),

    #[error("building a request URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },

    #[error("{what} not found at {url}{detail}")]
    NotFound {
        what: &'static str,
        url: String,
        detail: RemoteDetail,
    },

    #[error(
        "unauthorized: {url} answered {status}{detail} (check the pull credentials; \
         registries also answer this for repositories that do not exist)"
    )]
    Unauthorized {
        url: String,
        status: u16,
        detail: RemoteDetail,
    },

    /// 429: the registry (or the mirror) limits its clients' rate; the
    /// next host is tried, and kubelet retries with its back-off.
    #[error("{url} is rate limiting (429){}{detail}", .retry_after.as_ref().map(|s| format!(", retry after {s}")).unwrap_or_default())]
    RateLimited {
        url: String,
        /// The `Retry-After` header as sent (seconds or an HTTP date).
        retry_after: Option<String>,
        detail: RemoteDetail,
    },

    #[error("{url} answered unexpected status {status}{detail}")]
    UnexpectedStatus {
        url: String,
        status: u16,
        detail: RemoteDetail,
    },

    #[error("{url} sent more than {limit} bytes")]
    TooLarge { url: String, limit: u64 },

    #[error("{url} sent {actual} bytes where {expected} were expected")]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },

    #[error("{url} served content with digest {actual}, expected {expected}")]
    DigestMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("{url} sent an invalid response: {reason}")]
    Malformed { url: String, reason: String },

    #[error("reading the response from {url}")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

impl Classify for RegistryError {
    fn kind(&self) -> Kind {
        use RegistryError::*;
        match self {
            InvalidHost { .. }
            | InvalidRepositoryPath { .. }
            | InvalidObject { .. }
            | InvalidCredentials { .. } => Kind::InvalidArgument,
            NotFound { .. } => Kind::NotFound,
            Unauthorized { .. } | Config { .. } | ConfigIo(_) | NoEndpoint { .. } => {
                Kind::FailedPrecondition
            }
            Request { .. }
            | UnexpectedStatus { .. }
            | RateLimited { .. }
            | TooLarge { .. }
            | SizeMismatch { .. }
            | Malformed { .. }
            | Body { .. } => Kind::Unavailable,
            DigestMismatch { .. } => Kind::DataLoss,
            Timeout { .. } => Kind::DeadlineExceeded,
            HttpClient(_) | InvalidUrl { .. } => Kind::Internal,
        }
    }
}

/// What a registry said about an error, cleaned for logs: control
/// characters replaced (the text is remote input) and length capped.
/// Displays as `: <text>`, or nothing when the registry said nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteDetail(String);

impl RemoteDetail {
    const MAX_CHARS: usize = 300;

    pub fn new(text: &str) -> RemoteDetail {
        let mut cleaned: String = text
            .trim()
            .chars()
            .take(Self::MAX_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if text.trim().chars().count() > Self::MAX_CHARS {
            cleaned.push('…');
        }
        RemoteDetail(cleaned)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RemoteDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", self.0)
        }
    }
}

impl RegistryError {
    /// The error for a failed HTTP answer; a 404 means "no such `what`"
    /// when `what` is given (a manifest, a blob), else it is unexpected.
    pub(crate) fn from_status(
        status: reqwest::StatusCode,
        url: String,
        detail: RemoteDetail,
        what: Option<&'static str>,
        retry_after: Option<String>,
    ) -> RegistryError {
        use reqwest::StatusCode;
        match (status, what) {
            (StatusCode::TOO_MANY_REQUESTS, _) => RegistryError::RateLimited {
                url,
                retry_after,
                detail,
            },
            (StatusCode::NOT_FOUND, Some(what)) => RegistryError::NotFound { what, url, detail },
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => RegistryError::Unauthorized {
                url,
                status: status.as_u16(),
                detail,
            },
            _ => RegistryError::UnexpectedStatus {
                url,
                status: status.as_u16(),
                detail,
            },
        }
    }

    /// The `Retry-After` header of `response`, bounded (it is echoed).
    pub(crate) fn retry_after(response: &reqwest::Response) -> Option<String> {
        let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
        let text = value.to_str().ok()?.trim();
        (!text.is_empty() && text.len() <= 64).then(|| text.to_string())
    }

    /// Maps a transport error, telling a timeout apart so it is classified
    /// as one. The URL is dropped from reqwest's own message: ours has it.
    pub(crate) fn from_transport(
        url: &str,
        timeout: Duration,
        source: reqwest::Error,
    ) -> RegistryError {
        if source.is_timeout() {
            RegistryError::Timeout {
                url: url.to_string(),
                timeout,
            }
        } else {
            RegistryError::Request {
                url: url.to_string(),
                source: source.without_url(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_detail_is_cleaned_and_capped() {
        assert_eq!(RemoteDetail::new("  ").to_string(), "");
        assert_eq!(
            RemoteDetail::new("bad\r\nthing").to_string(),
            ": bad  thing"
        );
        let long = RemoteDetail::new(&"x".repeat(1000));
        assert_eq!(long.as_str().chars().count(), RemoteDetail::MAX_CHARS + 1);
    }

    #[test]
    fn kinds() {
        let not_found = RegistryError::NotFound {
            what: "manifest",
            url: "u".into(),
            detail: RemoteDetail::default(),
        };
        assert_eq!(not_found.kind(), Kind::NotFound);
        let denied = RegistryError::Unauthorized {
            url: "u".into(),
            status: 401,
            detail: RemoteDetail::default(),
        };
        assert_eq!(denied.kind(), Kind::FailedPrecondition);
        let mismatch = RegistryError::DigestMismatch {
            url: "u".into(),
            expected: Digest::of(b"a"),
            actual: Digest::of(b"b"),
        };
        assert_eq!(mismatch.kind(), Kind::DataLoss);
    }
}
