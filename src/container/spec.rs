//! The OCI runtime spec (`config.json`) for a CRI container, built from its
//! `ContainerConfig`, its pod's `PodSandboxConfig`, the image config and what
//! the sandbox and host provide. Behaviour follows containerd's CRI plugin
//! (`container_create*.go`, `opts/spec_linux*.go`, `pkg/oci`), which kubelet
//! and critest are written against.
//!
//! Generation is pure except for the host look-ups it needs: `stat` of CRI
//! devices (and the walk of /dev for privileged containers), reading a
//! `Localhost` seccomp profile, and the host name when the pod has none.
//!
//! Decisions where containerd is not the whole answer:
//! - AppArmor: without AppArmor on the host, profiles are ignored except an
//!   explicit `Localhost` one, which is refused (as containerd does). With
//!   AppArmor, `Localhost` names the profile; `RuntimeDefault` applies none,
//!   since Wharf ships no AppArmor profile yet.
//! - Seccomp: `RuntimeDefault` is containerd's default profile; on a host
//!   without seccomp it means no filter, while `Localhost` is refused there.
//! - Image `VOLUME`s get no mounts: they stay directories of the writable
//!   rootfs (containerd instead binds fresh per-container directories, which
//!   stay writable under a read-only rootfs).
//! - Masked/read-only paths: an empty CRI list means containerd's defaults.
//! - rlimits are not set, so containers inherit the runtime's (containerd
//!   drops its defaults for CRI too).

use std::collections::HashMap;
use std::fs::{self, DirBuilder};
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sys::signal::Signal;
use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{Linux, LinuxCapabilities, Process, Root, Spec, User};

use crate::api;
use crate::container::seccomp::{self, ProfileKind};
use crate::container::user::ResolvedUser;
use crate::error::{Classify, Kind};
use crate::runtime::RuntimeFeatures;

mod capabilities;
mod devices;
mod host;
mod linux;
mod mounts;
mod update;
mod userns;

pub use capabilities::{parse_name as parse_capability, CapabilitySet};
pub use update::{
    cri_resources, resources_at_create, restoring, rewrite_bundle_resources, update_resources,
};
pub use userns::PodUserns;

/// The runtime-spec version runc 1.1 implements.
const OCI_VERSION: &str = "1.0.2";
const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Annotations containerd sets, which tools such as cAdvisor read.
pub mod annotations {
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub sandbox_id: &'a str,
    pub config: &'a api::ContainerConfig,
    pub sandbox: &'a api::PodSandboxConfig,
    /// The image's config section; a default one when the image has none.
    pub image: &'a ImageConfig,
    pub image_name: &'a str,
    /// The mounted rootfs (`root.path`).
    pub rootfs: &'a Path,
    pub namespaces: Namespaces,
    pub sandbox_files: SandboxFiles,
    /// cgroupfs style, `<parent>/<container id>`.
    pub cgroups_path: String,
    pub user: ResolvedUser,
    pub host: HostFeatures,
    /// What the OCI runtime of the pod's handler can do.
    pub runtime: RuntimeFeatures,
    /// The pod's own user namespace, when it has one: the container joins
    /// it, and its rootfs and volumes are ID-mapped for it.
    pub userns: Option<PodUserns>,
}

/// The namespaces the sandbox pinned for this container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    pub network: NamespacePath,
    pub ipc: NamespacePath,
    pub uts: NamespacePath,
    pub pid: NamespacePath,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespacePath {
    Host,
    New,
    /// A pinned namespace file, or `/proc/<pid>/ns/pid` of a target container.
    Join(PathBuf),
}

/// Host paths of the pod's shared files; `shm` is `None` for host IPC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFiles {
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname: Option<PathBuf>,
    pub shm: Option<PathBuf>,
}

