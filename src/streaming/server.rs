//! The HTTP side of the streaming server: `/exec/{token}`,
//! `/attach/{token}` and `/portforward/{token}`, as kubelet's reference
//! server serves them. A request consumes its token, then upgrades to
//! SPDY/3.1 or WebSocket, whichever it asks for.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::backend::Backend;
use super::session::{Command, Wanted};
use super::spdy;
use super::tokens::{Session, TokenError, Tokens, MAX_PENDING};
use super::{portforward, remotecommand, tunnel, websocket};
use crate::config::StreamSection;

/// Connections served at once; more are closed on arrival.
const MAX_CONNECTIONS: usize = 1024;
/// A client must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// SPDY streams open at once on one connection.
const MAX_STREAMS: usize = 128;

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";

#[derive(Debug, thiserror::Error)]
#[error("binding the streaming server to {addr}")]
pub struct BindError {
    addr: String,
    #[source]
    source: std::io::Error,
}

pub struct Server {
    tokens: Tokens,
    base_url: String,
    local_addr: SocketAddr,
    listener: Mutex<Option<TcpListener>>,
    /// (idle, stream creation) of sessions started from now on.
    timeouts: Mutex<(Duration, Duration)>,
}

type Body = String;

fn session_timeouts(config: &StreamSection) -> (Duration, Duration) {
    (
        Duration::from_secs(config.idle_timeout_secs),
        Duration::from_secs(config.stream_creation_timeout_secs),
    )
}

impl Server {
    pub async fn bind(config: &StreamSection) -> Result<Server, BindError> {
        let addr = format!("{}:{}", bracketed(&config.address), config.port);
        let listener = TcpListener::bind(&addr).await.map_err(|source| BindError {
            addr: addr.clone(),
            source,
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BindError { addr, source })?;
        // An unspecified address is reachable on loopback: kubelet runs on
        // this node.
        let host = if local_addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            bracketed(&local_addr.ip().to_string())
        };
        Ok(Server {
            tokens: Tokens::new(Duration::from_secs(config.token_lifetime_secs), MAX_PENDING),
            base_url: format!("http://{host}:{}", local_addr.port()),
            local_addr,
            listener: Mutex::new(Some(listener)),
            timeouts: Mutex::new(session_timeouts(config)),
        })
    }

    /// Applies `config`'s token lifetime and session timeouts to sessions
    /// requested from now on. The address and port stay: the listener is
    /// bound once.
    pub fn reload(&self, config: &StreamSection) {
        self.tokens
            .set_lifetime(Duration::from_secs(config.token_lifetime_secs));
        *self.timeouts.lock().unwrap() = session_timeouts(config);
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stores `session` and returns the URL that serves it, once.
    pub fn url_for(&self, session: Session) -> Result<String, TokenError> {
        let route = session.route();
        let token = self.tokens.insert(session)?;
        Ok(format!("{}/{route}/{token}", self.base_url))
    }

    /// Serves until `shutdown` resolves. Sessions in progress are not
    /// waited for.
    pub async fn serve<B: Backend>(
        self: Arc<Self>,
        backend: Arc<B>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Some(listener) = self.listener.lock().unwrap().take() else {
            tracing::error!("streaming server already serving");
            return;
        };
        tracing::info!(url = %self.base_url, "serving streams");
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = &mut shutdown => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a streaming connection");
                    // EMFILE and the like: let the condition pass.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::warn!(%peer, "too many streaming connections, closing a new one");
                continue;
            };
            let server = Arc::clone(&self);
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                let slot = Arc::new(slot);
                let service = hyper::service::service_fn(move |request| {
                    let response = server.handle(request, Arc::clone(&backend), Arc::clone(&slot));
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades();
                if let Err(e) = connection.await {
                    tracing::debug!(%peer, error = %e, "streaming connection ended");
                }
            });
        }
    }

    fn handle<B: Backend>(
        &self,
        mut request: Request<Incoming>,
        backend: Arc<B>,
        slot: Arc<tokio::sync::OwnedSemaphorePermit>,
    ) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::POST {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and POST are served",
            );
        }
        let Some((route, token)) = split_path(request.uri().path()) else {
            return plain(StatusCode::NOT_FOUND, "404 page not found");
        };
        let Some(session) = self.tokens.consume(token) else {
            return plain(StatusCode::NOT_FOUND, "404 page not found");
        };
        if session.route() != route {
            return plain(StatusCode::NOT_FOUND, "404 page not found");
        }
        let headers = request.headers();
        let upgrade = header_text(headers, UPGRADE);
        if !has_token(headers, CONNECTION, "upgrade") || upgrade.is_empty() {
            return plain(
                StatusCode::BAD_REQUEST,
                "unable to upgrade: missing upgrade headers in request",
            );
        }
        let on_upgrade = hyper::upgrade::on(&mut request);
        let (idle, creation) = *self.timeouts.lock().unwrap();
        if upgrade.eq_ignore_ascii_case("websocket") {
            let timeouts = (idle, creation);
            return websocket_upgrade(request, on_upgrade, session, backend, slot, timeouts);
        }
        if !upgrade
            .to_ascii_uppercase()
            .starts_with(spdy::UPGRADE_TOKEN)
        {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("unable to upgrade: unsupported protocol {upgrade:?}"),
            );
        }
        let offered = list_values(request.headers(), PROTOCOL_HEADER);
        let supported: &[&str] = match session {
            Session::PortForward { .. } => &[portforward::PROTOCOL],
            _ => &remotecommand::PROTOCOLS,
        };
        let chosen = match offered.iter().find(|o| supported.contains(&o.as_str())) {
            Some(chosen) => Some(chosen.clone()),
            None if offered.is_empty() => None,
            None => {
                let mut response = plain(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
                    ),
                );
                for protocol in supported {
                    response
                        .headers_mut()
                        .append(ACCEPTED_HEADER, HeaderValue::from_static(protocol));
                }
                return response;
            }
        };
        let mut response = Response::new(Body::new());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let reply = response.headers_mut();
        reply.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        reply.insert(UPGRADE, HeaderValue::from_static(spdy::UPGRADE_TOKEN));
        if let Some(chosen) = &chosen {
            if let Ok(value) = HeaderValue::from_str(chosen) {
                reply.insert(PROTOCOL_HEADER, value);
            }
        }
        tokio::spawn(async move {
            let _slot = slot;
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY upgrade failed");
                    return;
                }
            };
            let limits = spdy::Limits {
                max_streams: MAX_STREAMS,
                idle_timeout: idle,
            };
            let conn = spdy::Connection::start(TokioIo::new(upgraded), limits);
            match wanted_of(session) {
                Ok(wanted) => {
                    let version = chosen
                        .as_deref()
                        .and_then(remotecommand::Version::of)
                        .unwrap_or(remotecommand::Version::V1);
                    remotecommand::serve(conn, version, wanted, backend, creation).await
                }
                Err((pod_sandbox_id, _)) => {
                    portforward::serve(conn, pod_sandbox_id, backend, creation).await
                }
            }
        });
        response
    }
}

