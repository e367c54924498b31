//! The persisted container record: `container.json` beside `config.pb`
//! (kubelet's `ContainerConfig`, protobuf-encoded, as it came). The state
//! is derived from the timestamps and the monitor's exit record, never
//! stored twice.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api;
use crate::runtime::ExitStatus;
use crate::store::{self, StoreError};

const RECORD_FILE: &str = "container.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    /// `<name>_<pod>_<namespace>_<uid>_<attempt>`, unique among containers.
    pub name: String,
    pub created_at_ns: i64,
    pub started_at_ns: Option<i64>,
    /// When a StartContainer began, until it is recorded as started or
    /// failed: after a crash in between, recovery asks the runtime whether
    /// the start happened, and if so this is its start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_requested_at_ns: Option<i64>,
    /// The image as kubelet named it, its ID, and the repo digest it was
    /// pulled by (what `ContainerStatus.image_ref` reports).
    pub image_name: String,
    pub image_id: String,
    pub image_ref: String,
    pub layers: Vec<crate::image::digest::Digest>,
    /// Absolute path of the CRI log, if kubelet asked for one.
    pub log_path: Option<PathBuf>,
    /// Bundle and monitor state (`config.json`, `exit.json`, sockets).
    pub state_dir: PathBuf,
    pub rootfs: PathBuf,
    pub stop_signal: i32,
    /// Set when the container could not be started or its monitor vanished
    /// without recording an exit.
    pub failure: Option<String>,
    /// The init process's identity as the kernel had it once created (the
    /// user, group and groups runc gave it); absent in records written
    /// before Wharf read it, and when the process was already gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<super::identity::ProcessIdentity>,
    /// Created by a monitor that runs the container itself at
    /// StartContainer (`runtime run --detach`); false in records of
    /// containers made with `runtime create` (by Wharf before it deferred
    /// starts), which `runtime start` starts.
    #[serde(default)]
    pub deferred_start: bool,
    /// The pod's runtime handler, whose runtime runs the container ("" for
    /// the default, and in records from before handlers).
    #[serde(default)]
    pub runtime_handler: String,
    /// The cgroup resources in force: those of the spec at creation, then
    /// as UpdateContainerResources changed them (absent in records from
    /// before updates were recorded: the config's then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<oci_spec::runtime::LinuxResources>,
    #[serde(skip)]
    pub exit: Option<ExitStatus>,
    #[serde(skip)]
    pub config: api::ContainerConfig,
}

impl Container {
    pub fn state(&self) -> ContainerState {
        match (&self.exit, self.started_at_ns, &self.failure) {
            (Some(_), _, _) | (None, _, Some(_)) => ContainerState::Exited,
            (None, Some(_), None) => ContainerState::Running,
            (None, None, None) => ContainerState::Created,
        }
    }

    pub fn metadata(&self) -> api::ContainerMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
}

/// Writes the record; with `with_config`, the CRI config too (it never
/// changes after creation).
pub fn save(dir: &Path, container: &Container, with_config: bool) -> Result<(), StoreError> {
    store::save_record(
        dir,
        RECORD_FILE,
        container,
        with_config.then_some(&container.config),
    )
}

/// Writes the CRI config ahead of the record, which is then saved without
/// it (see [`store::save_config`]).
pub fn save_config(dir: &Path, config: &api::ContainerConfig) -> Result<(), StoreError> {
    store::save_config(dir, config)
}

/// Writes the record so that it survives a crash of the daemon but not
/// necessarily of the machine; see [`store::write_atomic_unsynced`].
pub fn save_unsynced(dir: &Path, container: &Container) -> Result<(), StoreError> {
    store::write_json_atomic_unsynced(&dir.join(RECORD_FILE), container)
}

/// `Ok(None)` when the record is incomplete.
pub fn load(dir: &Path) -> Result<Option<Container>, StoreError> {
    let loaded = store::load_record::<Container, api::ContainerConfig>(dir, RECORD_FILE)?;
    Ok(loaded.map(|(mut container, config)| {
        container.config = config;
        container
    }))
}
