//! RunPodSandbox: a Ready pod, or nothing left behind.
//!
//! The steps, in order, each a method or function below: `plan` checks the
//! request (metadata, log directory, namespace modes, user namespace); the
//! name is reserved; `make_state_dir`; `pin_namespaces` (in the pod's own
//! user namespace if it has one) and the PID namespace holder;
//! `write_files` (resolv.conf, hostname, `/dev/shm`); `set_up_network`
//! (CNI ADD); `save_record` (with `/etc/hosts`, once the IPs are known).
//! Each step that leaves something behind pushes its undo onto the one
//! [`Undo`], and a failure anywhere undoes them all in reverse.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::namespaces::{self, NamespaceKind, PidHolder, PinRequest, PinnedNamespaces};
use super::record::{self, NamespaceModes};
use super::SandboxState;
use super::{files, pod_network, Entry, PodEvent, Sandbox, SandboxError, SandboxService};
use crate::api;
use crate::error::shown;
use crate::idmap::UsernsMappings;
use crate::sync::new_id;
use crate::sync::TaskFailure;
use crate::timing::step;
use crate::undo::Undo;

/// What a RunPodSandbox works from once its request is checked.
struct RunPlan {
    id: String,
    /// `<name>_<namespace>_<uid>_<attempt>`.
    name: String,
    config: api::PodSandboxConfig,
    runtime_handler: String,
    modes: NamespaceModes,
    userns: Option<UsernsMappings>,
    hostname: String,
    /// The namespaces the pod gets of its own (the PID one aside).
    kinds: Vec<NamespaceKind>,
    sysctls: Vec<(String, String)>,
    state_dir: PathBuf,
    /// Where the namespaces are pinned: `<state_dir>/ns`.
    ns_dir: PathBuf,
    record_dir: PathBuf,
}

/// The pod's files other than `/etc/hosts` (which waits for the IPs).
struct PodFiles {
    resolv_conf: PathBuf,
    hostname_file: PathBuf,
    shm: Option<PathBuf>,
}

impl SandboxService {
    /// RunPodSandbox: everything is created or nothing is left behind.
    /// `runtime_handler` is one the caller found configured; the pod's
    /// containers run with its runtime. Runs to completion even when the
    /// caller goes away (a cancelled gRPC call drops its future): a run cut
    /// short between two steps would skip their undo, leaving a pinned
    /// network namespace and its IP behind.
    pub async fn run(
        self: &Arc<Self>,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<Sandbox, SandboxError> {
        let (service, handler) = (Arc::clone(self), runtime_handler.to_string());
        let run = async move { service.run_to_completion(config, &handler).await };
        SandboxError::to_completion("RunPodSandbox", run).await
    }

    async fn run_to_completion(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<Sandbox, SandboxError> {
        let plan = self.plan(config, runtime_handler)?;
        self.names.reserve(&plan.name, &plan.id)?;
        let mut undo = Undo::default();
        undo.push("releasing the sandbox name", || {
            self.names.release(&plan.name);
            Ok::<_, SandboxError>(())
        });
        let made = self.run_steps(&plan, &mut undo).await;
        let sandbox = undo.finish(made).await?;
        let entry = Arc::new(Entry::new(sandbox.clone()));
        self.sandboxes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plan.id.clone(), entry);
        // Made and running in one step: both events, as containerd sends.
        self.announce(&plan.id, PodEvent::Created);
        self.announce(&plan.id, PodEvent::Started);
        Ok(sandbox)
    }

    fn plan(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<RunPlan, SandboxError> {
        let name = checked_name(&config)?;
        check_log_directory(&config.log_directory)?;
        let modes = NamespaceModes::from_config(&config);
        let userns = pod_userns(&config, &modes)?;
        let id = new_id();
        let state_dir = self.state_dir(&id);
        Ok(RunPlan {
            hostname: hostname(&config, &modes),
            kinds: namespace_kinds(&modes),
            sysctls: sysctls(&config),
            ns_dir: state_dir.join("ns"),
            state_dir,
            record_dir: self.record_dir(&id),
            runtime_handler: runtime_handler.to_string(),
            id,
            name,
            config,
            modes,
            userns,
        })
    }

    /// Everything after the name is reserved, each step pushing its undo.
    async fn run_steps<'a>(
        &'a self,
        plan: &'a RunPlan,
        undo: &mut Undo<'a>,
    ) -> Result<Sandbox, SandboxError> {
        self.make_state_dir(plan, undo)?;
        let (pinned, pid_holder) = self.pin_namespaces(plan, undo).await?;
        let files = write_files(plan, undo)?;
        let ips = match &pinned.net {
            Some(netns) => self.set_up_network(plan, netns, undo).await?,
            None => Vec::new(),
        };
        save_record(plan, pinned, pid_holder, files, &ips, undo).await
    }

    fn make_state_dir<'a>(
        &self,
        plan: &'a RunPlan,
        undo: &mut Undo<'a>,
    ) -> Result<(), SandboxError> {
        crate::store::create_dir_all(&plan.state_dir)?;
        if plan.userns.is_some() {
            // The pod's root is not the host's: its containers' runtime
            // must pass through to the pod's files.
            for dir in [&self.state, &plan.state_dir] {
                crate::store::ensure_dir_mode(dir, crate::store::TRAVERSE_ONLY_DIR_MODE)?;
            }
        }
        undo.push("removing sandbox state", || {
            std::fs::remove_dir_all(&plan.state_dir)
        });
        Ok(())
    }

