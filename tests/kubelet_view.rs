//! What a real kubelet (v1.34, standalone on Wharf: hack/kubelet-standalone.sh)
//! showed wrong or empty, driven through the CRI the way kubelet drives it.

mod common;

use common::pods::*;
use k8s_cri::v1::*;

/// kubelet pulls by tag, then creates the container with the image's ID and
/// the tag as `user_specified_image`. Pod status shows what ContainerStatus
/// names: the tag, as on containerd, not the ID.
#[tokio::test]
async fn container_status_names_the_image_by_tag_when_created_by_id() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let tag = busybox();
    let image_id = daemon
        .images()
        .await
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: tag.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .expect("busybox is pulled")
        .id;
    assert!(image_id.starts_with("sha256:"), "{image_id}");

    let pod = pod_config(&daemon, "by-id");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let mut config = container_config("main", &["sleep", "3600"]);
    config.image = Some(ImageSpec {
        image: image_id.clone(),
        user_specified_image: tag.clone(),
        ..Default::default()
    });
    let id = create(&mut client, &pod_id, &pod, config).await.unwrap();
    let status = client
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let image = status.image.unwrap();
    assert_eq!(image.image, tag);
    assert_eq!(image.user_specified_image, tag);
    assert_eq!(status.image_id, image_id);
    assert!(
        status.image_ref.contains("@sha256:"),
        "{}",
        status.image_ref
    );

    // ListContainers keeps the image as it was asked for, as containerd.
    let listed = client
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                id: id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed[0].image.as_ref().unwrap().image, image_id);
    remove_pod(&mut client, &pod_id).await;
}

/// With PodAndContainerStatsFromCRI, kubelet's summary has a pod's `io`
/// only when the runtime sends one (cAdvisor always has it): present, with
/// PSI where the kernel gives it (cgroup v2).
#[tokio::test]
async fn running_pods_and_containers_report_io() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let mut pod = pod_config(&daemon, "io");
    pod.linux.as_mut().unwrap().cgroup_parent = format!("/wharf-test/io-{}", std::process::id());
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let config = container_config("main", &["sleep", "3600"]);
    run_container(&mut client, &pod_id, &pod, config).await;
    let stats = pod_sandbox_stats(&daemon, &pod_id).await;
    let linux = stats.linux.unwrap();
    assert!(linux.io.expect("pod io").timestamp > 0);
    let container = &linux.containers[0];
    assert!(container.io.as_ref().expect("container io").timestamp > 0);
    remove_pod(&mut client, &pod_id).await;
}

/// PodSandboxStats in wharf's own (v1.34) types: the k8s-cri client's
/// older messages have no `io`.
async fn pod_sandbox_stats(daemon: &common::Daemon, pod_id: &str) -> wharf::api::PodSandboxStats {
    use wharf::api::{PodSandboxStatsRequest, PodSandboxStatsResponse};
    let mut grpc = tonic::client::Grpc::new(daemon.channel().await);
    grpc.ready().await.unwrap();
    let codec =
        tonic_prost::ProstCodec::<PodSandboxStatsRequest, PodSandboxStatsResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/runtime.v1.RuntimeService/PodSandboxStats",
    );
    let request = tonic::Request::new(PodSandboxStatsRequest {
        pod_sandbox_id: pod_id.into(),
    });
    grpc.unary(request, path, codec)
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
}
