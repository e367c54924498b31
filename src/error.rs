//! Error classification shared by every layer.
//!
//! Library modules define their own `thiserror` enums and say which [`Kind`]
//! each variant is; only the gRPC edge turns a kind into a status code.

use std::error::Error as StdError;
use std::fmt::Write;
use std::io;
use std::path::{Path, PathBuf};

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
    /// A configured limit (size, count) would be exceeded, the disk or a
    /// quota is full, or an answer is too large to send.
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

/// The kind of `error` as the caller should see it: what its own
/// [`Classify`] says, except that an internal fault caused by a full disk
/// (`ENOSPC`, `EDQUOT`) anywhere in its source chain is
/// [`Kind::ResourceExhausted`], and one caused by a path the request made
/// unusable (`ENAMETOOLONG`, an interior NUL byte) is
/// [`Kind::InvalidArgument`]. Library enums need not inspect their
/// I/O errors for this.
pub fn kind_of<E: Classify + StdError + 'static>(error: &E) -> Kind {
    let kind = error.kind();
    if kind != Kind::Internal {
        return kind;
    }
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(kind) = io_kind(cause) {
            return kind;
        }
        source = cause.source();
    }
    kind
}

/// The kind an I/O failure (std or nix) implies, if it is not a local fault.
fn io_kind(error: &(dyn StdError + 'static)) -> Option<Kind> {
    use nix::errno::Errno;
    let errno = if let Some(io) = error.downcast_ref::<std::io::Error>() {
        match io.raw_os_error() {
            Some(raw) => Errno::from_raw(raw),
            // std refuses a path with an interior NUL before any syscall,
            // as InvalidInput without an OS error.
            None if io.kind() == std::io::ErrorKind::InvalidInput => {
                return Some(Kind::InvalidArgument)
            }
            None => return None,
        }
    } else if let Some(errno) = error.downcast_ref::<Errno>() {
        *errno
    } else {
        return None;
    };
    match errno {
        Errno::ENOSPC | Errno::EDQUOT => Some(Kind::ResourceExhausted),
        Errno::ENAMETOOLONG => Some(Kind::InvalidArgument),
        _ => None,
    }
}

/// An I/O failure on one of Wharf's own files: what was being done, to
/// which path. Library enums embed it (`#[error(transparent)] Io(#[from]
/// IoError)`) instead of each carrying its own `{op, path, source}`; its
/// kind is decided by the enclosing error (usually [`Kind::Internal`], which
/// [`kind_of`] refines for a full disk or a path too long).
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl IoError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        IoError {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    /// The underlying error's kind, for callers that treat, say, a
    /// missing file differently.
    pub fn io_kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// `.at(op, path)`: names the step and the path of a failed I/O call.
pub trait IoResultExt<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T, IoError>;
}

impl<T> IoResultExt<T> for io::Result<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T, IoError> {
        self.map_err(|source| IoError::new(op, path.as_ref(), source))
    }
}

impl<T> IoResultExt<T> for nix::Result<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T, IoError> {
        self.map_err(|errno| IoError::new(op, path.as_ref(), errno))
    }
}

/// How error messages show a string a client gave: whole when short,
/// otherwise its first bytes and its length, so that a huge request is
/// never echoed back (nor logged) whole.
pub fn shown(value: &str) -> String {
    const SHOWN: usize = 64;
    if value.len() <= SHOWN {
        return format!("{value:?}");
    }
    let mut end = SHOWN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &value[..end], value.len())
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

    #[derive(Debug, thiserror::Error)]
    #[error("writing layer")]
    struct Fault(#[source] Outer);

    impl Classify for Fault {
        fn kind(&self) -> Kind {
            Kind::Internal
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("bad name")]
    struct Refused(#[source] std::io::Error);

    impl Classify for Refused {
        fn kind(&self) -> Kind {
            Kind::NotFound
        }
    }

    fn fault(errno: nix::errno::Errno) -> Fault {
        Fault(Outer(std::io::Error::from_raw_os_error(errno as i32)))
    }

    #[test]
    fn io_causes_deep_in_the_chain_refine_internal_faults() {
        use nix::errno::Errno;
        assert_eq!(kind_of(&fault(Errno::ENOSPC)), Kind::ResourceExhausted);
        assert_eq!(kind_of(&fault(Errno::EDQUOT)), Kind::ResourceExhausted);
        assert_eq!(kind_of(&fault(Errno::ENAMETOOLONG)), Kind::InvalidArgument);
        assert_eq!(kind_of(&fault(Errno::EIO)), Kind::Internal);
        assert_eq!(kind_of(&fault(Errno::EACCES)), Kind::Internal);
        // What std says about a path with a NUL byte.
        let nul = std::fs::metadata("a\0b").unwrap_err();
        assert_eq!(kind_of(&Fault(Outer(nul))), Kind::InvalidArgument);
        // A nix errno as a source counts as well.
        #[derive(Debug, thiserror::Error)]
        #[error("mounting")]
        struct Mount(#[source] Errno);
        impl Classify for Mount {
            fn kind(&self) -> Kind {
                Kind::Internal
            }
        }
        assert_eq!(kind_of(&Mount(Errno::ENOSPC)), Kind::ResourceExhausted);
        // A kind the library chose on purpose stays.
        let refused = Refused(std::io::Error::from_raw_os_error(Errno::ENOSPC as i32));
        assert_eq!(kind_of(&refused), Kind::NotFound);
    }

    #[test]
    fn long_user_strings_are_shown_truncated() {
        assert_eq!(shown("abc"), "\"abc\"");
        let long = "x".repeat(100_000);
        let text = shown(&long);
        assert!(text.len() < 100, "{text}");
        assert!(text.ends_with("... (100000 bytes)"), "{text}");
        // Never split a character.
        let wide = "é".repeat(100);
        assert!(shown(&wide).contains("(200 bytes)"));
    }

    #[test]
    fn io_errors_name_the_step_and_path_and_keep_the_errno() {
        let error = std::fs::read("/nonexistent/wharf/x")
            .at("reading", "/nonexistent/wharf/x")
            .unwrap_err();
        assert_eq!(error.to_string(), "reading /nonexistent/wharf/x");
        assert_eq!(error.io_kind(), std::io::ErrorKind::NotFound);
        let full = Err::<(), _>(nix::errno::Errno::ENOSPC).at("writing", "/x");
        #[derive(Debug, thiserror::Error)]
        #[error(transparent)]
        struct Wrapped(#[from] IoError);
        impl Classify for Wrapped {
            fn kind(&self) -> Kind {
                Kind::Internal
            }
        }
        let wrapped = Wrapped::from(full.unwrap_err());
        assert_eq!(kind_of(&wrapped), Kind::ResourceExhausted);
        assert_eq!(
            chain(&wrapped),
            "writing /x: No space left on device (os error 28)"
        );
    }

    #[test]
    fn chain_lists_sources_once() {
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(chain(&e), "pulling busybox: connection reset");
    }
}
