//! Exec, Attach and PortForward on a real daemon, with real runc: the
//! RPCs' validation and URLs, and sessions driven by crictl (Go's
//! spdystream and gorilla/websocket, as kubectl and kubelet use them).
//! The sessions need `RuntimeBackend`, written in parallel; until it
//! lands they are ignored.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::pods::*;
use k8s_cri::v1::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const CRICTL: &str = "/usr/local/bin/crictl";

/// A daemon, a pod and a running `sleep` container in it.
async fn running() -> (common::Daemon, String, String) {
    let daemon = daemon().await;
    let mut client = daemon.runtime().await;
    let pod = pod_config(&daemon, "streams");
    let pod_id = run_pod(&mut client, pod.clone()).await;
    let config = container_config("sleeper", &["sleep", "3600"]);
    let id = run_container(&mut client, &pod_id, &pod, config).await;
    (daemon, pod_id, id)
}

fn exec_request(
    id: &str,
    cmd: &[&str],
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> ExecRequest {
    ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout,
        stderr,
    }
}

/// The HTTP status of a plain GET on `url`.
async fn http_status(url: &str) -> u16 {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn streaming_rpcs_validate_and_return_single_use_urls() {
    let (daemon, pod_id, id) = running().await;
    let mut client = daemon.runtime().await;

    let url = client
        .exec(exec_request(&id, &["echo", "hi"], false, true, true, false))
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.contains("/exec/"), "{url}");
    // No upgrade: refused, and the token is gone.
    assert_eq!(http_status(&url).await, 400);
    assert_eq!(http_status(&url).await, 404);
    let made_up = format!(
        "{}/exec/AAAAAAAAAAAAAAAAAAAAAA",
        &url[..url.find("/exec/").unwrap()]
    );
    assert_eq!(http_status(&made_up).await, 404);

    let bad = [
        exec_request(&id, &["true"], false, false, false, false),
        exec_request(&id, &["true"], false, true, true, true),
        exec_request(&id, &[], false, true, false, false),
    ];
    for request in bad {
        let status = client.exec(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let huge = "x".repeat(200 << 10);
    let status = client
        .exec(exec_request(
            &id,
            &["echo", &huge],
            false,
            true,
            false,
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let missing = exec_request("0123456789abcdef", &["true"], false, true, false, false);
    assert_eq!(
        client.exec(missing).await.unwrap_err().code(),
        Code::NotFound
    );

    // A created, not started, container cannot be exec'd or attached.
    let pod = pod_config(&daemon, "streams");
    let created = create(
        &mut client,
        &pod_id,
        &pod,
        container_config("idle", &["sleep", "1"]),
    )
    .await
    .unwrap();
    let status = client
        .exec(exec_request(&created, &["true"], false, true, false, false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let attach = AttachRequest {
        container_id: created.clone(),
        stdout: true,
        ..Default::default()
    };
    assert_eq!(
        client.attach(attach).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let attach = AttachRequest {
        container_id: id.clone(),
        stdout: true,
        ..Default::default()
    };
    let url = client.attach(attach).await.unwrap().into_inner().url;
    assert!(url.contains("/attach/"), "{url}");

    let forward = |pod: &str, port: i32| PortForwardRequest {
        pod_sandbox_id: pod.into(),
        port: vec![port],
    };
    let url = client
        .port_forward(forward(&pod_id, 80))
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.contains("/portforward/"), "{url}");
    for (pod, port, code) in [
        (pod_id.as_str(), 70000, Code::InvalidArgument),
        (pod_id.as_str(), 0, Code::InvalidArgument),
        ("0123456789abcdef", 80, Code::NotFound),
    ] {
        let status = client.port_forward(forward(pod, port)).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
}

fn crictl(daemon: &common::Daemon, args: &[&str]) -> Output {
    let endpoint = format!("unix://{}", daemon.socket().display());
    Command::new(CRICTL)
        // Both endpoints: an /etc/crictl.yaml (hack/setup.sh installs one)
        // would otherwise send the image calls to the host's daemon.
        .args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
        ])
        .args(["--timeout", "20s"])
        .args(args)
        .output()
        .expect("running crictl")
}

#[tokio::test]
async fn crictl_exec_over_spdy_and_websocket() {
    let (daemon, _pod_id, id) = running().await;
    for transport in ["spdy", "websocket"] {
        let out = crictl(&daemon, &["exec", "-r", transport, &id, "echo", "hello"]);
        assert!(out.status.success(), "{transport}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

        let out = crictl(
            &daemon,
            &["exec", "-r", transport, &id, "sh", "-c", "exit 3"],
        );
        // crictl reports the exit code in its message and exits 1.
        assert!(!out.status.success(), "{transport}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("command terminated with exit code 3"),
            "{transport}: {out:?}"
        );

        // 10 MiB through the stream.
        let out = crictl(
            &daemon,
            &[
                "exec",
                "-r",
                transport,
                &id,
                "head",
                "-c",
                "10485760",
                "/dev/zero",
            ],
        );
        assert!(out.status.success(), "{transport}: {:?}", out.status);
        assert_eq!(out.stdout.len(), 10 << 20);
    }
}

#[tokio::test]
async fn crictl_exec_with_stdin_and_tty() {
    let (daemon, _pod_id, id) = running().await;
    let endpoint = format!("unix://{}", daemon.socket().display());
    for transport in ["spdy", "websocket"] {
        let mut child = Command::new(CRICTL)
            .args([
                "--runtime-endpoint",
                &endpoint,
                "--image-endpoint",
                &endpoint,
                "exec",
                "-i",
                "-r",
                transport,
                &id,
                "cat",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"through stdin\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{transport}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    }
    // A terminal: crictl wants one of its own (util-linux `script` gives
    // it a pty), and the command sees one.
    let command = format!(
        "{CRICTL} --runtime-endpoint {endpoint} --image-endpoint {endpoint} exec -i -t {id} sh -c 'test -t 1 && echo tty'"
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running script");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tty"),
        "{out:?}"
    );
}

#[tokio::test]
async fn crictl_port_forward_reaches_a_server_in_the_pod() {
    let (daemon, pod_id, id) = running().await;
    let mut client = daemon.runtime().await;
    let server = exec(
        &mut client,
        &id,
        &[
            "sh",
            "-c",
            "echo served > /tmp/index.html; httpd -p 8080 -h /tmp",
        ],
    )
    .await;
    assert_eq!(server.exit_code, 0, "{server:?}");
    // SPDY, and SPDY tunnelled through WebSocket (client-go 1.30+).
    for transport in ["spdy", "websocket"] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap().port();
        drop(listener);
        let endpoint = format!("unix://{}", daemon.socket().display());
        let mut forward = Command::new(CRICTL)
            .args([
                "--runtime-endpoint",
                &endpoint,
                "--image-endpoint",
                &endpoint,
                "port-forward",
                "-r",
                transport,
                &pod_id,
                &format!("{local}:8080"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let body = common::poll_until(
            "the forwarded port answers",
            Duration::from_secs(20),
            || {
                let mut tcp = std::net::TcpStream::connect(("127.0.0.1", local)).ok()?;
                use std::io::{Read, Write};
                tcp.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
                let mut text = String::new();
                tcp.read_to_string(&mut text).ok()?;
                text.contains("served").then_some(text)
            },
        )
        .await;
        assert!(body.contains("200"), "{transport}: {body}");
        let _ = forward.kill();
        let _ = forward.wait();
    }
}
