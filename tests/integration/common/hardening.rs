//! Helpers for the hardening suites: clients bound to a chosen loopback address, upstreams that
//! count, stall or stream without end, the real binary started with an admin listener, and a
//! process's resident memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;

use super::serve::serve_each;
use super::{ClientOptions, Failure, failure};

/// A TLS stream to certgate from `local` (e.g. 127.0.0.2, also loopback on Linux).
pub async fn tls_stream_from(
    local: IpAddr,
    addr: SocketAddr,
    options: &ClientOptions,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Failure> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    let tcp = socket.connect(addr).await.map_err(|e| failure(&e))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(options.tls_config()));
    let name = rustls::pki_types::ServerName::try_from(
        options.sni.clone().unwrap_or_else(|| "localhost".into()),
    )
    .unwrap();
    connector.connect(name, tcp).await.map_err(|e| failure(&e))
}

/// An upstream that answers every request 200 `counted` and counts them.
pub async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let addr = serve_each(move |tcp| {
        let counter = counter.clone();
        async move {
            let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"counted"))))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        }
    })
    .await;
    (addr, count)
}

/// An HTTP/1.1 upstream that reads each request's head, answers with a header promising 1000
/// bytes, sends 10 of them and goes silent. Each connection reports on the channel when
/// certgate closes it.
pub async fn stalling_upstream() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve_each(move |mut tcp| {
        let closed_tx = closed_tx.clone();
        async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                .await;
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = closed_tx.send(());
        }
    })
    .await;
    (addr, closed_rx)
}

/// An upstream whose every response is an endless body of 16 KiB chunks, produced as fast as
/// it is read.
pub async fn endless_upstream() -> SocketAddr {
    serve_each(|tcp| async move {
        let service = hyper::service::service_fn(|_: Request<Incoming>| async {
            let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
            Ok::<_, hyper::Error>(Response::new(Endless(chunk)))
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), service)
            .await;
    })
    .await
}

/// A response body that never ends: the same chunk, as fast as it is asked for.
struct Endless(Bytes);

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(Some(Ok(Frame::data(self.0.clone()))))
    }
}

/// The resident memory of process `pid`, in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Writes the start of a request header on `tls`, then one header byte every 100 ms, never
/// ending it; whether certgate cut the connection off within 15 s (a paused clock makes that
/// instant).
pub async fn cut_off_while_trickling<S: tokio::io::AsyncWrite + Unpin>(tls: &mut S) -> bool {
    tls.write_all(b"GET / HTTP/1.1\r\nHost: ignore.example.test\r\n")
        .await
        .unwrap();
    let trickle = async {
        for _ in 0..200 {
            if tls.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), trickle)
        .await
        .is_ok()
}
