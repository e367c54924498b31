//! Live reload (SIGHUP): the configuration read again, and what can change
//! without a restart applied to the running services. A configuration that
//! does not load or validate changes nothing; the daemon keeps serving on
//! the old one.
//!
//! Applied live: `log_level`; `registry.*` hosts, CA files and cached
//! tokens (re-read on every reload, whether the file changed or not) and
//! `registry.config_path`/`request_timeout_secs`; the CNI conf dir
//! (re-read) and `cni.*`; the streaming server's token lifetime and
//! timeouts. Every other changed key is logged as needing a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::config::{Config, ConfigError};
use crate::image::registry::RegistryConfig;
use crate::image::ImageService;
use crate::logging::LogLevel;
use crate::network::Cni;

/// Keys a reload applies; any other changed key needs a restart.
/// `[metrics]` keys are not here: they need a restart until the metrics
/// server can move (see [`Live::apply_metrics`]).
const LIVE_KEYS: &[&str] = &[
    "log_level",
    "registry.config_path",
    "registry.request_timeout_secs",
    "cni.conf_dir",
    "cni.bin_dirs",
    "stream.token_lifetime_secs",
    "stream.idle_timeout_secs",
    "stream.stream_creation_timeout_secs",
];

/// The running parts a reload reaches.
pub struct Live {
    pub log: LogLevel,
    pub images: Arc<ImageService>,
    pub cni: Arc<Cni>,
    pub streaming: Arc<crate::streaming::Server>,
}

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Changed keys now in effect.
    pub applied: Vec<String>,
    /// Changed keys that keep their old value until a restart.
    pub needs_restart: Vec<String>,
}

/// Loads the configuration as the daemon did at start-up (file, then
/// flags), validated.
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send>;

/// The configuration in force, as `Status(verbose)` reports it: the
/// start-up one with the live settings of each reload since.
#[derive(Debug)]
pub struct InForce(RwLock<Arc<Config>>);

impl InForce {
    pub fn new(config: Config) -> InForce {
        InForce(RwLock::new(Arc::new(config)))
    }

    pub fn get(&self) -> Arc<Config> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, config: Config) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}

/// Holds the configuration in force and applies new ones.
pub struct Reloader {
    load: Loader,
    /// The settings in force, by dotted key: those of start-up, with the
    /// live keys of each reload since. A key that needs a restart keeps
    /// its start-up value, so every reload reports it until then.
    running: Flat,
    in_force: Arc<InForce>,
    live: Live,
}

type Flat = BTreeMap<String, toml::Value>;

impl Reloader {
    pub fn new(load: Loader, in_force: Arc<InForce>, live: Live) -> Reloader {
        Reloader {
            load,
            running: flatten(&in_force.get()),
            in_force,
            live,
        }
    }

    /// Reads the configuration again and applies it. On error nothing
    /// changed. Blocking (file reads): call it off the async workers.
    pub fn reload(&mut self) -> Result<Outcome, ConfigError> {
        let new = (self.load)()?;
        let new_flat = flatten(&new);
        let changed = changed_keys(&self.running, &new_flat);
        self.live.apply(&new, &changed)?;
        let (applied, needs_restart): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|key| LIVE_KEYS.contains(&key.as_str()));
        for key in &applied {
            match new_flat.get(key) {
                Some(value) => self.running.insert(key.clone(), value.clone()),
                None => self.running.remove(key),
            };
        }
        match unflatten(&self.running) {
            Ok(config) => self.in_force.set(config),
            // Cannot happen (the values came from Configs); only what
            // Status(verbose) shows would be stale.
            Err(e) => tracing::warn!(error = %e, "cannot rebuild the configuration in force"),
        }
        Ok(Outcome {
            applied,
            needs_restart,
        })
    }
}

impl Live {
    /// Applies `new`'s live settings; the registry resolver and the CNI
    /// conf dir are renewed whatever changed.
    fn apply(&self, new: &Config, changed: &[String]) -> Result<(), ConfigError> {
        if changed.iter().any(|key| key == "log_level") {
            // Validated with the config already; an error here is the
            // subscriber's, and nothing else has changed yet.
            match self.log.set(&new.log_level) {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    "log_level changed, but {} is set and wins",
                    crate::logging::LOG_ENV
                ),
                Err(e) => return Err(ConfigError::Invalid(e.to_string())),
            }
        }
        self.images.reload_registry(RegistryConfig {
            config_path: new.registry.config_path.clone(),
            request_timeout: new.request_timeout(),
        });
        self.cni
            .reload(new.cni.conf_dir.clone(), new.cni.bin_dirs.clone());
        self.streaming.reload(&new.stream);
        self.apply_metrics(new, changed);
        Ok(())
    }

    /// The hook for `[metrics]` settings. None are applied live yet: a
    /// changed metrics key is reported as needing a restart, like any key
    /// not in [`LIVE_KEYS`].
    fn apply_metrics(&self, _new: &Config, _changed: &[String]) {}
}

/// The dotted keys (`registry.config_path`) whose values differ, sorted.
fn changed_keys(old: &Flat, new: &Flat) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = old
        .keys()
        .chain(new.keys())
        .filter(|key| old.get(*key) != new.get(*key))
        .collect();
    keys.into_iter().cloned().collect()
}

/// Leaf values by dotted key; tables (`runtime.handlers.NAME`) are walked,
/// arrays compared whole.
fn flatten(config: &Config) -> Flat {
    fn walk(prefix: &str, table: toml::Table, out: &mut BTreeMap<String, toml::Value>) {
        for (key, value) in table {
            let key = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(table) => walk(&key, table, out),
                leaf => {
                    out.insert(key, leaf);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    // Serialising plain data to a table cannot fail; an empty map would
    // only hide changes, never invent them.
    if let Ok(table) = toml::Table::try_from(config) {
        walk("", table, &mut out);
    }
    out
}

/// The inverse of [`flatten`].
fn unflatten(flat: &Flat) -> Result<Config, toml::de::Error> {
    let mut root = toml::Table::new();
    for (key, value) in flat {
        let mut parts: Vec<&str> = key.split('.').collect();
        let leaf = parts.pop().unwrap_or_default();
        let mut table = &mut root;
        for part in parts {
            let entry = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                unreachable!("a key is never both a value and a table")
            };
            table = inner;
        }
        table.insert(leaf.to_string(), value.clone());
    }
    root.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_and_unflatten_are_inverses() {
        let mut config = Config::default();
        config.runtime.handlers.insert(
            "fast".into(),
            crate::config::HandlerSection {
                path: "crun".into(),
                root: Some("/run/crun".into()),
                options: vec!["--debug".into()],
            },
        );
        config.runtime.monitor_path = Some("/usr/bin/wharf-monitor".into());
        assert_eq!(unflatten(&flatten(&config)).unwrap(), config);
    }

    #[test]
    fn changed_keys_are_dotted_and_sorted() {
        let old = Config::default();
        let mut new = Config::default();
        let changed = |new: &Config| changed_keys(&flatten(&old), &flatten(new));
        assert!(changed(&new).is_empty());
        new.log_level = "debug".into();
        new.registry.config_path = "/etc/other".into();
        new.root = "/var/lib/other".into();
        new.runtime.handlers.insert(
            "fast".into(),
            crate::config::HandlerSection {
                path: "crun".into(),
                root: None,
                options: vec![],
            },
        );
        assert_eq!(
            changed(&new),
            [
                "log_level",
                "registry.config_path",
                "root",
                "runtime.handlers.fast.options",
                "runtime.handlers.fast.path"
            ]
        );
    }
}
