//! A minimal SPDY/3.1 client for tests: the HTTP upgrade, then raw
//! frames, with its own header compression contexts, so that tests see
//! exactly what the server puts on the wire.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::frame::{self, Control, FrameHead, FLAG_FIN};
use super::headers::{Compressor, Decompressor, Headers};

pub struct Client {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    compressor: Compressor,
    pub decompressor: Decompressor,
    next_id: u32,
}

#[derive(Debug)]
pub enum Received {
    Control(Control),
    Data {
        stream_id: u32,
        data: Bytes,
        fin: bool,
    },
}

/// The status line and headers of the HTTP response.
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET url` with `extra` headers; returns the response head and,
/// on 101, the connection.
pub async fn request(url: &str, extra: &[(&str, &str)]) -> (Head, Option<Client>) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let tcp = TcpStream::connect(authority).await.unwrap();
    let (read, mut write) = tcp.into_split();
    let mut text = format!("POST {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    write.write_all(text.as_bytes()).await.unwrap();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        read.read_line(&mut line).await.unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').unwrap();
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let head = Head { status, headers };
    if status != 101 {
        return (head, None);
    }
    let client = Client {
        read,
        write,
        compressor: Compressor::new(),
        decompressor: Decompressor::new(),
        next_id: 1,
    };
    (head, Some(client))
}

pub async fn upgrade(url: &str, protocols: &[&str]) -> (Head, Option<Client>) {
    let mut extra = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
    for protocol in protocols {
        extra.push(("X-Stream-Protocol-Version", protocol));
    }
    request(url, &extra).await
}

impl Client {
    /// Opens a stream (SYN_STREAM) with `headers`; returns its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let header_block = self.compressor.compress(headers).into();
        let syn = Control::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            header_block,
        };
        self.send_control(syn).await;
        id
    }

    pub async fn send_control(&mut self, control: Control) {
        self.write.write_all(&control.encode()).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    pub async fn send_data(&mut self, stream_id: u32, data: &[u8], fin: bool) {
        let flags = if fin { FLAG_FIN } else { 0 };
        let head = frame::data_head(stream_id, flags, data.len());
        self.write.write_all(&head).await.unwrap();
        self.write.write_all(data).await.unwrap();
    }

    /// The next frame; `None` at the end of the connection.
    pub async fn next(&mut self) -> Option<Received> {
        let mut head = [0u8; frame::HEADER_LEN];
        self.read.read_exact(&mut head).await.ok()?;
        match FrameHead::parse(&head) {
            FrameHead::Control {
                kind,
                flags,
                length,
                ..
            } => {
                let mut payload = vec![0u8; length];
                self.read.read_exact(&mut payload).await.ok()?;
                let control = Control::parse(kind, flags, payload.into()).unwrap();
                if let Control::SynReply { header_block, .. } = &control {
                    self.decompressor.decompress(header_block).unwrap();
                }
                Some(Received::Control(control))
            }
            FrameHead::Data {
                stream_id,
                flags,
                length,
            } => {
                let mut data = vec![0u8; length];
                self.read.read_exact(&mut data).await.ok()?;
                Some(Received::Data {
                    stream_id,
                    data: data.into(),
                    fin: flags & FLAG_FIN != 0,
                })
            }
        }
    }

    /// Reads until each of `streams` has ended (FIN or reset) or the
    /// connection ends; returns what each carried, and the control
    /// frames seen.
    pub async fn collect(&mut self, streams: &[u32]) -> (HashMap<u32, Vec<u8>>, Vec<Control>) {
        let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut open: Vec<u32> = streams.to_vec();
        let mut controls = Vec::new();
        while !open.is_empty() {
            match self.next().await {
                None => break,
                Some(Received::Data {
                    stream_id,
                    data: bytes,
                    fin,
                }) => {
                    data.entry(stream_id).or_default().extend_from_slice(&bytes);
                    if fin {
                        open.retain(|&id| id != stream_id);
                    }
                }
                Some(Received::Control(control)) => {
                    if let Control::RstStream { stream_id, .. } = control {
                        open.retain(|&id| id != stream_id);
                    }
                    controls.push(control);
                }
            }
        }
        (data, controls)
    }
}

pub fn headers_of(list: &Headers) -> Vec<(&str, &str)> {
    list.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}
