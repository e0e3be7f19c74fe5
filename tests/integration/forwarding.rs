//! Forwarding, docs/forwarding.md (and the limits of "Config reference" it enforces):
//! - a 64 MiB request body sent as a stream arrives whole at the app (HTTP/1.1 and HTTP/2);
//! - a 64 MiB response body streams back whole (HTTP/1.1 and HTTP/2);
//! - the request body reaches the app before the client has finished sending it, and the
//!   response body reaches the client before the app has finished sending it (streamed, not
//!   buffered whole);
//! - hop-by-hop request headers (`Connection` and what it names, `Keep-Alive`,
//!   `Proxy-Connection`, `Proxy-Authorization`, `TE: gzip`, `Upgrade` without
//!   `Connection: upgrade`) never reach the app; `TE: trailers` does;
//! - hop-by-hop response headers never reach the client; ordinary ones do;
//! - a client cannot remove its own XFCC by naming it in `Connection`;
//! - `X-Forwarded-For` appends the client address to what the client sent,
//!   `X-Forwarded-Proto` is `https`, `X-Forwarded-Host` is the authority, `Host`, method,
//!   path and query are unchanged (HTTP/1.1 and HTTP/2);
//! - an HTTP/1.1 WebSocket upgrade gets 101 and the upgraded connection is piped both ways;
//! - an unreachable app gets 502, one that closes or answers garbage 502, and a slow one 504,
//!   each with a one-line `text/plain` body that does not reveal the upstream;
//! - `ingress.transport: http2` speaks h2c to the app (the client's authority as `:authority`,
//!   no `Host`), the default speaks HTTP/1.1; gRPC-style response trailers come back from an
//!   h2c app;
//! - upstream HTTP/1.1 connections are pooled: sequential requests reuse them;
//! - an `Expect: 100-continue` upload arrives whole;
//! - a client upload slower than `timeouts.upstreamResponseMs` is not answered 504 (the
//!   timeout is the app's time to answer, not the client's time to send);
//! - `ingress.targetPort` is shorthand for a loopback upstream, and `upstream` wins over it;
//! - a request header block over `limits.maxRequestHeaderBytes` gets 431 over HTTP/1.1.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::polling::scrape_until;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// The host of the app every test talks to (covered by the test server certificate).
const HOST: &str = "fwd.example.test";
/// Size of one generated body chunk.
const CHUNK: usize = 256 * 1024;
/// 64 MiB in `CHUNK`s.
const LARGE_CHUNKS: u64 = 256;
/// How long a streaming test waits for data that a buffering proxy would hold back. Only a
/// deadlock guard: passing never depends on how fast anything is.
const STREAM_GUARD: Duration = Duration::from_secs(120);

/// A body fed frame by frame through a channel: never `Full`, no length known in advance.
struct ChannelBody(mpsc::Receiver<Frame<Bytes>>);

impl ChannelBody {
    fn new(buffer: usize) -> (mpsc::Sender<Frame<Bytes>>, Self) {
        let (tx, rx) = mpsc::channel(buffer);
        (tx, Self(rx))
    }

    /// A body of the given frames, already sent.
    fn of(frames: Vec<Frame<Bytes>>) -> Self {
        let (tx, body) = Self::new(frames.len().max(1));
        for frame in frames {
            tx.try_send(frame).unwrap();
        }
        body
    }

