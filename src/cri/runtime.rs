//! CRI `RuntimeService`: dispatches each RPC to its handler (runtime-level
//! calls here, pods in `pods`, containers in `containers`, stats in
//! `stats`, events in `events`, streaming URLs in `streaming`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::runtime_service_server::RuntimeService;
use super::proto::*;
use super::{
    containers, events, handle, metrics, pods, stats, streaming, validate, verbose, Services,
};
use crate::config::CgroupDriver as ConfiguredDriver;
use crate::stats::StatsCollector;

pub struct Runtime {
    services: Arc<Services>,
    stats: Arc<StatsCollector>,
    events: Arc<events::Hub>,
}

impl Runtime {
    pub fn new(services: Arc<Services>) -> Self {
        Runtime {
            events: events::start(Arc::clone(&services)),
            services,
            stats: Arc::new(StatsCollector::new()),
        }
    }
}

const RUNTIME_NAME: &str = "wharf";
const CRI_VERSION: &str = "v1";
/// The kubelet API version field is historical and fixed at 0.1.0.
const KUBELET_API_VERSION: &str = "0.1.0";

/// Items per message of the `Stream*` list RPCs.
const ITEMS_PER_MESSAGE: usize = 500;

/// A list as a stream of messages of at most [`ITEMS_PER_MESSAGE`] items,
/// each within the message size limit.
fn chunked<I: prost::Message + Clone + 'static, M: Send + 'static>(
    items: Vec<I>,
    message: impl Fn(Vec<I>) -> M,
) -> StreamOf<M> {
    let messages: Vec<Result<M, Status>> = validate::chunks(&items, ITEMS_PER_MESSAGE)
        .into_iter()
        .map(|chunk| chunk.map(&message))
        .collect();
    Box::pin(tokio_stream::iter(messages))
}

/// What a client whose list is too large for one message can do instead.
const LIST_HINT: &str = "narrow the list with a filter or use the Stream RPC";

