//! Seccomp for CRI containers: which profile applies (`RuntimeDefault`,
//! `Localhost`, `Unconfined`, or the deprecated path strings), containerd's
//! default profile, and Docker-format profile files turned into OCI ones.
//!
//! The default profile is data (`seccomp_default.json`, containerd's allow
//! list in the Docker profile format), so it goes through the same
//! conversion as node-local profiles: rules are kept or dropped by the
//! container's bounding capabilities (`includes`/`excludes.caps`), the host
//! architecture (`arches`, `archMap`) and kernel version (`minKernel`).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSyscall,
};
use serde::Deserialize;

use crate::api;
use crate::api::security_profile::ProfileType;
use crate::container::spec::{parse_capability, CapabilitySet, SpecError};

const DEFAULT_PROFILE_JSON: &str = include_str!("seccomp_default.json");
/// Far larger than any real profile; keeps a stray path from eating memory.
const MAX_PROFILE_BYTES: u64 = 4 << 20;
const LOCALHOST_PREFIX: &str = "localhost/";

/// A security profile request, after the deprecated string forms are folded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileKind {
    Unconfined,
    RuntimeDefault,
    /// A profile on the node: an absolute file path for seccomp, a loaded
    /// profile's name for AppArmor.
    Localhost(String),
}

/// The requested profile: the typed field when set, else the deprecated
/// string (`runtime/default`, `docker/default`, `unconfined`,
/// `localhost/<ref>`), else `when_unset`.
pub fn profile_kind(
    what: &'static str,
    profile: Option<&api::SecurityProfile>,
    deprecated: &str,
    when_unset: ProfileKind,
) -> Result<ProfileKind, SpecError> {
    let invalid = |value: &str, reason: &str| SpecError::InvalidProfile {
        what,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if let Some(profile) = profile {
        return match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::Unconfined) => Ok(ProfileKind::Unconfined),
            Ok(ProfileType::RuntimeDefault) => Ok(ProfileKind::RuntimeDefault),
            Ok(ProfileType::Localhost) => {
                let reference = profile.localhost_ref.trim_start_matches(LOCALHOST_PREFIX);
                if reference.is_empty() {
                    Err(invalid(
                        &profile.localhost_ref,
                        "a Localhost profile needs localhost_ref",
                    ))
                } else {
                    Ok(ProfileKind::Localhost(reference.to_string()))
                }
            }
            Err(_) => Err(SpecError::UnknownProfileType {
                what,
                value: profile.profile_type,
            }),
        };
    }
    match deprecated {
        "" => Ok(when_unset),
        "runtime/default" | "docker/default" => Ok(ProfileKind::RuntimeDefault),
        "unconfined" => Ok(ProfileKind::Unconfined),
        other => match other.strip_prefix(LOCALHOST_PREFIX) {
            Some(reference) if !reference.is_empty() => {
                Ok(ProfileKind::Localhost(reference.to_string()))
            }
            _ => Err(invalid(
                other,
                "not runtime/default, unconfined or localhost/<ref>",
            )),
        },
    }
}

/// The container's seccomp filter, as containerd chooses it: none for
/// privileged containers or when unconfined (also the CRI default when
/// nothing is set). On a host without seccomp, `RuntimeDefault` means no
/// filter, but an explicit `Localhost` profile is refused rather than
/// silently dropped.
pub fn for_container(
    security: Option<&api::LinuxContainerSecurityContext>,
    privileged: bool,
    host_has_seccomp: bool,
    bounding: CapabilitySet,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged {
        return Ok(None);
    }
    #[allow(deprecated)]
    let deprecated = security.map_or("", |s| s.seccomp_profile_path.as_str());
    let kind = profile_kind(
        "seccomp",
        security.and_then(|s| s.seccomp.as_ref()),
        deprecated,
        ProfileKind::Unconfined,
    )?;
    match kind {
        ProfileKind::Unconfined => Ok(None),
        ProfileKind::RuntimeDefault if !host_has_seccomp => Ok(None),
        ProfileKind::RuntimeDefault => default_profile(bounding).map(Some),
        ProfileKind::Localhost(_) if !host_has_seccomp => Err(SpecError::NotEnabled("seccomp")),
        ProfileKind::Localhost(path) => {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(SpecError::InvalidProfile {
                    what: "seccomp",
                    value: path.display().to_string(),
                    reason: "a Localhost seccomp profile must be an absolute path".to_string(),
                });
            }
            localhost_profile(&path, bounding).map(Some)
        }
    }
}

