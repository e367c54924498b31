//! The daemon killed, its runtime hung, or its caller gone, at each step of a container's
//! life: after a restart, state matches what really runs, and nothing
//! leaks.

mod common;

use std::time::{Duration, Instant};

use common::pods::*;
use common::{mounts_below, poll_until, processes_running, Daemon};
use k8s_cri::v1::*;
use tonic::Code;

/// The daemon is killed while StartContainer runs, after the runtime
/// started the container and before Wharf recorded it: after a restart the
/// container is running with its real start time, a second start refuses
/// without harm, and its real exit code is kept.
#[tokio::test]
async fn a_start_interrupted_by_a_crash_is_reconciled() {
    let wrapper_dir = tempfile::tempdir().unwrap();
    let (wrapper, crash_marker) = crashing_runtime(wrapper_dir.path());
    let mut daemon = daemon_with(&format!("[runtime]\npath = {wrapper:?}\n")).await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "interrupted");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let command = [
        "sh",
        "-c",
        "trap 'exit 7' TERM; while true; do usleep 10000; done",
    ];
    let config = container_config("interrupted", &command);
    let id = create(&mut client, &pod_id, &pod, config).await.unwrap();
    let created_at = status(&mut client, &id).await.created_at;

    // The monitor runs the container with `runc run` at the start.
    std::fs::write(&crash_marker, format!("run\n{}\n", daemon.pid())).unwrap();
    let before_start = std::time::SystemTime::now();
    let crashed = client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await;
    assert!(crashed.is_err(), "the daemon died during the start");
    let after_crash = std::time::SystemTime::now();
    drop(client);
    daemon.kill9();
    daemon.spawn().await;
    let mut client = daemon.runtime().await;

    let nanos = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
    };
    let running = status(&mut client, &id).await;
    assert_eq!(running.state, ContainerState::ContainerRunning as i32);
    assert!(
        running.started_at >= created_at.max(nanos(before_start))
            && running.started_at <= nanos(after_crash),
        "the start time the start really had: {running:?}"
    );
    let again = client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert_eq!(
        status(&mut client, &id).await.state,
        ContainerState::ContainerRunning as i32,
        "a refused start changes nothing"
    );

    stop_container(&mut client, &id, 10).await;
    let stopped = status(&mut client, &id).await;
    assert_eq!(
        (stopped.state, stopped.exit_code, stopped.started_at),
        (
            ContainerState::ContainerExited as i32,
            7,
            running.started_at
        )
    );
    remove_pod(&mut client, &pod_id).await;
}