/// What this host lets containers have; see [`HostFeatures::detect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFeatures {
    /// The lowest oom_score_adj the runtime may give (its own, unless it
    /// holds CAP_SYS_RESOURCE).
    pub oom_score_adj_min: i32,
    pub apparmor: bool,
    pub seccomp: bool,
    /// The OCI runtime uses cgroup v2 (unified mode, not hybrid).
    pub cgroup_v2: bool,
    /// Page sizes of the hugetlb controller (`2MB`, `1GB`); empty without one.
    pub hugepage_sizes: Vec<String>,
    /// The runtime's effective capabilities: all a privileged container gets.
    pub capabilities: CapabilitySet,
    /// The memory controller accounts swap (`memory.memsw.*`/`memory.swap.max`).
    pub swap_accounting: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{what}: {count}, more than the {limit} allowed")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("container config has no metadata name")]
    MissingMetadata,
    #[error(
        "no command to run: the container config has no command or args and image {image} has no entrypoint or cmd"
    )]
    NoCommand { image: String },
    #[error("{what} path {path:?} is not absolute")]
    RelativePath { what: &'static str, path: String },
    #[error("{what} path is empty{context}")]
    EmptyPath { what: &'static str, context: String },
    #[error("invalid {field} {value}: {reason}")]
    InvalidValue {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("capability {0:?} is not held by the runtime on this host, so it cannot be granted")]
    CapabilityUnavailable(String),
    #[error("device {}: not a character or block device", .path.display())]
    NotADevice { path: PathBuf },
    #[error("device {}: {source}", .path.display())]
    DeviceLookup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unknown {what} profile type {value}")]
    UnknownProfileType { what: &'static str, value: i32 },
    #[error("invalid {what} profile {value:?}: {reason}")]
    InvalidProfile {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("a {0} profile was requested but {0} is not enabled on this host")]
    NotEnabled(&'static str),
    #[error("reading seccomp profile {}: {source}", .path.display())]
    ReadSeccompProfile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("seccomp profile {}: {reason}", .path.display())]
    ParseSeccompProfile { path: PathBuf, reason: String },
    #[error("built-in default seccomp profile: {0}")]
    DefaultSeccompProfile(String),
    #[error("sysctl {name}: {reason}")]
    Sysctl { name: String, reason: String },
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("privileged containers are not allowed in a non-privileged sandbox")]
    PrivilegedInUnprivilegedSandbox,
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} not found in the image's /etc/group")]
    UnknownGroup(String),
    #[error("reading {}: {source}", .path.display())]
    ReadImageFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid stop signal {0:?}")]
    StopSignal(String),
    #[error("creating bind mount source {}: {source}", .path.display())]
    CreateHostPath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Classify for SpecError {
    fn kind(&self) -> Kind {
        use SpecError::*;
        match self {
            CapabilityUnavailable(_) | NotEnabled(_) => Kind::FailedPrecondition,
            Unsupported(_) => Kind::Unimplemented,
            DeviceLookup { source, .. } | ReadSeccompProfile { source, .. }
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Kind::InvalidArgument
            }
            ReadImageFile { source, .. } if source.kind() == io::ErrorKind::InvalidData => {
                Kind::InvalidArgument
            }
            DeviceLookup { .. }
            | ReadSeccompProfile { .. }
            | ReadImageFile { .. }
            | DefaultSeccompProfile(_)
            | CreateHostPath { .. } => Kind::Internal,
            MissingMetadata
            | NoCommand { .. }
            | RelativePath { .. }
            | EmptyPath { .. }
            | InvalidValue { .. }
            | UnknownCapability(_)
            | NotADevice { .. }
            | UnknownProfileType { .. }
            | InvalidProfile { .. }
            | ParseSeccompProfile { .. }
            | Sysctl { .. }
            | PrivilegedInUnprivilegedSandbox
            | UnknownUser(_)
            | UnknownGroup(_)
            | TooMany { .. }
            | StopSignal(_) => Kind::InvalidArgument,
        }
    }
}

