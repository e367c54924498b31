//! The CRI request conversions that need no live daemon: protobuf decoding
//! of the requests (`wharf::api`), then what Wharf derives from them before
//! touching the system — the container's user (`container::user`), its OCI
//! runtime spec (`container::spec::generate`, then serialised as
//! config.json), its stop signal, UpdateContainerResources' resources, and
//! a pod's resolv.conf, hosts and hostname files (`sandbox::files`).
//!
//! Input: a byte choosing the request type (modulo 3:
//! `CreateContainerRequest`, `RunPodSandboxRequest` — whose pod gets a
//! fixed container —, or `UpdateContainerResourcesRequest`) and the image
//! config (divided by 3), a byte of host features, then the encoded
//! request.
//!
//! Host look-ups are kept inside a fixture directory (under /dev/shm, or
//! `$WHARF_FUZZ_TMP`): the image rootfs with its /etc/passwd and /etc/group,
//! the pod's files, and the seccomp profiles a `Localhost` profile names.
//! CRI device paths outside /dev are moved into the fixture, so that no
//! input makes the target walk the whole file system.

#![no_main]

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use wharf::api;
use wharf::container::spec::{
    self, CapabilitySet, HostFeatures, NamespacePath, Namespaces, SandboxFiles, SpecInput,
};
use wharf::container::user::resolve_user;
use wharf::sandbox::files;

const IMAGE_CONFIGS: &[&str] = &[
    r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
        "config":{"Cmd":["/bin/sh"]}}"#,
    r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
        "config":{"User":"app","Env":["PATH=/usr/bin:/bin","LANG=C.UTF-8"],
        "Entrypoint":["/entrypoint.sh"],"Cmd":["serve","--port=80"],
        "WorkingDir":"/srv","StopSignal":"SIGQUIT"}}"#,
    r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
        "config":{"User":"1000:1000","Cmd":["true"],"StopSignal":"9"}}"#,
    r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
    app:x:1000:1000:App:/home/app:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\ndaemon:x:1:\nwheel:x:10:app,root\napp:x:1000:\n\
    audio:x:29:app\nnogroup:x:65534:\n";
/// A Docker-format profile, an OCI-format one, and broken JSON.
const SECCOMP_PROFILES: &[&str] = &[
    r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
        "syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"},
        {"names":["ptrace"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_PTRACE"]}}]}"#,
    r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO"}]}"#,
    r#"{"defaultAction":"#,
];

struct Fixture {
    rootfs: PathBuf,
    pod_dir: PathBuf,
    profiles: Vec<PathBuf>,
    detected: HostFeatures,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let base = std::env::var_os("WHARF_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let shm = Path::new("/dev/shm");
                if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                }
            });
        let top = base.join(format!("wharf-fuzz-cri-{}", std::process::id()));
        let _ = fs::remove_dir_all(&top);
        let rootfs = top.join("rootfs");
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::create_dir_all(rootfs.join("dev/snd")).unwrap();
        fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
        fs::write(rootfs.join("etc/group"), GROUP).unwrap();
        let pod_dir = top.join("pod");
        fs::create_dir_all(&pod_dir).unwrap();
        let profiles = SECCOMP_PROFILES
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let path = top.join(format!("seccomp-{i}.json"));
                fs::write(&path, text).unwrap();
                path
            })
            .collect();
        Fixture {
            rootfs,
            pod_dir,
            profiles,
            detected: HostFeatures::detect(),
        }
    })
}

fn host_features(flags: u8) -> HostFeatures {
    if flags & 0x80 != 0 {
        return fixture().detected.clone();
    }
    HostFeatures {
        oom_score_adj_min: if flags & 1 != 0 { -1000 } else { 0 },
        apparmor: flags & 2 != 0,
        seccomp: flags & 4 != 0,
        cgroup_v2: flags & 8 != 0,
        hugepage_sizes: if flags & 16 != 0 {
            vec!["2MB".into(), "1GB".into()]
        } else {
            Vec::new()
        },
        capabilities: if flags & 32 != 0 {
            CapabilitySet::container_default()
        } else {
            CapabilitySet::KNOWN
        },
        swap_accounting: flags & 8 != 0,
    }
}

/// Keeps the host paths the spec generator looks up (stat, directory
/// walks, file reads) inside /dev or the fixture; relative and empty paths
/// stay as they are, for validation to see.
fn confine(config: &mut api::ContainerConfig) {
    let fixture = fixture();
    for device in &mut config.devices {
        let path = Path::new(&device.host_path);
        if !path.is_absolute() {
            continue;
        }
        let plain = path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let in_dev = plain && path.starts_with("/dev") && !path.starts_with("/dev/shm");
        if !in_dev {
            let relative: PathBuf = path
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part),
                    _ => None,
                })
                .collect();
            device.host_path = fixture.rootfs.join(relative).to_string_lossy().into_owned();
        }
    }
    let Some(security) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    else {
        return;
    };
    let profile_for = |reference: &str| {
        let choice = reference.len() % fixture.profiles.len();
        fixture.profiles[choice].to_string_lossy().into_owned()
    };
    if let Some(profile) = &mut security.seccomp {
        let reference = profile.localhost_ref.trim_start_matches("localhost/");
        if reference.starts_with('/') {
            profile.localhost_ref = profile_for(reference);
        }
    }
    #[allow(deprecated)]
    let deprecated = &mut security.seccomp_profile_path;
    if let Some(reference) = deprecated.strip_prefix("localhost/") {
        if reference.starts_with('/') {
            *deprecated = format!("localhost/{}", profile_for(reference));
        }
    }
}

