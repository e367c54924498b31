//! What the daemon and `wharf-monitor` agree on: the monitor's command
//! line, the files of its state directory, the line it writes on the sync
//! fd, the control socket's requests and replies, and the exit record.
//! Both sides use these types, so the protocol is written down once.

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the monitor executable, installed next to `wharf`.
pub const MONITOR_BINARY_NAME: &str = "wharf-monitor";

/// Files in a monitor's state directory.
pub mod files {
    /// The monitor's pid (written atomically at start-up).
    pub const MONITOR_PID: &str = "monitor.pid";
    /// The container init's pid, written by the runtime.
    pub const CONTAINER_PID: &str = "container.pid";
    /// The container's [`ExitStatus`](super::ExitStatus), written atomically.
    pub const EXIT: &str = "exit.json";
    /// The control socket.
    pub const CONTROL_SOCKET: &str = "monitor.sock";
    /// The runtime's JSON log of `create`.
    pub const RUNTIME_LOG: &str = "runtime.log";
    /// Where the runtime hands over a terminal's master (`--tty`).
    pub const CONSOLE_SOCKET: &str = "console.sock";
    /// The monitor's own diagnostics (dropped log lines, I/O errors).
    pub const MONITOR_LOG: &str = "monitor.log";
    /// The attach socket: framed stdio (see [`crate::runtime::attach_frames`]).
    pub const ATTACH_SOCKET: &str = "attach.sock";
}

/// How a container ended, as recorded in `exit.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + the signal when a signal killed it.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// When the monitor reaped it, in nanoseconds since the Unix epoch.
    pub exited_at_ns: i64,
    /// Whether the kernel OOM-killed a process of the container's cgroup.
    pub oom_killed: bool,
    /// The runtime's container was deleted (by a `--defer-start` monitor,
    /// before it recorded the exit): RemoveContainer has no runtime
    /// command left to run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runtime_deleted: bool,
}

impl ExitStatus {
    pub fn exited(code: i32, exited_at_ns: i64) -> Self {
        Self {
            exit_code: code,
            signal: None,
            exited_at_ns,
            oom_killed: false,
            runtime_deleted: false,
        }
    }

    /// Shells' convention, which kubelet and every runtime follow.
    pub fn killed(signal: i32, exited_at_ns: i64) -> Self {
        Self {
            exit_code: 128 + signal,
            signal: Some(signal),
            exited_at_ns,
            oom_killed: false,
            runtime_deleted: false,
        }
    }
}

/// The one line the monitor writes on its sync fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SyncMessage {
    /// `runtime create` succeeded; the container waits for `start`.
    Created { container_pid: i32 },
    /// With `--defer-start`: the monitor is ready (sockets bound, log
    /// open) and waits for a [`ControlRequest::Start`]; no runtime ran yet.
    Ready { ready: bool },
    /// Creation failed; `error` is the runtime's message when it was the
    /// runtime that failed.
    Failed { error: String },
}

/// A request on the control socket: one line, answered by one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// Close and reopen the container log (after kubelet rotated it).
    ReopenLog,
    /// Answered only when the container has exited, with
    /// [`ControlReply::Exit`], after `exit.json` is written. The monitor
    /// writes `exit.json` before it closes any connection, so a connection
    /// that closes without an answer means: read `exit.json`; if it is not
    /// there, the monitor died without recording the exit.
    WaitExit,
    /// With `--defer-start`: run the container (`runtime run --detach`),
    /// answered with [`ControlReply::Started`] once it runs, or with the
    /// runtime's error (then the monitor exits without an exit record).
    /// Asked again, it gets the same answer: a daemon that died during a
    /// start asks again when it recovers.
    Start,
    /// With `--defer-start`, before the start: the container will never
    /// run; the monitor records a SIGKILL exit (as a created container
    /// killed by the runtime has) and exits. Refused once started.
    Cancel,
}

impl ControlRequest {
    pub fn as_str(self) -> &'static str {
        match self {
            ControlRequest::ReopenLog => "reopen-log",
            ControlRequest::WaitExit => "wait-exit",
            ControlRequest::Start => "start",
            ControlRequest::Cancel => "cancel",
        }
    }

    pub fn parse(line: &str) -> Option<Self> {
        match line.trim_end() {
            "reopen-log" => Some(ControlRequest::ReopenLog),
            "wait-exit" => Some(ControlRequest::WaitExit),
            "start" => Some(ControlRequest::Start),
            "cancel" => Some(ControlRequest::Cancel),
            _ => None,
        }
    }
}

/// The answer to a [`ControlRequest`]: `ok`, `error: <message>`,
/// `exit: <ExitStatus as JSON>` or `started: <init pid>`, followed by
/// ` runtime_us=<N>` from a monitor run with `--timed-start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlReply {
    Ok,
    Error(String),
    Exit(ExitStatus),
    Started(Started),
}

