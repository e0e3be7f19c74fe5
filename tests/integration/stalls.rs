//! Stalled bodies are bounded (docs/operations.md "Limits under attack"):
//! - a request body that stops arriving is answered 408 after requestBodyIdleMs, over HTTP/1.1
//!   and HTTP/2, and counted as `request_body_idle`; a trickle that keeps arriving is served;
//! - an HTTP/2 request whose declared body never comes gets 408 as well;
//! - an app that sends its response header and goes silent is cut off after upstreamIdleMs:
//!   the HTTP/1.1 connection is closed, the HTTP/2 stream reset (the connection goes on), the
//!   upstream connection is closed rather than reused, and it is counted as `upstream_idle`;
//! - an upgraded (WebSocket) connection keeps its own rule: one that carries bytes stays open
//!   past idleMs, a quiet one is closed after idleMs.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::hardening::stalling_upstream;
use common::polling::poll;
use common::*;
use http_body_util::BodyExt as _;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HOST: &str = "ignore.example.test";
/// Upper bound for anything that should happen after a sub-second timeout.
const PATIENCE: Duration = Duration::from_secs(15);

async fn gateway(pki: &Pki, upstream: std::net::SocketAddr) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    let config = serde_json::json!({
        "admin": "127.0.0.1:0",
        "apps": [app("ignore", &[HOST], upstream, "ignore")],
        "timeouts": { "requestBodyIdleMs": 400, "upstreamIdleMs": 400 },
    });
    Gateway::start(dir, config).await
}

async fn stalled(gateway: &Gateway, reason: &str) -> f64 {
    let text = scrape(gateway.admin.unwrap()).await;
    metric(
        &text,
        &format!(r#"certgate_stalled_requests_total{{app="ignore",reason="{reason}"}}"#),
    )
}

/// Waits until the counter of `reason` reaches `want` (the guard counts as the request ends).
async fn assert_stalled(gateway: &Gateway, reason: &str, want: f64) {
    let seen = poll(
        200,
        Duration::from_millis(25),
        async || stalled(gateway, reason).await,
        |&seen| seen >= want,
    )
    .await;
    assert_eq!(
        seen, want,
        "certgate_stalled_requests_total{{reason={reason}}}"
    );
}

/// A request body that never yields a byte and never ends.
struct Silent;

impl hyper::body::Body for Silent {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn http1_request_body_that_stops_gets_408() {
    let pki = Pki::new();
    let gateway = gateway(&pki, echo_upstream().await).await;
    let options = ClientOptions::new(&pki, HOST);
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    tls.write_all(
        format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n0123456789")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the stalled upload was never cut off");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert_stalled(&gateway, "request_body_idle", 1.0).await;
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_requests_total{app="ignore",client_cert="none",code="408"}"#
        ),
        1.0
    );
    gateway.stop().await;
}

#[tokio::test]
async fn http1_request_body_that_keeps_trickling_is_served() {
    let pki = Pki::new();
    let gateway = gateway(&pki, echo_upstream().await).await;
    let options = ClientOptions::new(&pki, HOST);
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    tls.write_all(
        format!(
            "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Each gap is well inside requestBodyIdleMs (400 ms); the whole upload is longer.
    for byte in b"abcde" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tls.write_all(&[*byte]).await.unwrap();
    }
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains("\"body_len\":5"), "{text}");
    assert_eq!(stalled(&gateway, "request_body_idle").await, 0.0);
    gateway.stop().await;
}

#[tokio::test]
async fn http2_request_whose_declared_body_never_comes_gets_408() {
    let pki = Pki::new();
    let gateway = gateway(&pki, echo_upstream().await).await;
    let options = ClientOptions::new(&pki, HOST).http2(true);
    let tls = tls_stream(gateway.addr, &options).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("https://{HOST}/upload"))
        .header("content-length", "100")
        .body(Silent)
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("the stream with no body was never answered")
        .unwrap();
    assert_eq!(response.status(), 408);
    assert_stalled(&gateway, "request_body_idle", 1.0).await;
    gateway.stop().await;
}

/// certgate in front of an upstream that stops sending its response body: a request on a
/// connection with `options` gets the header, then the body is cut off (not made to look
/// complete), the upstream connection is closed and the stall counted. Returns the gateway
/// and the connection, still open.
async fn assert_stalled_response_is_cut_off(
    pki: &Pki,
    options: &ClientOptions,
) -> (Gateway, Connection) {
    let (upstream, mut upstream_closed) = stalling_upstream().await;
    let gateway = gateway(pki, upstream).await;
    let mut conn = Connection::open(gateway.addr, options).await.unwrap();
    let request = conn.get(HOST, "/");
    let response = conn.send_raw(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(PATIENCE, response.into_body().collect()).await;
    assert!(
        body.expect("the stalled response was never cut off")
            .is_err(),
        "a cut-off response must not look complete"
    );
    let closed = tokio::time::timeout(PATIENCE, upstream_closed.recv()).await;
    assert!(closed.is_ok(), "the stalled upstream connection was kept");
    assert_stalled(&gateway, "upstream_idle", 1.0).await;
    (gateway, conn)
}

#[tokio::test]
async fn http1_response_body_that_stops_is_cut_off_and_its_upstream_connection_closed() {
    let pki = Pki::new();
    let options = ClientOptions::new(&pki, HOST);
    let (gateway, _conn) = assert_stalled_response_is_cut_off(&pki, &options).await;
    gateway.stop().await;
}

#[tokio::test]
async fn http2_response_body_that_stops_resets_only_its_stream() {
    let pki = Pki::new();
    let options = ClientOptions::new(&pki, HOST).http2(true);
    let (gateway, mut conn) = assert_stalled_response_is_cut_off(&pki, &options).await;
    // The connection itself goes on: the next stream gets its (equally stalled) header.
    let request = conn.get(HOST, "/");
    let response = conn.send_raw(request).await.unwrap();
    assert_eq!(response.status(), 200);
    gateway.stop().await;
}

async fn websocket(gateway: &Gateway, pki: &Pki) -> TokioIo<hyper::upgrade::Upgraded> {
    let options = ClientOptions::new(pki, HOST);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let request = conn.websocket_get(HOST, "/ws");
    let response = conn.send_raw(request).await.unwrap();
    assert_eq!(response.status(), 101);
    TokioIo::new(hyper::upgrade::on(response).await.unwrap())
}

#[tokio::test]
async fn a_websocket_is_closed_after_idle_ms_without_a_byte_but_not_while_it_carries_bytes() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let config = serde_json::json!({
        "apps": [app("ignore", &[HOST], echo_upstream().await, "ignore")],
        "timeouts": { "idleMs": 500, "requestBodyIdleMs": 100, "upstreamIdleMs": 100 },
    });
    let gateway = Gateway::start(dir, config).await;

    // Busy: a message every 150 ms for 1.5 s, three times idleMs; the body timeouts do not apply.
    let mut busy = websocket(&gateway, &pki).await;
    for i in 0..10u8 {
        busy.write_all(&[i]).await.unwrap();
        let mut back = [0u8; 1];
        busy.read_exact(&mut back).await.unwrap();
        assert_eq!(back[0], i);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // Quiet: closed by certgate.
    let mut quiet = websocket(&gateway, &pki).await;
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(PATIENCE, quiet.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "a quiet upgraded connection stayed open"
    );
    gateway.stop().await;
}