/// containerd's default profile for a container with these bounding
/// capabilities, on this host's architecture.
pub fn default_profile(bounding: CapabilitySet) -> Result<LinuxSeccomp, SpecError> {
    static PARSED: OnceLock<Result<ProfileFile, String>> = OnceLock::new();
    let parsed = PARSED
        .get_or_init(|| serde_json::from_str(DEFAULT_PROFILE_JSON).map_err(|err| err.to_string()));
    let profile = parsed
        .as_ref()
        .map_err(|reason| SpecError::DefaultSeccompProfile(reason.clone()))?;
    convert(profile, bounding, &Target::host()).map_err(SpecError::DefaultSeccompProfile)
}

/// Loads a Docker- or OCI-format profile from the node.
pub fn localhost_profile(path: &Path, bounding: CapabilitySet) -> Result<LinuxSeccomp, SpecError> {
    let read_error = |source: io::Error| SpecError::ReadSeccompProfile {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    File::open(path)
        .map_err(read_error)?
        .take(MAX_PROFILE_BYTES)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    let parse_error = |reason: String| SpecError::ParseSeccompProfile {
        path: path.to_path_buf(),
        reason,
    };
    let profile: ProfileFile =
        serde_json::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
    convert(&profile, bounding, &Target::host()).map_err(parse_error)
}

/// A seccomp profile file as Docker, containerd and CRI-O write them; OCI
/// `linux.seccomp` objects are a subset of this format.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Vec<ArchMapEntry>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Vec<SyscallRule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyscallRule {
    #[serde(default)]
    name: String,
    #[serde(default)]
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

/// Conditions on a rule; an empty filter matches everything.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    /// Go architecture names (`amd64`, `arm64`, …).
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    /// `major.minor`.
    #[serde(default)]
    min_kernel: Option<String>,
}

/// What the rules are evaluated against.
struct Target {
    arch: Arch,
    go_arch: &'static str,
    /// Read only when a rule asks for a minimum kernel.
    kernel: fn() -> Option<(u32, u32)>,
}

impl Target {
    fn host() -> Target {
        let (arch, go_arch) = match std::env::consts::ARCH {
            "x86_64" => (Arch::ScmpArchX86_64, "amd64"),
            "x86" => (Arch::ScmpArchX86, "386"),
            "aarch64" => (Arch::ScmpArchAarch64, "arm64"),
            "arm" => (Arch::ScmpArchArm, "arm"),
            "s390x" => (Arch::ScmpArchS390x, "s390x"),
            "riscv64" => (Arch::ScmpArchRiscv64, "riscv64"),
            "powerpc64" => (Arch::ScmpArchPpc64le, "ppc64le"),
            "mips64" => (Arch::ScmpArchMips64, "mips64"),
            "loongarch64" => (Arch::ScmpArchLoongarch64, "loong64"),
            other => (Arch::ScmpArchNative, other),
        };
        Target {
            arch,
            go_arch,
            kernel: running_kernel,
        }
    }
}

fn running_kernel() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_kernel_version(&release)
}

