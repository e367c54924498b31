//! Tests of [`generate`] as a whole.

use std::collections::HashMap;

use oci_spec::image::ConfigBuilder;
use oci_spec::runtime::{Capability, LinuxSeccompAction};

use super::*;

impl HostFeatures {
    /// A host with every feature off and all capabilities but SYS_RESOURCE.
    pub(crate) fn unconfined_for_tests() -> HostFeatures {
        HostFeatures {
            oom_score_adj_min: 0,
            apparmor: false,
            seccomp: false,
            cgroup_v2: false,
            hugepage_sizes: Vec::new(),
            capabilities: CapabilitySet(0x1fffeffffff),
            swap_accounting: false,
        }
    }
}

/// Owns everything a [`SpecInput`] borrows.
pub(super) struct Fixture {
    pub config: api::ContainerConfig,
    pub sandbox: api::PodSandboxConfig,
    pub image: ImageConfig,
    pub rootfs: PathBuf,
    pub namespaces: Namespaces,
    pub files: SandboxFiles,
    pub user: ResolvedUser,
    pub host: HostFeatures,
    pub userns: Option<super::PodUserns>,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            config: api::ContainerConfig {
                metadata: Some(api::ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            sandbox: api::PodSandboxConfig {
                metadata: Some(api::PodSandboxMetadata {
                    name: "pod".into(),
                    uid: "pod-uid".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                hostname: "pod-host".into(),
                ..Default::default()
            },
            image: ConfigBuilder::default()
                .cmd(vec!["/bin/sh".to_string()])
                .build()
                .unwrap(),
            rootfs: PathBuf::from("/var/lib/wharf/rootfs/c1"),
            namespaces: Namespaces {
                network: NamespacePath::Join("/run/wharf/netns/p1".into()),
                ipc: NamespacePath::Join("/run/wharf/ipc/p1".into()),
                uts: NamespacePath::Join("/run/wharf/uts/p1".into()),
                pid: NamespacePath::New,
            },
            files: SandboxFiles::default(),
            user: ResolvedUser::default(),
            host: HostFeatures::unconfined_for_tests(),
            userns: None,
        }
    }

    pub fn security(&mut self) -> &mut api::LinuxContainerSecurityContext {
        self.config
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
    }

    fn resources(&mut self) -> &mut api::LinuxContainerResources {
        self.config
            .linux
            .get_or_insert_with(Default::default)
            .resources
            .get_or_insert_with(Default::default)
    }

    pub fn input(&self) -> SpecInput<'_> {
        SpecInput {
            container_id: "c1",
            sandbox_id: "p1",
            config: &self.config,
            sandbox: &self.sandbox,
            image: &self.image,
            image_name: "docker.io/library/busybox:latest",
            rootfs: &self.rootfs,
            namespaces: self.namespaces.clone(),
            sandbox_files: self.files.clone(),
            cgroups_path: "/kubepods/pod1/c1".into(),
            user: self.user.clone(),
            host: self.host.clone(),
            runtime: crate::runtime::RuntimeFeatures {
                recursive_read_only_mounts: true,
                user_namespaces: false,
            },
            userns: self.userns.clone(),
        }
    }

    fn generate(&self) -> Result<Spec, SpecError> {
        generate(&self.input())
    }
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
    let mut builder = ConfigBuilder::default();
    if let Some(entrypoint) = entrypoint {
        builder = builder.entrypoint(strings(entrypoint));
    }
    if let Some(cmd) = cmd {
        builder = builder.cmd(strings(cmd));
    }
    builder.build().unwrap()
}

fn env_of(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().env().clone().unwrap()
}

#[test]
fn command_and_args_merge_like_kubelet_expects() {
    type Case<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        Option<&'a [&'a str]>,
        Option<&'a [&'a str]>,
        Option<&'a [&'a str]>,
    );
    let cases: Vec<Case> = vec![
        (
            "command and args",
            &["cmd"],
            &["a"],
            Some(&["ep"]),
            Some(&["c"]),
            Some(&["cmd", "a"]),
        ),
        (
            "command drops image cmd",
            &["cmd"],
            &[],
            Some(&["ep"]),
            Some(&["c"]),
            Some(&["cmd"]),
        ),
        (
            "args replace cmd only",
            &[],
            &["a", "b"],
            Some(&["ep"]),
            Some(&["c"]),
            Some(&["ep", "a", "b"]),
        ),
        (
            "image defaults",
            &[],
            &[],
            Some(&["ep", "x"]),
            Some(&["c"]),
            Some(&["ep", "x", "c"]),
        ),
        (
            "cmd alone",
            &[],
            &[],
            None,
            Some(&["c", "d"]),
            Some(&["c", "d"]),
        ),
        (
            "entrypoint alone",
            &[],
            &[],
            Some(&["ep"]),
            None,
            Some(&["ep"]),
        ),
        (
            "empty-string entrypoint",
            &[],
            &[],
            Some(&[""]),
            Some(&["c"]),
            Some(&["c"]),
        ),
        ("args without image", &[], &["a"], None, None, Some(&["a"])),
        ("nothing at all", &[], &[], None, None, None),
        (
            "empty entrypoint, no cmd",
            &[],
            &[],
            Some(&[""]),
            None,
            None,
        ),
    ];
    for (name, command, args, entrypoint, cmd, expected) in cases {
        let mut fixture = Fixture::new();
        fixture.config.command = strings(command);
        fixture.config.args = strings(args);
        fixture.image = image(entrypoint, cmd);
        match (fixture.generate(), expected) {
            (Ok(spec), Some(expected)) => {
                let got = spec.process().as_ref().unwrap().args().clone().unwrap();
                assert_eq!(got, strings(expected), "{name}");
            }
            (Err(err), None) => {
                assert!(
                    matches!(err, SpecError::NoCommand { .. }),
                    "{name}: {err:?}"
                );
                assert_eq!(err.kind(), Kind::InvalidArgument);
                assert!(err.to_string().contains("busybox"), "{name}: {err}");
            }
            (got, expected) => panic!("{name}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn environment_layers_override_by_name() {
    let mut fixture = Fixture::new();
    fixture.image = ConfigBuilder::default()
        .cmd(vec!["sh".to_string()])
        .env(strings(&[
            "PATH=/image/bin",
            "LANG=C",
            "DROPPED=1",
            "DROPPED",
            "KEEP=image",
        ]))
        .build()
        .unwrap();
    fixture.config.envs = vec![
        api::KeyValue {
            key: "LANG".into(),
            value: "en_US.UTF-8".into(),
        },
        api::KeyValue {
            key: "EXTRA".into(),
            value: "a=b".into(),
        },
    ];
    fixture.config.tty = true;
    assert_eq!(
        env_of(&fixture.generate().unwrap()),
        strings(&[
            "PATH=/image/bin",
            "TERM=xterm",
            "HOSTNAME=pod-host",
            "LANG=en_US.UTF-8",
            "KEEP=image",
            "EXTRA=a=b"
        ])
    );

    let plain = Fixture::new();
    assert_eq!(
        env_of(&plain.generate().unwrap()),
        strings(&[DEFAULT_PATH_ENV, "HOSTNAME=pod-host"])
    );

    let mut bad = Fixture::new();
    bad.config.envs = vec![api::KeyValue {
        key: "".into(),
        value: "x".into(),
    }];
    assert!(matches!(
        bad.generate(),
        Err(SpecError::InvalidValue { .. })
    ));
}

#[test]
fn working_directory_and_terminal() {
    let cases = [
        ("", None, "/"),
        ("", Some("/srv"), "/srv"),
        ("", Some("srv/app"), "/srv/app"),
        ("/work/./dir/", Some("/srv"), "/work/dir"),
    ];
    for (config_dir, image_dir, expected) in cases {
        let mut fixture = Fixture::new();
        fixture.config.working_dir = config_dir.into();
        let mut builder = ConfigBuilder::default().cmd(vec!["sh".to_string()]);
        if let Some(dir) = image_dir {
            builder = builder.working_dir(dir.to_string());
        }
        fixture.image = builder.build().unwrap();
        let spec = fixture.generate().unwrap();
        assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new(expected));
        assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(false));
    }
    let mut relative = Fixture::new();
    relative.config.working_dir = "work".into();
    assert!(matches!(
        relative.generate(),
        Err(SpecError::RelativePath { .. })
    ));
}