/// A deferred start's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The container's init.
    pub pid: i32,
    /// How long `runtime run --detach` took in the monitor, when asked for
    /// (`--timed-start`) and this answer is the start's own, not a repeat.
    pub runtime_us: Option<u64>,
}

impl Started {
    /// The answer to a `start` asked again: the init, no timing.
    pub fn repeated(pid: i32) -> Self {
        Self {
            pid,
            runtime_us: None,
        }
    }
}

impl ControlReply {
    const ERROR_PREFIX: &'static str = "error: ";
    const EXIT_PREFIX: &'static str = "exit: ";
    const STARTED_PREFIX: &'static str = "started: ";
    const RUNTIME_US: &'static str = "runtime_us=";

    /// The reply line, newline included; a message never spans lines.
    pub fn to_line(&self) -> String {
        match self {
            ControlReply::Ok => "ok\n".to_owned(),
            ControlReply::Error(message) => {
                format!("{}{}\n", Self::ERROR_PREFIX, message.replace('\n', " "))
            }
            ControlReply::Exit(status) => {
                let json = serde_json::to_string(status).unwrap_or_default();
                format!("{}{json}\n", Self::EXIT_PREFIX)
            }
            ControlReply::Started(Started { pid, runtime_us }) => match runtime_us {
                Some(us) => format!("{}{pid} {}{us}\n", Self::STARTED_PREFIX, Self::RUNTIME_US),
                None => format!("{}{pid}\n", Self::STARTED_PREFIX),
            },
        }
    }

    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim_end();
        if line == "ok" {
            Some(ControlReply::Ok)
        } else if let Some(json) = line.strip_prefix(Self::EXIT_PREFIX) {
            serde_json::from_str(json).ok().map(ControlReply::Exit)
        } else if let Some(started) = line.strip_prefix(Self::STARTED_PREFIX) {
            Self::parse_started(started).map(ControlReply::Started)
        } else {
            line.strip_prefix(Self::ERROR_PREFIX)
                .map(|message| ControlReply::Error(message.to_owned()))
        }
    }
}

impl ControlReply {
    fn parse_started(text: &str) -> Option<Started> {
        let (pid, runtime_us) = match text.split_once(' ') {
            Some((pid, timing)) => {
                let us = timing.strip_prefix(Self::RUNTIME_US)?.parse().ok()?;
                (pid, Some(us))
            }
            None => (text, None),
        };
        Some(Started {
            pid: pid.parse().ok()?,
            runtime_us,
        })
    }
}

/// The monitor's command line:
/// `wharf-monitor run --id ID --bundle DIR --state DIR --log-path PATH
///  --runtime BIN --runtime-root DIR [--runtime-option OPT]... [--stdin]
///  [--stdin-once] [--tty] [--defer-start [--timed-start]] --sync-fd N`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// The runtime's global options (a handler's `options`), in order.
    pub runtime_options: Vec<OsString>,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    /// Report ready without running the runtime, and run the container
    /// (`runtime run --detach`: one runtime process instead of `create`
    /// then `start`) on [`ControlRequest::Start`].
    pub defer_start: bool,
    /// Answer the start with how long the runtime took. A flag rather than
    /// always, so that a daemon older than it (still running while the
    /// binaries are upgraded) gets the answer it parses.
    pub timed_start: bool,
    pub sync_fd: RawFd,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("usage: wharf-monitor run --id ID --bundle DIR --state DIR --log-path PATH --runtime BIN --runtime-root DIR [--runtime-option OPT]... [--stdin] [--stdin-once] [--tty] [--defer-start [--timed-start]] --sync-fd N")]
    Usage,
    #[error("unknown argument {0:?}")]
    Unknown(OsString),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{flag}: invalid value {value:?}")]
    BadValue { flag: &'static str, value: OsString },
}

const SUBCOMMAND: &str = "run";

