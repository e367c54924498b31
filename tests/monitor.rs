//! The monitor and the runtime driver against real runc: containers are
//! created in temporary bundles whose rootfs holds the static busybox.
//! Every test cleans up (runc delete --force, monitor killed, cgroups
//! removed) through `Fixture`'s Drop, even when it fails.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use common::monitor_fixture::{Fixture, CGROUP_ROOT, MONITOR, RUNC};
use common::{poll_until, processes_running};
use wharf::error::{Classify, Kind};
use wharf::runtime::protocol::{files, MonitorArgs, SyncMessage};
use wharf::runtime::{monitor_alive, read_exit, reopen_log, watch_exit, ContainerEnd, Status};

/// A signal mask line (`SigIgn`, `SigBlk`) of `/proc/<pid>/status`.
fn signal_mask(pid: &str, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap();
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn libc_signal(signal: Signal) -> u32 {
    signal as i32 as u32
}

fn process(args: &[&str]) -> oci_spec::runtime::Process {
    oci_spec::runtime::ProcessBuilder::default()
        .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/")
        .build()
        .unwrap()
}

#[tokio::test]
async fn logs_exit_code_and_idempotent_delete() {
    let f = Fixture::new(
        "exit3",
        "echo hello; echo err >&2; printf tail; exit 3",
        |_| {},
    );
    let pid = f.create().await.unwrap();
    let state = f.runtime.state(&f.id).await.unwrap().unwrap();
    assert_eq!((state.status, state.pid), (Status::Created, pid));
    assert!(monitor_alive(&f.config.state_dir));

    f.runtime.start(&f.id).await.unwrap();
    let exit = f.wait_exit().await;
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (3, None, false)
    );
    assert!(exit.exited_at_ns > 0);
    assert_eq!(f.log_contents("stdout"), ["hello", "tail"]);
    assert_eq!(f.log_contents("stderr"), ["err"]);
    let tags: Vec<String> = f
        .log_entries(&f.config.log_path)
        .into_iter()
        .filter(|(stream, _, _)| stream == "stdout")
        .map(|(_, tag, _)| tag)
        .collect();
    // "tail" had no newline when the container exited.
    assert_eq!(tags, ["F", "P"]);

    let state_dir = f.config.state_dir.clone();
    poll_until("monitor exit", Duration::from_secs(10), || {
        (!monitor_alive(&state_dir)).then_some(())
    })
    .await;
    assert!(!f.config.state_dir.join(files::CONTROL_SOCKET).exists());
    assert_eq!(
        f.runtime.state(&f.id).await.unwrap().map(|s| s.status),
        Some(Status::Stopped)
    );
    f.runtime.delete(&f.id, false).await.unwrap();
    f.runtime.delete(&f.id, false).await.unwrap();
    assert_eq!(f.runtime.state(&f.id).await.unwrap(), None);
}

#[tokio::test]
async fn sigkill_is_recorded_as_137() {
    let f = Fixture::new("kill9", "echo up; exec sleep 1000", |_| {});
    let pid = f.create_and_start().await;
    let state = f.runtime.state(&f.id).await.unwrap().unwrap();
    assert_eq!((state.status, state.pid), (Status::Running, pid));
    f.runtime.kill(&f.id, Signal::SIGKILL, false).await.unwrap();
    let exit = f.wait_exit().await;
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));

    // Killing a stopped container is a precondition failure.
    let state_dir = f.config.state_dir.clone();
    poll_until("monitor exit", Duration::from_secs(10), || {
        (!monitor_alive(&state_dir)).then_some(())
    })
    .await;
    let error = f
        .runtime
        .kill(&f.id, Signal::SIGTERM, false)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), Kind::FailedPrecondition, "{error}");
    let error = f.runtime.start(&f.id).await.unwrap_err();
    assert_eq!(error.kind(), Kind::FailedPrecondition, "{error}");
    let missing = f
        .runtime
        .kill("no-such-container", Signal::SIGKILL, false)
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), Kind::NotFound, "{missing}");
}

