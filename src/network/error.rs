//! Errors of pod networking.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Classify, Kind};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidArgument {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("network namespace {path} does not exist")]
    NetnsMissing { path: PathBuf },
    #[error("no network config (.conflist, .conf, .json) in {dir}")]
    NoNetworkConfig { dir: PathBuf },
    #[error("network config {path}: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("starting CNI plugin {plugin} for {command}")]
    Spawn {
        plugin: PathBuf,
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} timed out after {timeout:?}")]
    Timeout {
        plugin: String,
        command: &'static str,
        timeout: Duration,
    },
    /// The plugin exited non-zero.
    #[error("CNI plugin {plugin} {command} failed: {failure}")]
    Plugin {
        plugin: String,
        command: &'static str,
        failure: Box<PluginFailure>,
    },
    #[error("CNI plugin {plugin} {command} returned an unusable result: {reason}")]
    BadResult {
        plugin: String,
        command: &'static str,
        reason: String,
    },
    /// ADD failed and the DEL meant to undo it failed too: what the DEL
    /// could not release may have leaked.
    #[error("{error}; undoing with DEL also failed: {cleanup}")]
    AddUndo {
        error: Box<CniError>,
        cleanup: Box<CniError>,
    },
    #[error("bringing up lo in {netns}: {reason}")]
    Loopback { netns: PathBuf, reason: String },
    #[error("host set-up for hostPort on localhost: {step}: {reason}")]
    HostSetup { step: String, reason: String },
    #[error("network result cache")]
    Cache(#[from] StoreError),
}

/// What a failed plugin said: `code`, `msg` and `details` from the spec's
/// error JSON on its stdout, and the end of its stderr.
#[derive(Debug)]
pub struct PluginFailure {
    pub code: Option<u64>,
    pub msg: String,
    pub details: String,
    pub stderr: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(code) = self.code {
            write!(f, "code {code}: ")?;
        }
        f.write_str(&self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        if !self.stderr.is_empty() {
            write!(f, "; stderr: {}", self.stderr)?;
        }
        Ok(())
    }
}

impl Classify for CniError {
    fn kind(&self) -> Kind {
        match self {
            CniError::InvalidArgument { .. } => Kind::InvalidArgument,
            CniError::NetnsMissing { .. }
            | CniError::NoNetworkConfig { .. }
            | CniError::InvalidConfig { .. }
            | CniError::PluginNotFound { .. } => Kind::FailedPrecondition,
            CniError::Timeout { .. } => Kind::DeadlineExceeded,
            CniError::Plugin { .. } | CniError::BadResult { .. } => Kind::Unavailable,
            CniError::AddUndo { error, .. } => error.kind(),
            CniError::Spawn { .. }
            | CniError::Loopback { .. }
            | CniError::HostSetup { .. }
            | CniError::Cache(_) => Kind::Internal,
        }
    }
}
