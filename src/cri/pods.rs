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
    services
        .containers
        .handlers()
        .get(&request.runtime_handler)
        .map_err(|e| status_of(crate::container::ContainerError::from(e)))?;
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
    let sandbox = services.sandboxes.get(id).map_err(status_of)?.get();
    let mut info = HashMap::new();
    if request.verbose {
        let info_json = super::verbose::sandbox_info(&sandbox, &services.config.runtime.path)?;
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
        .map(convert::sandbox)
        .collect();
    Ok(sandboxes)
}
