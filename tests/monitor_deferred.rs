//! A deferred start (`--defer-start`, what the daemon uses): the monitor
//! is ready before any runtime runs and runs the container (`runc run
//! --detach`) on `start`, answers a repeated `start` with the same pid,
//! reports a failure only runc sees at the start, deletes the runtime's
//! container when it exits, and records a `cancel` as a SIGKILL exit. Real runc, busybox bundles (see `monitor_fixture`).

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::monitor_fixture::Fixture;
use common::poll_until;
use wharf::error::{Classify, Kind};
use wharf::runtime::protocol::{files, ControlReply, Started};
use wharf::runtime::{
    cancel_with_monitor, create_with_monitor, monitor_alive, read_exit, start_with_monitor,
    watch_exit, ContainerEnd, Status,
};

fn deferred(name: &str, script: &str, tweak: impl FnOnce(&mut serde_json::Value)) -> Fixture {
    let mut f = Fixture::new(name, script, tweak);
    f.config.defer_start = true;
    f
}

/// One control request on the monitor's socket, as the daemon sends it;
/// the reply line and the wall time until it came.
fn control(f: &Fixture, request: &str) -> (ControlReply, Duration) {
    use std::io::{BufRead, BufReader, Write};
    let started = Instant::now();
    let mut socket = UnixStream::connect(f.config.state_dir.join(files::CONTROL_SOCKET)).unwrap();
    socket.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(socket).read_line(&mut line).unwrap();
    let reply = ControlReply::parse(&line).unwrap_or_else(|| panic!("reply {line:?}"));
    (reply, started.elapsed())
}

async fn monitor_gone(f: &Fixture) {
    let state_dir = f.config.state_dir.clone();
    poll_until("monitor exit", Duration::from_secs(10), || {
        (!monitor_alive(&state_dir)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_container_runs_at_start_and_a_repeated_start_gets_the_same_pid() {
    let f = deferred("deferred", "echo up; sleep 0.3; exit 4", |_| {});
    let created = create_with_monitor(&f.runtime, &f.config).await.unwrap();
    assert_eq!(created.container_pid, None);
    assert!(monitor_alive(&f.config.state_dir));
    assert_eq!(
        f.runtime.state(&f.id).await.unwrap(),
        None,
        "no runtime ran before the start"
    );
    // A watch held from before the start sees the exit.
    let state_dir = f.config.state_dir.clone();
    let watch = tokio::spawn(async move { watch_exit(&state_dir).await });

    let pid = start_with_monitor(&f.runtime, &f.id, &f.config.state_dir)
        .await
        .unwrap();
    let state = f.runtime.state(&f.id).await.unwrap().unwrap();
    assert_eq!(state.pid, pid);
    assert!(matches!(state.status, Status::Running | Status::Stopped));
    let again = start_with_monitor(&f.runtime, &f.id, &f.config.state_dir).await;
    assert_eq!(again.unwrap(), pid);

    let end = tokio::time::timeout(Duration::from_secs(20), watch)
        .await
        .unwrap()
        .unwrap();
    let ContainerEnd::Exited(exit) = end else {
        panic!("{end:?}");
    };
    assert_eq!(exit.exit_code, 4);
    assert_eq!(read_exit(&f.config.state_dir).unwrap(), Some(exit));
    // Deleted by the monitor before it recorded the exit.
    assert!(exit.runtime_deleted);
    assert_eq!(f.runtime.state(&f.id).await.unwrap(), None);
    assert_eq!(f.log_contents("stdout"), ["up"]);
}

#[tokio::test]
async fn a_missing_entrypoint_fails_the_start_with_the_runtime_message() {
    let f = deferred("noentry", "true", |config| {
        config["process"]["args"] = serde_json::json!(["/no/such/init"]);
    });
    create_with_monitor(&f.runtime, &f.config).await.unwrap();
    let error = start_with_monitor(&f.runtime, &f.id, &f.config.state_dir)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("/no/such/init"), "{error}");
    assert_ne!(error.kind(), Kind::FailedPrecondition, "{error}");
    monitor_gone(&f).await;
    // Nothing ran, so nothing exited: the daemon keeps the start's error.
    assert_eq!(read_exit(&f.config.state_dir).unwrap(), None);
    assert_eq!(watch_exit(&f.config.state_dir).await, ContainerEnd::Lost);
}

#[tokio::test]
async fn a_cancelled_container_never_runs_and_ends_as_killed() {
    let f = deferred("cancel", "echo never", |_| {});
    create_with_monitor(&f.runtime, &f.config).await.unwrap();
    cancel_with_monitor(&f.config.state_dir).await.unwrap();
    monitor_gone(&f).await;
    let exit = read_exit(&f.config.state_dir).unwrap().unwrap();
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    assert_eq!(f.runtime.state(&f.id).await.unwrap(), None);
    assert!(f.log_contents("stdout").is_empty());
    let late = start_with_monitor(&f.runtime, &f.id, &f.config.state_dir).await;
    assert_eq!(late.unwrap_err().kind(), Kind::FailedPrecondition);
}

#[tokio::test]
async fn the_start_is_answered_with_the_runtimes_own_time() {
    let f = deferred("timed", "sleep 5", |_| {});
    create_with_monitor(&f.runtime, &f.config).await.unwrap();
    let state_dir = f.config.state_dir.clone();
    let watch = tokio::spawn(async move { watch_exit(&state_dir).await });

    let (reply, wall) = control(&f, "start");
    let ControlReply::Started(Started {
        pid,
        runtime_us: Some(runtime_us),
    }) = reply
    else {
        panic!("{reply:?}");
    };
    // runc ran within the request, and took some of it.
    assert!(
        runtime_us > 0 && u128::from(runtime_us) <= wall.as_micros(),
        "{runtime_us} us of {wall:?}"
    );
    let state = f.runtime.state(&f.id).await.unwrap().unwrap();
    assert_eq!(state.pid, pid);
    // A repeated start ran nothing: no time.
    let (again, _) = control(&f, "start");
    assert_eq!(again, ControlReply::Started(Started::repeated(pid)));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(20), watch)
        .await
        .unwrap()
        .unwrap();
}