/// The `config.json` for one container. Every field is set explicitly:
/// oci-spec's `Default`s describe a sample shell container (`sh`, `TERM`,
/// an RLIMIT_NOFILE of 1024, hostname "youki") that must not leak in.
pub fn generate(input: &SpecInput) -> Result<Spec, SpecError> {
    let config = input.config;
    let security = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let privileged = security.is_some_and(|s| s.privileged);
    let sandbox_privileged = input
        .sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if privileged && !sandbox_privileged {
        return Err(SpecError::PrivilegedInUnprivilegedSandbox);
    }
    userns::check(security, input.userns.is_some())?;
    let readonly_rootfs = security.is_some_and(|s| s.readonly_rootfs);

    let (bounding, capabilities) = capabilities::for_container(
        security.and_then(|s| s.capabilities.as_ref()),
        privileged,
        input.host.capabilities,
    )?;
    let process = process(input, security, capabilities)?;
    let mount_plan = mounts::plan(
        config,
        &input.sandbox_files,
        input.namespaces.ipc == NamespacePath::Host,
        readonly_rootfs,
        privileged,
        input.runtime,
    )?;
    let devices = devices::for_container(config, privileged, Path::new("/dev"))?;
    let resources = linux::resources(
        config.linux.as_ref().and_then(|l| l.resources.as_ref()),
        &input.host,
        devices.rules,
    )?;
    let (masked_paths, readonly_paths) = linux::protected_paths(security, privileged)?;
    let sysctls = match input.sandbox.linux.as_ref() {
        Some(pod) if !pod.sysctls.is_empty() => {
            Some(linux::sysctls(&pod.sysctls, &input.namespaces)?)
        }
        _ => None,
    };

    let mut linux = Linux::default();
    linux.set_net_devices(None);
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_sysctl(sysctls);
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(
        (!input.cgroups_path.is_empty()).then(|| PathBuf::from(&input.cgroups_path)),
    );
    let mut namespaces = linux::namespaces(&input.namespaces, input.host.cgroup_v2 && !privileged);
    if let Some(userns) = &input.userns {
        userns::join(&mut linux, &mut namespaces, userns);
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_devices(Some(devices.devices));
    linux.set_seccomp(seccomp::for_container(
        security,
        privileged,
        input.host.seccomp,
        bounding,
    )?);
    linux.set_rootfs_propagation(mount_plan.rootfs_propagation);
    linux.set_masked_paths(Some(masked_paths));
    linux.set_readonly_paths(Some(readonly_paths));
    linux.set_mount_label(None);
    linux.set_intel_rdt(None);
    linux.set_memory_policy(None);
    linux.set_personality(None);
    linux.set_time_offsets(None);

    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(readonly_rootfs));

    let own_uts = input.namespaces.uts != NamespacePath::Host;
    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    spec.set_root(Some(root));
    spec.set_mounts(Some(mount_plan.mounts));
    spec.set_process(Some(process));
    spec.set_hostname(
        (own_uts && !input.sandbox.hostname.is_empty()).then(|| input.sandbox.hostname.clone()),
    );
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(spec_annotations(input)?));
    spec.set_linux(Some(linux));
    spec.set_solaris(None);
    spec.set_windows(None);
    spec.set_vm(None);
    spec.set_zos(None);
    Ok(spec)
}

fn process(
    input: &SpecInput,
    security: Option<&api::LinuxContainerSecurityContext>,
    capabilities: LinuxCapabilities,
) -> Result<Process, SpecError> {
    let config = input.config;
    let mut user = User::default();
    user.set_uid(input.user.uid);
    user.set_gid(input.user.gid);
    user.set_umask(None);
    user.set_username(None);
    user.set_additional_gids(
        (!input.user.additional_gids.is_empty()).then(|| input.user.additional_gids.clone()),
    );

    let mut process = Process::default();
    process.set_terminal(Some(config.tty));
    process.set_console_size(None);
    process.set_user(user);
    process.set_args(Some(process_args(config, input.image, input.image_name)?));
    process.set_command_line(None);
    process.set_env(Some(process_env(input)?));
    process.set_cwd(working_dir(config, input.image)?);
    process.set_capabilities(Some(capabilities));
    process.set_rlimits(None);
    process.set_no_new_privileges(Some(security.is_some_and(|s| s.no_new_privs)));
    process.set_apparmor_profile(apparmor_profile(security, input.host.apparmor)?);
    process.set_oom_score_adj(oom_score_adj(config, input.host.oom_score_adj_min));
    process.set_selinux_label(None);
    process.set_io_priority(None);
    process.set_scheduler(None);
    process.set_exec_cpu_affinity(None);
    Ok(process)
}

