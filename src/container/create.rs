//! CreateContainer: a created (not started) container, or nothing.
//!
//! The steps, in order, each a method below: `plan` checks the request
//! (image, runtime handler, namespaces, log path); the name is reserved; `make_directories`; the image's layers held;
//! `prepare_bundle_and_monitor`: the bundle ([`super::bundle`]: image
//! config, mount sources, the rootfs overlay, the user, `config.json`) on a
//! blocking thread, since an image can make it heavy, while the monitor
//! starts, ready to run the container at StartContainer (one `runc run
//! --detach` then, as containerd creates its task only at StartContainer: a
//! failure only runc can see shows at the start); `record_of` and the save.
//! Each step that leaves something behind pushes its undo onto the one
//! [`Undo`], and a failure anywhere undoes them all in reverse.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bundle::{Bundle, BundleRequest};
use super::identity::ProcessIdentity;
use super::record::{self, Container, ContainerState};
use super::spec::{self, NamespacePath, Namespaces, PodUserns};
use super::{rootfs, ContainerError, ContainerService};
use crate::api;
use crate::image::metadata::ImageRecord;
use crate::runtime::{self, Created, MonitorConfig, RuntimeHandler};
use crate::sandbox::Sandbox;
use crate::store::now_nanos;
use crate::sync::TaskFailure;
use crate::timing::step;
use crate::undo::Undo;

impl ContainerService {
    /// CreateContainer. Runs to completion even when the caller goes away
    /// (a cancelled gRPC call drops its future): a create cut short between
    /// two steps would leave a mount or a monitor behind until a restart.
    pub async fn create(
        self: &Arc<Self>,
        sandbox_id: &str,
        config: api::ContainerConfig,
    ) -> Result<Container, ContainerError> {
        let service = Arc::clone(self);
        let sandbox_id = sandbox_id.to_string();
        let create = async move { service.create_to_completion(&sandbox_id, config).await };
        ContainerError::to_completion("CreateContainer", create).await
    }