fn websocket_upgrade<B: Backend>(
    request: Request<Incoming>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    session: Session,
    backend: Arc<B>,
    slot: Arc<tokio::sync::OwnedSemaphorePermit>,
    (idle, creation): (Duration, Duration),
) -> Response<Body> {
    let headers = request.headers();
    let key = header_text(headers, "sec-websocket-key");
    if key.is_empty() || header_text(headers, "sec-websocket-version") != "13" {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: a WebSocket version 13 request with a key is required",
        );
    }
    let offered = list_values(headers, "sec-websocket-protocol");
    let supported: &[&'static str] = match session {
        Session::PortForward { .. } => &websocket::PORT_FORWARD_PROTOCOLS,
        _ => &websocket::EXEC_PROTOCOLS,
    };
    let Some(protocol) = websocket::negotiate(&offered, supported) else {
        return plain(
            StatusCode::BAD_REQUEST,
            &format!(
                "requested protocol(s) are not supported: {offered:?}; supports {supported:?}"
            ),
        );
    };
    // kubelet takes the ports of a WebSocket port-forward from the query.
    let query_ports = match query_ports(request.uri().query().unwrap_or("")) {
        Ok(ports) => ports,
        Err(message) => return plain(StatusCode::BAD_REQUEST, &message),
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::new(Body::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let reply = response.headers_mut();
    reply.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    reply.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        reply.insert("sec-websocket-accept", accept);
    }
    if !protocol.is_empty() {
        reply.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    }
    tokio::spawn(async move {
        let _slot = slot;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let ws = websocket::accept(TokioIo::new(upgraded)).await;
        match wanted_of(session) {
            Ok(wanted) => websocket::serve_exec(ws, protocol, wanted, backend, idle).await,
            Err((pod_sandbox_id, _)) if protocol == tunnel::PROTOCOL => {
                let limits = spdy::Limits {
                    max_streams: MAX_STREAMS,
                    idle_timeout: idle,
                };
                let conn = spdy::Connection::start(tunnel::open(ws), limits);
                portforward::serve(conn, pod_sandbox_id, backend, creation).await
            }
            Err((pod_sandbox_id, ports)) => {
                let ports = if query_ports.is_empty() {
                    ports
                } else {
                    query_ports
                };
                websocket::serve_port_forward(ws, protocol, pod_sandbox_id, ports, backend, idle)
                    .await
            }
        }
    });
    response
}

/// An exec or attach, or else the pod and ports of a port-forward.
fn wanted_of(session: Session) -> Result<Wanted, (String, Vec<u16>)> {
    match session {
        Session::Exec { target, streams } => Ok(Wanted {
            command: Command::Exec(target),
            streams,
        }),
        Session::Attach { target, streams } => Ok(Wanted {
            command: Command::Attach(target),
            streams,
        }),
        Session::PortForward {
            pod_sandbox_id,
            ports,
        } => Err((pod_sandbox_id, ports)),
    }
}

fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (route, token) = rest.split_once('/')?;
    let token = token.trim_end_matches('/');
    (!token.is_empty() && !token.contains('/')).then_some((route, token))
}

/// `port=80&port=8080,9090`: every port named (kubelet's `NewV4Options`).
fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("port=") else {
            continue;
        };
        for port in value.split("%2C").flat_map(|p| p.split(',')) {
            match port.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("unable to parse {value:?} as a port")),
            }
        }
        if ports.len() > 64 {
            return Err("too many ports".into());
        }
    }
    Ok(ports)
}

fn bracketed(address: &str) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}

fn header_text(headers: &HeaderMap, name: impl hyper::header::AsHeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn has_token(headers: &HeaderMap, name: impl hyper::header::AsHeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// All values of a header that may repeat or hold a comma-separated list.
fn list_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .take(32)
        .collect()
}

fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(format!("{message}\n"));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_query_ports() {
        assert_eq!(split_path("/exec/abc"), Some(("exec", "abc")));
        assert_eq!(split_path("/exec/"), None);
        assert_eq!(split_path("/exec/a/b"), None);
        assert_eq!(split_path("/exec"), None);
        assert_eq!(
            query_ports("port=80&port=8080,9090").unwrap(),
            vec![80, 8080, 9090]
        );
        assert_eq!(query_ports("x=1").unwrap(), Vec::<u16>::new());
        assert!(query_ports("port=0").is_err());
        assert!(query_ports("port=70000").is_err());
        assert_eq!(bracketed("::1"), "[::1]");
    }
}
