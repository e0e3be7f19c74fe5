//! WebSocket pieces for tests: an upstream that counts every request it receives (HTTP/1.1
//! and h2c) and echoes bytes on upgraded `/ws` connections, the client side of an HTTP/1.1
//! upgrade through certgate, and a gate that holds connections to a responder until the test
//! releases them (to line up concurrent lookups).

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::Connection;
use super::polling::until;

/// An app that counts what reaches it.
pub struct CountingUpstream {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    upgrades: Arc<AtomicUsize>,
    open_pipes: Arc<AtomicUsize>,
}

impl CountingUpstream {
    /// Requests received, upgrades included.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Upgrade requests received on `/ws`.
    pub fn upgrades(&self) -> usize {
        self.upgrades.load(Ordering::SeqCst)
    }

    /// Upgraded connections still open at the app.
    pub fn open_pipes(&self) -> usize {
        self.open_pipes.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until no upgraded connection is open at the app.
    pub async fn wait_for_no_open_pipe(&self) {
        let closed = until(300, Duration::from_millis(50), || self.open_pipes() == 0).await;
        assert!(closed, "an upgraded connection stayed open at the app");
    }
}

/// Starts an app that answers `ok` to any request and, on `/ws`, accepts an upgrade and
/// echoes the bytes of the upgraded connection.
pub async fn counting_upstream() -> CountingUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = CountingUpstream {
        addr,
        requests: Arc::new(AtomicUsize::new(0)),
        upgrades: Arc::new(AtomicUsize::new(0)),
        open_pipes: Arc::new(AtomicUsize::new(0)),
    };
    let counters = (
        upstream.requests.clone(),
        upstream.upgrades.clone(),
        upstream.open_pipes.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let counters = counters.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let counters = counters.clone();
                    async move { answer(request, counters) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    upstream
}

type Counters = (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>);

fn answer(
    mut request: Request<Incoming>,
    (requests, upgrades, open_pipes): Counters,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    requests.fetch_add(1, Ordering::SeqCst);
    if request.uri().path() != "/ws" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    upgrades.fetch_add(1, Ordering::SeqCst);
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            open_pipes.fetch_add(1, Ordering::SeqCst);
            let mut io = TokioIo::new(upgraded);
            let (mut reader, mut writer) = tokio::io::split(&mut io);
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
            open_pipes.fetch_sub(1, Ordering::SeqCst);
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .unwrap())
}

impl Connection {
    /// A GET for `authority` + `path` asking for a WebSocket upgrade (RFC 6455's sample key).
    pub fn websocket_get(&self, authority: &str, path: &str) -> Request<Full<Bytes>> {
        let mut request = self.get(authority, path);
        let headers = request.headers_mut();
        headers.insert("connection", "upgrade".parse().unwrap());
        headers.insert("upgrade", "websocket".parse().unwrap());
        headers.insert("sec-websocket-version", "13".parse().unwrap());
        headers.insert(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        request
    }
}

/// Asks for a WebSocket upgrade of `/ws` on an HTTP/1.1 connection: the upgraded stream,
/// or the status (or failure) that came instead.
pub async fn upgrade(connection: &mut Connection, host: &str) -> Result<TokioIo<Upgraded>, String> {
    let request = connection.websocket_get(host, "/ws");
    let response = connection
        .send_raw(request)
        .await
        .map_err(|failure| failure.message)?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("answered {}", response.status()));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|error| error.to_string())?;
    Ok(TokioIo::new(upgraded))
}

/// Sends `message` on an upgraded stream and reads the echo back.
pub async fn echo(io: &mut TokioIo<Upgraded>, message: &[u8]) {
    io.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    io.read_exact(&mut back).await.unwrap();
    assert_eq!(back, message, "the echo came back changed");
}

/// Waits (bounded) until certgate closes an upgraded stream; false if it is still open.
pub async fn closed_by_certgate(io: &mut TokioIo<Upgraded>) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(20), io.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected bytes on the upgraded stream"),
        Err(_) => false,
    }
}

/// A TCP proxy that counts connections and holds each until `release`, then pipes it to
/// `target` (certgate pools nothing, so one connection is one lookup).
pub struct Gate {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl Gate {
    pub fn start(target: SocketAddr) -> Self {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let (counter, gate) = (connections.clone(), open.clone());
        std::thread::spawn(move || {
            for downstream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                let gate = gate.clone();
                std::thread::spawn(move || {
                    let (lock, opened) = &*gate;
                    let mut released = lock.lock().unwrap();
                    while !*released {
                        released = opened.wait(released).unwrap();
                    }
                    drop(released);
                    let Ok(upstream) = StdStream::connect(target) else {
                        return;
                    };
                    super::revocation::splice(&downstream, &upstream);
                });
            }
        });
        Self {
            addr,
            connections,
            open,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `count` connections arrived.
    pub async fn wait_for_connections(&self, count: usize) {
        let arrived = until(300, Duration::from_millis(50), || {
            self.connections() >= count
        })
        .await;
        assert!(
            arrived,
            "expected {count} connections, saw {}",
            self.connections()
        );
    }

    /// Lets every held and later connection through.
    pub fn release(&self) {
        let (lock, opened) = &*self.open;
        *lock.lock().unwrap() = true;
        opened.notify_all();
    }
}
