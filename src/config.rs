//! Configuration: built-in defaults, an optional TOML file, then flags.
//!
//! [`DEFAULT_CONFIG`] is both what `wharf config default` prints and, parsed,
//! the defaults themselves (a unit test keeps the two in step).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Read at start-up when it exists and no `--config` names another file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wharf/config.toml";

/// The commented default configuration (also `deploy/config.toml`).
pub const DEFAULT_CONFIG: &str = r#"# Wharf configuration: /etc/wharf/config.toml, or the file --config names.
# Every key is optional: a missing key keeps the default shown here. Flags
# (--socket, --root, --state-dir, --log-level) override the file. SIGHUP
# reads it again (see README, "Reload").

# gRPC unix socket that kubelet and crictl connect to.
socket = "/run/wharf/wharf.sock"

# Persistent data: images, layers, metadata.
root = "/var/lib/wharf"

# Runtime state that must not survive a reboot.
state_dir = "/run/wharf"

# trace, debug, info, warn or error; or a tracing filter such as
# "info,wharf::image=debug". The RUST_LOG variable, when set, wins.
log_level = "info"

[registry]
# Per-host registry configuration in containerd's format:
# <config_path>/<host[:port]>/hosts.toml (server, [host."URL"] mirrors with
# capabilities, skip_verify, ca, header). A containerd certs.d works as is.
config_path = "/etc/wharf/certs.d"

# A pull that receives no byte for this many seconds is cancelled.
stall_timeout_secs = 60

# A pull whose layer downloads receive nothing for this many seconds is
# logged at warn, naming the image, the layers and their bytes so far.
stall_warning_secs = 30

# Timeout for a manifest, config or token request.
request_timeout_secs = 30

# Layers of one pull downloaded (and unpacked) at the same time.
max_concurrent_downloads = 3

[image]
# Limits against decompression bombs: a pull that would unpack more fails
# with RESOURCE_EXHAUSTED and leaves nothing behind. Unpacked bytes are those
# of a layer's uncompressed tar, plus the holes of sparse files.

# Bytes one layer may unpack to (32 GiB).
max_layer_unpacked_bytes = 34359738368

# Bytes all the layers one pull unpacks may add up to (64 GiB); layers
# already stored are not unpacked again and do not count.
max_image_unpacked_bytes = 68719476736

# A layer may also unpack to at most max_unpack_ratio times its compressed
# size, plus unpack_ratio_allowance_bytes (1 GiB), so that small layers of,
# say, zero-filled files still fit.
max_unpack_ratio = 100
unpack_ratio_allowance_bytes = 1073741824

[cni]
# CNI network configuration files (.conflist, .conf, .json).
conf_dir = "/etc/cni/net.d"

# Where CNI plugin binaries are looked up, in order.
bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]

[runtime]
# A runc-compatible OCI runtime binary (name looked up in PATH, or a path).
path = "runc"

# A runtime command (start, kill, delete, state, update) that takes longer
# is killed and its call fails with DEADLINE_EXCEEDED.
command_timeout_secs = 120

# cgroupfs is the only driver so far ("systemd" is not supported yet).
cgroup_driver = "cgroupfs"

# The per-container monitor; by default the wharf-monitor installed next
# to the wharf binary.
# monitor_path = "/usr/local/bin/wharf-monitor"

# More runc-compatible runtimes, for RuntimeClass handlers: a pod whose
# RuntimeClass names NAME runs its containers with this runtime. The
# default handler ("" or "runc") is the runtime above.
# [runtime.handlers.NAME]
# Binary: a path or a name looked up in PATH.
# path = "/usr/local/bin/crun"
# The runtime's --root; by default <state_dir>/runtimes/NAME.
# root = "/run/crun-wharf"
# Global options given before every command, after --root.
# options = ["--systemd-cgroup"]

[stream]
# The streaming server for Exec, Attach and PortForward: the CRI calls
# return a URL on it, which kubelet proxies clients to. Port 0 picks any
# free port at start-up.
address = "127.0.0.1"
port = 0

# A URL returned by Exec, Attach or PortForward works once, within this
# many seconds.
token_lifetime_secs = 60

# A session with no traffic either way for this long is closed (kubelet's
# default, 4 hours).
idle_timeout_secs = 14400

# A client must open its streams within this many seconds of connecting.
stream_creation_timeout_secs = 30

# TLS for the streaming server is not supported yet: setting tls_cert or
# tls_key is a configuration error.
# tls_cert = "/etc/wharf/stream.crt"
# tls_key = "/etc/wharf/stream.key"