fn parse_kernel_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn convert(
    profile: &ProfileFile,
    bounding: CapabilitySet,
    target: &Target,
) -> Result<LinuxSeccomp, String> {
    if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
        return Err("architectures and archMap are mutually exclusive".to_string());
    }
    let architectures: Vec<Arch> = if profile.arch_map.is_empty() {
        profile.architectures.clone()
    } else {
        profile
            .arch_map
            .iter()
            .filter(|entry| entry.architecture == target.arch)
            .flat_map(|entry| {
                std::iter::once(entry.architecture).chain(entry.sub_architectures.iter().copied())
            })
            .collect()
    };
    let mut syscalls = Vec::with_capacity(profile.syscalls.len());
    for rule in &profile.syscalls {
        let names = match (rule.name.is_empty(), rule.names.is_empty()) {
            (true, false) => rule.names.clone(),
            (false, true) => vec![rule.name.clone()],
            (false, false) => {
                return Err(format!(
                    "syscall rule for {:?} sets both name and names",
                    rule.name
                ))
            }
            (true, true) => return Err("syscall rule without a name".to_string()),
        };
        if !applies(rule, bounding, target)? {
            continue;
        }
        let mut syscall = LinuxSyscall::default();
        syscall.set_names(names);
        syscall.set_action(rule.action);
        syscall.set_errno_ret(rule.errno_ret);
        syscall.set_args((!rule.args.is_empty()).then(|| rule.args.clone()));
        syscalls.push(syscall);
    }
    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(profile.default_action);
    seccomp.set_default_errno_ret(profile.default_errno_ret);
    seccomp.set_architectures((!architectures.is_empty()).then_some(architectures));
    seccomp.set_flags((!profile.flags.is_empty()).then(|| profile.flags.clone()));
    seccomp.set_listener_path(profile.listener_path.clone());
    seccomp.set_listener_metadata(profile.listener_metadata.clone());
    seccomp.set_syscalls(Some(syscalls));
    Ok(seccomp)
}

