//! CRI `RuntimeService`: runtime-level calls. Pod and container calls answer
//! `UNIMPLEMENTED` until their issue lands (see README's RPC table).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::runtime_service_server::RuntimeService;
use super::proto::*;
use super::{handle, not_yet, Services};
use crate::config::CgroupDriver as ConfiguredDriver;

pub struct Runtime {
    services: Arc<Services>,
}

impl Runtime {
    pub fn new(services: Arc<Services>) -> Self {
        Runtime { services }
    }
}

const RUNTIME_NAME: &str = "wharf";
const CRI_VERSION: &str = "v1";
/// The kubelet API version field is historical and fixed at 0.1.0.
const KUBELET_API_VERSION: &str = "0.1.0";

type StreamOf<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The service impl: the methods written out, plus one answering
/// `UNIMPLEMENTED` (naming itself) for each RPC not implemented yet. The
/// attribute is applied inside the macro so that `async_trait` sees the
/// generated methods.
macro_rules! runtime_service {
    (
        implemented { $($implemented:tt)* }
        not_yet { $($method:ident($request:ty) -> $response:ty = $name:literal;)* }
    ) => {
        #[tonic::async_trait]
        impl RuntimeService for Runtime {
            $($implemented)*
            $(
                async fn $method(&self, _request: Request<$request>) -> Result<Response<$response>, Status> {
                    Err(not_yet($name))
                }
            )*
        }
    };
}

runtime_service! {
implemented {
    async fn version(&self, _request: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        handle("Version", async {
            Ok(VersionResponse {
                version: KUBELET_API_VERSION.into(),
                runtime_name: RUNTIME_NAME.into(),
                runtime_version: env!("CARGO_PKG_VERSION").into(),
                runtime_api_version: CRI_VERSION.into(),
            })
        })
        .await
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        handle("Status", async {
            let config = &self.services.config;
            let runtime_ready = runtime_condition(&config.runtime.path);
            let network_ready = network_condition(&config.cni.conf_dir);
            let mut info = HashMap::new();
            if request.get_ref().verbose {
                let config_json = serde_json::to_string(config.as_ref())
                    .map_err(|e| Status::internal(format!("encoding config: {e}")))?;
                info.insert("config".to_string(), config_json);
            }
            Ok(StatusResponse {
                status: Some(RuntimeStatus {
                    conditions: vec![runtime_ready, network_ready],
                }),
                info,
                runtime_handlers: vec![],
                features: Some(RuntimeFeatures::default()),
            })
        })
        .await
    }

    async fn runtime_config(
        &self,
        _request: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        handle("RuntimeConfig", async {
            let driver = match self.services.config.runtime.cgroup_driver {
                ConfiguredDriver::Cgroupfs => CgroupDriver::Cgroupfs,
                ConfiguredDriver::Systemd => CgroupDriver::Systemd,
            };
            Ok(RuntimeConfigResponse {
                linux: Some(LinuxRuntimeConfiguration {
                    cgroup_driver: driver as i32,
                }),
            })
        })
        .await
    }

    type StreamPodSandboxesStream = StreamOf<StreamPodSandboxesResponse>;
    type StreamContainersStream = StreamOf<StreamContainersResponse>;
    type StreamContainerStatsStream = StreamOf<StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = StreamOf<StreamPodSandboxStatsResponse>;
    type GetContainerEventsStream = StreamOf<ContainerEventResponse>;
    type StreamPodSandboxMetricsStream = StreamOf<StreamPodSandboxMetricsResponse>;
}
    not_yet {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse = "RunPodSandbox";
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse = "StopPodSandbox";
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse = "RemovePodSandbox";
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse = "PodSandboxStatus";
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse = "ListPodSandbox";
        stream_pod_sandboxes(StreamPodSandboxesRequest) -> Self::StreamPodSandboxesStream = "StreamPodSandboxes";
        create_container(CreateContainerRequest) -> CreateContainerResponse = "CreateContainer";
        start_container(StartContainerRequest) -> StartContainerResponse = "StartContainer";
        stop_container(StopContainerRequest) -> StopContainerResponse = "StopContainer";
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse = "RemoveContainer";
        list_containers(ListContainersRequest) -> ListContainersResponse = "ListContainers";
        stream_containers(StreamContainersRequest) -> Self::StreamContainersStream = "StreamContainers";
        container_status(ContainerStatusRequest) -> ContainerStatusResponse = "ContainerStatus";
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse = "UpdateContainerResources";
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse = "ReopenContainerLog";
        exec_sync(ExecSyncRequest) -> ExecSyncResponse = "ExecSync";
        exec(ExecRequest) -> ExecResponse = "Exec";
        attach(AttachRequest) -> AttachResponse = "Attach";
        port_forward(PortForwardRequest) -> PortForwardResponse = "PortForward";
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse = "ContainerStats";
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse = "ListContainerStats";
        stream_container_stats(StreamContainerStatsRequest) -> Self::StreamContainerStatsStream = "StreamContainerStats";
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse = "PodSandboxStats";
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse = "ListPodSandboxStats";
        stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> Self::StreamPodSandboxStatsStream = "StreamPodSandboxStats";
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse = "UpdateRuntimeConfig";
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse = "CheckpointContainer";
        get_container_events(GetEventsRequest) -> Self::GetContainerEventsStream = "GetContainerEvents";
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse = "ListMetricDescriptors";
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse = "ListPodSandboxMetrics";
        stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) -> Self::StreamPodSandboxMetricsStream = "StreamPodSandboxMetrics";
        update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse = "UpdatePodSandboxResources";
    }
}

