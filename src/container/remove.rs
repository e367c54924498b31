//! RemoveContainer, and removing every container of a pod for
//! RemovePodSandbox: stopped, deleted from the runtime, unmounted, the
//! files gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{rootfs, ContainerError, ContainerService, Entry};
use crate::sync::TaskFailure;
use crate::timing::{step, step_sync};

impl ContainerService {
    /// RemoveContainer: forcibly, and succeeding for an unknown container.
    pub async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let entry = match self.get(id) {
            Ok(entry) => entry,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = entry.op.lock().await;
        self.remove_locked(&entry, LayerDeletion::Background).await
    }

    async fn remove_locked(
        &self,
        entry: &Entry,
        layer_deletion: LayerDeletion,
    ) -> Result<(), ContainerError> {
        step("stopping", self.stop_locked(entry, Duration::ZERO)).await?;
        let container = entry.get();
        // A deferred start's monitor deleted it when it exited.
        if !container.exit.is_some_and(|exit| exit.runtime_deleted) {
            let runtime = self.runtime_of(&container)?;
            step("runtime delete", runtime.delete(&container.id, true)).await?;
        }
        // Its files are going: the watch (if it still runs) ends here.
        entry.stop_watching();
        step_sync("unmounting the rootfs", || {
            rootfs::unmount(&container.rootfs)
        })?;
        let (record_dir, state_dir) = (self.record_dir(&container.id), container.state_dir.clone());
        let (images, id) = (std::sync::Arc::clone(&self.images), container.id.clone());
        let remove = ContainerError::blocking("removing the container's files", move || {
            let detached = remove_files(&record_dir, &state_dir)?;
            images.release_layers(&id)?;
            Ok::<_, ContainerError>(detached)
        });
        let detached = step("removing the files", remove).await?;
        if let Some(detached) = detached {
            layer_deletion.delete(detached).await?;
        }
        self.containers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&container.id);
        let _ = self.changes.send(super::StateChange {
            id: container.id.clone(),
            sandbox_id: container.sandbox_id.clone(),
            state: None,
        });
        self.names.release(&container.name);
        Ok(())
    }

    /// Removes every container of pod `sandbox_id` (for RemovePodSandbox).
    pub async fn remove_all_in(&self, sandbox_id: &str) -> Result<(), ContainerError> {
        for container in self.in_sandbox(sandbox_id) {
            let _op = container.op.lock().await;
            // The pod's removal ends with nothing of it left on disk.
            self.remove_locked(&container, LayerDeletion::Inline)
                .await?;
        }
        Ok(())
    }
}

/// When the writable layer of a removed container is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerDeletion {
    /// Before the removal returns.
    Inline,
    /// After: the layer can be any size, and once its directory is renamed
    /// away the container is gone (as containerd's snapshots go in its
    /// garbage collection, after RemoveContainer). A crash first leaves a
    /// temporary that the next start deletes (see `recover`).
    Background,
}

impl LayerDeletion {
    async fn delete(self, detached: PathBuf) -> Result<(), ContainerError> {
        let delete = move || {
            std::fs::remove_dir_all(&detached).map_err(|e| {
                ContainerError::Store(crate::error::IoError::new("removing", detached, e).into())
            })
        };
        match self {
            LayerDeletion::Inline => {
                let delete = ContainerError::blocking("deleting the writable layer", delete);
                step("deleting the writable layer", delete).await
            }
            LayerDeletion::Background => {
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = delete() {
                        tracing::warn!(error = %e, "deleting a removed container's writable layer");
                    }
                });
                Ok(())
            }
        }
    }
}

/// Removes a container's state and renames its record (with its writable
/// layer) away: the renamed directory is returned, to be deleted.
///
/// The rename is not synced: a machine crash right after may bring the
/// record back whole, an exited container (its monitor gone with the
/// reboot) that kubelet removes again; a directory sync here would be a
/// journal commit on every RemoveContainer.
fn remove_files(record_dir: &Path, state_dir: &Path) -> Result<Option<PathBuf>, ContainerError> {
    let detached = crate::store::detach_dir_unsynced(record_dir)?;
    // Never delete through a host volume left mounted by a crash.
    crate::idmap::unmount_all(&super::create::idmapped_volumes_dir(state_dir))?;
    if let Err(e) = std::fs::remove_dir_all(state_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %state_dir.display(), error = %e, "removing container state");
        }
    }
    Ok(detached)
}