impl MonitorArgs {
    /// Arguments after the program name.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![SUBCOMMAND.into()];
        let mut push = |flag: &str, value: &OsStr| {
            args.push(flag.into());
            args.push(value.to_owned());
        };
        push("--id", OsStr::new(&self.id));
        push("--bundle", self.bundle.as_os_str());
        push("--state", self.state_dir.as_os_str());
        push("--log-path", self.log_path.as_os_str());
        push("--runtime", self.runtime.as_os_str());
        push("--runtime-root", self.runtime_root.as_os_str());
        push("--sync-fd", OsStr::new(&self.sync_fd.to_string()));
        for option in &self.runtime_options {
            push("--runtime-option", option);
        }
        for (set, flag) in [
            (self.stdin, "--stdin"),
            (self.stdin_once, "--stdin-once"),
            (self.tty, "--tty"),
            (self.defer_start, "--defer-start"),
            (self.timed_start, "--timed-start"),
        ] {
            if set {
                args.push(flag.into());
            }
        }
        args
    }

    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, ArgsError> {
        let mut args = args.into_iter();
        if args.next().as_deref() != Some(OsStr::new(SUBCOMMAND)) {
            return Err(ArgsError::Usage);
        }
        let (mut id, mut sync_fd) = (None, None);
        let (mut bundle, mut state_dir, mut log_path) = (None, None, None);
        let (mut runtime, mut runtime_root) = (None, None);
        let mut runtime_options = Vec::new();
        let (mut stdin, mut stdin_once, mut tty) = (false, false, false);
        let (mut defer_start, mut timed_start) = (false, false);
        while let Some(arg) = args.next() {
            let switch = match arg.to_str() {
                Some("--stdin") => Some(&mut stdin),
                Some("--stdin-once") => Some(&mut stdin_once),
                Some("--tty") => Some(&mut tty),
                Some("--defer-start") => Some(&mut defer_start),
                Some("--timed-start") => Some(&mut timed_start),
                _ => None,
            };
            if let Some(switch) = switch {
                *switch = true;
                continue;
            }
            let Some(flag) = VALUE_FLAGS
                .iter()
                .copied()
                .find(|f| arg.to_str() == Some(f))
            else {
                return Err(ArgsError::Unknown(arg));
            };
            let value = args.next().ok_or(ArgsError::MissingValue(flag))?;
            let bad = |value: OsString| ArgsError::BadValue { flag, value };
            match flag {
                "--id" => id = Some(value.into_string().map_err(bad)?),
                "--sync-fd" => {
                    let fd = value.to_str().and_then(|v| v.parse::<RawFd>().ok());
                    sync_fd = Some(fd.filter(|fd| *fd >= 0).ok_or_else(|| bad(value))?);
                }
                "--bundle" => bundle = Some(PathBuf::from(value)),
                "--state" => state_dir = Some(PathBuf::from(value)),
                "--log-path" => log_path = Some(PathBuf::from(value)),
                "--runtime" => runtime = Some(PathBuf::from(value)),
                "--runtime-option" => runtime_options.push(value),
                _ => runtime_root = Some(PathBuf::from(value)),
            }
        }
        Ok(Self {
            id: id.ok_or(ArgsError::Missing("--id"))?,
            bundle: bundle.ok_or(ArgsError::Missing("--bundle"))?,
            state_dir: state_dir.ok_or(ArgsError::Missing("--state"))?,
            log_path: log_path.ok_or(ArgsError::Missing("--log-path"))?,
            runtime: runtime.ok_or(ArgsError::Missing("--runtime"))?,
            runtime_root: runtime_root.ok_or(ArgsError::Missing("--runtime-root"))?,
            runtime_options,
            stdin,
            stdin_once,
            tty,
            defer_start,
            timed_start,
            sync_fd: sync_fd.ok_or(ArgsError::Missing("--sync-fd"))?,
        })
    }

    pub fn state_file(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }
}

/// Flags followed by a value; the last one is `--runtime-root`.
const VALUE_FLAGS: [&str; 8] = [
    "--runtime-option",
    "--id",
    "--sync-fd",
    "--bundle",
    "--state",
    "--log-path",
    "--runtime",
    "--runtime-root",
];

