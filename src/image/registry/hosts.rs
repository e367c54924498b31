//! Registry endpoints, configured like containerd's `certs.d` (its
//! docs/hosts.md): `<config_path>/<host>/hosts.toml` lists mirrors as
//! `[host."URL"]` tables, tried in file order, then the `server`.
//!
//! The host directory is the first that exists of `<host>_<port>_` and
//! `<host>:<port>` (or just `<host>`), then `_default`. A directory without
//! `hosts.toml` may hold Docker-style `*.crt` CA files for the default server.
//! No directory at all means the default server alone: `https://<host>`,
//! except `docker.io` (`https://registry-1.docker.io`) and loopback hosts
//! (plain `http://`, the usual local test registry).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::endpoint::{
    parse_capabilities, Capabilities, ClientSettings, Endpoint, DEFAULT_CONNECT_TIMEOUT,
};
use super::RegistryError;
use crate::error::{IoError, IoResultExt};

const HOSTS_FILE: &str = "hosts.toml";
pub(super) const DEFAULT_NAMESPACE_DIR: &str = "_default";

/// Parsed `hosts.toml` files (and cert directories) per registry host,
/// reloaded when the file changes.
pub(crate) struct HostsCache {
    config_path: PathBuf,
    loaded: Mutex<HashMap<String, LoadedHosts>>,
}

struct LoadedHosts {
    file: PathBuf,
    modified: SystemTime,
    len: u64,
    endpoints: Arc<[Endpoint]>,
}

impl HostsCache {
    pub(crate) fn new(config_path: PathBuf) -> HostsCache {
        HostsCache {
            config_path,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoints for registry host `domain` (already validated), in the
    /// order to try them.
    pub(crate) fn endpoints(&self, domain: &str) -> Result<Arc<[Endpoint]>, RegistryError> {
        let Some(dir) = find_host_dir(&self.config_path, domain)? else {
            return Ok(vec![unconfigured_server(domain, Vec::new())?].into());
        };
        let file = dir.join(HOSTS_FILE);
        let metadata = match std::fs::metadata(&file) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return docker_cert_dir(&dir, domain).map(Into::into)
            }
            Err(source) => {
                return Err(RegistryError::ConfigIo(IoError::new(
                    "reading", file, source,
                )))
            }
        };
        let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let len = metadata.len();
        let cached = self.lock().get(domain).and_then(|loaded| {
            let unchanged = loaded.file == file && loaded.modified == modified && loaded.len == len;
            unchanged.then(|| loaded.endpoints.clone())
        });
        if let Some(endpoints) = cached {
            return Ok(endpoints);
        }
        let text = std::fs::read_to_string(&file)
            .at("reading", &file)
            .map_err(RegistryError::ConfigIo)?;
        let endpoints: Arc<[Endpoint]> = parse_hosts_file(&text, &file, domain)?.into();
        let count = endpoints.len();
        tracing::debug!(
            %domain,
            file = %file.display(),
            endpoints = count,
            "loaded registry hosts"
        );
        let loaded = LoadedHosts {
            file,
            modified,
            len,
            endpoints: endpoints.clone(),
        };
        self.lock().insert(domain.to_string(), loaded);
        Ok(endpoints)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LoadedHosts>> {
        // The map is only ever replaced whole-entry, so a panic elsewhere
        // cannot leave it half-updated.
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The directories that may configure `domain`, most specific first.
fn host_dir_candidates(config_path: &Path, domain: &str) -> Vec<PathBuf> {
    let mut names = Vec::new();
    // containerd's `host_port_` form exists for file systems without ':'.
    if let Some((host, port)) = domain
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
    {
        names.push(format!("{host}_{port}_"));
    }
    names.push(domain.to_string());
    names.push(DEFAULT_NAMESPACE_DIR.to_string());
    names
        .into_iter()
        .map(|name| config_path.join(name))
        .collect()
}

fn find_host_dir(config_path: &Path, domain: &str) -> Result<Option<PathBuf>, RegistryError> {
    for dir in host_dir_candidates(config_path, domain) {
        match std::fs::metadata(&dir) {
            Ok(metadata) if metadata.is_dir() => return Ok(Some(dir)),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(RegistryError::ConfigIo(IoError::new(
                    "reading", dir, source,
                )))
            }
        }
    }
    Ok(None)
}

/// A host directory without `hosts.toml`: Docker's layout, where `*.crt`
/// files are extra CAs for the default server.
fn docker_cert_dir(dir: &Path, domain: &str) -> Result<Vec<Endpoint>, RegistryError> {
    let entries = std::fs::read_dir(dir)
        .at("reading", dir)
        .map_err(RegistryError::ConfigIo)?;
    let mut ca_files = Vec::new();
    for entry in entries {
        let path = entry
            .at("reading", dir)
            .map_err(RegistryError::ConfigIo)?
            .path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => ca_files.push(path),
            Some("cert" | "key") => {
                let file = path.display();
                tracing::warn!(%file, "client certificates are not supported; ignoring")
            }
            _ => {}
        }
    }
    ca_files.sort();
    Ok(vec![unconfigured_server(domain, ca_files)?])
}

/// Keys shared by the top level (for `server`) and each `[host."URL"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EndpointFields {
    capabilities: Vec<String>,
    ca: Option<OneOrMany>,
    client: Option<toml::Value>,
    skip_verify: bool,
    header: BTreeMap<String, OneOrMany>,
    override_path: bool,
    dial_timeout: Option<String>,
    proxy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> &[String] {
        match self {
            OneOrMany::One(value) => std::slice::from_ref(value),
            OneOrMany::Many(values) => values,
        }
    }
}

