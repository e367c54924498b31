//! Linux capabilities: kernel numbering, the default set containerd gives CRI
//! containers, and the CRI add/drop rules.
//!
//! Sets are kept as bit masks (bit n = capability n, the layout of `CapEff`
//! in `/proc/<pid>/status`) so that set algebra is trivial and the output is
//! deterministic; they become `oci_spec` hash sets only at the end.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::SpecError;
use crate::api;

/// Every capability the kernel knows, indexed by its number
/// (`include/uapi/linux/capability.h`).
const BY_NUMBER: [(&str, Capability); 41] = [
    ("CHOWN", Capability::Chown),
    ("DAC_OVERRIDE", Capability::DacOverride),
    ("DAC_READ_SEARCH", Capability::DacReadSearch),
    ("FOWNER", Capability::Fowner),
    ("FSETID", Capability::Fsetid),
    ("KILL", Capability::Kill),
    ("SETGID", Capability::Setgid),
    ("SETUID", Capability::Setuid),
    ("SETPCAP", Capability::Setpcap),
    ("LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("NET_BIND_SERVICE", Capability::NetBindService),
    ("NET_BROADCAST", Capability::NetBroadcast),
    ("NET_ADMIN", Capability::NetAdmin),
    ("NET_RAW", Capability::NetRaw),
    ("IPC_LOCK", Capability::IpcLock),
    ("IPC_OWNER", Capability::IpcOwner),
    ("SYS_MODULE", Capability::SysModule),
    ("SYS_RAWIO", Capability::SysRawio),
    ("SYS_CHROOT", Capability::SysChroot),
    ("SYS_PTRACE", Capability::SysPtrace),
    ("SYS_PACCT", Capability::SysPacct),
    ("SYS_ADMIN", Capability::SysAdmin),
    ("SYS_BOOT", Capability::SysBoot),
    ("SYS_NICE", Capability::SysNice),
    ("SYS_RESOURCE", Capability::SysResource),
    ("SYS_TIME", Capability::SysTime),
    ("SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("MKNOD", Capability::Mknod),
    ("LEASE", Capability::Lease),
    ("AUDIT_WRITE", Capability::AuditWrite),
    ("AUDIT_CONTROL", Capability::AuditControl),
    ("SETFCAP", Capability::Setfcap),
    ("MAC_OVERRIDE", Capability::MacOverride),
    ("MAC_ADMIN", Capability::MacAdmin),
    ("SYSLOG", Capability::Syslog),
    ("WAKE_ALARM", Capability::WakeAlarm),
    ("BLOCK_SUSPEND", Capability::BlockSuspend),
    ("AUDIT_READ", Capability::AuditRead),
    ("PERFMON", Capability::Perfmon),
    ("BPF", Capability::Bpf),
    ("CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// The set Docker introduced and containerd still grants CRI containers.
const DEFAULT_NAMES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A set of capabilities; bit n is capability number n.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapabilitySet(pub u64);

impl CapabilitySet {
    /// Every capability this table knows.
    pub const KNOWN: CapabilitySet = CapabilitySet((1 << BY_NUMBER.len()) - 1);

    /// The set containerd gives a non-privileged CRI container.
    pub fn container_default() -> Self {
        let mut set = CapabilitySet(0);
        for name in DEFAULT_NAMES {
            // The names are the table's own, so the lookup cannot miss.
            if let Some(bit) = number_of(name) {
                set.0 |= 1 << bit;
            }
        }
        set
    }

    pub fn contains(self, capability: Capability) -> bool {
        BY_NUMBER
            .iter()
            .position(|(_, known)| *known == capability)
            .is_some_and(|bit| self.0 & (1 << bit) != 0)
    }

    pub fn to_oci(self) -> Capabilities {
        BY_NUMBER
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, (_, capability))| *capability)
            .collect()
    }

    /// Kernel names (`CAP_…`) in number order, for messages.
    pub fn names(self) -> Vec<String> {
        BY_NUMBER
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, (name, _))| format!("CAP_{name}"))
            .collect()
    }
}

