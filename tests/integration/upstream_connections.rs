//! Upstream connections belong to the app, never to what a client sent, and are bounded per
//! app (docs/forwarding.md, `limits.maxUpstreamConnectionsPerApp`):
//! - 100 requests on one client connection, each naming another port in its authority, reach
//!   the app over one upstream connection: h2c, h2 over TLS and HTTP/1.1 alike, and the app
//!   sees each request's own authority;
//! - with `maxUpstreamConnectionsPerApp: 2` and two requests held by a slow app, a third waits
//!   and gets 503 after `upstreamConnectMs`, and succeeds when a connection frees in time;
//!   the app never sees a third connection.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;

use common::apps::IGNORE_HOST;
use common::polling::{self, scrape_until};
use common::recording::recording_upstream;
use common::serve::serve_each;
use common::*;

/// certgate with one `ignore` app at [`IGNORE_HOST`] in front of `upstream` over `transport`,
/// with `extra` top-level keys and `files` written beside the config.
async fn gateway(
    pki: &Pki,
    upstream: String,
    transport: &str,
    extra: serde_json::Value,
    files: &[(&str, String)],
) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    for (name, contents) in files {
        dir.write(name, contents);
    }
    let mut app = common::apps::ignore_app("127.0.0.1:9".parse().unwrap());
    app["upstream"] = upstream.into();
    app["ingress"]["transport"] = transport.into();
    if let Some(tls) = extra.get("upstreamTls") {
        app["upstreamTls"] = tls.clone();
    }
    let mut config = serde_json::json!({ "admin": "127.0.0.1:0", "apps": [app] });
    for (key, value) in extra.as_object().unwrap() {
        if key != "upstreamTls" {
            config[key] = value.clone();
        }
    }
    Gateway::start(dir, config).await
}

/// Sends 100 GETs on one client connection (HTTP/2 or HTTP/1.1 keep-alive), the `n`th for
/// authority `IGNORE_HOST:<10001 + n>` (the port is not part of the 421 check); asserts each
/// is answered 200 and returns the bodies.
async fn hundred_authorities(gateway: &Gateway, pki: &Pki, http2: bool) -> Vec<Bytes> {
    let options = ClientOptions::new(pki, IGNORE_HOST).http2(http2);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let mut bodies = Vec::new();
    for port in 10_001..=10_100 {
        let request = conn.get(&format!("{IGNORE_HOST}:{port}"), "/");
        let reply = conn.send(request).await.unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        bodies.push(reply.body);
    }
    bodies
}

#[tokio::test]
async fn requests_for_a_hundred_authorities_share_one_h2c_connection() {
    let pki = Pki::new();
    let (upstream, recording) = recording_upstream().await;
    let gateway = gateway(
        &pki,
        format!("http://{upstream}"),
        "http2",
        serde_json::json!({}),
        &[],
    )
    .await;
    for http2 in [true, false] {
        hundred_authorities(&gateway, &pki, http2).await;
    }
    assert_eq!(recording.connections(), 1, "upstream h2c connections");
    gateway.stop().await;
}

#[tokio::test]
async fn requests_for_a_hundred_authorities_share_one_http1_connection() {
    let pki = Pki::new();
    let (upstream, recording) = recording_upstream().await;
    let gateway = gateway(
        &pki,
        format!("http://{upstream}"),
        "http",
        serde_json::json!({}),
        &[],
    )
    .await;
    for http2 in [true, false] {
        hundred_authorities(&gateway, &pki, http2).await;
    }
    assert_eq!(recording.connections(), 1, "upstream HTTP/1.1 connections");
    gateway.stop().await;
}

#[tokio::test]
async fn requests_for_a_hundred_authorities_share_one_h2_connection_over_tls() {
    let pki = Pki::new();
    let app_ca = Ca::root("certgate test app CA");
    let app = TlsApp::start(&app_ca.issue(LeafSpec::server())).await;
    let gateway = gateway(
        &pki,
        format!("https://localhost:{}", app.addr.port()),
        "http2",
        serde_json::json!({ "upstreamTls": { "caFiles": ["app-ca.pem"] } }),
        &[("app-ca.pem", app_ca.pem.clone())],
    )
    .await;
    let bodies = hundred_authorities(&gateway, &pki, true).await;
    // The app sees each request's own authority.
    assert_eq!(bodies[0], format!("HTTP/2.0 {IGNORE_HOST}:10001"));
    assert_eq!(bodies[99], format!("HTTP/2.0 {IGNORE_HOST}:10100"));
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        1,
        "upstream TLS handshakes"
    );
    gateway.stop().await;
}