type StreamOf<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
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

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        handle("Status", async {
            let config = self.services.config.get();
            let runtime_ready = runtime_condition(&config.runtime.path);
            let cni_ready = self.services.cni.ready();
            let info = if request.get_ref().verbose {
                verbose::runtime_info(
                    &config,
                    self.services.containers.handlers(),
                    &cni_ready,
                    &self.services.images.pulls_in_progress(),
                )?
            } else {
                HashMap::new()
            };
            let network_ready = condition(
                "NetworkReady",
                cni_ready.map_err(|message| ("NetworkPluginNotReady", message)),
            );
            Ok(StatusResponse {
                status: Some(RuntimeStatus {
                    conditions: vec![runtime_ready, network_ready],
                }),
                info,
                runtime_handlers: runtime_handlers(self.services.containers.handlers()),
                features: Some(RuntimeFeatures {
                    // Merge and Strict (container::user), and
                    // ContainerStatus.user from the kernel.
                    supplemental_groups_policy: true,
                    ..RuntimeFeatures::default()
                }),
            })
        })
        .await
    }

    async fn runtime_config(
        &self,
        _request: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        handle("RuntimeConfig", async {
            let driver = match self.services.config.get().runtime.cgroup_driver {
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
    type GetContainerEventsStream = events::EventStream;
    type StreamPodSandboxMetricsStream = StreamOf<StreamPodSandboxMetricsResponse>;

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        handle(
            "RunPodSandbox",
            pods::run(&self.services, request.into_inner()),
        )
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        handle(
            "StopPodSandbox",
            pods::stop(&self.services, request.into_inner()),
        )
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        handle(
            "RemovePodSandbox",
            pods::remove(&self.services, request.into_inner()),
        )
        .await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        handle(
            "PodSandboxStatus",
            pods::status(&self.services, request.into_inner()),
        )
        .await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        handle("ListPodSandbox", async {
            let items = pods::list(&self.services, request.get_ref().filter.as_ref())?;
            validate::fits(
                "ListPodSandbox",
                LIST_HINT,
                ListPodSandboxResponse { items },
            )
        })
        .await
    }

    async fn stream_pod_sandboxes(
        &self,
        request: Request<StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        handle("StreamPodSandboxes", async {
            let items = pods::list(&self.services, request.get_ref().filter.as_ref())?;
            Ok(chunked(items, |pod_sandboxes| StreamPodSandboxesResponse {
                pod_sandboxes,
            }))
        })
        .await
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        handle(
            "CreateContainer",
            containers::create(&self.services, request.into_inner()),
        )
        .await
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        handle(
            "StartContainer",
            containers::start(&self.services, request.into_inner()),
        )
        .await
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        handle(
            "StopContainer",
            containers::stop(&self.services, request.into_inner()),
        )
        .await
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        handle(
            "RemoveContainer",
            containers::remove(&self.services, request.into_inner()),
        )
        .await
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        handle("ListContainers", async {
            let containers = containers::list(&self.services, request.get_ref().filter.as_ref())?;
            validate::fits(
                "ListContainers",
                LIST_HINT,
                ListContainersResponse { containers },
            )
        })
        .await
    }

    async fn stream_containers(
        &self,
        request: Request<StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        handle("StreamContainers", async {
            let items = containers::list(&self.services, request.get_ref().filter.as_ref())?;
            Ok(chunked(items, |containers| StreamContainersResponse {
                containers,
            }))
        })
        .await
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        handle(
            "ContainerStatus",
            containers::status(&self.services, request.into_inner()),
        )
        .await
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        handle(
            "UpdateContainerResources",
            containers::update_resources(&self.services, request.into_inner()),
        )
        .await
    }

    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        handle(
            "ReopenContainerLog",
            containers::reopen_log(&self.services, request.into_inner()),
        )
        .await
    }

    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        handle(
            "ExecSync",
            containers::exec_sync(&self.services, request.into_inner()),
        )
        .await
    }

    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        handle(
            "ContainerStats",
            stats::container(&self.services, &self.stats, request.into_inner()),
        )
        .await
    }

    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        handle("ListContainerStats", async {
            let stats = stats::list_containers(
                &self.services,
                &self.stats,
                request.get_ref().filter.as_ref(),
            )
            .await?;
            validate::fits(
                "ListContainerStats",
                LIST_HINT,
                ListContainerStatsResponse { stats },
            )
        })
        .await
    }

    async fn stream_container_stats(
        &self,
        request: Request<StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        handle("StreamContainerStats", async {
            let items = stats::list_containers(
                &self.services,
                &self.stats,
                request.get_ref().filter.as_ref(),
            )
            .await?;
            Ok(chunked(items, |container_stats| {
                StreamContainerStatsResponse { container_stats }
            }))
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        handle(
            "PodSandboxStats",
            stats::pod(&self.services, &self.stats, request.into_inner()),
        )
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        handle("ListPodSandboxStats", async {
            let stats = stats::list_pods(
                &self.services,
                &self.stats,
                request.get_ref().filter.as_ref(),
            )
            .await?;
            validate::fits(
                "ListPodSandboxStats",
                LIST_HINT,
                ListPodSandboxStatsResponse { stats },
            )
        })
        .await
    }

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        handle("StreamPodSandboxStats", async {
            let items = stats::list_pods(
                &self.services,
                &self.stats,
                request.get_ref().filter.as_ref(),
            )
            .await?;
            Ok(chunked(items, |pod_sandbox_stats| {
                StreamPodSandboxStatsResponse { pod_sandbox_stats }
            }))
        })
        .await
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        handle("ListMetricDescriptors", async {
            Ok(ListMetricDescriptorsResponse {
                descriptors: metrics::descriptors(),
            })
        })
        .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        handle("ListPodSandboxMetrics", async {
            let pod_metrics = metrics::list(&self.services, &self.stats).await?;
            validate::fits(
                "ListPodSandboxMetrics",
                "use StreamPodSandboxMetrics",
                ListPodSandboxMetricsResponse { pod_metrics },
            )
        })
        .await
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        handle("StreamPodSandboxMetrics", async {
            let items = metrics::list(&self.services, &self.stats).await?;
            Ok(chunked(items, |pod_sandbox_metrics| {
                StreamPodSandboxMetricsResponse {
                    pod_sandbox_metrics,
                }
            }))
        })
        .await
    }

    async fn get_container_events(
        &self,
        _request: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        handle("GetContainerEvents", async {
            events::subscribe(&self.events)
        })
        .await
    }

    async fn checkpoint_container(
        &self,
        _request: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        handle("CheckpointContainer", async {
            Err(Status::unimplemented(
                "CheckpointContainer is not supported by wharf: CRIU checkpointing is not supported",
            ))
        })
        .await
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        handle(
            "Exec",
            streaming::exec(&self.services, request.into_inner()),
        )
        .await
    }

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        handle(
            "Attach",
            streaming::attach(&self.services, request.into_inner()),
        )
        .await
    }

    async fn port_forward(
        &self,
        request: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        handle(
            "PortForward",
            streaming::port_forward(&self.services, request.into_inner()),
        )
        .await
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        handle(
            "UpdatePodSandboxResources",
            pods::update_resources(&self.services, request.into_inner()),
        )
        .await
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        handle("UpdateRuntimeConfig", async {
            let cidr = request
                .get_ref()
                .runtime_config
                .as_ref()
                .and_then(|c| c.network_config.as_ref())
                .map(|n| n.pod_cidr.as_str())
                .unwrap_or("");
            if !cidr.is_empty() {
                self.services
                    .cni
                    .set_pod_cidr(cidr)
                    .map_err(super::status_of)?;
            }
            Ok(UpdateRuntimeConfigResponse {})
        })
        .await
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

/// The handlers RuntimeClasses may name, each with its runtime's
/// features: the default one (named "", as kubelet and critest look it up)
/// and its alias "runc", then the configured ones.
fn runtime_handlers(handlers: &crate::runtime::RuntimeHandlers) -> Vec<RuntimeHandler> {
    handlers
        .listed()
        .into_iter()
        .map(|(name, handler)| RuntimeHandler {
            name: name.to_string(),
            features: Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: handler.features.recursive_read_only_mounts,
                user_namespaces: handler.features.user_namespaces,
            }),
        })
        .collect()
}

/// Ready when the OCI runtime binary can be found.
fn runtime_condition(runtime: &Path) -> RuntimeCondition {
    let ready = if crate::runtime::find_binary(runtime).is_some() {
        Ok(())
    } else {
        Err((
            "OCIRuntimeNotFound",
            format!("OCI runtime {} not found", runtime.display()),
        ))
    };
    condition("RuntimeReady", ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_is_ready_only_when_its_binary_exists() {
        assert!(runtime_condition(Path::new("/bin/sh")).status);
        assert!(runtime_condition(Path::new("sh")).status);
        let missing = runtime_condition(Path::new("/nonexistent/runc"));
        assert!(!missing.status);
        assert_eq!(missing.reason, "OCIRuntimeNotFound");
    }
}
