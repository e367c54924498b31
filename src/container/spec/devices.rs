//! Device nodes and the device cgroup: the CRI devices (looked up on the host
//! with `stat`), every host device for privileged containers, and the rules
//! that deny everything else.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{major, minor};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::{clean_absolute, SpecError};
use crate::api;

/// Devices every container may use (containerd's `WithDefaultUnixDevices`;
/// runc adds the same ones itself): null, random, full, tty, zero, urandom,
/// console, every pty, ptmx.
const DEFAULT_ALLOWED: [(i64, Option<i64>); 9] = [
    (1, Some(3)),
    (1, Some(8)),
    (1, Some(7)),
    (5, Some(0)),
    (1, Some(5)),
    (1, Some(9)),
    (5, Some(1)),
    (136, None),
    (5, Some(2)),
];

/// Entries of the host's /dev a privileged container does not get: other
/// mounts and runtime bookkeeping (as containerd's `HostDevices`).
const SKIPPED_HOST_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

#[derive(Debug, Default)]
pub struct DeviceSet {
    pub devices: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

/// The container's devices. `host_dev` is the host's /dev, walked for
/// privileged containers, which may also use any device at all.
pub fn for_container(
    config: &api::ContainerConfig,
    privileged: bool,
    host_dev: &Path,
) -> Result<DeviceSet, SpecError> {
    let mut set = DeviceSet::default();
    if privileged {
        set.rules
            .push(rule(true, LinuxDeviceType::A, None, None, "rwm"));
    } else {
        set.rules
            .push(rule(false, LinuxDeviceType::A, None, None, "rwm"));
        for (major, minor) in DEFAULT_ALLOWED {
            set.rules
                .push(rule(true, LinuxDeviceType::C, Some(major), minor, "rwm"));
        }
    }
    for requested in &config.devices {
        let permissions = validate_permissions(requested)?;
        for device in requested_devices(requested)? {
            if !privileged {
                set.rules.push(rule(
                    true,
                    device.typ(),
                    Some(device.major()),
                    Some(device.minor()),
                    permissions,
                ));
            }
            set.devices.push(device);
        }
    }
    if privileged {
        for device in devices_under(host_dev, None, true)? {
            // A CRI device at the same path wins.
            if !set.devices.iter().any(|d| d.path() == device.path()) {
                set.devices.push(device);
            }
        }
    }
    Ok(set)
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(allow);
    rule.set_typ(Some(typ));
    rule.set_major(major);
    rule.set_minor(minor);
    rule.set_access(Some(access.to_string()));
    rule
}

fn validate_permissions(device: &api::Device) -> Result<&str, SpecError> {
    let permissions = device.permissions.as_str();
    if permissions.is_empty() || !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(SpecError::InvalidValue {
            field: "device permissions",
            value: format!("{permissions:?} for {}", device.host_path),
            reason: "use one or more of r, w and m".to_string(),
        });
    }
    Ok(permissions)
}

/// A CRI device: one node, or every node beneath a directory (such as
/// /dev/snd). A symlink given as the host path is followed, so udev's
/// stable names work; symlinks inside a walked directory are skipped, so each
/// device appears once.
fn requested_devices(requested: &api::Device) -> Result<Vec<LinuxDevice>, SpecError> {
    if requested.host_path.is_empty() {
        return Err(SpecError::EmptyPath {
            what: "device host",
            context: format!(" (device at {:?})", requested.container_path),
        });
    }
    let host_path = PathBuf::from(&requested.host_path);
    if !host_path.is_absolute() {
        return Err(SpecError::RelativePath {
            what: "device host",
            path: requested.host_path.clone(),
        });
    }
    let container_path = if requested.container_path.is_empty() {
        host_path.clone()
    } else {
        clean_absolute("device container", &requested.container_path)?
    };
    let metadata = fs::metadata(&host_path).map_err(|source| SpecError::DeviceLookup {
        path: host_path.clone(),
        source,
    })?;
    if metadata.is_dir() {
        return devices_under(&host_path, Some(&container_path), false);
    }
    device_from(&host_path, &metadata, container_path)
        .ok_or(SpecError::NotADevice { path: host_path })
        .map(|device| vec![device])
}

