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
            control.serve(index, |request| {
                if request == ControlRequest::ReopenLog {
                    return Some(super::supervise::reopen(log));
                }
                let (decided, reply) = decide(decision, request);
                decision = decided;
                reply
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

/// The decision after `request`, given the one made so far this round, and
/// the reply due now (`None`: a `start`, answered once the container runs).
/// The first of `start` and `cancel` decides; one arriving after it in the
/// same round is refused, not silently overridden.
fn decide(
    decided: Option<Decision>,
    request: ControlRequest,
) -> (Option<Decision>, Option<ControlReply>) {
    match (request, decided) {
        (ControlRequest::Start, None | Some(Decision::Start)) => (Some(Decision::Start), None),
        (ControlRequest::Start, Some(Decision::Cancel)) => (
            decided,
            Some(ControlReply::Error("the start was cancelled".into())),
        ),
        (ControlRequest::Cancel, None | Some(Decision::Cancel)) => {
            (Some(Decision::Cancel), Some(ControlReply::Ok))
        }
        (ControlRequest::Cancel, Some(Decision::Start)) => (
            decided,
            Some(ControlReply::Error("the container is starting".into())),
        ),
        // Not decisions: `wait-exit` is held by the control server itself,
        // `reopen-log` served by the caller.
        (ControlRequest::WaitExit | ControlRequest::ReopenLog, _) => {
            (decided, Some(ControlReply::Error("not served here".into())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_start_and_cancel_decides() {
        let (decided, reply) = decide(None, ControlRequest::Start);
        assert_eq!((decided, reply), (Some(Decision::Start), None));
        let (decided, reply) = decide(decided, ControlRequest::Cancel);
        assert_eq!(decided, Some(Decision::Start));
        assert!(matches!(reply, Some(ControlReply::Error(_))), "{reply:?}");

        let (decided, reply) = decide(None, ControlRequest::Cancel);
        assert_eq!(
            (decided, reply),
            (Some(Decision::Cancel), Some(ControlReply::Ok))
        );
        let (decided, reply) = decide(decided, ControlRequest::Start);
        assert_eq!(decided, Some(Decision::Cancel));
        assert!(matches!(reply, Some(ControlReply::Error(_))), "{reply:?}");
    }

    #[test]
    fn repeated_requests_keep_the_decision() {
        let (decided, reply) = decide(Some(Decision::Start), ControlRequest::Start);
        assert_eq!((decided, reply), (Some(Decision::Start), None));
        let (decided, reply) = decide(Some(Decision::Cancel), ControlRequest::Cancel);
        assert_eq!(
            (decided, reply),
            (Some(Decision::Cancel), Some(ControlReply::Ok))
        );
    }
}
