//! An upstream that records every byte it receives, per connection, and answers each request
//! with 200 and its path: proof that nothing (or something) reached the app.

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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