#[test]
fn oom_score_adj_is_clamped_to_what_the_host_allows() {
    let cases = [
        (None, 0, None),
        (Some(-998), 0, Some(0)),
        (Some(500), 0, Some(500)),
        (Some(5000), 0, Some(1000)),
        (Some(-998), -999, Some(-998)),
        (Some(0), 100, Some(100)),
    ];
    for (requested, minimum, expected) in cases {
        let mut fixture = Fixture::new();
        if let Some(requested) = requested {
            fixture.resources().oom_score_adj = requested;
        }
        fixture.host.oom_score_adj_min = minimum;
        let spec = fixture.generate().unwrap();
        assert_eq!(
            spec.process().as_ref().unwrap().oom_score_adj(),
            expected,
            "{requested:?}"
        );
    }
}

#[test]
fn user_no_new_privs_and_readonly_rootfs() {
    let mut fixture = Fixture::new();
    fixture.user = ResolvedUser {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![10, 1000],
        home: Some("/home/app".into()),
    };
    fixture.security().no_new_privs = true;
    fixture.security().readonly_rootfs = true;
    fixture.files.hosts = Some("/pod/hosts".into());
    let spec = fixture.generate().unwrap();
    let process = spec.process().as_ref().unwrap();
    assert_eq!((process.user().uid(), process.user().gid()), (1000, 1000));
    assert_eq!(
        process.user().additional_gids().as_deref(),
        Some(&[10, 1000][..])
    );
    assert_eq!(process.no_new_privileges(), Some(true));
    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.path(), Path::new("/var/lib/wharf/rootfs/c1"));
    assert_eq!(root.readonly(), Some(true));
    let hosts = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/etc/hosts"))
        .unwrap();
    assert!(hosts
        .options()
        .as_ref()
        .unwrap()
        .contains(&"ro".to_string()));
}

