//! The persisted container record: `container.json` beside `config.pb`
//! (kubelet's `ContainerConfig`, protobuf-encoded, as it came). The state
//! is derived from the timestamps and the monitor's exit record, never
//! stored twice.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ContainerError;
use crate::api;
use crate::runtime::ExitStatus;
use crate::store::{self, StoreError};

const RECORD_FILE: &str = "container.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    /// A start was requested and its outcome is not known: no start is in
    /// flight, and the runtime could not say whether it happened.
    Unknown,
}

impl ContainerState {
    /// StartContainer needs a container never started (as youki's
    /// `can_start`): not one whose start may have happened.
    pub fn can_start(self) -> bool {
        self == ContainerState::Created
    }

    /// Whether the runtime may hold a process of the container: its exit is
    /// to be watched, a stop signals it and new resources are applied.
    pub fn may_run(self) -> bool {
        self != ContainerState::Exited
    }
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
    /// A StartContainer of this daemon is under way: set with
    /// `start_requested_at_ns`, cleared once its outcome is recorded (or
    /// the call is dropped). Never saved: after a restart no start is in
    /// flight, and a requested start left unresolved is Unknown.
    #[serde(skip)]
    pub start_in_flight: bool,
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

pub(super) fn state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Unknown => "unknown",
    }
}

pub(super) fn wrong_state(
    container: &Container,
    action: &'static str,
    needed: &'static str,
) -> ContainerError {
    ContainerError::WrongState {
        id: container.id.clone(),
        state: state_name(container.state()),
        action,
        needed,
    }
}

impl Container {
    /// An exit or a failure wins over everything; then a recorded start;
    /// then a requested start that nothing resolves (none in flight) is
    /// Unknown. During a StartContainer the container stays Created:
    /// kubelet kills what it sees Unknown.
    pub fn state(&self) -> ContainerState {
        if self.exit.is_some() || self.failure.is_some() {
            ContainerState::Exited
        } else if self.started_at_ns.is_some() {
            ContainerState::Running
        } else if self.start_requested_at_ns.is_some() && !self.start_in_flight {
            ContainerState::Unknown
        } else {
            ContainerState::Created
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::tests::container;

    #[test]
    fn created_then_running_then_exited() {
        let mut container = container(false);
        assert_eq!(container.state(), ContainerState::Created);
        assert!(container.state().can_start());
        container.started_at_ns = Some(2);
        assert_eq!(container.state(), ContainerState::Running);
        assert!(!container.state().can_start() && container.state().may_run());
        container.exit = Some(ExitStatus::exited(0, 3));
        assert_eq!(container.state(), ContainerState::Exited);
        assert!(!container.state().may_run());
    }

    #[test]
    fn a_failed_start_goes_from_created_to_exited() {
        let mut container = container(false);
        container.failure = Some("exec: no such file".into());
        assert_eq!(container.state(), ContainerState::Exited);
        assert!(!container.state().can_start());
    }

    #[test]
    fn a_start_in_flight_stays_created() {
        let mut container = container(false);
        container.start_requested_at_ns = Some(2);
        container.start_in_flight = true;
        assert_eq!(container.state(), ContainerState::Created);
    }

    #[test]
    fn an_unresolved_start_is_unknown_and_stays_so_across_a_restart() {
        let mut container = container(false);
        container.start_requested_at_ns = Some(2);
        assert_eq!(container.state(), ContainerState::Unknown);
        assert!(!container.state().can_start() && container.state().may_run());

        // A start in flight when the daemon died: the record as recovery
        // loads it has no start in flight.
        container.start_in_flight = true;
        let saved = serde_json::to_vec(&container).unwrap();
        let loaded: Container = serde_json::from_slice(&saved).unwrap();
        assert!(!loaded.start_in_flight);
        assert_eq!(loaded.state(), ContainerState::Unknown);
    }

    #[test]
    fn a_recorded_exit_wins_over_everything() {
        let mut container = container(true);
        container.start_requested_at_ns = Some(3);
        container.start_in_flight = true;
        container.failure = Some("lost".into());
        container.exit = Some(ExitStatus::exited(1, 4));
        assert_eq!(container.state(), ContainerState::Exited);
        container.started_at_ns = None;
        container.start_in_flight = false;
        assert_eq!(container.state(), ContainerState::Exited);
    }
}
