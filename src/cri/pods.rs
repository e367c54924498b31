//! Pod sandbox RPCs: validate, translate, call the services.

use std::collections::HashMap;

use tonic::Status;

use super::convert::runtime as convert;
use super::proto::*;
use super::{required, status_of, validate, Services};

pub async fn run(
    services: &Services,
    request: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse, Status> {
    let config = request.config.ok_or_else(|| required("config"))?;
    validate::pod_config(&config)?;
    let handler = services
        .containers
        .handlers()
        .get(&request.runtime_handler)
        .map_err(|e| status_of(crate::container::ContainerError::from(e)))?;
    let userns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|o| o.userns_options.as_ref());
    // Bad options are the caller's error whatever the host: refused below.
    if matches!(crate::idmap::from_cri(userns), Ok(Some(_))) && !handler.features.user_namespaces {
        return Err(Status::failed_precondition(format!(
            "runtime handler {:?} does not support user namespaces on this host (see the daemon's start-up log)",
            request.runtime_handler
        )));
    }
    let sandbox = services
        .sandboxes
        .run(config, &request.runtime_handler)
        .await
        .map_err(status_of)?;
    Ok(RunPodSandboxResponse {
        pod_sandbox_id: sandbox.id,
    })
}

pub async fn stop(
    services: &Services,
    request: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    let id = validate::id(&request.pod_sandbox_id, "pod_sandbox_id")?;
    let containers = &services.containers;
    services
        .sandboxes
        .stop_pod(id, async |pod_id| containers.stop_all_in(pod_id).await)
        .await
        .map_err(status_of)?;
    Ok(StopPodSandboxResponse {})
}

pub async fn remove(
    services: &Services,
    request: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, Status> {
    let id = validate::id(&request.pod_sandbox_id, "pod_sandbox_id")?;
    let containers = &services.containers;
    services
        .sandboxes
        .remove_pod(id, async |pod_id| containers.remove_all_in(pod_id).await)
        .await
        .map_err(status_of)?;
    Ok(RemovePodSandboxResponse {})
}

pub async fn status(
    services: &Services,
    request: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, Status> {
    let id = validate::id(&request.pod_sandbox_id, "pod_sandbox_id")?;
    let sandbox = services.sandboxes.get(id).map_err(status_of)?.snapshot();
    let mut info = HashMap::new();
    if request.verbose {
        let runtime = super::verbose::runtime_binary(
            services.containers.handlers(),
            &sandbox.runtime_handler,
        );
        let info_json = super::verbose::sandbox_info(&sandbox, &runtime)?;
        info.insert("info".to_string(), info_json);
    }
    let reply = PodSandboxStatusResponse {
        status: Some(convert::sandbox_status(&sandbox)),
        info,
        containers_statuses: vec![],
        timestamp: 0,
    };
    validate::fits("PodSandboxStatus", "ask without verbose", reply)
}

pub fn list(
    services: &Services,
    filter: Option<&PodSandboxFilter>,
) -> Result<Vec<PodSandbox>, Status> {
    let id_prefix = filter.map(|f| f.id.as_str()).unwrap_or("");
    validate::optional_id(id_prefix, "filter.id")?;
    let state = filter.and_then(|f| f.state.as_ref()).map(|s| s.state);
    let labels = filter.map(|f| &f.label_selector);
    let sandboxes = services
        .sandboxes
        .list()
        .iter()
        .filter(|s| s.id.starts_with(id_prefix))
        .filter(|s| state.is_none_or(|wanted| convert::sandbox_state(s.state) as i32 == wanted))
        .filter(|s| labels.is_none_or(|l| l.iter().all(|(k, v)| s.config.labels.get(k) == Some(v))))
        .map(|sandbox| convert::sandbox(sandbox))
        .collect();
    Ok(sandboxes)
}

/// UpdatePodSandboxResources (kubelet's in-place pod resize), as containerd
/// 2.x answers it: the pod must exist and the values must be sane, and
/// nothing is written. kubelet itself resizes the pod-level cgroup
/// (`cgroup_parent`) before or after this call, and each container's own
/// limits come through UpdateContainerResources; containerd only hands the
/// values to NRI plugins, which Wharf does not have. Writing the pod cgroup
/// here as well would race kubelet's own writes to the same files.
pub async fn update_resources(
    services: &Services,
    request: UpdatePodSandboxResourcesRequest,
) -> Result<UpdatePodSandboxResourcesResponse, Status> {
    let id = validate::id(&request.pod_sandbox_id, "pod_sandbox_id")?;
    let sandbox = services.sandboxes.get(id).map_err(status_of)?.get();
    let host = services.containers.host_features();
    for (field, resources) in [
        ("resources", request.resources.as_ref()),
        ("overhead", request.overhead.as_ref()),
    ] {
        crate::container::spec::update_resources(None, resources, host)
            .map_err(|e| Status::invalid_argument(format!("pod {field}: {e}")))?;
    }
    tracing::info!(
        pod = %sandbox.id,
        cgroup_parent = %sandbox.config.linux.as_ref().map_or("", |l| l.cgroup_parent.as_str()),
        "UpdatePodSandboxResources: the pod-level cgroup is kubelet's; nothing to apply"
    );
    Ok(UpdatePodSandboxResourcesResponse {})
}
