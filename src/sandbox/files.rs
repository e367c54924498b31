//! The files a pod's containers share, kept in the sandbox's state
//! directory and bind-mounted into each container: `resolv.conf`, `hosts`,
//! `hostname` and the `/dev/shm` tmpfs.
//!
//! Every file is written atomically (a container started while the pod is
//! being set up never reads half a file) and made world-readable whatever
//! the daemon's umask, since containers may run as any user.

use std::fs::{self, Permissions};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::api::DnsConfig;
use crate::error::{Classify, IoError, Kind};
use crate::store::{write_atomic, StoreError};
use crate::sys;

pub const RESOLV_CONF_FILE: &str = "resolv.conf";
pub const HOSTS_FILE: &str = "hosts";
pub const HOSTNAME_FILE: &str = "hostname";
pub const SHM_DIR: &str = "shm";
/// containerd's and Docker's `/dev/shm` size when nothing else is asked.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
const HOST_HOSTS: &str = "/etc/hosts";
/// Linux's HOST_NAME_MAX.
const MAX_HOSTNAME_LEN: usize = 64;
/// Kubelet's limits since Kubernetes 1.28 (ExpandedDNSConfig); glibc
/// ≥ 2.26 and musl read that many.
const MAX_SEARCH_DOMAINS: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;
const MAX_DOMAIN_LEN: usize = 253;

#[derive(Debug, thiserror::Error)]
#[error("invalid hostname {hostname:?}: {reason}")]
pub struct InvalidHostname {
    pub hostname: String,
    pub reason: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("invalid DNS {field} {value:?}: {reason}")]
    InvalidDns {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(transparent)]
    InvalidHostname(#[from] InvalidHostname),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for FilesError {
    fn kind(&self) -> Kind {
        match self {
            FilesError::InvalidDns { .. } | FilesError::InvalidHostname(_) => Kind::InvalidArgument,
            FilesError::Io(_) | FilesError::Store(_) => Kind::Internal,
        }
    }
}

fn io_error<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FilesError + 'a {
    move |source| IoError::new(step, path, source).into()
}

/// Writes `<dir>/resolv.conf` from the pod's DNS config; without one (or
/// with an empty one) it is a copy of the host's, as containerd does.
pub fn write_resolv_conf(dir: &Path, dns: Option<&DnsConfig>) -> Result<PathBuf, FilesError> {
    let content = match dns.map(resolv_conf_content).transpose()?.flatten() {
        Some(content) => content.into_bytes(),
        None => read_host_file(HOST_RESOLV_CONF)?.unwrap_or_default(),
    };
    write_world_readable(&dir.join(RESOLV_CONF_FILE), &content)
}

/// containerd's layout: one `search` line, a `nameserver` line per server,
/// one `options` line. `None` when the config is empty.
fn resolv_conf_content(dns: &DnsConfig) -> Result<Option<String>, FilesError> {
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return Ok(None);
    }
    let mut content = String::new();
    if !dns.searches.is_empty() {
        validate_searches(&dns.searches)?;
        content.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        validate_nameserver(server)?;
        content.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        for option in &dns.options {
            validate_word("option", option, 256)?;
        }
        content.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(Some(content))
}

fn validate_searches(searches: &[String]) -> Result<(), FilesError> {
    let invalid = |value: String, reason| FilesError::InvalidDns {
        field: "search domains",
        value,
        reason,
    };
    if searches.len() > MAX_SEARCH_DOMAINS {
        return Err(invalid(searches.join(" "), "more than 32 domains"));
    }
    let total: usize = searches.iter().map(|s| s.len() + 1).sum();
    if total > MAX_SEARCH_CHARS {
        return Err(invalid(searches.join(" "), "longer than 2048 characters"));
    }
    searches
        .iter()
        .try_for_each(|domain| validate_word("search domain", domain, MAX_DOMAIN_LEN))
}

/// An IP address, with an optional `%zone` for a link-local IPv6 one.
fn validate_nameserver(server: &str) -> Result<(), FilesError> {
    let (address, zone) = match server.split_once('%') {
        Some((address, zone)) => (address, Some(zone)),
        None => (server, None),
    };
    let zone_ok = zone.is_none_or(|z| {
        !z.is_empty()
            && z.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    });
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) if zone_ok => Ok(()),
        Ok(IpAddr::V4(_)) if zone.is_none() => Ok(()),
        _ => Err(FilesError::InvalidDns {
            field: "server",
            value: server.to_string(),
            reason: "not an IP address",
        }),
    }
}

