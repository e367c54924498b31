//! `wharf`: the CRI daemon, and its helper commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use wharf::config::{Config, DEFAULT_CONFIG};
use wharf::container::spec::HostFeatures;
use wharf::container::{ContainerOptions, ContainerService};
use wharf::cri::{self, Services};
use wharf::image::registry::RegistryConfig;
use wharf::image::unpack::UnpackOptions;
use wharf::image::{ImageService, PullOptions};
use wharf::network::{Cni, CniConfig};
use wharf::runtime::{default_monitor_binary, OciRuntime, RuntimeHandlers};
use wharf::sandbox::SandboxService;
use wharf::streaming::runtime_backend::RuntimeBackend;

#[derive(Parser)]
#[command(name = "wharf", version, about = "A Kubernetes CRI container runtime")]
struct Cli {
    /// TOML configuration file; without it the built-in defaults apply.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// gRPC unix socket (overrides the config file).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Directory for persistent data (overrides the config file).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Directory for runtime state (overrides the config file).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log filter: trace, debug, info, warn, error, or a tracing directive.
    #[arg(long)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the default configuration, commented.
    Default,
    /// Print Wharf's default CNI network (bridge, host-local, portmap), for
    /// /etc/cni/net.d/10-wharf.conflist.
    Cni,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Config { action }) => {
            match action {
                ConfigAction::Default => print!("{DEFAULT_CONFIG}"),
                ConfigAction::Cni => println!("{}", wharf::network::DEFAULT_CONFLIST.trim_end()),
            }
            ExitCode::SUCCESS
        }
        None => match run_daemon(cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                tracing::error!("{message}");
                eprintln!("wharf: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path).map_err(|e| wharf::error::chain(&e))?,
        None => Config::default(),
    };
    if let Some(socket) = &cli.socket {
        config.socket = socket.clone();
    }
    if let Some(root) = &cli.root {
        config.root = root.clone();
    }
    if let Some(state_dir) = &cli.state_dir {
        config.state_dir = state_dir.clone();
    }
    if let Some(level) = &cli.log_level {
        config.log_level = level.clone();
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn init_logging(level: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::new(from_env),
        _ => EnvFilter::try_new(level).map_err(|e| format!("invalid log level {level:?}: {e}"))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

fn run_daemon(cli: Cli) -> Result<(), String> {
    let config = load_config(&cli)?;
    init_logging(&config.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting async runtime: {e}"))?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<(), String> {
    // Before anything else: a wrong --socket must not first cost a recovery.
    cri::check_socket_path(&config.socket).map_err(|e| wharf::error::chain(&e))?;
    // Likewise a taken streaming port.
    let streaming = Arc::new(
        wharf::streaming::Server::bind(&config.stream)
            .await
            .map_err(|e| wharf::error::chain(&e))?,
    );
    let paths = config.paths();
    let registry = RegistryConfig {
        config_path: config.registry.config_path.clone(),
        request_timeout: config.request_timeout(),
    };
    let options = PullOptions {
        stall_timeout: config.stall_timeout(),
        max_concurrent_downloads: config.registry.max_concurrent_downloads,
        unpack: UnpackOptions {
            max_layer_bytes: config.image.max_layer_unpacked_bytes,
            max_image_bytes: config.image.max_image_unpacked_bytes,
            max_ratio: config.image.max_unpack_ratio,
            ratio_allowance: config.image.unpack_ratio_allowance_bytes,
            ..UnpackOptions::default()
        },
    };
    prepare_top_directories(&paths)?;
    let images = Arc::new(
        ImageService::open(paths.image_root(), registry, options)
            .map_err(|e| format!("opening image store: {}", wharf::error::chain(&e)))?,
    );

    let cni = Arc::new(Cni::new(CniConfig {
        conf_dir: config.cni.conf_dir.clone(),
        bin_dirs: config.cni.bin_dirs.clone(),
        cache_dir: paths.cni_cache(),
    }));
    if cni.portmap_needs_host_setup() {
        if let Err(e) = wharf::network::prepare_host_for_hostport_on_localhost() {
            tracing::warn!(error = %wharf::error::chain(&e), "hostPort on 127.0.0.1 will not work");
        }
    }
    let monitor_binary = match &config.runtime.monitor_path {
        Some(path) => path.clone(),
        None => default_monitor_binary().map_err(|e| format!("locating wharf-monitor: {e}"))?,
    };
    let sandboxes = Arc::new(
        SandboxService::new(
            paths.root.clone(),
            paths.state.clone(),
            Arc::clone(&cni),
            monitor_binary.clone(),
        )
        .await
        .map_err(|e| format!("recovering sandboxes: {}", wharf::error::chain(&e)))?,
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
    let handlers = RuntimeHandlers::probe(oci_runtime, configured_handlers).await;
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
        .map_err(|e| format!("recovering containers: {}", wharf::error::chain(&e)))?,
    );
    // Only now do containers hold the layers they use.
    images
        .collect_garbage()
        .map_err(|e| format!("collecting unused image data: {}", wharf::error::chain(&e)))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        root = %config.root.display(),
        state = %config.state_dir.display(),
        "wharf starting"
    );
    let socket = config.socket.clone();
    let backend = Arc::new(RuntimeBackend::new(
        Arc::clone(&containers),
        Arc::clone(&sandboxes),
    ));
    let stream_server =
        tokio::spawn(Arc::clone(&streaming).serve(backend, std::future::pending::<()>()));
    let services = Services {
        config: Arc::new(config),
        images,
        sandboxes,
        containers,
        cni,
        streaming,
    };
    let served = cri::serve(&socket, services, shutdown_signal()).await;
    stream_server.abort();
    served.map_err(|e| wharf::error::chain(&e))?;
    tracing::info!("wharf stopped");
    Ok(())
}

/// Creates `root` (0700) and `state` (0711: the socket may live there) when
/// missing. Existing ones are left as they are, since an operator may point
/// Wharf into a shared directory: what protects Wharf's data is that every
/// directory it owns below them is private (each service sees to its own),
/// the runtime's included.
fn prepare_top_directories(paths: &wharf::config::Paths) -> Result<(), String> {
    use wharf::store::{ensure_dir_mode, PRIVATE_DIR_MODE, TRAVERSE_ONLY_DIR_MODE};
    let error = |e: wharf::store::StoreError| wharf::error::chain(&e);
    if !paths.root.exists() {
        ensure_dir_mode(&paths.root, PRIVATE_DIR_MODE).map_err(error)?;
    }
    if !paths.state.exists() {
        ensure_dir_mode(&paths.state, TRAVERSE_ONLY_DIR_MODE).map_err(error)?;
    }
    for own in [paths.runtime_root(), paths.cni_cache()] {
        ensure_dir_mode(&own, PRIVATE_DIR_MODE).map_err(error)?;
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop wharf with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}
