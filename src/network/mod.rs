//! CNI networking for pod sandboxes (CNI spec 1.0, results 0.1.0 to 1.x).
//!
//! The default network is the lexically first `.conflist`/`.conf`/`.json`
//! in the conf dir, as libcni users pick it. ADD runs its plugins in order
//! (each gets the previous result as `prevResult` and the capability
//! arguments it declares as `runtimeConfig`), while `lo` is brought up in
//! the pod's namespace in parallel. The exact list, arguments and result
//! are cached per pod so that DEL (the plugins in reverse) undoes exactly
//! what ADD did.

mod cache;
mod conf;
mod error;
mod hostport;
mod loopback;
mod plugin;
mod result;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub use conf::DEFAULT_CONFLIST;
pub use error::{CniError, PluginFailure};
pub use hostport::prepare_host_for_hostport_on_localhost;

use conf::{ConfDir, NetworkList};
use plugin::{Command, Runner, Target};

use crate::sync::KeyedLocks;

/// How long one plugin may run before it is killed.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The pod's interface, as Kubernetes runtimes name it.
const POD_IFNAME: &str = "eth0";

#[derive(Debug, Clone)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    /// Searched in order for plugin binaries; all of them form CNI_PATH.
    pub bin_dirs: Vec<PathBuf>,
    /// Results of ADD per pod, for DEL (under Wharf's root).
    pub cache_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    /// 0: no host port, the mapping is ignored (as in containerd).
    pub host_port: u16,
    /// Empty: every host address.
    pub host_ip: String,
}

#[derive(Debug, Clone, Default)]
pub struct PodNetwork {
    /// The sandbox ID: CNI_CONTAINERID, `[A-Za-z0-9][A-Za-z0-9_.-]*`.
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// A bind-mounted network namespace; may be empty for a teardown.
    pub netns: PathBuf,
    pub port_mappings: Vec<PortMapping>,
    /// Passed as the `io.kubernetes.cri.pod-annotations` capability.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct NetworkStatus {
    /// The primary IP (the first IPv4 if any) first.
    pub ips: Vec<IpAddr>,
    pub interface: String,
    /// The last plugin's result, as it printed it.
    pub result: Value,
}

/// The conf dir and the plugin runner: replaced together by
/// [`Cni::reload`], and taken once by an ADD or DEL, which keeps them to
/// its end (its undoing DEL included).
struct Plugins {
    conf: ConfDir,
    runner: Runner,
}

pub struct Cni {
    plugins: RwLock<Arc<Plugins>>,
    cache_dir: PathBuf,
    /// From UpdateRuntimeConfig, passed as the `ipRanges` capability.
    pod_cidrs: Mutex<Vec<String>>,
    pods: KeyedLocks<String>,
}

impl Cni {
    pub fn new(config: CniConfig) -> Self {
        Self {
            plugins: RwLock::new(Arc::new(Plugins {
                conf: ConfDir::new(config.conf_dir),
                runner: Runner {
                    bin_dirs: config.bin_dirs,
                    timeout: DEFAULT_PLUGIN_TIMEOUT,
                },
            })),
            cache_dir: config.cache_dir,
            pod_cidrs: Mutex::new(Vec::new()),
            pods: KeyedLocks::default(),
        }
    }

    pub fn with_plugin_timeout(self, timeout: Duration) -> Self {
        let current = self.plugins();
        let conf_dir = current.conf.dir().to_path_buf();
        let bin_dirs = current.runner.bin_dirs.clone();
        self.replace(conf_dir, bin_dirs, timeout);
        self
    }

    /// Uses `conf_dir` and `bin_dirs` from now on, and reads the conf dir
    /// afresh even if nothing in it looks changed (a SIGHUP's promise).
    pub fn reload(&self, conf_dir: PathBuf, bin_dirs: Vec<PathBuf>) {
        let timeout = self.plugins().runner.timeout;
        self.replace(conf_dir, bin_dirs, timeout);
    }

    fn replace(&self, conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, timeout: Duration) {
        let plugins = Plugins {
            conf: ConfDir::new(conf_dir),
            runner: Runner { bin_dirs, timeout },
        };
        *self.plugins.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(plugins);
    }

