//! The command line: `wharf` alone runs the daemon; subcommands are the
//! operator's tools (`version`, `info`, `config default|check|cni`).

mod daemon;
mod info;
mod version;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use wharf::config::{Config, ConfigError, DEFAULT_CONFIG, DEFAULT_CONFIG_PATH};
use wharf::logging::LogFormat;

#[derive(Parser)]
#[command(name = "wharf", version, about = "A Kubernetes CRI container runtime")]
struct Cli {
    /// TOML configuration file [default: /etc/wharf/config.toml when it
    /// exists, else the built-in defaults].
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    /// Log line format: text, or json for log shippers (one object a line).
    #[arg(long, default_value = "text", value_parser = clap::value_parser!(LogFormat))]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Daemon flags that override the configuration file, also on reload.
#[derive(clap::Args, Clone, Default)]
struct Overrides {
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
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print Wharf's version, the commit it was built from, and the OCI
    /// runtimes the configuration names.
    Version,
    /// Ask the running daemon for its version and status.
    Info {
        /// The daemon's socket [default: the configuration's `socket`].
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the default configuration, commented (deploy/config.toml).
    Default,
    /// Validate FILE and print the configuration it gives (defaults
    /// filled in) as TOML; exit 1 with the reason when it is invalid.
    Check { file: PathBuf },
    /// Print Wharf's default CNI network (bridge, host-local, portmap), for
    /// /etc/cni/net.d/10-wharf.conflist.
    Cni,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => return daemon::run(cli.config_source(), cli.log_format),
        Some(Command::Config { action }) => config_command(action),
        Some(Command::Version) => cli
            .config_source()
            .load()
            .map(|config| version::print(&config))
            .map_err(|e| wharf::error::chain(&e)),
        // The configuration only for the socket it names.
        Some(Command::Info {
            socket: Some(socket),
        }) => info::print(socket),
        Some(Command::Info { socket: None }) => cli
            .config_source()
            .load()
            .map_err(|e| wharf::error::chain(&e))
            .and_then(|config| info::print(&config.socket)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wharf: {message}");
            ExitCode::FAILURE
        }
    }
}

fn config_command(action: &ConfigAction) -> Result<(), String> {
    match action {
        ConfigAction::Default => print!("{DEFAULT_CONFIG}"),
        ConfigAction::Cni => println!("{}", wharf::network::DEFAULT_CONFLIST.trim_end()),
        ConfigAction::Check { file } => {
            let config = Config::load(file).map_err(|e| wharf::error::chain(&e))?;
            let text = toml::to_string(&config).map_err(|e| format!("printing: {e}"))?;
            eprintln!("{}: valid", file.display());
            print!("{text}");
        }
    }
    Ok(())
}

/// Where the daemon's configuration comes from: a file (or none), then
/// flags. Loaded again on each reload.
#[derive(Clone)]
pub struct ConfigSource {
    /// `--config`; without it, the default path when it exists (looked
    /// for on each load, so a reload finds a file created since).
    given: Option<PathBuf>,
    overrides: Overrides,
}

impl Cli {
    fn config_source(&self) -> ConfigSource {
        ConfigSource {
            given: self.config.clone(),
            overrides: self.overrides.clone(),
        }
    }
}

impl ConfigSource {
    /// The file a load reads now, if any.
    pub fn file(&self) -> Option<PathBuf> {
        self.given.clone().or_else(|| {
            let default = Path::new(DEFAULT_CONFIG_PATH);
            default.exists().then(|| default.to_path_buf())
        })
    }

    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.file() {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let flags = &self.overrides;
        if let Some(socket) = &flags.socket {
            config.socket = socket.clone();
        }
        if let Some(root) = &flags.root {
            config.root = root.clone();
        }
        if let Some(state_dir) = &flags.state_dir {
            config.state_dir = state_dir.clone();
        }
        if let Some(level) = &flags.log_level {
            config.log_level = level.clone();
        }
        config.validate()?;
        Ok(config)
    }
}
