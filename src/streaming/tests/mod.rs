//! The streaming server end to end over TCP, with a backend that has echo
//! semantics (what the client sends on stdin comes back on stdout; a
//! port-forward reaches a TCP echo server): these test the protocols, and
//! the real backend is tested with runc in `tests/streaming.rs`.
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::backend::*;
use super::tokens::Session;
use super::Server;
use crate::config::StreamSection;

mod spdy;
mod websocket;

pub struct Echo;

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

pub async fn server() -> Arc<Server> {
    let config = StreamSection {
        stream_creation_timeout_secs: 2,
        ..StreamSection::default()
    };
    let server = Arc::new(Server::bind(&config).await.unwrap());
    tokio::spawn(Arc::clone(&server).serve(Arc::new(Echo), std::future::pending::<()>()));
    server
}

pub fn exec(cmd: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Session {
    Session::Exec {
        target: ExecTarget {
            container_id: "c".into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
        },
        streams: super::tokens::Streams {
            stdin,
            stdout,
            stderr,
            tty,
        },
    }
}

pub const V4: &str = "v4.channel.k8s.io";

/// Within a deadline, so that a hung server fails the test.
pub async fn bounded<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), what)
        .await
        .expect("timed out")
}

pub async fn echo_server() -> u16 {
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

/// Sessions of both transports, finished or abandoned by their client,
/// leave no task behind.
#[tokio::test]
async fn sessions_leave_no_task_behind() {
    use futures_util::StreamExt;
    let server = server().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    for round in 0..20 {
        let url = server
            .url_for(exec(&["cat"], true, true, false, false))
            .unwrap();
        let (_, client) = super::spdy::client::upgrade(&url, &[V4]).await;
        let mut client = client.unwrap();
        let error = client.open(&[("streamType", "error")]).await;
        let stdin = client.open(&[("streamType", "stdin")]).await;
        let stdout = client.open(&[("streamType", "stdout")]).await;
        // The count does see a session's tasks.
        assert!(metrics.num_alive_tasks() > baseline);
        client
            .send_data(stdin, format!("{round}").as_bytes(), true)
            .await;
        bounded(client.collect(&[error, stdout])).await;
        // The client goes away once it has its answer.
        drop(client);

        let url = server
            .url_for(exec(&["exit", "1"], false, false, true, false))
            .unwrap();
        let authority = url["http://".len()..].split('/').next().unwrap();
        let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
        let ws_url = url.replace("http://", "ws://");
        let (mut ws, _) = tokio_tungstenite::client_async(ws_url, tcp).await.unwrap();
        while let Some(Ok(_)) = bounded(ws.next()).await {}
    }
    // Clients that leave in the middle: the sessions are cancelled.
    for protocol in [V4, "ws"] {
        let url = server
            .url_for(exec(&["cat"], true, true, false, false))
            .unwrap();
        if protocol == "ws" {
            let authority = url["http://".len()..].split('/').next().unwrap();
            let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
            let ws_url = url.replace("http://", "ws://");
            let (mut ws, _) = tokio_tungstenite::client_async(ws_url, tcp).await.unwrap();
            // The opening frame says the session is running.
            bounded(ws.next()).await.unwrap().unwrap();
            drop(ws);
        } else {
            let (_, client) = super::spdy::client::upgrade(&url, &[protocol]).await;
            let mut client = client.unwrap();
            for kind in ["error", "stdin", "stdout"] {
                client.open(&[("streamType", kind)]).await;
            }
            client.next().await;
            drop(client);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alive = metrics.num_alive_tasks();
        if alive <= baseline {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{alive} tasks alive, {baseline} before the sessions"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
