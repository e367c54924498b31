//! `runtime exec` for the streaming server: the process runs with the
//! client's stdio (pipes, or a terminal of ours that runc relays to the
//! container's, see [`super::console`]) until it exits. The runtime waits for its process, and tokio reaps the
//! runtime; a session dropped part-way kills the process (by the pid the
//! runtime wrote), and the runtime, left without its process, exits too.

use std::ffi::OsStr;
use std::future::Future;
use std::process::Stdio;

use futures_util::StreamExt;
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use super::console::{open_terminal, Terminal};
use super::error::RuntimeError;
use super::exec::{signal_exit_code, DRAIN_AFTER_EXIT};
use super::session::{copy_output, SessionIo, CHUNK};
use super::OciRuntime;
use crate::error::IoResultExt;

impl OciRuntime {
    /// Runs `process` in container `id` with `io` as its stdio (a terminal
    /// when `process.terminal` is set); its exit code (128 + signal when a
    /// signal ended it). A process that cannot be started is an error with
    /// the runtime's message.
    pub async fn exec_session(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        mut io: SessionIo,
    ) -> Result<i32, RuntimeError> {
        let tty = process.terminal().unwrap_or(false);
        let mut process = process.clone();
        // A size the client sent already is the terminal's from the
        // start, so that the process never sees another.
        let first_size = tty
            .then(|| io.resize.as_mut().and_then(latest_ready_size))
            .flatten();
        if let Some(size) = first_size {
            let console = oci_spec::runtime::BoxBuilder::default()
                .width(u32::from(size.columns))
                .height(u32::from(size.rows))
                .build();
            process.set_console_size(console.ok());
        }
        let mut files = self.exec_files(id, &process).await?;
        let mut command = self.command(Some(&files.log));
        // Dropped, the session kills the process instead (see ExecFiles),
        // and the runtime ends with it.
        command.kill_on_drop(false);
        command
            .arg("exec")
            .arg("--process")
            .arg(&files.process)
            .arg("--pid-file")
            .arg(&files.pid);
        let terminal = if tty {
            let size = first_size.map(|size| (size.columns, size.rows));
            let (terminal, slave) =
                open_terminal(size).at("opening a terminal for", &files.process)?;
            let dup = |fd: &std::os::fd::OwnedFd| {
                fd.try_clone()
                    .at("duplicating the terminal for", &files.process)
            };
            command
                .stdin(dup(&slave)?)
                .stdout(dup(&slave)?)
                .stderr(slave);
            Some(terminal)
        } else {
            let piped = |wanted: bool| {
                if wanted {
                    Stdio::piped()
                } else {
                    Stdio::null()
                }
            };
            command
                .stdin(piped(io.stdin.is_some()))
                .stdout(piped(io.stdout.is_some()))
                .stderr(piped(io.stderr.is_some()));
            None
        };
        command.arg(OsStr::new(id));
        let mut child = command.spawn().map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            command: "exec",
            id: id.to_owned(),
            source,
        })?;
        // Our copies of the terminal's slave close here, so that the
        // master reads its end once the runtime's are gone.
        drop(command);
        files.runtime_pid = child.id().map(|pid| Pid::from_raw(pid as i32));
        let wait_error = |source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            command: "exec",
            id: id.to_owned(),
            source,
        };

        let status = match terminal {
            Some(terminal) => {
                let copying = with_terminal(terminal, io, files.runtime_pid);
                run_until_exit(child.wait(), copying)
                    .await
                    .map_err(wait_error)?
            }
            None => {
                let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
                run_until_exit(child.wait(), with_pipes(pipes, io))
                    .await
                    .map_err(wait_error)?
            }
        };
        // The runtime waits for its process, so that is gone too.
        files.reaped = true;
        let exit_code = signal_exit_code(status);
        if exit_code != 0 {
            if let Some(failure) = self.exec_failure(id, &files).await {
                return Err(failure);
            }
        }
        Ok(exit_code)
    }
}

