//! The attach socket: any number of clients (up to a cap) get the
//! container's output from the moment they join, framed per stream (see
//! [`crate::runtime::attach_frames`]), and may write its stdin and resize
//! its terminal.
//!
//! Served from the monitor's poll loop, never blocking it: output goes to
//! each client through a bounded buffer, and a client whose buffer would
//! overflow is dropped, so a slow attacher costs neither the log nor the
//! other attachers anything. Input is taken from the clients only while
//! the container's stdin has room for it, so a container that does not
//! read its stdin slows its attachers down, not the monitor.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::poll::PollFlags;

use super::log::Stream;
use super::MonitorError;
use crate::runtime::attach_frames::{self, FrameKind, HEADER_LEN, MAX_PAYLOAD};

/// Attachers served at once; more are turned away.
const MAX_CLIENTS: usize = 16;
/// Output buffered for one attacher before it is dropped as too slow.
const MAX_PENDING_OUTPUT: usize = 1024 * 1024;
/// Input buffered for the container's stdin; beyond it, clients wait.
const MAX_PENDING_INPUT: usize = 64 * 1024;

struct Client {
    stream: UnixStream,
    /// Received bytes not yet a whole frame.
    inbox: Vec<u8>,
    outbox: VecDeque<u8>,
    done: bool,
}

/// The container's stdin as attach writes it.
struct Input {
    fd: OwnedFd,
    /// A terminal's master: resizes apply to it.
    terminal: bool,
    /// Closed after the first attacher's stdin ends (`stdin_once`).
    once: bool,
    pending: VecDeque<u8>,
    /// Close once `pending` is written.
    closing: bool,
}

pub struct AttachServer {
    path: PathBuf,
    listener: UnixListener,
    clients: Vec<Client>,
    input: Option<Input>,
}

impl AttachServer {
    /// Binds the socket; stdin is added by [`Self::with_input`] once the
    /// container exists.
    pub fn bind(path: &Path) -> Result<Self, MonitorError> {
        let listener = super::sys::listen_nonblocking(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            listener,
            clients: Vec::new(),
            input: None,
        })
    }

    /// `stdin`: the container's stdin (a pipe's write end, or the
    /// terminal's master with `terminal`), if it was created with one.
    pub fn with_input(
        mut self,
        stdin: Option<OwnedFd>,
        terminal: bool,
        stdin_once: bool,
    ) -> Result<Self, MonitorError> {
        self.input = match stdin {
            Some(fd) => {
                super::sys::set_nonblocking(&fd)
                    .map_err(MonitorError::sys("setting O_NONBLOCK"))?;
                Some(Input {
                    fd,
                    terminal,
                    once: stdin_once && !terminal,
                    pending: VecDeque::new(),
                    closing: false,
                })
            }
            None => None,
        };
        Ok(self)
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Each client's descriptor and what to poll it for, by index.
    pub fn client_polls(&self) -> impl Iterator<Item = (BorrowedFd<'_>, PollFlags)> {
        let take_input = self.takes_input();
        self.clients.iter().map(move |client| {
            let mut flags = PollFlags::empty();
            if take_input {
                flags |= PollFlags::POLLIN;
            }
            if !client.outbox.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            (client.stream.as_fd(), flags)
        })
    }

    /// The container's stdin, while input waits for room in it.
    pub fn input_poll(&self) -> Option<BorrowedFd<'_>> {
        self.input
            .as_ref()
            .filter(|input| !input.pending.is_empty())
            .map(|input| input.fd.as_fd())
    }

    /// Reading from clients stops while the container's stdin is behind
    /// (a hang-up is still seen: poll reports it regardless).
    fn takes_input(&self) -> bool {
        self.input
            .as_ref()
            .is_none_or(|input| input.pending.len() < MAX_PENDING_INPUT)
    }

    pub fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                // Closing it tells the client: nothing to attach to here.
                continue;
            }
            self.clients.push(Client {
                stream,
                inbox: Vec::new(),
                outbox: VecDeque::new(),
                done: false,
            });
        }
    }

    /// Serves client `index` after poll reported `events` on it.
    pub fn serve(&mut self, index: usize, events: PollFlags) {
        let take_input = self.takes_input();
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        if events.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
            client.done = true;
            return;
        }
        client.flush();
        if !(take_input || events.contains(PollFlags::POLLHUP)) {
            return;
        }
        let mut buf = [0u8; HEADER_LEN + MAX_PAYLOAD];
        // After take_frames, the inbox holds less than one frame: bounded.
        match client.stream.read(&mut buf) {
            Ok(0) => client.done = true,
            Ok(n) => client.inbox.extend_from_slice(&buf[..n]),
            Err(e) if is_transient(&e) => {}
            Err(_) => client.done = true,
        }
        self.take_frames(index);
        self.write_input();
    }

    /// Acts on the whole frames client `index` sent.
    fn take_frames(&mut self, index: usize) {
        let client = &mut self.clients[index];
        let mut used = 0;
        loop {
            let frame = match attach_frames::decode(&client.inbox[used..]) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("wharf-monitor: attach client: {e}");
                    client.done = true;
                    break;
                }
            };
            let (kind, range, len) = frame;
            let payload = &client.inbox[used..][range];
            if let Some(input) = &mut self.input {
                input.take(kind, payload);
            }
            used += len;
        }
        client.inbox.drain(..used);
    }

    /// Writes what the container's stdin takes without blocking.
    pub fn write_input(&mut self) {
        let Some(input) = &mut self.input else {
            return;
        };
        while !input.pending.is_empty() {
            let (front, _) = input.pending.as_slices();
            match nix::unistd::write(&input.fd, front) {
                Ok(n) => {
                    input.pending.drain(..n);
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // The container closed its stdin: input goes nowhere.
                    self.input = None;
                    return;
                }
            }
        }
        if input.closing {
            self.input = None;
        }
    }

    /// Queues container output for every client; drops the ones that
    /// cannot take it.
    pub fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let kind = match stream {
            Stream::Stdout => FrameKind::Stdout,
            Stream::Stderr => FrameKind::Stderr,
        };
        let mut frames = Vec::with_capacity(data.len() + HEADER_LEN);
        for chunk in data.chunks(MAX_PAYLOAD) {
            attach_frames::encode(kind, chunk, &mut frames);
        }
        for client in self.clients.iter_mut().filter(|c| !c.done) {
            if client.outbox.len() + frames.len() > MAX_PENDING_OUTPUT {
                client.done = true;
                continue;
            }
            client.outbox.extend(&frames);
            client.flush();
        }
    }

    /// Drops clients that left, failed or fell behind.
    pub fn sweep(&mut self) {
        self.clients.retain(|c| !c.done);
    }

    /// Last delivery of buffered output before the monitor ends (without
    /// waiting for anyone).
    pub fn flush_all(&mut self) {
        for client in &mut self.clients {
            client.flush();
        }
    }
}