/// A runtime that hangs in `start`: the call fails with DEADLINE_EXCEEDED
/// after the configured time, the hung process is killed, other calls go
/// on meanwhile, and the container is failed and can be removed. One that
/// hangs in `create` is killed the same way and leaves nothing.
#[tokio::test]
async fn a_hung_runtime_command_times_out() {
    let wrapper_dir = tempfile::tempdir().unwrap();
    let hang_marker = wrapper_dir.path().join("hang-in-start");
    let wrapper = wrapper_dir.path().join("runc-wrapper");
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\nif [ -s {marker:?} ]; then\n  step=$(cat {marker:?})\n  for arg; do [ \"$arg\" = \"$step\" ] && exec sleep 3600; done\nfi\nexec runc \"$@\"\n",
            marker = hang_marker
        ),
    );
    let daemon = daemon_with(&format!(
        "[runtime]\npath = {wrapper:?}\ncommand_timeout_secs = 1\n"
    ))
    .await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "hung");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let config = container_config("hung", &["sleep", "3600"]);
    let id = create(&mut client, &pod_id, &pod, config).await.unwrap();

    // The monitor runs the container with `runc run` at the start.
    std::fs::write(&hang_marker, b"run").unwrap();
    let mut other = daemon.runtime().await;
    let (hung, listed) = tokio::join!(
        client.start_container(StartContainerRequest {
            container_id: id.clone(),
        }),
        async {
            // Waits for the start to be under way (the hung runtime is
            // running), then asks for something else.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !sleeping_runtime_running() {
                assert!(Instant::now() < deadline, "the start never ran the runtime");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other
                .list_containers(ListContainersRequest { filter: None })
                .await
        }
    );
    let hung = hung.unwrap_err();
    assert_eq!(hung.code(), Code::DeadlineExceeded, "{hung:?}");
    assert_eq!(listed.unwrap().into_inner().containers.len(), 1);
    assert!(!sleeping_runtime_running(), "the hung runtime was killed");
    // As containerd does for a start that fails: exited, saying why.
    let failed = status(&mut client, &id).await;
    assert_eq!(failed.state, ContainerState::ContainerExited as i32);
    assert!(failed.message.contains("did not finish"), "{failed:?}");

    std::fs::remove_file(&hang_marker).unwrap();
    client
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();

    // CreateContainer runs no runtime command (the container is run at
    // the start): a runtime that would hang in `create` holds nothing up.
    std::fs::write(&hang_marker, b"create").unwrap();
    let config = container_config("hung", &["sleep", "3600"]);
    run_container(&mut client, &pod_id, &pod, config).await;
    assert!(!sleeping_runtime_running());
    std::fs::remove_file(&hang_marker).unwrap();
    remove_pod(&mut client, &pod_id).await;
}

/// Whether a `sleep 3600` the hanging runtime wrapper exec'd is alive.
fn sleeping_runtime_running() -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // A zombie has no cmdline; a live `sleep 3600` outside any
        // container's PID namespace is the wrapper's.
        cmdline == b"sleep\x003600\x00"
            && !stat.contains(") Z ")
            && entry.path().join("ns/pid").read_link().ok()
                == std::fs::read_link("/proc/self/ns/pid").ok()
    })
}

/// A runtime wrapper that, once the step named in `marker` (`create`,
/// `kill`, `delete`, ...) has succeeded, kills -9 the process whose pid is
/// on the marker's second line: the daemon, at exactly that point.
fn crashing_runtime(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let marker = dir.join("crash");
    let wrapper = dir.join("runc-wrapper");
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\nrunc \"$@\"; rc=$?\nif [ $rc -eq 0 ] && [ -s {marker:?} ]; then\n  step=$(sed -n 1p {marker:?}); pid=$(sed -n 2p {marker:?})\n  for arg; do [ \"$arg\" = \"$step\" ] && rm -f {marker:?} && kill -9 \"$pid\"; done\nfi\nexit $rc\n"
        ),
    );
    (wrapper, marker)
}

/// Monitors alive for containers of this daemon's state directory.
fn monitors_of(daemon: &Daemon) -> usize {
    let state = daemon.state_dir().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("wharf-monitor") && cmdline.contains(&state)
        })
        .count()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    poll_until(what, Duration::from_secs(20), || done().then_some(())).await
}