/// Kubernetes semantics: a command replaces the image's entrypoint *and*
/// cmd; args alone replace only the cmd. An entrypoint of `[""]` means none.
fn process_args(
    config: &api::ContainerConfig,
    image: &ImageConfig,
    image_name: &str,
) -> Result<Vec<String>, SpecError> {
    let args: Vec<String> = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect()
    } else {
        let entrypoint = match image.entrypoint().as_deref() {
            Some([only]) if only.is_empty() => &[][..],
            Some(entrypoint) => entrypoint,
            None => &[][..],
        };
        let args = if config.args.is_empty() {
            image.cmd().as_deref().unwrap_or_default()
        } else {
            &config.args[..]
        };
        entrypoint.iter().chain(args).cloned().collect()
    };
    match args.first() {
        None => Err(SpecError::NoCommand {
            image: image_name.to_string(),
        }),
        Some(program) if program.is_empty() => Err(SpecError::InvalidValue {
            field: "command",
            value: format!("{args:?}"),
            reason: "the program name is empty".to_string(),
        }),
        Some(_) => Ok(args),
    }
}

/// containerd's order: a default PATH, TERM for a tty, HOSTNAME, then the
/// image's variables, then the container's; later ones replace earlier ones
/// of the same name, and an image entry without `=` removes the name.
fn process_env(input: &SpecInput) -> Result<Vec<String>, SpecError> {
    check_limits(input.config, input.image)?;
    let mut env = Environment::default();
    env.set(DEFAULT_PATH_ENV);
    if input.config.tty {
        env.set("TERM=xterm");
    }
    let hostname = if input.sandbox.hostname.is_empty() {
        nix::unistd::gethostname()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        input.sandbox.hostname.clone()
    };
    env.set(&format!("HOSTNAME={hostname}"));
    for entry in input.image.env().iter().flatten() {
        env.set(entry);
    }
    for variable in &input.config.envs {
        if variable.key.is_empty() || variable.key.contains('=') {
            return Err(SpecError::InvalidValue {
                field: "environment variable name",
                value: format!("{:?}", variable.key),
                reason: "must be non-empty and contain no '='".to_string(),
            });
        }
        let value =
            String::from_utf8(variable.value.to_vec()).map_err(|_| SpecError::InvalidValue {
                field: "environment variable",
                value: variable.key.clone(),
                reason: "the value is not UTF-8".to_string(),
            })?;
        env.set(&format!("{}={value}", variable.key));
    }
    Ok(env.into_vec())
}

/// An environment being merged: each entry replaces the one of the same
/// name in place, in time linear in the number of entries (an image may
/// carry many, and this runs for every CreateContainer).
#[derive(Default)]
struct Environment {
    entries: Vec<Option<String>>,
    by_name: HashMap<String, usize>,
}

impl Environment {
    /// `NAME=value` sets; a bare `NAME` removes.
    fn set(&mut self, entry: &str) {
        let (name, assignment) = match entry.split_once('=') {
            Some((name, _)) => (name, true),
            None => (entry, false),
        };
        match (self.by_name.get(name).copied(), assignment) {
            (Some(index), true) => self.entries[index] = Some(entry.to_string()),
            (None, true) => {
                self.by_name.insert(name.to_string(), self.entries.len());
                self.entries.push(Some(entry.to_string()));
            }
            (Some(index), false) => {
                self.entries[index] = None;
                self.by_name.remove(name);
            }
            (None, false) => {}
        }
    }

    fn into_vec(self) -> Vec<String> {
        self.entries.into_iter().flatten().collect()
    }
}