impl Input {
    fn take(&mut self, kind: FrameKind, payload: &[u8]) {
        match kind {
            FrameKind::Stdin if !self.closing => self.pending.extend(payload),
            FrameKind::StdinClose if self.once => self.closing = true,
            FrameKind::Resize if self.terminal => {
                if let Some((columns, rows)) = attach_frames::decode_resize(payload) {
                    if let Err(e) = crate::sys::set_window_size(&self.fd, columns, rows) {
                        eprintln!("wharf-monitor: resizing the terminal: {e}");
                    }
                }
            }
            _ => {}
        }
    }
}

impl Client {
    /// Writes what the socket takes without blocking.
    fn flush(&mut self) {
        while !self.outbox.is_empty() && !self.done {
            let (front, _) = self.outbox.as_slices();
            match self.stream.write(front) {
                Ok(0) => self.done = true,
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(e) if is_transient(&e) => return,
                Err(_) => self.done = true,
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl Drop for AttachServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn client(path: &Path) -> UnixStream {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    /// The next frame from the server: kind and payload.
    fn frame(stream: &mut UnixStream) -> (FrameKind, Vec<u8>) {
        let mut header = [0u8; HEADER_LEN];
        stream.read_exact(&mut header).unwrap();
        let (kind, len) = attach_frames::decode_header(&header).unwrap();
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).unwrap();
        (kind, payload)
    }

    #[test]
    fn output_reaches_every_attacher_and_a_stalled_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attach.sock");
        let mut server = AttachServer::bind(&path).unwrap();
        let mut reader = client(&path);
        let _stalled = client(&path);
        server.accept();
        assert_eq!(server.clients.len(), 2);

        server.broadcast(Stream::Stderr, b"hello");
        assert_eq!(frame(&mut reader), (FrameKind::Stderr, b"hello".to_vec()));

        // Far more than the socket buffers and the cap: the stalled client
        // is dropped, the one that reads gets all of it, and no call
        // blocks.
        let chunk = vec![b'x'; 64 * 1024];
        let mut received = 0;
        for _ in 0..(4 * MAX_PENDING_OUTPUT / chunk.len()) {
            server.broadcast(Stream::Stdout, &chunk);
            for index in 0..server.clients.len() {
                server.serve(index, PollFlags::POLLOUT);
            }
            reader.set_nonblocking(true).unwrap();
            let mut buf = vec![0u8; 1024 * 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                received += n;
            }
            reader.set_nonblocking(false).unwrap();
            server.sweep();
        }
        assert_eq!(server.clients.len(), 1, "the stalled attacher is gone");
        let sent = 4 * MAX_PENDING_OUTPUT;
        let framing = sent / MAX_PAYLOAD * HEADER_LEN;
        server.flush_all();
        reader.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 1024 * 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            received += n;
        }
        assert_eq!(received, sent + framing);
    }

    #[test]
    fn input_reaches_stdin_and_stdin_once_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attach.sock");
        let (stdin_read, stdin_write) = nix::unistd::pipe().unwrap();
        let mut server = AttachServer::bind(&path)
            .unwrap()
            .with_input(Some(stdin_write), false, true)
            .unwrap();
        let mut writer = client(&path);
        server.accept();
        let mut frames = Vec::new();
        attach_frames::encode(FrameKind::Stdin, b"typed", &mut frames);
        attach_frames::encode(FrameKind::StdinClose, &[], &mut frames);
        writer.write_all(&frames).unwrap();
        server.serve(0, PollFlags::POLLIN);
        assert!(server.input.is_none(), "stdin_once: closed after the input");
        let mut typed = String::new();
        std::fs::File::from(stdin_read)
            .read_to_string(&mut typed)
            .unwrap();
        assert_eq!(typed, "typed");
    }
}
