//! The persisted sandbox record: `sandbox.json` (what Wharf made) beside
//! `config.pb` (kubelet's `PodSandboxConfig`, protobuf-encoded, as it came).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::namespaces::{PidHolder, PinnedNamespaces};
use crate::api;
use crate::store::{self, StoreError};

const RECORD_FILE: &str = "sandbox.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// Which namespaces the pod shares with the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceModes {
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// All containers share one PID namespace (shareProcessNamespace).
    pub pod_pid: bool,
}

impl NamespaceModes {
    pub fn from_config(config: &api::PodSandboxConfig) -> NamespaceModes {
        let options = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let mode = |m: i32| api::NamespaceMode::try_from(m).unwrap_or(api::NamespaceMode::Pod);
        match options {
            None => NamespaceModes::default(),
            Some(o) => NamespaceModes {
                host_network: mode(o.network) == api::NamespaceMode::Node,
                host_ipc: mode(o.ipc) == api::NamespaceMode::Node,
                host_pid: mode(o.pid) == api::NamespaceMode::Node,
                pod_pid: mode(o.pid) == api::NamespaceMode::Pod,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    /// `<name>_<namespace>_<uid>_<attempt>`, unique among live sandboxes.
    pub name: String,
    pub created_at_ns: i64,
    pub state: SandboxState,
    pub modes: NamespaceModes,
    pub namespaces: PinnedNamespaces,
    /// The init of the pod's shared PID namespace, when it has one.
    #[serde(default)]
    pub pid_holder: Option<PidHolder>,
    /// Primary first.
    pub ips: Vec<String>,
    pub hostname: String,
    pub state_dir: PathBuf,
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    pub hostname_file: PathBuf,
    /// The pod's `/dev/shm`; none when it shares the host's IPC.
    pub shm: Option<PathBuf>,
    /// The pod's own user namespace (`userns_options` mode POD), pinned
    /// as `namespaces.user`; none when it shares the host's.
    #[serde(default)]
    pub userns: Option<crate::idmap::UsernsMappings>,
    /// The RuntimeClass handler the pod was run with ("" for the default,
    /// and in records from before handlers).
    #[serde(default)]
    pub runtime_handler: String,
    /// A StopPodSandbox deleted the pod's network (CNI DEL succeeded):
    /// RemovePodSandbox has none left to delete. False for a pod found
    /// NotReady at start-up, whose network may still hold an address.
    #[serde(default)]
    pub network_released: bool,
    #[serde(skip)]
    pub config: api::PodSandboxConfig,
}

impl Sandbox {
    /// Whether the namespace pins this record names still exist (they do
    /// not after a reboot).
    pub fn pins_intact(&self) -> bool {
        [
            &self.namespaces.net,
            &self.namespaces.ipc,
            &self.namespaces.uts,
            &self.namespaces.user,
        ]
        .into_iter()
        .flatten()
        .all(|pin| pin.exists())
    }

    /// StopPodSandbox done: NotReady, its network deleted.
    pub fn mark_stopped(&mut self) {
        self.state = SandboxState::NotReady;
        self.network_released = true;
    }

    /// At start-up: a Ready pod whose namespace pins are gone (a reboot
    /// empties the state directory) is NotReady; its network may still
    /// hold an address, so it is not released. Whether the state changed.
    pub fn recover_state(&mut self) -> bool {
        if self.state == SandboxState::Ready && !self.pins_intact() {
            self.state = SandboxState::NotReady;
            return true;
        }
        false
    }

    pub fn metadata(&self) -> api::PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
}

/// Writes the record; with `with_config`, the CRI config too (it never
/// changes after creation).
pub fn save(dir: &Path, sandbox: &Sandbox, with_config: bool) -> Result<(), StoreError> {
    store::save_record(
        dir,
        RECORD_FILE,
        sandbox,
        with_config.then_some(&sandbox.config),
    )
}

/// Writes the record without the fsyncs, for changes a reboot makes moot
/// (every pod is NotReady after one); see [`store::write_atomic_unsynced`].
pub fn save_unsynced(dir: &Path, sandbox: &Sandbox) -> Result<(), StoreError> {
    store::write_json_atomic_unsynced(&dir.join(RECORD_FILE), sandbox)
}

/// `Ok(None)` when the record is incomplete.
pub fn load(dir: &Path) -> Result<Option<Sandbox>, StoreError> {
    let loaded = store::load_record::<Sandbox, api::PodSandboxConfig>(dir, RECORD_FILE)?;
    Ok(loaded.map(|(mut sandbox, config)| {
        sandbox.config = config;
        sandbox
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Ready pod with its network namespace pinned at `ns/net` under
    /// `state_dir`.
    fn ready_pod(state_dir: &Path) -> Sandbox {
        let net = state_dir.join("ns").join("net");
        std::fs::create_dir_all(net.parent().unwrap()).unwrap();
        std::fs::write(&net, b"").unwrap();
        Sandbox {
            id: "p1".into(),
            name: "pod_ns_uid_0".into(),
            created_at_ns: 1,
            state: SandboxState::Ready,
            modes: NamespaceModes::default(),
            namespaces: PinnedNamespaces {
                net: Some(net),
                ..Default::default()
            },
            pid_holder: None,
            ips: vec!["10.88.0.2".into()],
            hostname: "pod".into(),
            state_dir: state_dir.to_path_buf(),
            resolv_conf: state_dir.join("resolv.conf"),
            hosts: state_dir.join("hosts"),
            hostname_file: state_dir.join("hostname"),
            shm: None,
            userns: None,
            runtime_handler: String::new(),
            network_released: false,
            config: Default::default(),
        }
    }

    #[test]
    fn a_stopped_pod_is_not_ready_with_its_network_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut pod = ready_pod(dir.path());
        pod.mark_stopped();
        assert_eq!(pod.state, SandboxState::NotReady);
        assert!(pod.network_released);
        // Recovery leaves a stopped pod as it is.
        assert!(!pod.recover_state());
        assert_eq!(pod.state, SandboxState::NotReady);
    }

    #[test]
    fn a_pod_stays_ready_across_a_restart_while_its_pins_exist() {
        let dir = tempfile::tempdir().unwrap();
        let mut pod = ready_pod(dir.path());
        assert!(!pod.recover_state());
        assert_eq!(pod.state, SandboxState::Ready);
    }

    #[test]
    fn a_pod_whose_state_dir_a_reboot_emptied_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let mut pod = ready_pod(dir.path());
        std::fs::remove_dir_all(dir.path().join("ns")).unwrap();
        assert!(pod.recover_state());
        assert_eq!(pod.state, SandboxState::NotReady);
        // Its network was never deleted: RemovePodSandbox still does it.
        assert!(!pod.network_released);
    }
}
