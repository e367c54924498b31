//! Port-forward over SPDY (`portforward.k8s.io`, kubelet's portforward
//! `httpstream.go`): per forwarded connection the client opens an error
//! and a data stream with the same `requestID` and `port`; each complete
//! pair gets one connection to the port inside the pod.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use super::backend::Backend;
use super::spdy::{headers, Connection, IncomingStream, Stream};

pub const PROTOCOL: &str = "portforward.k8s.io";

const FLUSH_GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    port: u16,
    opened: Option<Instant>,
}

/// Why a stream is refused (kubelet's `httpStreamReceived` checks).
fn check(stream: &IncomingStream) -> Result<(u16, bool, String), String> {
    let port = headers::get(&stream.headers, "port").unwrap_or("");
    if port.is_empty() {
        return Err("\"port\" header is required".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("unable to parse {port:?} as a port"))?;
    if port == 0 {
        return Err("port must be > 0".into());
    }
    let is_data = match headers::get(&stream.headers, "streamType").unwrap_or("") {
        "data" => true,
        "error" => false,
        other => return Err(format!("invalid stream type {other:?}")),
    };
    // Clients before Kubernetes 1.8 sent no requestID: the error stream
    // came first, its data stream two ids later.
    let request_id = match headers::get(&stream.headers, "requestID") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ if is_data => stream.id.saturating_sub(2).to_string(),
        _ => stream.id.to_string(),
    };
    Ok((port, is_data, request_id))
}

pub async fn serve<B: Backend>(
    mut conn: Connection,
    pod_sandbox_id: String,
    backend: Arc<B>,
    creation_timeout: Duration,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    let mut sweep = tokio::time::interval(creation_timeout.max(Duration::from_secs(1)) / 2);
    loop {
        let incoming = tokio::select! {
            incoming = conn.next_stream() => incoming,
            _ = sweep.tick() => {
                expire(&mut pairs, creation_timeout).await;
                continue;
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
        };
        let Some(incoming) = incoming else { break };
        let (port, is_data, request_id) = match check(&incoming) {
            Ok(checked) => checked,
            Err(reason) => {
                tracing::debug!(reason, "refusing a port-forward stream");
                incoming.refuse();
                continue;
            }
        };
        let pair = pairs.entry(request_id.clone()).or_default();
        let slot = if is_data {
            &mut pair.data
        } else {
            &mut pair.error
        };
        if slot.is_some() {
            incoming.refuse();
            continue;
        }
        *slot = Some(incoming.accept());
        pair.port = port;
        pair.opened.get_or_insert_with(Instant::now);
        if pair.data.is_some() && pair.error.is_some() {
            let pair = pairs.remove(&request_id).expect("the pair just completed");
            let (Some(data), Some(error)) = (pair.data, pair.error) else {
                continue;
            };
            let backend = Arc::clone(&backend);
            let pod = pod_sandbox_id.clone();
            forwards.spawn(async move { forward(backend.as_ref(), &pod, port, data, error).await });
        }
    }
    // The client closed the connection: forwards end with it.
    forwards.shutdown().await;
    conn.close(FLUSH_GRACE).await;
}

async fn expire(pairs: &mut HashMap<String, Pair>, timeout: Duration) {
    let now = Instant::now();
    let expired: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.opened.is_some_and(|t| now.duration_since(t) >= timeout))
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        if let Some(Pair {
            error: Some(mut error),
            ..
        }) = pairs.remove(&id)
        {
            let message = format!("(request={id}) timed out waiting for streams");
            let _ = error.output.write_all(message.as_bytes()).await;
        }
    }
}

/// One forwarded connection: the data stream both ways, failures on the
/// error stream; both streams end (FIN) with it.
async fn forward<B: Backend>(backend: &B, pod: &str, port: u16, data: Stream, error: Stream) {
    let mut error_out = error.output;
    match backend.port_forward(pod, port).await {
        Ok(tcp) => {
            let (read, write) = tcp.into_split();
            if let Err(e) = splice(data.input, data.output, read, write).await {
                tracing::debug!(port, error = %e, "port-forward connection ended");
            }
        }
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {pod}, uid : {e}");
            let _ = error_out.write_all(message.as_bytes()).await;
        }
    }
}

/// Copies `client_in` → `remote_out` and `remote_in` → `client_out`, each
/// direction closed (FIN / shutdown) at its end, until both ended.
pub async fn splice(
    mut client_in: impl AsyncRead + Unpin,
    mut client_out: impl AsyncWrite + Unpin,
    mut remote_in: impl AsyncRead + Unpin,
    mut remote_out: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let upstream = async {
        let copied = tokio::io::copy(&mut client_in, &mut remote_out).await;
        let _ = remote_out.shutdown().await;
        copied
    };
    let downstream = async {
        let copied = tokio::io::copy(&mut remote_in, &mut client_out).await;
        let _ = client_out.shutdown().await;
        copied
    };
    let (up, down) = tokio::join!(upstream, downstream);
    up.and(down).map(|_| ())
}