#[test]
fn hostname_namespaces_cgroups_and_annotations() {
    let mut fixture = Fixture::new();
    fixture.config.annotations = HashMap::from([
        ("team".to_string(), "infra".to_string()),
        (annotations::SANDBOX_ID.to_string(), "spoofed".to_string()),
    ]);
    let spec = fixture.generate().unwrap();
    assert_eq!(spec.hostname().as_deref(), Some("pod-host"));
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/pod1/c1"))
    );
    assert_eq!(
        linux.namespaces().as_ref().unwrap().len(),
        5,
        "pid, ipc, uts, net and mount"
    );
    let annotations = spec.annotations().as_ref().unwrap();
    assert_eq!(annotations["team"], "infra");
    assert_eq!(annotations[annotations::SANDBOX_ID], "p1");
    assert_eq!(annotations[annotations::CONTAINER_TYPE], "container");
    assert_eq!(annotations[annotations::CONTAINER_NAME], "app");
    assert_eq!(
        annotations[annotations::IMAGE_NAME],
        "docker.io/library/busybox:latest"
    );
    assert_eq!(annotations[annotations::SANDBOX_NAMESPACE], "default");

    let mut host_uts = Fixture::new();
    host_uts.namespaces.uts = NamespacePath::Host;
    assert_eq!(host_uts.generate().unwrap().hostname(), &None);

    let mut v2 = Fixture::new();
    v2.host.cgroup_v2 = true;
    let spec = v2.generate().unwrap();
    let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert!(namespaces
        .iter()
        .any(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Cgroup));

    let mut nameless = Fixture::new();
    nameless.config.metadata = None;
    assert!(matches!(
        nameless.generate(),
        Err(SpecError::MissingMetadata)
    ));
}

