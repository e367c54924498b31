//! Pods and containers through the socket, with real runc, real CNI
//! plugins and images from the test registry.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::pods::*;
use common::{image_spec, pull_request, registry, TestNetns};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::Code;

#[tokio::test]
async fn pod_and_container_lifecycle() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "lifecycle");
    let pod_id = run_pod(&mut client, pod.clone()).await;

    let sandbox = pod_status(&mut client, &pod_id).await;
    assert_eq!(sandbox.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(sandbox.metadata.unwrap().name, "lifecycle");
    assert_eq!(sandbox.labels["app"], "lifecycle");

    let command = ["sh", "-c", "echo hello; echo oops >&2; exec sleep 3600"];
    let id = create(
        &mut client,
        &pod_id,
        &pod,
        container_config("main", &command),
    )
    .await
    .unwrap();
    assert_eq!(
        status(&mut client, &id).await.state,
        ContainerState::ContainerCreated as i32
    );
    start(&mut client, &id).await;
    let running = status(&mut client, &id).await;
    assert_eq!(running.state, ContainerState::ContainerRunning as i32);
    assert!(running.started_at >= running.created_at && running.created_at > 0);
    assert!(
        running.image_ref.contains("@sha256:"),
        "{}",
        running.image_ref
    );

    // Logs in the CRI format.
    let log_path = std::path::Path::new(&pod.log_directory).join("main/0.log");
    assert_eq!(running.log_path, log_path.display().to_string());
    let log = wait_for_log(&log_path, "oops").await;
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F hello")),
        "{log}"
    );
    assert!(lines.iter().any(|l| l.ends_with(" stderr F oops")), "{log}");
    assert!(lines[0].split(' ').next().unwrap().ends_with('Z'));

    // The pod's hostname and DNS, from inside.
    let hostname = exec(&mut client, &id, &["hostname"]).await;
    assert_eq!(
        String::from_utf8_lossy(&hostname.stdout).trim(),
        "lifecycle-host"
    );
    let resolv = exec(&mut client, &id, &["cat", "/etc/resolv.conf"]).await;
    let resolv = String::from_utf8_lossy(&resolv.stdout);
    assert!(
        resolv.contains("nameserver 192.0.2.53") && resolv.contains("search svc.cluster.test"),
        "{resolv}"
    );
    let failing = exec(
        &mut client,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
    )
    .await;
    assert_eq!(
        (
            failing.exit_code,
            failing.stdout.as_slice(),
            failing.stderr.as_slice()
        ),
        (7, &b"out\n"[..], &b"err\n"[..])
    );

    // ExecSync's timeout is honoured.
    let started = Instant::now();
    let timed_out = client
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(timed_out.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Listing with filters.
    let listed = client
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.clone(),
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                label_selector: HashMap::from([("container".into(), "main".into())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![id.clone()]
    );

    // `sleep` as pid 1 ignores SIGTERM: killed after the timeout.
    stop_container(&mut client, &id, 1).await;
    let stopped = status(&mut client, &id).await;
    assert_eq!(stopped.state, ContainerState::ContainerExited as i32);
    assert_eq!(stopped.exit_code, 137);
    assert_eq!(stopped.reason, "Error");
    stop_container(&mut client, &id, 1).await;

    client
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    client
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let gone = client
        .container_status(ContainerStatusRequest {
            container_id: id,
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    let pods = list_pods(&mut client).await;
    assert_eq!(pods[0].state, PodSandboxState::SandboxNotready as i32);
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    remove_pod(&mut client, &pod_id).await;
    assert!(client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(daemon.dir.path().to_str().unwrap()),
        "mounts left behind:\n{mounts}"
    );
}

#[tokio::test]
async fn exit_codes_and_reasons() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "exits");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    for (name, command, code, reason) in [
        ("ok", vec!["true"], 0, "Completed"),
        ("three", vec!["sh", "-c", "exit 3"], 3, "Error"),
    ] {
        let id = run_container(&mut client, &pod_id, &pod, container_config(name, &command)).await;
        let exited = wait_exited(&mut client, &id).await;
        assert_eq!(
            (exited.exit_code, exited.reason.as_str()),
            (code, reason),
            "{name}"
        );
        assert!(exited.finished_at >= exited.started_at);
    }
    remove_pod(&mut client, &pod_id).await;
}

#[tokio::test]
async fn security_context_is_enforced() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "security");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let mut config = container_config("restricted", &["sleep", "3600"]);
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1234 }),
            readonly_rootfs: true,
            capabilities: Some(Capability {
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            no_new_privs: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_container(&mut client, &pod_id, &pod, config).await;
    let uid = exec(&mut client, &id, &["id", "-u"]).await;
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "1234");
    let write = exec(&mut client, &id, &["touch", "/newfile"]).await;
    assert_ne!(write.exit_code, 0, "the rootfs is read-only");
    let status = exec(&mut client, &id, &["cat", "/proc/self/status"]).await;
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    remove_pod(&mut client, &pod_id).await;
}

