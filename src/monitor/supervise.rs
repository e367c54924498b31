//! The monitor's single-threaded poll loop: container output to the CRI
//! log and to attachers, attachers' input to the container, SIGCHLD to
//! reaping, control requests to their handlers, until the
//! container's init has exited and its output is drained.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::attach::AttachServer;
use super::control::ControlServer;
use super::create::Container;
use super::log::{CriLogWriter, Stream};
use super::oom::OomProbe;
use super::sys;
use crate::runtime::protocol::{ControlReply, ControlRequest, ExitStatus, Started};

/// After the init exits, output is read for at most this long: a process
/// sharing the pod's pid namespace may keep the pipes open forever.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 32 * 1024;
/// Reads per stream in the final drain (what the pipe buffers, at most).
const FINAL_READS: usize = 64;

struct Output {
    stream: Stream,
    /// `None` once at end of file.
    file: Option<File>,
}

pub struct Supervisor {
    init: Pid,
    outputs: Vec<Output>,
    attach: AttachServer,
    log: CriLogWriter,
    signals: SignalFd,
    control: ControlServer,
    oom: Option<OomProbe>,
    /// Started by a `start` request (`--defer-start`), which a repeated
    /// one is answered like.
    deferred: bool,
}

#[derive(Clone, Copy)]
enum Source {
    Signals,
    Listener,
    Output(usize),
    Connection(usize),
    AttachListener,
    Attacher(usize),
    ContainerStdin,
}

impl Supervisor {
    pub fn new(
        container: Container,
        log: CriLogWriter,
        signals: SignalFd,
        control: ControlServer,
        attach: AttachServer,
        oom: Option<OomProbe>,
        deferred: bool,
    ) -> Self {
        Self {
            init: container.pid,
            outputs: container
                .outputs
                .into_iter()
                .map(|(stream, file)| Output {
                    stream,
                    file: Some(file),
                })
                .collect(),
            attach,
            log,
            signals,
            control,
            oom,
            deferred,
        }
    }

    pub fn init_pid(&self) -> i32 {
        self.init.as_raw()
    }

    /// Answers the `start` requests held while the container was launched.
    pub fn answer_start(&mut self, reply: &ControlReply) {
        self.control.answer_start(reply);
    }