    fn plugins(&self) -> Arc<Plugins> {
        Arc::clone(&self.plugins.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Ok when the default network parses and all its plugins are
    /// installed; otherwise the reason, for the NetworkReady condition.
    /// Costs a few `stat`s while nothing changes.
    pub fn ready(&self) -> Result<(), String> {
        let plugins = self.plugins();
        let network = plugins
            .conf
            .default_network()
            .map_err(|e| crate::error::chain(&e))?;
        for plugin in &network.plugins {
            plugins
                .runner
                .find(&plugin.kind)
                .map_err(|e| crate::error::chain(&e))?;
        }
        Ok(())
    }

    /// Whether the default network has a portmap plugin with
    /// `"snat": false`: only then must the daemon call
    /// [`prepare_host_for_hostport_on_localhost`] for hostPorts to answer
    /// on 127.0.0.1.
    pub fn portmap_needs_host_setup(&self) -> bool {
        self.plugins().conf.default_network().is_ok_and(|network| {
            network
                .plugins
                .iter()
                .any(|p| p.kind == "portmap" && p.raw.get("snat") == Some(&Value::Bool(false)))
        })
    }

    /// Stores the node's pod CIDRs (comma-separated, as the kubelet sends
    /// dual-stack ones); each becomes a range set of the `ipRanges`
    /// capability, which host-local allocates from before its own ranges.
    /// Empty clears them.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<(), CniError> {
        let cidrs: Vec<String> = cidr
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        if let Some(bad) = cidrs.iter().find(|c| !result::is_cidr(c)) {
            return Err(CniError::InvalidArgument {
                field: "pod CIDR",
                value: bad.clone(),
                reason: "not an IP prefix like 10.88.0.0/16",
            });
        }
        *self.pod_cidrs.lock().unwrap_or_else(|e| e.into_inner()) = cidrs;
        Ok(())
    }

    /// CNI ADD of the default network into `pod.netns`, with `lo` brought
    /// up there too. On any failure the whole list is deleted again, so
    /// nothing (IP, veth, iptables chain) stays allocated. A pod already
    /// set up (and not torn down) gets its cached status again: a second
    /// ADD would fail on the existing eth0 and its undo would delete the
    /// working network.
    ///
    /// Not cancel-safe: dropping the future kills the running plugin and
    /// skips that undo, so callers run it to completion.
    pub async fn setup(&self, pod: &PodNetwork) -> Result<NetworkStatus, CniError> {
        pod.validate()?;
        if !is_netns(&pod.netns) {
            return Err(CniError::NetnsMissing {
                path: pod.netns.clone(),
            });
        }
        let _pod = self.pods.lock(&pod.id).await;
        if let Some(status) = self.cached_status(&pod.id) {
            return Ok(status);
        }
        let started = Instant::now();
        let plugins = self.plugins();
        let runner = &plugins.runner;
        let network = plugins.conf.default_network()?;
        // Fails before anything is changed when a plugin is missing.
        for plugin in &network.plugins {
            runner.find(&plugin.kind)?;
        }
        let caps = self.capability_args(pod);
        let cni_args = pod.cni_args();
        let target = Target {
            container_id: &pod.id,
            netns: Some(&pod.netns),
            ifname: POD_IFNAME,
            cni_args: &cni_args,
        };
        let (ips, result) = match self.add(runner, pod, &network, &target, &caps).await {
            Ok(added) => added,
            Err((error, partial)) => {
                return Err(self
                    .undo(runner, &network, &target, &caps, partial.as_ref(), error)
                    .await)
            }
        };
        tracing::debug!(pod = %pod.id, network = %network.name, ?ips, elapsed = ?started.elapsed(), "pod network added");
        Ok(NetworkStatus {
            ips,
            interface: POD_IFNAME.to_string(),
            result,
        })
    }

    /// The steps of [`Cni::setup`] that need undoing when they fail; a
    /// failure comes with the last result obtained, for the undoing DEL.
    async fn add(
        &self,
        runner: &Runner,
        pod: &PodNetwork,
        network: &NetworkList,
        target: &Target<'_>,
        caps: &Map<String, Value>,
    ) -> Result<(Vec<IpAddr>, Value), (CniError, Option<Value>)> {
        let (lo, added) = tokio::join!(
            self.bring_up_loopback(runner, pod, target.cni_args),
            self.add_list(runner, network, target, caps)
        );
        let result = added?;
        if let Err(error) = lo {
            return Err((error, Some(result)));
        }
        let ips = match result::pod_ips(&result, POD_IFNAME) {
            Ok(ips) if !ips.is_empty() => ips,
            outcome => {
                let error = CniError::BadResult {
                    plugin: network.plugins.last().map_or("", |p| &p.kind).to_string(),
                    command: "ADD",
                    reason: outcome
                        .err()
                        .unwrap_or_else(|| format!("no IP for {POD_IFNAME}")),
                };
                return Err((error, Some(result)));
            }
        };
        let attachment = cache::Attachment::new(
            network.path.clone(),
            network.raw.clone(),
            caps.clone(),
            result.clone(),
        );
        if let Err(error) = cache::save(&self.cache_dir, &pod.id, &attachment) {
            return Err((error.into(), Some(result)));
        }
        Ok((ips, result))
    }

    /// CNI DEL with the config, arguments and result ADD cached, or with
    /// the current default network when nothing is cached. A gone netns is
    /// passed as an empty CNI_NETNS (plugins then release what they hold
    /// outside it). Every plugin is tried even if one fails; the cache is
    /// dropped only when all succeeded, so a retry repeats the DEL.
    pub async fn teardown(&self, pod: &PodNetwork) -> Result<(), CniError> {
        pod.validate()?;
        let _pod = self.pods.lock(&pod.id).await;
        let plugins = self.plugins();
        let started = Instant::now();
        let cached = cache::load(&self.cache_dir, &pod.id).unwrap_or_else(|e| {
            tracing::warn!(pod = %pod.id, error = %crate::error::chain(&e), "ignoring unreadable network cache");
            None
        });
        let from_cache = cached.and_then(|a| {
            NetworkList::from_value(&a.conf_path, a.network)
                .map(|network| (Arc::new(network), a.capability_args, Some(a.result)))
                .map_err(|e| tracing::warn!(pod = %pod.id, error = %e, "ignoring cached network"))
                .ok()
        });
        let (network, caps, result) = match from_cache {
            Some(cached) => cached,
            None => match plugins.conf.default_network() {
                Ok(network) => (network, self.capability_args(pod), None),
                // Nothing was ever added, or nothing says how to undo it.
                Err(CniError::NoNetworkConfig { .. }) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        let cni_args = pod.cni_args();
        let target = Target {
            container_id: &pod.id,
            netns: is_netns(&pod.netns).then_some(pod.netns.as_path()),
            ifname: POD_IFNAME,
            cni_args: &cni_args,
        };
        self.del_list(&plugins.runner, &network, &target, &caps, result.as_ref())
            .await?;
        cache::remove(&self.cache_dir, &pod.id)?;
        tracing::debug!(pod = %pod.id, network = %network.name, elapsed = ?started.elapsed(), "pod network deleted");
        Ok(())
    }

    fn cached_status(&self, pod_id: &str) -> Option<NetworkStatus> {
        let attachment = cache::load(&self.cache_dir, pod_id).ok()??;
        let ips = result::pod_ips(&attachment.result, POD_IFNAME).ok()?;
        Some(NetworkStatus {
            ips,
            interface: POD_IFNAME.to_string(),
            result: attachment.result,
        })
    }

    fn capability_args(&self, pod: &PodNetwork) -> Map<String, Value> {
        let mut caps = Map::new();
        let port_mappings: Vec<Value> = pod
            .port_mappings
            .iter()
            .filter(|m| m.host_port != 0)
            .map(|m| {
                let mut mapping = json!({
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": m.protocol.as_str(),
                });
                if !m.host_ip.is_empty() {
                    mapping["hostIP"] = Value::String(m.host_ip.clone());
                }
                mapping
            })
            .collect();
        if !port_mappings.is_empty() {
            caps.insert("portMappings".into(), Value::Array(port_mappings));
        }
        let cidrs = self.pod_cidrs.lock().unwrap_or_else(|e| e.into_inner());
        if !cidrs.is_empty() {
            let range_sets = cidrs
                .iter()
                .map(|cidr| json!([{ "subnet": cidr }]))
                .collect();
            caps.insert("ipRanges".into(), Value::Array(range_sets));
        }
        if !pod.annotations.is_empty() {
            caps.insert(
                "io.kubernetes.cri.pod-annotations".into(),
                json!(pod.annotations),
            );
        }
        caps
    }

    /// Runs the list's ADDs; on failure also returns the last result
    /// obtained, for the undoing DEL.
    async fn add_list(
        &self,
        runner: &Runner,
        network: &NetworkList,
        target: &Target<'_>,
        caps: &Map<String, Value>,
    ) -> Result<Value, (CniError, Option<Value>)> {
        let mut result: Option<Value> = None;
        for plugin in &network.plugins {
            let stdin = network.plugin_stdin(plugin, result.as_ref(), caps);
            match runner.run(Command::Add, &plugin.kind, target, stdin).await {
                Ok(next) => result = Some(next),
                Err(e) => return Err((e, result)),
            }
        }
        // Lists have at least one plugin (checked when loaded).
        Ok(result.unwrap_or(Value::Null))
    }

    /// Runs the list's DELs in reverse, all of them; returns the first error.
    async fn del_list(
        &self,
        runner: &Runner,
        network: &NetworkList,
        target: &Target<'_>,
        caps: &Map<String, Value>,
        result: Option<&Value>,
    ) -> Result<(), CniError> {
        let prev_result = result.filter(|_| network.passes_result_on_del());
        let mut first_error = None;
        for plugin in network.plugins.iter().rev() {
            let stdin = network.plugin_stdin(plugin, prev_result, caps);
            if let Err(e) = runner.run(Command::Del, &plugin.kind, target, stdin).await {
                tracing::warn!(pod = %target.container_id, error = %e, "CNI DEL failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes what a failed ADD may have left, returning the ADD's error
    /// (with the DEL's beside it if that failed too).
    async fn undo(
        &self,
        runner: &Runner,
        network: &NetworkList,
        target: &Target<'_>,
        caps: &Map<String, Value>,
        result: Option<&Value>,
        error: CniError,
    ) -> CniError {
        match self.del_list(runner, network, target, caps, result).await {
            Ok(()) => error,
            Err(cleanup) => CniError::AddUndo {
                error: Box::new(error),
                cleanup: Box::new(cleanup),
            },
        }
    }

    /// In-process first; the `loopback` plugin if that is not permitted
    /// here (no CAP_SYS_ADMIN for the sysfs mount, say).
    async fn bring_up_loopback(
        &self,
        runner: &Runner,
        pod: &PodNetwork,
        cni_args: &str,
    ) -> Result<(), CniError> {
        let in_process = match loopback::bring_up(&pod.netns).await {
            Ok(()) => return Ok(()),
            Err(reason) => reason,
        };
        let failed = |reason: String| CniError::Loopback {
            netns: pod.netns.clone(),
            reason,
        };
        if runner.find("loopback").is_err() {
            return Err(failed(in_process));
        }
        tracing::debug!(pod = %pod.id, reason = %in_process, "falling back to the loopback plugin");
        let target = Target {
            container_id: &pod.id,
            netns: Some(&pod.netns),
            ifname: "lo",
            cni_args,
        };
        let conf = json!({"cniVersion": "0.3.1", "name": "wharf-loopback", "type": "loopback"});
        runner
            .run(
                Command::Add,
                "loopback",
                &target,
                conf.to_string().into_bytes(),
            )
            .await
            .map(drop)
            .map_err(|e| {
                failed(format!(
                    "{in_process}; loopback plugin: {}",
                    crate::error::chain(&e)
                ))
            })
    }
}

impl PodNetwork {
    /// Rejects what would be misread in CNI_ARGS (`;`, `=`) or in a file
    /// name, before any plugin runs.
    fn validate(&self) -> Result<(), CniError> {
        let invalid = |field, value: &str, reason| CniError::InvalidArgument {
            field,
            value: value.to_string(),
            reason,
        };
        if !conf::is_valid_id(&self.id) {
            return Err(invalid(
                "pod sandbox ID",
                &self.id,
                "must be letters, digits, '_', '.' or '-', starting with a letter or digit",
            ));
        }
        for (field, value) in [
            ("pod name", &self.name),
            ("pod namespace", &self.namespace),
            ("pod UID", &self.uid),
        ] {
            if value.contains([';', '=', '\0']) {
                return Err(invalid(field, value, "must not contain ';', '=' or NUL"));
            }
        }
        // Empty is allowed: a teardown may no longer know the namespace.
        if !self.netns.as_os_str().is_empty() && !self.netns.is_absolute() {
            return Err(invalid(
                "network namespace path",
                &self.netns.to_string_lossy(),
                "must be absolute",
            ));
        }
        for mapping in &self.port_mappings {
            if !mapping.host_ip.is_empty() && mapping.host_ip.parse::<IpAddr>().is_err() {
                return Err(invalid(
                    "port mapping host IP",
                    &mapping.host_ip,
                    "not an IP address",
                ));
            }
        }
        Ok(())
    }

    fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.id, self.uid
        )
    }
}

/// A bind-mounted (or /proc) network namespace, not a leftover file.
fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

#[cfg(test)]
mod tests;
