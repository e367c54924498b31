//! What the streaming server asks of the runtime: run a process in a
//! container with the client's stdio, join a container's stdio, and open a
//! connection to a port inside a pod. The transport (SPDY or WebSocket,
//! see the rest of this module) demultiplexes the client's streams into
//! [`Stdio`] and hands it to a [`Backend`]; the backend never sees the
//! protocol, and the transport never sees runc, monitors or namespaces.

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A terminal size from the client's resize stream (columns, rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// The client's side of one exec or attach session. A stream the client
/// did not ask for is `None`. End of file on `stdin` means the client
/// closed its stdin (half-close): the backend closes the process's stdin.
/// With a terminal, `stderr` is `None` (the terminal carries both) and
/// sizes arrive on `resize`, the first one before or soon after the start.
pub struct Stdio {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

/// One exec, as the CRI `ExecRequest` asked for it (already validated:
/// the container exists, `cmd` is not empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
}

/// One attach, as the CRI `AttachRequest` asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachTarget {
    pub container_id: String,
    pub tty: bool,
}

/// Why a session could not run or ended abnormally; the transport reports
/// `message` to the client on the error stream (as a `metav1.Status`
/// failure where the protocol has one).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: BackendErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The container or pod is gone or not running.
    NotFound,
    /// The request cannot be served as asked (say, stdin on attach to a
    /// container created without stdin, or a port outside 1..=65535).
    Invalid,
    /// Anything else: the runtime failed, a namespace could not be entered.
    Internal,
}

impl BackendError {
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The runtime's side of the streaming server. Every future returned here
/// ends when the session ends (the process exited, the container stopped,
/// the connection closed) and leaves no process, fd or task behind when it
/// is dropped part-way: dropping is how the transport cancels a session
/// whose client went away.
pub trait Backend: Send + Sync + 'static {
    /// Runs `target.cmd` in the container with the client's stdio (a
    /// terminal when `target.tty`, resized from `stdio.resize`) until it
    /// exits; returns its exit code (128 + signal when a signal ended it).
    /// A command that cannot be started (not found, not executable) is an
    /// `Err` with the runtime's message, as kubelet reports it.
    fn exec(
        &self,
        target: ExecTarget,
        stdio: Stdio,
    ) -> impl Future<Output = Result<i32, BackendError>> + Send;

    /// Joins the running container's stdio: its output from now on goes
    /// to `stdout`/`stderr` (several attachers each get all of it), and
    /// `stdin`, when given, reaches the container's stdin. Ends when the
    /// container exits or the client closes its streams.
    fn attach(
        &self,
        target: AttachTarget,
        stdio: Stdio,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// A connection to `127.0.0.1:port` inside the pod's network namespace
    /// (the host's for a host-network pod), made on the caller's behalf;
    /// one per port-forward data stream.
    fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> impl Future<Output = Result<tokio::net::TcpStream, BackendError>> + Send;
}