    async fn create_to_completion(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
    ) -> Result<Container, ContainerError> {
        let metadata = checked_metadata(&config)?;
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.trim().to_string())
            .filter(|i| !i.is_empty())
            .ok_or(ContainerError::Missing("config.image.image"))?;
        // Until the container is recorded, so that a concurrent
        // StopPodSandbox either sees it or runs first.
        let ready = self
            .sandboxes
            .while_ready(sandbox_id, async move |sandbox| {
                self.create_in(sandbox, config, metadata, image_name).await
            });
        step("waiting for the pod lock, then creating", ready).await
    }

    async fn create_in(
        &self,
        sandbox: Sandbox,
        config: api::ContainerConfig,
        metadata: api::ContainerMetadata,
        image_name: String,
    ) -> Result<Container, ContainerError> {
        let plan = self.plan(sandbox, config, &metadata, image_name)?;
        self.names.reserve(&plan.name, &plan.id)?;
        let mut undo = Undo::default();
        undo.push("releasing the container name", || {
            self.names.release(&plan.name);
            Ok::<_, ContainerError>(())
        });
        let created = self.create_steps(&plan, &mut undo).await;
        let container = step("undoing a failed create", undo.finish(created)).await?;
        // Watched from here on: an exit since the monitor started is in
        // `exit.json` by the time the watch finds the monitor gone.
        self.insert(container.clone());
        Ok(container)
    }

    /// The image, the runtime, the namespaces, the log, the ID and the
    /// name of the container to create: checked, nothing made yet.
    fn plan(
        &self,
        sandbox: Sandbox,
        config: api::ContainerConfig,
        metadata: &api::ContainerMetadata,
        image_name: String,
    ) -> Result<CreatePlan<'_>, ContainerError> {
        let image = self
            .images
            .resolve(&image_name)?
            .ok_or_else(|| ContainerError::ImageNotFound(image_name.clone()))?;
        let handler = self.options.handlers.get(&sandbox.runtime_handler)?;
        let namespaces = self.namespaces_for(&sandbox, &config)?;
        let log_path = log_path(&sandbox, &config)?;
        let id = crate::sync::new_id();
        let pod = sandbox.metadata();
        let name = format!(
            "{}_{}_{}_{}_{}",
            metadata.name, pod.name, pod.namespace, pod.uid, metadata.attempt
        );
        Ok(CreatePlan {
            record_dir: self.record_dir(&id),
            state_dir: self.state_dir(&id),
            userns: pod_userns(&sandbox),
            id,
            name,
            sandbox,
            config,
            image,
            image_name,
            handler,
            namespaces,
            log_path,
        })
    }

    /// Everything after the name is reserved, each step pushing its undo.
    async fn create_steps<'a>(
        &'a self,
        plan: &'a CreatePlan<'_>,
        undo: &mut Undo<'a>,
    ) -> Result<Container, ContainerError> {
        self.make_directories(plan, undo)?;
        self.images.hold_layers(&plan.id, plan.image.layers.clone());
        undo.push("releasing image layers", || {
            self.images.release_layers(&plan.id)
        });
        let (bundle, created) = self.prepare_bundle_and_monitor(plan, undo).await?;
        let container = self.record_of(plan, bundle, created).await?;
        // Its CRI config was saved meanwhile (see prepare_bundle_and_monitor).
        let (record_dir, saved) = (plan.record_dir.clone(), container.clone());
        let save = ContainerError::blocking("saving the record", move || {
            record::save(&record_dir, &saved, false)
        });
        step("saving the record", save).await?;
        Ok(container)
    }

    /// The record and state directories (taken back with all they hold),
    /// opened for the pod's user namespace if it has one.
    fn make_directories<'a>(
        &'a self,
        plan: &'a CreatePlan<'_>,
        undo: &mut Undo<'a>,
    ) -> Result<(), ContainerError> {
        let (record_dir, state_dir) = (&plan.record_dir, &plan.state_dir);
        for dir in [record_dir, state_dir] {
            crate::store::create_dir_all(dir)?;
        }
        undo.push("removing container directories", move || {
            // Never through a host volume still mounted.
            crate::idmap::unmount_all(&idmapped_volumes_dir(state_dir))?;
            let _ = std::fs::remove_dir_all(state_dir);
            std::fs::remove_dir_all(record_dir).map_err(|e| {
                crate::idmap::IdmapError::from(crate::error::IoError::new(
                    "removing", record_dir, e,
                ))
            })
        });
        if plan.userns.is_some() {
            self.open_for_userns(&plan.sandbox, state_dir)?;
        }
        Ok(())
    }

    /// The bundle (on a blocking thread) and the monitor at once: the
    /// monitor needs the bundle only at the start.
    async fn prepare_bundle_and_monitor<'a>(
        &'a self,
        plan: &'a CreatePlan<'_>,
        undo: &mut Undo<'a>,
    ) -> Result<(Bundle, Created), ContainerError> {
        let request = self.bundle_request(plan);
        // The monitor opens the log as it starts.
        if let Some(parent) = plan.log_path.as_ref().and_then(|p| p.parent()) {
            create_log_dir(parent)?;
        }
        // Mounted while the bundle is prepared; runc mounts them into the
        // container at the start, and they go then (see `start`).
        undo.push("unmounting ID-mapped volumes", || {
            crate::idmap::unmount_all(&idmapped_volumes_dir(&plan.state_dir))
        });
        // Also after a failed or timed-out create: the runtime may have
        // kept state (deleting an unknown container is fine).
        undo.push_async("deleting the runtime's container", || {
            plan.handler.runtime.delete(&plan.id, true)
        });
        let prepare = ContainerError::blocking("preparing the bundle", move || request.prepare());
        let monitor_config = self.monitor_config(plan);
        // The record's first half, whose fsync (a journal commit, on a
        // directory just made) would otherwise follow the monitor's start.
        let (record_dir, config) = (plan.record_dir.clone(), plan.config.clone());
        let save_config = ContainerError::blocking("saving the CRI config", move || {
            record::save_config(&record_dir, &config)
        });
        let (prepared, created, config_saved) = tokio::join!(
            step("preparing the bundle", prepare),
            step(
                "starting the monitor",
                runtime::create_with_monitor(&plan.handler.runtime, &monitor_config)
            ),
            step("saving the CRI config", save_config)
        );
        if let Ok(bundle) = &prepared {
            let bundle = bundle.clone();
            undo.push("unmounting the rootfs", move || {
                spec::remove_created_host_paths(&bundle.created_host_paths);
                rootfs::unmount(&bundle.rootfs)
            });
        }
        if created.is_ok() {
            // A deferred start's monitor waits for a start: told to give up.
            undo.push_async("cancelling the monitor", move || async move {
                match runtime::cancel_with_monitor(&plan.state_dir).await {
                    Err(e @ runtime::RuntimeError::ControlFailed { .. }) => Err(e),
                    _ => Ok(()),
                }
            });
        }
        // Checked once the undo holds what the other two left.
        config_saved?;
        Ok((prepared?, created?))
    }

    fn bundle_request(&self, plan: &CreatePlan<'_>) -> BundleRequest {
        BundleRequest {
            images: Arc::clone(&self.images),
            lower_dirs: self.images.lower_dirs(&plan.image),
            image: plan.image.clone(),
            image_name: plan.image_name.clone(),
            id: plan.id.clone(),
            sandbox: plan.sandbox.clone(),
            config: plan.config.clone(),
            namespaces: plan.namespaces.clone(),
            record_dir: plan.record_dir.clone(),
            state_dir: plan.state_dir.clone(),
            host: self.options.host.clone(),
            runtime_features: plan.handler.features,
            userns: plan.userns.clone(),
        }
    }

    /// A monitor that runs the container at StartContainer (a deferred
    /// start).
    fn monitor_config(&self, plan: &CreatePlan<'_>) -> MonitorConfig {
        MonitorConfig {
            monitor_binary: self.options.monitor_binary.clone(),
            id: plan.id.clone(),
            bundle: plan.state_dir.clone(),
            state_dir: plan.state_dir.clone(),
            log_path: plan.log_path.clone().unwrap_or_else(|| "/dev/null".into()),
            stdin: plan.config.stdin,
            stdin_once: plan.config.stdin_once,
            tty: plan.config.tty,
            defer_start: true,
        }
    }

    /// The record of the container the bundle and the monitor make.
    async fn record_of(
        &self,
        plan: &CreatePlan<'_>,
        bundle: Bundle,
        created: Created,
    ) -> Result<Container, ContainerError> {
        let (image, sandbox) = (&plan.image, &plan.sandbox);
        // Blocked before exec on the runtime's fifo, the init already
        // has the identity it will run with. A deferred start reads it
        // once started.
        let identity = match created.container_pid {
            Some(pid) => ProcessIdentity::of_process(pid)
                .await
                .map(|identity| identity.seen_from(sandbox.userns.as_ref())),
            None => None,
        };
        Ok(Container {
            id: plan.id.clone(),
            sandbox_id: sandbox.id.clone(),
            name: plan.name.clone(),
            created_at_ns: now_nanos(),
            started_at_ns: None,
            start_requested_at_ns: None,
            start_in_flight: false,
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.to_string()),
            image_id: image.id.to_string(),
            image_name: plan.image_name.clone(),
            layers: image.layers.clone(),
            log_path: plan.log_path.clone(),
            state_dir: plan.state_dir.clone(),
            rootfs: bundle.rootfs,
            stop_signal: bundle.stop_signal,
            failure: None,
            identity,
            deferred_start: created.container_pid.is_none(),
            runtime_handler: sandbox.runtime_handler.clone(),
            resources: Some(spec::resources_at_create(&plan.config, &self.options.host)?),
            exit: None,
            config: plan.config.clone(),
        })
    }

    /// A container whose root is not the host's (its pod has a user
    /// namespace): runc, once in that namespace, must pass through to the
    /// rootfs and to the pod's files. Those were made traverse-only when
    /// the pod ran, but the daemon makes its top directories private again
    /// at each start.
    fn open_for_userns(&self, sandbox: &Sandbox, state_dir: &Path) -> Result<(), ContainerError> {
        let pod_dirs = sandbox
            .state_dir
            .parent()
            .into_iter()
            .chain([&*sandbox.state_dir]);
        for dir in [self.state.as_path(), state_dir]
            .into_iter()
            .chain(pod_dirs)
        {
            crate::store::ensure_dir_mode(dir, crate::store::TRAVERSE_ONLY_DIR_MODE)?;
        }
        Ok(())
    }

    fn namespaces_for(
        &self,
        sandbox: &Sandbox,
        config: &api::ContainerConfig,
    ) -> Result<Namespaces, ContainerError> {
        let pinned = |path: &Option<PathBuf>| match path {
            Some(path) => NamespacePath::Join(path.clone()),
            None => NamespacePath::Host,
        };
        let options = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let pid_mode = options
            .map(|o| api::NamespaceMode::try_from(o.pid).unwrap_or(api::NamespaceMode::Container))
            .unwrap_or(api::NamespaceMode::Container);
        let pid = match pid_mode {
            api::NamespaceMode::Node => NamespacePath::Host,
            api::NamespaceMode::Container => NamespacePath::New,
            api::NamespaceMode::Pod => match &sandbox.pid_holder {
                Some(holder) => NamespacePath::Join(holder.path.clone()),
                None => {
                    return Err(ContainerError::Invalid {
                        field: "namespace_options.pid",
                        reason: "POD, but the pod has no shared PID namespace".into(),
                    })
                }
            },
            api::NamespaceMode::Target => {
                let target_id = options.map(|o| o.target_id.as_str()).unwrap_or("");
                let target = self.get(target_id)?.get();
                let pid = runtime_pid(&target)?;
                NamespacePath::Join(PathBuf::from(format!("/proc/{pid}/ns/pid")))
            }
        };
        Ok(Namespaces {
            network: pinned(&sandbox.namespaces.net),
            ipc: pinned(&sandbox.namespaces.ipc),
            uts: pinned(&sandbox.namespaces.uts),
            pid,
        })
    }
}

