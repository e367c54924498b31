//! UpdateContainerResources and UpdatePodSandboxResources on real runc
//! containers: what the kernel enforces is read back from the cgroup files
//! (v1 or v2, whichever the host has) and compared with what
//! ContainerStatus reports; refused updates change neither.

mod common;

use std::path::{Path, PathBuf};

use common::pods::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;
use tonic::Code;
use wharf::cgroup::Hierarchies;
use wharf::stats::limits::{enforced, weight_of_shares, EnforcedLimits};

const MIB: i64 = 1 << 20;

fn initial_resources() -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 * MIB,
        ..Default::default()
    }
}

async fn update(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
    resources: LinuxContainerResources,
) -> Result<(), tonic::Status> {
    client
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(resources),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

fn reported(status: &ContainerStatus) -> LinuxContainerResources {
    status
        .resources
        .as_ref()
        .and_then(|r| r.linux.clone())
        .expect("ContainerStatus.resources.linux")
}

/// The host's enforced CPU weight, in the terms the host speaks.
fn assert_shares(limits: &EnforcedLimits, shares: u64) {
    match (limits.cpu_shares, limits.cpu_weight) {
        (Some(v1), _) => assert_eq!(v1, shares, "{limits:?}"),
        (None, Some(v2)) => assert_eq!(v2, weight_of_shares(shares), "{limits:?}"),
        (None, None) => panic!("no CPU weight in the container's cgroup: {limits:?}"),
    }
}

/// The container's cgroup limits, read from the files.
fn limits_of(cgroup: &Path) -> EnforcedLimits {
    enforced(&Hierarchies::detect().unwrap(), cgroup)
}

/// `runtimeSpec.linux.resources.memory.limit` of the verbose status.
async fn spec_memory_limit(client: &mut RuntimeServiceClient<Channel>, id: &str) -> i64 {
    let response = client
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&response.info["info"]).unwrap();
    info["runtimeSpec"]["linux"]["resources"]["memory"]["limit"]
        .as_i64()
        .unwrap_or_else(|| panic!("no memory limit in {info}"))
}

/// UpdatePodSandboxResources (the k8s-cri client predates it).
async fn update_pod(
    channel: Channel,
    pod_id: &str,
    resources: wharf::api::LinuxContainerResources,
) -> Result<(), tonic::Status> {
    use wharf::api::{UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse};
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<
        UpdatePodSandboxResourcesRequest,
        UpdatePodSandboxResourcesResponse,
    >::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/runtime.v1.RuntimeService/UpdatePodSandboxResources",
    );
    let request = tonic::Request::new(UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod_id.into(),
        resources: Some(resources),
        ..Default::default()
    });
    grpc.unary(request, path, codec).await.map(|_| ())
}