/// Whether a rule is in force: every `includes` condition holds and no
/// `excludes` one does (the semantics of Docker's profile loader).
fn applies(rule: &SyscallRule, bounding: CapabilitySet, target: &Target) -> Result<bool, String> {
    let holds = |name: &String| -> Result<bool, String> {
        let capability = parse_capability(name)
            .map_err(|_| format!("unknown capability {name:?} in a syscall rule"))?;
        Ok(bounding.0 & capability.0 == capability.0)
    };
    let includes = &rule.includes;
    if !includes.arches.is_empty() && !includes.arches.iter().any(|a| a == target.go_arch) {
        return Ok(false);
    }
    for capability in &includes.caps {
        if !holds(capability)? {
            return Ok(false);
        }
    }
    if let Some(minimum) = &includes.min_kernel {
        let minimum = parse_kernel_version(minimum)
            .ok_or_else(|| format!("minKernel {minimum:?} is not major.minor"))?;
        // An unreadable kernel version is taken as new enough.
        if (target.kernel)().is_some_and(|running| running < minimum) {
            return Ok(false);
        }
    }
    let excludes = &rule.excludes;
    if excludes.arches.iter().any(|a| a == target.go_arch) {
        return Ok(false);
    }
    for capability in &excludes.caps {
        if holds(capability)? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxSeccompOperator;
    use std::io::Write;

    fn x86_64(kernel: fn() -> Option<(u32, u32)>) -> Target {
        Target {
            arch: Arch::ScmpArchX86_64,
            go_arch: "amd64",
            kernel,
        }
    }

    fn default_set() -> CapabilitySet {
        CapabilitySet::container_default()
    }

    fn with(name: &str) -> CapabilitySet {
        CapabilitySet(default_set().0 | parse_capability(name).unwrap().0)
    }

    fn without(name: &str) -> CapabilitySet {
        CapabilitySet(default_set().0 & !parse_capability(name).unwrap().0)
    }

    fn parse(text: &str) -> ProfileFile {
        serde_json::from_str(text).unwrap()
    }

    /// The rules naming `syscall`, as (action, errno, args).
    fn rules_for(seccomp: &LinuxSeccomp, syscall: &str) -> Vec<LinuxSyscall> {
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .filter(|rule| rule.names().iter().any(|n| n == syscall))
            .cloned()
            .collect()
    }

    fn allowed_unconditionally(seccomp: &LinuxSeccomp, syscall: &str) -> bool {
        rules_for(seccomp, syscall)
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
    }

    fn default_on_x86_64(bounding: CapabilitySet) -> LinuxSeccomp {
        let profile = parse(DEFAULT_PROFILE_JSON);
        convert(&profile, bounding, &x86_64(|| Some((6, 1)))).unwrap()
    }

    #[test]
    fn default_profile_denies_by_default_and_allows_the_basics() {
        let seccomp = default_on_x86_64(default_set());
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(
            seccomp.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        for syscall in [
            "read",
            "write",
            "execve",
            "openat",
            "arch_prctl",
            "ptrace",
            "chroot",
        ] {
            assert!(allowed_unconditionally(&seccomp, syscall), "{syscall}");
        }
        for syscall in [
            "kexec_load",
            "reboot",
            "mount",
            "init_module",
            "bpf",
            "setns",
            "unshare",
        ] {
            assert!(
                rules_for(&seccomp, syscall).is_empty(),
                "{syscall} must fall to the default"
            );
        }
        for syscall in ["s390_runtime_instr", "cacheflush"] {
            assert!(
                rules_for(&seccomp, syscall).is_empty(),
                "{syscall} is for other arches"
            );
        }
        // Without CAP_SYS_ADMIN: clone only without namespace flags, clone3 gets ENOSYS.
        let clone = rules_for(&seccomp, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(arg.index(), 0);
        assert_eq!(arg.value(), 0x7E02_0000);
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        let clone3 = rules_for(&seccomp, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));
        // personality: only the listed personas.
        assert_eq!(rules_for(&seccomp, "personality").len(), 5);
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let admin = default_on_x86_64(with("SYS_ADMIN"));
        for syscall in ["mount", "setns", "unshare", "clone3", "bpf"] {
            assert!(allowed_unconditionally(&admin, syscall), "{syscall}");
        }
        assert!(
            rules_for(&admin, "clone")
                .iter()
                .all(|rule| rule.args().is_none()),
            "no flag check with CAP_SYS_ADMIN"
        );
        let boot = default_on_x86_64(with("SYS_BOOT"));
        assert!(allowed_unconditionally(&boot, "reboot"));
        let no_chroot = default_on_x86_64(without("SYS_CHROOT"));
        assert!(rules_for(&no_chroot, "chroot").is_empty());
    }

    #[test]
    fn default_profile_serves_this_host() {
        let seccomp = default_profile(default_set()).unwrap();
        assert!(allowed_unconditionally(&seccomp, "read"));
        assert!(rules_for(&seccomp, "kexec_load").is_empty());
    }

    #[test]
    fn docker_format_rules_are_filtered() {
        let profile = parse(
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO",
              "defaultErrnoRet": 1,
              "archMap": [{"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
              "syscalls": [
                {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
                {"names": ["new_one"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "7.2"}},
                {"names": ["old_one"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
                {"names": ["armish"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
                {"names": ["no_admin"], "action": "SCMP_ACT_LOG", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
              ]
            }"#,
        );
        let seccomp = convert(&profile, default_set(), &x86_64(|| Some((6, 1)))).unwrap();
        let names: Vec<String> = seccomp
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|rule| rule.names().clone())
            .collect();
        assert_eq!(names, ["getpid", "old_one", "no_admin", "mkdir"]);
        assert_eq!(
            seccomp.architectures(),
            &None,
            "archMap has no x86_64 entry"
        );
        assert_eq!(seccomp.default_errno_ret(), Some(1));
        assert_eq!(rules_for(&seccomp, "mkdir")[0].errno_ret(), Some(13));

        let as_admin = convert(&profile, with("SYS_ADMIN"), &x86_64(|| None)).unwrap();
        assert!(rules_for(&as_admin, "no_admin").is_empty());
        assert_eq!(
            rules_for(&as_admin, "new_one").len(),
            1,
            "unknown kernel counts as new"
        );
    }

    #[test]
    fn malformed_profiles_are_refused() {
        let both = parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#,
        );
        assert!(convert(&both, default_set(), &x86_64(|| None)).is_err());
        let nameless = parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_LOG"}]}"#,
        );
        assert!(convert(&nameless, default_set(), &x86_64(|| None)).is_err());
        let bad_cap = parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["x"], "action": "SCMP_ACT_LOG", "includes": {"caps": ["CAP_TELEPORT"]}}]}"#,
        );
        assert!(convert(&bad_cap, default_set(), &x86_64(|| None)).is_err());
    }

    fn security(
        profile_type: ProfileType,
        localhost_ref: &str,
    ) -> api::LinuxContainerSecurityContext {
        api::LinuxContainerSecurityContext {
            seccomp: Some(api::SecurityProfile {
                profile_type: profile_type as i32,
                localhost_ref: localhost_ref.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn localhost_profile_is_loaded_from_the_node() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(
            file,
            r#"{{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}}]}}"#
        )
        .unwrap();
        let path = file.path().to_str().unwrap().to_string();
        for reference in [path.clone(), format!("localhost/{path}")] {
            let sc = security(ProfileType::Localhost, &reference);
            let seccomp = for_container(Some(&sc), false, true, default_set())
                .unwrap()
                .unwrap();
            assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
            assert_eq!(
                rules_for(&seccomp, "mkdirat")[0].action(),
                LinuxSeccompAction::ScmpActErrno
            );
        }

        let missing = security(ProfileType::Localhost, "/no/such/profile.json");
        let err = for_container(Some(&missing), false, true, default_set()).unwrap_err();
        assert!(
            matches!(err, SpecError::ReadSeccompProfile { .. }),
            "{err:?}"
        );
        assert_eq!(
            crate::error::Classify::kind(&err),
            crate::error::Kind::InvalidArgument
        );

        std::fs::write(file.path(), b"{not json").unwrap();
        let broken = security(ProfileType::Localhost, &path);
        assert!(matches!(
            for_container(Some(&broken), false, true, default_set()),
            Err(SpecError::ParseSeccompProfile { .. })
        ));
        let relative = security(ProfileType::Localhost, "profiles/x.json");
        assert!(matches!(
            for_container(Some(&relative), false, true, default_set()),
            Err(SpecError::InvalidProfile { .. })
        ));
    }

    #[test]
    fn profile_choice() {
        let default = security(ProfileType::RuntimeDefault, "");
        let unconfined = security(ProfileType::Unconfined, "");
        let localhost = security(ProfileType::Localhost, "/p.json");
        let none = api::LinuxContainerSecurityContext::default();
        assert!(for_container(Some(&default), false, true, default_set())
            .unwrap()
            .is_some());
        assert!(
            for_container(Some(&default), true, true, default_set())
                .unwrap()
                .is_none(),
            "privileged"
        );
        assert!(
            for_container(Some(&default), false, false, default_set())
                .unwrap()
                .is_none(),
            "no seccomp"
        );
        assert!(matches!(
            for_container(Some(&localhost), false, false, default_set()),
            Err(SpecError::NotEnabled("seccomp"))
        ));
        assert!(for_container(Some(&unconfined), false, true, default_set())
            .unwrap()
            .is_none());
        assert!(for_container(Some(&none), false, true, default_set())
            .unwrap()
            .is_none());
        assert!(for_container(None, false, true, default_set())
            .unwrap()
            .is_none());
        let unknown = api::LinuxContainerSecurityContext {
            seccomp: Some(api::SecurityProfile {
                profile_type: 9,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        };
        assert!(matches!(
            for_container(Some(&unknown), false, true, default_set()),
            Err(SpecError::UnknownProfileType { value: 9, .. })
        ));

        let deprecated = [
            ("runtime/default", Some(ProfileKind::RuntimeDefault)),
            ("docker/default", Some(ProfileKind::RuntimeDefault)),
            ("unconfined", Some(ProfileKind::Unconfined)),
            (
                "localhost//etc/p.json",
                Some(ProfileKind::Localhost("/etc/p.json".into())),
            ),
            ("", Some(ProfileKind::Unconfined)),
            ("localhost/", None),
            ("sometimes", None),
        ];
        for (path, expected) in deprecated {
            let got = profile_kind("seccomp", None, path, ProfileKind::Unconfined).ok();
            assert_eq!(got, expected, "{path:?}");
        }
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v657\n"), Some((6, 18)));
        assert_eq!(parse_kernel_version("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel_version("x"), None);
    }
}