/// A rustls + hyper app presenting `leaf` (ALPN h2 and http/1.1) that answers
/// `<HTTP version> <authority>` and counts the TLS connections it accepted.
struct TlsApp {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl TlsApp {
    async fn start(leaf: &Leaf) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(leaf.chain.clone(), leaf.key_der())
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let addr = serve_each(move |tcp| {
            counted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let authority = request.uri().authority().map_or("none", |a| a.as_str());
                    let body = format!("{:?} {authority}", request.version());
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
        })
        .await;
        Self { addr, connections }
    }
}

/// A raw HTTP/1.1 app that answers each request only once the test adds a permit to `gate`,
/// and counts the connections it accepted.
struct HeldApp {
    addr: SocketAddr,
    gate: Arc<Semaphore>,
    connections: Arc<AtomicUsize>,
}

impl HeldApp {
    async fn start() -> Self {
        let gate = Arc::new(Semaphore::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (held, counted) = (gate.clone(), connections.clone());
        let addr = serve_each(move |mut tcp| {
            counted.fetch_add(1, Ordering::SeqCst);
            let gate = held.clone();
            async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        gate.acquire().await.unwrap().forget();
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nheld";
                        if tcp.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
            }
        })
        .await;
        Self {
            addr,
            gate,
            connections,
        }
    }
}

/// certgate in front of a [`HeldApp`] with at most two upstream connections and
/// `upstreamConnectMs` of `connect_ms`.
async fn bounded_gateway(pki: &Pki, app: &HeldApp, connect_ms: u64) -> Gateway {
    gateway(
        pki,
        format!("http://{}", app.addr),
        "http",
        serde_json::json!({
            "limits": { "maxUpstreamConnectionsPerApp": 2 },
            "timeouts": { "upstreamConnectMs": connect_ms },
        }),
        &[],
    )
    .await
}

/// Starts a GET on a connection of its own; the reply comes from the returned task.
fn held_request(gateway: &Gateway, pki: &Pki) -> tokio::task::JoinHandle<Reply> {
    let (addr, options) = (gateway.addr, ClientOptions::new(pki, IGNORE_HOST));
    tokio::spawn(async move { get(addr, &options, IGNORE_HOST, "/").await.unwrap() })
}

/// Waits until the app has accepted `count` connections.
async fn accepted(app: &HeldApp, count: usize) {
    let seen = polling::until(200, Duration::from_millis(25), || {
        app.connections.load(Ordering::SeqCst) >= count
    })
    .await;
    assert!(seen, "the app never accepted {count} connections");
}

#[tokio::test]
async fn past_the_upstream_connection_bound_a_request_waits_then_gets_503() {
    let pki = Pki::new();
    let app = HeldApp::start().await;
    let gateway = bounded_gateway(&pki, &app, 300).await;
    let first = held_request(&gateway, &pki);
    let second = held_request(&gateway, &pki);
    accepted(&app, 2).await;

    let options = ClientOptions::new(&pki, IGNORE_HOST);
    let third = get(gateway.addr, &options, IGNORE_HOST, "/").await.unwrap();
    assert_certgate_error(&third, http::StatusCode::SERVICE_UNAVAILABLE, "busy");

    app.gate.add_permits(2);
    assert_eq!(first.await.unwrap().body, "held");
    assert_eq!(second.await.unwrap().body, "held");
    assert_eq!(app.connections.load(Ordering::SeqCst), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn a_request_waiting_at_the_bound_gets_a_connection_that_frees_in_time() {
    let pki = Pki::new();
    let app = HeldApp::start().await;
    let gateway = bounded_gateway(&pki, &app, 30_000).await;
    let first = held_request(&gateway, &pki);
    let second = held_request(&gateway, &pki);
    accepted(&app, 2).await;
    let third = held_request(&gateway, &pki);
    let active = r#"certgate_connections_active{app="ignore"}"#;
    let text = scrape_until(
        gateway.admin.unwrap(),
        200,
        Duration::from_millis(25),
        |text| metric(text, active) >= 3.0,
    )
    .await;
    assert_eq!(metric(&text, active), 3.0, "the third client connection");

    // The held requests are answered: their connections go back, the third takes one.
    app.gate.add_permits(3);
    for request in [first, second, third] {
        let reply = request.await.unwrap();
        assert_eq!(
            (reply.status.as_u16(), &reply.body[..]),
            (200, &b"held"[..])
        );
    }
    assert_eq!(app.connections.load(Ordering::SeqCst), 2);
    gateway.stop().await;
}