/// At most this many environment variables from the image, and as many
/// from the container config. Far above what a process can be started
/// with (the kernel's argument space is a few MiB), it bounds the work an
/// image or a request can ask of CreateContainer.
pub const MAX_ENV_ENTRIES: usize = 65_536;
/// At most this many mounts and devices in one container config.
pub const MAX_MOUNTS: usize = 4096;
pub const MAX_DEVICES: usize = 4096;
/// At most this many command and argument words, from the image and the
/// config together.
pub const MAX_ARGS: usize = 65_536;

/// Refuses configs and images whose lists are beyond any real container's,
/// before any work is spent on them.
pub fn check_limits(config: &api::ContainerConfig, image: &ImageConfig) -> Result<(), SpecError> {
    let len = |list: &Option<Vec<String>>| list.as_ref().map_or(0, Vec::len);
    let image_args = len(image.entrypoint()) + len(image.cmd());
    let checks = [
        (
            "image environment variables",
            len(image.env()),
            MAX_ENV_ENTRIES,
        ),
        ("environment variables", config.envs.len(), MAX_ENV_ENTRIES),
        ("mounts", config.mounts.len(), MAX_MOUNTS),
        ("devices", config.devices.len(), MAX_DEVICES),
        ("image command words", image_args, MAX_ARGS),
        (
            "command words",
            config.command.len() + config.args.len(),
            MAX_ARGS,
        ),
    ];
    for (what, count, limit) in checks {
        if count > limit {
            return Err(SpecError::TooMany { what, count, limit });
        }
    }
    Ok(())
}

fn working_dir(config: &api::ContainerConfig, image: &ImageConfig) -> Result<PathBuf, SpecError> {
    if !config.working_dir.is_empty() {
        return clean_absolute("working directory", &config.working_dir);
    }
    match image.working_dir().as_deref() {
        // Docker resolves a relative WORKDIR against /.
        Some(dir) if !dir.is_empty() => {
            clean_absolute("image working directory", &format!("/{dir}"))
        }
        _ => Ok(PathBuf::from("/")),
    }
}

/// The requested score, raised to the lowest this host lets the runtime set.
fn oom_score_adj(config: &api::ContainerConfig, minimum: i32) -> Option<i32> {
    let requested = config.linux.as_ref()?.resources.as_ref()?.oom_score_adj;
    let requested = i32::try_from(requested.clamp(-1000, 1000)).unwrap_or(0);
    Some(requested.max(minimum))
}

fn apparmor_profile(
    security: Option<&api::LinuxContainerSecurityContext>,
    host_has_apparmor: bool,
) -> Result<Option<String>, SpecError> {
    #[allow(deprecated)]
    let deprecated = security.map_or("", |s| s.apparmor_profile.as_str());
    let kind = seccomp::profile_kind(
        "AppArmor",
        security.and_then(|s| s.apparmor.as_ref()),
        deprecated,
        ProfileKind::RuntimeDefault,
    )?;
    match kind {
        ProfileKind::Localhost(_) if !host_has_apparmor => Err(SpecError::NotEnabled("AppArmor")),
        ProfileKind::Localhost(name) => Ok(Some(name)),
        ProfileKind::Unconfined | ProfileKind::RuntimeDefault => Ok(None),
    }
}