#[derive(Debug, Deserialize)]
struct HostsFile {
    server: Option<String>,
    #[serde(flatten)]
    server_fields: EndpointFields,
    #[serde(default)]
    host: MirrorTables,
}

/// The `[host."URL"]` tables in file order, which is the order to try them.
/// toml's tables are sorted maps, but its deserializer visits keys in
/// document order, so a map visitor that keeps them in a Vec sees the order.
#[derive(Debug, Default)]
struct MirrorTables(Vec<(String, EndpointFields)>);

impl<'de> Deserialize<'de> for MirrorTables {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InFileOrder;
        impl<'de> Visitor<'de> for InFileOrder {
            type Value = MirrorTables;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("tables of host settings keyed by URL")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MirrorTables, A::Error> {
                let mut tables = Vec::new();
                while let Some(entry) = map.next_entry::<String, EndpointFields>()? {
                    tables.push(entry);
                }
                Ok(MirrorTables(tables))
            }
        }
        deserializer.deserialize_map(InFileOrder)
    }
}

/// The endpoints a `hosts.toml` lists for `domain`: mirrors in file order,
/// then the server (the default one when `server` is absent).
fn parse_hosts_file(text: &str, file: &Path, domain: &str) -> Result<Vec<Endpoint>, RegistryError> {
    let config_error = |reason: String| RegistryError::Config {
        path: file.to_path_buf(),
        reason,
    };
    let parsed: HostsFile =
        toml::from_str(text).map_err(|e| config_error(describe_toml_error(text, &e)))?;
    let host_dir = file.parent().unwrap_or(Path::new(""));
    let mut endpoints = Vec::with_capacity(parsed.host.0.len() + 1);
    for (url, fields) in &parsed.host.0 {
        let endpoint = configured_endpoint(url, fields, host_dir, domain)
            .map_err(|reason| config_error(format!("[host.{url:?}]: {reason}")))?;
        endpoints.push(endpoint);
    }
    let server = match &parsed.server {
        Some(url) => configured_endpoint(url, &parsed.server_fields, host_dir, domain)
            .map_err(|reason| config_error(format!("server {url:?}: {reason}")))?,
        None => {
            // Ignored for the default server, but a typo is still reported.
            parse_capabilities(&parsed.server_fields.capabilities).map_err(config_error)?;
            default_server(domain, &parsed.server_fields, host_dir).map_err(config_error)?
        }
    };
    endpoints.push(server);
    Ok(endpoints)
}

/// [`parse_hosts_file`] for a fuzzer or test outside the crate: the API
/// roots `text`, as the `hosts.toml` of registry host `domain` (validated
/// first, as [`super::Resolver::repository`] does), yields in order.
#[doc(hidden)]
pub fn parse_hosts_toml(text: &str, domain: &str) -> Result<Vec<String>, RegistryError> {
    super::endpoint::validate_domain(domain)?;
    let file = Path::new("/etc/wharf/certs.d")
        .join(domain)
        .join(HOSTS_FILE);
    let endpoints = parse_hosts_file(text, &file, domain)?;
    Ok(endpoints.into_iter().map(|e| e.api_root).collect())
}

/// `line L, column C: message` on one line (toml's own Display draws a
/// multi-line snippet, awkward in logs and gRPC statuses).
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let Some(before) = error.span().and_then(|span| text.get(..span.start)) else {
        return error.message().to_string();
    };
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    format!("line {line}, column {column}: {}", error.message())
}