#[tokio::test]
async fn an_update_reaches_the_cgroup_and_the_status_and_bad_values_change_nothing() {
    let mut daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let mut pod = pod_config(&daemon, "resize");
    let parent = format!("/wharf-test/resize-{}", std::process::id());
    pod.linux.as_mut().unwrap().cgroup_parent = parent.clone();
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let mut config = container_config("resized", &["sleep", "3600"]);
    config.linux = Some(LinuxContainerConfig {
        resources: Some(initial_resources()),
        ..Default::default()
    });
    let id = run_container(&mut client, &pod_id, &pod, config).await;
    let cgroup = PathBuf::from(format!("{parent}/{id}"));

    let before = limits_of(&cgroup);
    assert_eq!(before.memory_limit, Some(64 << 20), "{before:?}");
    assert_eq!(before.cpu_quota_us, Some(50_000));
    let status_before = reported(&status(&mut client, &id).await);
    assert_eq!(status_before.memory_limit_in_bytes, 64 * MIB);
    assert_eq!(status_before.cpu_quota, 50_000);

    // Only what is set changes: the period and the shares stay.
    let change = LinuxContainerResources {
        cpu_quota: 20_000,
        memory_limit_in_bytes: 128 * MIB,
        ..Default::default()
    };
    update(&mut client, &id, change).await.unwrap();
    let after = limits_of(&cgroup);
    assert_eq!(after.memory_limit, Some(128 << 20), "{after:?}");
    assert_eq!(after.cpu_quota_us, Some(20_000));
    assert_eq!(after.cpu_period_us, Some(100_000));
    assert_shares(&after, 512);
    let now = reported(&status(&mut client, &id).await);
    assert_eq!(now.memory_limit_in_bytes, 128 * MIB);
    assert_eq!(now.cpu_quota, 20_000);
    assert_eq!(now.cpu_period, 100_000);
    assert_eq!(now.cpu_shares, 512);
    // Swap follows the limit where the kernel accounts swap.
    if let Some(swap) = after.memory_swap_limit {
        assert_eq!(now.memory_swap_limit_in_bytes, swap as i64);
        assert_eq!(swap, 128 << 20);
    }
    // The spec, as `crictl inspect` shows it, has them too.
    assert_eq!(spec_memory_limit(&mut client, &id).await, 128 << 20);
    // The process itself is still there, under the new limits.
    let out = exec(&mut client, &id, &["cat", "/proc/self/cgroup"]).await;
    assert_eq!(out.exit_code, 0, "{out:?}");

    let refused = [
        (
            "negative quota",
            LinuxContainerResources {
                cpu_quota: -5,
                ..Default::default()
            },
        ),
        (
            "tiny period",
            LinuxContainerResources {
                cpu_period: 10,
                ..Default::default()
            },
        ),
        (
            "one share",
            LinuxContainerResources {
                cpu_shares: 1,
                ..Default::default()
            },
        ),
        (
            "negative memory",
            LinuxContainerResources {
                memory_limit_in_bytes: -1,
                ..Default::default()
            },
        ),
        (
            "swap below memory",
            LinuxContainerResources {
                memory_limit_in_bytes: 256 * MIB,
                memory_swap_limit_in_bytes: 32 * MIB,
                ..Default::default()
            },
        ),
        (
            "reversed cpuset",
            LinuxContainerResources {
                cpuset_cpus: "1-0".into(),
                ..Default::default()
            },
        ),
    ];
    for (what, resources) in refused {
        let err = update(&mut client, &id, resources).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert_eq!(limits_of(&cgroup), after, "{what} changed the cgroup");
        assert_eq!(
            reported(&status(&mut client, &id).await),
            now,
            "{what} changed the status"
        );
    }
    // What only the kernel can refuse: a limit below the current usage,
    // with a cpuset change that runc writes before the memory limit. The
    // cpuset written is put back.
    let below_usage = LinuxContainerResources {
        cpuset_cpus: "0".into(),
        memory_limit_in_bytes: 4096,
        ..Default::default()
    };
    let err = update(&mut client, &id, below_usage).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(limits_of(&cgroup), after, "a refused update left changes");
    assert_eq!(reported(&status(&mut client, &id).await), now);
    assert_eq!(spec_memory_limit(&mut client, &id).await, 128 << 20);

    // The record keeps them across a restart of the daemon.
    daemon.sigterm().await;
    daemon.spawn().await;
    let mut client = daemon.runtime().await;
    assert_eq!(
        reported(&status(&mut client, &id).await),
        now,
        "after a restart"
    );

    let unknown = update(&mut client, "no-such-container", initial_resources()).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    // A stopped container's update is recorded only (as containerd).
    stop_container(&mut client, &id, 0).await;
    wait_exited(&mut client, &id).await;
    let later = LinuxContainerResources {
        memory_limit_in_bytes: 256 * MIB,
        ..Default::default()
    };
    update(&mut client, &id, later).await.unwrap();
    let stopped = reported(&status(&mut client, &id).await);
    assert_eq!(stopped.memory_limit_in_bytes, 256 * MIB);
    assert_eq!(stopped.cpu_quota, 20_000);

    // The pod-level update is kubelet's to apply: OK for a known pod,
    // NotFound for another, InvalidArgument for nonsense.
    let pod_resources = wharf::api::LinuxContainerResources {
        cpu_shares: 1024,
        memory_limit_in_bytes: 512 * MIB,
        ..Default::default()
    };
    update_pod(daemon.channel().await, &pod_id, pod_resources.clone())
        .await
        .unwrap();
    let missing = update_pod(daemon.channel().await, "no-such-pod", pod_resources).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let nonsense = wharf::api::LinuxContainerResources {
        cpu_quota: -7,
        ..Default::default()
    };
    let bad = update_pod(daemon.channel().await, &pod_id, nonsense).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);

    remove_pod(&mut client, &pod_id).await;
}
