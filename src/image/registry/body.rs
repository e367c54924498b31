//! Response bodies: blob streams with size checks, capped reads of small
//! bodies, error messages, and the media type of a manifest.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::Stream;
use reqwest::Response;
use serde::Deserialize;

use super::{RegistryError, RemoteDetail};

/// How much of an error response is read for its message.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// A blob's body as it arrives. Yields an error (and then ends) if the body
/// breaks off, or runs longer or shorter than the expected size.
pub struct BlobStream {
    endpoint: String,
    url: String,
    chunks: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    expected_size: u64,
    received: u64,
    finished: bool,
}

impl BlobStream {
    pub(crate) fn new(
        endpoint: String,
        url: String,
        response: Response,
        expected_size: u64,
    ) -> BlobStream {
        BlobStream {
            endpoint,
            url,
            chunks: Box::pin(response.bytes_stream()),
            expected_size,
            received: 0,
            finished: false,
        }
    }

    /// The API root of the endpoint serving this blob, for logs.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn fail(&mut self, error: RegistryError) -> Poll<Option<Result<Bytes, RegistryError>>> {
        self.finished = true;
        Poll::Ready(Some(Err(error)))
    }
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("url", &self.url)
            .field("expected_size", &self.expected_size)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, RegistryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match ready!(self.chunks.as_mut().poll_next(cx)) {
            Some(Ok(chunk)) => {
                self.received += chunk.len() as u64;
                if self.received > self.expected_size {
                    let error = RegistryError::TooLarge {
                        url: self.url.clone(),
                        limit: self.expected_size,
                    };
                    return self.fail(error);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(source)) => {
                let error = RegistryError::Body {
                    url: self.url.clone(),
                    source: source.without_url(),
                };
                self.fail(error)
            }
            None if self.received < self.expected_size => {
                let error = RegistryError::SizeMismatch {
                    url: self.url.clone(),
                    expected: self.expected_size,
                    actual: self.received,
                };
                self.fail(error)
            }
            None => {
                self.finished = true;
                Poll::Ready(None)
            }
        }
    }
}

/// Reads a whole body of at most `limit` bytes; each chunk must arrive
/// within `idle_timeout`, so a stalled server cannot hold us forever.
pub(crate) async fn read_capped(
    mut response: Response,
    limit: u64,
    url: &str,
    idle_timeout: Duration,
) -> Result<Bytes, RegistryError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(RegistryError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    let timed_out = || RegistryError::Timeout {
        url: url.to_string(),
        timeout: idle_timeout,
    };
    let mut body = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(idle_timeout, response.chunk()).await {
            Err(_) => return Err(timed_out()),
            // The request's own deadline, for requests that have one.
            Ok(Err(source)) if source.is_timeout() => return Err(timed_out()),
            Ok(Err(source)) => {
                return Err(RegistryError::Body {
                    url: url.to_string(),
                    source: source.without_url(),
                })
            }
            Ok(Ok(None)) => return Ok(body.freeze()),
            Ok(Ok(Some(chunk))) => chunk,
        };
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(RegistryError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
}

/// The message of an error response: the distribution spec's
/// `{"errors":[{"code","message"}]}` when it is that, else the text. Best
/// effort: an unreadable body gives an empty detail.
pub(crate) async fn error_detail(response: Response, timeout: Duration) -> RemoteDetail {
    #[derive(Deserialize)]
    struct ErrorBody {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let url = response.url().to_string();
    let Ok(body) = read_capped(response, MAX_ERROR_BODY, &url, timeout).await else {
        return RemoteDetail::default();
    };
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(parsed) if !parsed.errors.is_empty() => {
            let entries: Vec<String> = parsed
                .errors
                .iter()
                .take(3)
                .map(|e| format!("{} {}", e.code, e.message).trim().to_string())
                .collect();
            RemoteDetail::new(&entries.join("; "))
        }
        _ => RemoteDetail::new(&String::from_utf8_lossy(&body)),
    }
}

/// The media type: Content-Type without parameters, unless it is missing
/// or generic; then the body's `mediaType`; else whatever the header said.
pub(crate) fn manifest_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    let declared = content_type
        .and_then(|t| t.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let generic = matches!(
        declared.as_str(),
        "" | "application/json" | "text/plain" | "application/octet-stream"
    );
    if !generic {
        return declared;
    }
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(Probe {
            media_type: Some(media_type),
        }) if !media_type.is_empty() => media_type,
        _ => declared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_prefers_a_specific_content_type() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        let body = br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        assert_eq!(
            manifest_media_type(Some(&format!("{oci}; charset=utf-8")), body),
            oci
        );
        let docker = "application/vnd.docker.distribution.manifest.v2+json";
        assert_eq!(manifest_media_type(Some("application/json"), body), docker);
        assert_eq!(manifest_media_type(None, body), docker);
        assert_eq!(
            manifest_media_type(Some("application/json"), b"{}"),
            "application/json"
        );
        assert_eq!(manifest_media_type(None, b"not json"), "");
    }
}
