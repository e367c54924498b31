//! Network configuration lists: finding the default one in the conf dir,
//! parsing it, and building each plugin's stdin.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::CniError;

/// The network `hack/setup.sh` installs as `/etc/cni/net.d/10-wharf.conflist`;
/// its one copy is `deploy/10-wharf.conflist`.
///
/// Debian 12's plugins (v1.1.1) accept cniVersion 0.1.0 to 1.0.0 (not 1.1.0).
/// portmap's `snat` (its default, spelled out here) masquerades hairpin and
/// `127.0.0.1` connections to hostPorts and sets `route_localnet` on the
/// bridge, so hostPorts answer on localhost without any host set-up. For a
/// dual-stack network, add `[{"subnet": "fd88::/64"}]` as a second range set
/// and `{"dst": "::/0"}` as a route (the host must have IPv6 enabled).
pub const DEFAULT_CONFLIST: &str = include_str!("../../deploy/10-wharf.conflist");

const EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// One network: the plugins run in order on ADD, in reverse on DEL.
#[derive(Debug)]
pub(crate) struct NetworkList {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<PluginConf>,
    /// The list as loaded, kept in the result cache so that DEL runs with
    /// exactly the config ADD used.
    pub raw: Value,
}

#[derive(Debug)]
pub(crate) struct PluginConf {
    /// The plugin's `type`: its binary's name.
    pub kind: String,
    pub raw: Map<String, Value>,
}

