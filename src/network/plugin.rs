//! Running one CNI plugin binary: environment, stdin, timeout, and the
//! spec's error JSON.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::error::PluginFailure;
use super::CniError;

/// Bytes of a plugin's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

/// The container a plugin acts on; the same for every plugin of a list.
pub(crate) struct Target<'a> {
    pub container_id: &'a str,
    /// `None` when the namespace is gone (DEL only): plugins then release
    /// what they can without entering it.
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub cni_args: &'a str,
}

pub(crate) struct Runner {
    pub bin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

impl Runner {
    /// The first `bin_dirs` entry holding the plugin.
    pub fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        self.bin_dirs
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|path| path.is_file())
            .ok_or_else(|| CniError::PluginNotFound {
                plugin: plugin.to_string(),
                dirs: self.cni_path().to_string_lossy().into_owned(),
            })
    }

    fn cni_path(&self) -> OsString {
        let dirs: Vec<&std::ffi::OsStr> = self.bin_dirs.iter().map(|d| d.as_os_str()).collect();
        dirs.join(std::ffi::OsStr::new(":"))
    }

    /// Runs `plugin` with `stdin` as its config; returns its result (ADD)
    /// or `null` (DEL).
    ///
    /// The plugin inherits the network namespace of the calling thread
    /// (tokio spawns from the thread polling this future).
    pub async fn run(
        &self,
        command: Command,
        plugin: &str,
        target: &Target<'_>,
        stdin: Vec<u8>,
    ) -> Result<Value, CniError> {
        let path = self.find(plugin)?;
        let started = std::time::Instant::now();
        let mut child = tokio::process::Command::new(&path)
            // The rest of the environment is inherited (portmap needs PATH
            // to find iptables), as libcni does; every CNI_ variable is set
            // so that none leaks in from Wharf's own environment.
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", target.container_id)
            .env("CNI_NETNS", target.netns.unwrap_or(Path::new("")))
            .env("CNI_IFNAME", target.ifname)
            .env("CNI_ARGS", target.cni_args)
            .env("CNI_PATH", self.cni_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| CniError::Spawn {
                plugin: path.clone(),
                command: command.as_str(),
                source,
            })?;
        let mut input = child.stdin.take();
        let feed = async move {
            if let Some(input) = input.as_mut() {
                // A plugin that exits without reading its stdin is judged by
                // its exit status, not by this broken pipe.
                let _ = input.write_all(&stdin).await;
            }
            drop(input);
        };
        let run = async { tokio::join!(feed, child.wait_with_output()).1 };
        let output = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| CniError::Timeout {
                plugin: plugin.to_string(),
                command: command.as_str(),
                timeout: self.timeout,
            })?
            .map_err(|source| CniError::Spawn {
                plugin: path.clone(),
                command: command.as_str(),
                source,
            })?;
        tracing::debug!(plugin, command = command.as_str(), container = target.container_id,
            status = %output.status, elapsed = ?started.elapsed(), "CNI plugin ran");
        let stderr = tail(&output.stderr);
        if !output.status.success() {
            return Err(plugin_error(
                plugin,
                command,
                &output.stdout,
                stderr,
                output.status,
            ));
        }
        if command == Command::Del {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&output.stdout).map_err(|e| CniError::BadResult {
            plugin: plugin.to_string(),
            command: command.as_str(),
            reason: format!("{e}; stdout: {}", tail(&output.stdout)),
        })
    }
}

/// Builds the error of a failed plugin from the spec's error JSON on its
/// stdout (`{"code", "msg", "details"}`), or from whatever it printed.
fn plugin_error(
    plugin: &str,
    command: Command,
    stdout: &[u8],
    stderr: String,
    status: std::process::ExitStatus,
) -> CniError {
    #[derive(serde::Deserialize)]
    struct ErrorJson {
        code: Option<u64>,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    let (code, msg, details) = match serde_json::from_slice::<ErrorJson>(stdout) {
        Ok(e) => (e.code, e.msg, e.details),
        Err(_) => {
            let text = tail(stdout);
            let msg = if text.is_empty() {
                status.to_string()
            } else {
                text
            };
            (None, msg, String::new())
        }
    };
    CniError::Plugin {
        plugin: plugin.to_string(),
        command: command.as_str(),
        failure: Box::new(PluginFailure {
            code,
            msg,
            details,
            stderr,
        }),
    }
}

/// The end of a plugin's output, where the reason for a failure usually is.
fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn error_json_becomes_code_and_message() {
        let status = std::process::ExitStatus::from_raw(1 << 8);
        let stdout =
            br#"{"cniVersion":"1.0.0","code":11,"msg":"no IP left","details":"10.0.0.0/30"}"#;
        let e = plugin_error("host-local", Command::Add, stdout, "boom".into(), status);
        assert_eq!(
            e.to_string(),
            "CNI plugin host-local ADD failed: code 11: no IP left (10.0.0.0/30); stderr: boom"
        );
        let e = plugin_error("x", Command::Del, b"", String::new(), status);
        assert_eq!(e.to_string(), "CNI plugin x DEL failed: exit status: 1");
    }

    #[test]
    fn tail_keeps_the_end() {
        let long = vec![b'a'; STDERR_TAIL + 10];
        assert_eq!(tail(&long).len(), STDERR_TAIL);
        assert_eq!(tail(b"  x \n"), "x");
    }
}