fn condition(kind: &str, ready: Result<(), (&str, String)>) -> RuntimeCondition {
    match ready {
        Ok(()) => RuntimeCondition {
            r#type: kind.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err((reason, message)) => RuntimeCondition {
            r#type: kind.into(),
            status: false,
            reason: reason.into(),
            message,
        },
    }
}

/// Ready when the OCI runtime binary can be found.
fn runtime_condition(runtime: &Path) -> RuntimeCondition {
    let found = if runtime.components().count() > 1 {
        runtime.is_file()
    } else {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(runtime).is_file()))
            .unwrap_or(false)
    };
    let ready = if found {
        Ok(())
    } else {
        Err((
            "OCIRuntimeNotFound",
            format!("OCI runtime {} not found", runtime.display()),
        ))
    };
    condition("RuntimeReady", ready)
}

/// Ready when a CNI network configuration exists, as kubelet expects from
/// containerd and CRI-O.
fn network_condition(conf_dir: &Path) -> RuntimeCondition {
    let has_config = std::fs::read_dir(conf_dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                [".conflist", ".conf", ".json"]
                    .iter()
                    .any(|ext| name.ends_with(ext))
            })
        })
        .unwrap_or(false);
    let ready = if has_config {
        Ok(())
    } else {
        Err((
            "NetworkPluginNotReady",
            format!(
                "no CNI network configuration found in {}",
                conf_dir.display()
            ),
        ))
    };
    condition("NetworkReady", ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_is_ready_only_with_a_cni_config() {
        let dir = tempfile::tempdir().unwrap();
        let not_ready = network_condition(dir.path());
        assert!(!not_ready.status);
        assert_eq!(not_ready.reason, "NetworkPluginNotReady");
        std::fs::write(dir.path().join("README"), b"").unwrap();
        assert!(!network_condition(dir.path()).status);
        std::fs::write(dir.path().join("10-bridge.conflist"), b"{}").unwrap();
        assert!(network_condition(dir.path()).status);
    }

    #[test]
    fn runtime_is_ready_only_when_its_binary_exists() {
        assert!(runtime_condition(Path::new("/bin/sh")).status);
        assert!(runtime_condition(Path::new("sh")).status);
        let missing = runtime_condition(Path::new("/nonexistent/runc"));
        assert!(!missing.status);
        assert_eq!(missing.reason, "OCIRuntimeNotFound");
    }
}