[metrics]
# Prometheus metrics at http://ADDRESS/metrics, e.g. "127.0.0.1:9191"
# ("[::1]:9191"; port 0 picks a free one and logs it). Empty: off.
address = ""
"#;

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub log_level: String,
    #[serde(default)]
    pub registry: RegistrySection,
    #[serde(default)]
    pub image: ImageSection,
    #[serde(default)]
    pub cni: CniSection,
    #[serde(default)]
    pub runtime: RuntimeSection,
    #[serde(default)]
    pub stream: StreamSection,
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// `[metrics]`: the Prometheus endpoint, off while `address` is empty.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    pub address: String,
}

impl MetricsSection {
    /// The address to serve on, if any; `validate` checked it.
    pub fn address(&self) -> Option<&str> {
        (!self.address.is_empty()).then_some(self.address.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSection {
    pub address: String,
    pub port: u16,
    pub token_lifetime_secs: u64,
    pub idle_timeout_secs: u64,
    pub stream_creation_timeout_secs: u64,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for StreamSection {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".into(),
            port: 0,
            token_lifetime_secs: 60,
            idle_timeout_secs: 4 * 60 * 60,
            stream_creation_timeout_secs: 30,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    pub config_path: PathBuf,
    pub stall_timeout_secs: u64,
    pub stall_warning_secs: u64,
    pub request_timeout_secs: u64,
    pub max_concurrent_downloads: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageSection {
    pub max_layer_unpacked_bytes: u64,
    pub max_image_unpacked_bytes: u64,
    pub max_unpack_ratio: u64,
    pub unpack_ratio_allowance_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CniSection {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    pub path: PathBuf,
    pub command_timeout_secs: u64,
    pub cgroup_driver: CgroupDriver,
    pub monitor_path: Option<PathBuf>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub handlers: BTreeMap<String, HandlerSection>,
}

/// `[runtime.handlers.NAME]`: another runc-compatible runtime.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSection {
    pub path: PathBuf,
    #[serde(default)]
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// Handler names become directory names and RuntimeClass handlers, which
/// Kubernetes limits to a DNS label.
const MAX_HANDLER_NAME: usize = 63;
/// Options of one handler; more is a mistake, not a runtime's command line.
const MAX_HANDLER_OPTIONS: usize = 32;

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            config_path: "/etc/wharf/certs.d".into(),
            stall_timeout_secs: 60,
            stall_warning_secs: 30,
            request_timeout_secs: 30,
            max_concurrent_downloads: 3,
        }
    }
}

impl Default for ImageSection {
    fn default() -> Self {
        const GIB: u64 = 1024 * 1024 * 1024;
        Self {
            max_layer_unpacked_bytes: 32 * GIB,
            max_image_unpacked_bytes: 64 * GIB,
            max_unpack_ratio: 100,
            unpack_ratio_allowance_bytes: GIB,
        }
    }
}

impl Default for CniSection {
    fn default() -> Self {
        Self {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        }
    }
}

impl Default for RuntimeSection {
    fn default() -> Self {
        Self {
            path: "runc".into(),
            command_timeout_secs: 120,
            cgroup_driver: CgroupDriver::Cgroupfs,
            monitor_path: None,
            handlers: BTreeMap::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: "/run/wharf/wharf.sock".into(),
            root: "/var/lib/wharf".into(),
            state_dir: "/run/wharf".into(),
            log_level: "info".into(),
            registry: RegistrySection::default(),
            image: ImageSection::default(),
            cni: CniSection::default(),
            runtime: RuntimeSection::default(),
            stream: StreamSection::default(),
            metrics: MetricsSection::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    fn parse(text: &str) -> Result<Config, String> {
        // Merge over the defaults table so that top-level keys are optional too.
        let mut merged: toml::Table = DEFAULT_CONFIG.parse().map_err(|e| format!("{e}"))?;
        let overrides: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
        merge(&mut merged, overrides);
        let config: Config = merged.try_into().map_err(|e| format!("{e}"))?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.registry.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid(
                "registry.max_concurrent_downloads must be at least 1".into(),
            ));
        }
        if self.registry.stall_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "registry.stall_timeout_secs must be at least 1".into(),
            ));
        }
        if self.registry.stall_warning_secs == 0 {
            return Err(ConfigError::Invalid(
                "registry.stall_warning_secs must be at least 1".into(),
            ));
        }
        if let Some(address) = self.metrics.address() {
            if address.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "metrics.address must be IP:PORT (\"127.0.0.1:9191\", \"[::1]:9191\"), or empty for no metrics; got {}",
                    crate::error::shown(address)
                )));
            }
        }
        if self.runtime.command_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "runtime.command_timeout_secs must be at least 1".into(),
            ));
        }
        for (key, value) in [
            (
                "max_layer_unpacked_bytes",
                self.image.max_layer_unpacked_bytes,
            ),
            (
                "max_image_unpacked_bytes",
                self.image.max_image_unpacked_bytes,
            ),
            ("max_unpack_ratio", self.image.max_unpack_ratio),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "image.{key} must be at least 1"
                )));
            }
        }
        let stream = &self.stream;
        if stream.address.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "stream.address must be an IP address, got {:?}",
                stream.address
            )));
        }
        for (key, value) in [
            ("token_lifetime_secs", stream.token_lifetime_secs),
            ("idle_timeout_secs", stream.idle_timeout_secs),
            (
                "stream_creation_timeout_secs",
                stream.stream_creation_timeout_secs,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "stream.{key} must be at least 1"
                )));
            }
        }
        if stream.tls_cert.is_some() || stream.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "stream.tls_cert/tls_key: TLS for the streaming server is not supported yet".into(),
            ));
        }
        for (name, handler) in &self.runtime.handlers {
            validate_handler(name, handler)?;
        }
        crate::logging::parse_level(&self.log_level)
            .map_err(|e| ConfigError::Invalid(format!("log_level: {e}")))?;
        // Sockets below state_dir are reached through a short alias when
        // their path is too long for a socket address (see
        // runtime::socket_path), so it may be of any length.
        for (name, path) in [
            ("root", &self.root),
            ("state_dir", &self.state_dir),
            ("socket", &self.socket),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be an absolute path, got {}",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    pub fn paths(&self) -> Paths {
        Paths {
            root: self.root.clone(),
            state: self.state_dir.clone(),
        }
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.registry.stall_timeout_secs)
    }

    pub fn stall_warning(&self) -> Duration {
        Duration::from_secs(self.registry.stall_warning_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.registry.request_timeout_secs)
    }
}

