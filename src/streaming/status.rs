//! What the error stream of an exec or attach carries when the session
//! ends, as kubelet's remotecommand server writes it: a `metav1.Status`
//! JSON from protocol v4 on (kubectl reads the exit code from it), the
//! bare failure message before.

use serde::Serialize;

use super::backend::BackendError;

/// How an exec or attach ended.
#[derive(Debug)]
pub enum Outcome {
    /// The command exited with this code (attach: 0 when it ended).
    Exited(i32),
    /// Exec could not run the command, or attach failed.
    Failed(BackendError),
}

#[derive(Serialize)]
struct Status<'a> {
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    code: u16,
}

fn is_zero(code: &u16) -> bool {
    *code == 0
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Details<'a> {
    causes: Vec<Cause<'a>>,
}

#[derive(Serialize)]
struct Cause<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'static str,
    message: &'a str,
}

/// `what` is kubelet's prefix for a backend failure: "error executing
/// command in container" or "error attaching to container".
pub fn error_stream_bytes(outcome: &Outcome, what: &str, cmd: &[String], json: bool) -> Vec<u8> {
    let (message, status) = match outcome {
        Outcome::Exited(0) => {
            let ok = Status {
                metadata: Empty {},
                status: "Success",
                message: "",
                reason: "",
                details: None,
                code: 0,
            };
            return if json { to_json(&ok) } else { Vec::new() };
        }
        Outcome::Exited(code) => {
            let message = format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                cmd.join(" ")
            );
            let code_text = code.to_string();
            let status = Status {
                metadata: Empty {},
                status: "Failure",
                message: &message,
                reason: "NonZeroExitCode",
                details: Some(Details {
                    causes: vec![Cause {
                        reason: "ExitCode",
                        message: &code_text,
                    }],
                }),
                code: 0,
            };
            (message.clone(), to_json(&status))
        }
        Outcome::Failed(error) => {
            let cause = format!("{what}: {error}");
            let message = format!("Internal error occurred: {cause}");
            let status = Status {
                metadata: Empty {},
                status: "Failure",
                message: &message,
                reason: "InternalError",
                details: Some(Details {
                    causes: vec![Cause {
                        reason: "",
                        message: &cause,
                    }],
                }),
                code: 500,
            };
            (message.clone(), to_json(&status))
        }
    };
    if json {
        status
    } else {
        message.into_bytes()
    }
}

fn to_json(status: &Status) -> Vec<u8> {
    serde_json::to_vec(status).expect("a Status always serializes")
}

#[cfg(test)]
mod tests {
    use super::super::backend::BackendErrorKind;
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn statuses_have_kubelets_shape() {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        assert_eq!(
            text(error_stream_bytes(&Outcome::Exited(0), "x", &cmd, true)),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert!(error_stream_bytes(&Outcome::Exited(0), "x", &cmd, false).is_empty());
        assert_eq!(
            text(error_stream_bytes(&Outcome::Exited(3), "x", &cmd, true)),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        let failed = Outcome::Failed(BackendError::new(
            BackendErrorKind::NotFound,
            "no such file",
        ));
        assert_eq!(
            text(error_stream_bytes(
                &failed,
                "error executing command in container",
                &cmd,
                true
            )),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: no such file","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: no such file"}]},"code":500}"#
        );
        assert_eq!(
            text(error_stream_bytes(
                &failed,
                "error attaching to container",
                &cmd,
                false
            )),
            "Internal error occurred: error attaching to container: no such file"
        );
    }
}
