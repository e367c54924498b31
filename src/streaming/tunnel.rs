//! Port-forward as client-go 1.30+ speaks it over WebSocket (kubectl's
//! `PortForwardWebsockets`, `crictl port-forward -r websocket`): the
//! subprotocol `SPDY/3.1+portforward.k8s.io` carries a whole SPDY/3.1
//! session, its bytes cut into binary messages in each direction. The
//! tunnel turns the WebSocket back into a byte stream, on which the SPDY
//! port-forward runs unchanged.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The WebSocket subprotocol of a tunnelled SPDY port-forward.
pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Bytes in flight between the WebSocket and the SPDY session, each way;
/// also the largest message sent.
const PIPE_BYTES: usize = 32 << 10;

/// The SPDY side of the tunnel. A task copies between it and `ws` until
/// either end closes; dropping the returned stream ends the task, and a
/// client that goes away ends the stream.
pub fn open<S>(ws: WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (spdy_side, tunnel_side) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(async move {
        let (mut sink, mut messages) = ws.split();
        let (mut from_spdy, mut to_spdy) = tokio::io::split(tunnel_side);
        let inbound = async {
            while let Some(Ok(message)) = messages.next().await {
                match message {
                    Message::Binary(data) if to_spdy.write_all(&data).await.is_err() => break,
                    Message::Close(_) => break,
                    // Pings are answered by tungstenite; text has no place here.
                    _ => {}
                }
            }
            let _ = to_spdy.shutdown().await;
        };
        let outbound = async {
            let mut buffer = vec![0; PIPE_BYTES];
            loop {
                match from_spdy.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink
                            .send(Message::binary(buffer[..n].to_vec()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        };
        tokio::select! {
            () = inbound => {}
            () = outbound => {}
        }
    });
    spdy_side
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test]
    async fn bytes_cross_the_tunnel_both_ways_and_close_ends_it() {
        let (server_io, client_io) = tokio::io::duplex(1 << 16);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let mut spdy = open(server);

        client.send(Message::binary(b"SYN".to_vec())).await.unwrap();
        client
            .send(Message::binary(b"_STREAM".to_vec()))
            .await
            .unwrap();
        let mut received = [0; 10];
        spdy.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"SYN_STREAM");

        spdy.write_all(b"SYN_REPLY").await.unwrap();
        let reply = client.next().await.unwrap().unwrap();
        assert_eq!(reply.into_data().as_ref(), b"SYN_REPLY");

        client.close(None).await.unwrap();
        let mut rest = Vec::new();
        spdy.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "the client's close ends the SPDY side's input"
        );
    }
}
