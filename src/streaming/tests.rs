//! The streaming server end to end over TCP, with a backend that has echo
//! semantics (what the client sends on stdin comes back on stdout; a
//! port-forward reaches a TCP echo server): these test the protocols, and
//! the real backend is tested with runc in `tests/streaming.rs`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::backend::*;
use super::spdy::client::{self, Received};
use super::spdy::frame::{goaway, rst, Control};
use super::tokens::{Session, Streams};
use super::Server;
use crate::config::StreamSection;

struct Echo;

impl Backend for Echo {
    async fn exec(&self, target: ExecTarget, stdio: Stdio) -> Result<i32, BackendError> {
        let Stdio {
            stdin,
            stdout,
            stderr,
            resize,
        } = stdio;
        match target.cmd[0].as_str() {
            "cat" => {
                let (mut stdin, mut stdout) = (stdin.unwrap(), stdout.unwrap());
                tokio::io::copy(&mut stdin, &mut stdout).await.unwrap();
                Ok(0)
            }
            "exit" => {
                let mut stderr = stderr.unwrap();
                stderr.write_all(b"bye\n").await.unwrap();
                Ok(target.cmd[1].parse().unwrap())
            }
            "yes" => {
                let count: usize = target.cmd[1].parse().unwrap();
                let mut stdout = stdout.unwrap();
                let line = [b'y'; 1024];
                for _ in 0..count / 1024 {
                    stdout.write_all(&line).await.map_err(|e| {
                        BackendError::new(BackendErrorKind::Internal, e.to_string())
                    })?;
                }
                Ok(0)
            }
            "size" => {
                let size = resize.unwrap().recv().await.unwrap();
                let mut stdout = stdout.unwrap();
                let text = format!("{}x{}", size.width, size.height);
                stdout.write_all(text.as_bytes()).await.unwrap();
                Ok(0)
            }
            _ => Err(BackendError::new(
                BackendErrorKind::Internal,
                "executable file not found in $PATH",
            )),
        }
    }

    async fn attach(&self, _target: AttachTarget, stdio: Stdio) -> Result<(), BackendError> {
        stdio.stdout.unwrap().write_all(b"attached").await.unwrap();
        Ok(())
    }

    async fn port_forward(
        &self,
        _pod_sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, BackendError> {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| BackendError::new(BackendErrorKind::Internal, e.to_string()))
    }
}

async fn server() -> Arc<Server> {
    let config = StreamSection {
        stream_creation_timeout_secs: 2,
        ..StreamSection::default()
    };
    let server = Arc::new(Server::bind(&config).await.unwrap());
    tokio::spawn(Arc::clone(&server).serve(Arc::new(Echo), std::future::pending::<()>()));
    server
}

