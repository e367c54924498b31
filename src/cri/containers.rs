//! Container RPCs: validate, translate, call the services.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::convert::runtime as convert;
use super::proto::*;
use super::{required, status_of, validate, Services};
use crate::container::{self, ContainerFilter as Filter};

pub async fn create(
    services: &Services,
    request: CreateContainerRequest,
) -> Result<CreateContainerResponse, Status> {
    let sandbox_id = validate::id(&request.pod_sandbox_id, "pod_sandbox_id")?;
    let config = request.config.ok_or_else(|| required("config"))?;
    validate::container_config(&config)?;
    let container = services
        .containers
        .create(sandbox_id, config)
        .await
        .map_err(status_of)?;
    Ok(CreateContainerResponse {
        container_id: container.id,
    })
}

pub async fn start(
    services: &Services,
    request: StartContainerRequest,
) -> Result<StartContainerResponse, Status> {
    let id = validate::id(&request.container_id, "container_id")?;
    services.containers.start(id).await.map_err(status_of)?;
    Ok(StartContainerResponse {})
}

pub async fn stop(
    services: &Services,
    request: StopContainerRequest,
) -> Result<StopContainerResponse, Status> {
    let id = validate::id(&request.container_id, "container_id")?;
    let timeout = Duration::from_secs(request.timeout.max(0) as u64);
    match services.containers.stop(id, timeout).await {
        // Stopping an unknown container succeeds, as kubelet expects.
        Err(crate::container::ContainerError::NotFound(_)) => Ok(StopContainerResponse {}),
        result => result.map(|()| StopContainerResponse {}).map_err(status_of),
    }
}

pub async fn remove(
    services: &Services,
    request: RemoveContainerRequest,
) -> Result<RemoveContainerResponse, Status> {
    let id = validate::id(&request.container_id, "container_id")?;
    services.containers.remove(id).await.map_err(status_of)?;
    Ok(RemoveContainerResponse {})
}

pub fn list(
    services: &Services,
    filter: Option<&ContainerFilter>,
) -> Result<Vec<Container>, Status> {
    if let Some(filter) = filter {
        validate::optional_id(&filter.id, "filter.id")?;
        validate::optional_id(&filter.pod_sandbox_id, "filter.pod_sandbox_id")?;
    }
    let filter = Filter {
        id: filter.map(|f| f.id.clone()).filter(|id| !id.is_empty()),
        sandbox_id: filter
            .map(|f| f.pod_sandbox_id.clone())
            .filter(|id| !id.is_empty()),
        state: filter
            .and_then(|f| f.state.as_ref())
            .and_then(|s| convert::container_state_from(s.state)),
        labels: filter.map(|f| f.label_selector.clone()).unwrap_or_default(),
    };
    Ok(services
        .containers
        .list(&filter)
        .iter()
        .map(|container| convert::container(container))
        .collect())
}

pub async fn status(
    services: &Services,
    request: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, Status> {
    let id = validate::id(&request.container_id, "container_id")?;
    let container = services.containers.get(id).map_err(status_of)?.snapshot();
    let mut info = HashMap::new();
    if request.verbose {
        // Reads and parses the bundle's spec: off the async workers.
        let runtime = super::verbose::runtime_binary(
            services.containers.handlers(),
            &container.runtime_handler,
        );
        let record = Arc::clone(&container);
        let encoded =
            tokio::task::spawn_blocking(move || super::verbose::container_info(&record, &runtime))
                .await
                .map_err(|e| Status::internal(format!("gathering container info: {e}")))??;
        info.insert("info".to_string(), encoded);
    }
    let mut status = convert::container_status(&container);
    if let Some(image) = status.image.as_mut() {
        image.image = image_name(services, &container);
    }
    let reply = ContainerStatusResponse {
        status: Some(status),
        info,
    };
    validate::fits("ContainerStatus", "ask without verbose", reply)
}

/// The container's image by name, as containerd reports it: kubelet
/// creates containers with the image's ID, but pod status (and cAdvisor's
/// `image` label) should show the image's first tag while it has one.
pub(super) fn image_name(services: &Services, container: &container::Container) -> String {
    services
        .images
        .resolve(&container.image_id)
        .ok()
        .flatten()
        .and_then(|image| image.repo_tags.into_iter().next())
        .unwrap_or_else(|| container.image_name.clone())
}

pub async fn exec_sync(
    services: &Services,
    request: ExecSyncRequest,
) -> Result<ExecSyncResponse, Status> {
    let id = validate::id(&request.container_id, "container_id")?;
    let timeout = (request.timeout > 0).then(|| Duration::from_secs(request.timeout as u64));
    let output = services
        .containers
        .exec_sync(id, request.cmd, timeout)
        .await
        .map_err(status_of)?;
    if output.timed_out {
        return Err(Status::deadline_exceeded(format!(
            "command timed out after {}s",
            request.timeout
        )));
    }
    // The output is capped to fit (see MAX_EXEC_OUTPUT_BYTES); checked
    // all the same, as a clear error beats a transport failure.
    let reply = ExecSyncResponse {
        stdout: output.stdout,
        stderr: output.stderr,
        exit_code: output.exit_code,
    };
    validate::fits("ExecSync", "redirect the output to a file", reply)
}

pub async fn reopen_log(
    services: &Services,
    request: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse, Status> {
    let id = validate::id(&request.container_id, "container_id")?;
    services
        .containers
        .reopen_log(id)
        .await
        .map_err(status_of)?;
    Ok(ReopenContainerLogResponse {})
}

pub async fn update_resources(
    services: &Services,
    request: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse, Status> {
    let id = validate::id(&request.container_id, "container_id")?;
    services
        .containers
        .update_resources(id, request.linux.as_ref())
        .await
        .map_err(status_of)?;
    Ok(UpdateContainerResourcesResponse {})
}
