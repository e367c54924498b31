//! `wharf` with no subcommand: the daemon. Assembles the services, serves
//! CRI, tells systemd when it is ready, reloads on SIGHUP and stops on
//! SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};

use wharf::config::Config;
use wharf::cri::{self, Services};
use wharf::logging::{LogFormat, LogLevel};
use wharf::notify::Notifier;
use wharf::reload::{InForce, Live, Reloader};
use wharf::streaming::runtime_backend::RuntimeBackend;

use super::ConfigSource;

pub fn run(source: ConfigSource, format: LogFormat) -> ExitCode {
    // Before any thread exists: it edits the environment.
    let notifier = Notifier::take_from_env();
    match start(source, format, notifier) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("wharf: {message}");
            ExitCode::FAILURE
        }
    }
}

fn start(source: ConfigSource, format: LogFormat, notifier: Notifier) -> Result<(), String> {
    let config = source.load().map_err(|e| wharf::error::chain(&e))?;
    let log = wharf::logging::init(&config.log_level, format).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting async runtime: {e}"))?;
    let served = runtime.block_on(serve(source, config, log, notifier));
    // Work still on blocking threads by now is a removed container's
    // writable layer being deleted (or a stats walk): not waited for, or a
    // stop would last as long as the deletion. What is left of it is a
    // `.tmp-*` directory, which the next start deletes.
    runtime.shutdown_timeout(BLOCKING_WORK_AT_EXIT);
    served
}

/// How long the daemon's exit waits for work left on blocking threads.
const BLOCKING_WORK_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

async fn serve(
    source: ConfigSource,
    config: Config,
    log: LogLevel,
    notifier: Notifier,
) -> Result<(), String> {
    // Before anything else: a wrong --socket must not first cost a recovery.
    cri::check_socket_path(&config.socket).map_err(|e| wharf::error::chain(&e))?;
    // Also before the recovery, which may take a while: SIGHUP's default
    // action would end the daemon. One arriving early is kept for later.
    let hangup =
        signal(SignalKind::hangup()).map_err(|e| format!("installing the SIGHUP handler: {e}"))?;
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
        commit = env!("WHARF_GIT_COMMIT"),
        config = %source.file().map_or("(built-in defaults)".into(), |f| f.display().to_string()),
        root = %config.root.display(),
        state = %config.state_dir.display(),
        "wharf starting"
    );
    let live = Live {
        log,
        images: Arc::clone(&images),
        cni: Arc::clone(&cni),
        streaming: Arc::clone(&streaming),
    };
    let socket = config.socket.clone();
    let in_force = Arc::new(InForce::new(config));
    let loader = Box::new(move || source.load());
    let (serving_tx, serving) = tokio::sync::oneshot::channel();
    let reloads = tokio::spawn(reload_on_sighup(
        hangup,
        serving,
        Reloader::new(loader, Arc::clone(&in_force), live),
        notifier.clone(),
    ));
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
        config: in_force,
        images,
        sandboxes,
        containers,
        cni,
        streaming,
    };
    let ready_status = format!("serving CRI on {}", socket.display());
    let ready = || {
        notifier.ready(&ready_status);
        let _ = serving_tx.send(());
    };
    let stopping = async {
        shutdown_signal().await;
        notifier.stopping();
    };
    let served = cri::serve(&socket, services, ready, stopping).await;
    reloads.abort();
    stream_server.abort();
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    served.map_err(|e| wharf::error::chain(&e))?;
    tracing::info!("wharf stopped");
    Ok(())
}

/// Reloads the configuration on each SIGHUP, telling systemd (which waits
/// for READY=1 after RELOADING=1 before `systemctl reload` returns). Starts
/// once the socket serves: the first READY=1 is the start-up's, and a
/// SIGHUP received before is handled then.
async fn reload_on_sighup(
    mut hangup: Signal,
    serving: tokio::sync::oneshot::Receiver<()>,
    mut reloader: Reloader,
    notifier: Notifier,
) {
    if serving.await.is_err() {
        return;
    }
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received, reloading the configuration");
        notifier.reloading();
        let reloaded = tokio::task::spawn_blocking(move || {
            let outcome = reloader.reload();
            (reloader, outcome)
        })
        .await;
        let Ok((back, outcome)) = reloaded else {
            tracing::error!("the reload task failed; configuration reload is off");
            return;
        };
        reloader = back;
        match outcome {
            Ok(outcome) => {
                for key in &outcome.needs_restart {
                    tracing::warn!(key = %key, "changed setting needs a restart to take effect");
                }
                tracing::info!(
                    applied = ?outcome.applied,
                    "configuration reloaded (registry hosts and CNI config re-read)"
                );
                notifier.ready("configuration reloaded");
            }
            Err(e) => {
                tracing::error!(
                    error = %wharf::error::chain(&e),
                    "configuration rejected; the previous one stays in force"
                );
                notifier.ready("configuration rejected on reload; previous one in force");
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
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
