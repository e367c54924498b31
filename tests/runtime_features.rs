//! What the runtime advertises and honours beyond the basics: recursive
//! read-only mounts, the supplemental-groups policy and the identity
//! reported in ContainerStatus, runtime handlers, and a state directory of
//! any length. Real runc, real containers.

mod common;

use std::path::{Path, PathBuf};

use common::pods::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;
use tonic::Code;

/// A host directory with a tmpfs mounted at `sub`, unmounted on drop.
struct VolumeWithSubmount {
    dir: tempfile::TempDir,
}

impl VolumeWithSubmount {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for VolumeWithSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(
            &self.dir.path().join("sub"),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}

fn volume(host: &Path, readonly: bool, rro: bool, propagation: MountPropagation) -> Mount {
    Mount {
        container_path: "/mnt".into(),
        host_path: host.display().to_string(),
        readonly,
        recursive_read_only: rro,
        propagation: propagation as i32,
        ..Default::default()
    }
}

async fn run_with_mount(
    client: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    pod: &PodSandboxConfig,
    name: &str,
    mount: Mount,
) -> Result<String, tonic::Status> {
    let mut config = container_config(name, &["sleep", "3600"]);
    config.mounts = vec![mount];
    let id = create(client, pod_id, pod, config).await?;
    start(client, &id).await;
    Ok(id)
}

/// Exit code and stderr of `touch` on the volume's submount.
async fn touch_submount(client: &mut RuntimeServiceClient<Channel>, id: &str) -> (i32, String) {
    let reply = exec(client, id, &["touch", "/mnt/sub/file"]).await;
    (
        reply.exit_code,
        String::from_utf8_lossy(&reply.stderr).into_owned(),
    )
}

#[tokio::test]
async fn recursive_read_only_mounts() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;

    let status = client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let default_handler = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .expect("the default handler is listed under the empty name");
    assert!(
        default_handler
            .features
            .as_ref()
            .is_some_and(|f| f.recursive_read_only_mounts),
        "runc 1.1.5 has rro: {status:?}"
    );

    let pod = pod_config(&daemon, "rro");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let host = VolumeWithSubmount::new();

    // Plain read-only: the volume is read-only, the submount beneath it is
    // not (a non-recursive bind keeps the submount's own flags).
    let plain = run_with_mount(
        &mut client,
        &pod_id,
        &pod,
        "plain-ro",
        volume(
            host.path(),
            true,
            false,
            MountPropagation::PropagationPrivate,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        touch_submount(&mut client, &plain).await,
        (0, String::new())
    );
    let top = exec(&mut client, &plain, &["touch", "/mnt/top"]).await;
    assert_ne!(top.exit_code, 0, "the volume itself is read-only");

    // Recursive: the submount is read-only too.
    let recursive = run_with_mount(
        &mut client,
        &pod_id,
        &pod,
        "recursive-ro",
        volume(
            host.path(),
            true,
            true,
            MountPropagation::PropagationPrivate,
        ),
    )
    .await
    .unwrap();
    let (code, stderr) = touch_submount(&mut client, &recursive).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(
        host.path().join("sub/file").exists(),
        "the plain one wrote it"
    );

    // What kubelet and containerd refuse.
    for (name, mount) in [
        (
            "rro-writable",
            volume(
                host.path(),
                false,
                true,
                MountPropagation::PropagationPrivate,
            ),
        ),
        (
            "rro-host-to-container",
            volume(
                host.path(),
                true,
                true,
                MountPropagation::PropagationHostToContainer,
            ),
        ),
        (
            "rro-bidirectional",
            volume(
                host.path(),
                true,
                true,
                MountPropagation::PropagationBidirectional,
            ),
        ),
    ] {
        let err = run_with_mount(&mut client, &pod_id, &pod, name, mount)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
    }
    let listed = client
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2, "a refused container leaves nothing behind");

    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    remove_pod(&mut client, &pod_id).await;
}

/// `id -G` in a container running as wharfuser (uid and gid 1234, member of
/// wharfextra 5678 in the image's /etc/group) with supplemental group 4321,
/// and the identity ContainerStatus reports.
async fn groups_under(
    client: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    pod: &PodSandboxConfig,
    name: &str,
    policy: SupplementalGroupsPolicy,
) -> (Vec<u32>, Option<LinuxContainerUser>) {
    let mut config = container_config(name, &["sleep", "3600"]);
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1234 }),
            supplemental_groups: vec![4321],
            supplemental_groups_policy: policy as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(client, pod_id, pod, config).await.unwrap();
    start(client, &id).await;
    let reply = exec(client, &id, &["id", "-G"]).await;
    assert_eq!(reply.exit_code, 0, "{reply:?}");
    let mut groups: Vec<u32> = String::from_utf8(reply.stdout)
        .unwrap()
        .split_whitespace()
        .map(|gid| gid.parse().unwrap())
        .collect();
    groups.sort_unstable();
    let user = status(client, &id).await.user.and_then(|user| user.linux);
    (groups, user)
}