#[tokio::test]
async fn the_exit_is_pushed_to_a_watcher_and_found_by_a_late_one() {
    let f = Fixture::new("pushed", "sleep 0.5; exit 5", |_| {});
    f.create_and_start().await;
    let state_dir = f.config.state_dir.clone();
    let early = tokio::spawn(async move { watch_exit(&state_dir).await });
    let exit = f.wait_exit().await;
    assert_eq!(exit.exit_code, 5);
    // The same record as exit.json, pushed over the control socket.
    assert_eq!(early.await.unwrap(), ContainerEnd::Exited(exit));

    // A watch that starts after the monitor left reads exit.json.
    let state_dir = f.config.state_dir.clone();
    poll_until("monitor exit", Duration::from_secs(10), || {
        (!monitor_alive(&state_dir)).then_some(())
    })
    .await;
    assert_eq!(watch_exit(&state_dir).await, ContainerEnd::Exited(exit));
}

#[tokio::test]
async fn a_watcher_reports_a_killed_monitor_as_lost() {
    let f = Fixture::new("lost", "exec sleep 1000", |_| {});
    f.create_and_start().await;
    let state_dir = f.config.state_dir.clone();
    let monitor = f.monitor_pid().unwrap();
    let sockets_before = open_sockets(monitor);
    let watch = tokio::spawn(async move { watch_exit(&state_dir).await });
    // Connected and waiting: the monitor holds the watcher's connection.
    poll_until("the watcher connects", Duration::from_secs(10), || {
        (open_sockets(monitor) > sockets_before).then_some(())
    })
    .await;
    assert!(!watch.is_finished());
    kill(monitor, Signal::SIGKILL).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), watch)
        .await
        .expect("the watcher noticed the monitor's death")
        .unwrap();
    assert_eq!(end, ContainerEnd::Lost);
    assert_eq!(read_exit(&f.config.state_dir).unwrap(), None);
}