    /// The pod's namespaces, pinned, and the init of its shared PID
    /// namespace if it has one (started with a user namespace, else
    /// after the pins).
    async fn pin_namespaces<'a>(
        &self,
        plan: &'a RunPlan,
        undo: &mut Undo<'a>,
    ) -> Result<(PinnedNamespaces, Option<PidHolder>), SandboxError> {
        let (pinned, userns_pid_holder) = match plan.userns {
            Some(mappings) => self.pin_in_userns(plan, mappings, undo).await?,
            None => (pin_on_host(plan, undo).await?, None),
        };
        let pid_holder = match userns_pid_holder {
            Some(holder) => Some(holder),
            None if plan.modes.pod_pid => Some(self.start_pid_holder(plan, undo).await?),
            None => None,
        };
        Ok((pinned, pid_holder))
    }

    /// A fork, and a wait for the PID holder: off the async workers.
    async fn pin_in_userns<'a>(
        &self,
        plan: &'a RunPlan,
        mappings: UsernsMappings,
        undo: &mut Undo<'a>,
    ) -> Result<(PinnedNamespaces, Option<PidHolder>), SandboxError> {
        let holder = plan.modes.pod_pid.then(|| crate::idmap::PidInit {
            program: self.pid_holder.clone(),
            args: vec!["pause".into()],
        });
        let (dir, kinds, sysctls) = (
            plan.ns_dir.clone(),
            plan.kinds.clone(),
            plan.sysctls.clone(),
        );
        let hostname = (!plan.modes.host_network).then(|| plan.hostname.clone());
        let pins = SandboxError::blocking("creating the pod's user namespace", move || {
            let request = PinRequest {
                dir: &dir,
                kinds: &kinds,
                hostname: hostname.as_deref(),
                sysctls: &sysctls,
            };
            namespaces::pin_in_userns(&request, &mappings, holder.as_ref())
        })
        .await?;
        undo.push("unpinning namespaces", || namespaces::unpin(&plan.ns_dir));
        if let Some(holder) = &pins.pid_holder {
            let stop = holder.clone();
            undo.push("stopping the PID namespace holder", move || stop.stop());
        }
        Ok((pins.pinned, pins.pid_holder))
    }

    async fn start_pid_holder<'a>(
        &self,
        plan: &'a RunPlan,
        undo: &mut Undo<'a>,
    ) -> Result<PidHolder, SandboxError> {
        let mut holder = std::process::Command::new(&self.pid_holder);
        holder.arg("pause");
        let dir = plan.ns_dir.clone();
        let holder = SandboxError::blocking("starting the PID namespace holder", move || {
            namespaces::spawn_pid_holder(&dir, holder)
        })
        .await?;
        let stop = holder.clone();
        undo.push("stopping the PID namespace holder", move || stop.stop());
        Ok(holder)
    }

    /// CNI ADD in the pod's network namespace; the pod's IPs.
    async fn set_up_network<'a>(
        &'a self,
        plan: &RunPlan,
        netns: &std::path::Path,
        undo: &mut Undo<'a>,
    ) -> Result<Vec<IpAddr>, SandboxError> {
        let pod = pod_network(&plan.id, &plan.config, netns);
        // Run to completion even if the caller goes away: a half-done ADD
        // is undone by `setup` itself only if it finishes.
        let cni = Arc::clone(&self.cni);
        let setup = async move { cni.setup(&pod).await.map(|status| (status, pod)) };
        let setup = SandboxError::to_completion("setting up the pod network", setup);
        let (status, pod) = step("CNI ADD", setup).await?;
        undo.push_async("tearing down the pod network", async move || {
            self.cni.teardown(&pod).await
        });
        Ok(status.ips)
    }
}