    /// A body of one data frame.
    fn data(data: impl Into<Bytes>) -> Self {
        Self::of(vec![Frame::data(data.into())])
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// Chunk `index` of a deterministic pseudo-random byte stream (xorshift64).
fn chunk(index: u64) -> Bytes {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < CHUNK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(out)
}

/// Length and SHA-256 (hex) of the first `chunks` chunks.
fn expected(chunks: u64) -> (u64, String) {
    let mut hasher = sha2::Sha256::new();
    for index in 0..chunks {
        hasher.update(chunk(index));
    }
    (chunks * CHUNK as u64, hex(&hasher.finalize()))
}

/// A body streaming the first `chunks` chunks, produced while it is being sent.
fn generated(chunks: u64) -> ChannelBody {
    let (tx, body) = ChannelBody::new(4);
    tokio::spawn(async move {
        for index in 0..chunks {
            if tx.send(Frame::data(chunk(index))).await.is_err() {
                return;
            }
        }
    });
    body
}

/// Reads a body to its end, returning its length and SHA-256 (hex).
async fn digest(mut body: Incoming) -> (u64, String) {
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            len += data.len() as u64;
            hasher.update(&data);
        }
    }
    (len, hex(&hasher.finalize()))
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<ChannelBody>> + Send>>
        + Send
        + Sync,
>;

/// A test upstream: its address, and how many TCP connections it has accepted.
struct TestUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

/// A test upstream (HTTP/1.1 and h2c on one port) answering every request with `handler`.
async fn upstream<F, Fut>(handler: F) -> TestUpstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<ChannelBody>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    let addr = common::serve::serve_each(move |tcp| {
        accepted.fetch_add(1, Ordering::SeqCst);
        let handler = handler.clone();
        async move {
            let service = hyper::service::service_fn(move |request| {
                let response = handler(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        }
    })
    .await;
    TestUpstream { addr, connections }
}

/// certgate with one `require` app for `HOST` in front of `upstream`, and a client that it
/// trusts; `edit` may change the config before it is loaded.
struct Fixture {
    gateway: Gateway,
    pki: Pki,
    client: Leaf,
}

impl Fixture {
    async fn start(upstream: SocketAddr, edit: impl FnOnce(&mut serde_json::Value)) -> Self {
        let pki = Pki::new();
        let dir = TempDir::new();
        pki.write(&dir);
        let mut app = app("fwd", &[HOST], upstream, "require");
        app["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
        let mut config = serde_json::json!({ "apps": [app] });
        edit(&mut config);
        let gateway = Gateway::start(dir, config).await;
        let client = pki.client("forwarding client");
        Self {
            gateway,
            pki,
            client,
        }
    }

    fn options(&self, http2: bool) -> ClientOptions {
        ClientOptions::new(&self.pki, HOST)
            .with_identity(self.client.identity())
            .http2(http2)
    }

    async fn connect(&self, http2: bool) -> Connection {
        Connection::open(self.gateway.addr, &self.options(http2))
            .await
            .unwrap_or_else(|f| panic!("handshake refused: {}", f.message))
    }

    /// Sends one request with a streaming body on a fresh connection; returns the response
    /// as soon as its header arrives.
    async fn send_streaming(
        &self,
        http2: bool,
        method: http::Method,
        path: &str,
        body: ChannelBody,
    ) -> Response<Incoming> {
        let tls = tls_stream(self.gateway.addr, &self.options(http2))
            .await
            .unwrap_or_else(|f| panic!("handshake refused: {}", f.message));
        let io = TokioIo::new(tls);
        let builder = Request::builder().method(method);
        if http2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let request = builder
                .uri(format!("https://{HOST}{path}"))
                .body(body)
                .unwrap();
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            let request = builder
                .uri(path)
                .header(http::header::HOST, HOST)
                .body(body)
                .unwrap();
            sender.send_request(request).await.unwrap()
        }
    }
}

fn version_name(http2: bool) -> &'static str {
    if http2 { "HTTP/2" } else { "HTTP/1.1" }
}

/// Asserts a response certgate answered itself: `status`, `text/plain`, one non-empty line
/// that does not reveal `secret` (e.g. the upstream address).
fn assert_own_error(reply: &Reply, status: StatusCode, secret: &str) {
    assert_eq!(
        reply.status,
        status,
        "body: {:?}",
        String::from_utf8_lossy(&reply.body)
    );
    let content_type = reply
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "content-type {content_type:?}"
    );
    let body = std::str::from_utf8(&reply.body).unwrap();
    let line = body.strip_suffix('\n').unwrap_or(body);
    assert!(
        !line.trim().is_empty() && !line.contains(['\n', '\r']),
        "not one line: {body:?}"
    );
    assert!(!body.contains(secret), "body reveals {secret}: {body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_streamed_request_body_arrives_whole_at_the_upstream() {
    let fixture = Fixture::start(echo_upstream().await, |_| {}).await;
    let (len, sha) = expected(LARGE_CHUNKS);
    for http2 in [false, true] {
        let response = fixture
            .send_streaming(
                http2,
                http::Method::POST,
                "/upload?big=1",
                generated(LARGE_CHUNKS),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{}", version_name(http2));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/upload?big=1");
        assert_eq!(echo["body_len"], len, "{}", version_name(http2));
        assert_eq!(echo["body_sha256"], sha.as_str(), "{}", version_name(http2));
    }
    fixture.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_body_streams_back_whole() {
    let app = upstream(|_request| async {
        Response::builder()
            .header("content-type", "application/octet-stream")
            .body(generated(LARGE_CHUNKS))
            .unwrap()
    })
    .await;
    let fixture = Fixture::start(app.addr, |_| {}).await;
    let expected = expected(LARGE_CHUNKS);
    for http2 in [false, true] {
        let mut conn = fixture.connect(http2).await;
        let request = conn.get(HOST, "/download");
        let response = conn.send_raw(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", version_name(http2));
        assert_eq!(
            digest(response.into_body()).await,
            expected,
            "{}",
            version_name(http2)
        );
    }
    fixture.gateway.stop().await;
}

/// A response that pauses longer than the park delay (docs/operations.md "Memory while idle") is still in flight:
/// the connection does not park under it, and serves its next request afterwards.
#[tokio::test]
async fn a_response_that_pauses_for_seconds_arrives_whole_and_the_connection_lives_on() {
    let app = upstream(|_request| async {
        let (tx, body) = ChannelBody::new(1);
        tokio::spawn(async move {
            for part in ["first ", "second ", "third"] {
                if tx.send(Frame::data(Bytes::from(part))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1200)).await;
            }
        });
        Response::new(body)
    })
    .await;
    let fixture = Fixture::start(app.addr, |_| {}).await;
    for http2 in [false, true] {
        let mut conn = fixture.connect(http2).await;
        for round in 0..2 {
            let request = conn.get(HOST, "/pauses");
            let response = conn.send_raw(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                &body[..],
                b"first second third",
                "{} response {round}",
                version_name(http2)
            );
        }
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn the_request_body_reaches_the_upstream_before_the_client_finishes_it() {
    let first = Bytes::from(vec![b'a'; 16 * 1024]);
    let first_len = first.len();
    let (seen_tx, mut seen_rx) = mpsc::channel::<()>(1);
    let app = upstream(move |request: Request<Incoming>| {
        let seen_tx = seen_tx.clone();
        async move {
            let mut body = request.into_body();
            let mut total = 0;
            let mut told = false;
            while let Some(Ok(frame)) = body.frame().await {
                total += frame.into_data().map_or(0, |d| d.len());
                if !told && total >= first_len {
                    told = true;
                    let _ = seen_tx.send(()).await;
                }
            }
            Response::new(ChannelBody::data(total.to_string()))
        }
    })
    .await;
    let fixture = Fixture::start(app.addr, |_| {}).await;
    for http2 in [false, true] {
        let (tx, body) = ChannelBody::new(1);
        let sending = fixture.send_streaming(http2, http::Method::PUT, "/stream", body);
        // The response header only comes after the whole body, so send concurrently.
        let (response, ()) = tokio::join!(sending, async {
            tx.send(Frame::data(first.clone())).await.unwrap();
            tokio::time::timeout(STREAM_GUARD, seen_rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: the app never saw the first part of a body still being sent \
                         (certgate buffers request bodies)",
                        version_name(http2)
                    )
                })
                .unwrap();
            tx.send(Frame::data(Bytes::from_static(b"end")))
                .await
                .unwrap();
            drop(tx);
        });
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, (first_len + 3).to_string().as_bytes());
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn the_response_body_reaches_the_client_before_the_upstream_finishes_it() {
    let go = Arc::new(Notify::new());
    let first = Bytes::from(vec![b'b'; 16 * 1024]);
    let app = {
        let go = go.clone();
        let first = first.clone();
        upstream(move |_request| {
            let go = go.clone();
            let first = first.clone();
            async move {
                let (tx, body) = ChannelBody::new(1);
                tokio::spawn(async move {
                    let _ = tx.send(Frame::data(first)).await;
                    go.notified().await;
                    let _ = tx.send(Frame::data(Bytes::from_static(b"end"))).await;
                });
                Response::new(body)
            }
        })
        .await
    };
    let fixture = Fixture::start(app.addr, |_| {}).await;
    for http2 in [false, true] {
        let mut conn = fixture.connect(http2).await;
        let request = conn.get(HOST, "/stream");
        let response = conn.send_raw(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut received = Vec::new();
        while received.len() < first.len() {
            let frame = tokio::time::timeout(STREAM_GUARD, body.frame())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: the first part of a response still being sent never arrived \
                         (certgate buffers response bodies)",
                        version_name(http2)
                    )
                })
                .expect("body ended early")
                .unwrap();
            received.extend_from_slice(&frame.into_data().unwrap_or_default());
        }
        go.notify_one();
        while let Some(frame) = body.frame().await {
            received.extend_from_slice(&frame.unwrap().into_data().unwrap_or_default());
        }
        let mut whole = first.to_vec();
        whole.extend_from_slice(b"end");
        assert_eq!(received, whole, "{}", version_name(http2));
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn hop_by_hop_request_headers_do_not_reach_the_upstream() {
    let fixture = Fixture::start(echo_upstream().await, |_| {}).await;
    let mut conn = fixture.connect(false).await;
    let mut request = conn.get(HOST, "/hop-request");
    let headers = request.headers_mut();
    headers.insert("connection", "x-secret".parse().unwrap());
    headers.insert("x-secret", "named by Connection".parse().unwrap());
    headers.insert("keep-alive", "timeout=5, max=100".parse().unwrap());
    headers.insert("proxy-connection", "keep-alive".parse().unwrap());
    headers.insert("proxy-authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    headers.insert("te", "gzip".parse().unwrap());
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert("x-end-to-end", "kept".parse().unwrap());
    let reply = conn.send(request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    for name in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert_eq!(
            reply.upstream_header(name),
            Vec::<String>::new(),
            "{name} reached the app"
        );
    }
    assert_eq!(reply.upstream_header("x-end-to-end"), ["kept"]);
    drop(conn);
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn te_trailers_reaches_the_upstream() {
    let fixture = Fixture::start(echo_upstream().await, |_| {}).await;
    let mut conn = fixture.connect(false).await;
    let mut request = conn.get(HOST, "/te");
    request
        .headers_mut()
        .insert("te", "trailers".parse().unwrap());
    let reply = conn.send(request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.upstream_header("te"), ["trailers"]);
    drop(conn);
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let fixture = Fixture::start(echo_upstream().await, |_| {}).await;
    for http2 in [false, true] {
        let mut conn = fixture.connect(http2).await;
        let request = conn.get(HOST, "/hop");
        let reply = conn.send(request).await.unwrap();
        let label = version_name(http2);
        assert_eq!(reply.status, StatusCode::OK, "{label}");
        assert_eq!(&reply.body[..], b"hop", "{label}");
        assert_eq!(
            reply.headers.get("x-app").map(|v| v.as_bytes()),
            Some(&b"kept"[..]),
            "{label}"
        );
        for name in ["x-upstream-secret", "keep-alive", "proxy-authenticate"] {
            assert!(
                !reply.headers.contains_key(name),
                "{label}: {name} reached the client: {:?}",
                reply.headers
            );
        }
        // certgate may say `Connection: close|keep-alive` on its own hop, but never repeat the
        // app's.
        for value in reply.headers.get_all("connection") {
            assert!(
                !value
                    .to_str()
                    .unwrap()
                    .to_ascii_lowercase()
                    .contains("x-upstream-secret"),
                "{label}: the app's Connection header reached the client"
            );
        }
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn x_forwarded_headers_are_added_and_host_method_path_and_query_are_unchanged() {
    let fixture = Fixture::start(echo_upstream().await, |_| {}).await;
    let authority = format!("{HOST}:{}", fixture.gateway.addr.port());
    let path = "/a/b%20c/?q=1&r=%2F&q=2";
    for http2 in [false, true] {
        let label = version_name(http2);
        let mut conn = fixture.connect(http2).await;
        let mut request = conn.request(
            http::Method::DELETE,
            &authority,
            path,
            Bytes::from_static(b"body"),
        );
        let headers = request.headers_mut();
        headers.append("x-forwarded-for", "203.0.113.7".parse().unwrap());
        headers.append("x-forwarded-for", "198.51.100.2".parse().unwrap());
        headers.insert("x-forwarded-proto", "http".parse().unwrap());
        headers.insert("x-forwarded-host", "spoofed.example".parse().unwrap());
        let reply = conn.send(request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{label}");
        let echo = reply.echo();
        assert_eq!(echo["method"], "DELETE", "{label}");
        assert_eq!(echo["path"], path, "{label}");
        assert_eq!(echo["body_len"], 4, "{label}");
        assert_eq!(
            reply.upstream_header("host"),
            [authority.as_str()],
            "{label}"
        );
        assert_eq!(
            reply.upstream_header("x-forwarded-for"),
            ["203.0.113.7, 198.51.100.2, 127.0.0.1"],
            "{label}"
        );
        assert_eq!(
            reply.upstream_header("x-forwarded-proto"),
            ["https"],
            "{label}"
        );
        assert_eq!(
            reply.upstream_header("x-forwarded-host"),
            [authority.as_str()],
            "{label}"
        );
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_is_the_client_address_when_the_client_sent_none() {
    let fixture = Fixture::start(echo_upstream().await, |_| {}).await;
    let mut conn = fixture.connect(false).await;
    let request = conn.get(HOST, "/xff");
    let reply = conn.send(request).await.unwrap();
    assert_eq!(reply.upstream_header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(reply.upstream_header("x-forwarded-host"), [HOST]);
    drop(conn);
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn a_websocket_upgrade_over_http1_is_piped_both_ways() {
    let fixture = Fixture::start(echo_upstream().await, |_| {}).await;
    let mut conn = fixture.connect(false).await;
    let request = conn.websocket_get(HOST, "/ws");
    let response = conn.send_raw(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers().get("upgrade").map(|v| v.as_bytes()),
        Some(&b"websocket"[..])
    );
    let upgraded = hyper::upgrade::on(response)
        .await
        .expect("the client side of the upgrade");
    let mut io = TokioIo::new(upgraded);

    // A small message, then a large one written and read at the same time.
    io.write_all(b"hello through certgate").await.unwrap();
    let mut back = [0u8; 22];
    io.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello through certgate");

    let large: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = tokio::io::split(io);
    let write = async {
        writer.write_all(&large).await.unwrap();
        writer.flush().await.unwrap();
    };
    let read = async {
        let mut echoed = vec![0u8; large.len()];
        reader.read_exact(&mut echoed).await.unwrap();
        echoed
    };
    let ((), echoed) = tokio::join!(write, read);
    assert!(echoed == large, "the upgraded connection corrupted bytes");
}

#[tokio::test]
async fn an_unreachable_upstream_gets_502_with_a_one_line_plain_body() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let fixture = Fixture::start(dead, |_| {}).await;
    for http2 in [false, true] {
        let mut conn = fixture.connect(http2).await;
        let request = conn.get(HOST, "/anything");
        let reply = conn.send(request).await.unwrap();
        assert_own_error(&reply, StatusCode::BAD_GATEWAY, &dead.port().to_string());
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn a_slow_upstream_gets_504_after_the_upstream_response_timeout() {
    let echo = echo_upstream().await;
    let fixture = Fixture::start(echo, |config| {
        config["timeouts"] = serde_json::json!({ "upstreamResponseMs": 300 });
    })
    .await;
    for http2 in [false, true] {
        let mut conn = fixture.connect(http2).await;
        let request = conn.get(HOST, "/slow");
        let reply = conn.send(request).await.unwrap();
        assert_own_error(
            &reply,
            StatusCode::GATEWAY_TIMEOUT,
            &echo.port().to_string(),
        );
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn transport_http2_speaks_h2c_to_the_upstream() {
    let fixture = Fixture::start(echo_upstream().await, |config| {
        config["apps"][0]["ingress"]["transport"] = "http2".into();
    })
    .await;
    for http2 in [false, true] {
        let label = version_name(http2);
        let mut conn = fixture.connect(http2).await;
        let request = conn.request(
            http::Method::POST,
            HOST,
            "/grpc?x=1",
            Bytes::from_static(b"payload"),
        );
        let reply = conn.send(request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{label}: {:?}", reply.body);
        let echo = reply.echo();
        assert_eq!(echo["version"], "HTTP/2.0", "{label}");
        assert_eq!(echo["path"], "/grpc?x=1", "{label}");
        // RFC 9113 §8.3.1: the client's authority travels as `:authority`, with no `Host`
        // beside it.
        assert_eq!(echo["authority"], HOST, "{label}");
        assert!(reply.upstream_header("host").is_empty(), "{label}");
        assert_eq!(echo["body_len"], 7, "{label}");
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn the_default_transport_speaks_http1_to_the_upstream() {
    let fixture = Fixture::start(echo_upstream().await, |_| {}).await;
    for http2 in [false, true] {
        let mut conn = fixture.connect(http2).await;
        let request = conn.get(HOST, "/version");
        let reply = conn.send(request).await.unwrap();
        assert_eq!(
            reply.echo()["version"],
            "HTTP/1.1",
            "{}",
            version_name(http2)
        );
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn ingress_target_port_is_shorthand_for_a_loopback_upstream() {
    let echo = echo_upstream().await;
    let fixture = Fixture::start(echo, |config| {
        let app = &mut config["apps"][0];
        app.as_object_mut().unwrap().remove("upstream");
        app["ingress"]["targetPort"] = echo.port().into();
    })
    .await;
    let mut conn = fixture.connect(false).await;
    let request = conn.get(HOST, "/target-port");
    let reply = conn.send(request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.echo()["path"], "/target-port");
    drop(conn);
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn upstream_wins_over_ingress_target_port() {
    let dead_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let fixture = Fixture::start(echo_upstream().await, |config| {
        config["apps"][0]["ingress"]["targetPort"] = dead_port.into();
    })
    .await;
    let mut conn = fixture.connect(false).await;
    let request = conn.get(HOST, "/both");
    let reply = conn.send(request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.echo()["path"], "/both");
    drop(conn);
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn a_request_header_block_over_the_limit_gets_431_over_http1() {
    let fixture = Fixture::start(echo_upstream().await, |config| {
        config["limits"] = serde_json::json!({ "maxRequestHeaderBytes": 9000 });
    })
    .await;

    // Under the limit: served.
    let mut conn = fixture.connect(false).await;
    let mut request = conn.get(HOST, "/small");
    request
        .headers_mut()
        .insert("x-filler", "f".repeat(2000).parse().unwrap());
    let reply = conn.send(request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    drop(conn);

    // Over it: 431, and the app never sees the request.
    let mut conn = fixture.connect(false).await;
    let mut request = conn.get(HOST, "/large");
    request
        .headers_mut()
        .insert("x-filler", "f".repeat(20_000).parse().unwrap());
    let reply = conn
        .send(request)
        .await
        .unwrap_or_else(|f| panic!("no response to an oversized header block: {}", f.message));
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    drop(conn);
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn a_connection_header_cannot_remove_the_xfcc_of_a_verified_client() {
    let fixture = Fixture::start(echo_upstream().await, |_| {}).await;
    for named in [
        "x-forwarded-client-cert",
        "X-Forwarded-Client-Cert, x-secret",
    ] {
        let mut conn = fixture.connect(false).await;
        let mut request = conn.get(HOST, "/xfcc-named-by-connection");
        request
            .headers_mut()
            .insert("connection", named.parse().unwrap());
        let reply = conn.send(request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        let xfcc = reply.xfcc().unwrap_or_else(|| {
            panic!(
                "`Connection: {named}` removed the XFCC of a verified client; \
                 the app saw no client certificate"
            )
        });
        assert!(
            xfcc.starts_with(&format!("Hash={}", fixture.client.hash_hex())),
            "{xfcc}"
        );
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn grpc_style_trailers_come_back_from_an_h2c_upstream() {
    let app = upstream(|request: Request<Incoming>| async move {
        let version = format!("{:?}", request.version());
        let te = request
            .headers()
            .get("te")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let _ = request.into_body().collect().await;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "all%20good".parse().unwrap());
        Response::builder()
            .header("content-type", "application/grpc")
            .header("x-upstream-version", version)
            .header("x-upstream-te", te)
            .body(ChannelBody::of(vec![
                Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi")),
                Frame::trailers(trailers),
            ]))
            .unwrap()
    })
    .await;
    let fixture = Fixture::start(app.addr, |config| {
        config["apps"][0]["ingress"]["transport"] = "http2".into();
    })
    .await;
    let mut conn = fixture.connect(true).await;
    let mut request = conn.request(
        http::Method::POST,
        HOST,
        "/echo.Echo/Say",
        Bytes::from_static(b"\0\0\0\0\x02yo"),
    );
    let headers = request.headers_mut();
    headers.insert("content-type", "application/grpc".parse().unwrap());
    headers.insert("te", "trailers".parse().unwrap());
    let response = conn.send_raw(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-upstream-version"], "HTTP/2.0");
    assert_eq!(response.headers()["x-upstream-te"], "trailers");
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("the app's trailers did not reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "all%20good");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
    drop(conn);
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn upstream_http1_connections_are_pooled_and_reused() {
    let app = upstream(|_request| async { Response::new(ChannelBody::data("pooled")) }).await;
    let fixture = Fixture::start(app.addr, |_| {}).await;
    const REQUESTS: usize = 6;
    for _ in 0..REQUESTS {
        // A new downstream connection each time: only the upstream side can be reused.
        let mut conn = fixture.connect(false).await;
        let request = conn.get(HOST, "/pooled");
        let reply = conn.send(request).await.unwrap();
        assert_eq!(&reply.body[..], b"pooled");
    }
    let opened = app.connections.load(Ordering::SeqCst);
    assert!(
        opened < REQUESTS,
        "{REQUESTS} sequential requests opened {opened} upstream connections: none was reused"
    );
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn an_upstream_that_breaks_the_connection_gets_502() {
    for garbage in [&b""[..], b"this is not HTTP\r\n\r\n"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let broken = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(garbage).await;
                drop(tcp);
            }
        });
        let fixture = Fixture::start(broken, |_| {}).await;
        let mut conn = fixture.connect(false).await;
        let request = conn.get(HOST, "/broken");
        let reply = conn.send(request).await.unwrap();
        assert_own_error(&reply, StatusCode::BAD_GATEWAY, &broken.port().to_string());
        drop(conn);
        fixture.gateway.stop().await;
    }
}

#[tokio::test]
async fn an_expect_100_continue_upload_arrives_whole() {
    let fixture = Fixture::start(echo_upstream().await, |_| {}).await;
    let body = Bytes::from(vec![b'x'; 3 * 1024 * 1024]);
    for http2 in [false, true] {
        let mut conn = fixture.connect(http2).await;
        let mut request = conn.request(http::Method::POST, HOST, "/upload", body.clone());
        request
            .headers_mut()
            .insert("expect", "100-continue".parse().unwrap());
        let reply = conn.send(request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", version_name(http2));
        let echo = reply.echo();
        assert_eq!(echo["body_len"], body.len(), "{}", version_name(http2));
        assert_eq!(
            echo["body_sha256"],
            hex(&sha2::Sha256::digest(&body)),
            "{}",
            version_name(http2)
        );
    }
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn a_slow_client_upload_is_not_cut_off_by_the_upstream_response_timeout() {
    let fixture = Fixture::start(echo_upstream().await, |config| {
        config["timeouts"] = serde_json::json!({ "upstreamResponseMs": 300 });
    })
    .await;
    let (tx, body) = ChannelBody::new(1);
    let sending = fixture.send_streaming(false, http::Method::POST, "/slow-upload", body);
    let (response, ()) = tokio::join!(sending, async {
        for part in [
            &b"first part, "[..],
            b"then the client pauses, ",
            b"then the end",
        ] {
            if tx
                .send(Frame::data(Bytes::from_static(part)))
                .await
                .is_err()
            {
                break; // the request was already answered
            }
            // The client, not the app, is slow: three times the configured timeout.
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        drop(tx);
    });
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        status,
        StatusCode::OK,
        "the app answered as soon as the body ended, yet certgate said {status}: {:?}",
        String::from_utf8_lossy(&body)
    );
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_len"], 48);
    fixture.gateway.stop().await;
}

#[tokio::test]
async fn a_client_aborting_its_upload_is_a_client_error_not_an_upstream_failure() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let ignore = app("ignore", &[HOST], upstream, "ignore");
    let gateway = Gateway::start(
        dir,
        serde_json::json!({ "admin": "127.0.0.1:0", "apps": [ignore] }),
    )
    .await;
    let admin = gateway.admin.unwrap();
    let options = ClientOptions::new(&pki, HOST);
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100000\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&[b'x'; 1000]).await.unwrap();
    tls.flush().await.unwrap();
    // Let the request reach the upstream, then vanish mid-body.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tls);

    let series = |code: u16| {
        format!(r#"certgate_requests_total{{app="ignore",client_cert="none",code="{code}"}}"#)
    };
    let text = scrape_until(admin, 201, Duration::from_millis(20), |text| {
        let counted = |code| metric_value(text, &series(code)).unwrap_or(0.0);
        counted(400) + counted(502) >= 1.0
    })
    .await;
    // No 502 series at all is also no 502: the 400 below shows the family is scraped.
    assert_eq!(
        metric_value(&text, &series(502)).unwrap_or(0.0),
        0.0,
        "the client's abort was blamed on the app"
    );
    assert_eq!(metric(&text, &series(400)), 1.0);
    gateway.stop().await;
}
