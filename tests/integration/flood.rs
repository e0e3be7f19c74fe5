//! Cert-less floods do not starve verified clients (docs/operations.md "Limits under attack"):
//! - an attacker on 127.0.0.1 that reconnects as fast as it can and never sends a ClientHello,
//!   against maxConnections 200, cannot keep a verified client on 127.0.0.2 from being served:
//!   40 of 40 requests on fresh mTLS connections are answered, and the refusals are counted by
//!   their limit;
//! - with maxConnections 200 and maxPendingHandshakes unset (half of it, 100), a client without
//!   a certificate that reconnects as fast as it is refused, from 127.0.0.1, cannot keep a
//!   verified client on 127.0.0.2 from being served: 40 of 40 requests are answered;
//! - connections still in their handshake are capped by maxPendingHandshakes (refused and
//!   counted beyond it) while established connections are served, and a silent client is cut
//!   off at clientHelloMs, which frees its slot for the next client.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::hardening::tls_stream_from;
use common::polling::{scrape_until, until_async};
use common::*;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

const GOOD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

async fn gateway(pki: &Pki, extra: serde_json::Value) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let [require, _] = require_and_ignore(upstream);
    let mut config = serde_json::json!({ "admin": "127.0.0.1:0", "apps": [require] });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    Gateway::start(dir, config).await
}

/// One GET on a fresh mTLS connection from `GOOD`.
async fn good_request(addr: SocketAddr, options: &ClientOptions) -> Result<u16, String> {
    let tls = tls_stream_from(GOOD, addr, options)
        .await
        .map_err(|e| e.message)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get("/")
        .header("host", "require.example.test")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

/// Connects from 127.0.0.1 again and again, never sending a byte, each connection held until
/// certgate closes it.
fn flood(addr: SocketAddr, tasks: usize, stop: Arc<AtomicBool>) {
    for _ in 0..tasks {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut tcp) = TcpStream::connect(addr).await else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_flood_without_handshakes_does_not_starve_a_verified_client() {
    let pki = Pki::new();
    let gateway = gateway(
        &pki,
        serde_json::json!({
            "limits": { "maxConnections": 200, "maxConnectionsPerClient": 50,
                        "maxPendingHandshakes": 100 },
            "timeouts": { "clientHelloMs": 1000 },
        }),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    flood(gateway.addr, 300, stop.clone());
    // Let the flood fill what it can.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = pki.client("verified client");
    let options = ClientOptions::new(&pki, "require.example.test").with_identity(client.identity());
    let mut answered = 0;
    let mut errors = Vec::new();
    for _ in 0..40 {
        match good_request(gateway.addr, &options).await {
            Ok(200) => answered += 1,
            Ok(status) => errors.push(format!("status {status}")),
            Err(error) => errors.push(error),
        }
    }
    let text = scrape(gateway.admin.unwrap()).await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(answered, 40, "verified client starved: {errors:?}");
    let per_client = metric(
        &text,
        r#"certgate_connections_refused_by_limit_total{limit="maxConnectionsPerClient"}"#,
    );
    assert!(per_client > 0.0, "the flood was never refused per client");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_handshakes_are_capped_and_a_silent_client_is_cut_off_at_client_hello_ms() {
    let pki = Pki::new();
    let gateway = gateway(
        &pki,
        serde_json::json!({
            "limits": { "maxPendingHandshakes": 5 },
            "timeouts": { "clientHelloMs": 1500, "handshakeMs": 60000 },
        }),
    )
    .await;
    let client = pki.client("verified client");
    let options = ClientOptions::new(&pki, "require.example.test").with_identity(client.identity());
    // An established connection, made before the silent ones. A TLS 1.3 client is done with
    // the handshake before the server is: only once it answers a request has the server
    // finished its side and freed its pending-handshake slot for the five silent ones.
    let mut established = Connection::open(gateway.addr, &options).await.unwrap();
    let request = established.get("require.example.test", "/");
    assert_eq!(established.send(request).await.unwrap().status, 200);

    // From five addresses: one address holds at most half of the pending slots.
    let mut silent = Vec::new();
    for host in 11..16 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from(([127, 0, 0, host], 0)))
            .unwrap();
        silent.push(socket.connect(gateway.addr).await.unwrap());
    }
    // All pending slots are taken: a sixth connection is closed at once.
    let series = r#"certgate_connections_refused_by_limit_total{limit="maxPendingHandshakes"}"#;
    let refused = until_async(50, Duration::from_millis(20), async || {
        let refused = metric(&scrape(gateway.admin.unwrap()).await, series) > 0.0;
        if !refused {
            let _ = Connection::open(gateway.addr, &options).await;
        }
        refused
    })
    .await;
    assert!(
        refused,
        "no connection was refused over maxPendingHandshakes"
    );
    // The established connection is served all along.
    let request = established.get("require.example.test", "/");
    assert_eq!(established.send(request).await.unwrap().status, 200);

    // The silent connections are closed at clientHelloMs (long before handshakeMs), and their
    // slots serve new clients.
    for tcp in &mut silent {
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "a silent connection was not cut off"
        );
    }
    let reply = get(gateway.addr, &options, "require.example.test", "/")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    // Each is counted by its connection's task just after the socket closes.
    let timeouts = r#"certgate_handshake_failures_total{app="",reason="timeout"}"#;
    let text = scrape_until(
        gateway.admin.unwrap(),
        100,
        Duration::from_millis(50),
        |text| metric(text, timeouts) >= 5.0,
    )
    .await;
    assert!(
        metric(&text, timeouts) >= 5.0,
        "the silent connections were not counted as handshake timeouts"
    );
    gateway.stop().await;
}

/// Connects from 127.0.0.1 again and again and handshakes without a certificate, each
/// connection held until certgate refuses and closes it.
fn certificate_less_flood(addr: SocketAddr, pki: &Pki, tasks: usize, stop: Arc<AtomicBool>) {
    let options = Arc::new(ClientOptions::new(pki, "require.example.test"));
    for _ in 0..tasks {
        let (stop, options) = (stop.clone(), options.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Refused at accept, or by the handshake; under TLS 1.3 the refusal is an alert
                // read after the client's side of the handshake is done.
                if let Ok(mut tls) = tls_stream(addr, &options).await {
                    let mut buf = [0u8; 64];
                    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_less_flood_leaves_a_small_max_connections_to_verified_clients() {
    let pki = Pki::new();
    let gateway = gateway(
        &pki,
        serde_json::json!({ "limits": { "maxConnections": 200 } }),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    certificate_less_flood(gateway.addr, &pki, 300, stop.clone());
    // The flood fills what it can.
    let refused = r#"certgate_connections_refused_by_limit_total{limit="maxPendingHandshakes"}"#;
    scrape_until(
        gateway.admin.unwrap(),
        100,
        Duration::from_millis(50),
        |text| metric(text, refused) > 0.0,
    )
    .await;

    let client = pki.client("verified client");
    let options = ClientOptions::new(&pki, "require.example.test").with_identity(client.identity());
    let mut answered = 0;
    let mut errors = Vec::new();
    for _ in 0..40 {
        match good_request(gateway.addr, &options).await {
            Ok(200) => answered += 1,
            Ok(status) => errors.push(format!("status {status}")),
            Err(error) => errors.push(error),
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(answered, 40, "verified client starved: {errors:?}");
    gateway.stop().await;
}
