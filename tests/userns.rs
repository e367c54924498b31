//! Pods with user namespaces of their own (`userns_options` mode POD):
//! real runc, real ID-mapped mounts, busybox from the test registry.

mod common;

use std::os::unix::fs::MetadataExt;

use common::pods::*;
use common::{mounts_below, Daemon};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;
use tonic::Code;

/// Container IDs 0..65536 are host IDs 100000..165536.
const HOST_ROOT: u32 = 100_000;
const LENGTH: u32 = 65_536;

fn userns_options(mode: NamespaceMode, mappings: &[(u32, u32, u32)]) -> UserNamespace {
    let ids: Vec<IdMapping> = mappings
        .iter()
        .map(|&(container_id, host_id, length)| IdMapping {
            container_id,
            host_id,
            length,
        })
        .collect();
    UserNamespace {
        mode: mode as i32,
        uids: ids.clone(),
        gids: ids,
    }
}

fn with_userns(mut pod: PodSandboxConfig, userns: UserNamespace) -> PodSandboxConfig {
    let linux = pod.linux.get_or_insert_with(Default::default);
    linux
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(NamespaceOption {
        userns_options: Some(userns),
        ..Default::default()
    });
    pod
}

/// A daemon whose state directory a container's root (not the host's)
/// can pass through, as a user-namespaced pod needs.
async fn userns_daemon() -> Daemon {
    daemon_in_dir_of_mode(0o711).await
}

/// A daemon (busybox pulled) restarted after its directory, which holds
/// its state directory, got `mode`: the daemon probes it at start-up.
async fn daemon_in_dir_of_mode(mode: u32) -> Daemon {
    let mut daemon = daemon().await;
    set_mode(daemon.dir.path(), mode);
    daemon.sigterm().await;
    daemon.spawn().await;
    daemon
}

async fn default_handler_supports_userns(client: &mut RuntimeServiceClient<Channel>) -> bool {
    let status = client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .and_then(|h| h.features)
        .is_some_and(|f| f.user_namespaces)
}

