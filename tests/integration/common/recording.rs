//! Upstreams that record every byte they receive: one served by hyper that answers each
//! request with 200 and its path (proof that nothing, or something, reached the app), and a
//! raw-socket HTTP/1.1 app with no HTTP library at all, for asserting on the exact bytes an
//! app receives (request line, header order and spelling, body framing).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

use super::serve::serve_each;

/// What the upstream has seen so far.
#[derive(Clone, Default)]
pub struct Recording {
    bytes: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<usize>>,
}

impl Recording {
    /// Every byte received, on all connections.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

/// Starts the recording upstream (HTTP/1.1 and h2c).
pub async fn recording_upstream() -> (SocketAddr, Recording) {
    let recording = Recording::default();
    let shared = recording.clone();
    let addr = serve_each(move |tcp| {
        *shared.connections.lock().unwrap() += 1;
        let io = Recorded {
            inner: tcp,
            into: shared.bytes.clone(),
        };
        async move {
            let service = hyper::service::service_fn(answer);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), service)
                .await;
        }
    })
    .await;
    (addr, recording)
}

/// The fixed answer of the raw app to every request but an upgrade.
pub const RAW_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
/// The raw app's answer to an `Upgrade` request; it then echoes every byte back.
pub const RAW_SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";

/// Starts a raw-socket HTTP/1.1 app: a plain `TcpListener` whose connections record every
/// byte read and, for each complete request (its head, then a `content-length` or chunked
/// body), write `RAW_RESPONSE`; a request with an `upgrade` header gets `RAW_SWITCHING` and
/// the connection becomes an echo. Nothing parses the request target.
pub async fn raw_upstream() -> (SocketAddr, Recording) {
    let recording = Recording::default();
    let shared = recording.clone();
    let addr = serve_each(move |tcp| {
        *shared.connections.lock().unwrap() += 1;
        raw_connection(tcp, shared.bytes.clone())
    })
    .await;
    (addr, recording)
}

async fn raw_connection(mut tcp: TcpStream, into: Arc<Mutex<Vec<u8>>>) {
    let mut pending = Vec::new();
    let mut upgraded = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        into.lock().unwrap().extend_from_slice(&buf[..n]);
        if upgraded {
            if tcp.write_all(&buf[..n]).await.is_err() {
                return;
            }
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some((length, upgrade)) = request_length(&pending) {
            pending.drain(..length);
            let answer = if upgrade { RAW_SWITCHING } else { RAW_RESPONSE };
            if tcp.write_all(answer).await.is_err() {
                return;
            }
            if upgrade {
                upgraded = true;
                if !pending.is_empty() && tcp.write_all(&pending).await.is_err() {
                    return;
                }
                break;
            }
        }
    }
}

/// The length of the first complete request in `data`, and whether it asks for an upgrade.
fn request_length(data: &[u8]) -> Option<(usize, bool)> {
    let head_end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let upgrade = field("upgrade").is_some();
    if field("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        return Some((head_end + chunked_length(&data[head_end..])?, upgrade));
    }
    let length: usize = field("content-length").map_or(0, |v| v.parse().unwrap());
    (data.len() >= head_end + length).then_some((head_end + length, upgrade))
}

/// The length of a complete chunked body at the start of `data` (trailers included).
fn chunked_length(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line = data[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[at..at + line]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        at += line + 2;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let line = data[at..].windows(2).position(|w| w == b"\r\n")?;
                at += line + 2;
                if line == 0 {
                    return Some(at);
                }
            }
        }
        if data.len() < at + size + 2 {
            return None;
        }
        at += size + 2;
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = format!("upstream saw {}", request.uri().path());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

struct Recorded {
    inner: TcpStream,
    into: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recorded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.into.lock().unwrap().extend_from_slice(&new);
        result
    }
}

impl AsyncWrite for Recorded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
