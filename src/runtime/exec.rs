//! `runtime exec` for ExecSync: bounded output, a deadline, and no
//! process left behind when the deadline passes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{sleep_until, Instant};

use super::error::{self, RuntimeError};
use super::OciRuntime;

/// How long output is still read after the runtime exited: a process the
/// exec left in the background may hold the pipes open forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long the runtime gets to exit after its process was killed before
/// it is killed as well.
const KILL_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The process's exit code (128 + signal when a signal killed it).
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The deadline passed and the process was killed.
    pub timed_out: bool,
}

/// The process spec, pid file and log of one exec, in the runtime root
/// (runc ignores plain files there); removed on drop.
struct ExecFiles {
    process: PathBuf,
    pid: PathBuf,
    log: PathBuf,
}

impl ExecFiles {
    fn new(root: &Path, id: &str) -> Self {
        let base =
            crate::store::unique_temp_name(&format!("{}exec-{id}-", crate::store::TEMP_PREFIX));
        Self {
            process: root.join(format!("{base}.json")),
            pid: root.join(format!("{base}.pid")),
            log: root.join(format!("{base}.log")),
        }
    }

    fn read_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(&self.pid).ok()?;
        text.trim()
            .parse()
            .ok()
            .filter(|pid| *pid > 0)
            .map(Pid::from_raw)
    }
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        for path in [&self.process, &self.pid, &self.log] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads everything, keeping the first `cap` bytes in `out`.
async fn read_capped(mut reader: impl AsyncRead + Unpin, out: &mut Vec<u8>, cap: usize) {
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn signal_exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(255)
}

impl OciRuntime {
    /// Runs `process` in container `id` and collects its output, each
    /// stream capped at `output_cap` bytes (the rest is read and dropped).
    /// When `timeout` passes, the process is killed (then the runtime,
    /// if it lingers) and `timed_out` is set.
    pub async fn exec_sync(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        timeout: Option<Duration>,
        output_cap: usize,
    ) -> Result<ExecOutput, RuntimeError> {
        let files = ExecFiles::new(&self.root, id);
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|source| RuntimeError::Io {
                op: "creating directory",
                path: self.root.clone(),
                source,
            })?;
        let spec = serde_json::to_vec(process).map_err(|e| RuntimeError::BadOutput {
            command: "exec",
            id: id.to_owned(),
            detail: format!("encoding process: {e}"),
        })?;
        tokio::fs::write(&files.process, spec)
            .await
            .map_err(|source| RuntimeError::Io {
                op: "writing",
                path: files.process.clone(),
                source,
            })?;

        let mut command = self.command(Some(&files.log));
        command
            .arg("exec")
            .arg("--process")
            .arg(&files.process)
            .arg("--pid-file")
            .arg(&files.pid)
            .arg(OsStr::new(id))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_error = |source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            command: "exec",
            id: id.to_owned(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        let runtime_pid = child.id().map(|pid| Pid::from_raw(pid as i32));
        let (stdout_pipe, stderr_pipe) = (child.stdout.take(), child.stderr.take());

        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut timed_out = false;
        let status = {
            let output = async {
                if let Some(pipe) = stdout_pipe {
                    let stderr_read = async {
                        if let Some(pipe) = stderr_pipe {
                            read_capped(pipe, &mut stderr, output_cap).await;
                        }
                    };
                    tokio::join!(read_capped(pipe, &mut stdout, output_cap), stderr_read);
                }
            };
            tokio::pin!(output);
            let wait = child.wait();
            tokio::pin!(wait);
            let mut output_done = false;
            let mut kill_at = timeout.map(|d| Instant::now() + d);
            let status = loop {
                tokio::select! {
                    status = &mut wait => break status.map_err(spawn_error)?,
                    () = &mut output, if !output_done => output_done = true,
                    () = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                        // The runtime has not been reaped (wait is pending),
                        // so its pid, and its child's, still name them.
                        if timed_out {
                            if let Some(pid) = runtime_pid {
                                let _ = kill(pid, Signal::SIGKILL);
                            }
                            kill_at = None;
                        } else {
                            timed_out = true;
                            let target = files.read_pid().or(runtime_pid);
                            if let Some(pid) = target {
                                let _ = kill(pid, Signal::SIGKILL);
                            }
                            kill_at = Some(Instant::now() + KILL_GRACE);
                        }
                    }
                }
            };
            if !output_done {
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut output).await;
            }
            status
        };

        let exit_code = signal_exit_code(status);
        if !timed_out && exit_code != 0 {
            // A process's own failure leaves no error in the runtime's log;
            // the runtime's failure (no such binary, stopped container) does.
            let log = tokio::fs::read(&files.log).await.unwrap_or_default();
            if let Some(message) = error::last_error_message(&log) {
                return Err(RuntimeError::failed("exec", id, message));
            }
        }
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
            timed_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_capped_but_fully_read() {
        let data = vec![b'x'; 100_000];
        let mut out = Vec::new();
        read_capped(&data[..], &mut out, 10).await;
        assert_eq!(out, b"xxxxxxxxxx");
    }

    #[test]
    fn signal_deaths_map_to_128_plus_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(signal_exit_code(std::process::ExitStatus::from_raw(9)), 137);
        assert_eq!(
            signal_exit_code(std::process::ExitStatus::from_raw(3 << 8)),
            3
        );
    }
}
