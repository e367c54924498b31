//! CreateContainer: a created (not started) container, or nothing.
//!
//! The steps, in order: checks; a name, directories and the image's layers
//! held; the bundle (image config, mount sources, the rootfs overlay, the
//! user, `config.json`) on a blocking thread, since an image can make it
//! heavy; the monitor, ready to run the container at StartContainer (one
//! `runc run --detach` then, as containerd creates its task only at
//! StartContainer: a failure only runc can see shows at the start); the
//! record. Each step that
//! leaves something behind pushes its undo, and a failure anywhere undoes
//! them all in reverse.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::identity::ProcessIdentity;
use super::record::{self, Container, ContainerState};
use super::spec::{
    self, HostFeatures, NamespacePath, Namespaces, PodUserns, SandboxFiles, SpecInput,
};
use super::{rootfs, ContainerError, ContainerService};
use crate::api;
use crate::image::ImageService;
use crate::runtime::{self, MonitorConfig, RuntimeFeatures};
use crate::sandbox::Sandbox;
use crate::store::now_nanos;
use crate::timing::{step, step_sync};
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
        tokio::spawn(tracing::Instrument::in_current_span(create))
            .await
            .map_err(|e| ContainerError::Task("CreateContainer", e))?
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
        self.names.reserve(&name, &id)?;
        let mut undo = Undo::default();
        let created: Result<Container, ContainerError> = async {
            undo.push("releasing the container name", || {
                self.names.release(&name);
                Ok::<_, ContainerError>(())
            });
            let record_dir = self.record_dir(&id);
            let state_dir = self.state_dir(&id);
            for dir in [&record_dir, &state_dir] {
                crate::store::create_dir_all(dir)?;
            }
            {
                let (record_dir, state_dir) = (record_dir.clone(), state_dir.clone());
                undo.push("removing container directories", move || {
                    // Never through a host volume still mounted.
                    crate::idmap::unmount_all(&idmapped_volumes_dir(&state_dir))?;
                    let _ = std::fs::remove_dir_all(&state_dir);
                    std::fs::remove_dir_all(&record_dir).map_err(|e| {
                        crate::idmap::IdmapError::from(crate::error::IoError::new(
                            "removing",
                            &record_dir,
                            e,
                        ))
                    })
                });
            }
            let userns = pod_userns(&sandbox);
            if userns.is_some() {
                self.open_for_userns(&sandbox, &state_dir)?;
            }
            self.images.hold_layers(&id, image.layers.clone());
            undo.push("releasing image layers", || self.images.release_layers(&id));

            let request = BundleRequest {
                images: Arc::clone(&self.images),
                lower_dirs: self.images.lower_dirs(&image),
                image: image.clone(),
                image_name: image_name.clone(),
                id: id.clone(),
                sandbox: sandbox.clone(),
                config: config.clone(),
                namespaces,
                record_dir: record_dir.clone(),
                state_dir: state_dir.clone(),
                host: self.options.host.clone(),
                runtime_features: handler.features,
                userns,
            };
            // The monitor opens the log as it starts.
            if let Some(parent) = log_path.as_ref().and_then(|p| p.parent()) {
                create_log_dir(parent)?;
            }
            // Mounted while the bundle is prepared; runc mounts them into
            // the container at the start, and they go then (see `start`).
            {
                let dir = idmapped_volumes_dir(&state_dir);
                undo.push("unmounting ID-mapped volumes", move || {
                    crate::idmap::unmount_all(&dir)
                });
            }
            // Also after a failed or timed-out create: the runtime may have
            // kept state (deleting an unknown container is fine).
            undo.push_async("deleting the runtime's container", || {
                handler.runtime.delete(&id, true)
            });
            // The bundle and the monitor at once: the monitor needs the
            // bundle only at the start.
            let span = tracing::Span::current();
            let prepare = tokio::task::spawn_blocking(move || span.in_scope(|| request.prepare()));
            let monitor_config = MonitorConfig {
                monitor_binary: self.options.monitor_binary.clone(),
                id: id.clone(),
                bundle: state_dir.clone(),
                state_dir: state_dir.clone(),
                log_path: log_path.clone().unwrap_or_else(|| "/dev/null".into()),
                stdin: config.stdin,
                stdin_once: config.stdin_once,
                tty: config.tty,
                defer_start: true,
            };
            let (prepared, created) = tokio::join!(
                step("preparing the bundle", prepare),
                step(
                    "starting the monitor",
                    runtime::create_with_monitor(&handler.runtime, &monitor_config)
                )
            );
            let prepared = prepared.map_err(|e| ContainerError::Task("preparing the bundle", e));
            if let Ok(Ok(bundle)) = &prepared {
                let bundle = bundle.clone();
                undo.push("unmounting the rootfs", move || {
                    spec::remove_created_host_paths(&bundle.created_host_paths);
                    rootfs::unmount(&bundle.rootfs)
                });
            }
            if created.is_ok() {
                // A deferred start's monitor waits for a start: told to give up.
                let monitor_dir = state_dir.clone();
                undo.push_async("cancelling the monitor", || async move {
                    match runtime::cancel_with_monitor(&monitor_dir).await {
                        Err(e @ runtime::RuntimeError::ControlFailed { .. }) => Err(e),
                        _ => Ok(()),
                    }
                });
            }
            let bundle = prepared??;
            let created = created?;
            let (rootfs_dir, stop_signal) = (bundle.rootfs, bundle.stop_signal);
            // Blocked before exec on the runtime's fifo, the init already
            // has the identity it will run with. A deferred start reads it
            // once started.
            let identity = match created.container_pid {
                Some(pid) => ProcessIdentity::of_process(pid)
                    .await
                    .map(|identity| identity.seen_from(sandbox.userns.as_ref())),
                None => None,
            };
            let container = Container {
                id: id.clone(),
                sandbox_id: sandbox.id.clone(),
                name: name.clone(),
                created_at_ns: now_nanos(),
                started_at_ns: None,
                start_requested_at_ns: None,
                image_ref: image
                    .repo_digests
                    .first()
                    .cloned()
                    .unwrap_or_else(|| image.id.to_string()),
                image_id: image.id.to_string(),
                image_name: image_name.clone(),
                layers: image.layers.clone(),
                log_path: log_path.clone(),
                state_dir,
                rootfs: rootfs_dir,
                stop_signal,
                failure: None,
                identity,
                deferred_start: created.container_pid.is_none(),
                runtime_handler: sandbox.runtime_handler.clone(),
                resources: Some(spec::resources_at_create(&config, &self.options.host)?),
                exit: None,
                config: config.clone(),
            };
            step_sync("saving the record", || {
                record::save(&record_dir, &container, true)
            })?;
            Ok(container)
        }
        .await;
        let container = step("undoing a failed create", undo.finish(created)).await?;
        // Watched from here on: an exit since the monitor started is in
        // `exit.json` by the time the watch finds the monitor gone.
        self.insert(container.clone());
        Ok(container)
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

