//! What a client sees when it sends requests that are too large, malformed
//! or otherwise hostile: a clear status code, nothing created, and a
//! daemon that still answers.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::pods::{create, loopback_daemon, pull_busybox};
use common::{image_spec, pull_request, Daemon};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;
use tonic::Code;

/// kubelet's message limit, both ways.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

async fn daemon() -> Daemon {
    loopback_daemon("").await
}

/// A client with kubelet's limits instead of tonic's 4 MiB default.
async fn client(daemon: &Daemon) -> RuntimeServiceClient<Channel> {
    daemon
        .runtime()
        .await
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn pod_config(daemon: &Daemon, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: daemon
            .dir
            .path()
            .join("logs")
            .join(name)
            .display()
            .to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/wharf-test".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(image: &str, name: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(image_spec(image)),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn run_pod(
    client: &mut RuntimeServiceClient<Channel>,
    config: PodSandboxConfig,
) -> Result<String, tonic::Status> {
    let request = RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    };
    client
        .run_pod_sandbox(request)
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn pods(client: &mut RuntimeServiceClient<Channel>) -> Vec<PodSandbox> {
    client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
}

async fn containers(client: &mut RuntimeServiceClient<Channel>) -> Vec<Container> {
    client
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
}

/// The daemon still serves after whatever came before.
async fn still_answers(client: &mut RuntimeServiceClient<Channel>) {
    let version = client
        .version(VersionRequest::default())
        .await
        .expect("the daemon answers after the hostile request")
        .into_inner();
    assert_eq!(version.runtime_name, "wharf");
}

/// `status` has `code` and a message that does not echo a huge input.
fn assert_refused(status: tonic::Status, code: Code, what: &str) {
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert!(
        status.message().len() < 1000,
        "{what}: {} bytes of message",
        status.message().len()
    );
}

fn entries(n: usize, value_bytes: usize) -> HashMap<String, String> {
    (0..n)
        .map(|i| (format!("example.com/key-{i}"), "v".repeat(value_bytes)))
        .collect()
}

#[tokio::test]
async fn huge_ids_are_refused_without_being_echoed() {
    let daemon = daemon().await;
    let mut client = client(&daemon).await;
    let huge = "a".repeat(100_000);

    let status = client
        .container_status(ContainerStatusRequest {
            container_id: huge.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_refused(status, Code::InvalidArgument, "ContainerStatus");
    let stop = client
        .stop_container(StopContainerRequest {
            container_id: huge.clone(),
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert_refused(stop, Code::InvalidArgument, "StopContainer");
    let pod = client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: huge.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_refused(pod, Code::InvalidArgument, "PodSandboxStatus");
    let exec = client
        .exec_sync(ExecSyncRequest {
            container_id: huge.clone(),
            cmd: vec!["true".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_refused(exec, Code::InvalidArgument, "ExecSync");
    let list = client
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                id: huge.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_refused(list, Code::InvalidArgument, "ListContainers filter");
    let pull = daemon
        .images()
        .await
        .pull_image(pull_request(&format!("example.com/{huge}"), None))
        .await
        .unwrap_err();
    assert_refused(pull, Code::InvalidArgument, "PullImage");

    // A 64-character ID is an ID: unknown, not invalid.
    let unknown = client
        .container_status(ContainerStatusRequest {
            container_id: "f".repeat(64),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // A huge pod name is refused before it reaches any message or path.
    let mut config = pod_config(&daemon, "named");
    config.metadata.as_mut().unwrap().name = huge.clone();
    let err = run_pod(&mut client, config).await.unwrap_err();
    assert_refused(err, Code::InvalidArgument, "RunPodSandbox name");
    assert!(pods(&mut client).await.is_empty());
    still_answers(&mut client).await;
}

#[tokio::test]
async fn oversized_labels_and_annotations_are_refused_and_nothing_is_created() {
    let daemon = daemon().await;
    let image = pull_busybox(&daemon).await;
    let mut client = client(&daemon).await;

    // Kubernetes' own maximum (256 KiB of annotations) is fine.
    let mut fine = pod_config(&daemon, "fine");
    fine.annotations = entries(4, 60 << 10);
    let pod_id = run_pod(&mut client, fine.clone()).await.unwrap();

    let mut annotated = pod_config(&daemon, "annotated");
    annotated.annotations = entries(3, 300 << 10);
    let err = run_pod(&mut client, annotated).await.unwrap_err();
    assert_refused(err, Code::InvalidArgument, "pod annotations bytes");
    let mut labelled = pod_config(&daemon, "labelled");
    labelled.labels = entries(5000, 1);
    let err = run_pod(&mut client, labelled).await.unwrap_err();
    assert_refused(err, Code::InvalidArgument, "pod label count");
    assert!(names_are(&pods(&mut client).await, &["fine"]));

    let mut container = container_config(&image, "c", &["true"]);
    container.labels = entries(2, 200 << 10);
    let err = create(&mut client, &pod_id, &fine, container)
        .await
        .unwrap_err();
    assert_refused(err, Code::InvalidArgument, "container labels");
    assert!(containers(&mut client).await.is_empty());
    still_answers(&mut client).await;
}

/// Whether `pods` are exactly the ones named.
fn names_are(pods: &[PodSandbox], names: &[&str]) -> bool {
    let mut found: Vec<&str> = pods
        .iter()
        .map(|p| p.metadata.as_ref().unwrap().name.as_str())
        .collect();
    found.sort();
    found == names
}

#[tokio::test]
async fn a_list_too_large_for_one_message_is_resource_exhausted_and_streams_whole() {
    let daemon = daemon().await;
    let mut client = client(&daemon).await;
    // Each pod carries the most labels and annotations allowed: 768 KiB.
    // 24 of them exceed one 16 MiB message.
    let mut ids = Vec::new();
    for i in 0..24 {
        let mut config = pod_config(&daemon, &format!("big-{i}"));
        config.labels = entries(4, (64 << 10) - 32);
        config.annotations = entries(8, (64 << 10) - 32);
        ids.push(run_pod(&mut client, config).await.unwrap());
    }
    let err = client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("filter"), "{}", err.message());

    // A filter narrows it to what fits.
    let one = client
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                id: ids[3].clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, ids[3]);

    // The stream carries them all, in messages that fit.
    let messages = stream_pod_sandboxes(&daemon).await;
    let streamed: usize = messages.iter().map(|m| m.pod_sandboxes.len()).sum();
    let messages = messages.len();
    assert_eq!(streamed, 24);
    assert!(messages >= 2, "{messages} messages");
    still_answers(&mut client).await;
}

/// StreamPodSandboxes (the k8s-cri client predates it), every message.
async fn stream_pod_sandboxes(daemon: &Daemon) -> Vec<wharf::api::StreamPodSandboxesResponse> {
    use wharf::api::{StreamPodSandboxesRequest, StreamPodSandboxesResponse};
    let mut grpc = tonic::client::Grpc::new(daemon.channel().await)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    grpc.ready().await.unwrap();
    let codec =
        tonic_prost::ProstCodec::<StreamPodSandboxesRequest, StreamPodSandboxesResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/runtime.v1.RuntimeService/StreamPodSandboxes",
    );
    let request = tonic::Request::new(StreamPodSandboxesRequest { filter: None });
    let mut stream = grpc
        .server_streaming(request, path, codec)
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        messages.push(message);
    }
    messages
}

#[tokio::test]
async fn relative_log_directory_is_refused() {
    let daemon = daemon().await;
    let mut client = client(&daemon).await;
    for directory in ["logs/pod", "./pod", "../escape"] {
        let mut config = pod_config(&daemon, "relative");
        config.log_directory = directory.into();
        let err = run_pod(&mut client, config).await.unwrap_err();
        assert!(err.message().contains("log_directory"), "{err:?}");
        assert_refused(err, Code::InvalidArgument, directory);
    }
    assert!(pods(&mut client).await.is_empty());
    // Nothing was made relative to the daemon's working directory either.
    assert!(!Path::new("logs/pod").exists());
    still_answers(&mut client).await;
}

#[tokio::test]
async fn big_exec_output_is_cut_to_fit_with_a_marker_and_leaves_no_files() {
    let daemon = daemon().await;
    let image = pull_busybox(&daemon).await;
    let mut client = client(&daemon).await;
    let pod = pod_config(&daemon, "exec");
    let pod_id = run_pod(&mut client, pod.clone()).await.unwrap();
    let id = create(
        &mut client,
        &pod_id,
        &pod,
        container_config(&image, "c", &["sleep", "3600"]),
    )
    .await
    .unwrap();
    client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();

    // 20 MB on each stream: 40 MB in all, far over one message.
    let script = "head -c 20000000 /dev/zero; head -c 20000000 /dev/zero >&2; exit 3";
    let reply = client
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 60,
        })
        .await
        .expect("big output still gets an answer")
        .into_inner();
    assert_eq!(reply.exit_code, 3);
    assert!(reply.stdout.len() + reply.stderr.len() < MAX_MESSAGE_BYTES);
    for (name, stream) in [("stdout", &reply.stdout), ("stderr", &reply.stderr)] {
        assert!(stream.len() > 4 << 20, "{name}: {} bytes", stream.len());
        assert!(stream.starts_with(&[0; 1024]), "{name}");
        let tail = String::from_utf8_lossy(&stream[stream.len() - 100..]).into_owned();
        assert!(tail.contains("output truncated"), "{name}: {tail:?}");
    }

    // Output that fits comes whole, unmarked.
    let small = client
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into(), "-c".into(), "head -c 3000000 /dev/zero".into()],
            timeout: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(small.stdout, vec![0; 3_000_000]);

    // Every exec removed its process spec, pid file and log.
    let runc_root = daemon.state_dir().join("runc");
    assert_eq!(exec_files(&runc_root), Vec::<String>::new());
    still_answers(&mut client).await;
}

fn exec_files(runc_root: &Path) -> Vec<String> {
    std::fs::read_dir(runc_root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".tmp-exec-"))
        .collect()
}

#[tokio::test]
async fn files_of_interrupted_execs_are_removed_at_start_up() {
    let mut daemon = daemon().await;
    daemon.kill9();
    let runc_root = daemon.state_dir().join("runc");
    std::fs::create_dir_all(&runc_root).unwrap();
    for suffix in ["json", "pid", "log"] {
        let name = format!(".tmp-exec-{}-123-0-42.{suffix}", "c".repeat(64));
        std::fs::write(runc_root.join(name), b"left by a killed daemon").unwrap();
    }
    // A container's runc state directory is not touched.
    std::fs::create_dir_all(runc_root.join("d".repeat(64))).unwrap();
    assert_eq!(exec_files(&runc_root).len(), 3);
    daemon.spawn().await;
    assert_eq!(exec_files(&runc_root), Vec::<String>::new());
    assert!(runc_root.join("d".repeat(64)).is_dir());
    still_answers(&mut client(&daemon).await).await;
}

#[tokio::test]
async fn a_socket_path_holding_another_file_is_left_alone() {
    // Short: the state directory's length is limited.
    let dir = tempfile::Builder::new().prefix("w").tempdir().unwrap();
    let file = dir.path().join("important.conf");
    std::fs::write(&file, b"do not delete").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("--socket")
        .arg(&file)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .output()
        .expect("running wharf");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"do not delete");
    // It refused before doing anything else.
    assert!(!dir.path().join("root").exists());
}

#[tokio::test]
async fn full_disks_and_impossible_paths_get_their_own_codes() {
    let daemon = daemon().await;
    let image = pull_busybox(&daemon).await;
    let mut client = client(&daemon).await;
    let pod = pod_config(&daemon, "paths");
    let pod_id = run_pod(&mut client, pod.clone()).await.unwrap();

    // A filesystem without a free inode: creating the host path fails
    // with ENOSPC. (Under the daemon's directory, unmounted on drop.)
    let full = daemon.dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &full,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k,nr_inodes=1"),
    )
    .unwrap();
    let mount = |host_path: String| {
        let mut config = container_config(&image, "m", &["true"]);
        config.mounts = vec![Mount {
            container_path: "/data".into(),
            host_path,
            ..Default::default()
        }];
        config
    };
    let err = create(
        &mut client,
        &pod_id,
        &pod,
        mount(full.join("sub/dir").display().to_string()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("No space left"), "{err:?}");

    // A path component longer than any file name: ENAMETOOLONG.
    let long = daemon.dir.path().join("x".repeat(300)).join("data");
    let err = create(
        &mut client,
        &pod_id,
        &pod,
        mount(long.display().to_string()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("too long"), "{err:?}");

    // A NUL byte in a device path.
    let mut device = container_config(&image, "d", &["true"]);
    device.devices = vec![Device {
        container_path: "/dev/x".into(),
        host_path: "/dev/nu\0ll".into(),
        permissions: "rwm".into(),
    }];
    let err = create(&mut client, &pod_id, &pod, device)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("NUL"), "{err:?}");

    assert!(containers(&mut client).await.is_empty());
    still_answers(&mut client).await;
}
