//! `GET /metrics` over HTTP/1.1 on the configured TCP address, in the
//! Prometheus text format (0.0.4). Everything else is 404 (405 for another
//! method on `/metrics`). A scraper cannot hold resources: few connections
//! at once, a deadline for the request head, a small head buffer, request
//! bodies never read, and a cap on a connection's life.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Scrapers served at once; more are closed on arrival.
const MAX_CONNECTIONS: usize = 16;
/// A client must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered for a request head (hyper's minimum).
const MAX_HEAD_BYTES: usize = 8192;
/// A kept-alive connection is closed after this long, scraping or not.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

const PATH: &str = "/metrics";

#[derive(Debug, thiserror::Error)]
#[error("binding the metrics endpoint to {address}")]
pub struct BindError {
    address: String,
    #[source]
    source: std::io::Error,
}

pub struct Server {
    listener: TcpListener,
}

impl Server {
    /// Binds `address` (`IP:PORT`, already validated; port 0 picks a free
    /// one). Done before recovery, so that a taken port fails fast.
    pub async fn bind(address: &str) -> Result<Server, BindError> {
        let failed = |source| BindError {
            address: address.to_string(),
            source,
        };
        let listener = TcpListener::bind(address).await.map_err(failed)?;
        let local_addr = listener.local_addr().map_err(failed)?;
        // Logged here, before the daemon serves CRI: the address is known
        // (and connections queue) from now on, and whoever waits for the
        // daemon to be ready then finds the line.
        tracing::info!(address = %local_addr, "serving metrics on http://{local_addr}{PATH}");
        Ok(Server { listener })
    }

    /// Serves `registry` until the task is aborted.
    pub async fn serve(self, registry: Registry) {
        let registry = Arc::new(registry);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection");
                    // EMFILE and the like: let the condition pass.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::debug!(%peer, "too many metrics connections, closing a new one");
                continue;
            };
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&request, &registry);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(tcp), service);
                match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection ended"),
                    Ok(Ok(())) => {}
                    Err(_) => {
                        tracing::debug!(%peer, "metrics connection closed after its lifetime")
                    }
                }
            });
        }
    }
}

fn respond(request: &Request<Incoming>, registry: &Registry) -> Response<String> {
    if request.uri().path() != PATH {
        return plain(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut text = String::with_capacity(16 << 10);
    if let Err(e) = prometheus_text::encode(&mut text, registry) {
        tracing::error!(error = %e, "encoding metrics");
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        );
    }
    let mut response = Response::new(text);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    response
}

fn plain(status: StatusCode, message: &str) -> Response<String> {
    let mut response = Response::new(message.to_string());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