/// The daemon killed right after the runtime signalled or deleted a
/// container, before Wharf recorded it: after a restart the record
/// agrees with the runtime, the operation can be repeated, and no mount,
/// monitor or runtime state is left behind once the pod is gone.
#[tokio::test]
async fn a_crash_at_each_runtime_step_is_recovered() {
    let wrapper_dir = tempfile::tempdir().unwrap();
    let (wrapper, marker) = crashing_runtime(wrapper_dir.path());
    let mut daemon = daemon_with(&format!("[runtime]\npath = {wrapper:?}\n")).await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "crashes");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let command = [
        "sh",
        "-c",
        "trap 'exit 9' TERM; while true; do usleep 10000; done",
    ];

    // No runtime command runs at CreateContainer (the monitor runs the
    // container at the start): the steps below are the start's and after.
    let id = run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("worker", &command),
    )
    .await;

    // `kill`: the stop signal was sent, Wharf died before seeing the exit.
    std::fs::write(&marker, format!("kill\n{}\n", daemon.pid())).unwrap();
    let stop = StopContainerRequest {
        container_id: id.clone(),
        timeout: 10,
    };
    assert!(client.stop_container(stop.clone()).await.is_err());
    daemon.kill9();
    daemon.spawn().await;
    let mut client = daemon.runtime().await;
    client.stop_container(stop).await.unwrap();
    let stopped = status(&mut client, &id).await;
    assert_eq!(
        (stopped.state, stopped.exit_code),
        (ContainerState::ContainerExited as i32, 9),
        "the exit the container really had"
    );

    client
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();

    // `delete`: the monitor deletes the runtime's container once it
    // exited; the daemon dies then, before it learns of the exit.
    let id = run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("deleted", &command),
    )
    .await;
    std::fs::write(&marker, format!("delete\n{}\n", daemon.pid())).unwrap();
    let stop = StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    };
    assert!(client.stop_container(stop).await.is_err());
    daemon.kill9();
    daemon.spawn().await;
    let mut client = daemon.runtime().await;
    let stopped = wait_exited(&mut client, &id).await;
    assert_eq!(stopped.exit_code, 137, "{stopped:?}");
    let remove = RemoveContainerRequest {
        container_id: id.clone(),
    };
    client.remove_container(remove).await.unwrap();
    let gone = client
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    remove_pod(&mut client, &pod_id).await;
    assert!(mounts_below(&daemon.state_dir()).is_empty());
    assert_eq!(monitors_of(&daemon), 0);
    for own in ["containers", "runc"] {
        let left: Vec<_> = std::fs::read_dir(daemon.state_dir().join(own))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{own} holds {left:?}");
    }
    let records: Vec<_> = std::fs::read_dir(daemon.root().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(records.is_empty(), "records left: {records:?}");
}

/// A client that gives up on an ExecSync (kubelet's probe timing out on
/// its side, a ^C in crictl) leaves no process running in the container.
#[tokio::test]
async fn a_cancelled_exec_leaves_no_process_behind() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "cancelled-exec");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let config = container_config("host", &["sleep", "3600"]);
    let id = run_container(&mut client, &pod_id, &pod, config).await;

    let argv = ["sleep", "4242"];
    let request = ExecSyncRequest {
        container_id: id.clone(),
        cmd: argv.iter().map(|s| s.to_string()).collect(),
        timeout: 0,
    };
    let mut exec_client = daemon.runtime().await;
    let call = tokio::spawn(async move { exec_client.exec_sync(request).await });
    wait_until("the exec runs", || processes_running(&argv).len() == 1).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    wait_until("the cancelled exec's process is killed", || {
        processes_running(&argv).is_empty()
    })
    .await;
    let still = exec(&mut client, &id, &["true"]).await;
    assert_eq!(still.exit_code, 0, "the container serves execs afterwards");
    remove_pod(&mut client, &pod_id).await;
}

