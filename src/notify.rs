//! systemd's readiness protocol (`sd_notify(3)`, `Type=notify` units): one
//! datagram of `KEY=VALUE` lines to the unix socket named by
//! `$NOTIFY_SOCKET`, a path or, with a leading `@`, an abstract name.
//!
//! A handful of lines, so written here rather than pulled in as a crate.
//! Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Where readiness and status go; see [`Notifier::from_env`].
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<String>,
}

impl Notifier {
    /// Takes `$NOTIFY_SOCKET` out of the environment, as
    /// `sd_notify(unset_environment=1)` does: processes Wharf starts must
    /// not inherit it (runc given a `NOTIFY_SOCKET` waits for the
    /// *container* to signal readiness).
    ///
    /// Call it before any thread is started: changing the environment is
    /// not thread-safe.
    pub fn take_from_env() -> Notifier {
        let target = std::env::var(NOTIFY_SOCKET_ENV)
            .ok()
            .filter(|s| !s.is_empty());
        if target.is_some() {
            std::env::remove_var(NOTIFY_SOCKET_ENV);
        }
        Notifier { target }
    }

    /// A notifier sending to `target` (a path, or `@name`).
    pub fn to(target: impl Into<String>) -> Notifier {
        Notifier {
            target: Some(target.into()),
        }
    }

    /// `READY=1`, with a human-readable `STATUS=`.
    pub fn ready(&self, status: &str) {
        self.send_logged(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1`: the service is shutting down.
    pub fn stopping(&self) {
        self.send_logged("STOPPING=1\nSTATUS=stopping");
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` systemd 253 and later want
    /// (to match the reload to the `ExecReload` that caused it); follow it
    /// with [`Notifier::ready`] once the reload is done.
    pub fn reloading(&self) {
        let state = match monotonic_usec() {
            Some(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"),
            None => "RELOADING=1\nSTATUS=reloading".to_string(),
        };
        self.send_logged(&state);
    }

    /// Sends `state` as is; Ok(false) when there is no socket to send to.
    pub fn send(&self, state: &str) -> io::Result<bool> {
        let Some(target) = &self.target else {
            return Ok(false);
        };
        let address = match target.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None => SocketAddr::from_pathname(target)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &address)?;
        Ok(true)
    }

    fn send_logged(&self, state: &str) {
        if let Err(e) = self.send(state) {
            // Readiness is best effort: systemd times the start out if it
            // never arrives, which names the problem better than we could.
            tracing::warn!(
                socket = self.target.as_deref().unwrap_or_default(),
                error = %e,
                "cannot notify systemd"
            );
        }
    }
}

/// `STATUS=` is one line of the datagram.
fn one_line(status: &str) -> String {
    status.replace('\n', " ")
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares with.
fn monotonic_usec() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let micros = u64::try_from(now.tv_nsec()).ok()? / 1000;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 1024];
        let n = socket.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to(path.to_str().unwrap());
        notifier.ready("serving on /x\nand more");
        assert_eq!(receive(&listener), "READY=1\nSTATUS=serving on /x and more");
        notifier.reloading();
        let reloading = receive(&listener);
        assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="));
        let usec: u64 = reloading.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
            .parse()
            .unwrap();
        assert!(usec > 0);
        notifier.stopping();
        assert!(receive(&listener).starts_with("STOPPING=1"));
    }

    #[test]
    fn sends_to_an_abstract_name() {
        let name = format!("wharf-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        assert!(Notifier::to(format!("@{name}")).send("READY=1").unwrap());
        assert_eq!(receive(&listener), "READY=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        assert!(!Notifier::default().send("READY=1").unwrap());
        let missing = Notifier::to("/nonexistent/notify.sock");
        assert!(missing.send("READY=1").is_err());
        missing.ready("logged, not fatal");
    }
}
