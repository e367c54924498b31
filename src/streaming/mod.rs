//! The streaming server for `Exec`, `Attach` and `PortForward`: the CRI
//! calls return a URL on it, and kubelet (or crictl) proxies the client's
//! SPDY or WebSocket upgrade there.
//!
//! - [`tokens`]: the pending sessions behind single-use URLs;
//! - [`server`]: HTTP routes and the upgrade to SPDY or WebSocket;
//! - [`spdy`], [`remotecommand`], [`portforward`]: SPDY/3.1 and the
//!   Kubernetes subprotocols on it; [`websocket`]: the same over WebSocket,
//!   and [`tunnel`]: SPDY port-forward tunnelled through WebSocket;
//! - [`backend`]: what the transport asks of the runtime.

pub mod backend;
mod idle;
pub mod portforward;
pub mod remotecommand;
pub mod runtime_backend;
pub mod server;
pub mod session;
pub mod spdy;
pub mod status;
pub mod tokens;
pub mod tunnel;
pub mod websocket;

pub use server::Server;
pub use tokens::{Session, Streams};

#[cfg(test)]
mod tests;