fn number_of(bare_name: &str) -> Option<usize> {
    BY_NUMBER.iter().position(|(known, _)| *known == bare_name)
}

/// Accepts `NET_ADMIN`, `net_admin` and `CAP_NET_ADMIN` alike.
pub fn parse_name(name: &str) -> Result<CapabilitySet, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    number_of(bare)
        .map(|bit| CapabilitySet(1 << bit))
        .ok_or_else(|| SpecError::UnknownCapability(name.to_string()))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The process capabilities for a container, following containerd:
/// privileged containers get everything the runtime itself holds; otherwise
/// the default set, then `add: [ALL]`, then `drop: [ALL]`, then the named
/// additions, then the named drops (so `add: [ALL], drop: [CHOWN]` is all but
/// CHOWN, and `drop: [ALL], add: [NET_ADMIN]` is NET_ADMIN alone).
///
/// `host` is what the runtime holds: runc cannot grant more, so asking for a
/// capability outside it is refused here rather than failing inside runc.
/// Inheritable stays empty (CVE-2022-24769); ambient ones are CRI's
/// `add_ambient_capabilities`, which must also be permitted and inheritable.
pub fn for_container(
    capabilities: Option<&api::Capability>,
    privileged: bool,
    host: CapabilitySet,
) -> Result<(CapabilitySet, LinuxCapabilities), SpecError> {
    let mut ambient = CapabilitySet(0);
    let granted = if privileged {
        host
    } else {
        let mut set = CapabilitySet::container_default();
        if let Some(requested) = capabilities {
            if requested.add_capabilities.iter().any(|name| is_all(name)) {
                set = host;
            }
            if requested.drop_capabilities.iter().any(|name| is_all(name)) {
                set = CapabilitySet(0);
            }
            for name in requested.add_capabilities.iter().filter(|n| !is_all(n)) {
                let added = parse_name(name)?;
                if added.0 & !host.0 != 0 {
                    return Err(SpecError::CapabilityUnavailable(name.clone()));
                }
                set.0 |= added.0;
            }
            for name in requested.drop_capabilities.iter().filter(|n| !is_all(n)) {
                set.0 &= !parse_name(name)?.0;
            }
            for name in &requested.add_ambient_capabilities {
                let added = parse_name(name)?;
                if added.0 & !host.0 != 0 {
                    return Err(SpecError::CapabilityUnavailable(name.clone()));
                }
                ambient.0 |= added.0;
            }
        }
        set.0 |= ambient.0;
        set
    };
    let mut oci = LinuxCapabilities::default();
    oci.set_bounding(Some(granted.to_oci()));
    oci.set_effective(Some(granted.to_oci()));
    oci.set_permitted(Some(granted.to_oci()));
    if ambient.0 == 0 {
        oci.set_inheritable(None);
        oci.set_ambient(None);
    } else {
        oci.set_inheritable(Some(ambient.to_oci()));
        oci.set_ambient(Some(ambient.to_oci()));
    }
    Ok((granted, oci))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(add: &[&str], drop: &[&str]) -> api::Capability {
        api::Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            add_ambient_capabilities: vec![],
        }
    }

    fn names(set: CapabilitySet) -> Vec<String> {
        set.names()
    }

    /// This VM's runtime lacks CAP_SYS_RESOURCE (bit 24).
    const HOST: CapabilitySet = CapabilitySet(0x1fffeffffff);

    #[test]
    fn table_matches_kernel_numbers() {
        assert_eq!(
            parse_name("CAP_SYS_RESOURCE").unwrap(),
            CapabilitySet(1 << 24)
        );
        assert_eq!(
            parse_name("checkpoint_restore").unwrap(),
            CapabilitySet(1 << 40)
        );
        assert_eq!(parse_name("Net_Admin").unwrap(), CapabilitySet(1 << 12));
        assert_eq!(CapabilitySet::KNOWN.0, 0x1ffffffffff);
        assert!(matches!(
            parse_name("CAP_FLY"),
            Err(SpecError::UnknownCapability(name)) if name == "CAP_FLY"
        ));
    }

    #[test]
    fn default_set_is_containerds() {
        let set = CapabilitySet::container_default();
        assert_eq!(set.0.count_ones(), 14);
        assert!(set.contains(Capability::NetRaw));
        assert!(set.contains(Capability::AuditWrite));
        assert!(!set.contains(Capability::SysAdmin));
        assert!(!set.contains(Capability::NetAdmin));
    }

    #[test]
    fn add_and_drop_rules() {
        let default = CapabilitySet::container_default();
        let cases: Vec<(&str, Option<api::Capability>, bool, CapabilitySet)> = vec![
            ("no request", None, false, default),
            ("empty request", Some(request(&[], &[])), false, default),
            (
                "add with and without prefix",
                Some(request(&["NET_ADMIN", "cap_sys_time"], &[])),
                false,
                CapabilitySet(default.0 | 1 << 12 | 1 << 25),
            ),
            (
                "drop one",
                Some(request(&[], &["CHOWN"])),
                false,
                CapabilitySet(default.0 & !1),
            ),
            (
                "add ALL then drop one",
                Some(request(&["ALL"], &["CHOWN"])),
                false,
                CapabilitySet(HOST.0 & !1),
            ),
            (
                "drop ALL then add one",
                Some(request(&["NET_ADMIN"], &["all"])),
                false,
                CapabilitySet(1 << 12),
            ),
            (
                "drop ALL",
                Some(request(&[], &["ALL"])),
                false,
                CapabilitySet(0),
            ),
            (
                "privileged ignores drops",
                Some(request(&[], &["ALL"])),
                true,
                HOST,
            ),
        ];
        for (name, requested, privileged, expected) in cases {
            let (set, oci) = for_container(requested.as_ref(), privileged, HOST).unwrap();
            assert_eq!(names(set), names(expected), "{name}");
            assert_eq!(oci.bounding().as_ref(), Some(&expected.to_oci()), "{name}");
            assert_eq!(oci.effective().as_ref(), Some(&expected.to_oci()), "{name}");
            assert_eq!(oci.permitted().as_ref(), Some(&expected.to_oci()), "{name}");
            assert_eq!(oci.inheritable(), &None, "{name}");
            assert_eq!(oci.ambient(), &None, "{name}");
        }
    }

    #[test]
    fn refuses_unknown_and_unavailable_capabilities() {
        let unknown = for_container(Some(&request(&["WARP_DRIVE"], &[])), false, HOST);
        assert!(matches!(unknown, Err(SpecError::UnknownCapability(n)) if n == "WARP_DRIVE"));
        let unknown_drop = for_container(Some(&request(&[], &["WARP_DRIVE"])), false, HOST);
        assert!(matches!(unknown_drop, Err(SpecError::UnknownCapability(_))));
        let unavailable = for_container(Some(&request(&["SYS_RESOURCE"], &[])), false, HOST);
        assert!(matches!(
            unavailable,
            Err(SpecError::CapabilityUnavailable(n)) if n == "SYS_RESOURCE"
        ));
    }

    #[test]
    fn ambient_capabilities_are_also_permitted_and_inheritable() {
        let mut requested = request(&[], &["ALL"]);
        requested.add_ambient_capabilities = vec!["NET_BIND_SERVICE".into()];
        let (set, oci) = for_container(Some(&requested), false, HOST).unwrap();
        assert_eq!(set, CapabilitySet(1 << 10));
        assert_eq!(oci.ambient().as_ref(), Some(&set.to_oci()));
        assert_eq!(oci.inheritable().as_ref(), Some(&set.to_oci()));
    }
}