/// The container's own annotations plus containerd's, which win.
fn spec_annotations(input: &SpecInput) -> Result<HashMap<String, String>, SpecError> {
    let container_name = input
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .filter(|name| !name.is_empty())
        .ok_or(SpecError::MissingMetadata)?;
    let mut out = input.config.annotations.clone();
    let pod = input.sandbox.metadata.clone().unwrap_or_default();
    for (key, value) in [
        (annotations::CONTAINER_TYPE, "container"),
        (annotations::SANDBOX_ID, input.sandbox_id),
        (annotations::SANDBOX_NAME, &pod.name),
        (annotations::SANDBOX_NAMESPACE, &pod.namespace),
        (annotations::SANDBOX_UID, &pod.uid),
        (annotations::CONTAINER_NAME, container_name),
        (annotations::IMAGE_NAME, input.image_name),
    ] {
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// The image's `StopSignal` (`SIGTERM`, `TERM`, `15`), SIGTERM by default.
/// Real-time signals (`SIGRTMIN+3`) cannot be expressed as a `Signal` and
/// are refused.
pub fn stop_signal(image: &ImageConfig) -> Result<Signal, SpecError> {
    match image.stop_signal().as_deref().map(str::trim) {
        None | Some("") => Ok(Signal::SIGTERM),
        Some(text) => parse_signal(text),
    }
}

/// The CRI `stop_signal` when set, else the image's (containerd's order).
pub fn container_stop_signal(
    config: &api::ContainerConfig,
    image: &ImageConfig,
) -> Result<Signal, SpecError> {
    match api::Signal::try_from(config.stop_signal) {
        Ok(api::Signal::RuntimeDefault) => stop_signal(image),
        Ok(signal) => parse_signal(signal.as_str_name()),
        Err(_) => Err(SpecError::StopSignal(config.stop_signal.to_string())),
    }
}

fn parse_signal(text: &str) -> Result<Signal, SpecError> {
    let invalid = || SpecError::StopSignal(text.to_string());
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| invalid());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| invalid())
}

/// Creates missing bind-mount sources as directories (mode 0755), as
/// kubelet's runtimes do, so that `runc create` finds them.
///
/// Returns the directories it created, parents first, for
/// [`remove_created_host_paths`] to take back if the container is not
/// created after all. On error, nothing it created remains.
pub fn prepare_host_paths(config: &api::ContainerConfig) -> Result<Vec<PathBuf>, SpecError> {
    let mut created = Vec::new();
    let result = config
        .mounts
        .iter()
        .filter(|mount| {
            mount
                .image
                .as_ref()
                .is_none_or(|image| image.image.is_empty())
        })
        .try_for_each(|mount| {
            let host_path = mounts::host_path_of(mount)?;
            create_missing_dirs(&host_path, &mut created)
        });
    match result {
        Ok(()) => Ok(created),
        Err(error) => {
            remove_created_host_paths(&created);
            Err(error)
        }
    }
}

/// Creates `path` and its missing parents, each 0755 whatever the umask
/// (as Docker does for a missing bind source), appending each to `created`.
fn create_missing_dirs(path: &Path, created: &mut Vec<PathBuf>) -> Result<(), SpecError> {
    use std::os::unix::fs::PermissionsExt;
    let error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SpecError::CreateHostPath { path, source }
    };
    let mut missing = Vec::new();
    let mut probe = Some(path);
    while let Some(dir) = probe {
        match fs::symlink_metadata(dir) {
            Ok(_) => break,
            Err(err) if err.kind() == io::ErrorKind::NotFound => missing.push(dir),
            Err(source) => return Err(error(dir)(source)),
        }
        probe = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        DirBuilder::new().create(dir).map_err(error(dir))?;
        created.push(dir.to_path_buf());
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(error(dir))?;
    }
    Ok(())
}

/// Removes what [`prepare_host_paths`] created, deepest first, each only
/// while still empty (something else may have put files there meanwhile).
pub fn remove_created_host_paths(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        if let Err(e) = fs::remove_dir(dir) {
            tracing::warn!(path = %dir.display(), error = %e, "removing a created mount source");
        }
    }
}

/// An absolute container path, cleaned lexically (`//`, `.`, `..`).
fn clean_absolute(what: &'static str, path: &str) -> Result<PathBuf, SpecError> {
    if path.is_empty() {
        return Err(SpecError::EmptyPath {
            what,
            context: String::new(),
        });
    }
    if !path.starts_with('/') {
        return Err(SpecError::RelativePath {
            what,
            path: path.to_string(),
        });
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    Ok(PathBuf::from(format!("/{}", parts.join("/"))))
}

#[cfg(test)]
mod runc_tests;
#[cfg(test)]
mod tests;
