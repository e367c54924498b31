//! Pod sysctls: validated against the namespaces the pod has of its own,
//! then written from inside them.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;

use super::{NamespaceError, NamespaceKind};

const MAX_SYSCTL_NAME_LEN: usize = 255;
const MAX_SYSCTL_VALUE_LEN: usize = 4096;

/// A validated sysctl, ready to be written from inside the namespaces.
pub(super) struct Sysctl<'a> {
    pub(super) name: &'a str,
    pub(super) value: &'a str,
    /// Under /proc/sys.
    pub(super) path: PathBuf,
}

impl<'a> Sysctl<'a> {
    /// Checks the name's form and that it belongs to one of `kinds`.
    /// Kubernetes' forms: `net.ipv4.ip_forward`, or `net/ipv4/ip_forward`
    /// where a `.` is part of a component (`net/ipv4/conf/eth0.100/...`);
    /// in the dotted form a `/` stands for such a `.`.
    pub(super) fn parse(
        name: &'a str,
        value: &'a str,
        kinds: &[NamespaceKind],
    ) -> Result<Self, NamespaceError> {
        let invalid = |reason| NamespaceError::InvalidSysctl {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() || name.len() > MAX_SYSCTL_NAME_LEN {
            return Err(invalid("empty or too long"));
        }
        let dotted = name
            .find(['.', '/'])
            .is_none_or(|i| name.as_bytes()[i] == b'.');
        let (separator, literal_dot) = if dotted { ('.', '/') } else { ('/', '.') };
        let components: Vec<String> = name
            .split(separator)
            .map(|c| c.replace(literal_dot, "."))
            .collect();
        for component in &components {
            if component.is_empty() || component == "." || component == ".." {
                return Err(invalid("empty, '.' or '..' component"));
            }
            if !component
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'))
            {
                return Err(invalid(
                    "only lowercase letters, digits, '_', '-' and separators are allowed",
                ));
            }
        }
        match sysctl_namespace(&components) {
            None => {
                return Err(NamespaceError::SysctlNotNamespaced {
                    name: name.to_string(),
                })
            }
            Some(kind) if !kinds.contains(&kind) => {
                return Err(NamespaceError::SysctlNeedsNamespace {
                    name: name.to_string(),
                    kind,
                })
            }
            Some(_) => {}
        }
        let value_ok = !value.is_empty()
            && value.len() <= MAX_SYSCTL_VALUE_LEN
            && !value.chars().any(|c| c.is_control() && c != '\t');
        if !value_ok {
            return Err(invalid("the value is empty, too long or not one line"));
        }
        let path = components
            .iter()
            .fold(PathBuf::from("/proc/sys"), |p, c| p.join(c));
        Ok(Sysctl { name, value, path })
    }

    /// Must run on the thread that created the namespaces: /proc/sys shows
    /// the net and IPC sysctls of the namespaces of the thread that looks
    /// them up, whatever the procfs mount.
    pub(super) fn write(&self) -> Result<(), NamespaceError> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    NamespaceError::UnknownSysctl {
                        name: self.name.to_string(),
                    }
                } else {
                    self.rejected(e)
                }
            })?;
        // A sysctl takes its value in one write.
        match file.write(self.value.as_bytes()) {
            Ok(n) if n == self.value.len() => Ok(()),
            Ok(_) => Err(self.rejected(io::Error::new(io::ErrorKind::WriteZero, "short write"))),
            Err(e) => Err(self.rejected(e)),
        }
    }

    fn rejected(&self, source: io::Error) -> NamespaceError {
        NamespaceError::SysctlRejected {
            name: self.name.to_string(),
            value: self.value.to_string(),
            source,
        }
    }
}

/// The namespace a sysctl belongs to, as runc's validator sees it.
fn sysctl_namespace(components: &[String]) -> Option<NamespaceKind> {
    let parts: Vec<&str> = components.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["net", _, ..] => Some(NamespaceKind::Net),
        ["fs", "mqueue", _, ..] => Some(NamespaceKind::Ipc),
        ["kernel", "sem" | "shmall" | "shmmax" | "shmmni" | "shm_rmid_forced"] => {
            Some(NamespaceKind::Ipc)
        }
        ["kernel", "msgmax" | "msgmnb" | "msgmni"] => Some(NamespaceKind::Ipc),
        ["kernel", "hostname" | "domainname"] => Some(NamespaceKind::Uts),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, Kind};
    use std::path::Path;

    fn parse(name: &str, kinds: &[NamespaceKind]) -> Result<PathBuf, NamespaceError> {
        Sysctl::parse(name, "1", kinds).map(|s| s.path)
    }

    const ALL: &[NamespaceKind] = &NamespaceKind::ALL;

    #[test]
    fn sysctl_names_map_to_proc_sys_paths() {
        for (name, path) in [
            ("net.ipv4.ip_forward", "net/ipv4/ip_forward"),
            ("net/ipv4/ip_forward", "net/ipv4/ip_forward"),
            (
                "net.ipv4.conf.eth0/100.rp_filter",
                "net/ipv4/conf/eth0.100/rp_filter",
            ),
            (
                "net/ipv4/conf/eth0.100/rp_filter",
                "net/ipv4/conf/eth0.100/rp_filter",
            ),
            ("kernel.shmmni", "kernel/shmmni"),
            ("fs.mqueue.msg_max", "fs/mqueue/msg_max"),
            ("kernel.domainname", "kernel/domainname"),
        ] {
            assert_eq!(parse(name, ALL).unwrap(), Path::new("/proc/sys").join(path));
        }
    }

    #[test]
    fn sysctl_names_cannot_escape_proc_sys() {
        for name in [
            "",
            "net..ipv4",
            "net/../../etc/passwd",
            "net/ipv4/..",
            ".net.x",
            "net.x.",
            "net.IPv4.x",
            "net.ipv4.a b",
            "net.ipv4.x\n",
        ] {
            assert!(
                matches!(parse(name, ALL), Err(NamespaceError::InvalidSysctl { .. })),
                "{name:?} accepted"
            );
        }
    }

    #[test]
    fn sysctls_that_would_change_the_host_are_refused() {
        let no_net = &[NamespaceKind::Ipc, NamespaceKind::Uts];
        assert!(matches!(
            parse("net.ipv4.ip_forward", no_net),
            Err(NamespaceError::SysctlNeedsNamespace {
                kind: NamespaceKind::Net,
                ..
            })
        ));
        assert!(matches!(
            parse("kernel.shmmax", &[NamespaceKind::Net]),
            Err(NamespaceError::SysctlNeedsNamespace {
                kind: NamespaceKind::Ipc,
                ..
            })
        ));
        for name in [
            "kernel.pid_max",
            "vm.overcommit_memory",
            "fs.file-max",
            "net",
            "fs.mqueue",
            "kernel.sem.x",
        ] {
            assert!(
                matches!(
                    parse(name, ALL),
                    Err(NamespaceError::SysctlNotNamespaced { .. })
                ),
                "{name} accepted"
            );
        }
        let error = parse("net.core.somaxconn", &[]).unwrap_err();
        assert_eq!(error.kind(), Kind::InvalidArgument);
    }

    #[test]
    fn sysctl_values_are_one_line() {
        for value in ["", "1\n2", "1\r"] {
            assert!(
                Sysctl::parse("net.ipv4.ip_forward", value, ALL).is_err(),
                "{value:?}"
            );
        }
        assert!(Sysctl::parse("net.ipv4.ping_group_range", "0\t2147483647", ALL).is_ok());
    }
}
