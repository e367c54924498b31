//! Exec and attach over SPDY (kubelet's remotecommand `httpstream.go`):
//! the client opens one stream per stdio channel, named by the
//! `streamType` header; once all the session needs are there, the backend
//! runs, and the outcome goes to the error stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::backend::{Backend, Stdio};
use super::session::{self, Wanted};
use super::spdy::{headers, Connection, Stream};

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

impl Streams {
    fn slot(
        &mut self,
        kind: &str,
        wanted: &Wanted,
        version: Version,
    ) -> Option<&mut Option<Stream>> {
        let s = wanted.streams;
        match kind {
            "stdin" if s.stdin => Some(&mut self.stdin),
            "stdout" if s.stdout => Some(&mut self.stdout),
            "stderr" if s.stderr => Some(&mut self.stderr),
            "error" => Some(&mut self.error),
            "resize" if s.tty && version >= Version::V3 => Some(&mut self.resize),
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

pub async fn serve<B: Backend>(
    mut conn: Connection,
    version: Version,
    wanted: Wanted,
    backend: Arc<B>,
    creation_timeout: Duration,
) {
    let mut streams = Streams::default();
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
                _ => {
                    tracing::debug!(kind, "refusing an unexpected or repeated stream");
                    incoming.refuse();
                }
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
    // Streams opened after the session's are refused; the loop ends when
    // the connection does.
    let refuse_extra = async {
        while let Some(extra) = conn.next_stream().await {
            extra.refuse();
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
    conn.close(FLUSH_GRACE).await;
}
