//! CreateContainer records the container and readies its monitor; the
//! container runs (one `runc run --detach`) at StartContainer, as
//! containerd creates its task only then. So a failure only runc can see
//! (an entrypoint missing from the image) shows at StartContainer, and a
//! daemon restart between the two calls leaves a container that starts.

mod common;

use std::time::Duration;

use common::pods::*;
use common::poll_until;
use k8s_cri::v1::*;
use tonic::Code;

#[tokio::test]
async fn a_missing_entrypoint_fails_at_start_and_the_status_says_why() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "no-entrypoint");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let config = container_config("broken", &["/no/such/entrypoint"]);
    let id = create(&mut client, &pod_id, &pod, config).await.unwrap();
    assert_eq!(
        status(&mut client, &id).await.state,
        ContainerState::ContainerCreated as i32
    );

    let failed = client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert!(
        failed.message().contains("/no/such/entrypoint"),
        "{failed:?}"
    );
    assert_ne!(failed.code(), Code::Ok);
    let exited = status(&mut client, &id).await;
    assert_eq!(exited.state, ContainerState::ContainerExited as i32);
    assert_eq!(exited.started_at, 0, "never started: {exited:?}");
    assert!(exited.message.contains("/no/such/entrypoint"), "{exited:?}");
    client
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    remove_pod(&mut client, &pod_id).await;
}

#[tokio::test]
async fn a_container_created_before_a_restart_starts_after_it() {
    let mut daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "restart-between");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let config = container_config("waiting", &["sleep", "3600"]);
    let id = create(&mut client, &pod_id, &pod, config).await.unwrap();
    drop(client);
    daemon.kill9();
    daemon.spawn().await;

    let mut client = daemon.runtime().await;
    assert_eq!(
        status(&mut client, &id).await.state,
        ContainerState::ContainerCreated as i32
    );
    start(&mut client, &id).await;
    let running = status(&mut client, &id).await;
    assert_eq!(running.state, ContainerState::ContainerRunning as i32);
    let ran = exec(&mut client, &id, &["true"]).await;
    assert_eq!(ran.exit_code, 0);
    stop_container(&mut client, &id, 0).await;
    assert_eq!(
        status(&mut client, &id).await.exit_code,
        137,
        "killed by the stop"
    );
    remove_pod(&mut client, &pod_id).await;
}

#[tokio::test]
async fn a_created_container_stopped_before_its_start_never_runs() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "stopped-before-start");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let config = container_config("never", &["sleep", "3600"]);
    let id = create(&mut client, &pod_id, &pod, config).await.unwrap();
    stop_container(&mut client, &id, 0).await;
    let stopped = status(&mut client, &id).await;
    assert_eq!(
        (stopped.state, stopped.exit_code, stopped.started_at),
        (ContainerState::ContainerExited as i32, 137, 0)
    );
    let refused = client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    remove_pod(&mut client, &pod_id).await;
}

/// The monitor deletes the runtime's container when its init exits, and
/// only then reports the exit. A StopContainer in between finds the
/// container half-deleted, and the runtime's kill fails with whatever it
/// trips on (runc: "lstat /sys/fs/cgroup/...: no such file or
/// directory", seen in critest). The stop waits for the exit report and
/// succeeds. A wrapper holds the delete open and fails kills meanwhile, as
/// runc does in that window.
#[tokio::test]
async fn a_stop_while_the_monitor_deletes_an_exited_container_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let marker = |name: &str| dir.path().join(name);
    let (hold, deleting, refused) = (marker("hold"), marker("deleting"), marker("refused"));
    let wrapper = marker("runc-wrapper");
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\nfor arg; do\n  if [ \"$arg\" = delete ] && [ -e {hold:?} ]; then\n    touch {deleting:?}\n    while [ -e {hold:?} ]; do sleep 0.05; done\n  fi\n  if [ \"$arg\" = kill ] && [ -e {hold:?} ] && [ -e {deleting:?} ]; then\n    touch {refused:?}\n    echo 'lstat /sys/fs/cgroup/devices/x: no such file or directory' >&2; exit 1\n  fi\ndone\nexec runc \"$@\"\n"
        ),
    );
    let daemon = daemon_with(&format!("[runtime]\npath = {wrapper:?}\n")).await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "stop-while-deleting");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    std::fs::write(&hold, b"").unwrap();
    let config = container_config("brief", &["true"]);
    let id = run_container(&mut client, &pod_id, &pod, config).await;
    let limit = Duration::from_secs(20);
    poll_until("the monitor's delete", limit, || {
        deleting.exists().then_some(())
    })
    .await;
    assert_eq!(
        status(&mut client, &id).await.state,
        ContainerState::ContainerRunning as i32,
        "the exit is reported only once the delete ends"
    );
    let mut stopper = daemon.runtime().await;
    let stop_id = id.clone();
    let stop = tokio::spawn(async move {
        stopper
            .stop_container(StopContainerRequest {
                container_id: stop_id,
                timeout: 0,
            })
            .await
    });
    poll_until("the kill refused", limit, || refused.exists().then_some(())).await;
    std::fs::remove_file(&hold).unwrap();
    stop.await.unwrap().expect("the stop succeeds");
    let exited = status(&mut client, &id).await;
    assert_eq!(exited.state, ContainerState::ContainerExited as i32);
    assert_eq!(exited.exit_code, 0);
    remove_pod(&mut client, &pod_id).await;
}