/// The daemon killed while a CNI plugin adds the pod to its network: after
/// a restart the pod is gone, its network was deleted (DEL ran), no
/// namespace pin or mount is left, and its name can be used again.
#[tokio::test]
async fn a_crash_during_pod_network_setup_is_undone() {
    let plugins = tempfile::tempdir().unwrap();
    let marker = plugins.path().join("crash-in-add");
    let deletes = plugins.path().join("deletes.log");
    let plugin = plugins.path().join("wharf-crash");
    write_script(
        &plugin,
        &format!(
            "#!/bin/sh\ncat >/dev/null\ncase \"$CNI_COMMAND\" in\nADD) if [ -s {marker:?} ]; then pid=$(cat {marker:?}); rm -f {marker:?}; kill -9 \"$pid\"; fi\n    echo '{{\"cniVersion\":\"1.0.0\"}}';;\nDEL) echo \"$CNI_CONTAINERID\" >> {deletes:?};;\nVERSION) echo '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\"]}}';;\nesac\n"
        ),
    );
    let mut daemon = Daemon::start(&format!(
        "bin_dirs = [{:?}, \"/usr/lib/cni\", \"/opt/cni/bin\"]\n",
        plugins.path()
    ))
    .await;
    std::fs::write(
        daemon.cni_dir().join("10-crash.conflist"),
        r#"{"cniVersion":"1.0.0","name":"wharf-test-crash","plugins":[{"type":"loopback"},{"type":"wharf-crash"}]}"#,
    )
    .unwrap();
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "network-crash");
    std::fs::write(&marker, daemon.pid().to_string()).unwrap();
    let lost = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await;
    assert!(lost.is_err(), "the daemon died during the network setup");
    daemon.kill9();
    daemon.spawn().await;
    let mut client = daemon.runtime().await;

    let pods = list_pods(&mut client).await;
    assert!(pods.is_empty(), "the unrecorded pod is gone: {pods:?}");
    let deleted = std::fs::read_to_string(&deletes).unwrap_or_default();
    assert_eq!(
        deleted.lines().count(),
        1,
        "its network was deleted: {deleted:?}"
    );
    assert!(mounts_below(&daemon.state_dir()).is_empty());
    let left: Vec<_> = std::fs::read_dir(daemon.state_dir().join("sandboxes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "sandbox state left: {left:?}");

    // Its name is free again (on a network that works).
    std::fs::write(
        daemon.cni_dir().join("10-crash.conflist"),
        LOOPBACK_CONFLIST,
    )
    .unwrap();
    let pod_id = run_pod(&mut client, pod).await;
    remove_pod(&mut client, &pod_id).await;
}

/// A RunPodSandbox whose caller goes away during CNI ADD (kubelet's
/// deadline passed) still runs to its end: the pod is made and listed,
/// and it stops and goes like any other. Cut short, it would skip its undo
/// and leave the pinned namespaces, the state directory and the name behind.
#[tokio::test]
async fn a_cancelled_run_pod_sandbox_runs_to_its_end() {
    let plugins = tempfile::tempdir().unwrap();
    let (entered, gate) = (plugins.path().join("entered"), plugins.path().join("gate"));
    let plugin = plugins.path().join("wharf-gated");
    write_script(
        &plugin,
        &format!(
            "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\ntouch {entered:?}\nwhile [ ! -e {gate:?} ]; do sleep 0.02; done\necho '{{\"cniVersion\": \"1.0.0\", \"interfaces\": [{{\"name\": \"eth0\"}}], \"ips\": [{{\"address\": \"10.99.0.5/24\", \"interface\": 0}}]}}'\n"
        ),
    );
    let daemon = daemon_with(&format!("bin_dirs = [{:?}]", plugins.path())).await;
    let conflist =
        r#"{"cniVersion": "1.0.0", "name": "gated", "plugins": [{"type": "wharf-gated"}]}"#;
    std::fs::write(daemon.cni_dir().join("10-gated.conflist"), conflist).unwrap();
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "cancelled");

    let mut caller = client.clone();
    let request = RunPodSandboxRequest {
        config: Some(pod.clone()),
        runtime_handler: String::new(),
    };
    let call = tokio::spawn(async move { caller.run_pod_sandbox(request).await });
    poll_until("CNI ADD to begin", Duration::from_secs(10), || {
        entered.exists().then_some(())
    })
    .await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    std::fs::write(&gate, "").unwrap();

    let mut pods = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pods.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the cancelled run never finished: {}",
            std::fs::read_to_string(daemon.dir.path().join("wharf.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        pods = list_pods(&mut client).await;
    }
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);
    assert_eq!(pods[0].metadata.as_ref().unwrap().name, "cancelled");
    remove_pod(&mut client, &pods[0].id).await;
    assert!(std::fs::read_dir(daemon.state_dir().join("sandboxes"))
        .map(|dir| dir.count() == 0)
        .unwrap_or(true));
}