    /// Runs until the init has exited and its output is drained (or the
    /// drain limit passed); returns how it exited, and the control server,
    /// still open, for [`ControlServer::notify_exit`] once the exit is
    /// recorded.
    pub fn run(mut self) -> (ExitStatus, ControlServer) {
        let mut buf = vec![0u8; READ_CHUNK];
        // The init may have exited before the signalfd was read.
        let mut exited = self.reap();
        let mut status = loop {
            let timeout = match exited {
                None => PollTimeout::NONE,
                Some((status, at)) => {
                    let left = DRAIN_LIMIT.saturating_sub(at.elapsed());
                    if left.is_zero() || self.outputs.iter().all(|o| o.file.is_none()) {
                        break status;
                    }
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
            };
            for (source, events) in self.wait(timeout) {
                match source {
                    Source::Signals => {
                        while let Ok(Some(_)) = self.signals.read_signal() {}
                        if let Some(exit) = self.reap() {
                            exited.get_or_insert(exit);
                        }
                    }
                    Source::Output(index) => {
                        self.read_output(index, &mut buf);
                    }
                    Source::Listener => self.control.accept(),
                    Source::Connection(index) => {
                        let (log, started) = (&mut self.log, self.deferred.then_some(self.init));
                        self.control
                            .serve(index, |request| Some(handle(log, started, request)));
                    }
                    Source::AttachListener => self.attach.accept(),
                    Source::Attacher(index) => self.attach.serve(index, events),
                    Source::ContainerStdin => self.attach.write_input(),
                }
            }
            self.control.sweep();
            self.attach.sweep();
        };

        // Whatever the pipes still buffer was written before the deadline.
        for index in 0..self.outputs.len() {
            for _ in 0..FINAL_READS {
                if !self.read_output(index, &mut buf) {
                    break;
                }
            }
        }
        self.attach.flush_all();
        let now = SystemTime::now();
        for output in &self.outputs {
            self.log.finish(output.stream, now);
        }
        if self.log.dropped_entries() > 0 {
            eprintln!(
                "wharf-monitor: {} log entries dropped",
                self.log.dropped_entries()
            );
        }
        status.oom_killed = self.oom.as_ref().is_some_and(OomProbe::oom_killed);
        (status, self.control)
    }

    /// Polls every source; the ready ones, with what poll reported.
    fn wait(&self, timeout: PollTimeout) -> Vec<(Source, PollFlags)> {
        let mut sources = vec![Source::Signals, Source::Listener, Source::AttachListener];
        let mut fds = vec![
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.control.listener_fd(), PollFlags::POLLIN),
            PollFd::new(self.attach.listener_fd(), PollFlags::POLLIN),
        ];
        for (index, output) in self.outputs.iter().enumerate() {
            if let Some(file) = &output.file {
                sources.push(Source::Output(index));
                fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
            }
        }
        for (index, fd) in self.control.connection_fds().enumerate() {
            sources.push(Source::Connection(index));
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        for (index, (fd, flags)) in self.attach.client_polls().enumerate() {
            sources.push(Source::Attacher(index));
            fds.push(PollFd::new(fd, flags));
        }
        if let Some(fd) = self.attach.input_poll() {
            sources.push(Source::ContainerStdin);
            fds.push(PollFd::new(fd, PollFlags::POLLOUT));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Vec::new(),
            Err(e) => {
                // Nothing sensible remains but to retry; do not spin.
                eprintln!("wharf-monitor: poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
                return Vec::new();
            }
        }
        fds.iter()
            .zip(sources)
            .filter_map(|(fd, source)| {
                let events = fd.revents().filter(|events| !events.is_empty())?;
                Some((source, events))
            })
            .collect()
    }

    /// Reads one chunk of output into the log; `false` when there was
    /// nothing (empty for now, or at end of file).
    fn read_output(&mut self, index: usize, buf: &mut [u8]) -> bool {
        let output = &mut self.outputs[index];
        let Some(file) = &mut output.file else {
            return false;
        };
        match file.read(buf) {
            Ok(0) => {}
            Ok(n) => {
                self.log.write(output.stream, &buf[..n], SystemTime::now());
                self.attach.broadcast(output.stream, &buf[..n]);
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            // A terminal's master reads EIO once the slave side is closed.
            Err(e) if e.raw_os_error() == Some(Errno::EIO as i32) => {}
            Err(e) => eprintln!("wharf-monitor: reading container output: {e}"),
        }
        output.file = None;
        self.log.finish(output.stream, SystemTime::now());
        false
    }

    /// Reaps every exited child; the init's exit, if it was among them.
    fn reap(&self) -> Option<(ExitStatus, Instant)> {
        let mut exit = None;
        sys::reap_exited(|status| {
            if status.pid() == Some(self.init) {
                exit = exit_status(status, SystemTime::now()).map(|s| (s, Instant::now()));
            }
        });
        exit
    }
}

fn handle(log: &mut CriLogWriter, init: Option<Pid>, request: ControlRequest) -> ControlReply {
    match request {
        ControlRequest::ReopenLog => reopen(log),
        // The control server keeps these connections itself.
        ControlRequest::WaitExit => ControlReply::Error("wait-exit is not served here".into()),
        // A start asked again (a daemon that died during it): done.
        ControlRequest::Start => match init {
            Some(init) => ControlReply::Started(Started::repeated(init.as_raw())),
            None => {
                ControlReply::Error("created without --defer-start: use the runtime's start".into())
            }
        },
        ControlRequest::Cancel => ControlReply::Error("already started".into()),
    }
}

/// Closes and reopens the CRI log (after kubelet rotated it).
pub fn reopen(log: &mut CriLogWriter) -> ControlReply {
    match log.reopen() {
        Ok(()) => ControlReply::Ok,
        Err(e) => ControlReply::Error(format!("reopening {}: {e}", log.path().display())),
    }
}

/// How a reaped process ended; `None` for stop/continue notifications.
pub fn exit_status(status: WaitStatus, at: SystemTime) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus::exited(code, crate::store::unix_nanos(at))),
        WaitStatus::Signaled(_, signal, _) => Some(ExitStatus::killed(
            signal as i32,
            crate::store::unix_nanos(at),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn wait_statuses_map_to_exit_records() {
        let at = std::time::UNIX_EPOCH + Duration::new(5, 6);
        let pid = Pid::from_raw(10);
        assert_eq!(
            exit_status(WaitStatus::Exited(pid, 3), at),
            Some(ExitStatus::exited(3, 5_000_000_006))
        );
        let killed = exit_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false), at).unwrap();
        assert_eq!((killed.exit_code, killed.signal), (137, Some(9)));
        let term = exit_status(WaitStatus::Signaled(pid, Signal::SIGTERM, true), at).unwrap();
        assert_eq!(term.exit_code, 143);
        assert_eq!(
            exit_status(WaitStatus::Stopped(pid, Signal::SIGSTOP), at),
            None
        );
    }
}
