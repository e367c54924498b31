//! A registry that misbehaves on purpose: the faults a real registry cannot
//! be made to produce (wrong bytes, a connection cut short, a stall, a slow
//! trickle). It serves one image, `fake/image:latest`, over plain HTTP.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerFault {
    None,
    /// Same length, different bytes.
    WrongContent,
    /// Content-Length promises the whole blob; the connection closes half-way.
    Truncated,
    /// Half the blob, then silence with the connection open.
    Stall,
    /// The whole blob at about `bytes_per_second`.
    Slow {
        bytes_per_second: usize,
    },
}

pub struct FakeRegistry {
    pub addr: String,
    pub config_digest: String,
    pub layer_digest: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Blobs {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
    config_digest: String,
    layer_digest: String,
    fault: LayerFault,
}

fn sha256(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A gzip layer with one file of `size` pseudo-random (incompressible) bytes.
fn layer(size: usize) -> (Vec<u8>, String) {
    let mut data = Vec::with_capacity(size);
    let mut state = Sha256::digest(b"wharf fake registry").to_vec();
    while data.len() < size {
        state = Sha256::digest(&state).to_vec();
        data.extend_from_slice(&state);
    }
    data.truncate(size);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "payload.bin", data.as_slice())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// A gzip layer whose tar holds one file of `mib` MiB of zeros: a few KiB
/// compressed. Built from gzip members (which may be concatenated) so that
/// one MiB is compressed only once. Its diff ID is not computed: pulls of it
/// are expected to fail before the diff ID is checked.
pub fn zeros_layer(mib: usize) -> (Vec<u8>, String) {
    let gzip = |data: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    };
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros.bin").unwrap();
    header.set_size((mib as u64) << 20);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    let mebibyte = gzip(&vec![0u8; 1 << 20]);
    let mut layer = gzip(header.as_bytes());
    for _ in 0..mib {
        layer.extend_from_slice(&mebibyte);
    }
    layer.extend(gzip(&[0u8; 1024]));
    (layer, sha256(b"diff ID not computed"))
}

impl FakeRegistry {
    pub async fn start(fault: LayerFault, layer_size: usize) -> FakeRegistry {
        let (layer, diff_id) = layer(layer_size);
        Self::serve_layer(fault, layer, diff_id).await
    }

    /// Serves an image of one given (compressed) layer.
    pub async fn serve_layer(fault: LayerFault, layer: Vec<u8>, diff_id: String) -> FakeRegistry {
        let layer_digest = sha256(&layer);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        )
        .into_bytes();
        let config_digest = sha256(&config);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        )
        .into_bytes();
        let blobs = Arc::new(Blobs {
            manifest,
            config,
            layer,
            config_digest: config_digest.clone(),
            layer_digest: layer_digest.clone(),
            fault,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&blobs)));
            }
        });
        FakeRegistry {
            addr,
            config_digest,
            layer_digest,
            server,
        }
    }

    pub fn image(&self) -> String {
        format!("{}/fake/image:latest", self.addr)
    }
}

async fn serve(mut stream: TcpStream, blobs: Arc<Blobs>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let send_body = method != "HEAD";
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    if path == "/v2/" {
        respond(&mut stream, 200, "application/json", b"{}", send_body).await;
    } else if path.starts_with("/v2/fake/image/manifests/") {
        respond(&mut stream, 200, manifest_type, &blobs.manifest, send_body).await;
    } else if path == format!("/v2/fake/image/blobs/{}", blobs.config_digest) {
        respond(
            &mut stream,
            200,
            "application/octet-stream",
            &blobs.config,
            send_body,
        )
        .await;
    } else if path == format!("/v2/fake/image/blobs/{}", blobs.layer_digest) {
        serve_layer(&mut stream, &blobs).await;
    } else {
        respond(
            &mut stream,
            404,
            "application/json",
            br#"{"errors":[{"code":"NOT_FOUND"}]}"#,
            send_body,
        )
        .await;
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    send_body: bool,
) {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    if send_body {
        let _ = stream.write_all(body).await;
    }
}

async fn serve_layer(stream: &mut TcpStream, blobs: &Blobs) {
    let layer = &blobs.layer;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        layer.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let half = layer.len() / 2;
    match blobs.fault {
        LayerFault::None => {
            let _ = stream.write_all(layer).await;
        }
        LayerFault::WrongContent => {
            let mut tampered = layer.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 0xff;
            let _ = stream.write_all(&tampered).await;
        }
        LayerFault::Truncated => {
            let _ = stream.write_all(&layer[..half]).await;
        }
        LayerFault::Stall => {
            let _ = stream.write_all(&layer[..half]).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        LayerFault::Slow { bytes_per_second } => {
            let chunk = (bytes_per_second / 10).max(1);
            for piece in layer.chunks(chunk) {
                if stream.write_all(piece).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