/// Whether `cmdline` (the NUL-separated `/proc/<pid>/cmdline`) is a
/// monitor serving `state_dir`.
pub fn is_monitor_cmdline(cmdline: &[u8], state_dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let mut args = cmdline.split(|&b| b == 0).map(OsStr::from_bytes);
    let Some(program) = args.next() else {
        return false;
    };
    if Path::new(program).file_name() != Some(OsStr::new(MONITOR_BINARY_NAME)) {
        return false;
    }
    let mut args = args.skip_while(|arg| *arg != OsStr::new("--state"));
    args.next().is_some() && args.next().map(Path::new) == Some(state_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MonitorArgs {
        MonitorArgs {
            id: "c1".into(),
            bundle: "/run/wharf/c1/bundle".into(),
            state_dir: "/run/wharf/c1".into(),
            log_path: "/var/log/pods/p/c/0.log".into(),
            runtime: "/usr/sbin/runc".into(),
            runtime_root: "/run/wharf/runc".into(),
            runtime_options: vec!["--systemd-cgroup".into(), "--debug".into()],
            stdin: true,
            stdin_once: false,
            tty: true,
            defer_start: true,
            timed_start: true,
            sync_fd: 1,
        }
    }

    #[test]
    fn args_round_trip() {
        let args = sample();
        assert_eq!(MonitorArgs::parse(args.to_args()).unwrap(), args);
        let plain = MonitorArgs {
            stdin: false,
            tty: false,
            stdin_once: true,
            defer_start: false,
            timed_start: false,
            ..sample()
        };
        assert_eq!(MonitorArgs::parse(plain.to_args()).unwrap(), plain);
    }

    #[test]
    fn bad_args_are_reported() {
        let parse = |args: &[&str]| MonitorArgs::parse(args.iter().map(OsString::from));
        assert_eq!(parse(&[]), Err(ArgsError::Usage));
        assert_eq!(
            parse(&["run", "--bogus"]),
            Err(ArgsError::Unknown("--bogus".into()))
        );
        assert_eq!(
            parse(&["run", "--id"]),
            Err(ArgsError::MissingValue("--id"))
        );
        assert_eq!(
            parse(&["run", "--id", "x"]),
            Err(ArgsError::Missing("--bundle"))
        );
        assert!(matches!(
            parse(&["run", "--sync-fd", "-3"]),
            Err(ArgsError::BadValue {
                flag: "--sync-fd",
                ..
            })
        ));
    }

    #[test]
    fn sync_messages_are_single_json_objects() {
        let created = SyncMessage::Created { container_pid: 42 };
        assert_eq!(
            serde_json::to_string(&created).unwrap(),
            r#"{"container_pid":42}"#
        );
        let failed: SyncMessage = serde_json::from_str(r#"{"error":"boom"}"#).unwrap();
        assert_eq!(
            failed,
            SyncMessage::Failed {
                error: "boom".into()
            }
        );
    }

    #[test]
    fn control_lines() {
        assert_eq!(
            ControlRequest::parse("reopen-log\n"),
            Some(ControlRequest::ReopenLog)
        );
        assert_eq!(ControlRequest::parse("attach\n"), None);
        let error = ControlReply::Error("disk\nfull".into());
        assert_eq!(error.to_line(), "error: disk full\n");
        assert_eq!(
            ControlReply::parse(&error.to_line()),
            Some(ControlReply::Error("disk full".into()))
        );
        assert_eq!(ControlReply::parse("ok\n"), Some(ControlReply::Ok));
        assert_eq!(ControlReply::parse("what"), None);
    }

    #[test]
    fn deferred_starts_have_their_own_lines() {
        assert_eq!(
            serde_json::to_string(&SyncMessage::Ready { ready: true }).unwrap(),
            r#"{"ready":true}"#
        );
        for request in [ControlRequest::Start, ControlRequest::Cancel] {
            assert_eq!(ControlRequest::parse(request.as_str()), Some(request));
        }
        let started = ControlReply::Started(Started::repeated(4321));
        assert_eq!(started.to_line(), "started: 4321\n");
        assert_eq!(ControlReply::parse(&started.to_line()), Some(started));
        let timed = ControlReply::Started(Started {
            pid: 4321,
            runtime_us: Some(23_456),
        });
        assert_eq!(timed.to_line(), "started: 4321 runtime_us=23456\n");
        assert_eq!(ControlReply::parse(&timed.to_line()), Some(timed));
        for bad in ["started: x", "started: 1 runtime_us=x", "started: 1 what=2"] {
            assert_eq!(ControlReply::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn wait_exit_is_answered_with_the_exit_record() {
        assert_eq!(
            ControlRequest::parse("wait-exit\n"),
            Some(ControlRequest::WaitExit)
        );
        let exit = ControlReply::Exit(ExitStatus::killed(15, 42));
        let line = exit.to_line();
        assert_eq!(
            line,
            "exit: {\"exit_code\":143,\"signal\":15,\"exited_at_ns\":42,\"oom_killed\":false}\n"
        );
        assert_eq!(ControlReply::parse(&line), Some(exit));
        assert_eq!(ControlReply::parse("exit: {\"torn"), None);
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ExitStatus::exited(3, 7).exit_code, 3);
        let killed = ExitStatus::killed(9, 7);
        assert_eq!((killed.exit_code, killed.signal), (137, Some(9)));
        let json = serde_json::to_string(&killed).unwrap();
        assert_eq!(
            json,
            r#"{"exit_code":137,"signal":9,"exited_at_ns":7,"oom_killed":false}"#
        );
    }

    #[test]
    fn monitor_cmdline_must_name_the_state_dir() {
        let state = Path::new("/run/wharf/c1");
        let cmdline = b"/usr/bin/wharf-monitor\0run\0--id\0c1\0--state\0/run/wharf/c1\0";
        assert!(is_monitor_cmdline(cmdline, state));
        assert!(!is_monitor_cmdline(cmdline, Path::new("/run/wharf/c2")));
        assert!(!is_monitor_cmdline(
            b"/bin/sleep\0--state\0/run/wharf/c1\0",
            state
        ));
        assert!(!is_monitor_cmdline(b"", state));
    }
}
