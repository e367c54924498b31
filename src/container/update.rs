//! UpdateContainerResources and ReopenContainerLog: changes to a
//! container that exists.

use std::path::PathBuf;

use super::record::{self, wrong_state, Container, ContainerState};
use super::spec;
use super::{ContainerError, ContainerService};
use crate::api;
use crate::runtime;
use crate::sync::TaskFailure;

impl ContainerService {
    /// UpdateContainerResources, as containerd does it: the request is laid
    /// over the current resources; a created or running container's cgroup
    /// gets them through the runtime (`runc update`), an exited one only
    /// keeps them in its record (nothing runs to apply them to). The record
    /// changes only once the runtime has applied them.
    pub async fn update_resources(
        &self,
        id: &str,
        requested: Option<&api::LinuxContainerResources>,
    ) -> Result<(), ContainerError> {
        let entry = self.get(id)?;
        let _op = entry.op.lock().await;
        let container = entry.get();
        let current = match &container.resources {
            Some(current) => current.clone(),
            None => spec::resources_at_create(&container.config, &self.options.host)?,
        };
        let updated = spec::update_resources(Some(&current), requested, &self.options.host)?;
        // The bundle spec first, as containerd updates its spec first: it
        // is put back if the runtime refuses.
        let config_json = container.state_dir.join("config.json");
        let previous_spec = {
            let (path, resources) = (config_json.clone(), updated.clone());
            ContainerError::blocking("rewriting the bundle spec", move || {
                spec::rewrite_bundle_resources(&path, &resources)
            })
            .await?
        };
        let applied = if container.state().may_run() {
            self.apply_resources(&container, &current, &updated).await
        } else {
            tracing::info!(id = %container.id, "container not running: resources recorded only");
            Ok(())
        };
        if let (Err(_), Some(previous)) = (&applied, previous_spec) {
            let restored = tokio::task::spawn_blocking(move || {
                crate::store::write_atomic(&config_json, &previous)
            })
            .await;
            if !matches!(restored, Ok(Ok(()))) {
                tracing::error!(id = %container.id, ?restored, "putting back the bundle spec of a refused update");
            }
        }
        applied?;
        let recorded = entry.update(|c| c.resources = Some(updated));
        record::save(&self.record_dir(&container.id), &recorded, false)?;
        Ok(())
    }

    /// `runc update`. The kernel may refuse part of an update (a memory
    /// limit below the usage, a CPU the host lacks) after runc wrote the
    /// rest: the previous resources are then put back, so that a refused
    /// update changes nothing. A container gone meanwhile is not an error
    /// (containerd: "task exited already").
    async fn apply_resources(
        &self,
        container: &Container,
        current: &oci_spec::runtime::LinuxResources,
        updated: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), ContainerError> {
        let runtime = self.runtime_of(container)?;
        let before = self.enforced_limits(container).await?;
        let error = match runtime.update(&container.id, updated).await {
            Ok(()) => return Ok(()),
            Err(error) if error.is_not_found() => return Ok(()),
            Err(error) => error,
        };
        let previous = spec::restoring(current, updated, &before);
        if let Err(e) = runtime.update(&container.id, &previous).await {
            tracing::error!(id = %container.id, error = %e, "putting back the resources of a refused update");
        }
        Err(match error {
            refused @ runtime::RuntimeError::Failed { .. } => {
                ContainerError::UpdateRefused(refused)
            }
            other => other.into(),
        })
    }

    /// What the container's cgroup enforces now, read from its files.
    async fn enforced_limits(
        &self,
        container: &Container,
    ) -> Result<crate::stats::limits::EnforcedLimits, ContainerError> {
        let sandbox = self.sandboxes.get(&container.sandbox_id)?.get();
        let parent = sandbox
            .config
            .linux
            .as_ref()
            .map_or("", |l| l.cgroup_parent.as_str());
        let cgroup = PathBuf::from(super::cgroups_path(parent, &container.id));
        ContainerError::blocking("reading the cgroup limits", move || {
            // Without cgroups mounted nothing is enforced: nothing to read.
            let enforced = crate::cgroup::Hierarchies::detect()
                .map(|hierarchies| crate::stats::limits::enforced(&hierarchies, &cgroup))
                .unwrap_or_default();
            Ok::<_, ContainerError>(enforced)
        })
        .await
    }

    /// ReopenContainerLog: returns once the monitor writes to a fresh file.
    pub async fn reopen_log(&self, id: &str) -> Result<(), ContainerError> {
        let container = self.get(id)?.get();
        if container.state() != ContainerState::Running {
            return Err(wrong_state(&container, "reopening the log", "running"));
        }
        Ok(runtime::reopen_log(&container.state_dir).await?)
    }
}
