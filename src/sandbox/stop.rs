//! Stopping and removing pods, and the pod lock that keeps containers
//! from being created while that happens. The container service takes part
//! through the closures it passes in; the lock itself stays here.

use std::sync::Arc;

use crate::sync::TaskFailure;
use crate::timing::{step, step_sync};

use super::{files, namespaces, pod_network, record, Entry, Sandbox, SandboxError, SandboxService};
use super::{PodEvent, SandboxState};

impl SandboxService {
    /// Runs `create` on pod `id` while it is Ready, holding its lock: a
    /// StopPodSandbox waits until `create` is done (and then sees what it
    /// made), and `create` never runs on a pod being stopped.
    pub async fn while_ready<T, E: From<SandboxError>>(
        &self,
        id: &str,
        create: impl AsyncFnOnce(Sandbox) -> Result<T, E>,
    ) -> Result<T, E> {
        let entry = self.get(id)?;
        let _op = entry.op.lock().await;
        let sandbox = entry.get();
        if sandbox.state != SandboxState::Ready {
            return Err(SandboxError::NotReady(sandbox.id).into());
        }
        create(sandbox).await
    }

    /// StopPodSandbox: `stop_containers` (given the pod's full ID), then the
    /// pod's network and namespaces, holding the pod's lock throughout so
    /// that no container is created meanwhile. Unknown pods succeed (CRI).
    pub async fn stop_pod<E: From<SandboxError>>(
        &self,
        id: &str,
        stop_containers: impl AsyncFnOnce(&str) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(entry) = self.get_or_none(id)? else {
            return Ok(());
        };
        let _op = entry.op.lock().await;
        step("stopping the containers", stop_containers(&entry.get().id)).await?;
        Ok(self.teardown(&entry).await?)
    }

    /// RemovePodSandbox: `remove_containers`, then the pod, as
    /// [`SandboxService::stop_pod`] does. Unknown pods succeed (CRI).
    pub async fn remove_pod<E: From<SandboxError>>(
        &self,
        id: &str,
        remove_containers: impl AsyncFnOnce(&str) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(entry) = self.get_or_none(id)? else {
            return Ok(());
        };
        let _op = entry.op.lock().await;
        step(
            "removing the containers",
            remove_containers(&entry.get().id),
        )
        .await?;
        Ok(self.forget(&entry).await?)
    }

    fn get_or_none(&self, id: &str) -> Result<Option<Arc<Entry>>, SandboxError> {
        match self.get(id) {
            Ok(entry) => Ok(Some(entry)),
            Err(SandboxError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Tears the network down and releases the namespaces and `/dev/shm`;
    /// the record stays, NotReady. With `entry.op` held and the containers
    /// stopped. Repeating it is harmless.
    async fn teardown(&self, entry: &Entry) -> Result<(), SandboxError> {
        let sandbox = entry.get();
        // Deleted once by StopPodSandbox, not again by RemovePodSandbox.
        let network = sandbox.namespaces.net.as_ref();
        if let Some(netns) = network.filter(|_| !sandbox.network_released) {
            let pod = pod_network(&sandbox.id, &sandbox.config, netns);
            let cni = Arc::clone(&self.cni);
            let teardown = async move { cni.teardown(&pod).await };
            let teardown = SandboxError::to_completion("tearing down the pod network", teardown);
            step("CNI DEL", teardown).await?;
        }
        // A reap and unmounts: off the async workers.
        let released = sandbox.clone();
        let release = SandboxError::blocking("releasing the pod's namespaces", move || {
            release_namespaces(&released)
        });
        step("releasing the namespaces", release).await?;
        if sandbox.state != SandboxState::NotReady || !sandbox.network_released {
            let stopped = entry.update(Sandbox::mark_stopped);
            let (record_dir, saved) = (self.record_dir(&stopped.id), stopped.clone());
            let save = SandboxError::blocking("recording NotReady", move || {
                record::save_unsynced(&record_dir, &saved)
            });
            step("recording NotReady", save).await?;
            if sandbox.state != SandboxState::NotReady {
                self.announce(&stopped.id, PodEvent::Stopped);
            }
        }
        Ok(())
    }

    /// Removes a sandbox's record and state, with `entry.op` held and the
    /// containers removed.
    async fn forget(&self, entry: &Entry) -> Result<(), SandboxError> {
        step("teardown", self.teardown(entry)).await?;
        let sandbox = entry.get();
        // An fsync and a recursive removal: off the async workers.
        let record_dir = self.record_dir(&sandbox.id);
        let remove = SandboxError::blocking("removing the pod's record", move || {
            crate::store::remove_dir_atomic(&record_dir)
        });
        step("removing the record", remove).await?;
        self.clean_state(&sandbox.id);
        self.names.release(&sandbox.name);
        self.sandboxes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sandbox.id);
        self.announce(&sandbox.id, PodEvent::Deleted);
        Ok(())
    }
}

/// The PID holder stopped, the namespaces unpinned, `/dev/shm` unmounted.
fn release_namespaces(sandbox: &Sandbox) -> Result<(), SandboxError> {
    if let Some(holder) = &sandbox.pid_holder {
        step_sync("stopping the PID holder", || holder.stop())?;
    }
    step_sync("unpinning the namespaces", || {
        namespaces::unpin(&sandbox.state_dir.join("ns"))
    })?;
    step_sync("unmounting /dev/shm", || {
        files::unmount_shm(&sandbox.state_dir)
    })?;
    Ok(())
}