/// What the blocking part of CreateContainer works from, owned.
struct BundleRequest {
    images: Arc<ImageService>,
    image: crate::image::metadata::ImageRecord,
    image_name: String,
    lower_dirs: Vec<PathBuf>,
    id: String,
    sandbox: Sandbox,
    config: api::ContainerConfig,
    namespaces: Namespaces,
    record_dir: PathBuf,
    state_dir: PathBuf,
    host: HostFeatures,
    runtime_features: RuntimeFeatures,
    userns: Option<PodUserns>,
}

/// A bundle ready for the runtime, and what to take back if the
/// container is not created after all.
#[derive(Clone)]
struct Bundle {
    rootfs: PathBuf,
    created_host_paths: Vec<PathBuf>,
    stop_signal: i32,
}

impl BundleRequest {
    /// Reads and checks the image config, creates missing mount sources,
    /// mounts the rootfs, resolves the user and writes `config.json`.
    /// Blocking and, for a large image config, CPU-heavy: call it on a
    /// blocking thread. On error it has undone its own steps.
    fn prepare(self) -> Result<Bundle, ContainerError> {
        let image_config = step_sync("reading the image config", || self.image_config())?;
        spec::check_limits(&self.config, &image_config)?;
        let created_host_paths = spec::prepare_host_paths(&self.config)?;
        let rootfs = self.state_dir.join("rootfs");
        let mounted = step_sync("mounting the rootfs", || self.mount_rootfs(&rootfs)).and_then(|()| {
            step_sync("writing the spec", || self.write_spec(&image_config, &rootfs))
                .inspect_err(|_| {
                    if let Err(e) = rootfs::unmount(&rootfs) {
                        tracing::error!(id = %self.id, error = %e, "unmounting the rootfs of a failed create");
                    }
                })
            });
        match mounted {
            Ok(stop_signal) => Ok(Bundle {
                rootfs,
                created_host_paths,
                stop_signal,
            }),
            Err(error) => {
                spec::remove_created_host_paths(&created_host_paths);
                Err(error)
            }
        }
    }

    /// The overlay; ID-mapped for the pod's user namespace if it has one.
    fn mount_rootfs(&self, rootfs: &Path) -> Result<(), ContainerError> {
        let Some(userns) = &self.userns else {
            return Ok(rootfs::mount_overlay(
                &self.lower_dirs,
                &self.record_dir,
                rootfs,
            )?);
        };
        let file = open_userns(&userns.path)?;
        Ok(rootfs::mount_idmapped_overlay(
            &self.lower_dirs,
            &self.record_dir,
            rootfs,
            &self.state_dir.join("idmapped-layers"),
            std::os::fd::AsFd::as_fd(&file),
            userns.mappings.host_root(),
        )?)
    }

