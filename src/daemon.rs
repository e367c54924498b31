//! Assembling the daemon from its configuration: the stores opened, pods
//! and containers recovered, the runtime handlers probed. The `wharf`
//! binary serves what [`open`] returns; tests that recover a stopped
//! daemon's state build it the same way.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Paths};
use crate::container::spec::HostFeatures;
use crate::container::{ContainerOptions, ContainerService};
use crate::image::registry::RegistryConfig;
use crate::image::unpack::UnpackOptions;
use crate::image::{ImageService, PullOptions};
use crate::network::{Cni, CniConfig};
use crate::runtime::{default_monitor_binary, OciRuntime, RuntimeHandlers};
use crate::sandbox::SandboxService;
use crate::store::{ensure_dir_mode, StoreError, PRIVATE_DIR_MODE, TRAVERSE_ONLY_DIR_MODE};

/// The services the gRPC edge and the streaming server work on.
pub struct Core {
    pub images: Arc<ImageService>,
    pub cni: Arc<Cni>,
    pub sandboxes: Arc<SandboxService>,
    pub containers: Arc<ContainerService>,
}

/// A start-up step that failed, with its cause chain.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {cause}")]
pub struct StartError {
    pub step: &'static str,
    pub cause: String,
}

fn failed<E: std::error::Error>(step: &'static str) -> impl FnOnce(E) -> StartError {
    move |e| StartError {
        step,
        cause: crate::error::chain(&e),
    }
}

/// Opens the stores under `config`'s directories and recovers what a
/// previous daemon left: pods, then containers (which hold their pods and
/// layers), then drops image data nothing holds.
pub async fn open(config: &Config) -> Result<Core, StartError> {
    let paths = config.paths();
    let registry = RegistryConfig {
        config_path: config.registry.config_path.clone(),
        request_timeout: config.request_timeout(),
    };
    let options = PullOptions {
        stall_timeout: config.stall_timeout(),
        stall_warning: config.stall_warning(),
        max_concurrent_downloads: config.registry.max_concurrent_downloads,
        unpack: UnpackOptions {
            max_layer_bytes: config.image.max_layer_unpacked_bytes,
            max_image_bytes: config.image.max_image_unpacked_bytes,
            max_ratio: config.image.max_unpack_ratio,
            ratio_allowance: config.image.unpack_ratio_allowance_bytes,
            ..UnpackOptions::default()
        },
    };
    prepare_top_directories(&paths).map_err(failed("preparing the top directories"))?;
    let images = Arc::new(
        ImageService::open(paths.image_root(), registry, options)
            .map_err(failed("opening the image store"))?,
    );

    let cni = Arc::new(Cni::new(CniConfig {
        conf_dir: config.cni.conf_dir.clone(),
        bin_dirs: config.cni.bin_dirs.clone(),
        cache_dir: paths.cni_cache(),
    }));
    if cni.portmap_needs_host_setup() {
        if let Err(e) = crate::network::prepare_host_for_hostport_on_localhost() {
            tracing::warn!(error = %crate::error::chain(&e), "hostPort on 127.0.0.1 will not work");
        }
    }
    let monitor_binary = match &config.runtime.monitor_path {
        Some(path) => path.clone(),
        None => default_monitor_binary().map_err(failed("locating wharf-monitor"))?,
    };
    let sandboxes = Arc::new(
        SandboxService::new(
            paths.root.clone(),
            paths.state.clone(),
            Arc::clone(&cni),
            monitor_binary.clone(),
        )
        .await
        .map_err(failed("recovering pods"))?,
    );
    let command_timeout = Duration::from_secs(config.runtime.command_timeout_secs);
    let oci_runtime = OciRuntime::new(config.runtime.path.clone(), paths.runtime_root())
        .with_command_timeout(command_timeout);
    let configured_handlers = config
        .runtime
        .handlers
        .iter()
        .map(|(name, handler)| {
            let root = handler
                .root
                .clone()
                .unwrap_or_else(|| paths.handler_root(name));
            let runtime = OciRuntime::new(handler.path.clone(), root)
                .with_options(handler.options.iter().map(Into::into).collect())
                .with_command_timeout(command_timeout);
            (name.clone(), runtime)
        })
        .collect();
    let user_namespaces = probe_user_namespaces(&paths).await;
    let handlers = RuntimeHandlers::probe(oci_runtime, configured_handlers, user_namespaces).await;
    for handler in handlers.all() {
        match handler.runtime.remove_exec_leftovers() {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(handler = %handler.name, removed, "removed files of interrupted ExecSyncs")
            }
            Err(e) => {
                tracing::warn!(handler = %handler.name, error = %e, "cannot remove files of interrupted ExecSyncs")
            }
        }
    }
    let container_options = ContainerOptions {
        handlers,
        monitor_binary,
        host: HostFeatures::detect(),
    };
    let containers = Arc::new(
        ContainerService::new(
            paths.root.clone(),
            paths.state.clone(),
            container_options,
            Arc::clone(&images),
            Arc::clone(&sandboxes),
        )
        .await
        .map_err(failed("recovering containers"))?,
    );
    // Only now do containers hold the layers they use.
    images
        .collect_garbage()
        .map_err(failed("collecting unused image data"))?;
    Ok(Core {
        images,
        cni,
        sandboxes,
        containers,
    })
}

/// Whether pods may have user namespaces of their own here: ID-mapped
/// mounts work on the image store's filesystem, and the runtime of a
/// container whose root is not the host's can pass through the state
/// directory (and its parents) to the container's files.
async fn probe_user_namespaces(paths: &Paths) -> bool {
    let (layers, state) = (paths.image_root(), paths.state.clone());
    let probed = tokio::task::spawn_blocking(move || {
        crate::idmap::probe(&layers).map_err(|e| crate::error::chain(&e))?;
        crate::idmap::check_traversable(&state)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match probed {
        Ok(()) => true,
        Err(reason) => {
            tracing::info!(%reason, "pods cannot have user namespaces of their own");
            false
        }
    }
}

/// Creates `root` (0700) and `state` (0711: the socket may live there) when
/// missing. Existing ones are left as they are, since an operator may point
/// Wharf into a shared directory: what protects Wharf's data is that every
/// directory it owns below them is private (each service sees to its own),
/// the runtime's included.
fn prepare_top_directories(paths: &Paths) -> Result<(), StoreError> {
    if !paths.root.exists() {
        ensure_dir_mode(&paths.root, PRIVATE_DIR_MODE)?;
    }
    if !paths.state.exists() {
        ensure_dir_mode(&paths.state, TRAVERSE_ONLY_DIR_MODE)?;
    }
    for own in [paths.runtime_root(), paths.cni_cache()] {
        ensure_dir_mode(&own, PRIVATE_DIR_MODE)?;
    }
    Ok(())
}
