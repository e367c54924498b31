//! Exec, attach and port-forward over SPDY, driven by the test client.

use std::time::Duration;

use super::super::spdy::client::{self, Received};
use super::super::spdy::frame::{goaway, rst, Control};
use super::super::tokens::Session;
use super::{bounded, echo_server, exec, server, V4};

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

/// client-go opens `stderr` whenever its caller has somewhere to write it,
/// even for kubelet's `/exec?output=1` (no stderr): the stream is accepted
/// and stays silent, as kubelet's own server does; only a repeat is reset.
#[tokio::test]
async fn spdy_exec_accepts_a_stdio_stream_it_was_not_asked_for() {
    let server = server().await;
    let url = server
        .url_for(exec(&["cat"], true, true, false, false))
        .unwrap();
    let (_, client) = client::upgrade(&url, &[V4]).await;
    let mut client = client.unwrap();
    let error = client.open(&[("streamType", "error")]).await;
    let stdin = client.open(&[("streamType", "stdin")]).await;
    let stdout = client.open(&[("streamType", "stdout")]).await;
    let stderr = client.open(&[("streamType", "stderr")]).await;
    let again = client.open(&[("streamType", "stderr")]).await;
    // The session runs (cat waits for stdin) while the extra streams are
    // answered: a reply for the first stderr, a reset for the repeat.
    let mut controls = Vec::new();
    while !controls
        .iter()
        .any(|c| matches!(c, Control::RstStream { stream_id, .. } if *stream_id == again))
    {
        match bounded(client.next()).await {
            Some(Received::Control(c)) => controls.push(c),
            Some(Received::Data { .. }) => {}
            None => panic!("connection closed; controls {controls:?}"),
        }
    }
    assert!(controls.contains(&Control::RstStream {
        stream_id: again,
        status: rst::REFUSED_STREAM
    }));
    client.send_data(stdin, b"hi", true).await;
    let (data, more) = bounded(client.collect(&[error, stdout, stderr])).await;
    controls.extend(more);
    assert_eq!(data[&stdout], b"hi");
    assert_eq!(data[&error], br#"{"metadata":{},"status":"Success"}"#);
    assert!(data.get(&stderr).is_none_or(Vec::is_empty));
    assert!(
        controls
            .iter()
            .any(|c| matches!(c, Control::SynReply { stream_id, .. } if *stream_id == stderr)),
        "{controls:?}"
    );
    assert!(!controls
        .iter()
        .any(|c| matches!(c, Control::RstStream { stream_id, .. } if *stream_id == stderr)));
}