#[tokio::test]
async fn supplemental_groups_policy_merge_and_strict() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let features = client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .features
        .unwrap();
    assert!(features.supplemental_groups_policy);

    let pod = pod_config(&daemon, "groups");
    let pod_id = run_pod(&mut client, pod.clone()).await;

    let (groups, user) = groups_under(
        &mut client,
        &pod_id,
        &pod,
        "merge",
        SupplementalGroupsPolicy::Merge,
    )
    .await;
    assert_eq!(groups, [1234, 4321, 5678], "the image's group is merged in");
    assert_eq!(
        user,
        Some(LinuxContainerUser {
            uid: 1234,
            gid: 1234,
            supplemental_groups: vec![1234, 4321, 5678],
        })
    );

    let (groups, user) = groups_under(
        &mut client,
        &pod_id,
        &pod,
        "strict",
        SupplementalGroupsPolicy::Strict,
    )
    .await;
    assert_eq!(
        groups,
        [1234, 4321],
        "only the pod's groups and the primary one"
    );
    assert_eq!(
        user,
        Some(LinuxContainerUser {
            uid: 1234,
            gid: 1234,
            supplemental_groups: vec![1234, 4321],
        })
    );

    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    remove_pod(&mut client, &pod_id).await;
}

/// A runtime that logs its arguments, one call a line, then is runc.
fn logging_runc(dir: &Path) -> (PathBuf, PathBuf) {
    let calls = dir.join("calls");
    let wrapper = dir.join("logging-runc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec /usr/bin/runc \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    set_mode(&wrapper, 0o755);
    (wrapper, calls)
}

#[tokio::test]
async fn runtime_handlers_from_the_config() {
    let tools = tempfile::tempdir().unwrap();
    let (wrapper, calls) = logging_runc(tools.path());
    let daemon = daemon_with(&format!(
        "[runtime.handlers.logged]\npath = {wrapper:?}\noptions = [\"--rootless=false\"]\n"
    ))
    .await;
    let mut client = daemon.runtime().await;

    let handlers = client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers;
    let names: Vec<&str> = handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["", "runc", "logged"]);
    assert!(handlers
        .iter()
        .all(|h| h.features.as_ref().unwrap().recursive_read_only_mounts));
    let probes = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(probes, "features\n", "probed once at start-up");

    let unknown = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config(&daemon, "unknown")),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains(r#""kata""#) && unknown.message().contains(r#""logged""#),
        "{unknown:?}"
    );
    assert!(client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());

    let pod = pod_config(&daemon, "logged");
    let pod_id = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: "logged".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(
        pod_status(&mut client, &pod_id).await.runtime_handler,
        "logged"
    );
    let id = run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("app", &["sleep", "3600"]),
    )
    .await;
    let reply = exec(&mut client, &id, &["echo", "hello"]).await;
    assert_eq!(reply.stdout, b"hello\n");
    // Verbose status names the handler's runtime, not the default one.
    let status = client
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    assert_eq!(
        info["runtimeOptions"]["binaryName"]
            .as_str()
            .map(std::path::Path::new),
        Some(wrapper.as_path()),
        "{info}"
    );

    let handler_root = daemon.state_dir().join("runtimes/logged");
    let calls_text = std::fs::read_to_string(&calls).unwrap();
    // The monitor starts a container with one `run --detach`.
    for command in ["run", "exec"] {
        let call = calls_text
            .lines()
            .find(|line| line.contains(&format!(" {command} ")))
            .unwrap_or_else(|| panic!("no {command} through the handler: {calls_text}"));
        assert!(
            call.starts_with(&format!(
                "--root {} --rootless=false ",
                handler_root.display()
            )),
            "{call}"
        );
    }
    assert!(handler_root.join(&id).is_dir(), "the handler's own --root");

    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    remove_pod(&mut client, &pod_id).await;
    assert!(
        !handler_root.join(&id).exists(),
        "deleted through the handler"
    );
}

/// A state directory far deeper than a socket address could name: the
/// monitor's control socket, a terminal's console socket and recovery after
/// a daemon kill all work below it.
#[tokio::test]
async fn a_deep_state_dir_runs_and_recovers_containers() {
    let deep = format!("{}/{}/state", "a".repeat(80), "b".repeat(80));
    let mut daemon = common::Daemon::start_with_state_dir("", Some(&deep)).await;
    std::fs::write(daemon.cni_dir().join("10-lo.conflist"), LOOPBACK_CONFLIST).unwrap();
    pull_busybox(&daemon).await;
    assert!(daemon.state_dir().as_os_str().len() > 107);
    let mut client = daemon.runtime().await;

    let pod = pod_config(&daemon, "deep");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let plain = run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("plain", &["sleep", "3600"]),
    )
    .await;
    let terminal = create(
        &mut client,
        &pod_id,
        &pod,
        ContainerConfig {
            tty: true,
            ..container_config("terminal", &["sh", "-c", "tty; sleep 3600"])
        },
    )
    .await
    .unwrap();
    start(&mut client, &terminal).await;
    let log = Path::new(&pod.log_directory).join("terminal/0.log");
    wait_for_log(&log, "/dev/pts/").await;
    let monitor_socket = daemon
        .state_dir()
        .join("containers")
        .join(&plain)
        .join("monitor.sock");
    assert!(
        monitor_socket.exists(),
        "the socket is where it always was: {}",
        monitor_socket.display()
    );

    daemon.kill9();
    daemon.spawn().await;
    let mut client = daemon.runtime().await;
    for id in [&plain, &terminal] {
        assert_eq!(
            status(&mut client, id).await.state,
            ContainerState::ContainerRunning as i32,
            "{id} recovered"
        );
    }
    let reply = exec(&mut client, &plain, &["echo", "still here"]).await;
    assert_eq!(reply.stdout, b"still here\n");
    // Stopping waits for the exit through the control socket.
    stop_container(&mut client, &plain, 0).await;
    let stopped = wait_exited(&mut client, &plain).await;
    assert_eq!(stopped.exit_code, 137);
    // Reopening the log is a control request too.
    client
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: terminal.clone(),
        })
        .await
        .unwrap();

    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    remove_pod(&mut client, &pod_id).await;
}