/// One whitespace-free token: anything else could start a new line or
/// smuggle another directive into the file.
fn validate_word(field: &'static str, value: &str, max_len: usize) -> Result<(), FilesError> {
    let reason = if value.is_empty() {
        "empty"
    } else if value.len() > max_len {
        "too long"
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "contains whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(FilesError::InvalidDns {
        field,
        value: value.to_string(),
        reason,
    })
}

/// Writes `<dir>/hosts`. A pod on the host network sees the host's file;
/// any other pod gets kubelet's managed content: the loopback names plus
/// each pod IP mapped to `hostname`.
pub fn write_hosts(
    dir: &Path,
    hostname: &str,
    ips: &[IpAddr],
    host_network: bool,
) -> Result<PathBuf, FilesError> {
    validate_hostname(hostname)?;
    let host_file = if host_network {
        read_host_file(HOST_HOSTS)?
    } else {
        None
    };
    let content = host_file.unwrap_or_else(|| managed_hosts(hostname, ips).into_bytes());
    write_world_readable(&dir.join(HOSTS_FILE), &content)
}

fn managed_hosts(hostname: &str, ips: &[IpAddr]) -> String {
    let mut content = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let mut seen = Vec::with_capacity(ips.len());
    for ip in ips {
        if !seen.contains(ip) {
            seen.push(*ip);
            content.push_str(&format!("{ip}\t{hostname}\n"));
        }
    }
    content
}

/// Writes `<dir>/hostname` as `<hostname>\n`.
pub fn write_hostname(dir: &Path, hostname: &str) -> Result<PathBuf, FilesError> {
    validate_hostname(hostname)?;
    write_world_readable(&dir.join(HOSTNAME_FILE), format!("{hostname}\n").as_bytes())
}

/// A host name the kernel accepts and resolvers agree with: dot-separated
/// RFC 1123 labels (letters, digits, inner hyphens), 64 bytes at most. A
/// pod's own name is one label; a host-network pod's may be the node's
/// fully qualified name.
pub fn validate_hostname(hostname: &str) -> Result<(), InvalidHostname> {
    let reason = if hostname.is_empty() {
        "empty"
    } else if hostname.len() > MAX_HOSTNAME_LEN {
        "longer than 64 bytes"
    } else if let Some(reason) = hostname.split('.').find_map(label_error) {
        reason
    } else {
        return Ok(());
    };
    Err(InvalidHostname {
        hostname: hostname.to_string(),
        reason,
    })
}

fn label_error(label: &str) -> Option<&'static str> {
    if label.is_empty() {
        Some("empty label")
    } else if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Some("only letters, digits, '-' and '.' are allowed")
    } else if label.starts_with('-') || label.ends_with('-') {
        Some("a label starts or ends with '-'")
    } else {
        None
    }
}

/// Mounts a fresh tmpfs on `<dir>/shm` for the pod's `/dev/shm`, sized
/// `size_bytes` (0: [`DEFAULT_SHM_SIZE`]), like containerd's. Already
/// mounted (a restarted daemon setting up again) is fine.
pub fn mount_shm(dir: &Path, size_bytes: u64) -> Result<PathBuf, FilesError> {
    let target = dir.join(SHM_DIR);
    match fs::DirBuilder::new().mode(0o700).create(&target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if sys::is_mount_point(&target).map_err(io_error("inspecting", &target))? {
                return Ok(target);
            }
        }
        Err(e) => return Err(io_error("creating", &target)(e)),
    }
    let size = if size_bytes == 0 {
        DEFAULT_SHM_SIZE
    } else {
        size_bytes
    };
    let options = format!("mode=1777,size={size}");
    mount(
        Some("shm"),
        &target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|errno| io_error("mounting tmpfs on", &target)(errno.into()))?;
    Ok(target)
}

/// Unmounts and removes `<dir>/shm`; nothing there is fine.
pub fn unmount_shm(dir: &Path) -> Result<(), FilesError> {
    let target = dir.join(SHM_DIR);
    sys::unmount_detached(&target).map_err(io_error("unmounting", &target))?;
    match fs::remove_dir(&target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("removing", &target)(e)),
        _ => Ok(()),
    }
}

/// The host's copy of a file, `None` when the host has none.
fn read_host_file(path: &str) -> Result<Option<Vec<u8>>, FilesError> {
    match fs::read(path) {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("reading", Path::new(path))(e)),
    }
}