/// Device nodes beneath `dir`, placed under `container_dir` (or at their host
/// path). Entries that vanish mid-walk are skipped.
fn devices_under(
    dir: &Path,
    container_dir: Option<&Path>,
    skip_host_special: bool,
) -> Result<Vec<LinuxDevice>, SpecError> {
    let lookup_error = |source: io::Error| SpecError::DeviceLookup {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(lookup_error)? {
        let entry = entry.map_err(lookup_error)?;
        let name = entry.file_name();
        let host_path = entry.path();
        let container_path = match container_dir {
            Some(container_dir) => container_dir.join(&name),
            None => host_path.clone(),
        };
        let metadata = match fs::symlink_metadata(&host_path) {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(SpecError::DeviceLookup {
                    path: host_path,
                    source,
                })
            }
        };
        if metadata.is_dir() {
            let skipped = skip_host_special && SKIPPED_HOST_DIRS.iter().any(|skip| name == *skip);
            if !skipped {
                out.extend(devices_under(
                    &host_path,
                    Some(&container_path),
                    skip_host_special,
                )?);
            }
            continue;
        }
        if skip_host_special && name == "console" {
            continue;
        }
        out.extend(device_from(&host_path, &metadata, container_path));
    }
    Ok(out)
}

fn device_from(
    host_path: &Path,
    metadata: &fs::Metadata,
    container_path: PathBuf,
) -> Option<LinuxDevice> {
    let file_type = metadata.file_type();
    let typ = if file_type.is_char_device() {
        LinuxDeviceType::C
    } else if file_type.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = metadata.rdev();
    let (Ok(major), Ok(minor)) = (i64::try_from(major(rdev)), i64::try_from(minor(rdev))) else {
        tracing::warn!(path = %host_path.display(), rdev, "device number out of range; skipped");
        return None;
    };
    let mut device = LinuxDevice::default();
    device.set_path(container_path);
    device.set_typ(typ);
    device.set_major(major);
    device.set_minor(minor);
    device.set_file_mode(Some(metadata.mode() & 0o7777));
    device.set_uid(Some(metadata.uid()));
    device.set_gid(Some(metadata.gid()));
    Some(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    type ErrorCheck = fn(&SpecError) -> bool;

    fn device(host: &str, container: &str, permissions: &str) -> api::Device {
        api::Device {
            host_path: host.into(),
            container_path: container.into(),
            permissions: permissions.into(),
        }
    }

    fn config(devices: Vec<api::Device>) -> api::ContainerConfig {
        api::ContainerConfig {
            devices,
            ..Default::default()
        }
    }

    #[test]
    fn default_rules_deny_all_then_allow_the_standard_nodes() {
        let set = for_container(&config(vec![]), false, Path::new("/dev")).unwrap();
        assert!(set.devices.is_empty());
        assert_eq!(set.rules[0].to_string(), "a *:* rwm");
        assert!(!set.rules[0].allow());
        let allowed: Vec<String> = set.rules[1..].iter().map(|r| r.to_string()).collect();
        assert!(allowed.contains(&"c 1:3 rwm".to_string()));
        assert!(allowed.contains(&"c 136:* rwm".to_string()));
    }

    #[test]
    fn cri_device_is_looked_up_on_the_host() {
        let set = for_container(
            &config(vec![device("/dev/null", "/dev/xnull", "rw")]),
            false,
            Path::new("/dev"),
        )
        .unwrap();
        let null = &set.devices[0];
        assert_eq!(null.path(), Path::new("/dev/xnull"));
        assert_eq!(null.typ(), LinuxDeviceType::C);
        assert_eq!((null.major(), null.minor()), (1, 3));
        assert_eq!(null.file_mode(), Some(0o666));
        let last = set.rules.last().unwrap();
        assert_eq!(last.to_string(), "c 1:3 rw");
        assert!(last.allow());
    }

    #[test]
    fn cri_device_without_container_path_keeps_host_path() {
        let set = for_container(
            &config(vec![device("/dev/zero", "", "r")]),
            false,
            Path::new("/dev"),
        )
        .unwrap();
        assert_eq!(set.devices[0].path(), Path::new("/dev/zero"));
    }

    #[test]
    fn cri_device_directory_is_walked() {
        let dir = tempfile::tempdir().unwrap();
        // A symlink to a device inside a walked directory is skipped; the
        // walk must not follow it.
        std::os::unix::fs::symlink("/dev/null", dir.path().join("null-link")).unwrap();
        fs::write(dir.path().join("not-a-device"), b"").unwrap();
        let set = for_container(
            &config(vec![device(
                dir.path().to_str().unwrap(),
                "/dev/things",
                "rwm",
            )]),
            false,
            Path::new("/dev"),
        )
        .unwrap();
        assert!(set.devices.is_empty());

        // A real device tree: /dev/pts/ptmx lives beneath a directory.
        let set = for_container(
            &config(vec![device("/dev/pts", "/dev/mypts", "rw")]),
            false,
            Path::new("/dev"),
        )
        .unwrap();
        assert!(set
            .devices
            .iter()
            .any(|d| d.path() == Path::new("/dev/mypts/ptmx") && d.major() == 5));
    }

    #[test]
    fn bad_devices_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("file");
        fs::write(&regular, b"").unwrap();
        let cases: Vec<(api::Device, ErrorCheck)> = vec![
            (device("", "/dev/x", "rw"), |e| {
                matches!(e, SpecError::EmptyPath { .. })
            }),
            (device("dev/null", "/dev/x", "rw"), |e| {
                matches!(e, SpecError::RelativePath { .. })
            }),
            (device("/dev/null", "dev/x", "rw"), |e| {
                matches!(e, SpecError::RelativePath { .. })
            }),
            (device("/dev/null", "/dev/x", "rwx"), |e| {
                matches!(e, SpecError::InvalidValue { .. })
            }),
            (device("/dev/null", "/dev/x", ""), |e| {
                matches!(e, SpecError::InvalidValue { .. })
            }),
            (device("/dev/no-such-device", "/dev/x", "rw"), |e| {
                matches!(e, SpecError::DeviceLookup { .. })
                    && crate::error::Classify::kind(e) == crate::error::Kind::InvalidArgument
            }),
            (device(regular.to_str().unwrap(), "/dev/x", "rw"), |e| {
                matches!(e, SpecError::NotADevice { .. })
            }),
        ];
        for (requested, expected) in cases {
            let err = for_container(&config(vec![requested.clone()]), false, Path::new("/dev"))
                .unwrap_err();
            assert!(expected(&err), "{requested:?} gave {err:?}");
        }
    }

    #[test]
    fn privileged_gets_every_host_device_and_all_access() {
        let set = for_container(
            &config(vec![device("/dev/zero", "/dev/null", "r")]),
            true,
            Path::new("/dev"),
        )
        .unwrap();
        assert_eq!(set.rules.len(), 1);
        assert_eq!(set.rules[0].to_string(), "a *:* rwm");
        assert!(set.rules[0].allow());
        let at_null: Vec<_> = set
            .devices
            .iter()
            .filter(|d| d.path() == Path::new("/dev/null"))
            .collect();
        assert_eq!(at_null.len(), 1, "the CRI device replaces the host one");
        assert_eq!((at_null[0].major(), at_null[0].minor()), (1, 5));
        assert!(set
            .devices
            .iter()
            .any(|d| d.path() == Path::new("/dev/urandom")));
        assert!(!set.devices.iter().any(|d| d.path().starts_with("/dev/pts")));
        assert!(!set
            .devices
            .iter()
            .any(|d| d.path() == Path::new("/dev/console")));
    }
}