/// The registry's own endpoint when no `server` is configured. Like
/// containerd, it keeps the file's TLS and header settings but is always
/// fully capable: restricting the upstream itself would make no sense.
fn default_server(
    domain: &str,
    fields: &EndpointFields,
    host_dir: &Path,
) -> Result<Endpoint, String> {
    let url = match domain {
        "docker.io" => "https://registry-1.docker.io".to_string(),
        _ if is_loopback(domain) => format!("http://{domain}"),
        _ => format!("https://{domain}"),
    };
    endpoint_at(
        &url,
        false,
        Capabilities::ALL,
        endpoint_settings(fields, host_dir)?,
        domain,
    )
}

/// The default server for a host without configuration, or with only
/// Docker-style CA files.
fn unconfigured_server(domain: &str, ca_files: Vec<PathBuf>) -> Result<Endpoint, RegistryError> {
    let mut endpoint = default_server(domain, &EndpointFields::default(), Path::new(""))
        // Unreachable for a validated domain, but not worth a panic.
        .map_err(|_| RegistryError::InvalidHost {
            domain: domain.to_string(),
            reason: "does not form a registry URL",
        })?;
    endpoint.client.ca_files = ca_files;
    Ok(endpoint)
}

fn is_loopback(domain: &str) -> bool {
    if let Ok(ip) = domain.parse::<IpAddr>() {
        return ip.is_loopback(); // a bare IPv6 address such as ::1
    }
    let host = match domain.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => domain,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An endpoint from a `hosts.toml` URL and its settings; errors are reasons
/// for a configuration error.
fn configured_endpoint(
    url: &str,
    fields: &EndpointFields,
    host_dir: &Path,
    domain: &str,
) -> Result<Endpoint, String> {
    let capabilities = parse_capabilities(&fields.capabilities)?;
    endpoint_at(
        url,
        fields.override_path,
        capabilities,
        endpoint_settings(fields, host_dir)?,
        domain,
    )
}

/// `url` may omit the scheme (https then).
fn endpoint_at(
    url: &str,
    override_path: bool,
    capabilities: Capabilities,
    settings: EndpointSettings,
    domain: &str,
) -> Result<Endpoint, String> {
    let with_scheme = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    let parsed = Url::parse(&with_scheme).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported scheme {:?} (http or https)",
            parsed.scheme()
        ));
    }
    let Some(host) = parsed.host_str() else {
        return Err("URL has no host".into());
    };
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err("URL may not have a query, fragment or user".into());
    }
    let authority = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let origin = parsed.origin().ascii_serialization();
    let mut path: String = parsed
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .flat_map(|s| ["/", s])
        .collect();
    // Without override_path the URL names the host (and maybe a prefix);
    // the API lives under /v2 as the distribution spec says.
    if !override_path && !path.ends_with("/v2") {
        path.push_str("/v2");
    }
    Ok(Endpoint {
        api_root: format!("{origin}{path}"),
        origin,
        capabilities,
        client: settings.client,
        headers: settings.headers,
        namespace: serves_other_host(&authority, domain).then(|| domain.to_string()),
    })
}

/// Whether an endpoint at `authority` serves content of registry `domain`
/// from elsewhere; Docker Hub's API host is Docker Hub itself.
fn serves_other_host(authority: &str, domain: &str) -> bool {
    authority != domain && !(domain == "docker.io" && authority == "registry-1.docker.io")
}

struct EndpointSettings {
    client: ClientSettings,
    headers: HeaderMap,
}

fn endpoint_settings(fields: &EndpointFields, host_dir: &Path) -> Result<EndpointSettings, String> {
    if fields.client.is_some() {
        let dir = host_dir.display();
        tracing::warn!(%dir, "hosts.toml: client certificates are not supported; ignoring");
    }
    let ca_files = fields
        .ca
        .iter()
        .flat_map(OneOrMany::values)
        .map(|p| host_dir.join(p))
        .collect();
    let connect_timeout = match &fields.dial_timeout {
        Some(text) => {
            parse_go_duration(text).ok_or_else(|| format!("invalid dial_timeout {text:?}"))?
        }
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    if let Some(proxy) = &fields.proxy {
        Url::parse(proxy).map_err(|e| format!("invalid proxy {proxy:?}: {e}"))?;
    }
    let mut headers = HeaderMap::new();
    for (name, values) in &fields.header {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        for value in values.values() {
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name}"))?;
            headers.append(name.clone(), value);
        }
    }
    let client = ClientSettings {
        skip_verify: fields.skip_verify,
        ca_files,
        connect_timeout,
        proxy: fields.proxy.clone(),
    };
    Ok(EndpointSettings { client, headers })
}

