//! The daemon's log: tracing to stderr as text or JSON lines (for log
//! shippers), with a filter that a reload can replace.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The variable that, when set, overrides the configured log level.
pub const LOG_ENV: &str = "RUST_LOG";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields`, `target`,
    /// `span` and `spans`.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: expected text or json")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid log level {level:?}: {reason}")]
pub struct LevelError {
    level: String,
    reason: String,
}

/// Changes the installed subscriber's filter.
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start-up and wins over the configuration.
    from_env: bool,
}

/// Parses a level or tracing directive, as `log_level` takes it.
pub fn parse_level(level: &str) -> Result<EnvFilter, LevelError> {
    EnvFilter::try_new(level).map_err(|e| LevelError {
        level: level.to_string(),
        reason: e.to_string(),
    })
}

/// Installs the global subscriber: `level` (unless `RUST_LOG` is set) in
/// `format` to stderr.
pub fn init(level: &str, format: LogFormat) -> Result<LogLevel, LevelError> {
    let (filter, from_env) = match std::env::var(LOG_ENV) {
        Ok(from_env) if !from_env.is_empty() => (EnvFilter::new(from_env), true),
        _ => (parse_level(level)?, false),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    // Colours only on a terminal: journald and log files get plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
    Ok(LogLevel { handle, from_env })
}

impl LogLevel {
    /// Applies `level` from now on. Ok(false) when `RUST_LOG` overrides
    /// the configuration, so nothing changed.
    pub fn set(&self, level: &str) -> Result<bool, LevelError> {
        let filter = parse_level(level)?;
        if self.from_env {
            return Ok(false);
        }
        self.handle.reload(filter).map_err(|e| LevelError {
            level: level.to_string(),
            reason: e.to_string(),
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_levels_parse() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
        assert!(parse_level("info,wharf::image=debug").is_ok());
        assert!(parse_level("info,[").is_err());
    }
}
