//! Exec, attach and port-forward over WebSocket, driven by
//! tokio-tungstenite's client.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::super::backend::AttachTarget;
use super::super::tokens::{Session, Streams};
use super::{bounded, echo_server, exec, server};

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
    let framing = crate::streaming::websocket::Framing { base64 };
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
        let (channel, data) = crate::streaming::websocket::Framing { base64: false }
            .decode(&message)
            .unwrap();
        assert_eq!(channel, 0);
        echoed.extend_from_slice(&data);
    }
    assert_eq!(echoed, b"echo me");
}

#[tokio::test]
async fn websocket_exec_carries_10_mib_of_output() {
    let server = server().await;
    let size = 10 << 20;
    let url = server
        .url_for(exec(&["yes", &size.to_string()], false, true, false, false))
        .unwrap();
    let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
    let messages = ws_collect(&mut ws, false).await;
    let stdout: usize = messages
        .iter()
        .filter(|(c, _)| *c == 1)
        .map(|(_, d)| d.len())
        .sum();
    assert_eq!(stdout, size);
    assert_eq!(
        messages.last().unwrap(),
        &(3, br#"{"metadata":{},"status":"Success"}"#.to_vec())
    );
}