#[tokio::test]
async fn bad_requests_get_clear_codes() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "bad");
    let pod_id = run_pod(&mut client, pod.clone()).await;

    let duplicate = RunPodSandboxRequest {
        config: Some(pod.clone()),
        runtime_handler: String::new(),
    };
    assert_eq!(
        client.run_pod_sandbox(duplicate).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    let no_metadata = RunPodSandboxRequest {
        config: Some(PodSandboxConfig::default()),
        runtime_handler: String::new(),
    };
    assert_eq!(
        client
            .run_pod_sandbox(no_metadata)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let unknown_handler = RunPodSandboxRequest {
        config: Some(pod_config(&daemon, "h")),
        runtime_handler: "kata".into(),
    };
    assert_eq!(
        client
            .run_pod_sandbox(unknown_handler)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let unknown = PodSandboxStatusRequest {
        pod_sandbox_id: "f00d".into(),
        verbose: false,
    };
    assert_eq!(
        client.pod_sandbox_status(unknown).await.unwrap_err().code(),
        Code::NotFound
    );
    let err = create(&mut client, "f00d", &pod, container_config("c", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut missing_image = container_config("c", &["true"]);
    missing_image.image = Some(image_spec("never/pulled:tag"));
    assert_eq!(
        create(&mut client, &pod_id, &pod, missing_image)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let mut bad_mount = container_config("m", &["true"]);
    bad_mount.mounts = vec![Mount {
        container_path: "relative".into(),
        host_path: "/tmp".into(),
        ..Default::default()
    }];
    assert_eq!(
        create(&mut client, &pod_id, &pod, bad_mount)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let id = create(&mut client, &pod_id, &pod, container_config("c", &["true"]))
        .await
        .unwrap();
    let same_name = create(&mut client, &pod_id, &pod, container_config("c", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(same_name.code(), Code::AlreadyExists);
    let exec_created = ExecSyncRequest {
        container_id: id.clone(),
        cmd: vec!["true".into()],
        timeout: 5,
    };
    assert_eq!(
        client.exec_sync(exec_created).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    start(&mut client, &id).await;
    let again = client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let unknown = client
        .start_container(StartContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // Idempotent stops and removals of unknown objects succeed.
    stop_container(&mut client, "nope", 0).await;
    client
        .remove_container(RemoveContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap();
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: "nope".into(),
        })
        .await
        .unwrap();
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: "nope".into(),
        })
        .await
        .unwrap();

    // Nothing of the failed creations is left: only the one container.
    let all = client
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.containers.len(), 1);
    remove_pod(&mut client, &pod_id).await;
}

#[tokio::test]
async fn fifty_pods_at_once() {
    let daemon = daemon().await;
    let runs = (0..50).map(|i| {
        let config = pod_config(&daemon, &format!("many-{i}"));
        let channel = daemon.channel();
        async move {
            let mut client = RuntimeServiceClient::new(channel.await);
            run_pod(&mut client, config).await
        }
    });
    let ids = futures_util::future::join_all(runs).await;
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 50);
    let mut client = daemon.runtime().await;
    let pods = list_pods(&mut client).await;
    assert_eq!(pods.len(), 50);
    let removals = ids.iter().map(|id| {
        let channel = daemon.channel();
        let id = id.clone();
        async move {
            let mut client = RuntimeServiceClient::new(channel.await);
            client
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
                .unwrap();
        }
    });
    futures_util::future::join_all(removals).await;
    assert!(client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
}

#[tokio::test]
async fn containers_and_logs_survive_a_daemon_kill() {
    let mut daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "survivor");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let counter = [
        "sh",
        "-c",
        "i=0; while true; do echo line-$i; i=$((i+1)); usleep 20000; done",
    ];
    let runner = run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("counter", &counter),
    )
    .await;
    let quitter = create(
        &mut client,
        &pod_id,
        &pod,
        container_config("quitter", &["sh", "-c", "sleep 1; exit 42"]),
    )
    .await
    .unwrap();
    start(&mut client, &quitter).await;
    let log_path = std::path::Path::new(&pod.log_directory).join("counter/0.log");
    wait_for_log(&log_path, "line-5").await;

    drop(client);
    daemon.kill9();
    // The quitter exits while no daemon runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.spawn().await;
    let mut client = daemon.runtime().await;

    let pods = list_pods(&mut client).await;
    assert_eq!(
        (pods.len(), pods[0].state),
        (1, PodSandboxState::SandboxReady as i32)
    );
    assert_eq!(
        status(&mut client, &runner).await.state,
        ContainerState::ContainerRunning as i32
    );
    let quit = status(&mut client, &quitter).await;
    assert_eq!(
        (quit.state, quit.exit_code),
        (ContainerState::ContainerExited as i32, 42)
    );

    stop_container(&mut client, &runner, 0).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    let numbers: Vec<u64> = log
        .lines()
        .filter_map(|l| {
            l.rsplit_once(" stdout F line-")
                .map(|(_, n)| n.parse().unwrap())
        })
        .collect();
    assert!(
        numbers.len() > 50,
        "the container kept printing across the restart: {}",
        numbers.len()
    );
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "no line lost or reordered"
    );
    remove_pod(&mut client, &pod_id).await;
}

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn exit_watchers_leave_no_descriptor_behind() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "watched");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let sleeper = container_config("warmup", &["sleep", "1000"]);
    let warmup = run_container(&mut client, &pod_id, &pod, sleeper).await;
    remove_container(&mut client, &warmup).await;
    let baseline = fd_count(daemon.pid());

    let mut ids = Vec::new();
    for i in 0..12 {
        let config = container_config(&format!("sleeper-{i}"), &["sleep", "1000"]);
        let id = run_container(&mut client, &pod_id, &pod, config).await;
        ids.push(id);
    }
    // One held connection to each container's monitor.
    assert!(fd_count(daemon.pid()) >= baseline + ids.len());
    for id in &ids {
        remove_container(&mut client, id).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count(daemon.pid()) > baseline {
        assert!(
            Instant::now() < deadline,
            "{} descriptors open, {baseline} before",
            fd_count(daemon.pid())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    remove_pod(&mut client, &pod_id).await;
}

#[tokio::test]
async fn a_killed_monitor_leaves_its_container_exited() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "orphaned");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let config = container_config("orphan", &["sleep", "1000"]);
    let id = run_container(&mut client, &pod_id, &pod, config).await;
    let pid_file = daemon
        .state_dir()
        .join("containers")
        .join(&id)
        .join("monitor.pid");
    let monitor: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exited = wait_exited(&mut client, &id).await;
    assert_eq!((exited.exit_code, exited.reason.as_str()), (255, "Error"));
    assert!(exited.message.contains("monitor"), "{}", exited.message);
    remove_pod(&mut client, &pod_id).await;
}

/// A bridge network with hostPort, inside a network namespace the test
/// made: the daemon runs in it, so the bridge and NAT rules never touch
/// the machine's own network.
#[tokio::test]
async fn pod_network_with_ip_and_host_port() {
    // Pull first, outside the namespace (the registry listens on the
    // machine's loopback), then restart the daemon inside it.
    let mut daemon = daemon().await;
    daemon.kill9();
    let netns = TestNetns::new("net");
    let ipam_dir = daemon.dir.path().join("ipam");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "wharf-test-bridge",
        "plugins": [
            {"type": "bridge", "bridge": "wharft0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "dataDir": ipam_dir, "ranges": [[{"subnet": "10.77.0.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    std::fs::remove_file(daemon.cni_dir().join("10-lo.conflist")).unwrap();
    std::fs::write(
        daemon.cni_dir().join("10-bridge.conflist"),
        conflist.to_string(),
    )
    .unwrap();
    daemon.set_netns(&netns.name);
    daemon.spawn().await;
    let mut client = daemon.runtime().await;

    let mut pod = pod_config(&daemon, "web");
    pod.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: 12090,
        host_ip: String::new(),
    }];
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let status = pod_status(&mut client, &pod_id).await;
    let ip: std::net::IpAddr = status
        .network
        .unwrap()
        .ip
        .parse()
        .expect("the pod has an IP");
    assert!(ip.to_string().starts_with("10.77.0."), "{ip}");

    let server = [
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 80 -h /www",
    ];
    run_container(&mut client, &pod_id, &pod, container_config("web", &server)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let direct = loop {
        match netns.http_get(std::net::SocketAddr::new(ip, 80)) {
            Ok(response) => break response,
            Err(e) => assert!(Instant::now() < deadline, "pod unreachable: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(direct.contains("hello-from-pod"), "{direct}");
    let via_host_port = netns
        .http_get("127.0.0.1:12090".parse().unwrap())
        .expect("hostPort on 127.0.0.1");
    assert!(via_host_port.contains("hello-from-pod"), "{via_host_port}");

    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    assert!(
        netns.http_get("127.0.0.1:12090".parse().unwrap()).is_err(),
        "the port mapping is gone"
    );
    let leases = std::fs::read_dir(ipam_dir.join("wharf-test-bridge"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leases, 0, "the pod's IP is released");
    remove_pod(&mut client, &pod_id).await;
}

#[tokio::test]
async fn shared_pid_namespace_lets_containers_see_each_other() {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let mut pod = pod_config(&daemon, "sharedpid");
    let pod_namespaces = NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..Default::default()
    };
    pod.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(pod_namespaces.clone()),
        ..Default::default()
    });
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let in_pod = |mut config: ContainerConfig| {
        config.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(pod_namespaces.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        config
    };
    let sleeper = run_container(
        &mut client,
        &pod_id,
        &pod,
        in_pod(container_config("sleeper", &["sleep", "4242"])),
    )
    .await;
    let looker = run_container(
        &mut client,
        &pod_id,
        &pod,
        in_pod(container_config("looker", &["sleep", "3600"])),
    )
    .await;
    let ps = exec(&mut client, &looker, &["ps", "-o", "pid,args"]).await;
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        ps.contains("sleep 4242"),
        "the other container's process is visible:\n{ps}"
    );
    let init = exec(&mut client, &looker, &["cat", "/proc/1/cmdline"]).await;
    assert!(
        String::from_utf8_lossy(&init.stdout).contains("pause"),
        "pid 1 is the pod's holder"
    );

    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        status(&mut client, &sleeper).await.state,
        ContainerState::ContainerExited as i32
    );
    remove_pod(&mut client, &pod_id).await;
}

/// Every path below `dirs` (not following symlinks), themselves excluded.
fn walk(dirs: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending: Vec<std::path::PathBuf> = dirs.to_vec();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// The paths of `paths` that user `nobody` can enter (directories) or
/// reach (anything else).
fn reachable_by_nobody(paths: &[std::path::PathBuf]) -> Vec<String> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let script = r#"while IFS= read -r p; do
        if [ -d "$p" ]; then (cd "$p" 2>/dev/null) && echo "$p"
        elif [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi
    done"#;
    let mut child = std::process::Command::new("sh")
        .args(["-c", script])
        .uid(65534)
        .gid(65534)
        .current_dir("/")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for path in paths {
        writeln!(stdin, "{}", path.display()).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Layers keep setuid binaries and containers write into their upper dirs:
/// no other host user may reach anything Wharf keeps (the class of
/// containerd's CVE-2021-41103), also after an upgrade from a Wharf that
/// left its directories open.
#[tokio::test]
async fn host_users_cannot_reach_what_wharf_stores() {
    use std::os::unix::fs::PermissionsExt;
    let mut daemon = daemon().await;
    // The test's own temp dir is private: open it, so that only Wharf's
    // modes stand between user nobody and Wharf's files.
    set_mode(daemon.dir.path(), 0o755);
    let setuid = registry().image("wharf-test/setuid:latest");
    daemon
        .images()
        .await
        .pull_image(pull_request(&setuid, None))
        .await
        .unwrap();
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "private");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let mut config = container_config("writer", &["sleep", "3600"]);
    config.image = Some(image_spec(&setuid));
    let id = run_container(&mut client, &pod_id, &pod, config).await;
    let copied = exec(
        &mut client,
        &id,
        &[
            "sh",
            "-c",
            "cp /bin/suid-sh /made-suid && chmod 4755 /made-suid",
        ],
    )
    .await;
    assert_eq!(copied.exit_code, 0, "{copied:?}");

    let tops = [daemon.root(), daemon.state_dir()];
    let stored = walk(&tops);
    let setuid_files = |under: &str| {
        stored
            .iter()
            .filter(|p| p.to_string_lossy().contains(under))
            .filter(|p| {
                std::fs::symlink_metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o4000 != 0)
            })
            .count()
    };
    assert!(
        setuid_files("/image/layers/") > 0,
        "the layer's setuid file"
    );
    assert!(setuid_files("/upper/made-suid") > 0, "the container's own");
    let exposed = reachable_by_nobody(&stored);
    assert!(exposed.is_empty(), "reachable by nobody: {exposed:#?}");

    // An installation an older Wharf made: everything 0755. A restart
    // closes Wharf's own directories again.
    drop(client);
    daemon.kill9();
    for dir in stored.iter().chain(&tops).filter(|p| p.is_dir()) {
        if !dir.to_string_lossy().contains("/rootfs/") {
            set_mode(dir, 0o755);
        }
    }
    assert!(
        !reachable_by_nobody(&stored).is_empty(),
        "the setup opened them"
    );
    daemon.spawn().await;
    let exposed = reachable_by_nobody(&walk(&tops));
    assert!(exposed.is_empty(), "reachable after restart: {exposed:#?}");

    let mut client = daemon.runtime().await;
    remove_pod(&mut client, &pod_id).await;
}

/// An image config with 300,000 environment variables (the kind that once
/// froze the daemon in a quadratic merge on an async worker): refused at
/// once with InvalidArgument, and no other call waits behind it.
#[tokio::test]
async fn a_huge_image_env_is_refused_without_stalling_other_calls() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let daemon = daemon().await;
    let huge = registry().image("wharf-test/huge-env:latest");
    daemon
        .images()
        .await
        .pull_image(pull_request(&huge, None))
        .await
        .unwrap();
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "huge-env");
    let pod_id = run_pod(&mut client, pod.clone()).await;

    let done = Arc::new(AtomicBool::new(false));
    let mut watched = daemon.runtime().await;
    let watchdog = tokio::spawn({
        let done = Arc::clone(&done);
        async move {
            let mut slowest = Duration::ZERO;
            let mut calls = 0;
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            while !done.load(Ordering::Relaxed) {
                pace.tick().await;
                let asked = Instant::now();
                watched.version(VersionRequest::default()).await.unwrap();
                slowest = slowest.max(asked.elapsed());
                calls += 1;
            }
            (slowest, calls)
        }
    });
    let mut config = container_config("huge", &["true"]);
    config.image = Some(image_spec(&huge));
    let refused = create(&mut client, &pod_id, &pod, config)
        .await
        .unwrap_err();
    done.store(true, Ordering::Relaxed);
    let (slowest, calls) = watchdog.await.unwrap();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("environment"), "{refused:?}");
    assert!(calls > 0);
    assert!(
        slowest < Duration::from_millis(100),
        "Version took {slowest:?} while CreateContainer ran"
    );
    let listed = client
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "nothing half-created: {listed:?}");
    remove_pod(&mut client, &pod_id).await;
}
