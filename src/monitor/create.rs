//! `runtime create`, with the container's stdio wired to descriptors the
//! monitor keeps: pipes, or a terminal's master received from the runtime.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{pipe2, Pid};

use super::log::Stream;
use super::sys;
use super::MonitorError;
use crate::runtime::error::runtime_message;
use crate::runtime::protocol::{files, MonitorArgs};
use crate::runtime::socket_path::SocketPath;
use crate::runtime::{CreateOptions, OciRuntime};

/// How often the terminal hand-over checks whether the runtime is gone,
/// when the kernel cannot tell it at once (no pidfd).
const CONSOLE_POLL: Duration = Duration::from_millis(100);

/// A created container: its init and the monitor's ends of its stdio.
pub struct Container {
    pub pid: Pid,
    /// Readable ends of the container's output, with the stream each one
    /// is logged as (a terminal is one "stdout" stream).
    pub outputs: Vec<(Stream, File)>,
    /// Where attach will write the container's input: a pipe's write end
    /// or the terminal's master. Held open so the container's stdin stays
    /// open while nothing is attached.
    pub stdin: Option<OwnedFd>,
}

/// How the runtime makes the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// `runtime create`: the init waits for `runtime start`.
    Create,
    /// `runtime run --detach`: created and started by one runtime process.
    Run,
}

/// Runs `runtime create` (or `run --detach`); its own stdio becomes the
/// container's.
pub fn create(args: &MonitorArgs, launch: Launch) -> Result<Container, MonitorError> {
    let runtime_log = args.state_file(files::RUNTIME_LOG);
    let pid_file = args.state_file(files::CONTAINER_PID);
    for stale in [&runtime_log, &pid_file] {
        remove_if_present(stale)?;
    }
    let runtime = runtime_of(args);
    // The runtime connects to it by this name, however deep the state dir.
    let console_path = args.state_file(files::CONSOLE_SOCKET);
    let console = SocketPath::new(&console_path)
        .map_err(MonitorError::io("opening the directory of", &console_path))?;
    let console_socket = console.path();
    let options = CreateOptions {
        id: &args.id,
        bundle: &args.bundle,
        pid_file: &pid_file,
        log_file: &runtime_log,
        console_socket: args.tty.then_some(console_socket),
    };
    let mut command = Command::new(runtime.binary());
    command.args(match launch {
        Launch::Create => runtime.create_args(&options),
        Launch::Run => runtime.run_args(&options),
    });
    let (outputs, stdin) = if args.tty {
        run_with_terminal(command, console_socket, &runtime_log, args)?
    } else {
        run_with_pipes(command, &runtime_log, args)?
    };
    Ok(Container {
        pid: read_pid_file(&pid_file)?,
        outputs,
        stdin,
    })
}

/// The monitor's ends of the container's output and input.
type ContainerStdio = (Vec<(Stream, File)>, Option<OwnedFd>);

fn spawn(command: &mut Command, args: &MonitorArgs) -> Result<Child, MonitorError> {
    command
        .spawn()
        .map_err(|source| MonitorError::SpawnRuntime {
            runtime: args.runtime.clone(),
            source,
        })
}

fn run_with_pipes(
    mut command: Command,
    runtime_log: &Path,
    args: &MonitorArgs,
) -> Result<ContainerStdio, MonitorError> {
    let (stdout_read, stdout_write) = output_pipe()?;
    let (stderr_read, stderr_write) = output_pipe()?;
    let stdin = if args.stdin {
        let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(MonitorError::errno("pipe"))?;
        command.stdin(read);
        Some(write)
    } else {
        command.stdin(Stdio::null());
        None
    };
    command.stdout(stdout_write).stderr(stderr_write);
    let mut child = spawn(&mut command, args)?;
    // The runtime's (and then the container's) copies become the only
    // write ends, so end of file means all of them are gone.
    drop(command);
    let status = child
        .wait()
        .map_err(MonitorError::sys("waiting for the runtime"))?;
    let (mut stdout, mut stderr) = (File::from(stdout_read), File::from(stderr_read));
    if !status.success() {
        // runc prints its error on the stderr it was given, too.
        let mut output = read_available(&mut stderr);
        output.extend(read_available(&mut stdout));
        return Err(runtime_failure(runtime_log, &output));
    }
    Ok((
        vec![(Stream::Stdout, stdout), (Stream::Stderr, stderr)],
        stdin,
    ))
}

fn run_with_terminal(
    mut command: Command,
    console_socket: &Path,
    runtime_log: &Path,
    args: &MonitorArgs,
) -> Result<ContainerStdio, MonitorError> {
    let listener = bind_console_socket(console_socket)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn(&mut command, args)?;
    let received = receive_terminal(child, &listener);
    let _ = std::fs::remove_file(console_socket);
    let (status, master) = received?;
    if !status.success() {
        return Err(runtime_failure(runtime_log, &[]));
    }
    let master = master.ok_or_else(|| {
        MonitorError::Terminal("the runtime sent no terminal on the console socket".into())
    })?;
    sys::set_nonblocking(&master).map_err(MonitorError::sys("setting O_NONBLOCK"))?;
    let input = master
        .try_clone()
        .map_err(MonitorError::sys("duplicating the terminal"))?;
    Ok((vec![(Stream::Stdout, File::from(master))], Some(input)))
}

