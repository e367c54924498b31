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
use crate::error::IoResultExt;

/// How long output is still read after the runtime exited: a process the
/// exec left in the background may hold the pipes open forever.
pub(super) const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
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
/// (runc ignores plain files there); removed on drop. Dropped before the
/// process was reaped (the ExecSync call was cancelled), it kills the
/// process too: nobody is left to collect its output or end it.
pub(super) struct ExecFiles {
    pub(super) process: PathBuf,
    pub(super) pid: PathBuf,
    pub(super) log: PathBuf,
    /// The runtime itself, killed on drop when the process's pid is not
    /// known yet (the runtime had not written it).
    pub(super) runtime_pid: Option<Pid>,
    pub(super) reaped: bool,
}

impl ExecFiles {
    pub(super) fn new(root: &Path, id: &str) -> Self {
        let base =
            crate::store::unique_temp_name(&format!("{}exec-{id}-", crate::store::TEMP_PREFIX));
        Self {
            process: root.join(format!("{base}.json")),
            pid: root.join(format!("{base}.pid")),
            log: root.join(format!("{base}.log")),
            runtime_pid: None,
            reaped: false,
        }
    }

    pub(super) fn read_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(&self.pid).ok()?;
        text.trim()
            .parse()
            .ok()
            .filter(|pid| *pid > 0)
            .map(Pid::from_raw)
    }
}

/// How long a dropped exec waits for the runtime to name its process.
const PID_FILE_WAIT: Duration = Duration::from_secs(5);
const PID_FILE_POLL: Duration = Duration::from_millis(20);

/// Whether `pid` is a live process (not gone, not a zombie).
fn is_alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?;
            Some(state != "Z")
        })
        .unwrap_or(false)
}