fn checked_metadata(
    config: &api::ContainerConfig,
) -> Result<api::ContainerMetadata, ContainerError> {
    let metadata = config
        .metadata
        .clone()
        .ok_or(ContainerError::Missing("config.metadata"))?;
    if metadata.name.is_empty() {
        return Err(ContainerError::Missing("config.metadata.name"));
    }
    if metadata.name.contains('/') || metadata.name.contains('\0') {
        return Err(ContainerError::Invalid {
            field: "metadata.name",
            reason: "contains '/' or NUL".into(),
        });
    }
    Ok(metadata)
}

/// What a CreateContainer works from once its inputs are checked.
struct CreatePlan<'s> {
    id: String,
    /// `<name>_<pod>_<namespace>_<uid>_<attempt>`.
    name: String,
    sandbox: Sandbox,
    config: api::ContainerConfig,
    image: ImageRecord,
    image_name: String,
    handler: &'s RuntimeHandler,
    namespaces: Namespaces,
    log_path: Option<PathBuf>,
    userns: Option<PodUserns>,
    record_dir: PathBuf,
    state_dir: PathBuf,
}

/// The pod's pinned user namespace, if it has one of its own.
fn pod_userns(sandbox: &Sandbox) -> Option<PodUserns> {
    Some(PodUserns {
        path: sandbox.namespaces.user.clone()?,
        mappings: sandbox.userns?,
    })
}

