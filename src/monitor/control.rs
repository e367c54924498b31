//! The control socket: one request line per connection, one reply line.
//!
//! Connections are non-blocking and served from the monitor's poll loop,
//! so a client that connects and stalls never holds up the container's
//! output. Attach will be a connection that, after its request line,
//! turns into a stream (a new `Connection` state) instead of closing.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::MonitorError;
use crate::runtime::protocol::{ControlReply, ControlRequest};

/// Clients served at once; more are turned away.
const MAX_CONNECTIONS: usize = 16;
/// Longest request line.
const MAX_REQUEST: usize = 1024;
/// A client that has not sent its line by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Connection {
    stream: UnixStream,
    request: Vec<u8>,
    accepted_at: Instant,
    done: bool,
}

pub struct ControlServer {
    path: PathBuf,
    listener: UnixListener,
    connections: Vec<Connection>,
}

impl ControlServer {
    pub fn bind(path: &Path) -> Result<Self, MonitorError> {
        super::check_socket_path(path)?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(MonitorError::io("removing stale", path)(e))
            }
            _ => {}
        }
        let listener = UnixListener::bind(path).map_err(MonitorError::io("binding", path))?;
        listener
            .set_nonblocking(true)
            .map_err(MonitorError::io("configuring", path))?;
        Ok(Self {
            path: path.to_path_buf(),
            listener,
            connections: Vec::new(),
        })
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Descriptors of open connections, by index.
    pub fn connection_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.connections.iter().map(|c| c.stream.as_fd())
    }

    /// Accepts every pending client.
    pub fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if self.connections.len() >= MAX_CONNECTIONS || stream.set_nonblocking(true).is_err() {
                let _ = (&stream).write_all(b"error: busy\n");
                continue;
            }
            self.connections.push(Connection {
                stream,
                request: Vec::new(),
                accepted_at: Instant::now(),
                done: false,
            });
        }
    }

    /// Reads from connection `index`; once its line is complete, answers
    /// it with `handle` and closes it.
    pub fn serve(&mut self, index: usize, handle: impl FnOnce(ControlRequest) -> ControlReply) {
        let Some(connection) = self.connections.get_mut(index) else {
            return;
        };
        let mut buf = [0u8; 256];
        let read = match connection.stream.read(&mut buf) {
            Ok(0) => {
                connection.done = true;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => {
                connection.done = true;
                return;
            }
        };
        connection.request.extend_from_slice(&buf[..read]);
        let Some(end) = connection.request.iter().position(|&b| b == b'\n') else {
            if connection.request.len() > MAX_REQUEST {
                connection.reply(&ControlReply::Error("request too long".into()));
            }
            return;
        };
        let line = String::from_utf8_lossy(&connection.request[..end]).into_owned();
        let reply = match ControlRequest::parse(&line) {
            Some(request) => handle(request),
            None => ControlReply::Error(format!("unknown request {line:?}")),
        };
        connection.reply(&reply);
    }

    /// Drops finished and stalled connections.
    pub fn sweep(&mut self) {
        self.connections
            .retain(|c| !c.done && c.accepted_at.elapsed() < REQUEST_TIMEOUT);
    }
}

impl Connection {
    /// The reply is one short line: it fits in an empty socket buffer, so
    /// a non-blocking write either takes it whole or the client is gone.
    fn reply(&mut self, reply: &ControlReply) {
        let _ = self.stream.write_all(reply.to_line().as_bytes());
        self.done = true;
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