/// The last of the sizes already queued, without waiting for one.
fn latest_ready_size(
    sizes: &mut futures_util::stream::BoxStream<'static, super::session::WindowSize>,
) -> Option<super::session::WindowSize> {
    use futures_util::FutureExt;
    let mut latest = None;
    while let Some(Some(size)) = sizes.next().now_or_never() {
        latest = Some(size);
    }
    latest
}

/// The copying of one session: `input` ends when the client's stdin does
/// (or never), `output` when the process's output does.
struct Copying<I, O> {
    input: I,
    output: O,
}

/// Waits for the runtime while the session's data flows; once it exited,
/// what its process left in the pipes is still delivered, for a while (a
/// process it left in the background may hold them open forever).
async fn run_until_exit<W, I, O>(
    wait: W,
    copying: Copying<I, O>,
) -> std::io::Result<std::process::ExitStatus>
where
    W: Future<Output = std::io::Result<std::process::ExitStatus>>,
    I: Future<Output = ()>,
    O: Future<Output = ()>,
{
    let Copying { input, output } = copying;
    tokio::pin!(wait, input, output);
    let (mut input_done, mut output_done) = (false, false);
    let status = loop {
        tokio::select! {
            status = &mut wait => break status?,
            () = &mut input, if !input_done => input_done = true,
            () = &mut output, if !output_done => output_done = true,
        }
    };
    if !output_done {
        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut output).await;
    }
    Ok(status)
}

type Pipes = (
    Option<tokio::process::ChildStdin>,
    Option<tokio::process::ChildStdout>,
    Option<tokio::process::ChildStderr>,
);

fn with_pipes(
    (stdin, stdout, stderr): Pipes,
    io: SessionIo,
) -> Copying<impl Future<Output = ()>, impl Future<Output = ()>> {
    let SessionIo {
        stdin: client_stdin,
        stdout: client_stdout,
        stderr: client_stderr,
        resize: _,
    } = io;
    let input = async move {
        if let (Some(mut from), Some(mut to)) = (client_stdin, stdin) {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            // Dropping `to` closes the process's stdin: the client's EOF.
        }
    };
    let output = async move {
        let out = async {
            if let Some(pipe) = stdout {
                copy_output(pipe, client_stdout).await;
            }
        };
        let err = async {
            if let Some(pipe) = stderr {
                copy_output(pipe, client_stderr).await;
            }
        };
        tokio::join!(out, err);
    };
    Copying { input, output }
}

/// `runtime`: told of resizes with SIGWINCH, on which it copies the size
/// of our terminal to the container's.
fn with_terminal(
    terminal: Terminal,
    io: SessionIo,
    runtime: Option<Pid>,
) -> Copying<impl Future<Output = ()>, impl Future<Output = ()>> {
    let terminal = std::sync::Arc::new(terminal);
    let SessionIo {
        stdin,
        stdout,
        stderr: _,
        resize,
    } = io;
    let input_terminal = std::sync::Arc::clone(&terminal);
    let input = async move {
        let terminal = &input_terminal;
        let keystrokes = async {
            let Some(mut stdin) = stdin else {
                return;
            };
            let mut buf = vec![0u8; CHUNK];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if terminal.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let resizes = async {
            let Some(mut resize) = resize else {
                return;
            };
            while let Some(size) = resize.next().await {
                if let Err(e) = terminal.resize(size.columns, size.rows) {
                    tracing::debug!(error = %e, "resizing an exec terminal");
                    continue;
                }
                // The runtime is not reaped while this runs: the pid is its.
                if let Some(pid) = runtime {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH);
                }
            }
        };
        // Resizes first: a size sent before a keystroke applies before it.
        tokio::join!(resizes, keystrokes);
    };
    let output = async move { copy_output(&*terminal, stdout).await };
    Copying { input, output }
}
