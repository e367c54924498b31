//! `wharf info`: the running daemon's Version and Status(verbose), read
//! over its socket and printed for a person.
//!
//! The CRI client is the one generated from `proto/api.proto`, driven over
//! a plain hyper HTTP/2 connection on the unix socket: tonic's own
//! transport (its `channel` feature) would add tower's balance, buffer and
//! discovery layers to the release build for one local call.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::transport::Uri;

use wharf::api::runtime_service_client::RuntimeServiceClient;
use wharf::api::{StatusRequest, StatusResponse, VersionRequest, VersionResponse};

/// A daemon that answers nothing within this time is reported as stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub fn print(socket: &Path) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting async runtime: {e}"))?;
    let (version, status) = runtime
        .block_on(async { tokio::time::timeout(CALL_TIMEOUT, query(socket)).await })
        .map_err(|_| {
            format!(
                "{}: no answer within {}s",
                socket.display(),
                CALL_TIMEOUT.as_secs()
            )
        })??;
    print!("{}", render(socket, &version, &status));
    Ok(())
}

async fn query(socket: &Path) -> Result<(VersionResponse, StatusResponse), String> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        format!("{what} {}: {e} (is wharf running?)", socket.display())
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| failed("connecting to", &e))?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| failed("HTTP/2 handshake with", &e))?;
    tokio::spawn(connection);
    let service = tower::service_fn(move |request: hyper::Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        async move { sender.send_request(request).await }
    });
    let mut client = RuntimeServiceClient::with_origin(service, Uri::from_static("http://wharf"));
    let version = client
        .version(VersionRequest::default())
        .await
        .map_err(|e| failed("Version on", &e.message()))?
        .into_inner();
    let status = client
        .status(StatusRequest { verbose: true })
        .await
        .map_err(|e| failed("Status on", &e.message()))?
        .into_inner();
    Ok((version, status))
}

fn render(socket: &Path, version: &VersionResponse, status: &StatusResponse) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("Socket:   {}", socket.display()));
    line(format!(
        "Runtime:  {} {} (CRI {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    ));
    line("Conditions:".into());
    for condition in status.status.iter().flat_map(|s| &s.conditions) {
        let detail = match (condition.reason.as_str(), condition.message.as_str()) {
            ("", "") => String::new(),
            (reason, message) => format!("  {reason}: {message}"),
        };
        line(format!(
            "  {:<14} {}{detail}",
            condition.r#type, condition.status
        ));
    }
    let handlers: Vec<String> = status
        .runtime_handlers
        .iter()
        .map(|h| match h.name.as_str() {
            "" => "(default)".to_string(),
            name => name.to_string(),
        })
        .collect();
    line(format!("Handlers: {}", handlers.join(", ")));
    let mut keys: Vec<&String> = status.info.keys().collect();
    keys.sort();
    for key in keys {
        let value = &status.info[key];
        // Values are JSON documents; printed pretty when they parse.
        let pretty = serde_json::from_str::<serde_json::Value>(value)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| value.clone());
        line(format!("{key}:"));
        for text in pretty.lines() {
            line(format!("  {text}"));
        }
    }
    out
}
