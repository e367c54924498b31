//! Errors of the OCI runtime driver, and the one place where a runtime's
//! message is turned into a meaning.

use std::io;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Classify, Kind};
use crate::store::StoreError;

/// What a failed runtime command means. Decided once, by [`classify`],
/// from the runtime's own message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The container does not exist.
    NotFound,
    /// A container with this id already exists.
    AlreadyExists,
    /// The container is not in a state that allows the operation
    /// (starting a stopped container, killing a stopped one, ...).
    WrongState,
    /// The process to run cannot be started (no such executable): the
    /// caller's command is wrong, not the runtime.
    BadCommand,
    /// Anything else: a broken bundle, a failing hook, a runtime bug.
    Other,
}

/// Message fragments of runc (libcontainer errors and command checks).
const NOT_FOUND: &[&str] = &["container does not exist"];
const ALREADY_EXISTS: &[&str] = &["container with given id already exists"];
const WRONG_STATE: &[&str] = &[
    "container not running",
    "container still running",
    "container paused",
    "container not paused",
    "cannot start a container",
    "cannot start an already running container",
    "that is not stopped",
    "cannot exec in a",
];

const BAD_COMMAND: &[&str] = &["executable file not found", "exec format error"];

/// Classifies a runtime's error message.
pub fn classify(message: &str) -> Failure {
    let message = message.to_ascii_lowercase();
    let matches = |fragments: &[&str]| fragments.iter().any(|f| message.contains(f));
    if matches(NOT_FOUND) {
        Failure::NotFound
    } else if matches(ALREADY_EXISTS) {
        Failure::AlreadyExists
    } else if matches(WRONG_STATE) {
        Failure::WrongState
    } else if matches(BAD_COMMAND) {
        Failure::BadCommand
    } else {
        Failure::Other
    }
}

/// Longest runtime message kept in an error.
const MAX_MESSAGE: usize = 4096;

#[derive(Deserialize)]
struct LogEntry {
    level: String,
    msg: String,
}

/// The message of the last `error`-level entry of a JSON-lines log
/// (runc `--log-format json`).
pub fn last_error_message(json_log: &[u8]) -> Option<String> {
    json_log
        .split(|&b| b == b'\n')
        .rev()
        .filter_map(|line| serde_json::from_slice::<LogEntry>(line).ok())
        .find(|entry| entry.level == "error" || entry.level == "fatal")
        .map(|entry| truncate(entry.msg))
}

