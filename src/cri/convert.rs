//! Pure conversions between domain types and CRI messages.

use super::proto;
use crate::image::metadata::ImageRecord;
use crate::image::FsUsage;

/// The CRI view of an image. The config's `User` gives a numeric uid
/// (`1234`, `1234:5678`) or a user name, as kubelet expects.
pub fn image(record: &ImageRecord) -> proto::Image {
    let user = record.user.split(':').next().unwrap_or("");
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(proto::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    proto::Image {
        id: record.id.to_string(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid,
        username,
        spec: Some(proto::ImageSpec {
            image: record.id.to_string(),
            ..Default::default()
        }),
        pinned: record.pinned,
    }
}

pub fn filesystem_usage(usage: FsUsage, mountpoint: &std::path::Path) -> proto::FilesystemUsage {
    proto::FilesystemUsage {
        timestamp: crate::store::now_nanos(),
        fs_id: Some(proto::FilesystemIdentifier {
            mountpoint: mountpoint.display().to_string(),
        }),
        used_bytes: Some(proto::UInt64Value {
            value: usage.used_bytes,
        }),
        inodes_used: Some(proto::UInt64Value {
            value: usage.inodes_used,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::Digest;

    fn record(user: &str) -> ImageRecord {
        ImageRecord {
            id: Digest::of(b"config"),
            repo_tags: vec!["docker.io/library/busybox:latest".into()],
            repo_digests: vec![],
            manifest: Digest::of(b"manifest"),
            blobs: vec![],
            layers: vec![],
            size: 42,
            user: user.into(),
            pinned: false,
        }
    }

    #[test]
    fn image_user_becomes_uid_or_username() {
        let numeric = image(&record("1234:5678"));
        assert_eq!(numeric.uid, Some(proto::Int64Value { value: 1234 }));
        assert_eq!(numeric.username, "");
        let named = image(&record("www-data:1004"));
        assert_eq!(named.uid, None);
        assert_eq!(named.username, "www-data");
        let none = image(&record(""));
        assert_eq!((none.uid, none.username.as_str()), (None, ""));
        assert_eq!(none.spec.unwrap().image, Digest::of(b"config").to_string());
    }
}

pub mod runtime {
    //! Pods and containers as CRI messages.

    use crate::api;
    use crate::container::{Container, ContainerState};
    use crate::sandbox::{Sandbox, SandboxState};

    pub fn sandbox_state(state: SandboxState) -> api::PodSandboxState {
        match state {
            SandboxState::Ready => api::PodSandboxState::SandboxReady,
            SandboxState::NotReady => api::PodSandboxState::SandboxNotready,
        }
    }

    pub fn sandbox(sandbox: &Sandbox) -> api::PodSandbox {
        api::PodSandbox {
            id: sandbox.id.clone(),
            metadata: Some(sandbox.metadata()),
            state: sandbox_state(sandbox.state) as i32,
            created_at: sandbox.created_at_ns,
            labels: sandbox.config.labels.clone(),
            annotations: sandbox.config.annotations.clone(),
            runtime_handler: sandbox.runtime_handler.clone(),
        }
    }

    pub fn sandbox_status(sandbox: &Sandbox) -> api::PodSandboxStatus {
        let mode = |host: bool| {
            if host {
                api::NamespaceMode::Node as i32
            } else {
                api::NamespaceMode::Pod as i32
            }
        };
        let pid = if sandbox.modes.host_pid {
            api::NamespaceMode::Node
        } else if sandbox.modes.pod_pid {
            api::NamespaceMode::Pod
        } else {
            api::NamespaceMode::Container
        };
        let mut ips = sandbox.ips.iter();
        api::PodSandboxStatus {
            id: sandbox.id.clone(),
            metadata: Some(sandbox.metadata()),
            state: sandbox_state(sandbox.state) as i32,
            created_at: sandbox.created_at_ns,
            network: Some(api::PodSandboxNetworkStatus {
                ip: ips.next().cloned().unwrap_or_default(),
                additional_ips: ips.map(|ip| api::PodIp { ip: ip.clone() }).collect(),
            }),
            linux: Some(api::LinuxPodSandboxStatus {
                namespaces: Some(api::Namespace {
                    options: Some(api::NamespaceOption {
                        network: mode(sandbox.modes.host_network),
                        pid: pid as i32,
                        ipc: mode(sandbox.modes.host_ipc),
                        ..Default::default()
                    }),
                }),
            }),
            labels: sandbox.config.labels.clone(),
            annotations: sandbox.config.annotations.clone(),
            runtime_handler: sandbox.runtime_handler.clone(),
        }
    }

    pub fn container_state(state: ContainerState) -> api::ContainerState {
        match state {
            ContainerState::Created => api::ContainerState::ContainerCreated,
            ContainerState::Running => api::ContainerState::ContainerRunning,
            ContainerState::Exited => api::ContainerState::ContainerExited,
            ContainerState::Unknown => api::ContainerState::ContainerUnknown,
        }
    }

    pub fn container_state_from(value: i32) -> Option<ContainerState> {
        Some(match api::ContainerState::try_from(value).ok()? {
            api::ContainerState::ContainerCreated => ContainerState::Created,
            api::ContainerState::ContainerRunning => ContainerState::Running,
            api::ContainerState::ContainerExited => ContainerState::Exited,
            api::ContainerState::ContainerUnknown => ContainerState::Unknown,
        })
    }

    fn image_spec(container: &Container) -> api::ImageSpec {
        api::ImageSpec {
            image: container.image_name.clone(),
            user_specified_image: container
                .config
                .image
                .as_ref()
                .map(|i| i.user_specified_image.clone())
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    pub fn container(container: &Container) -> api::Container {
        api::Container {
            id: container.id.clone(),
            pod_sandbox_id: container.sandbox_id.clone(),
            metadata: Some(container.metadata()),
            image: Some(image_spec(container)),
            image_ref: container.image_ref.clone(),
            state: container_state(container.state()) as i32,
            created_at: container.created_at_ns,
            labels: container.config.labels.clone(),
            annotations: container.config.annotations.clone(),
            image_id: container.image_id.clone(),
        }
    }

    /// The resources in force (the record's, kept current by updates), as
    /// containerd reports them; records from before updates were recorded
    /// report the config's.
    fn container_resources(container: &Container) -> Option<api::ContainerResources> {
        let configured = container
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref());
        let linux = match &container.resources {
            Some(current) => Some(crate::container::spec::cri_resources(
                current,
                configured.map_or(0, |r| r.oom_score_adj),
            )),
            None => configured.cloned(),
        };
        linux.map(|linux| api::ContainerResources {
            linux: Some(linux),
            ..Default::default()
        })
    }

    /// `Completed`/`Error`/`OOMKilled` as kubelet expects, with the exit
    /// code; a container whose monitor vanished reports 255.
    pub fn container_status(container: &Container) -> api::ContainerStatus {
        let (exit_code, finished_at, reason, message) = match (&container.exit, &container.failure)
        {
            (Some(exit), _) => {
                let reason = if exit.oom_killed {
                    "OOMKilled"
                } else if exit.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                (
                    exit.exit_code,
                    exit.exited_at_ns,
                    reason.to_string(),
                    String::new(),
                )
            }
            (None, Some(failure)) => (
                255,
                container.created_at_ns,
                "Error".to_string(),
                failure.clone(),
            ),
            (None, None) => (0, 0, String::new(), String::new()),
        };
        api::ContainerStatus {
            id: container.id.clone(),
            metadata: Some(container.metadata()),
            state: container_state(container.state()) as i32,
            created_at: container.created_at_ns,
            started_at: container.started_at_ns.unwrap_or(0),
            finished_at,
            exit_code,
            image: Some(image_spec(container)),
            image_ref: container.image_ref.clone(),
            reason,
            message,
            labels: container.config.labels.clone(),
            annotations: container.config.annotations.clone(),
            mounts: container.config.mounts.clone(),
            log_path: container
                .log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            resources: container_resources(container),
            image_id: container.image_id.clone(),
            user: container
                .identity
                .as_ref()
                .map(|identity| api::ContainerUser {
                    linux: Some(api::LinuxContainerUser {
                        uid: identity.uid.into(),
                        gid: identity.gid.into(),
                        supplemental_groups: identity
                            .supplemental_groups
                            .iter()
                            .map(|&gid| gid.into())
                            .collect(),
                    }),
                }),
            stop_signal: 0,
        }
    }
}
