//! The registry client against real `docker-registry` processes on
//! 127.0.0.1, plus tiny in-test HTTP servers where a fault has to be
//! injected (corrupt content, a bearer token server, a redirecting registry)
//! that a well-behaved registry will not produce.
//!
//! Needs `docker-registry` and `htpasswd` (Debian: docker-registry,
//! apache2-utils) on PATH.

use std::fs;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wharf::error::{Classify, Kind};
use wharf::image::digest::Digest;
use wharf::image::registry::{Credentials, RegistryConfig, RegistryError, Repository, Resolver};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

// ---------------------------------------------------------------- helpers

/// A `docker-registry serve` child with its own state directory, killed
/// when dropped.
struct RegistryProcess {
    addr: String,
    child: Child,
    state: tempfile::TempDir,
}

impl RegistryProcess {
    fn start(basic_auth: Option<(&str, &str)>) -> RegistryProcess {
        let state = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut auth = String::new();
        if let Some((user, password)) = basic_auth {
            // The registry only accepts bcrypt entries.
            let output = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd on PATH");
            assert!(output.status.success(), "htpasswd failed");
            fs::write(state.path().join("htpasswd"), output.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: wharf-test\n    path: {}\n",
                state.path().join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{auth}",
            state.path().join("storage").display()
        );
        fs::write(state.path().join("config.yml"), config).unwrap();
        let log = fs::File::create(state.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(state.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry on PATH");
        let mut registry = RegistryProcess { addr, child, state };
        registry.wait_until_listening();
        registry
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.state.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on (now): for dead endpoints and new registries.
fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny image: one config and one (fake) layer blob.
struct TestImage {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

impl TestImage {
    fn new(seed: &str) -> TestImage {
        let layer = format!("layer bytes of {seed}\n").repeat(100).into_bytes();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer)]},
        });
        let config = serde_json::to_vec(&config).unwrap();
        let descriptor = |media_type: &str, blob: &[u8]| {
            let (digest, size) = (Digest::of(blob), blob.len());
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        TestImage {
            config,
            layer,
            manifest,
        }
    }

    fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }

    /// Pushes blobs and the manifest under `tag` with the plain HTTP API.
    async fn push(&self, addr: &str, repository: &str, tag: &str, auth: Option<(&str, &str)>) {
        let client = reqwest::Client::new();
        let authorize = |request: reqwest::RequestBuilder| match auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        };
        for blob in [&self.config, &self.layer] {
            let start =
                authorize(client.post(format!("http://{addr}/v2/{repository}/blobs/uploads/")));
            let started = start.send().await.unwrap();
            assert_eq!(started.status(), 202, "starting an upload");
            let location = started.headers()["location"].to_str().unwrap();
            let mut upload = reqwest::Url::parse(&format!("http://{addr}/"))
                .unwrap()
                .join(location)
                .unwrap();
            upload
                .query_pairs_mut()
                .append_pair("digest", &Digest::of(blob).to_string());
            let put = authorize(client.put(upload).body(blob.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(put.status(), 201, "finishing an upload");
        }
        let put = authorize(client.put(format!("http://{addr}/v2/{repository}/manifests/{tag}")))
            .header("content-type", OCI_MANIFEST)
            .body(self.manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            put.status(),
            201,
            "pushing the manifest: {}",
            put.text().await.unwrap_or_default()
        );
    }
}

/// A certs.d directory with the given `hosts.toml` files, and a resolver on it.
fn resolver_with_hosts(files: &[(&str, String)]) -> (Resolver, tempfile::TempDir) {
    let config = tempfile::tempdir().unwrap();
    for (host, text) in files {
        fs::create_dir_all(config.path().join(host)).unwrap();
        fs::write(config.path().join(host).join("hosts.toml"), text).unwrap();
    }
    let resolver = Resolver::new(RegistryConfig {
        config_path: config.path().to_path_buf(),
        request_timeout: Duration::from_secs(10),
    });
    (resolver, config)
}

async fn collect_blob(
    repository: &Repository,
    digest: &Digest,
    size: u64,
) -> Result<Vec<u8>, RegistryError> {
    let mut stream = repository.fetch_blob(digest, size).await?;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk?);
    }
    Ok(body)
}

fn kind_of<T>(result: Result<T, RegistryError>) -> (Kind, RegistryError) {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(error) => (error.kind(), error),
    }
}

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Without Content-Length the body ends when the connection closes.
    content_length: bool,
}

