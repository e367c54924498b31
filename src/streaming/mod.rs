//! The streaming server for `Exec`, `Attach` and `PortForward`: the CRI
//! calls return a URL on it, and kubelet (or crictl) proxies the client's
//! SPDY or WebSocket upgrade there.

pub mod backend;
pub mod runtime_backend;
pub mod spdy;