/// Namespaces as the container service derives them for a pod with its own
/// network, IPC and UTS namespaces (or the host's, as the pod asks).
fn namespaces(sandbox: &api::PodSandboxConfig, config: &api::ContainerConfig) -> Namespaces {
    let pod_options = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let host = |mode: Option<i32>, pinned: &str| match mode {
        Some(m) if m == api::NamespaceMode::Node as i32 => NamespacePath::Host,
        _ => NamespacePath::Join(PathBuf::from(pinned)),
    };
    let pid = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map(|o| match api::NamespaceMode::try_from(o.pid) {
            Ok(api::NamespaceMode::Node) => NamespacePath::Host,
            Ok(api::NamespaceMode::Pod) => NamespacePath::Join("/run/wharf/pid/p1".into()),
            Ok(api::NamespaceMode::Target) => NamespacePath::Join("/proc/4242/ns/pid".into()),
            _ => NamespacePath::New,
        })
        .unwrap_or(NamespacePath::New);
    Namespaces {
        network: host(pod_options.map(|o| o.network), "/run/wharf/netns/p1"),
        ipc: host(pod_options.map(|o| o.ipc), "/run/wharf/ipc/p1"),
        uts: host(pod_options.map(|o| o.network), "/run/wharf/uts/p1"),
        pid,
    }
}

/// CreateContainer's conversions, as the container service runs them.
fn create_container(
    mut config: api::ContainerConfig,
    sandbox: &api::PodSandboxConfig,
    flags: u8,
    image_choice: u8,
) {
    confine(&mut config);
    let fixture = fixture();
    let image_json = IMAGE_CONFIGS[usize::from(image_choice) % IMAGE_CONFIGS.len()];
    let image: oci_spec::image::ImageConfiguration =
        serde_json::from_str(image_json).expect("fixture image config");
    let image = image.config().clone().unwrap_or_default();
    let security = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let user = match resolve_user(
        &fixture.rootfs,
        image.user().as_deref().unwrap_or(""),
        security,
    ) {
        Ok(user) => user,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let cgroup_parent = sandbox
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let input = SpecInput {
        container_id: "0123456789abcdef",
        sandbox_id: "fedcba9876543210",
        config: &config,
        sandbox,
        image: &image,
        image_name: "docker.io/library/busybox:latest",
        rootfs: &fixture.rootfs,
        namespaces: namespaces(sandbox, &config),
        sandbox_files: SandboxFiles {
            hosts: Some(fixture.pod_dir.join("hosts")),
            resolv_conf: Some(fixture.pod_dir.join("resolv.conf")),
            hostname: Some(fixture.pod_dir.join("hostname")),
            shm: (flags & 1 == 0).then(|| fixture.pod_dir.join("shm")),
        },
        cgroups_path: format!("{cgroup_parent}/0123456789abcdef"),
        user,
        host: host_features(flags),
    };
    match spec::generate(&input) {
        Ok(generated) => {
            let json = serde_json::to_vec(&generated).expect("serialising the spec");
            let _: oci_spec::runtime::Spec =
                serde_json::from_slice(&json).expect("the spec reads back");
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
    let _ = spec::container_stop_signal(&config, &image);
}

/// RunPodSandbox's pod files, then a fixed container in that pod.
fn run_pod_sandbox(sandbox: api::PodSandboxConfig, flags: u8, image_choice: u8) {
    let dir = &fixture().pod_dir;
    let _ = files::validate_hostname(&sandbox.hostname);
    let _ = files::write_resolv_conf(dir, sandbox.dns_config.as_ref());
    let host_network = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|o| o.network == api::NamespaceMode::Node as i32);
    if !host_network {
        let ips = ["10.88.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        if files::write_hosts(dir, &sandbox.hostname, &ips, false).is_ok() {
            let written = fs::read_to_string(dir.join(files::HOSTS_FILE)).unwrap();
            assert!(written.lines().count() >= 9, "{written:?}");
        }
    }
    if files::write_hostname(dir, &sandbox.hostname).is_ok() {
        let written = fs::read_to_string(dir.join(files::HOSTNAME_FILE)).unwrap();
        assert_eq!(written, format!("{}\n", sandbox.hostname));
    }
    let container = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    create_container(container, &sandbox, flags, image_choice);
}

fuzz_target!(|data: &[u8]| {
    let [kind, flags, message @ ..] = data else {
        return;
    };
    let image_choice = kind / 3;
    match kind % 3 {
        0 => {
            let Ok(request) = api::CreateContainerRequest::decode(message) else {
                return;
            };
            let sandbox = request.sandbox_config.unwrap_or_default();
            if let Some(config) = request.config {
                create_container(config, &sandbox, *flags, image_choice);
            }
        }
        1 => {
            let Ok(request) = api::RunPodSandboxRequest::decode(message) else {
                return;
            };
            if let Some(config) = request.config {
                run_pod_sandbox(config, *flags, image_choice);
            }
        }
        _ => {
            let Ok(request) = api::UpdateContainerResourcesRequest::decode(message) else {
                return;
            };
            let host = host_features(*flags);
            if let Ok(resources) = spec::update_resources(request.linux.as_ref(), &host) {
                serde_json::to_vec(&resources).expect("serialising the resources");
            }
        }
    }
});