/// How long `runtime delete` may take at the container's exit: the exit is
/// recorded after it, so a hung runtime must not hold the record back.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a running `runtime delete` is checked on when the kernel
/// cannot say when it exits (no pidfd).
const DELETE_POLL: Duration = Duration::from_millis(10);

/// `runtime delete` of the exited container, within [`DELETE_TIMEOUT`];
/// its error message if it failed or took too long (the daemon then
/// deletes it at RemoveContainer).
pub fn delete(args: &MonitorArgs) -> Result<(), String> {
    let runtime = runtime_of(args);
    let mut child = Command::new(runtime.binary())
        .args(runtime.delete_args(&args.id))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", runtime.binary().display()))?;
    let deadline = Instant::now() + DELETE_TIMEOUT;
    // StopContainer waits for the exit record, which waits for this: woken
    // by the exit itself, not on the next poll interval.
    let exited = sys::child_exit_fd(child.id()).ok();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => match &exited {
                Some(fd) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(
                        &mut fds,
                        PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
                    );
                }
                None => std::thread::sleep(DELETE_POLL),
            },
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not done within {}s", DELETE_TIMEOUT.as_secs()));
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("reading its output: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(runtime_message(&output.stderr, &output.stdout))
}

fn runtime_of(args: &MonitorArgs) -> OciRuntime {
    OciRuntime::new(args.runtime.clone(), args.runtime_root.clone())
        .with_options(args.runtime_options.clone())
}

fn remove_if_present(path: &Path) -> Result<(), MonitorError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(MonitorError::io("removing", path)(e)),
        _ => Ok(()),
    }
}

/// A pipe whose read end (kept by the monitor) does not block.
fn output_pipe() -> Result<(OwnedFd, OwnedFd), MonitorError> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(MonitorError::errno("pipe"))?;
    sys::set_nonblocking(&read).map_err(MonitorError::sys("setting O_NONBLOCK"))?;
    Ok((read, write))
}

/// What is buffered in a non-blocking pipe, up to 64 KiB.
fn read_available(pipe: &mut File) -> Vec<u8> {
    let mut output = Vec::new();
    let _ = pipe.take(64 * 1024).read_to_end(&mut output);
    output
}

fn runtime_failure(runtime_log: &Path, output: &[u8]) -> MonitorError {
    let log = std::fs::read(runtime_log).unwrap_or_default();
    MonitorError::Runtime {
        message: runtime_message(&log, output),
    }
}

fn read_pid_file(path: &Path) -> Result<Pid, MonitorError> {
    let text = std::fs::read_to_string(path).map_err(MonitorError::io("reading", path))?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(Pid::from_raw(pid)),
        _ => Err(MonitorError::Runtime {
            message: format!("invalid pid file {}: {:?}", path.display(), text.trim()),
        }),
    }
}

fn bind_console_socket(path: &Path) -> Result<UnixListener, MonitorError> {
    remove_if_present(path)?;
    let listener = UnixListener::bind(path).map_err(MonitorError::io("binding", path))?;
    listener
        .set_nonblocking(true)
        .map_err(MonitorError::io("configuring", path))?;
    Ok(listener)
}

/// Waits for the runtime to exit while accepting its connection on the
/// console socket; the terminal's master, if it sent one.
fn receive_terminal(
    mut child: Child,
    listener: &UnixListener,
) -> Result<(std::process::ExitStatus, Option<OwnedFd>), MonitorError> {
    let mut master = None;
    // The runtime exits once it has sent the terminal: polled with the
    // listener so that its exit ends the wait, not the poll interval.
    let exited = sys::child_exit_fd(child.id()).ok();
    loop {
        if master.is_none() {
            master = accept_terminal(listener)?;
        }
        if let Some(status) = child
            .try_wait()
            .map_err(MonitorError::sys("waiting for the runtime"))?
        {
            if master.is_none() {
                // It may have connected just before exiting.
                master = accept_terminal(listener)?;
            }
            return Ok((status, master));
        }
        let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = &exited {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        let timeout = PollTimeout::try_from(CONSOLE_POLL).unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, timeout);
    }
}

fn accept_terminal(listener: &UnixListener) -> Result<Option<OwnedFd>, MonitorError> {
    let stream: UnixStream = match listener.accept() {
        Ok((stream, _)) => stream,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(MonitorError::Terminal(format!("accepting: {e}"))),
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| MonitorError::Terminal(format!("configuring: {e}")))?;
    sys::recv_fd(&stream)
        .map(Some)
        .map_err(|e| MonitorError::Terminal(format!("receiving the terminal: {e}")))
}
