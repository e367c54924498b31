//! Start-up: every container record reconciled with what runs, and what
//! a crash left half-made removed.

use std::path::Path;

use super::record;
use super::{rootfs, ContainerError, ContainerService, Entry};
use crate::runtime::{self, ContainerEnd};

impl ContainerService {
    /// Loads every container record and reconciles it with what is running;
    /// removes what a CreateContainer interrupted by a crash left behind.
    pub(super) async fn recover(&self) -> Result<(), ContainerError> {
        // Writable layers whose deletion a crash or stop cut short.
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || match crate::store::remove_temporaries(&root) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "deleted the leftovers of removed containers"),
            Err(e) => tracing::warn!(error = %e, "deleting the leftovers of removed containers"),
        });
        let mut recovered = std::collections::HashMap::new();
        for dir in crate::store::list_subdirs(&self.root)? {
            let id = file_name(&dir);
            let container = match record::load(&dir) {
                Ok(Some(container)) if self.sandboxes.get(&container.sandbox_id).is_ok() => {
                    container
                }
                _ => {
                    tracing::warn!(id = %id, "removing an incomplete or orphaned container");
                    self.discard(&id).await;
                    continue;
                }
            };
            self.images.hold_layers(&id, container.layers.clone());
            self.names.reserve(&container.name, &id).ok();
            let entry = Entry::new(container, self.changes.clone());
            if entry.get().start_requested_at_ns.is_some() {
                // A StartContainer was cut short: did the runtime start it?
                // A deferred one whose monitor lives is asked to finish it.
                let outcome = self.finish_start(&entry.get()).await;
                tracing::warn!(id = %id, ?outcome, "reconciling a start interrupted by a crash");
                let reconciled = entry.update(|c| outcome.apply(c, &Ok(())));
                record::save(&dir, &reconciled, false)?;
            }
            let container = entry.get();
            if container.state().may_run() {
                // Read once, so that an exit while no daemon ran shows at
                // once; from here on the watcher reports it.
                let alive = runtime::monitor_alive(&container.state_dir);
                match runtime::read_exit(&container.state_dir) {
                    Ok(Some(exit)) => {
                        entry.record_end(ContainerEnd::Exited(exit));
                    }
                    _ if !alive => {
                        tracing::warn!(id = %id, "monitor gone without recording an exit");
                        let lost = entry.record_end(ContainerEnd::Lost);
                        record::save(&dir, &lost, false)?;
                    }
                    _ => entry.watch_exit(),
                }
            }
            recovered.insert(id, entry);
        }
        for dir in crate::store::list_subdirs(&self.state)? {
            let id = file_name(&dir);
            if !recovered.contains_key(&id) {
                tracing::warn!(id = %id, "removing state of an unknown container");
                self.discard(&id).await;
            }
        }
        tracing::info!(containers = recovered.len(), "containers recovered");
        crate::metrics::global().containers_recovered(recovered.len() as u64);
        *self.containers.write().unwrap_or_else(|e| e.into_inner()) = recovered;
        Ok(())
    }

    /// Best-effort removal of everything a container ID may have on the host.
    async fn discard(&self, id: &str) {
        let state_dir = self.state_dir(id);
        // A monitor waiting for a start that will never come.
        if runtime::monitor_alive(&state_dir) {
            if let Err(e) = runtime::cancel_with_monitor(&state_dir).await {
                tracing::warn!(id, error = %e, "cancelling the monitor");
            }
        }
        // Which handler ran it is in the record, which may be gone: ask
        // them all (deleting an unknown container is fine).
        for handler in self.options.handlers.all() {
            if let Err(e) = handler.runtime.delete(id, true).await {
                tracing::warn!(id, handler = %handler.name, error = %e, "deleting runtime container");
            }
        }
        if let Err(e) = rootfs::unmount(&state_dir.join("rootfs")) {
            tracing::warn!(id, error = %e, "unmounting rootfs");
        }
        // Never delete through a host volume left mounted by a crash.
        match crate::idmap::unmount_all(&super::create::idmapped_volumes_dir(&state_dir)) {
            Ok(()) => drop(std::fs::remove_dir_all(&state_dir)),
            Err(e) => {
                tracing::warn!(id, error = %e, "keeping the state of a container with volumes still mounted")
            }
        }
        let _ = crate::store::remove_dir_atomic(&self.record_dir(id));
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
