//! `wharf`: the CRI daemon, and its helper commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use wharf::config::{Config, DEFAULT_CONFIG};
use wharf::cri::{self, Services};
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
    // And a taken metrics port.
    let metrics = match config.metrics.address() {
        Some(address) => Some(
            wharf::metrics::server::Server::bind(address)
                .await
                .map_err(|e| wharf::error::chain(&e))?,
        ),
        None => None,
    };
    let wharf::daemon::Core {
        images,
        cni,
        sandboxes,
        containers,
    } = wharf::daemon::open(&config)
        .await
        .map_err(|e| e.to_string())?;
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
    let metrics_server = metrics.map(|server| {
        let registry = wharf::metrics::registry(wharf::metrics::collect::StateCollector {
            images: Arc::clone(&images),
            sandboxes: Arc::clone(&sandboxes),
            containers: Arc::clone(&containers),
        });
        tokio::spawn(server.serve(registry))
    });
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
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    served.map_err(|e| wharf::error::chain(&e))?;
    tracing::info!("wharf stopped");
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