#[tokio::test]
async fn a_userns_pod_sees_its_mapping_and_has_no_power_over_host_files() {
    let daemon = userns_daemon().await;
    let mut client = daemon.runtime().await;
    assert!(
        default_handler_supports_userns(&mut client).await,
        "user_namespaces not advertised: {}",
        daemon.log()
    );

    // A host volume, private to host root like most host directories, with
    // a file root owns and one owned by a host ID outside the mapping.
    let volume = tempfile::tempdir().unwrap();
    let owned_by_root = volume.path().join("root-file");
    std::fs::write(&owned_by_root, "root's\n").unwrap();
    let unmapped = volume.path().join("unmapped-file");
    std::fs::write(&unmapped, "not yours\n").unwrap();
    std::os::unix::fs::chown(&unmapped, Some(HOST_ROOT + LENGTH + 5), Some(0)).unwrap();
    set_mode(&unmapped, 0o600);

    let mut pod = with_userns(
        pod_config(&daemon, "userns"),
        userns_options(NamespaceMode::Pod, &[(0, HOST_ROOT, LENGTH)]),
    );
    pod.linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("net.core.somaxconn".into(), "1234".into());
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let mut config = container_config("main", &["sleep", "3600"]);
    let file_volume = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file_volume.path(), "a file volume\n").unwrap();
    set_mode(file_volume.path(), 0o644);
    config.mounts = vec![
        Mount {
            container_path: "/data".into(),
            host_path: volume.path().display().to_string(),
            ..Default::default()
        },
        Mount {
            container_path: "/etc/from-host".into(),
            host_path: file_volume.path().display().to_string(),
            ..Default::default()
        },
    ];
    let id = run_container(&mut client, &pod_id, &pod, config).await;
    // Reported as the container sees itself, not as host IDs.
    let user = status(&mut client, &id)
        .await
        .user
        .and_then(|u| u.linux)
        .unwrap();
    assert_eq!((user.uid, user.gid), (0, 0));
    // Nothing of the host stays mounted in the state directory once the
    // container has its mounts.
    assert_eq!(
        mounts_below(&daemon.state_dir())
            .iter()
            .filter(|m| m.contains("idmapped"))
            .count(),
        0
    );

    let file_owner = exec(&mut client, &id, &["stat", "-c", "%u %g", "/etc/from-host"]).await;
    assert_eq!(
        String::from_utf8_lossy(&file_owner.stdout).trim(),
        "0 0",
        "{file_owner:?}"
    );

    let uid_map = exec(&mut client, &id, &["cat", "/proc/self/uid_map"]).await;
    let fields: Vec<String> = String::from_utf8_lossy(&uid_map.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(fields, ["0", "100000", "65536"], "{uid_map:?}");
    // The pod's namespaces, owned by its user namespace, were configured
    // from outside it.
    let configured = exec(
        &mut client,
        &id,
        &["sh", "-c", "hostname; cat /proc/sys/net/core/somaxconn"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&configured.stdout),
        "userns-host\n1234\n",
        "{configured:?}"
    );

    // Root inside writes into its rootfs: on the host, the upper dir holds
    // a file of the host ID root maps to.
    let wrote = exec(&mut client, &id, &["sh", "-c", "echo x > /written; id -u"]).await;
    assert_eq!(wrote.exit_code, 0, "{wrote:?}");
    assert_eq!(String::from_utf8_lossy(&wrote.stdout).trim(), "0");
    let upper_file = daemon
        .root()
        .join("containers")
        .join(&id)
        .join("upper/written");
    let meta = std::fs::metadata(&upper_file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (HOST_ROOT, HOST_ROOT));

    // The volume is ID-mapped: inside, it looks as on the host, and what
    // an ID writes there is that ID on the host.
    let volume_write = exec(
        &mut client,
        &id,
        &[
            "sh",
            "-c",
            "stat -c %u /data/root-file && echo new > /data/new && chown 1234:1234 /data/new",
        ],
    )
    .await;
    assert_eq!(volume_write.exit_code, 0, "{volume_write:?}");
    assert_eq!(String::from_utf8_lossy(&volume_write.stdout).trim(), "0");
    let meta = std::fs::metadata(volume.path().join("new")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 1234));

    // No capability over what the mapping does not cover: a volume file of
    // an unmapped host ID can be neither chowned nor written, and the host
    // root's files the pod shares (its /etc/hosts) cannot be written.
    for command in [
        "chown 0 /data/unmapped-file",
        "echo mine >> /data/unmapped-file",
        "echo 6.6.6.6 evil >> /etc/hosts",
    ] {
        let refused = exec(&mut client, &id, &["sh", "-c", command]).await;
        assert_ne!(refused.exit_code, 0, "{command}: {refused:?}");
    }
    assert_eq!(std::fs::read_to_string(&unmapped).unwrap(), "not yours\n");
    let meta = std::fs::metadata(&unmapped).unwrap();
    assert_eq!(meta.uid(), HOST_ROOT + LENGTH + 5);

    // Removing the pod leaves no pin and nothing mounted.
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    remove_pod(&mut client, &pod_id).await;
    assert_eq!(mounts_below(daemon.dir.path()), Vec::<String>::new());
    assert!(!daemon.state_dir().join("sandboxes").join(&pod_id).exists());
}