fn write_world_readable(path: &Path, content: &[u8]) -> Result<PathBuf, FilesError> {
    write_atomic(path, content)?;
    // The temporary file got the daemon's umask.
    fs::set_permissions(path, Permissions::from_mode(0o644))
        .map_err(io_error("setting the mode of", path))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn dns(servers: &[&str], searches: &[&str], options: &[&str]) -> DnsConfig {
        let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        DnsConfig {
            servers: owned(servers),
            searches: owned(searches),
            options: owned(options),
        }
    }

    fn invalid_field(error: FilesError) -> &'static str {
        match error {
            FilesError::InvalidDns { field, .. } => field,
            other => panic!("expected InvalidDns, got {other:?}"),
        }
    }

    #[test]
    fn resolv_conf_follows_containerd_layout() {
        let config = dns(
            &["10.96.0.10", "fe80::1%eth0"],
            &["ns.svc.cluster.local", "svc.cluster.local"],
            &["ndots:5", "edns0"],
        );
        assert_eq!(
            resolv_conf_content(&config).unwrap().unwrap(),
            "search ns.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\n\
             nameserver fe80::1%eth0\n\
             options ndots:5 edns0\n"
        );
        assert_eq!(resolv_conf_content(&dns(&[], &[], &[])).unwrap(), None);
        assert_eq!(
            resolv_conf_content(&dns(&["8.8.8.8"], &[], &[]))
                .unwrap()
                .unwrap(),
            "nameserver 8.8.8.8\n"
        );
    }

    #[test]
    fn resolv_conf_rejects_injection_and_garbage() {
        let check = |config: DnsConfig| invalid_field(resolv_conf_content(&config).unwrap_err());
        assert_eq!(
            check(dns(&["10.0.0.1\nnameserver 6.6.6.6"], &[], &[])),
            "server"
        );
        assert_eq!(check(dns(&["dns.example.com"], &[], &[])), "server");
        assert_eq!(check(dns(&["10.0.0.1%eth0"], &[], &[])), "server");
        assert_eq!(check(dns(&["fe80::1%"], &[], &[])), "server");
        assert_eq!(check(dns(&[], &["a b"], &[])), "search domain");
        assert_eq!(check(dns(&[], &[""], &[])), "search domain");
        assert_eq!(check(dns(&[], &[], &["ndots:5\n"])), "option");
        let many: Vec<String> = (0..33).map(|i| format!("d{i}.example")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(check(dns(&[], &many, &[])), "search domains");
        let long = "a".repeat(250);
        let long: Vec<&str> = (0..9).map(|_| long.as_str()).collect();
        assert_eq!(check(dns(&[], &long, &[])), "search domains");
    }

    #[test]
    fn resolv_conf_written_from_config_or_copied_from_host() {
        let dir = tempfile::tempdir().unwrap();
        let config = dns(&["10.96.0.10"], &["cluster.local"], &[]);
        let path = write_resolv_conf(dir.path(), Some(&config)).unwrap();
        assert_eq!(path, dir.path().join("resolv.conf"));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "search cluster.local\nnameserver 10.96.0.10\n"
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);

        let host = fs::read(HOST_RESOLV_CONF).unwrap_or_default();
        write_resolv_conf(dir.path(), None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), host);
        write_resolv_conf(dir.path(), Some(&dns(&[], &[], &[]))).unwrap();
        assert_eq!(fs::read(&path).unwrap(), host);
    }

    #[test]
    fn hosts_for_pod_network_map_pod_ips_to_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let ips: Vec<IpAddr> = ["10.88.0.7", "fd00::7", "10.88.0.7"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let path = write_hosts(dir.path(), "pod-a", &ips, false).unwrap();
        let content = fs::read_to_string(path).unwrap();
        assert!(content.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(content.contains("::1\tlocalhost ip6-localhost ip6-loopback\n"));
        assert!(content.ends_with("fe00::2\tip6-allrouters\n10.88.0.7\tpod-a\nfd00::7\tpod-a\n"));
    }

    #[test]
    fn hosts_for_host_network_is_the_hosts_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_hosts(dir.path(), "node-1", &[], true).unwrap();
        if let Ok(host) = fs::read(HOST_HOSTS) {
            assert_eq!(fs::read(path).unwrap(), host);
        }
        assert!(write_hosts(dir.path(), "bad name", &[], true).is_err());
    }

    #[test]
    fn hostname_file_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_hostname(dir.path(), "pod-a").unwrap();
        assert_eq!(fs::read_to_string(path).unwrap(), "pod-a\n");

        for good in ["a", "pod-a", "node1.example.com", "A1", &"x".repeat(63)] {
            validate_hostname(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let too_long = format!("{}.{}", "a".repeat(32), "b".repeat(32));
        for bad in [
            "", "-a", "a-", "a..b", ".a", "a b", "a_b", "a\nb", "ä", &too_long,
        ] {
            assert!(validate_hostname(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            write_hostname(dir.path(), "a/../b").unwrap_err(),
            FilesError::InvalidHostname(_)
        ));
    }
}