fn validate_handler(name: &str, handler: &HandlerSection) -> Result<(), ConfigError> {
    let label = !name.is_empty()
        && name.len() <= MAX_HANDLER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label {
        return Err(ConfigError::Invalid(format!(
            "runtime.handlers.{name:?}: a handler name is a DNS label (lowercase letters, digits and '-', at most {MAX_HANDLER_NAME} bytes)"
        )));
    }
    if handler.path.as_os_str().is_empty() {
        return Err(ConfigError::Invalid(format!(
            "runtime.handlers.{name}.path is empty"
        )));
    }
    if let Some(root) = &handler.root {
        if !root.is_absolute() {
            return Err(ConfigError::Invalid(format!(
                "runtime.handlers.{name}.root must be an absolute path, got {}",
                root.display()
            )));
        }
    }
    if handler.options.len() > MAX_HANDLER_OPTIONS {
        return Err(ConfigError::Invalid(format!(
            "runtime.handlers.{name}.options: {} options, more than the {MAX_HANDLER_OPTIONS} allowed",
            handler.options.len()
        )));
    }
    if let Some(bad) = handler.options.iter().find(|o| !o.starts_with('-')) {
        return Err(ConfigError::Invalid(format!(
            "runtime.handlers.{name}.options: {bad:?} is not an option (options start with '-'; give a value as --flag=value)"
        )));
    }
    Ok(())
}

fn merge(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(table)) => {
                merge(base_table, table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Every on-disk location, derived from `root` and `state_dir`, so that two
/// instances with different roots never share a file.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub state: PathBuf,
}

impl Paths {
    pub fn image_root(&self) -> PathBuf {
        self.root.join("image")
    }

    /// CNI results, kept so that DEL undoes exactly what ADD did.
    pub fn cni_cache(&self) -> PathBuf {
        self.root.join("cni-cache")
    }

    /// The OCI runtime's `--root`: its state of every container.
    pub fn runtime_root(&self) -> PathBuf {
        self.state.join("runc")
    }

    /// A configured handler's default `--root`.
    pub fn handler_root(&self, name: &str) -> PathBuf {
        self.state.join("runtimes").join(name)
    }
}

#[cfg(test)]
mod tests;