impl PluginConf {
    pub fn declares(&self, capability: &str) -> bool {
        self.raw
            .get("capabilities")
            .and_then(|caps| caps.get(capability))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

impl NetworkList {
    /// Accepts a list (`plugins`) or a single plugin config (`type`),
    /// whatever the file's extension says.
    pub fn from_value(path: &Path, value: Value) -> Result<Self, CniError> {
        let invalid = |reason: String| CniError::InvalidConfig {
            path: path.to_path_buf(),
            reason,
        };
        let Value::Object(object) = &value else {
            return Err(invalid("not a JSON object".into()));
        };
        let name = match object.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => return Err(invalid("missing \"name\"".into())),
        };
        if !is_valid_id(&name) {
            return Err(invalid(format!(
                "network name {name:?} must be letters, digits, '_', '.' or '-'"
            )));
        }
        // Plugins treat a missing version as the first one.
        let cni_version = match object.get("cniVersion") {
            Some(Value::String(v)) if !v.is_empty() => v.clone(),
            None => "0.1.0".to_string(),
            Some(other) => return Err(invalid(format!("bad \"cniVersion\" {other}"))),
        };
        let plugin_values: Vec<&Value> = match object.get("plugins") {
            Some(Value::Array(plugins)) => plugins.iter().collect(),
            Some(_) => return Err(invalid("\"plugins\" is not an array".into())),
            None if object.contains_key("type") => vec![&value],
            None => return Err(invalid("neither \"plugins\" nor \"type\"".into())),
        };
        if plugin_values.is_empty() {
            return Err(invalid("no plugins".into()));
        }
        let mut plugins = Vec::with_capacity(plugin_values.len());
        for (index, plugin) in plugin_values.into_iter().enumerate() {
            let Value::Object(raw) = plugin else {
                return Err(invalid(format!("plugin {index} is not an object")));
            };
            let kind = match raw.get("type") {
                Some(Value::String(kind)) if is_plain_file_name(kind) => kind.clone(),
                _ => return Err(invalid(format!("plugin {index} has no valid \"type\""))),
            };
            plugins.push(PluginConf {
                kind,
                raw: raw.clone(),
            });
        }
        let raw = Value::Object(Map::from_iter([
            ("cniVersion".to_string(), Value::String(cni_version.clone())),
            ("name".to_string(), Value::String(name.clone())),
            (
                "plugins".to_string(),
                Value::Array(
                    plugins
                        .iter()
                        .map(|p| Value::Object(p.raw.clone()))
                        .collect(),
                ),
            ),
        ]));
        Ok(Self {
            path: path.to_path_buf(),
            name,
            cni_version,
            plugins,
            raw,
        })
    }

    /// Whether results are passed back to plugins on DEL (`prevResult`):
    /// from spec 0.4.0 on.
    pub fn passes_result_on_del(&self) -> bool {
        !matches!(
            self.cni_version.as_str(),
            "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1"
        )
    }

    /// A plugin's stdin: its own config plus the list's name and version,
    /// the previous plugin's result, and the capability arguments it
    /// declares (as libcni does).
    pub fn plugin_stdin(
        &self,
        plugin: &PluginConf,
        prev_result: Option<&Value>,
        capability_args: &Map<String, Value>,
    ) -> Vec<u8> {
        let mut conf = plugin.raw.clone();
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        if let Some(result) = prev_result {
            conf.insert("prevResult".into(), result.clone());
        }
        let runtime_config: Map<String, Value> = capability_args
            .iter()
            .filter(|(capability, _)| plugin.declares(capability))
            .map(|(capability, value)| (capability.clone(), value.clone()))
            .collect();
        if !runtime_config.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
        // Serialising a map of JSON values cannot fail.
        serde_json::to_vec(&conf).unwrap_or_default()
    }
}

/// Container IDs and network names, as libcni validates them.
pub(crate) fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A plugin type must name a file inside a bin dir, not a path out of it.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// What identifies the conf dir's state: when it is unchanged, so is the
/// default network.
#[derive(Debug, Clone, PartialEq)]
struct Stamp {
    dir: Option<(i64, i64)>,
    file: Option<(PathBuf, u64, i64, i64, u64)>,
}

fn dir_stamp(dir: &Path) -> Option<(i64, i64)> {
    fs::metadata(dir).ok().map(|m| (m.mtime(), m.mtime_nsec()))
}

fn file_stamp(path: &Path) -> Option<(PathBuf, u64, i64, i64, u64)> {
    fs::metadata(path).ok().map(|m| {
        (
            path.to_path_buf(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
            m.len(),
        )
    })
}

/// A load's outcome: a failure is the file (empty: none found) and why.
type Loaded = (Stamp, Result<Arc<NetworkList>, (PathBuf, String)>);

/// The default network of a conf dir, reloaded only when the directory or
/// the chosen file changed (two `stat`s per call otherwise).
pub(crate) struct ConfDir {
    dir: PathBuf,
    loaded: Mutex<Option<Loaded>>,
}

impl ConfDir {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            loaded: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn default_network(&self) -> Result<Arc<NetworkList>, CniError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let dir_now = dir_stamp(&self.dir);
        if let Some((stamp, outcome)) = loaded.as_ref() {
            let file_now = stamp.file.as_ref().and_then(|(path, ..)| file_stamp(path));
            if stamp.dir == dir_now && stamp.file == file_now {
                return outcome.clone().map_err(|e| self.error(e));
            }
        }
        let (file, outcome) = match self.first_file() {
            Ok(Some(path)) => (file_stamp(&path), load_file(&path)),
            Ok(None) => (None, Err((PathBuf::new(), String::new()))),
            Err(reason) => (None, Err((self.dir.clone(), reason))),
        };
        let outcome = outcome.map(Arc::new);
        *loaded = Some((Stamp { dir: dir_now, file }, outcome.clone()));
        outcome.map_err(|e| self.error(e))
    }

    /// An empty path stands for "no config at all".
    fn error(&self, (path, reason): (PathBuf, String)) -> CniError {
        if path.as_os_str().is_empty() {
            CniError::NoNetworkConfig {
                dir: self.dir.clone(),
            }
        } else {
            CniError::InvalidConfig { path, reason }
        }
    }

    /// The lexically first config file, the convention libcni users follow
    /// for the default network.
    fn first_file(&self) -> Result<Option<PathBuf>, String> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("listing: {e}")),
        };
        let mut first: Option<PathBuf> = None;
        for entry in entries {
            let entry = entry.map_err(|e| format!("listing: {e}"))?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            let known = path
                .extension()
                .is_some_and(|ext| EXTENSIONS.iter().any(|known| ext == *known));
            // Follows symlinks: configs are often links into a package dir.
            if hidden || !known || !path.is_file() {
                continue;
            }
            if first.as_ref().is_none_or(|f| path < *f) {
                first = Some(path);
            }
        }
        Ok(first)
    }
}