#[tokio::test]
async fn monitor_outlives_the_process_that_spawned_it() {
    let f = Fixture::new("orphan", "sleep 0.3; echo bye; exit 7", |_| {});
    fs::create_dir_all(&f.config.state_dir).unwrap();
    let args = MonitorArgs {
        id: f.id.clone(),
        bundle: f.config.bundle.clone(),
        state_dir: f.config.state_dir.clone(),
        log_path: f.config.log_path.clone(),
        runtime: RUNC.into(),
        runtime_root: f.runtime.root().to_path_buf(),
        runtime_options: Vec::new(),
        stdin: false,
        stdin_once: false,
        tty: false,
        defer_start: false,
        timed_start: false,
        sync_fd: 1,
    };
    // A stand-in daemon: a shell that ignores SIGTERM and SIGINT, starts
    // the monitor and is then killed.
    let mut daemon = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("trap '' TERM INT; \"$0\" \"$@\" & wait")
        .arg(MONITOR)
        .args(args.to_args())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(daemon.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    assert!(matches!(
        serde_json::from_str(&line).unwrap(),
        SyncMessage::Created { .. }
    ));
    daemon.kill().await.unwrap();

    let monitor = f.monitor_pid().unwrap();
    let stat = fs::read_to_string(format!("/proc/{monitor}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let (ppid, session): (i32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(
        ppid,
        daemon.id().unwrap_or(0) as i32,
        "reparented away from its dead parent"
    );
    assert_eq!(session, monitor.as_raw(), "leads its own session");

    // Ignored signals survive exec: the monitor must not pass its
    // spawner's on to the runtime and the container.
    let ignored = signal_mask(&monitor.to_string(), "SigIgn");
    let term_or_int = [Signal::SIGTERM, Signal::SIGINT]
        .iter()
        .fold(0u64, |mask, s| mask | 1 << (libc_signal(*s) - 1));
    assert_eq!(ignored & term_or_int, 0, "ignored signals: {ignored:x}");
    f.runtime.start(&f.id).await.unwrap();
    let exit = f.wait_exit().await;
    assert_eq!(exit.exit_code, 7);
    assert_eq!(f.log_contents("stdout"), ["bye"]);
}

#[tokio::test]
async fn reopen_log_moves_output_to_a_new_file() {
    let f = Fixture::new(
        "reopen",
        "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done",
        |_| {},
    );
    f.create_and_start().await;
    let log = f.config.log_path.clone();
    poll_until("first lines", Duration::from_secs(10), || {
        (f.log_contents("stdout").len() >= 3).then_some(())
    })
    .await;
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated).unwrap();
    reopen_log(&f.config.state_dir).await.unwrap();
    poll_until("lines in the new file", Duration::from_secs(10), || {
        (f.log_contents("stdout").len() >= 3).then_some(())
    })
    .await;
    f.runtime.kill(&f.id, Signal::SIGKILL, false).await.unwrap();
    f.wait_exit().await;

    // Nothing lost, nothing repeated, in order across the two files.
    let mut lines: Vec<String> = f
        .log_entries(&rotated)
        .into_iter()
        .chain(f.log_entries(&log))
        .map(|(_, _, content)| content)
        .collect();
    let expected: Vec<String> = (0..lines.len()).map(|i| format!("line{i}")).collect();
    lines.truncate(expected.len());
    assert_eq!(lines, expected);

    // After the exit nobody answers.
    let error = reopen_log(&f.config.state_dir).await.unwrap_err();
    assert_eq!(error.kind(), Kind::FailedPrecondition, "{error}");
}

#[tokio::test]
async fn exec_sync_output_cap_and_timeout() {
    let f = Fixture::new("exec", "exec sleep 1000", |_| {});
    f.create_and_start().await;

    let output = f
        .runtime
        .exec_sync(
            &f.id,
            &process(&["sh", "-c", "echo out; echo err >&2; exit 5"]),
            None,
            1024,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            output.exit_code,
            output.stdout.as_slice(),
            output.stderr.as_slice(),
            output.timed_out
        ),
        (5, &b"out\n"[..], &b"err\n"[..], false)
    );

    let capped = f
        .runtime
        .exec_sync(
            &f.id,
            &process(&["sh", "-c", "yes | head -c 100000"]),
            None,
            1024,
        )
        .await
        .unwrap();
    // Within the cap: the start of the output, then a marker saying what
    // was cut.
    let text = String::from_utf8_lossy(&capped.stdout);
    assert_eq!(capped.exit_code, 0);
    assert!(capped.stdout.len() <= 1024, "{}", capped.stdout.len());
    let (kept, marker) = text.split_once("\n[").unwrap_or_else(|| panic!("{text:?}"));
    assert!(
        kept.len() > 500 && kept.lines().all(|l| l == "y"),
        "{kept:?}"
    );
    let marker = format!("[{marker}");
    assert!(marker.contains("output truncated"), "{marker:?}");

    let started = Instant::now();
    let slow = f
        .runtime
        .exec_sync(
            &f.id,
            &process(&["sleep", "12345"]),
            Some(Duration::from_secs(1)),
            1024,
        )
        .await
        .unwrap();
    assert!(slow.timed_out);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    poll_until(
        "the timed-out process to go",
        Duration::from_secs(5),
        || {
            processes_running(&["sleep", "12345"])
                .is_empty()
                .then_some(())
        },
    )
    .await;

    let missing = f
        .runtime
        .exec_sync(&f.id, &process(&["/no/such/binary"]), None, 1024)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("/no/such/binary"), "{missing}");

    // No scratch files are left in the runtime root.
    let leftovers: Vec<PathBuf> = fs::read_dir(f.runtime.root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn terminal_output_is_logged_as_stdout() {
    let mut f = Fixture::new("tty", "echo tty-hello; exit 4", |config| {
        config["process"]["terminal"] = json!(true);
    });
    f.config.tty = true;
    f.create_and_start().await;
    let exit = f.wait_exit().await;
    assert_eq!(exit.exit_code, 4);
    assert_eq!(f.log_contents("stdout"), ["tty-hello"]);
}

#[tokio::test]
async fn create_failures_carry_the_runtime_message() {
    let f = Fixture::new("broken", "true", |config| {
        config["process"]["args"] = json!(["/no/such/init"]);
    });
    let error = f.create().await.unwrap_err();
    assert!(error.to_string().contains("/no/such/init"), "{error}");
    assert_eq!(error.kind(), Kind::Internal);

    let first = Fixture::new("dup", "exec sleep 1000", |_| {});
    first.create().await.unwrap();
    let mut second = Fixture::new("dup", "exec sleep 1000", |_| {});
    second.runtime = first.runtime.clone();
    second.id = first.id.clone();
    second.config.id = first.id.clone();
    let error = second.create().await.unwrap_err();
    assert_eq!(error.kind(), Kind::AlreadyExists, "{error}");
}

#[tokio::test]
async fn update_sets_cgroup_limits() {
    let f = Fixture::new("update", "exec sleep 1000", |_| {});
    f.create_and_start().await;
    let limit = 64 * 1024 * 1024;
    let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
        .memory(
            oci_spec::runtime::LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    f.runtime.update(&f.id, &resources).await.unwrap();
    let file = Path::new(CGROUP_ROOT)
        .join("memory")
        .join(&f.cgroup[1..])
        .join("memory.limit_in_bytes");
    assert_eq!(fs::read_to_string(file).unwrap().trim(), limit.to_string());
}

#[tokio::test]
async fn oom_kill_is_detected() {
    let f = Fixture::new(
        "oom",
        "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
        |config| {
            config["linux"]["resources"]["memory"] = json!({"limit": 16 * 1024 * 1024});
        },
    );
    f.create_and_start().await;
    let exit = f.wait_exit().await;
    assert_eq!((exit.exit_code, exit.oom_killed), (137, true), "{exit:?}");
}

#[tokio::test]
async fn stdin_is_held_open_only_when_asked() {
    let closed = Fixture::new("stdin-null", "cat; exit 9", |_| {});
    closed.create_and_start().await;
    assert_eq!(closed.wait_exit().await.exit_code, 9);

    let mut open = Fixture::new("stdin-pipe", "cat; exit 9", |_| {});
    open.config.stdin = true;
    open.create_and_start().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_exit(&open.config.state_dir).unwrap(), None);
    open.runtime
        .kill(&open.id, Signal::SIGKILL, false)
        .await
        .unwrap();
    assert_eq!(open.wait_exit().await.exit_code, 137);
}

#[tokio::test]
async fn a_lost_log_directory_does_not_stop_the_container() {
    let f = Fixture::new(
        "lostlog",
        "while true; do echo tick; sleep 0.02; done",
        |_| {},
    );
    f.create_and_start().await;
    let logs = f.config.log_path.parent().unwrap().to_path_buf();
    fs::remove_dir_all(&logs).unwrap();
    let error = reopen_log(&f.config.state_dir).await.unwrap_err();
    assert_eq!(error.kind(), Kind::Internal, "{error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = f.runtime.state(&f.id).await.unwrap().unwrap();
    assert_eq!(state.status, Status::Running);
    assert!(monitor_alive(&f.config.state_dir));

    // The directory comes back: a reopen resumes logging.
    fs::create_dir_all(&logs).unwrap();
    reopen_log(&f.config.state_dir).await.unwrap();
    poll_until("logging to resume", Duration::from_secs(5), || {
        (!f.log_contents("stdout").is_empty()).then_some(())
    })
    .await;
    f.runtime.kill(&f.id, Signal::SIGKILL, false).await.unwrap();
    assert_eq!(f.wait_exit().await.exit_code, 137);
}

#[tokio::test]
async fn a_missing_log_directory_fails_creation_cleanly() {
    let mut f = Fixture::new("nolog", "true", |_| {});
    f.config.log_path = f.config.log_path.with_file_name("missing/0.log");
    let error = f.create().await.unwrap_err();
    assert!(error.to_string().contains("container log"), "{error}");
    assert_eq!(f.runtime.state(&f.id).await.unwrap(), None);
    assert!(!f.config.state_dir.join(files::CONTROL_SOCKET).exists());
}

/// How many sockets `pid` holds open.
fn open_sockets(pid: Pid) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|fd| {
            fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .count()
}
