//! The Prometheus endpoint and pull progress, as an operator sees them:
//! scrapes over TCP while a real daemon pulls from the real test registry
//! (slowed by a throttling proxy), runs pods and restarts.

mod common;

use std::time::Duration;

use common::fake_registry::{FakeRegistry, LayerFault};
use common::pods::*;
use common::{pull_request, registry, Daemon};
use k8s_cri::v1::{ContainerStatusRequest, StatusRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

const METRICS_ON: &str = "[metrics]\naddress = \"127.0.0.1:0\"";

/// The metrics address the daemon logged last (port 0 picks a free one).
fn metrics_addr(daemon: &Daemon) -> String {
    let log = daemon.log();
    let start = log
        .rfind("serving metrics on http://")
        .unwrap_or_else(|| panic!("no metrics endpoint in the log:\n{log}"))
        + "serving metrics on http://".len();
    let end = start + log[start..].find("/metrics").unwrap();
    log[start..end].to_string()
}

/// One HTTP/1.0 request; the status line, headers and body.
async fn http_get(addr: &str, path: &str) -> (String, String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

async fn scrape(addr: &str) -> String {
    let (status, headers, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.0 200 OK", "{body}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    body
}

/// The value of one series, `name{labels}` exactly as exposed.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .map(|(_, value)| value.parse().unwrap())
}

/// A TCP proxy that forwards to `upstream` and lets its answers through at
/// about `bytes_per_second`: a slow registry that is still the real one.
struct ThrottlingProxy {
    addr: String,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for ThrottlingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl ThrottlingProxy {
    async fn start(upstream: &str, bytes_per_second: usize) -> ThrottlingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let upstream = upstream.to_string();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let requests = tokio::io::copy(&mut client_read, &mut server_write);
                    let answers = async {
                        let mut buffer = vec![0u8; 8 << 10];
                        loop {
                            let n = server_read.read(&mut buffer).await?;
                            if n == 0 {
                                return client_write.shutdown().await;
                            }
                            client_write.write_all(&buffer[..n]).await?;
                            // The throttle itself, not a wait for anything.
                            let pause = n as f64 / bytes_per_second as f64;
                            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                        }
                    };
                    tokio::select! {
                        _ = requests => {}
                        _ = answers => {}
                    }
                });
            }
        });
        ThrottlingProxy { addr, accept }
    }
}

