//! The bundle of a container being created: the image config read and
//! checked, missing mount sources created, the rootfs overlay mounted, the
//! user resolved and `config.json` written. All blocking: CreateContainer
//! runs it on a blocking thread while the monitor starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::create::idmapped_volumes_dir;
use super::spec::{self, HostFeatures, Namespaces, PodUserns, SandboxFiles, SpecInput};
use super::{rootfs, ContainerError};
use crate::api;
use crate::image::ImageService;
use crate::runtime::RuntimeFeatures;
use crate::sandbox::Sandbox;
use crate::timing::step_sync;

/// What the blocking part of CreateContainer works from, owned.
pub(super) struct BundleRequest {
    pub(super) images: Arc<ImageService>,
    pub(super) image: crate::image::metadata::ImageRecord,
    pub(super) image_name: String,
    pub(super) lower_dirs: Vec<PathBuf>,
    pub(super) id: String,
    pub(super) sandbox: Sandbox,
    pub(super) config: api::ContainerConfig,
    pub(super) namespaces: Namespaces,
    pub(super) record_dir: PathBuf,
    pub(super) state_dir: PathBuf,
    pub(super) host: HostFeatures,
    pub(super) runtime_features: RuntimeFeatures,
    pub(super) userns: Option<PodUserns>,
}

/// A bundle ready for the runtime, and what to take back if the
/// container is not created after all.
#[derive(Clone)]
pub(super) struct Bundle {
    pub(super) rootfs: PathBuf,
    pub(super) created_host_paths: Vec<PathBuf>,
    pub(super) stop_signal: i32,
}

impl BundleRequest {
    /// Reads and checks the image config, creates missing mount sources,
    /// mounts the rootfs, resolves the user and writes `config.json`.
    /// Blocking and, for a large image config, CPU-heavy: call it on a
    /// blocking thread. On error it has undone its own steps.
    pub(super) fn prepare(self) -> Result<Bundle, ContainerError> {
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

fn open_userns(path: &Path) -> Result<std::fs::File, ContainerError> {
    std::fs::File::open(path).map_err(|e| {
        crate::idmap::IdmapError::from(crate::error::IoError::new("opening", path, e)).into()
    })
}

/// cgroupfs driver: `<parent>/<id>`, or a `wharf` parent when kubelet gave
/// none.
pub fn cgroups_path(parent: &str, id: &str) -> String {
    let parent = if parent.is_empty() { "/wharf" } else { parent };
    format!("{}/{id}", parent.trim_end_matches('/'))
}