impl ExecFiles {
    /// Kills the process, and removes the files. A runtime that started
    /// the process but has not written its pid yet is given a moment (on
    /// a task, as this runs in `drop`): killing the runtime instead would
    /// leave its process running, orphaned.
    fn finish(&mut self) {
        if self.reaped {
            return;
        }
        // Reaped, as far as its own drop is concerned: it only removes.
        let files = Self {
            process: std::mem::take(&mut self.process),
            pid: std::mem::take(&mut self.pid),
            log: std::mem::take(&mut self.log),
            runtime_pid: self.runtime_pid,
            reaped: true,
        };
        if let Some(pid) = files.read_pid() {
            let _ = kill(pid, Signal::SIGKILL);
            return;
        }
        let Some(runtime) = self.runtime_pid else {
            return;
        };
        let Ok(tokio) = tokio::runtime::Handle::try_current() else {
            let _ = kill(runtime, Signal::SIGKILL);
            return;
        };
        tokio.spawn(async move {
            let deadline = Instant::now() + PID_FILE_WAIT;
            loop {
                if let Some(pid) = files.read_pid() {
                    let _ = kill(pid, Signal::SIGKILL);
                    break;
                }
                if !is_alive(runtime) {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = kill(runtime, Signal::SIGKILL);
                    break;
                }
                tokio::time::sleep(PID_FILE_POLL).await;
            }
            drop(files);
        });
    }
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        self.finish();
        for path in [&self.process, &self.pid, &self.log] {
            if !path.as_os_str().is_empty() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Reads everything, keeping the first `cap` bytes in `out` and counting
/// every byte read in `total` as it goes (the read may be abandoned before
/// the end: a process that leaves the pipe open behind it).
async fn read_capped(
    mut reader: impl AsyncRead + Unpin,
    out: &mut Vec<u8>,
    total: &mut u64,
    cap: usize,
) {
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                *total += n as u64;
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Room kept in the cap for each stream's truncation marker.
const MARKER_ROOM: usize = 128;

/// What ends a stream of which `dropped` bytes were left out.
fn truncation_marker(dropped: u64) -> String {
    format!("\n[wharf: output truncated, {dropped} more bytes not shown]\n")
}

/// A stream as read: the bytes kept and how many there were in all.
struct Captured {
    kept: Vec<u8>,
    total: u64,
}

/// Makes stdout and stderr fit in `cap` bytes together. When they do not,
/// the space is shared fairly (a stream needing less than half leaves the
/// rest to the other) and each cut stream ends with a marker saying how
/// much was dropped.
fn fit_output(stdout: Captured, stderr: Captured, cap: usize) -> (Vec<u8>, Vec<u8>) {
    if stdout.total + stderr.total <= cap as u64 {
        return (stdout.kept, stderr.kept);
    }
    let budget = cap.saturating_sub(2 * MARKER_ROOM);
    let out_keep = stdout
        .kept
        .len()
        .min((budget / 2).max(budget.saturating_sub(stderr.kept.len())));
    let err_keep = stderr.kept.len().min(budget - out_keep);
    let cut = |mut stream: Captured, keep: usize| {
        stream.kept.truncate(keep);
        if (keep as u64) < stream.total {
            let marker = truncation_marker(stream.total - keep as u64);
            stream.kept.extend_from_slice(marker.as_bytes());
        }
        stream.kept
    };
    (cut(stdout, out_keep), cut(stderr, err_keep))
}

pub(super) fn signal_exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(255)
}

impl OciRuntime {
    /// The files of one exec, with the process spec written.
    pub(super) async fn exec_files(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
    ) -> Result<ExecFiles, RuntimeError> {
        let files = ExecFiles::new(&self.root, id);
        tokio::fs::create_dir_all(&self.root)
            .await
            .at("creating directory", &self.root)?;
        let spec = serde_json::to_vec(process).map_err(|e| RuntimeError::BadOutput {
            command: "exec",
            id: id.to_owned(),
            detail: format!("encoding process: {e}"),
        })?;
        tokio::fs::write(&files.process, spec)
            .await
            .at("writing", &files.process)?;

        Ok(files)
    }

    /// The runtime's own failure, if the exec failed rather than the
    /// process: a process's own failure leaves no error in the runtime's
    /// log; the runtime's (no such binary, stopped container) does.
    pub(super) async fn exec_failure(&self, id: &str, files: &ExecFiles) -> Option<RuntimeError> {
        let log = tokio::fs::read(&files.log).await.unwrap_or_default();
        error::last_error_message(&log).map(|message| RuntimeError::failed("exec", id, message))
    }

    /// Runs `process` in container `id` and collects its output: stdout
    /// and stderr together at most `output_cap` bytes (the rest is read
    /// and dropped, see [`fit_output`]).
    /// When `timeout` passes, the process is killed (then the runtime,
    /// if it lingers) and `timed_out` is set.
    pub async fn exec_sync(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        timeout: Option<Duration>,
        output_cap: usize,
    ) -> Result<ExecOutput, RuntimeError> {
        let mut files = self.exec_files(id, process).await?;
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
        let (mut stdout_total, mut stderr_total) = (0, 0);
        let mut timed_out = false;
        let status = {
            let output = async {
                if let Some(pipe) = stdout_pipe {
                    let stderr_read = async {
                        if let Some(pipe) = stderr_pipe {
                            read_capped(pipe, &mut stderr, &mut stderr_total, output_cap).await;
                        }
                    };
                    let stdout_read = async {
                        read_capped(pipe, &mut stdout, &mut stdout_total, output_cap).await;
                    };
                    tokio::join!(stdout_read, stderr_read);
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

        // The runtime waits for the process, so it is gone too.
        files.reaped = true;
        let exit_code = signal_exit_code(status);
        if !timed_out && exit_code != 0 {
            if let Some(failure) = self.exec_failure(id, &files).await {
                return Err(failure);
            }
        }
        let (stdout, stderr) = fit_output(
            Captured {
                kept: stdout,
                total: stdout_total,
            },
            Captured {
                kept: stderr,
                total: stderr_total,
            },
            output_cap,
        );
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
            timed_out,
        })
    }

    /// Deletes the files of ExecSyncs a previous run of the daemon was
    /// interrupted in (they are removed when an exec ends). Call at
    /// start-up, before any exec runs.
    pub fn remove_exec_leftovers(&self) -> std::io::Result<usize> {
        let prefix = format!("{}exec-", crate::store::TEMP_PREFIX);
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if is_file && entry.file_name().to_string_lossy().starts_with(&prefix) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_capped_but_fully_read() {
        let data = vec![b'x'; 100_000];
        let mut out = Vec::new();
        let mut total = 0;
        read_capped(&data[..], &mut out, &mut total, 10).await;
        assert_eq!(total, 100_000);
        assert_eq!(out, b"xxxxxxxxxx");
    }

    fn captured(byte: u8, total: usize, cap: usize) -> Captured {
        Captured {
            kept: vec![byte; total.min(cap)],
            total: total as u64,
        }
    }

    #[test]
    fn output_within_the_cap_is_untouched() {
        let cap = 1000;
        let (out, err) = fit_output(captured(b'o', 600, cap), captured(b'e', 400, cap), cap);
        assert_eq!((out.len(), err.len()), (600, 400));
        assert!(!out.ends_with(b"]\n"));
    }

    #[test]
    fn big_output_shares_the_cap_and_says_what_was_cut() {
        let cap = 10_000;
        // Both streams huge: half each, both marked.
        let (out, err) = fit_output(
            captured(b'o', 1_000_000, cap),
            captured(b'e', 50_000, cap),
            cap,
        );
        assert!(
            out.len() + err.len() <= cap,
            "{} + {}",
            out.len(),
            err.len()
        );
        let out_text = String::from_utf8_lossy(&out);
        assert!(out_text.starts_with("oooo"));
        assert!(out_text.ends_with(&truncation_marker(1_000_000 - (cap as u64 - 256) / 2)));
        let err_text = String::from_utf8_lossy(&err);
        assert!(err_text.contains("[wharf: output truncated"), "{err_text}");
        // A small stderr is kept whole; stdout gets the rest.
        let (out, err) = fit_output(
            captured(b'o', 1_000_000, cap),
            captured(b'e', 100, cap),
            cap,
        );
        assert_eq!(err, vec![b'e'; 100]);
        assert!(out.len() + err.len() <= cap);
        assert!(out.len() > cap / 2);
        assert!(String::from_utf8_lossy(&out).contains("output truncated"));
        // Just over the cap together, each under it.
        let (out, err) = fit_output(captured(b'o', 6000, cap), captured(b'e', 6000, cap), cap);
        assert!(out.len() + err.len() <= cap);
    }

    #[test]
    fn exec_leftovers_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = OciRuntime::new("runc".into(), dir.path().to_path_buf());
        assert_eq!(runtime.remove_exec_leftovers().unwrap(), 0);
        let files = ExecFiles::new(dir.path(), "abc");
        for path in [&files.process, &files.pid, &files.log] {
            std::fs::write(path, b"x").unwrap();
        }
        std::mem::forget(files);
        std::fs::create_dir(dir.path().join("abc")).unwrap();
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        assert_eq!(runtime.remove_exec_leftovers().unwrap(), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["abc", "other"]);
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
