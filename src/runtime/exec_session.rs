//! `runtime exec` for the streaming server: the process runs with the
//! client's stdio (pipes, or a terminal received on a console socket)
//! until it exits. The runtime waits for its process, and tokio reaps the
//! runtime; a session dropped part-way kills the process (by the pid the
//! runtime wrote), and the runtime, left without its process, exits too.

use std::ffi::OsStr;
use std::future::Future;
use std::process::Stdio;

use futures_util::StreamExt;
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::console::{ConsoleSocket, Terminal};
use super::error::RuntimeError;
use super::exec::{signal_exit_code, DRAIN_AFTER_EXIT};
use super::session::{copy_output, SessionIo, SessionWriter, CHUNK};
use super::OciRuntime;

impl OciRuntime {
    /// Runs `process` in container `id` with `io` as its stdio (a terminal
    /// when `process.terminal` is set); its exit code (128 + signal when a
    /// signal ended it). A process that cannot be started is an error with
    /// the runtime's message.
    pub async fn exec_session(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        io: SessionIo,
    ) -> Result<i32, RuntimeError> {
        let tty = process.terminal().unwrap_or(false);
        let mut files = self.exec_files(id, process).await?;
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
        let console = if tty {
            let name =
                crate::store::unique_temp_name(&format!("{}exec-", crate::store::TEMP_PREFIX));
            let path = self.root.join(format!("{name}.sock"));
            let console = ConsoleSocket::bind(&path).map_err(|source| RuntimeError::Io {
                op: "binding the console socket",
                path: path.clone(),
                source,
            })?;
            command.arg("--console-socket").arg(console.path());
            command.stdout(Stdio::null()).stderr(Stdio::null());
            Some(console)
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
        files.runtime_pid = child.id().map(|pid| Pid::from_raw(pid as i32));
        let wait_error = |source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            command: "exec",
            id: id.to_owned(),
            source,
        };

        let status = match console {
            Some(console) => {
                let received = tokio::select! {
                    terminal = console.receive() => Some(terminal),
                    // The runtime failed before it made a terminal.
                    status = child.wait() => { status.map_err(wait_error)?; None }
                };
                drop(console);
                match received {
                    Some(Ok(terminal)) => run_until_exit(child.wait(), with_terminal(terminal, io))
                        .await
                        .map_err(wait_error)?,
                    Some(Err(e)) => {
                        return Err(RuntimeError::failed(
                            "exec",
                            id,
                            format!("receiving the terminal: {e}"),
                        ))
                    }
                    None => child.wait().await.map_err(wait_error)?,
                }
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

fn with_terminal(
    terminal: Terminal,
    io: SessionIo,
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
                }
            }
        };
        tokio::join!(keystrokes, resizes);
    };
    let output = async move { copy_terminal(&terminal, stdout).await };
    Copying { input, output }
}

/// The terminal's output to the client until the terminal closes; after a
/// client's failure, read and dropped.
async fn copy_terminal(terminal: &Terminal, mut to: Option<SessionWriter>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match terminal.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(writer) = &mut to {
            if writer.write_all(&buf[..n]).await.is_err() {
                to = None;
            }
        }
    }
    if let Some(writer) = &mut to {
        let _ = writer.flush().await;
    }
}
