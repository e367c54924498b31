//! Pods and containers through the socket: the requests and waits most
//! tests share.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

use super::{image_spec, pull_request, registry, Daemon};

/// Pod networking that touches nothing outside the pod's namespace.
pub const LOOPBACK_CONFLIST: &str =
    r#"{"cniVersion":"1.0.0","name":"wharf-test-lo","plugins":[{"type":"loopback"}]}"#;

/// A daemon with a loopback-only CNI network and busybox pulled.
pub async fn daemon() -> Daemon {
    daemon_with("").await
}

/// [`daemon`] with `extra_config` appended to its config file.
pub async fn daemon_with(extra_config: &str) -> Daemon {
    let daemon = loopback_daemon(extra_config).await;
    pull_busybox(&daemon).await;
    daemon
}

/// A daemon with a loopback-only CNI network and no image.
pub async fn loopback_daemon(extra_config: &str) -> Daemon {
    let daemon = Daemon::start(extra_config).await;
    std::fs::write(daemon.cni_dir().join("10-lo.conflist"), LOOPBACK_CONFLIST).unwrap();
    daemon
}

/// Pulls the test busybox; returns its name.
pub async fn pull_busybox(daemon: &Daemon) -> String {
    let image = busybox();
    daemon
        .images()
        .await
        .pull_image(pull_request(&image, None))
        .await
        .unwrap();
    image
}

pub fn busybox() -> String {
    registry().image("wharf-test/busybox:latest")
}

pub fn pod_config(daemon: &Daemon, name: &str) -> PodSandboxConfig {
    let log_directory = daemon.dir.path().join("logs").join(name);
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: log_directory.display().to_string(),
        dns_config: Some(DnsConfig {
            servers: vec!["192.0.2.53".into()],
            searches: vec!["svc.cluster.test".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".into(), name.into())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/wharf-test".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_config(name: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(image_spec(&busybox())),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("container".into(), name.into())]),
        ..Default::default()
    }
}

pub async fn run_pod(
    client: &mut RuntimeServiceClient<Channel>,
    config: PodSandboxConfig,
) -> String {
    let request = RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    };
    client
        .run_pod_sandbox(request)
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id
}

pub async fn create(
    client: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    let request = CreateContainerRequest {
        pod_sandbox_id: pod_id.into(),
        config: Some(config),
        sandbox_config: Some(pod.clone()),
    };
    client
        .create_container(request)
        .await
        .map(|r| r.into_inner().container_id)
}

/// CreateContainer then StartContainer; the container's ID.
pub async fn run_container(
    client: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let id = create(client, pod_id, pod, config).await.unwrap();
    start(client, &id).await;
    id
}

pub async fn pod_status(
    client: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
) -> PodSandboxStatus {
    let request = PodSandboxStatusRequest {
        pod_sandbox_id: pod_id.into(),
        verbose: true,
    };
    let response = client.pod_sandbox_status(request).await.unwrap();
    response.into_inner().status.unwrap()
}

pub async fn remove_pod(client: &mut RuntimeServiceClient<Channel>, pod_id: &str) {
    let request = RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.into(),
    };
    client.remove_pod_sandbox(request).await.unwrap();
}

/// StopContainer with `timeout` seconds before SIGKILL; it must succeed.
pub async fn stop_container(client: &mut RuntimeServiceClient<Channel>, id: &str, timeout: i64) {
    let request = StopContainerRequest {
        container_id: id.into(),
        timeout,
    };
    client.stop_container(request).await.unwrap();
}

pub async fn remove_container(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    let request = RemoveContainerRequest {
        container_id: id.into(),
    };
    client.remove_container(request).await.unwrap();
}

pub async fn start(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    client
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap();
}

pub async fn status(client: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
    let request = ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    };
    client
        .container_status(request)
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

pub async fn wait_exited(client: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status(client, id).await;
        if status.state == ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn exec(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
) -> ExecSyncResponse {
    let request = ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 10,
    };
    client.exec_sync(request).await.unwrap().into_inner()
}

pub async fn wait_for_log(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in {}: {log:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every pod the daemon lists.
pub async fn list_pods(client: &mut RuntimeServiceClient<Channel>) -> Vec<PodSandbox> {
    client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
}

/// `text` as an executable script at `path`: a fake CNI plugin or a
/// wrapper around the runtime.
pub fn write_script(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    set_mode(path, 0o755);
}
