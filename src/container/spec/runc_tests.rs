//! A real check: runc accepts the generated `config.json` and applies the
//! user and the capabilities.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use super::tests::{strings, Fixture};
use super::*;

/// Deletes a runc container however the test ends.
struct RuncContainer<'a> {
    state_root: &'a Path,
    id: String,
}

impl Drop for RuncContainer<'_> {
    fn drop(&mut self) {
        let _ = Command::new(RUNC)
            .arg("--root")
            .arg(self.state_root)
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// (name, run_as_user, added and dropped capabilities, expected CapEff)
type RuncCase<'a> = (
    &'a str,
    Option<i64>,
    &'a [&'a str],
    &'a [&'a str],
    CapabilitySet,
);

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/bin/busybox";

/// With the default seccomp profile, pod-style mounts and a cgroup.
#[test]
fn runc_runs_the_generated_spec() {
    if !Path::new(RUNC).exists()
        || !Path::new(BUSYBOX).exists()
        || !nix::unistd::geteuid().is_root()
    {
        eprintln!("skipped: needs root, {RUNC} and {BUSYBOX}");
        return;
    }
    let bundle = tempfile::tempdir().unwrap();
    let state_root = tempfile::tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "id", "grep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let host = HostFeatures::detect();
    let cases: [RuncCase; 3] = [
        (
            "root-default",
            None,
            &[],
            &[],
            CapabilitySet(CapabilitySet::container_default().0 & host.capabilities.0),
        ),
        (
            "root-net-admin",
            None,
            &["NET_ADMIN"],
            &["ALL"],
            CapabilitySet(1 << 12),
        ),
        ("non-root", Some(1000), &[], &[], CapabilitySet(0)),
    ];
    for (name, uid, add, dropped, expected_caps) in cases {
        let mut fixture = Fixture::new();
        fixture.rootfs = rootfs.clone();
        fixture.host = host.clone();
        fixture.namespaces = Namespaces {
            network: NamespacePath::New,
            ipc: NamespacePath::New,
            uts: NamespacePath::New,
            pid: NamespacePath::New,
        };
        fixture.config.command =
            strings(&["/bin/sh", "-c", "id -u; grep CapEff /proc/self/status"]);
        fixture.security().capabilities = Some(api::Capability {
            add_capabilities: strings(add),
            drop_capabilities: strings(dropped),
            add_ambient_capabilities: vec![],
        });
        fixture.security().seccomp = Some(api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        fixture.user = crate::container::user::resolve_user(
            &rootfs,
            &uid.map_or(String::new(), |u| u.to_string()),
            None,
        )
        .unwrap();
        let id = format!("wharf-spec-{}-{name}", std::process::id());
        let mut input = fixture.input();
        input.cgroups_path = format!("/{id}");
        let spec = generate(&input).unwrap();
        fs::write(
            bundle.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();

        let container = RuncContainer {
            state_root: state_root.path(),
            id: id.clone(),
        };
        let output = Command::new(RUNC)
            .arg("--root")
            .arg(container.state_root)
            .args(["run", "--bundle"])
            .arg(bundle.path())
            .arg(&id)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: runc failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0], uid.unwrap_or(0).to_string(), "{name}");
        assert_eq!(
            lines[1],
            format!("CapEff:\t{:016x}", expected_caps.0),
            "{name}"
        );
        drop(container);
    }
}
