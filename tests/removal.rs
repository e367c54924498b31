//! Removing containers: the rootfs goes when the container exits, the
//! writable layer once RemoveContainer has answered (or at the next start
//! after a crash), and image layers a removed image left to its containers
//! with the last of them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pods::*;
use common::{image_spec, mounts_below, poll_until};
use k8s_cri::v1::*;

const WAIT: Duration = Duration::from_secs(10);

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[tokio::test]
async fn the_rootfs_goes_at_exit_and_the_writable_layer_after_removal() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "removal");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let config = container_config("writer", &["sleep", "1000"]);
    let id = run_container(&mut client, &pod_id, &pod, config).await;
    let wrote = exec(&mut client, &id, &["sh", "-c", "seq 100000 > /written"]).await;
    assert_eq!(wrote.exit_code, 0, "{wrote:?}");
    let state = daemon.state_dir().join("containers").join(&id);
    let record = daemon.root().join("containers").join(&id);
    assert!(
        !mounts_below(&state).is_empty(),
        "a running container's rootfs is mounted"
    );
    assert!(record.join("upper/written").exists());

    stop_container(&mut client, &id, 0).await;
    poll_until(
        "the exited container's rootfs to be unmounted",
        WAIT,
        || mounts_below(&state).is_empty().then_some(()),
    )
    .await;
    // Its status and its writable layer stay until it is removed.
    let exited = status(&mut client, &id).await;
    assert_eq!(exited.state, ContainerState::ContainerExited as i32);
    assert!(record.join("upper/written").exists());

    remove_container(&mut client, &id).await;
    assert!(
        !record.exists(),
        "the record is gone when RemoveContainer answers"
    );
    assert!(!state.exists());
    let containers = daemon.root().join("containers");
    poll_until("the writable layer to be deleted", WAIT, || {
        entries(&containers).is_empty().then_some(())
    })
    .await;
    remove_pod(&mut client, &pod_id).await;
}

#[tokio::test]
async fn a_writable_layer_left_by_a_crash_is_deleted_at_the_next_start() {
    let mut daemon = daemon().await;
    let containers = daemon.root().join("containers");
    // What a crash between RemoveContainer's rename and the deletion
    // leaves: a temporary beside the records, with a layer in it.
    let leftover = containers.join(".tmp-1-2-3");
    std::fs::create_dir_all(leftover.join("upper/deep/er")).unwrap();
    std::fs::write(leftover.join("upper/deep/er/file"), b"left").unwrap();
    daemon.kill9();
    daemon.spawn().await;
    poll_until("the leftover to be deleted", WAIT, || {
        (!leftover.exists()).then_some(())
    })
    .await;
    assert!(
        entries(&containers).is_empty(),
        "{:?}",
        entries(&containers)
    );
}

#[tokio::test]
async fn layers_of_a_removed_image_go_with_the_last_container_using_them() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let mut images = daemon.images().await;
    let pod = pod_config(&daemon, "image-gone");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let first = run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("first", &["sleep", "1000"]),
    )
    .await;
    let second = run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("second", &["sleep", "1000"]),
    )
    .await;
    let layers = sorted(daemon.layer_entries());
    assert!(!layers.is_empty());

    images
        .remove_image(RemoveImageRequest {
            image: Some(image_spec(&busybox())),
        })
        .await
        .unwrap();
    assert_eq!(sorted(daemon.layer_entries()), layers, "layers in use stay");
    let ran = exec(&mut client, &first, &["true"]).await;
    assert_eq!(ran.exit_code, 0, "{ran:?}");

    for (id, layers_left) in [(&first, layers.clone()), (&second, vec![])] {
        remove_container(&mut client, id).await;
        assert_eq!(
            sorted(daemon.layer_entries()),
            layers_left,
            "after removing {id}"
        );
    }
    remove_pod(&mut client, &pod_id).await;
}