/// New namespaces (a network namespace takes the kernel milliseconds):
/// off the async workers.
async fn pin_on_host<'a>(
    plan: &'a RunPlan,
    undo: &mut Undo<'a>,
) -> Result<PinnedNamespaces, SandboxError> {
    if plan.kinds.is_empty() && plan.sysctls.is_empty() {
        return Ok(PinnedNamespaces::default());
    }
    let (dir, kinds, sysctls) = (
        plan.ns_dir.clone(),
        plan.kinds.clone(),
        plan.sysctls.clone(),
    );
    let hostname = (!plan.modes.host_network).then(|| plan.hostname.clone());
    let pin = SandboxError::blocking("pinning namespaces", move || {
        namespaces::pin(&PinRequest {
            dir: &dir,
            kinds: &kinds,
            hostname: hostname.as_deref(),
            sysctls: &sysctls,
        })
    });
    let pinned = step("pinning namespaces", pin).await?;
    undo.push("unpinning namespaces", || namespaces::unpin(&plan.ns_dir));
    Ok(pinned)
}

fn write_files<'a>(plan: &'a RunPlan, undo: &mut Undo<'a>) -> Result<PodFiles, SandboxError> {
    let state_dir = &plan.state_dir;
    let resolv_conf = files::write_resolv_conf(state_dir, plan.config.dns_config.as_ref())?;
    let hostname_file = files::write_hostname(state_dir, &plan.hostname)?;
    let shm = if plan.modes.host_ipc {
        None
    } else {
        let shm = files::mount_shm(state_dir, files::DEFAULT_SHM_SIZE)?;
        undo.push("unmounting shm", || files::unmount_shm(state_dir));
        Some(shm)
    };
    Ok(PodFiles {
        resolv_conf,
        hostname_file,
        shm,
    })
}

/// `/etc/hosts` and the record, Ready.
async fn save_record<'a>(
    plan: &'a RunPlan,
    pinned: PinnedNamespaces,
    pid_holder: Option<PidHolder>,
    files: PodFiles,
    ips: &[IpAddr],
    undo: &mut Undo<'a>,
) -> Result<Sandbox, SandboxError> {
    // A record half-written when saving failed goes too.
    undo.push("removing the sandbox record", || {
        crate::store::remove_dir_atomic(&plan.record_dir)
    });
    let hosts = files::write_hosts(
        &plan.state_dir,
        &plan.hostname,
        ips,
        plan.modes.host_network,
    )?;
    let sandbox = Sandbox {
        id: plan.id.clone(),
        name: plan.name.clone(),
        created_at_ns: crate::store::now_nanos(),
        state: SandboxState::Ready,
        modes: plan.modes,
        namespaces: pinned,
        pid_holder,
        ips: ips.iter().map(ToString::to_string).collect(),
        hostname: plan.hostname.clone(),
        state_dir: plan.state_dir.clone(),
        resolv_conf: files.resolv_conf,
        hosts,
        hostname_file: files.hostname_file,
        shm: files.shm,
        userns: plan.userns,
        runtime_handler: plan.runtime_handler.clone(),
        network_released: false,
        config: plan.config.clone(),
    };
    // Its fsyncs off the async workers.
    let (record_dir, saved) = (plan.record_dir.clone(), sandbox.clone());
    let save = SandboxError::blocking("saving the record", move || {
        record::save(&record_dir, &saved, true)
    });
    step("saving the record", save).await?;
    Ok(sandbox)
}