#[tokio::test]
async fn a_slow_pull_shows_its_bytes_moving_then_disappears() {
    let registry = registry();
    let proxy = ThrottlingProxy::start(&registry.addr, 128 << 10).await;
    let daemon = Daemon::start(METRICS_ON).await;
    let addr = metrics_addr(&daemon);
    let image = format!("{}/wharf-test/busybox:latest", proxy.addr);
    let pull = {
        let mut images = daemon.images().await;
        let image = image.clone();
        tokio::spawn(async move { images.pull_image(pull_request(&image, None)).await })
    };

    let done = format!("wharf_image_pull_done_bytes{{image=\"{image}\"}}");
    let expected = format!("wharf_image_pull_expected_bytes{{image=\"{image}\"}}");
    // A first scrape with some bytes of the big layer in...
    let (first, total) = poll_scrape(&addr, "bytes to arrive", |text| {
        let done = sample(text, &done)?;
        let total = sample(text, &expected)?;
        (done > 0.0 && total > 0.0).then_some((done, total))
    })
    .await;
    assert!(first < total, "{first} of {total}: the pull is not slow");
    let in_flight = scrape(&addr).await;
    assert_eq!(sample(&in_flight, "wharf_image_pulls_in_flight"), Some(1.0));

    // ...shown by crictl info too (Status verbose), with its progress.
    let mut runtime = daemon.runtime().await;
    let status = runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let pulls: serde_json::Value = serde_json::from_str(&status.info["pulls"]).unwrap();
    let listed = pulls
        .get(&image)
        .unwrap_or_else(|| panic!("{image} not in {pulls}"));
    assert_eq!(listed["bytesExpected"].as_f64(), Some(total));
    assert!(listed["bytesDone"].as_f64().unwrap() >= first, "{listed}");
    assert!(listed["startedAt"].as_str().unwrap().ends_with('Z'));

    // ...and a later scrape with more.
    poll_scrape(&addr, "more bytes", |text| {
        sample(text, &done).filter(|now| *now > first)
    })
    .await;

    pull.await.unwrap().unwrap();
    let after = scrape(&addr).await;
    assert_eq!(sample(&after, &done), None, "{after}");
    assert_eq!(sample(&after, &expected), None, "{after}");
    assert_eq!(sample(&after, "wharf_image_pulls_in_flight"), Some(0.0));
    assert_eq!(
        sample(&after, "wharf_image_pulls_total{result=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "wharf_image_pulls_total{result=\"failure\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&after, "wharf_image_pulled_bytes_total"),
        Some(total),
        "every layer byte, once"
    );
    assert_eq!(
        sample(&after, "wharf_image_layers_unpacked_total"),
        Some(3.0)
    );
    assert!(sample(&after, "wharf_image_unpacked_bytes_total").unwrap() > 0.0);
    assert_eq!(
        sample(
            &after,
            "wharf_grpc_requests_total{method=\"PullImage\",code=\"OK\"}"
        ),
        Some(1.0)
    );
    let status = runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.info["pulls"], "{}");
}

/// Scrapes until `probe` finds what it looks for (within 30 s).
async fn poll_scrape<T>(addr: &str, what: &str, mut probe: impl FnMut(&str) -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(addr).await;
        if let Some(found) = probe(&text) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn requests_pods_and_containers_are_counted() {
    let mut daemon = daemon_with(METRICS_ON).await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "metrics");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let command = ["sleep", "3600"];
    let running = run_container(
        &mut client,
        &pod_id,
        &pod,
        container_config("main", &command),
    )
    .await;
    create(
        &mut client,
        &pod_id,
        &pod,
        container_config("idle", &command),
    )
    .await
    .unwrap();
    let missing = client
        .container_status(ContainerStatusRequest {
            container_id: "nonexistent".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let addr = metrics_addr(&daemon);
    let text = scrape(&addr).await;
    for (series, value) in [
        (
            "wharf_grpc_requests_total{method=\"PullImage\",code=\"OK\"}",
            1.0,
        ),
        (
            "wharf_grpc_requests_total{method=\"RunPodSandbox\",code=\"OK\"}",
            1.0,
        ),
        (
            "wharf_grpc_requests_total{method=\"CreateContainer\",code=\"OK\"}",
            2.0,
        ),
        (
            "wharf_grpc_requests_total{method=\"StartContainer\",code=\"OK\"}",
            1.0,
        ),
        (
            "wharf_grpc_requests_total{method=\"ContainerStatus\",code=\"NotFound\"}",
            1.0,
        ),
        (
            "wharf_grpc_request_duration_seconds_count{method=\"CreateContainer\"}",
            2.0,
        ),
        ("wharf_errors_total{kind=\"not_found\"}", 1.0),
        ("wharf_pods{state=\"ready\"}", 1.0),
        ("wharf_pods{state=\"notready\"}", 0.0),
        ("wharf_containers{state=\"running\"}", 1.0),
        ("wharf_containers{state=\"created\"}", 1.0),
        ("wharf_containers{state=\"exited\"}", 0.0),
        ("wharf_monitors_alive", 2.0),
        ("wharf_containers_recovered_total", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }

    // An exit: the gauges follow, the monitor is gone.
    stop_container(&mut client, &running, 1).await;
    poll_scrape(&addr, "the exit in the gauges", |text| {
        (sample(text, "wharf_containers{state=\"exited\"}") == Some(1.0)
            && sample(text, "wharf_containers{state=\"running\"}") == Some(0.0)
            && sample(text, "wharf_monitors_alive") == Some(1.0))
        .then_some(())
    })
    .await;

    // A restart finds both containers again, and the idle one's monitor.
    daemon.kill9();
    daemon.spawn().await;
    let addr = metrics_addr(&daemon);
    let text = scrape(&addr).await;
    assert_eq!(
        sample(&text, "wharf_containers_recovered_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "wharf_containers{state=\"created\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "wharf_containers{state=\"exited\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "wharf_pods{state=\"ready\"}"), Some(1.0));
    poll_scrape(
        &addr,
        "the idle container's monitor watched again",
        |text| (sample(text, "wharf_monitors_alive") == Some(1.0)).then_some(()),
    )
    .await;
    let mut client = daemon.runtime().await;
    remove_pod(&mut client, &pod_id).await;
    let text = scrape(&addr).await;
    assert_eq!(sample(&text, "wharf_pods{state=\"ready\"}"), Some(0.0));
    assert_eq!(sample(&text, "wharf_monitors_alive"), Some(0.0));
}

/// TCP sockets the process `pid` listens on.
fn listening_sockets(pid: u32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_string())
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|table| {
            std::fs::read_to_string(table)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // State 0A is LISTEN; field 9 the inode.
            fields.get(3) == Some(&"0A")
                && fields
                    .get(9)
                    .is_some_and(|i| inodes.iter().any(|own| own == i))
        })
        .count()
}

#[tokio::test]
async fn metrics_are_off_by_default_and_only_metrics_is_served() {
    let off = Daemon::start("").await;
    assert!(!off.log().contains("serving metrics"), "{}", off.log());
    assert_eq!(listening_sockets(off.pid()), 1, "only the streaming server");

    let on = Daemon::start(METRICS_ON).await;
    assert_eq!(listening_sockets(on.pid()), 2, "streaming and metrics");
    let addr = metrics_addr(&on);
    let (status, _, _) = http_get(&addr, "/").await;
    assert_eq!(status, "HTTP/1.0 404 Not Found");
    let (status, _, _) = http_get(&addr, "/metrics/x").await;
    assert_eq!(status, "HTTP/1.0 404 Not Found");
    // A huge request head is refused, not buffered.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let padding = "x".repeat(32 << 10);
    let request = format!("GET /metrics HTTP/1.0\r\nX-Padding: {padding}\r\n\r\n");
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer).await;
    assert!(!answer.contains("wharf_"), "{answer}");

    // Clients that send nothing take at most 16 connections; the next
    // one is closed at once, and a slot given back serves again.
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut refused = TcpStream::connect(&addr).await.unwrap();
    let _ = refused.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = refused.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    drop(idle.pop());
    // The server notices the closed connection; until then a scrape may
    // find no free slot.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let _ = tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer).await;
        if answer.contains("wharf_pods") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no slot given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stalled_pull_is_named_in_the_log_with_its_layer_and_bytes() {
    let daemon = Daemon::start("stall_warning_secs = 1\nstall_timeout_secs = 4").await;
    let fake = FakeRegistry::start(LayerFault::Stall, 1 << 20).await;
    let mut images = daemon.images().await;
    let err = images
        .pull_image(pull_request(&fake.image(), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    let log = strip_colours(&daemon.log());
    let warning = log
        .lines()
        .find(|l| l.contains("pull stalled"))
        .unwrap_or_else(|| panic!("no stall warning in:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains(&format!("image={}", fake.image())),
        "{warning}"
    );
    assert!(
        warning.contains(&format!("layer={}", fake.layer_digest)),
        "{warning}"
    );
    // Half the layer arrived before the stall.
    let layer_bytes: u64 = warning
        .split_whitespace()
        .find_map(|field| field.strip_prefix("layer_bytes="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(layer_bytes > 0, "{warning}");
    assert!(
        warning.contains(&format!("pull_bytes={layer_bytes}")),
        "{warning}"
    );
}

/// The log without its ANSI colour sequences.
fn strip_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[tokio::test]
async fn a_pull_whose_client_goes_away_is_counted_as_cancelled() {
    let proxy = ThrottlingProxy::start(&registry().addr, 32 << 10).await;
    let daemon = Daemon::start(METRICS_ON).await;
    let addr = metrics_addr(&daemon);
    let image = format!("{}/wharf-test/plain:latest", proxy.addr);
    let pull = {
        let mut images = daemon.images().await;
        let image = image.clone();
        tokio::spawn(async move { images.pull_image(pull_request(&image, None)).await })
    };
    let done = format!("wharf_image_pull_done_bytes{{image=\"{image}\"}}");
    poll_scrape(&addr, "the pull to start", |text| {
        sample(text, &done).filter(|bytes| *bytes > 0.0)
    })
    .await;
    pull.abort();
    let cancelled_calls = "wharf_grpc_requests_total{method=\"PullImage\",code=\"Canceled\"}";
    let text = poll_scrape(&addr, "the pull to end", |text| {
        // The RPC is counted when tonic drops its handler, which may come
        // after the pull has let go of its gauges: wait for both.
        let ended = sample(text, "wharf_image_pulls_in_flight") == Some(0.0);
        (ended && sample(text, cancelled_calls).is_some()).then(|| text.to_string())
    })
    .await;
    assert_eq!(sample(&text, &done), None, "{text}");
    assert_eq!(sample(&text, cancelled_calls), Some(1.0), "{text}");
    for (result, count) in [("cancelled", 1.0), ("success", 0.0), ("failure", 0.0)] {
        let series = format!("wharf_image_pulls_total{{result=\"{result}\"}}");
        assert_eq!(sample(&text, &series), Some(count), "{text}");
    }
}
