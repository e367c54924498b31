//! Error classification shared by every layer.
//!
//! Library modules define their own `thiserror` enums and say which [`Kind`]
//! each variant is; only the gRPC edge turns a kind into a status code.

use std::error::Error as StdError;
use std::fmt::Write;

/// What went wrong, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    /// A remote party (a registry, a plugin) failed or could not be reached.
    Unavailable,
    DeadlineExceeded,
    /// A configured limit (size, count) would be exceeded.
    ResourceExhausted,
    /// Content is corrupt: it does not match the digest it was named by.
    /// Not worth retrying, unlike [`Kind::Unavailable`].
    DataLoss,
    Unimplemented,
    /// A bug or a local fault (I/O on our own files).
    Internal,
}

/// Implemented by every library error so the edge can map it.
pub trait Classify {
    fn kind(&self) -> Kind;
}

/// The error and all its sources, `outer: inner: innermost`.
pub fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // thiserror messages often already embed their source with {0}.
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("pulling busybox")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_lists_sources_once() {
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(chain(&e), "pulling busybox: connection reset");
    }
}