/// Where a user-namespaced container's volume sources are ID-mapped from
/// CreateContainer until the runtime has mounted them at the start; empty
/// (and gone) otherwise.
pub(super) fn idmapped_volumes_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("idmapped-volumes")
}

/// Log directories are kubelet's (it makes them itself); for other clients
/// Wharf makes them as kubelet would, readable by log collectors.
fn create_log_dir(dir: &Path) -> Result<(), ContainerError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| {
            crate::store::StoreError::Io(crate::error::IoError::new(
                "creating log directory",
                dir.to_path_buf(),
                source,
            ))
            .into()
        })
}

/// The init pid of a running container, from the pid file the runtime
/// wrote.
fn runtime_pid(container: &Container) -> Result<i32, ContainerError> {
    if container.state() != ContainerState::Running {
        return Err(super::record::wrong_state(
            container,
            "sharing its PID namespace",
            "running",
        ));
    }
    std::fs::read_to_string(
        container
            .state_dir
            .join(runtime::protocol::files::CONTAINER_PID),
    )
    .ok()
    .and_then(|pid| pid.trim().parse().ok())
    .ok_or_else(|| ContainerError::Invalid {
        field: "target container",
        reason: "its pid is unknown".into(),
    })
}

/// kubelet gives the pod's log directory and a path relative to it.
fn log_path(
    sandbox: &Sandbox,
    config: &api::ContainerConfig,
) -> Result<Option<PathBuf>, ContainerError> {
    if config.log_path.is_empty() {
        return Ok(None);
    }
    let relative = Path::new(&config.log_path);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ContainerError::Invalid {
            field: "log_path",
            reason: format!("{:?} must be relative, without '..'", config.log_path),
        });
    }
    let directory = &sandbox.config.log_directory;
    if directory.is_empty() {
        return Err(ContainerError::Invalid {
            field: "log_path",
            reason: "the sandbox has no log_directory".into(),
        });
    }
    Ok(Some(Path::new(directory).join(relative)))
}