impl Reply {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            content_length: true,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A one-request-per-connection HTTP/1.1 server answering with `handler`,
/// recording what it saw. Stops with the test's runtime.
struct FakeServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeServer {
    async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (handler, record) = (handler.clone(), record.clone());
                tokio::spawn(async move {
                    if let Some(request) = read_request(stream).await {
                        let (request, mut stream) = request;
                        record.lock().unwrap().push(request.clone());
                        let _ = write_reply(&mut stream, handler(&request)).await;
                    }
                });
            }
        });
        FakeServer { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_request(mut stream: TcpStream) -> Option<(Seen, TcpStream)> {
    let mut buffer = Vec::new();
    let header_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 || buffer.len() > 1 << 20 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target) = (
        request_line.next()?.to_string(),
        request_line.next()?.to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[header_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some((
        Seen {
            method,
            target,
            headers,
            body,
        },
        stream,
    ))
}

async fn write_reply(stream: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} Fake\r\nConnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.content_length {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&reply.body).await?;
    stream.shutdown().await
}

/// The query parameters of a request target, decoded.
fn query(target: &str) -> Vec<(String, String)> {
    let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    query(&format!("/?{}", String::from_utf8_lossy(body)))
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn fetches_manifests_and_blobs_from_a_registry() {
    let registry = RegistryProcess::start(None);
    let image = TestImage::new("plain");
    image.push(&registry.addr, "test/app", "v1", None).await;
    let (resolver, _config) = resolver_with_hosts(&[]);
    let repository = resolver
        .repository(&registry.addr, "test/app", Credentials::None)
        .unwrap();

    let by_tag = repository.fetch_manifest("v1").await.unwrap();
    assert_eq!(by_tag.digest, image.manifest_digest());
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    assert_eq!(by_tag.bytes, image.manifest);
    let by_digest = repository
        .fetch_manifest(&image.manifest_digest().to_string())
        .await
        .unwrap();
    assert_eq!(by_digest.bytes, image.manifest);

    let config = repository
        .fetch_small_blob(&Digest::of(&image.config), 1 << 20)
        .await
        .unwrap();
    assert_eq!(config, Bytes::from(image.config.clone()));
    let (kind, error) = kind_of(
        repository
            .fetch_small_blob(&Digest::of(&image.config), 10)
            .await,
    );
    assert!(
        matches!(error, RegistryError::TooLarge { limit: 10, .. }),
        "{error}"
    );
    assert_eq!(kind, Kind::Unavailable);

    let layer_digest = Digest::of(&image.layer);
    let stream = repository
        .fetch_blob(&layer_digest, image.layer.len() as u64)
        .await
        .unwrap();
    assert_eq!(stream.endpoint(), format!("http://{}/v2", registry.addr));
    drop(stream);
    assert_eq!(
        collect_blob(&repository, &layer_digest, image.layer.len() as u64)
            .await
            .unwrap(),
        image.layer
    );
    let (kind, error) = kind_of(
        repository
            .fetch_blob(&layer_digest, image.layer.len() as u64 + 1)
            .await,
    );
    assert!(
        matches!(error, RegistryError::SizeMismatch { .. }),
        "{error}"
    );
    assert_eq!(kind, Kind::Unavailable);

    assert_eq!(
        kind_of(repository.fetch_manifest("nope").await).0,
        Kind::NotFound
    );
    assert_eq!(
        kind_of(repository.fetch_blob(&Digest::of(b"nope"), 4).await).0,
        Kind::NotFound
    );
    let unknown = resolver
        .repository(&registry.addr, "test/unknown", Credentials::None)
        .unwrap();
    let (kind, error) = kind_of(unknown.fetch_manifest("v1").await);
    assert_eq!(kind, Kind::NotFound, "{error}");
    assert_eq!(
        kind_of(repository.fetch_manifest("bad/tag").await).0,
        Kind::InvalidArgument
    );
}

#[tokio::test]
async fn fetches_through_a_mirror_configured_for_a_made_up_host() {
    let registry = RegistryProcess::start(None);
    let image = TestImage::new("mirrored");
    image.push(&registry.addr, "test/app", "v1", None).await;
    let hosts = format!(
        "server = \"http://127.0.0.1:{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        free_port(),
        registry.addr
    );
    let (resolver, _config) = resolver_with_hosts(&[("mirror.test", hosts)]);
    let repository = resolver
        .repository("mirror.test", "test/app", Credentials::None)
        .unwrap();

    let manifest = repository.fetch_manifest("v1").await.unwrap();
    assert_eq!(manifest.digest, image.manifest_digest());
    let layer = collect_blob(
        &repository,
        &Digest::of(&image.layer),
        image.layer.len() as u64,
    )
    .await
    .unwrap();
    assert_eq!(layer, image.layer);
}

#[tokio::test]
async fn falls_back_past_dead_failing_and_corrupt_endpoints() {
    let registry = RegistryProcess::start(None);
    let image = TestImage::new("fallback");
    image.push(&registry.addr, "test/app", "v1", None).await;
    let unavailable = FakeServer::start(|_| Reply::new(503, "overloaded")).await;
    let corrupt = FakeServer::start(|_| {
        Reply::new(200, "not what you asked for").header("content-type", OCI_MANIFEST)
    })
    .await;
    let hosts = format!(
        "server = \"http://{}\"\n[host.\"http://127.0.0.1:{}\"]\n[host.\"{}\"]\n[host.\"{}\"]\n",
        registry.addr,
        free_port(),
        unavailable.url(),
        corrupt.url()
    );
    let (resolver, _config) = resolver_with_hosts(&[("fallback.test", hosts)]);
    let repository = resolver
        .repository("fallback.test", "test/app", Credentials::None)
        .unwrap();

    let manifest = repository
        .fetch_manifest(&image.manifest_digest().to_string())
        .await
        .unwrap();
    assert_eq!(manifest.bytes, image.manifest);
    let layer = collect_blob(
        &repository,
        &Digest::of(&image.layer),
        image.layer.len() as u64,
    )
    .await
    .unwrap();
    assert_eq!(layer, image.layer);
    assert!(unavailable
        .seen()
        .iter()
        .all(|seen| seen.target.ends_with("?ns=fallback.test")));
    assert_eq!(
        corrupt.seen().len(),
        2,
        "the corrupt mirror was asked for the manifest and the layer"
    );

    // With nothing behind it, a dead endpoint is reported as unavailable.
    let dead = format!("server = \"http://127.0.0.1:{}\"\n", free_port());
    let (resolver, _config) = resolver_with_hosts(&[("dead.test", dead)]);
    let repository = resolver
        .repository("dead.test", "test/app", Credentials::None)
        .unwrap();
    let (kind, error) = kind_of(repository.fetch_manifest("v1").await);
    assert_eq!(kind, Kind::Unavailable, "{}", wharf::error::chain(&error));
}

/// A registry that rate-limits (429 with Retry-After): the next host is
/// tried; with none left the pull is UNAVAILABLE (kubelet retries with its
/// back-off) and says when the registry asked to be retried.
#[tokio::test]
async fn rate_limited_hosts_are_passed_and_reported_with_retry_after() {
    let registry = RegistryProcess::start(None);
    let image = TestImage::new("limited");
    image.push(&registry.addr, "test/app", "v1", None).await;
    let limited =
        FakeServer::start(|_| Reply::new(429, "slow down").header("retry-after", "120")).await;
    let hosts = format!(
        "server = \"http://{}\"\n[host.\"{}\"]\n",
        registry.addr,
        limited.url()
    );
    let (resolver, _config) = resolver_with_hosts(&[("limited.test", hosts)]);
    let repository = resolver
        .repository("limited.test", "test/app", Credentials::None)
        .unwrap();
    let manifest = repository.fetch_manifest("v1").await.unwrap();
    assert_eq!(manifest.digest, image.manifest_digest());
    assert!(!limited.seen().is_empty(), "the mirror was asked first");

    let only = format!("server = \"{}\"\n", limited.url());
    let (resolver, _config) = resolver_with_hosts(&[("only-limited.test", only)]);
    let repository = resolver
        .repository("only-limited.test", "test/app", Credentials::None)
        .unwrap();
    let (kind, error) = kind_of(repository.fetch_manifest("v1").await);
    let message = wharf::error::chain(&error);
    assert_eq!(kind, Kind::Unavailable, "{message}");
    assert!(
        message.contains("rate limiting (429), retry after 120"),
        "{message}"
    );
}

#[tokio::test]
async fn basic_auth_against_an_htpasswd_registry() {
    let registry = RegistryProcess::start(Some(("wharf", "s3cret")));
    let image = TestImage::new("private");
    image
        .push(
            &registry.addr,
            "test/private",
            "v1",
            Some(("wharf", "s3cret")),
        )
        .await;
    let (resolver, _config) = resolver_with_hosts(&[]);
    // base64("wharf:s3cret"), as the kubelet passes a docker config's `auth`.
    let good = Credentials::from_cri("", "", "d2hhcmY6czNjcmV0", "", "").unwrap();

    let repository = resolver
        .repository(&registry.addr, "test/private", good.clone())
        .unwrap();
    assert_eq!(
        repository.fetch_manifest("v1").await.unwrap().digest,
        image.manifest_digest()
    );
    let layer = collect_blob(
        &repository,
        &Digest::of(&image.layer),
        image.layer.len() as u64,
    )
    .await
    .unwrap();
    assert_eq!(layer, image.layer);

    let wrong = Credentials::Basic {
        username: "wharf".into(),
        password: "guess".into(),
    };
    for credentials in [wrong, Credentials::None] {
        let repository = resolver
            .repository(&registry.addr, "test/private", credentials.clone())
            .unwrap();
        let (kind, error) = kind_of(repository.fetch_manifest("v1").await);
        assert!(
            matches!(error, RegistryError::Unauthorized { status: 401, .. }),
            "{credentials:?}: {error}"
        );
        assert_eq!(kind, Kind::FailedPrecondition);
    }

    // A fresh resolver (nothing learnt yet) with good credentials still works.
    let (resolver, _config) = resolver_with_hosts(&[]);
    let repository = resolver
        .repository(&registry.addr, "test/private", good)
        .unwrap();
    assert_eq!(
        repository.fetch_manifest("v1").await.unwrap().digest,
        image.manifest_digest()
    );
}

#[tokio::test]
async fn bearer_token_flow_with_caching_and_redirected_blobs() {
    let image = TestImage::new("bearer");
    let token_server = FakeServer::start(|seen| {
        let params = if seen.method == "POST" {
            form(&seen.body)
        } else {
            query(&seen.target)
        };
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if param("scope") != Some("repository:test/app:pull")
            || param("service") != Some("fake-registry")
        {
            return Reply::new(400, "bad scope or service");
        }
        let basic_ok = seen.header("authorization") == Some("Basic d2hhcmY6czNjcmV0");
        let refresh_ok = param("grant_type") == Some("refresh_token")
            && param("refresh_token") == Some("refresh-123");
        match (seen.method.as_str(), basic_ok, refresh_ok) {
            ("GET", true, _) => Reply::new(200, r#"{"token":"tok-basic","expires_in":300}"#),
            ("POST", _, true) => {
                Reply::new(200, r#"{"access_token":"tok-oauth","expires_in":300}"#)
            }
            _ => Reply::new(401, r#"{"details":"incorrect username or password"}"#),
        }
    })
    .await;
    let storage_body = image.layer.clone();
    let storage = FakeServer::start(move |_| Reply::new(200, storage_body.clone())).await;

    let challenge = format!(
        r#"Bearer realm="{}/token",service="fake-registry",scope="repository:test/app:pull""#,
        token_server.url()
    );
    let (manifest, layer_path, storage_url) = (
        image.manifest.clone(),
        format!("/v2/test/app/blobs/{}", Digest::of(&image.layer)),
        format!("{}/storage/layer?signature=x", storage.url()),
    );
    let registry = FakeServer::start(move |seen| {
        let authorized = matches!(
            seen.header("authorization"),
            Some("Bearer tok-basic" | "Bearer tok-oauth")
        );
        if !authorized {
            return Reply::new(
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
            .header("www-authenticate", &challenge);
        }
        match seen.target.as_str() {
            "/v2/test/app/manifests/v1" => {
                Reply::new(200, manifest.clone()).header("content-type", OCI_MANIFEST)
            }
            target if target == layer_path => Reply::new(307, "").header("location", &storage_url),
            _ => Reply::new(404, ""),
        }
    })
    .await;
    let domain = registry.addr.to_string();
    let (resolver, _config) = resolver_with_hosts(&[]);

    let basic = Credentials::Basic {
        username: "wharf".into(),
        password: "s3cret".into(),
    };
    let repository = resolver.repository(&domain, "test/app", basic).unwrap();
    assert_eq!(
        repository.fetch_manifest("v1").await.unwrap().digest,
        image.manifest_digest()
    );
    assert_eq!(
        repository.fetch_manifest("v1").await.unwrap().digest,
        image.manifest_digest()
    );
    let layer = collect_blob(
        &repository,
        &Digest::of(&image.layer),
        image.layer.len() as u64,
    )
    .await
    .unwrap();
    assert_eq!(layer, image.layer);
    assert_eq!(token_server.seen().len(), 1, "the token is cached");
    let registry_seen = registry.seen();
    assert_eq!(
        registry_seen.len(),
        4,
        "one challenge, then two manifests and a blob with the token"
    );
    assert_eq!(
        registry_seen[0].header("authorization"),
        None,
        "nothing secret before the challenge"
    );
    let storage_seen = storage.seen();
    assert_eq!(storage_seen.len(), 1);
    assert_eq!(
        storage_seen[0].header("authorization"),
        None,
        "no token to another host"
    );

    let identity = Credentials::from_cri("", "", "", "refresh-123", "").unwrap();
    let repository = resolver.repository(&domain, "test/app", identity).unwrap();
    assert_eq!(
        repository.fetch_manifest("v1").await.unwrap().digest,
        image.manifest_digest()
    );
    assert_eq!(token_server.seen().last().unwrap().method, "POST");

    let ready_token = Credentials::RegistryToken("tok-basic".into());
    let tokens_before = token_server.seen().len();
    let repository = resolver
        .repository(&domain, "test/app", ready_token)
        .unwrap();
    assert_eq!(
        repository.fetch_manifest("v1").await.unwrap().digest,
        image.manifest_digest()
    );
    assert_eq!(
        token_server.seen().len(),
        tokens_before,
        "a registry token is sent as is"
    );

    let wrong = Credentials::Basic {
        username: "wharf".into(),
        password: "guess".into(),
    };
    for credentials in [wrong, Credentials::None] {
        let repository = resolver
            .repository(&domain, "test/app", credentials.clone())
            .unwrap();
        let (kind, error) = kind_of(repository.fetch_manifest("v1").await);
        assert!(
            matches!(&error, RegistryError::Unauthorized { url, .. } if url.contains("/token")),
            "{error}"
        );
        assert_eq!(kind, Kind::FailedPrecondition);
    }
}

#[tokio::test]
async fn refuses_corrupt_oversized_and_truncated_content() {
    let served = b"{\"schemaVersion\":2}".to_vec();
    let served_digest = Digest::of(&served);
    let registry = FakeServer::start(move |seen| match seen.target.as_str() {
        target if target.starts_with("/v2/test/big/") => Reply::new(200, vec![b' '; 5 << 20]),
        target if target.starts_with("/v2/test/chunked/manifests/") => Reply {
            content_length: false,
            ..Reply::new(200, vec![b' '; 5 << 20])
        },
        target if target.starts_with("/v2/test/short/blobs/") => Reply {
            content_length: false,
            ..Reply::new(200, "0123456789")
        },
        _ => Reply::new(200, served.clone()).header("content-type", "application/json"),
    })
    .await;
    let domain = registry.addr.to_string();
    let (resolver, _config) = resolver_with_hosts(&[]);
    let repository = resolver
        .repository(&domain, "test/app", Credentials::None)
        .unwrap();

    let wanted = Digest::of(b"something else");
    let (kind, error) = kind_of(repository.fetch_manifest(&wanted.to_string()).await);
    let RegistryError::DigestMismatch {
        expected, actual, ..
    } = &error
    else {
        panic!("expected a digest mismatch, got {error}");
    };
    assert_eq!((expected, actual), (&wanted, &served_digest));
    assert_eq!(kind, Kind::DataLoss, "corrupt content is not retried");
    let (kind, _) = kind_of(repository.fetch_small_blob(&wanted, 1 << 20).await);
    assert_eq!(kind, Kind::DataLoss);
    // A tag has no digest to check: the computed one is returned.
    let by_tag = repository.fetch_manifest("latest").await.unwrap();
    assert_eq!(by_tag.digest, served_digest);
    assert_eq!(
        by_tag.media_type, "application/json",
        "no mediaType in the body to fall back to"
    );

    for path in ["test/big", "test/chunked"] {
        let repository = resolver
            .repository(&domain, path, Credentials::None)
            .unwrap();
        let (_, error) = kind_of(repository.fetch_manifest("latest").await);
        assert!(
            matches!(error, RegistryError::TooLarge { .. }),
            "{path}: {error}"
        );
    }

    let short = resolver
        .repository(&domain, "test/short", Credentials::None)
        .unwrap();
    let (_, error) = kind_of(collect_blob(&short, &Digest::of(b"x"), 20).await);
    assert!(
        matches!(
            error,
            RegistryError::SizeMismatch {
                expected: 20,
                actual: 10,
                ..
            }
        ),
        "{error}"
    );
    let (_, error) = kind_of(collect_blob(&short, &Digest::of(b"x"), 5).await);
    assert!(
        matches!(error, RegistryError::TooLarge { limit: 5, .. }),
        "{error}"
    );
}
