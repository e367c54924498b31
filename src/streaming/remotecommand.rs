//! Exec and attach over SPDY (kubelet's remotecommand `httpstream.go`):
//! the client opens one stream per stdio channel, named by the
//! `streamType` header; once all the session needs are there, the backend
//! runs, and the outcome goes to the error stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::backend::{Backend, Stdio};
use super::session::{self, Wanted};
use super::spdy::{headers, Connection, IncomingStream, Stream};

/// Subprotocols for `X-Stream-Protocol-Version`, most preferred first.
pub const PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1,
    V2,
    V3,
    V4,
}

impl Version {
    pub fn of(protocol: &str) -> Option<Version> {
        Some(match protocol {
            "v4.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            "v2.channel.k8s.io" => Version::V2,
            "channel.k8s.io" => Version::V1,
            _ => return None,
        })
    }
}

/// How long the connection stays open after the session for what was
/// written to reach the client.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Streams {
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    error: Option<Stream>,
    resize: Option<Stream>,
}

/// Whether the session uses a stream of this kind.
fn is_wanted(kind: &str, wanted: &Wanted, version: Version) -> bool {
    let s = wanted.streams;
    match kind {
        "stdin" => s.stdin,
        "stdout" => s.stdout,
        "stderr" => s.stderr,
        "error" => true,
        "resize" => s.tty && version >= Version::V3,
        _ => false,
    }
}

impl Streams {
    fn slot(
        &mut self,
        kind: &str,
        wanted: &Wanted,
        version: Version,
    ) -> Option<&mut Option<Stream>> {
        if !is_wanted(kind, wanted, version) {
            return None;
        }
        match kind {
            "stdin" => Some(&mut self.stdin),
            "stdout" => Some(&mut self.stdout),
            "stderr" => Some(&mut self.stderr),
            "error" => Some(&mut self.error),
            "resize" => Some(&mut self.resize),
            _ => None,
        }
    }

    fn complete(&self, wanted: &Wanted, version: Version) -> bool {
        let s = wanted.streams;
        self.error.is_some()
            && (!s.stdin || self.stdin.is_some())
            && (!s.stdout || self.stdout.is_some())
            && (!s.stderr || self.stderr.is_some())
            && (!(s.tty && version >= Version::V3) || self.resize.is_some())
    }
}

/// Stdio streams the session was not asked for but the client opened
/// anyway: client-go opens `stderr` whenever its caller has somewhere to
/// write it, whatever the URL asked for (kubelet's `/exec?output=1`
/// proxied here). kubelet's own streaming server accepts such streams; a
/// reset would fail the client's whole session, so they are accepted and
/// stay silent until the session ends. A second stream of one kind, or
/// one of no known kind, is still refused.
#[derive(Default)]
struct Unused {
    kinds: Vec<String>,
    /// Their output halves, held so that the streams stay open. Their
    /// input halves are dropped at once: what a client sends on them is
    /// then discarded instead of filling a pipe nobody reads, which would
    /// stall the whole connection.
    outputs: Vec<tokio::io::DuplexStream>,
}

impl Unused {
    fn take(&mut self, kind: &str, incoming: IncomingStream) {
        let stdio = matches!(kind, "stdin" | "stdout" | "stderr" | "resize");
        if stdio && !self.kinds.iter().any(|k| k == kind) {
            tracing::debug!(kind, "accepting a stream the session does not use");
            self.kinds.push(kind.to_string());
            self.outputs.push(incoming.accept().output);
        } else {
            tracing::debug!(kind, "refusing an unexpected or repeated stream");
            incoming.refuse();
        }
    }
}

pub async fn serve<B: Backend>(
    mut conn: Connection,
    version: Version,
    wanted: Wanted,
    backend: Arc<B>,
    creation_timeout: Duration,
) {
    let mut streams = Streams::default();
    let mut unused = Unused::default();
    let collect = async {
        while !streams.complete(&wanted, version) {
            let Some(incoming) = conn.next_stream().await else {
                return false;
            };
            let kind = headers::get(&incoming.headers, "streamType")
                .unwrap_or("")
                .to_string();
            match streams.slot(&kind, &wanted, version) {
                Some(slot) if slot.is_none() => *slot = Some(incoming.accept()),
                Some(_) => {
                    tracing::debug!(kind, "refusing a repeated stream");
                    incoming.refuse();
                }
                None => unused.take(&kind, incoming),
            }
        }
        true
    };
    match tokio::time::timeout(creation_timeout, collect).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(_) => {
            tracing::info!("client did not open its streams in time, closing");
            conn.close(FLUSH_GRACE).await;
            return;
        }
    }
    let Streams {
        stdin,
        stdout,
        stderr,
        error,
        resize,
    } = streams;
    let error = error.expect("complete streams include the error stream");
    // Write halves the session does not use stay open until the end, so
    // that the client sees no early FIN.
    let mut held = Vec::new();
    let stdin = stdin.map(|s| {
        held.push(s.output);
        Box::pin(s.input) as super::backend::Reader
    });
    let resize = resize.map(|s| {
        held.push(s.output);
        session::read_sizes(s.input)
    });
    let stdio = Stdio {
        stdin,
        stdout: stdout.map(|s| Box::pin(s.output) as super::backend::Writer),
        stderr: stderr.map(|s| Box::pin(s.output) as super::backend::Writer),
        resize,
    };
    // Streams opened after the session's: repeats are refused, unused
    // stdio kept (see [`Unused`]); the loop ends when the connection does.
    let refuse_extra = async {
        while let Some(extra) = conn.next_stream().await {
            let kind = headers::get(&extra.headers, "streamType").unwrap_or("");
            if is_wanted(kind, &wanted, version) {
                extra.refuse();
            } else {
                let kind = kind.to_string();
                unused.take(&kind, extra);
            }
        }
    };
    let outcome = tokio::select! {
        outcome = wanted.command.run(backend.as_ref(), stdio) => outcome,
        _ = refuse_extra => {
            tracing::debug!("client went away, session cancelled");
            return;
        }
    };
    let mut error_out = error.output;
    let report = wanted
        .command
        .error_stream_bytes(&outcome, version >= Version::V4);
    let _ = error_out.write_all(&report).await;
    drop(error_out);
    drop(held);
    drop(unused);
    conn.close(FLUSH_GRACE).await;
}