    /// The CRI config with each bind mount's source replaced by an
    /// ID-mapped mount of it for the pod's user namespace: what the
    /// container writes there is owned on the host by the ID it has inside
    /// (the mapping of the mount undoes the namespace's), as with
    /// containerd and CRI-O. Without a user namespace, the config as given.
    fn idmapped_config(
        &self,
    ) -> Result<std::borrow::Cow<'_, api::ContainerConfig>, ContainerError> {
        let Some(userns) = &self.userns else {
            return Ok(std::borrow::Cow::Borrowed(&self.config));
        };
        if self.config.mounts.is_empty() {
            return Ok(std::borrow::Cow::Borrowed(&self.config));
        }
        let file = open_userns(&userns.path)?;
        let dir = idmapped_volumes_dir(&self.state_dir);
        crate::store::ensure_dir_mode(&dir, crate::store::TRAVERSE_ONLY_DIR_MODE)?;
        let mut config = self.config.clone();
        for (i, mount) in config.mounts.iter_mut().enumerate() {
            let source = Path::new(&mount.host_path);
            // A filesystem that cannot be ID-mapped (procfs, sysfs, some
            // network filesystems) is bound as it is: the container's root
            // then has only what others have there.
            let tree = match crate::idmap::idmapped_tree(
                source,
                std::os::fd::AsFd::as_fd(&file),
                crate::idmap::TreeOptions {
                    recursive: true,
                    read_only: false,
                },
            ) {
                Ok(tree) => tree,
                Err(e) => {
                    tracing::warn!(id = %self.id, source = %source.display(), error = %e, "volume bound without ID mapping");
                    continue;
                }
            };
            let target = dir.join(i.to_string());
            crate::idmap::attach_on_new(tree, source, &target)?;
            mount.host_path = target.display().to_string();
        }
        Ok(std::borrow::Cow::Owned(config))
    }

    fn image_config(&self) -> Result<oci_spec::image::Config, ContainerError> {
        let bytes = self.images.config_bytes(&self.image)?.unwrap_or_default();
        let parsed: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&bytes).map_err(|e| ContainerError::Invalid {
                field: "image config",
                reason: e.to_string(),
            })?;
        Ok(parsed.config().clone().unwrap_or_default())
    }

    /// Writes `config.json`; returns the stop signal.
    fn write_spec(
        &self,
        image_config: &oci_spec::image::Config,
        rootfs: &Path,
    ) -> Result<i32, ContainerError> {
        let security = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref());
        let user = super::user::resolve_user(
            rootfs,
            image_config.user().as_deref().unwrap_or(""),
            security,
        )?;
        let cgroup_parent = self
            .sandbox
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        let config = self.idmapped_config()?;
        let generated = spec::generate(&SpecInput {
            container_id: &self.id,
            sandbox_id: &self.sandbox.id,
            config: &config,
            sandbox: &self.sandbox.config,
            image: image_config,
            image_name: &self.image_name,
            rootfs,
            namespaces: self.namespaces.clone(),
            sandbox_files: SandboxFiles {
                hosts: Some(self.sandbox.hosts.clone()),
                resolv_conf: Some(self.sandbox.resolv_conf.clone()),
                hostname: Some(self.sandbox.hostname_file.clone()),
                shm: self.sandbox.shm.clone(),
            },
            cgroups_path: cgroups_path(&cgroup_parent, &self.id),
            user,
            host: self.host.clone(),
            runtime: self.runtime_features,
            userns: self.userns.clone(),
        })?;
        // Serialising our own spec cannot fail on bad input: a failure is
        // ours (Internal), reported with the file it was meant for.
        // In the state directory, which a reboot empties: renamed into
        // place, not synced.
        crate::store::write_json_atomic_unsynced(&self.state_dir.join("config.json"), &generated)?;
        Ok(spec::container_stop_signal(&self.config, image_config)? as i32)
    }
}

/// The pod's pinned user namespace, if it has one of its own.
fn pod_userns(sandbox: &Sandbox) -> Option<PodUserns> {
    Some(PodUserns {
        path: sandbox.namespaces.user.clone()?,
        mappings: sandbox.userns?,
    })
}

fn open_userns(path: &Path) -> Result<std::fs::File, ContainerError> {
    std::fs::File::open(path).map_err(|e| {
        crate::idmap::IdmapError::from(crate::error::IoError::new("opening", path, e)).into()
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
        return Err(super::lifecycle::wrong_state(
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

/// cgroupfs driver: `<parent>/<id>`, or a `wharf` parent when kubelet gave
/// none.
pub fn cgroups_path(parent: &str, id: &str) -> String {
    let parent = if parent.is_empty() { "/wharf" } else { parent };
    format!("{}/{id}", parent.trim_end_matches('/'))
}