fn exec(cmd: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Session {
    Session::Exec {
        target: ExecTarget {
            container_id: "c".into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
        },
        streams: Streams {
            stdin,
            stdout,
            stderr,
            tty,
        },
    }
}

const V4: &str = "v4.channel.k8s.io";

/// Within a deadline, so that a hung server fails the test.
async fn bounded<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), what)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn spdy_exec_echoes_stdin_and_reports_success() {
    let server = server().await;
    let url = server
        .url_for(exec(&["cat"], true, true, false, false))
        .unwrap();
    let (head, client) = client::upgrade(&url, &[V4, "v3.channel.k8s.io"]).await;
    assert_eq!(head.status, 101);
    assert_eq!(head.header("X-Stream-Protocol-Version"), Some(V4));
    assert_eq!(head.header("Upgrade"), Some("SPDY/3.1"));
    let mut client = client.unwrap();
    let error = client.open(&[("streamType", "error")]).await;
    let stdin = client.open(&[("streamType", "stdin")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    client.send_data(stdin, b"hello ", false).await;
    client.send_data(stdin, b"world", true).await;
    let (data, controls) = bounded(client.collect(&[error, stdout])).await;
    assert_eq!(data[&stdout], b"hello world");
    assert_eq!(data[&error], br#"{"metadata":{},"status":"Success"}"#);
    let replies = controls
        .iter()
        .filter(|c| matches!(c, Control::SynReply { .. }))
        .count();
    assert_eq!(replies, 3);
    // The consumed stdin data was acknowledged with WINDOW_UPDATEs.
    assert!(controls.contains(&Control::WindowUpdate {
        stream_id: stdin,
        delta: 6
    }));
}

#[tokio::test]
async fn spdy_exec_exit_code_in_v4_status_and_plain_message_in_v2() {
    let server = server().await;
    for (protocol, expected) in [
        (
            V4,
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [exit 7], exit code 7","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#,
        ),
        (
            "v2.channel.k8s.io",
            "command terminated with non-zero exit code: error executing command [exit 7], exit code 7",
        ),
    ] {
        let url = server.url_for(exec(&["exit", "7"], false, false, true, false)).unwrap();
        let (_, client) = client::upgrade(&url, &[protocol]).await;
        let mut client = client.unwrap();
        let error = client.open(&[("streamType", "error")]).await;
        let stderr = client.open(&[("streamType", "stderr")]).await;
        let (data, _) = bounded(client.collect(&[error, stderr])).await;
        assert_eq!(data[&stderr], b"bye\n");
        assert_eq!(String::from_utf8_lossy(&data[&error]), expected);
    }
}

#[tokio::test]
async fn spdy_exec_failure_resize_and_large_output() {
    let server = server().await;
    // A command the backend cannot start: an internal-error status.
    let url = server
        .url_for(exec(&["nope"], false, true, false, false))
        .unwrap();
    let (_, client) = client::upgrade(&url, &[V4]).await;
    let mut client = client.unwrap();
    let error = client.open(&[("streamType", "error")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    let (data, _) = bounded(client.collect(&[error, stdout])).await;
    let status: serde_json::Value = serde_json::from_slice(&data[&error]).unwrap();
    assert_eq!(status["reason"], "InternalError");
    assert_eq!(status["code"], 500);

    // tty: sizes come from the resize stream.
    let url = server
        .url_for(exec(&["size"], false, true, false, true))
        .unwrap();
    let (_, client) = client::upgrade(&url, &[V4]).await;
    let mut client = client.unwrap();
    let error = client.open(&[("streamType", "error")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    let resize = client.open(&[("streamType", "resize")]).await;
    client
        .send_data(resize, br#"{"Width":120,"Height":40}"#, false)
        .await;
    let (data, _) = bounded(client.collect(&[error, stdout])).await;
    assert_eq!(data[&stdout], b"120x40");

    // 10 MiB of output to a client that does no flow control.
    let size = 10 << 20;
    let url = server
        .url_for(exec(&["yes", &size.to_string()], false, true, false, false))
        .unwrap();
    let (_, client) = client::upgrade(&url, &[V4]).await;
    let mut client = client.unwrap();
    let error = client.open(&[("streamType", "error")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    let (data, _) = bounded(client.collect(&[error, stdout])).await;
    assert_eq!(data[&stdout].len(), size);
    assert!(data[&stdout].iter().all(|&b| b == b'y'));
}

#[tokio::test]
async fn spdy_flow_control_is_respected_once_the_client_does_it() {
    let server = server().await;
    let url = server
        .url_for(exec(&["yes", "1048576"], false, true, false, false))
        .unwrap();
    let (_, client) = client::upgrade(&url, &[V4]).await;
    let mut client = client.unwrap();
    let error = client.open(&[("streamType", "error")]).await;
    // A client that does flow control says so with a WINDOW_UPDATE, and
    // then grants no more than a stream's initial 64 KiB.
    client
        .send_control(Control::WindowUpdate {
            stream_id: error,
            delta: 1,
        })
        .await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    let mut received = 0usize;
    let mut granted = 64 << 10;
    while received < 1 << 20 {
        match bounded(client.next()).await.unwrap() {
            Received::Data {
                stream_id, data, ..
            } if stream_id == stdout => {
                received += data.len();
                assert!(
                    received <= granted,
                    "server sent {received} of {granted} granted"
                );
                if received == granted {
                    // Nothing more comes until the window opens again.
                    let more =
                        tokio::time::timeout(Duration::from_millis(300), client.next()).await;
                    assert!(more.is_err(), "data beyond the window: {more:?}");
                    granted += 256 << 10;
                    for stream_id in [stdout, 0] {
                        client
                            .send_control(Control::WindowUpdate {
                                stream_id,
                                delta: 256 << 10,
                            })
                            .await;
                    }
                }
            }
            _ => {}
        }
    }
    assert_eq!(received, 1 << 20);
}

#[tokio::test]
async fn tokens_are_single_use_and_bad_requests_get_http_errors() {
    let server = server().await;
    let url = server
        .url_for(exec(&["cat"], true, true, false, false))
        .unwrap();
    let (head, _) = client::request(&url, &[]).await;
    assert_eq!(head.status, 400, "no upgrade headers");
    let (head, _) = client::upgrade(&url, &[V4]).await;
    assert_eq!(head.status, 404, "the token was used");
    let (head, _) = client::upgrade(&url.replace("/exec/", "/attach/"), &[V4]).await;
    assert_eq!(head.status, 404);

    let url = server
        .url_for(exec(&["cat"], true, true, false, false))
        .unwrap();
    let (head, _) = client::upgrade(&url, &["v9.channel.k8s.io"]).await;
    assert_eq!(head.status, 403);
    assert_eq!(head.header("X-Accepted-Stream-Protocol-Versions"), Some(V4));

    // A token for an exec does not open an attach.
    let url = server
        .url_for(exec(&["cat"], true, true, false, false))
        .unwrap();
    let (head, _) = client::upgrade(&url.replace("/exec/", "/attach/"), &[V4]).await;
    assert_eq!(head.status, 404);
    let (head, _) = client::upgrade(&url, &[V4]).await;
    assert_eq!(head.status, 404, "a token is consumed by any use");
}

#[tokio::test]
async fn spdy_protocol_errors_end_cleanly() {
    let server = server().await;
    let url = server
        .url_for(exec(&["cat"], true, true, false, false))
        .unwrap();
    let (_, client) = client::upgrade(&url, &[V4]).await;
    let mut client = client.unwrap();
    // Data for a stream that was never opened.
    client.send_data(41, b"x", false).await;
    match bounded(client.next()).await.unwrap() {
        Received::Control(Control::RstStream { stream_id, status }) => {
            assert_eq!((stream_id, status), (41, rst::INVALID_STREAM));
        }
        other => panic!("expected RST_STREAM, got {other:?}"),
    }
    // A repeated stream type is refused; the session carries on.
    client.open(&[("streamType", "error")]).await;
    let again = client.open(&[("streamType", "error")]).await;
    let (_, controls) = bounded(client.collect(&[again])).await;
    assert!(controls.contains(&Control::RstStream {
        stream_id: again,
        status: rst::REFUSED_STREAM
    }));
    // Data after the client's FIN on a stream.
    let stdin = client.open(&[("streamType", "stdin")]).await;
    client.send_data(stdin, b"a", true).await;
    client.send_data(stdin, b"b", false).await;
    let (_, controls) = bounded(client.collect(&[stdin])).await;
    assert!(controls.contains(&Control::RstStream {
        stream_id: stdin,
        status: rst::STREAM_ALREADY_CLOSED
    }));
    // A header block that is not zlib: GOAWAY with PROTOCOL_ERROR.
    client
        .send_control(Control::SynStream {
            stream_id: 101,
            associated_to: 0,
            priority: 0,
            flags: 0,
            header_block: bytes::Bytes::from_static(b"garbage"),
        })
        .await;
    let mut saw_goaway = false;
    while let Some(frame) = bounded(client.next()).await {
        if let Received::Control(Control::GoAway { status, .. }) = frame {
            assert_eq!(status, goaway::PROTOCOL_ERROR);
            saw_goaway = true;
        }
    }
    assert!(saw_goaway);

    // A control frame larger than the limit ends the connection too.
    let url = server
        .url_for(exec(&["cat"], true, true, false, false))
        .unwrap();
    let (_, client) = client::upgrade(&url, &[V4]).await;
    let mut client = client.unwrap();
    client.send_raw(&[0x80, 3, 0, 1, 0, 0x7f, 0xff, 0xff]).await;
    let mut saw_goaway = false;
    while let Some(frame) = bounded(client.next()).await {
        saw_goaway |= matches!(frame, Received::Control(Control::GoAway { .. }));
    }
    assert!(saw_goaway);
}

#[tokio::test]
async fn spdy_streams_not_opened_in_time_close_the_session() {
    let server = server().await;
    let url = server
        .url_for(exec(&["cat"], true, true, false, false))
        .unwrap();
    let (_, client) = client::upgrade(&url, &[V4]).await;
    let mut client = client.unwrap();
    client.open(&[("streamType", "error")]).await;
    // stdin and stdout never come: the 2 s creation timeout ends it.
    let ended = bounded(async { while client.next().await.is_some() {} }).await;
    assert_eq!(ended, ());
}

async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn spdy_port_forward_pairs_streams_by_request_id() {
    let server = server().await;
    let port = echo_server().await;
    let url = server
        .url_for(Session::PortForward {
            pod_sandbox_id: "p".into(),
            ports: vec![],
        })
        .unwrap();
    let (head, client) = client::upgrade(&url, &["portforward.k8s.io"]).await;
    assert_eq!(
        head.header("X-Stream-Protocol-Version"),
        Some("portforward.k8s.io")
    );
    let mut client = client.unwrap();
    let port_text = port.to_string();
    let mut pairs = Vec::new();
    for request_id in ["0", "1"] {
        let error = client
            .open(&[
                ("streamType", "error"),
                ("port", &port_text),
                ("requestID", request_id),
            ])
            .await;
        let data = client
            .open(&[
                ("streamType", "data"),
                ("port", &port_text),
                ("requestID", request_id),
            ])
            .await;
        pairs.push((error, data));
    }
    // A bad port is refused.
    let bad = client
        .open(&[("streamType", "data"), ("port", "0"), ("requestID", "9")])
        .await;
    for (i, (_, data)) in pairs.iter().enumerate() {
        client
            .send_data(*data, format!("ping {i}").as_bytes(), true)
            .await;
    }
    let data_ids: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    let (data, controls) = bounded(client.collect(&data_ids)).await;
    assert_eq!(data[&pairs[0].1], b"ping 0");
    assert_eq!(data[&pairs[1].1], b"ping 1");
    assert!(controls.contains(&Control::RstStream {
        stream_id: bad,
        status: rst::REFUSED_STREAM
    }));

    // A port nothing listens on: the error stream says so.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let error = client
        .open(&[
            ("streamType", "error"),
            ("port", &closed_port),
            ("requestID", "5"),
        ])
        .await;
    client
        .open(&[
            ("streamType", "data"),
            ("port", &closed_port),
            ("requestID", "5"),
        ])
        .await;
    let (data, _) = bounded(client.collect(&[error])).await;
    let message = String::from_utf8_lossy(&data[&error]).to_string();
    assert!(
        message.starts_with(&format!("error forwarding port {closed_port} to pod p")),
        "{message}"
    );
}

async fn ws_connect(url: &str, protocol: &str) -> WebSocketStream<TcpStream> {
    let ws_url = url.replace("http://", "ws://");
    let mut request = ws_url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let authority = url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"]
            .to_str()
            .unwrap(),
        protocol
    );
    ws
}

/// Messages until the server closes, as (channel, payload).
async fn ws_collect(ws: &mut WebSocketStream<TcpStream>, base64: bool) -> Vec<(u8, Vec<u8>)> {
    let framing = super::websocket::Framing { base64 };
    let mut messages = Vec::new();
    while let Some(Ok(message)) = bounded(ws.next()).await {
        if let Some(decoded) = framing.decode(&message) {
            messages.push(decoded);
        }
    }
    messages
}

#[tokio::test]
async fn websocket_exec_v5_closes_stdin_with_its_close_signal() {
    let server = server().await;
    let url = server
        .url_for(exec(&["cat"], true, true, false, false))
        .unwrap();
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    ws.send(Message::binary(b"\x00hi there".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let messages = ws_collect(&mut ws, false).await;
    assert_eq!(messages[0], (1, vec![]), "the opening empty stdout frame");
    let stdout: Vec<u8> = messages
        .iter()
        .filter(|(c, _)| *c == 1)
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert_eq!(stdout, b"hi there");
    assert_eq!(
        messages.last().unwrap(),
        &(3, br#"{"metadata":{},"status":"Success"}"#.to_vec())
    );
}

#[tokio::test]
async fn websocket_exec_base64_and_exit_code() {
    let server = server().await;
    let url = server
        .url_for(exec(&["exit", "2"], false, false, true, false))
        .unwrap();
    let mut ws = ws_connect(&url, "v4.base64.channel.k8s.io").await;
    let messages = ws_collect(&mut ws, true).await;
    assert_eq!(messages[0], (2, vec![]));
    assert!(messages.contains(&(2, b"bye\n".to_vec())));
    let (channel, status) = messages.last().unwrap();
    assert_eq!(*channel, 3);
    let status: serde_json::Value = serde_json::from_slice(status).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "2");

    // Attach over WebSocket, plain channel.k8s.io: success writes nothing.
    let url = server
        .url_for(Session::Attach {
            target: AttachTarget {
                container_id: "c".into(),
                tty: false,
            },
            streams: Streams {
                stdin: false,
                stdout: true,
                stderr: false,
                tty: false,
            },
        })
        .unwrap();
    let mut ws = ws_connect(&url, "channel.k8s.io").await;
    let messages = ws_collect(&mut ws, false).await;
    assert_eq!(messages, vec![(1, vec![]), (1, b"attached".to_vec())]);
}

#[tokio::test]
async fn websocket_port_forward_announces_ports_and_copies() {
    let server = server().await;
    let port = echo_server().await;
    let url = server
        .url_for(Session::PortForward {
            pod_sandbox_id: "p".into(),
            ports: vec![port],
        })
        .unwrap();
    let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
    let port_bytes = port.to_le_bytes().to_vec();
    for channel in [0u8, 1] {
        let message = bounded(ws.next()).await.unwrap().unwrap();
        let mut expected = vec![channel];
        expected.extend_from_slice(&port_bytes);
        assert_eq!(message, Message::binary(expected));
    }
    ws.send(Message::binary(b"\x00echo me".to_vec()))
        .await
        .unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 7 {
        let message = bounded(ws.next()).await.unwrap().unwrap();
        let (channel, data) = super::websocket::Framing { base64: false }
            .decode(&message)
            .unwrap();
        assert_eq!(channel, 0);
        echoed.extend_from_slice(&data);
    }
    assert_eq!(echoed, b"echo me");
}
