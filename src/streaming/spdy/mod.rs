//! SPDY/3.1, the stream multiplexing kubectl, kubelet and crictl speak to
//! streaming servers by default (through Go's spdystream): framing,
//! header compression and a server connection.

#[cfg(test)]
pub mod client;
mod conn;
mod dictionary;
pub mod frame;
pub mod headers;
mod reader;

pub use conn::{Connection, IncomingStream, Limits, Stream};

/// The `Upgrade` token of a SPDY request.
pub const UPGRADE_TOKEN: &str = "SPDY/3.1";