#[test]
fn default_security_settings() {
    let mut fixture = Fixture::new();
    fixture.host.seccomp = true;
    fixture.security().seccomp = Some(api::SecurityProfile {
        profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let spec = fixture.generate().unwrap();
    let process = spec.process().as_ref().unwrap();
    let bounding = process
        .capabilities()
        .as_ref()
        .unwrap()
        .bounding()
        .clone()
        .unwrap();
    assert_eq!(bounding, CapabilitySet::container_default().to_oci());
    assert_eq!(process.apparmor_profile(), &None);
    let linux = spec.linux().as_ref().unwrap();
    let seccomp = linux.seccomp().as_ref().unwrap();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert!(seccomp
        .syscalls()
        .iter()
        .flatten()
        .any(|s| s.names().contains(&"read".to_string())));
    assert!(linux
        .masked_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/kcore".to_string()));
    assert_eq!(
        linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap()[0]
            .to_string(),
        "a *:* rwm"
    );
}

#[test]
fn privileged_containers() {
    let mut fixture = Fixture::new();
    fixture.host.seccomp = true;
    fixture.security().privileged = true;
    fixture.security().seccomp = Some(api::SecurityProfile {
        profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    assert!(matches!(
        fixture.generate(),
        Err(SpecError::PrivilegedInUnprivilegedSandbox)
    ));

    fixture
        .sandbox
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
    let spec = fixture.generate().unwrap();
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap();
    assert!(caps
        .bounding()
        .as_ref()
        .unwrap()
        .contains(&Capability::SysAdmin));
    assert!(
        !caps
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysResource),
        "not held by the host"
    );
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.seccomp(), &None);
    assert_eq!(linux.masked_paths().as_deref(), Some(&[][..]));
    assert_eq!(linux.readonly_paths().as_deref(), Some(&[][..]));
    assert!(linux
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .any(|d| d.path() == Path::new("/dev/null")));
    let sys = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
}

#[test]
fn apparmor_profiles() {
    use api::security_profile::ProfileType;
    let profile = |profile_type: ProfileType, reference: &str| api::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: reference.into(),
    };
    let mut fixture = Fixture::new();
    fixture.security().apparmor = Some(profile(ProfileType::Localhost, "my-profile"));
    let err = fixture.generate().unwrap_err();
    assert!(matches!(err, SpecError::NotEnabled("AppArmor")));
    assert_eq!(err.kind(), Kind::FailedPrecondition);
    fixture.host.apparmor = true;
    let spec = fixture.generate().unwrap();
    assert_eq!(
        spec.process()
            .as_ref()
            .unwrap()
            .apparmor_profile()
            .as_deref(),
        Some("my-profile")
    );
    fixture.security().apparmor = Some(profile(ProfileType::RuntimeDefault, ""));
    assert_eq!(
        fixture
            .generate()
            .unwrap()
            .process()
            .as_ref()
            .unwrap()
            .apparmor_profile(),
        &None
    );
    let mut off = Fixture::new();
    off.security().apparmor = Some(profile(ProfileType::RuntimeDefault, ""));
    assert!(off.generate().is_ok(), "ignored where AppArmor is off");
}

#[test]
fn sysctls_and_user_namespaces() {
    let mut fixture = Fixture::new();
    fixture.sandbox.linux = Some(api::LinuxPodSandboxConfig {
        sysctls: HashMap::from([("net.core.somaxconn".to_string(), "1024".to_string())]),
        ..Default::default()
    });
    let spec = fixture.generate().unwrap();
    assert_eq!(
        spec.linux().as_ref().unwrap().sysctl().as_ref().unwrap()["net.core.somaxconn"],
        "1024"
    );
    fixture.namespaces.network = NamespacePath::Host;
    assert!(matches!(fixture.generate(), Err(SpecError::Sysctl { .. })));

    let mut userns = Fixture::new();
    userns.security().namespace_options = Some(api::NamespaceOption {
        userns_options: Some(api::UserNamespace {
            mode: api::NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = userns.generate().unwrap_err();
    assert_eq!(
        err.kind(),
        Kind::InvalidArgument,
        "a POD user namespace in a pod without one: {err}"
    );

    let range = crate::idmap::IdRange {
        container_id: 0,
        host_id: 1000,
        length: 100_000,
    };
    userns.userns = Some(super::PodUserns {
        path: "/run/wharf/sandboxes/p1/ns/user".into(),
        mappings: crate::idmap::UsernsMappings {
            uids: range,
            gids: range,
        },
    });
    let spec = userns.generate().unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let first = &linux.namespaces().as_ref().unwrap()[0];
    assert_eq!(first.typ(), oci_spec::runtime::LinuxNamespaceType::User);
    assert_eq!(
        first.path().as_deref(),
        Some(Path::new("/run/wharf/sandboxes/p1/ns/user"))
    );
    for mappings in [linux.uid_mappings(), linux.gid_mappings()] {
        let mapping = &mappings.as_ref().unwrap()[0];
        assert_eq!(
            (mapping.container_id(), mapping.host_id(), mapping.size()),
            (0, 1000, 100_000)
        );
    }
    userns.security().namespace_options = Some(api::NamespaceOption {
        userns_options: Some(api::UserNamespace {
            mode: api::NamespaceMode::Container as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(userns.generate().unwrap_err().kind(), Kind::InvalidArgument);
}

#[test]
fn serialized_spec_carries_no_library_defaults() {
    let json = serde_json::to_string(&Fixture::new().generate().unwrap()).unwrap();
    for unwanted in [
        "youki",
        "rlimits",
        "scheduler",
        "TERM=xterm",
        "\"/run\"",
        "ambient",
        "inheritable",
    ] {
        assert!(!json.contains(unwanted), "{unwanted} in {json}");
    }
    assert!(json.contains("\"ociVersion\":\"1.0.2\""));
}

#[test]
fn stop_signals() {
    let image_with = |signal: Option<&str>| {
        let mut builder = ConfigBuilder::default();
        if let Some(signal) = signal {
            builder = builder.stop_signal(signal.to_string());
        }
        builder.build().unwrap()
    };
    let cases = [
        (None, Some(Signal::SIGTERM)),
        (Some("SIGTERM"), Some(Signal::SIGTERM)),
        (Some("TERM"), Some(Signal::SIGTERM)),
        (Some("15"), Some(Signal::SIGTERM)),
        (Some("sigquit"), Some(Signal::SIGQUIT)),
        (Some("9"), Some(Signal::SIGKILL)),
        (Some("SIGRTMIN+3"), None),
        (Some("NOPE"), None),
        (Some("99"), None),
    ];
    for (text, expected) in cases {
        assert_eq!(stop_signal(&image_with(text)).ok(), expected, "{text:?}");
    }
    let mut config = api::ContainerConfig::default();
    assert_eq!(
        container_stop_signal(&config, &image_with(Some("SIGINT"))).unwrap(),
        Signal::SIGINT
    );
    config.stop_signal = api::Signal::Sigusr1 as i32;
    assert_eq!(
        container_stop_signal(&config, &image_with(Some("SIGINT"))).unwrap(),
        Signal::SIGUSR1
    );
}

#[test]
fn prepare_host_paths_creates_missing_sources() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("a/b");
    let existing_file = dir.path().join("file");
    fs::write(&existing_file, b"x").unwrap();
    let mount = |host: &Path| api::Mount {
        container_path: "/m".into(),
        host_path: host.display().to_string(),
        ..Default::default()
    };
    let config = api::ContainerConfig {
        mounts: vec![mount(&missing), mount(&existing_file)],
        ..Default::default()
    };
    let created = prepare_host_paths(&config).unwrap();
    assert!(missing.is_dir());
    assert!(existing_file.is_file());
    assert_eq!(created, [dir.path().join("a"), missing.clone()]);
    remove_created_host_paths(&created);
    assert!(!dir.path().join("a").exists());
    assert!(existing_file.is_file());

    // A later mount that fails takes back what the earlier ones created.
    let config = api::ContainerConfig {
        mounts: vec![
            mount(&missing),
            api::Mount {
                container_path: "/m".into(),
                host_path: existing_file.join("below-a-file").display().to_string(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    prepare_host_paths(&config).unwrap_err();
    assert!(!dir.path().join("a").exists(), "nothing half-created");

    for bad in ["relative/path", ""] {
        let config = api::ContainerConfig {
            mounts: vec![api::Mount {
                container_path: "/m".into(),
                host_path: bad.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = prepare_host_paths(&config).unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument, "{bad:?}: {err}");
    }
}

#[test]
fn clean_absolute_paths() {
    assert_eq!(
        clean_absolute("x", "/a//b/./c/../d/").unwrap(),
        Path::new("/a/b/d")
    );
    assert_eq!(clean_absolute("x", "/..").unwrap(), Path::new("/"));
    assert!(clean_absolute("x", "a/b").is_err());
    assert!(clean_absolute("x", "").is_err());
}

#[test]
fn environment_merge_keeps_order_replaces_in_place_and_removes() {
    let mut env = Environment::default();
    for entry in [
        "A=1", "B=2", "C=3", "B=two", "A", "D=4", "A=again", "MISSING",
    ] {
        env.set(entry);
    }
    assert_eq!(env.into_vec(), ["B=two", "C=3", "D=4", "A=again"]);

    // Many distinct names: every one kept, in order (a quadratic merge
    // made this take minutes).
    let mut env = Environment::default();
    let entries: Vec<String> = (0..MAX_ENV_ENTRIES).map(|i| format!("V{i}=x")).collect();
    for entry in &entries {
        env.set(entry);
    }
    assert_eq!(env.into_vec(), entries);
}

#[test]
fn lists_beyond_the_limits_are_refused() {
    let image: ImageConfig = serde_json::from_value(serde_json::json!({
        "Env": (0..=MAX_ENV_ENTRIES).map(|i| format!("V{i}=x")).collect::<Vec<_>>(),
    }))
    .unwrap();
    let err = check_limits(&api::ContainerConfig::default(), &image).unwrap_err();
    assert_eq!(err.kind(), Kind::InvalidArgument);
    assert!(
        err.to_string().contains("image environment variables"),
        "{err}"
    );

    let config = api::ContainerConfig {
        mounts: vec![api::Mount::default(); MAX_MOUNTS + 1],
        ..Default::default()
    };
    let err = check_limits(&config, &ImageConfig::default()).unwrap_err();
    assert!(err.to_string().contains("mounts"), "{err}");
    check_limits(&api::ContainerConfig::default(), &ImageConfig::default()).unwrap();
}
