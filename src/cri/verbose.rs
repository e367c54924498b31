//! The `info` of ContainerStatus and PodSandboxStatus with `verbose`: JSON
//! under the key `info`, with the keys containerd's CRI plugin uses, so
//! that `crictl inspect -o go-template --template '{{.info.pid}}'` and
//! the like work unchanged; and of Status with `verbose`, again with
//! containerd's keys (`config`, `cniconfig`, `lastCNILoadStatus`) plus the
//! runtime handlers as Wharf probed them.

use serde_json::{json, Value};
use tonic::Status;

use super::proto::*;
use crate::container::{Container, ContainerState};
use crate::runtime::protocol::files::CONTAINER_PID;
use crate::sandbox::Sandbox;

/// What Wharf runs containers with.
const RUNTIME_TYPE: &str = "runc";

/// The binary of the runtime handler `name` (the default handler's for a
/// name no longer configured), for `runtimeOptions.binaryName`.
pub fn runtime_binary(
    handlers: &crate::runtime::RuntimeHandlers,
    name: &str,
) -> std::path::PathBuf {
    handlers
        .get(name)
        .unwrap_or_else(|_| handlers.default_handler())
        .runtime
        .binary()
        .to_path_buf()
}

pub fn container_info(container: &Container, runtime: &std::path::Path) -> Result<String, Status> {
    let pid = if container.state() == ContainerState::Running {
        std::fs::read_to_string(container.state_dir.join(CONTAINER_PID))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .unwrap_or(0)
    } else {
        0
    };
    let privileged = container
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    let runtime_spec = std::fs::read_to_string(container.state_dir.join("config.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok());
    let info = json!({
        "sandboxID": container.sandbox_id,
        "pid": pid,
        "removing": false,
        "privileged": privileged,
        "runtimeType": RUNTIME_TYPE,
        "runtimeOptions": { "binaryName": runtime },
        "config": container_config(&container.config),
        "runtimeSpec": runtime_spec,
        "rootfs": container.rootfs,
        "stateDir": container.state_dir,
    });
    encode(&info)
}

pub fn sandbox_info(sandbox: &Sandbox, runtime: &std::path::Path) -> Result<String, Status> {
    let pid = sandbox
        .pid_holder
        .as_ref()
        .filter(|h| h.is_running())
        .map(|h| h.pid)
        .unwrap_or(0);
    let info = json!({
        "pid": pid,
        "processStatus": if pid != 0 { "running" } else { "" },
        "netNamespaceClosed": sandbox.namespaces.net.as_ref().is_some_and(|p| !p.exists()),
        "namespaces": sandbox.namespaces,
        "pidNamespace": sandbox.pid_holder.as_ref().map(|h| &h.path),
        "runtimeHandler": "runc",
        "runtimeType": RUNTIME_TYPE,
        "runtimeOptions": { "binaryName": runtime },
        "config": pod_config(&sandbox.config),
        "hostname": sandbox.hostname,
        "resolvConf": sandbox.resolv_conf,
        "hosts": sandbox.hosts,
        "shm": sandbox.shm,
        "modes": sandbox.modes,
    });
    encode(&info)
}

/// `Status(verbose)`'s info: the configuration in force, the runtime
/// handlers (binary, root, options, probed features), where CNI configs
/// and plugins are looked for and whether the last look found a network,
/// and the pulls in progress (an image being pulled is not found by
/// ImageStatus until it is complete, so its progress is shown here).
pub fn runtime_info(
    config: &crate::config::Config,
    handlers: &crate::runtime::RuntimeHandlers,
    cni_ready: &Result<(), String>,
    pulls: &[crate::image::PullProgress],
) -> Result<std::collections::HashMap<String, String>, Status> {
    let handlers: Vec<Value> = handlers
        .listed()
        .into_iter()
        .map(|(name, handler)| {
            let runtime = &handler.runtime;
            json!({
                "name": name,
                "binary": runtime.binary(),
                "root": runtime.root(),
                "options": runtime
                    .options()
                    .iter()
                    .map(|o| o.to_string_lossy())
                    .collect::<Vec<_>>(),
                "features": {
                    "recursiveReadOnlyMounts": handler.features.recursive_read_only_mounts,
                    "userNamespaces": false,
                },
            })
        })
        .collect();
    let cni = json!({
        "PluginDirs": config.cni.bin_dirs,
        "PluginConfDir": config.cni.conf_dir,
    });
    let cni_status = match cni_ready {
        Ok(()) => "OK".to_string(),
        Err(message) => message.clone(),
    };
    // An object, not an array: crictl shows only objects as JSON (one
    // pull per image name at a time, see ImageService::pull).
    let pulls: serde_json::Map<String, Value> = pulls
        .iter()
        .map(|pull| (pull.image.clone(), pull_info(pull)))
        .collect();
    let config = serde_json::to_value(config)
        .map_err(|e| Status::internal(format!("encoding config: {e}")))?;
    Ok([
        ("config", encode(&config)?),
        ("runtimeHandlers", encode(&Value::Array(handlers))?),
        ("cniconfig", encode(&cni)?),
        ("lastCNILoadStatus", cni_status),
        ("pulls", encode(&Value::Object(pulls))?),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect())
}

fn pull_info(pull: &crate::image::PullProgress) -> Value {
    let started = crate::monitor::log::format_timestamp(pull.started);
    json!({
        "bytesDone": pull.done_bytes,
        "bytesExpected": pull.expected_bytes,
        "layersDone": pull.layers_done,
        "layersTotal": pull.layers_total,
        "startedAt": String::from_utf8_lossy(&started),
    })
}

fn encode(info: &Value) -> Result<String, Status> {
    serde_json::to_string(info).map_err(|e| Status::internal(format!("encoding info: {e}")))
}

/// The config as the JSON of its protobuf field names (what containerd's
/// Go encoding shows); binary env values as lossy UTF-8.
fn container_config(config: &ContainerConfig) -> Value {
    let metadata = config.metadata.clone().unwrap_or_default();
    json!({
        "metadata": { "name": metadata.name, "attempt": metadata.attempt },
        "image": { "image": config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default() },
        "command": config.command,
        "args": config.args,
        "working_dir": config.working_dir,
        "envs": config.envs.iter().map(|e| json!({
            "key": e.key,
            "value": String::from_utf8_lossy(&e.value),
        })).collect::<Vec<_>>(),
        "mounts": config.mounts.iter().map(|m| json!({
            "container_path": m.container_path,
            "host_path": m.host_path,
            "readonly": m.readonly,
            "propagation": m.propagation,
        })).collect::<Vec<_>>(),
        "labels": config.labels,
        "annotations": config.annotations,
        "log_path": config.log_path,
        "stdin": config.stdin,
        "stdin_once": config.stdin_once,
        "tty": config.tty,
        "linux": config.linux.as_ref().map(|l| json!({
            "resources": l.resources.as_ref().map(resources),
            "security_context": l.security_context.as_ref().map(|s| json!({
                "privileged": s.privileged,
                "readonly_rootfs": s.readonly_rootfs,
                "run_as_user": s.run_as_user.as_ref().map(|u| u.value),
                "run_as_group": s.run_as_group.as_ref().map(|g| g.value),
                "run_as_username": s.run_as_username,
                "no_new_privs": s.no_new_privs,
            })),
        })),
    })
}

fn resources(r: &LinuxContainerResources) -> Value {
    json!({
        "cpu_period": r.cpu_period,
        "cpu_quota": r.cpu_quota,
        "cpu_shares": r.cpu_shares,
        "memory_limit_in_bytes": r.memory_limit_in_bytes,
        "memory_swap_limit_in_bytes": r.memory_swap_limit_in_bytes,
        "oom_score_adj": r.oom_score_adj,
        "cpuset_cpus": r.cpuset_cpus,
        "cpuset_mems": r.cpuset_mems,
        "unified": r.unified,
    })
}

fn pod_config(config: &PodSandboxConfig) -> Value {
    let metadata = config.metadata.clone().unwrap_or_default();
    json!({
        "metadata": {
            "name": metadata.name,
            "uid": metadata.uid,
            "namespace": metadata.namespace,
            "attempt": metadata.attempt,
        },
        "hostname": config.hostname,
        "log_directory": config.log_directory,
        "dns_config": config.dns_config.as_ref().map(|d| json!({
            "servers": d.servers,
            "searches": d.searches,
            "options": d.options,
        })),
        "port_mappings": config.port_mappings.iter().map(|p| json!({
            "protocol": p.protocol,
            "container_port": p.container_port,
            "host_port": p.host_port,
            "host_ip": p.host_ip,
        })).collect::<Vec<_>>(),
        "labels": config.labels,
        "annotations": config.annotations,
        "linux": config.linux.as_ref().map(|l| json!({
            "cgroup_parent": l.cgroup_parent,
            "sysctls": l.sysctls,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_uses_the_protobuf_field_names() {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "web".into(),
                attempt: 2,
            }),
            command: vec!["sleep".into()],
            envs: vec![KeyValue {
                key: "A".into(),
                value: b"1".to_vec(),
            }],
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    privileged: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = container_config(&config);
        assert_eq!(json["metadata"]["name"], "web");
        assert_eq!(json["metadata"]["attempt"], 2);
        assert_eq!(json["envs"][0]["value"], "1");
        assert_eq!(json["linux"]["security_context"]["privileged"], true);
    }
}