#[tokio::test]
async fn bad_userns_options_are_refused_and_leave_nothing() {
    let daemon = userns_daemon().await;
    let mut client = daemon.runtime().await;
    for (what, userns) in [
        (
            "two ranges",
            userns_options(
                NamespaceMode::Pod,
                &[(0, HOST_ROOT, LENGTH), (0, 2 * HOST_ROOT, LENGTH)],
            ),
        ),
        (
            "container root unmapped",
            userns_options(NamespaceMode::Pod, &[(1, HOST_ROOT, LENGTH)]),
        ),
        (
            "host root mapped",
            userns_options(NamespaceMode::Pod, &[(0, 0, LENGTH)]),
        ),
        ("no mapping", userns_options(NamespaceMode::Pod, &[])),
        ("CONTAINER", userns_options(NamespaceMode::Container, &[])),
        ("TARGET", userns_options(NamespaceMode::Target, &[])),
    ] {
        let pod = with_userns(pod_config(&daemon, "bad-userns"), userns);
        let error = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{what}: {error:?}");
    }
    let pods = client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    let left: Vec<_> = std::fs::read_dir(daemon.state_dir().join("sandboxes"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(mounts_below(daemon.dir.path()), Vec::<String>::new());

    // NODE is the host's user namespace, as without options.
    let pod = with_userns(
        pod_config(&daemon, "node-userns"),
        userns_options(NamespaceMode::Node, &[]),
    );
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let id = run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("main", &["sleep", "3600"]),
    )
    .await;
    let uid_map = exec(&mut client, &id, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(
        String::from_utf8_lossy(&uid_map.stdout),
        std::fs::read_to_string("/proc/self/uid_map").unwrap()
    );
    remove_pod(&mut client, &pod_id).await;
}

#[tokio::test]
async fn a_failed_start_and_a_restart_leave_no_mounts_behind() {
    let mut daemon = userns_daemon().await;
    let mut client = daemon.runtime().await;
    let volume = tempfile::tempdir().unwrap();
    let pod = with_userns(
        pod_config(&daemon, "userns-undo"),
        userns_options(NamespaceMode::Pod, &[(0, HOST_ROOT, LENGTH)]),
    );
    let pod_id = run_pod(&mut client, pod.clone()).await;

    // runc refuses a mount onto /proc after Wharf has ID-mapped the rootfs
    // and the volumes. It runs at StartContainer (deferred starts, as
    // containerd's tasks): the start fails, and removing the container
    // undoes all of it.
    let mut bad = container_config("bad", &["sleep", "3600"]);
    bad.mounts = vec![Mount {
        container_path: "/proc/uptime".into(),
        host_path: volume.path().display().to_string(),
        ..Default::default()
    }];
    let bad_id = create(&mut client, &pod_id, &pod, bad).await.unwrap();
    let error = client
        .start_container(StartContainerRequest {
            container_id: bad_id.clone(),
        })
        .await
        .unwrap_err();
    assert!(error.message().contains("runc run"), "{error:?}");
    client
        .remove_container(RemoveContainerRequest {
            container_id: bad_id,
        })
        .await
        .unwrap();
    let containers_dir = daemon.state_dir().join("containers");
    let left: Vec<_> = std::fs::read_dir(&containers_dir).unwrap().collect();
    assert!(left.is_empty(), "{error:?} left {left:?}");
    let container_mounts: Vec<String> = mounts_below(&containers_dir);
    assert!(container_mounts.is_empty(), "{container_mounts:?}");

    // A running container of the pod survives a daemon restart, and the
    // pod is then removed cleanly.
    let mut config = container_config("main", &["sleep", "3600"]);
    config.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: volume.path().display().to_string(),
        ..Default::default()
    }];
    let id = run_container(&mut client, &pod_id, &pod, config).await;
    daemon.sigterm().await;
    daemon.spawn().await;
    let mut client = daemon.runtime().await;
    assert_eq!(
        pod_status(&mut client, &pod_id).await.state,
        PodSandboxState::SandboxReady as i32
    );
    // A container created after the restart, when the daemon has made its
    // top directories private again, still reaches the pod's files.
    run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("after", &["sleep", "3600"]),
    )
    .await;
    let wrote = exec(&mut client, &id, &["sh", "-c", "echo after > /data/after"]).await;
    assert_eq!(wrote.exit_code, 0, "{wrote:?}");
    assert_eq!(
        std::fs::metadata(volume.path().join("after"))
            .unwrap()
            .uid(),
        0
    );
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    remove_pod(&mut client, &pod_id).await;
    assert_eq!(mounts_below(daemon.dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn without_a_traversable_state_dir_user_namespaces_are_not_offered() {
    // A private directory above the state directory: a container whose
    // root is not the host's could not reach its rootfs.
    let daemon = daemon_in_dir_of_mode(0o700).await;
    let mut client = daemon.runtime().await;
    assert!(!default_handler_supports_userns(&mut client).await);
    assert!(
        daemon.log().contains("pods cannot have user namespaces"),
        "{}",
        daemon.log()
    );
    let pod = with_userns(
        pod_config(&daemon, "no-userns"),
        userns_options(NamespaceMode::Pod, &[(0, HOST_ROOT, LENGTH)]),
    );
    let error = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    // Bad options are still the caller's error.
    let bad = with_userns(
        pod_config(&daemon, "bad"),
        userns_options(NamespaceMode::Container, &[]),
    );
    let error = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
}