/// What the runtime said about a failure: the last error of its JSON log,
/// else its raw output (stderr), else a placeholder.
pub fn runtime_message(json_log: &[u8], raw_output: &[u8]) -> String {
    if let Some(message) = last_error_message(json_log) {
        return message;
    }
    let raw = String::from_utf8_lossy(raw_output);
    let raw = raw.trim();
    if raw.is_empty() {
        "the runtime gave no error message".to_owned()
    } else {
        truncate(raw.to_owned())
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("running {binary} {command} for {id}")]
    Spawn {
        binary: PathBuf,
        command: &'static str,
        id: String,
        #[source]
        source: io::Error,
    },
    /// The runtime (or the monitor relaying `runtime create`) failed.
    #[error("{command} {id}: {message}")]
    Failed {
        command: &'static str,
        id: String,
        failure: Failure,
        message: String,
    },
    #[error("{command} {id}: the runtime did not finish within {timeout:?}; it was killed")]
    TimedOut {
        command: &'static str,
        id: String,
        timeout: std::time::Duration,
    },
    #[error("{command} {id}: unexpected runtime output: {detail}")]
    BadOutput {
        command: &'static str,
        id: String,
        detail: String,
    },
    #[error(transparent)]
    Io(#[from] crate::error::IoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The monitor died or broke the protocol before reporting.
    #[error("monitor of {id}: {message}")]
    Monitor { id: String, message: String },
    /// Nothing listens on the monitor's control socket: the container has
    /// exited (or its monitor was killed).
    #[error("no monitor is running for {state_dir}")]
    MonitorGone {
        state_dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The monitor answered a control request with an error.
    #[error("monitor of {state_dir}: {request}: {message}")]
    ControlFailed {
        state_dir: PathBuf,
        request: &'static str,
        message: String,
    },
}

impl RuntimeError {
    /// A failure reported by the runtime, classified.
    pub fn failed(command: &'static str, id: &str, message: String) -> Self {
        RuntimeError::Failed {
            command,
            id: id.to_owned(),
            failure: classify(&message),
            message,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RuntimeError::Failed {
                failure: Failure::NotFound,
                ..
            }
        )
    }
}

impl Classify for RuntimeError {
    fn kind(&self) -> Kind {
        match self {
            RuntimeError::Failed { failure, .. } => match failure {
                Failure::NotFound => Kind::NotFound,
                Failure::AlreadyExists => Kind::AlreadyExists,
                Failure::WrongState => Kind::FailedPrecondition,
                Failure::BadCommand => Kind::InvalidArgument,
                Failure::Other => Kind::Internal,
            },
            RuntimeError::MonitorGone { .. } => Kind::FailedPrecondition,
            RuntimeError::TimedOut { .. } => Kind::DeadlineExceeded,
            RuntimeError::Spawn { .. }
            | RuntimeError::BadOutput { .. }
            | RuntimeError::Io(_)
            | RuntimeError::Store(_)
            | RuntimeError::Monitor { .. }
            | RuntimeError::ControlFailed { .. } => Kind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_messages_are_classified() {
        let cases = [
            ("container does not exist", Failure::NotFound),
            (
                "runc create failed: container with given ID already exists",
                Failure::AlreadyExists,
            ),
            ("container not running", Failure::WrongState),
            (
                "cannot start an already running container",
                Failure::WrongState,
            ),
            (
                "cannot start a container that has stopped",
                Failure::WrongState,
            ),
            (
                "cannot start a container in the paused state",
                Failure::WrongState,
            ),
            (
                "cannot delete container c1 that is not stopped: running",
                Failure::WrongState,
            ),
            (
                "exec failed: cannot exec in a stopped container",
                Failure::WrongState,
            ),
            // A missing rootfs is a broken bundle, not a missing container.
            (
                "runc create failed: rootfs (/x) does not exist",
                Failure::Other,
            ),
            (
                "exec failed: unable to start container process",
                Failure::Other,
            ),
            (
                "exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH",
                Failure::BadCommand,
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(classify(message), expected, "{message}");
        }
    }

    #[test]
    fn kinds_follow_the_failure() {
        let kind = |message: &str| RuntimeError::failed("kill", "c1", message.into()).kind();
        assert_eq!(kind("container does not exist"), Kind::NotFound);
        assert_eq!(kind("container not running"), Kind::FailedPrecondition);
        assert_eq!(kind("boom"), Kind::Internal);
        assert!(
            RuntimeError::failed("delete", "c", "container does not exist".into()).is_not_found()
        );
    }

    #[test]
    fn last_error_of_a_json_log_wins() {
        let log = br#"{"level":"warning","msg":"cgroup v1 is deprecated","time":"t"}
{"level":"error","msg":"first","time":"t"}
not json at all
{"level":"error","msg":"runc create failed: unable to start container process: exec: \"nosuch\": executable file not found in $PATH","time":"t"}
{"level":"info","msg":"after","time":"t"}
"#;
        assert_eq!(
            last_error_message(log).unwrap(),
            "runc create failed: unable to start container process: exec: \"nosuch\": executable file not found in $PATH"
        );
        assert_eq!(
            last_error_message(b"{\"level\":\"info\",\"msg\":\"x\"}"),
            None
        );
    }

    #[test]
    fn raw_output_is_the_fallback() {
        assert_eq!(runtime_message(b"", b"  plain failure\n"), "plain failure");
        assert_eq!(
            runtime_message(b"", b""),
            "the runtime gave no error message"
        );
        let long = "é".repeat(MAX_MESSAGE);
        let message = runtime_message(b"", long.as_bytes());
        assert!(message.len() <= MAX_MESSAGE + 3 && message.ends_with("..."));
    }
}
