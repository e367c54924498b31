//! A deferred start (`--defer-start`): the monitor is ready before any
//! runtime runs, and runs the container (`runtime run --detach`) when the
//! daemon asks, which is CreateContainer then StartContainer with one
//! runtime process instead of two (`create`, then `start`).
//!
//! Until then only the control socket is served: `start`, `cancel` (the
//! container will never run), `wait-exit` (held as always) and
//! `reopen-log`. The attach socket's clients wait in its backlog; there is
//! no child to reap.

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::control::ControlServer;
use super::log::CriLogWriter;
use crate::runtime::protocol::{ControlReply, ControlRequest};

/// What the daemon asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the container, then answer the held `start` requests.
    Start,
    /// Never run it (already answered).
    Cancel,
}

/// Serves the control socket until a `start` or a `cancel` arrives.
pub fn wait_for_decision(control: &mut ControlServer, log: &mut CriLogWriter) -> Decision {
    loop {
        let ready: Vec<bool> = {
            let mut fds = vec![PollFd::new(control.listener_fd(), PollFlags::POLLIN)];
            fds.extend(
                control
                    .connection_fds()
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            );
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("wharf-monitor: poll: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|events| !events.is_empty()))
                .collect()
        };
        let mut decision = None;
        for (index, _) in ready.iter().skip(1).enumerate().filter(|(_, r)| **r) {
            control.serve(index, |request| match request {
                ControlRequest::Start => {
                    decision = Some(Decision::Start);
                    None
                }
                ControlRequest::Cancel => {
                    decision.get_or_insert(Decision::Cancel);
                    Some(ControlReply::Ok)
                }
                ControlRequest::ReopenLog => Some(super::supervise::reopen(log)),
                // The control server holds these itself.
                ControlRequest::WaitExit => Some(ControlReply::Error("not served here".into())),
            });
        }
        if ready[0] {
            control.accept();
        }
        control.sweep();
        if let Some(decision) = decision {
            return decision;
        }
    }
}
