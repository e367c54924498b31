//! The control socket: one request line per connection, one reply line.
//!
//! Connections are non-blocking and served from the monitor's poll loop,
//! so a client that connects and stalls never holds up the container's
//! output. A `wait-exit` connection stays open, idle, until the monitor
//! answers it with the exit record ([`ControlServer::notify_exit`]) or the
//! client goes away. Attach has a socket of its own (see `attach`).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::MonitorError;
use crate::runtime::protocol::{ControlReply, ControlRequest, ExitStatus};

/// Clients served at once; more are turned away.
const MAX_CONNECTIONS: usize = 16;
/// Of those, how many may wait for the exit (the daemon holds one; a
/// daemon that died and restarted may briefly hold two).
const MAX_WAITERS: usize = 4;
/// Longest request line.
const MAX_REQUEST: usize = 1024;
/// A client that has not sent its line by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Connection {
    stream: UnixStream,
    request: Vec<u8>,
    accepted_at: Instant,
    /// Asked `wait-exit`: held open, without a deadline, until the exit.
    waiting: bool,
    /// Asked `start`, which the handler held: open until
    /// [`ControlServer::answer_start`].
    starting: bool,
    done: bool,
}

pub struct ControlServer {
    path: PathBuf,
    listener: UnixListener,
    connections: Vec<Connection>,
}

impl ControlServer {
    pub fn bind(path: &Path) -> Result<Self, MonitorError> {
        let listener = super::sys::listen_nonblocking(path)?;
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
                waiting: false,
                starting: false,
                done: false,
            });
        }
    }

    /// Reads from connection `index`; once its line is complete, answers
    /// it with `handle` and closes it, or, for `wait-exit`, keeps it until
    /// [`notify_exit`](Self::notify_exit). A `start` that `handle` answers
    /// with `None` is kept until [`answer_start`](Self::answer_start).
    pub fn serve(
        &mut self,
        index: usize,
        handle: impl FnOnce(ControlRequest) -> Option<ControlReply>,
    ) {
        let waiters = self.connections.iter().filter(|c| c.waiting).count();
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
        if connection.waiting || connection.starting {
            // Nothing more is expected from a waiter: ignored.
            return;
        }
        connection.request.extend_from_slice(&buf[..read]);
        let Some(end) = connection.request.iter().position(|&b| b == b'\n') else {
            if connection.request.len() > MAX_REQUEST {
                connection.reply(&ControlReply::Error("request too long".into()));
            }
            return;
        };
        let line = String::from_utf8_lossy(&connection.request[..end]).into_owned();
        let reply = match ControlRequest::parse(&line) {
            Some(ControlRequest::WaitExit) if waiters < MAX_WAITERS => {
                connection.waiting = true;
                connection.request = Vec::new();
                return;
            }
            Some(ControlRequest::WaitExit) => ControlReply::Error("too many waiters".into()),
            Some(request) => match handle(request) {
                Some(reply) => reply,
                None => {
                    connection.starting = true;
                    connection.request = Vec::new();
                    return;
                }
            },
            None => ControlReply::Error(format!("unknown request {line:?}")),
        };
        connection.reply(&reply);
    }

    /// Drops finished and stalled connections.
    pub fn sweep(&mut self) {
        self.connections.retain(|c| {
            !c.done && (c.waiting || c.starting || c.accepted_at.elapsed() < REQUEST_TIMEOUT)
        });
    }

    /// Answers every held `start`.
    pub fn answer_start(&mut self, reply: &ControlReply) {
        for connection in self
            .connections
            .iter_mut()
            .filter(|c| c.starting && !c.done)
        {
            connection.reply(reply);
        }
    }

    /// Answers every `wait-exit` with the exit record. Call it after
    /// `exit.json` is written: the other connections close unanswered
    /// when the server is dropped, and their clients then read the file.
    pub fn notify_exit(&mut self, status: &ExitStatus) {
        for connection in self.connections.iter_mut().filter(|c| c.waiting && !c.done) {
            connection.reply(&ControlReply::Exit(*status));
        }
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use super::*;

    /// Runs one round of the server: accept, then serve every connection.
    fn round(server: &mut ControlServer) {
        server.accept();
        for index in 0..server.connections.len() {
            server.serve(index, |_| Some(ControlReply::Ok));
        }
        server.sweep();
    }

    fn client(path: &Path, request: &str) -> BufReader<UnixStream> {
        let mut stream = UnixStream::connect(path).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        BufReader::new(stream)
    }

    fn line(reader: &mut BufReader<UnixStream>) -> String {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn wait_exit_is_held_until_the_exit_and_others_are_answered_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor.sock");
        let mut server = ControlServer::bind(&path).unwrap();
        let mut waiter = client(&path, "wait-exit\n");
        let mut other = client(&path, "reopen-log\n");
        // The lines may need more than one read each.
        for _ in 0..3 {
            round(&mut server);
        }
        assert_eq!(line(&mut other), "ok\n");
        assert_eq!(server.connections.len(), 1, "only the waiter is kept");
        assert!(server.connections[0].waiting);

        let exit = ExitStatus::exited(4, 9);
        server.notify_exit(&exit);
        assert_eq!(
            ControlReply::parse(&line(&mut waiter)),
            Some(ControlReply::Exit(exit))
        );
        drop(server);
        assert_eq!(line(&mut waiter), "", "closed after the answer");
    }

    #[test]
    fn a_waiter_that_leaves_is_forgotten_and_waiters_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor.sock");
        let mut server = ControlServer::bind(&path).unwrap();
        let gone = client(&path, "wait-exit\n");
        round(&mut server);
        round(&mut server);
        assert_eq!(server.connections.len(), 1);
        drop(gone);
        round(&mut server);
        assert!(server.connections.is_empty());

        let mut waiters: Vec<_> = (0..MAX_WAITERS)
            .map(|_| client(&path, "wait-exit\n"))
            .collect();
        let mut turned_away = client(&path, "wait-exit\n");
        for _ in 0..3 {
            round(&mut server);
        }
        assert_eq!(line(&mut turned_away), "error: too many waiters\n");
        server.notify_exit(&ExitStatus::killed(9, 1));
        for waiter in &mut waiters {
            assert!(line(waiter).starts_with("exit: "));
        }
    }
}