/// A Go duration as containerd's `dial_timeout` takes it: "1s", "500ms",
/// "1m30s", "1.5h" (units ns, us, µs, ms, s, m, h).
fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut seconds = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        seconds += number * unit;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::registry::endpoint::Operation;

    fn parse(text: &str, domain: &str) -> Vec<Endpoint> {
        parse_hosts_file(text, Path::new("/etc/wharf/certs.d/x/hosts.toml"), domain).unwrap()
    }

    fn roots(endpoints: &[Endpoint]) -> Vec<&str> {
        endpoints.iter().map(|e| e.api_root.as_str()).collect()
    }

    #[test]
    fn mirrors_keep_file_order_and_server_comes_last() {
        let endpoints = parse(
            r#"
server = "https://registry-1.docker.io"
[host."https://zz-mirror.example"]
  capabilities = ["pull"]
[host."http://aa-mirror.example:5000/prefix/"]
  capabilities = ["pull", "resolve"]
  [host."http://aa-mirror.example:5000/prefix/".header]
    x-one = "1"
    x-many = ["a", "b"]
[host."mm-mirror.example"]
"#,
            "docker.io",
        );
        assert_eq!(
            roots(&endpoints),
            [
                "https://zz-mirror.example/v2",
                "http://aa-mirror.example:5000/prefix/v2",
                "https://mm-mirror.example/v2",
                "https://registry-1.docker.io/v2",
            ]
        );
        assert_eq!(
            endpoints[0].capabilities,
            Capabilities {
                pull: true,
                resolve: false,
            }
        );
        assert!(endpoints[1].capabilities.resolve && endpoints[1].capabilities.pull);
        assert_eq!(endpoints[2].capabilities, Capabilities::ALL);
        let many: Vec<_> = endpoints[1].headers.get_all("x-many").iter().collect();
        assert_eq!(many, ["a", "b"]);
        assert_eq!(endpoints[1].headers["x-one"], "1");
        assert_eq!(endpoints[0].namespace.as_deref(), Some("docker.io"));
        assert_eq!(
            endpoints[3].namespace, None,
            "registry-1.docker.io is docker.io itself"
        );
    }

    #[test]
    fn capabilities_gate_operations() {
        let endpoints = parse(
            r#"
server = "https://upstream.example"
capabilities = ["resolve"]
[host."https://public-mirror.example"]
  capabilities = ["pull"]
"#,
            "upstream.example",
        );
        let can = |op| {
            endpoints
                .iter()
                .filter(|e| e.capabilities.allow(op))
                .map(|e| e.api_root.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(can(Operation::Resolve), ["https://upstream.example/v2"]);
        assert_eq!(can(Operation::Pull), ["https://public-mirror.example/v2"]);
        let bad = parse_hosts_file(
            "capabilities = [\"fly\"]",
            Path::new("/x/hosts.toml"),
            "a.example",
        );
        assert!(matches!(bad, Err(RegistryError::Config { .. })));
    }

    #[test]
    fn tls_and_path_settings() {
        let endpoints = parse(
            r#"
server = "https://registry.example:8443"
ca = "registry.crt"
skip_verify = true
dial_timeout = "1m30s"
[host."https://mirror.example/v2/upstream"]
  override_path = true
  ca = ["/abs/a.pem", "rel/b.pem"]
  client = "/etc/certs/client.pem"
[host."https://prefixed.example/proxy"]
"#,
            "registry.example:8443",
        );
        assert_eq!(
            roots(&endpoints),
            [
                "https://mirror.example/v2/upstream",
                "https://prefixed.example/proxy/v2",
                "https://registry.example:8443/v2"
            ]
        );
        assert_eq!(
            endpoints[0].client.ca_files,
            [
                PathBuf::from("/abs/a.pem"),
                "/etc/wharf/certs.d/x/rel/b.pem".into()
            ]
        );
        assert!(!endpoints[0].client.skip_verify);
        let server = &endpoints[2];
        assert!(server.client.skip_verify);
        assert_eq!(
            server.client.ca_files,
            [PathBuf::from("/etc/wharf/certs.d/x/registry.crt")]
        );
        assert_eq!(server.client.connect_timeout, Duration::from_secs(90));
        assert_eq!(server.namespace, None);
        assert_eq!(server.origin, "https://registry.example:8443");
    }

    #[test]
    fn missing_server_means_the_default_one_with_file_settings() {
        let endpoints = parse(
            "capabilities = [\"pull\"]\nskip_verify = true\n[host.\"https://m.example\"]\n",
            "quay.io",
        );
        assert_eq!(
            roots(&endpoints),
            ["https://m.example/v2", "https://quay.io/v2"]
        );
        assert_eq!(endpoints[1].capabilities, Capabilities::ALL);
        assert!(endpoints[1].client.skip_verify);
    }

    #[test]
    fn default_endpoints_per_host_kind() {
        let root = |domain| {
            default_server(domain, &EndpointFields::default(), Path::new(""))
                .unwrap()
                .api_root
        };
        assert_eq!(root("docker.io"), "https://registry-1.docker.io/v2");
        assert_eq!(root("registry.k8s.io"), "https://registry.k8s.io/v2");
        assert_eq!(
            root("registry.example:5000"),
            "https://registry.example:5000/v2"
        );
        assert_eq!(root("localhost:5000"), "http://localhost:5000/v2");
        assert_eq!(root("localhost"), "http://localhost/v2");
        assert_eq!(root("127.0.0.1:5000"), "http://127.0.0.1:5000/v2");
        assert_eq!(root("[::1]:5000"), "http://[::1]:5000/v2");
        assert_eq!(root("10.0.0.1:5000"), "https://10.0.0.1:5000/v2");
    }

    #[test]
    fn host_directories_are_tried_in_containerd_order() {
        let config = tempfile::tempdir().unwrap();
        let cache = HostsCache::new(config.path().to_path_buf());
        // No directory at all: the default server.
        assert_eq!(
            roots(&cache.endpoints("registry.example:5000").unwrap()),
            ["https://registry.example:5000/v2"]
        );

        let write = |dir: &str, text: &str| {
            std::fs::create_dir_all(config.path().join(dir)).unwrap();
            std::fs::write(config.path().join(dir).join(HOSTS_FILE), text).unwrap();
        };
        write("_default", "[host.\"https://everything.example\"]\n");
        assert_eq!(
            roots(&cache.endpoints("registry.example:5000").unwrap()),
            [
                "https://everything.example/v2",
                "https://registry.example:5000/v2"
            ]
        );
        write(
            "registry.example:5000",
            "server = \"https://colon.example\"\n",
        );
        assert_eq!(
            roots(&cache.endpoints("registry.example:5000").unwrap()),
            ["https://colon.example/v2"]
        );
        write(
            "registry.example_5000_",
            "server = \"https://underscore.example\"\n",
        );
        assert_eq!(
            roots(&cache.endpoints("registry.example:5000").unwrap()),
            ["https://underscore.example/v2"]
        );
    }

    #[test]
    fn edits_are_picked_up() {
        let config = tempfile::tempdir().unwrap();
        let dir = config.path().join("r.example");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(HOSTS_FILE), "server = \"https://one.example\"\n").unwrap();
        let cache = HostsCache::new(config.path().to_path_buf());
        assert_eq!(
            roots(&cache.endpoints("r.example").unwrap()),
            ["https://one.example/v2"]
        );
        // A different length changes the cache key even within one mtime tick.
        std::fs::write(
            dir.join(HOSTS_FILE),
            "server = \"https://second.example\"\n",
        )
        .unwrap();
        assert_eq!(
            roots(&cache.endpoints("r.example").unwrap()),
            ["https://second.example/v2"]
        );
    }

    #[test]
    fn docker_cert_directories_add_cas_to_the_default_server() {
        let config = tempfile::tempdir().unwrap();
        let dir = config.path().join("r.example");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), "").unwrap();
        std::fs::write(dir.join("client.cert"), "").unwrap();
        let endpoints = HostsCache::new(config.path().to_path_buf())
            .endpoints("r.example")
            .unwrap();
        assert_eq!(roots(&endpoints), ["https://r.example/v2"]);
        assert_eq!(endpoints[0].client.ca_files, [dir.join("ca.crt")]);
    }

    #[test]
    fn invalid_files_are_configuration_errors() {
        for text in [
            "server = 3",
            "[host.\"ftp://m.example\"]",
            "[host.\"https://m.example\"]\nheader = { \"bad name\" = \"v\" }",
            "dial_timeout = \"soon\"",
            "[host.\"https://m.example?x=1\"]",
        ] {
            let result = parse_hosts_file(text, Path::new("/x/hosts.toml"), "a.example");
            assert!(
                matches!(result, Err(RegistryError::Config { .. })),
                "{text}: {result:?}"
            );
        }
    }

    #[test]
    fn toml_errors_fit_on_one_line() {
        let error = parse_hosts_file(
            "# comment\nserver = 5\n",
            Path::new("/x/hosts.toml"),
            "a.example",
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(
                "registry configuration /x/hosts.toml: line 2, column 10: invalid type"
            ),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "5", "s", "1d", "-1s", "1.2.3s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }
}