fn load_file(path: &Path) -> Result<NetworkList, (PathBuf, String)> {
    let failed = |reason: String| (path.to_path_buf(), reason);
    let data = fs::read(path).map_err(|e| failed(format!("reading: {e}")))?;
    let value = serde_json::from_slice(&data).map_err(|e| failed(format!("parsing: {e}")))?;
    NetworkList::from_value(path, value).map_err(|e| match e {
        CniError::InvalidConfig { reason, .. } => failed(reason),
        other => failed(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(value: Value) -> Result<NetworkList, CniError> {
        NetworkList::from_value(Path::new("/x.conflist"), value)
    }

    #[test]
    fn default_conflist_parses() {
        let value = serde_json::from_str(DEFAULT_CONFLIST).unwrap();
        let net = list(value).unwrap();
        assert_eq!(net.name, "wharf");
        assert_eq!(net.cni_version, "1.0.0");
        let kinds: Vec<_> = net.plugins.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["bridge", "portmap"]);
        assert!(net.plugins[1].declares("portMappings"));
        assert!(!net.plugins[0].declares("portMappings"));
    }

    #[test]
    fn single_plugin_config_becomes_a_list() {
        let net = list(json!({"cniVersion": "0.4.0", "name": "n", "type": "bridge"})).unwrap();
        assert_eq!(net.plugins.len(), 1);
        assert_eq!(net.raw["plugins"][0]["type"], "bridge");
        assert!(net.passes_result_on_del());
        let old = list(json!({"name": "n", "type": "bridge"})).unwrap();
        assert_eq!(old.cni_version, "0.1.0");
        assert!(!old.passes_result_on_del());
    }

    #[test]
    fn rejects_bad_lists() {
        for bad in [
            json!([]),
            json!({"name": "n", "plugins": []}),
            json!({"name": "n"}),
            json!({"plugins": [{"type": "bridge"}]}),
            json!({"name": "bad name", "type": "bridge"}),
            json!({"name": "n", "plugins": [{"type": "../../bin/sh"}]}),
            json!({"name": "n", "plugins": [{"ipam": {}}]}),
        ] {
            assert!(list(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn stdin_carries_only_declared_capabilities() {
        let net = list(json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "bridge", "cniVersion": "0.3.1"},
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}
        ]}))
        .unwrap();
        let caps = Map::from_iter([
            ("portMappings".to_string(), json!([{"hostPort": 80}])),
            ("bandwidth".to_string(), json!({})),
        ]);
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let bridge: Value =
            serde_json::from_slice(&net.plugin_stdin(&net.plugins[0], None, &caps)).unwrap();
        assert_eq!(
            bridge,
            json!({"type": "bridge", "cniVersion": "1.0.0", "name": "n"})
        );
        let portmap: Value =
            serde_json::from_slice(&net.plugin_stdin(&net.plugins[1], Some(&prev), &caps)).unwrap();
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80}]})
        );
    }

    #[test]
    fn conf_dir_picks_the_lexically_first_config_and_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let conf = ConfDir::new(dir.path().join("net.d"));
        assert!(matches!(
            conf.default_network(),
            Err(CniError::NoNetworkConfig { .. })
        ));
        fs::create_dir(dir.path().join("net.d")).unwrap();
        let write = |name: &str, net: &str| {
            let body = json!({"cniVersion": "1.0.0", "name": net, "type": "bridge"});
            fs::write(dir.path().join("net.d").join(name), body.to_string()).unwrap();
        };
        write("20-b.conf", "b");
        write("30-c.txt", "ignored");
        assert_eq!(conf.default_network().unwrap().name, "b");
        write("10-a.conflist", "a");
        assert_eq!(conf.default_network().unwrap().name, "a");
        // Rewritten in place: the directory's mtime does not change.
        write("10-a.conflist", "a2");
        assert_eq!(conf.default_network().unwrap().name, "a2");
        fs::write(dir.path().join("net.d/10-a.conflist"), "{").unwrap();
        assert!(matches!(
            conf.default_network(),
            Err(CniError::InvalidConfig { .. })
        ));
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("abc-1.2_3"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("-a"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a;b"));
    }
}