/// The pod's unique name, from metadata checked to be present and free
/// of path separators.
fn checked_name(config: &api::PodSandboxConfig) -> Result<String, SandboxError> {
    let metadata = config
        .metadata
        .as_ref()
        .ok_or(SandboxError::Missing("config.metadata"))?;
    for (field, value) in [
        ("metadata.name", &metadata.name),
        ("metadata.namespace", &metadata.namespace),
        ("metadata.uid", &metadata.uid),
    ] {
        if value.is_empty() {
            return Err(SandboxError::Missing(field));
        }
        if value.contains('/') || value.contains('\0') {
            return Err(SandboxError::Invalid {
                field,
                reason: format!("{} contains '/' or NUL", shown(value)),
            });
        }
    }
    Ok(format!(
        "{}_{}_{}_{}",
        metadata.name, metadata.namespace, metadata.uid, metadata.attempt
    ))
}

/// kubelet gives an absolute `log_directory` (or none); a relative one
/// would be resolved against the daemon's working directory.
fn check_log_directory(directory: &str) -> Result<(), SandboxError> {
    let reason = if directory.contains('\0') {
        "contains NUL"
    } else if !directory.is_empty() && !std::path::Path::new(directory).is_absolute() {
        "is not an absolute path"
    } else {
        return Ok(());
    };
    Err(SandboxError::Invalid {
        field: "log_directory",
        reason: format!("{} {reason}", shown(directory)),
    })
}

/// kubelet always sets the hostname of a pod with its own network; when it
/// does not (host network, or a bare CRI client), the node's name applies,
/// as with containerd and CRI-O.
fn hostname(config: &api::PodSandboxConfig, modes: &NamespaceModes) -> String {
    if modes.host_network || config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    }
}

fn namespace_kinds(modes: &NamespaceModes) -> Vec<NamespaceKind> {
    let mut kinds = Vec::new();
    if !modes.host_network {
        kinds.extend([NamespaceKind::Net, NamespaceKind::Uts]);
    }
    if !modes.host_ipc {
        kinds.push(NamespaceKind::Ipc);
    }
    kinds
}

fn sysctls(config: &api::PodSandboxConfig) -> Vec<(String, String)> {
    config
        .linux
        .as_ref()
        .map(|l| {
            l.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The pod's user namespace mappings (mode POD), or none for the host's.
/// A pod of its own user namespace must own its other namespaces too, as
/// Kubernetes requires (no host network, IPC or PID with `hostUsers:
/// false`).
fn pod_userns(
    config: &api::PodSandboxConfig,
    modes: &NamespaceModes,
) -> Result<Option<UsernsMappings>, SandboxError> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|o| o.userns_options.as_ref());
    let mappings = crate::idmap::from_cri(options)?;
    if mappings.is_some() && (modes.host_network || modes.host_ipc || modes.host_pid) {
        return Err(SandboxError::Invalid {
            field: "namespace_options.userns_options",
            reason: "a pod with its own user namespace cannot share the host's network, IPC or PID namespace".into(),
        });
    }
    Ok(mappings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, Kind};

    #[test]
    fn log_directory_must_be_absolute_or_empty() {
        assert!(check_log_directory("").is_ok());
        assert!(check_log_directory("/var/log/pods/ns_pod_uid").is_ok());
        for bad in ["logs", "./logs", "../var/log", "/var/log\0x"] {
            let err = check_log_directory(bad).unwrap_err();
            assert_eq!(err.kind(), Kind::InvalidArgument, "{bad:?}");
            assert!(err.to_string().contains("log_directory"), "{err}");
        }
    }
}
