//! Open connections across a reload (docs/operations.md "Reload"): a reload retires the config the
//! connections were opened under, so a tightened policy never waits for a client to
//! reconnect. Cases:
//! - each tightening change (mode `ignore` -> `require`, trust moved to another CA, a serial
//!   added to a `crlFiles` CRL, an allow-list, an authorization rule, `upstreamTls`
//!   `insecureSkipVerify` -> `caFiles`) closes an open HTTP/1.1 keep-alive and an open HTTP/2
//!   connection, and the client's new connection is judged by the new config;
//! - an unchanged config closes idle connections too, counted in
//!   `certgate_reload_closed_connections_total`;
//! - a request in flight finishes: HTTP/1.1 with `Connection: close`, HTTP/2 streams in flight
//!   answered, then GOAWAY;
//! - a WebSocket keeps running until `timeouts.reloadGraceMs`, then is cut; `0` cuts at once;
//! - a replaced config's upstream client dials no more: after the reload, the app sees no new
//!   connection from it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::polling::until;
use common::serve::serve_each;
use common::tls_app;
use common::websocket::*;
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

const CLOSED_BY_RELOAD: &str = "certgate_reload_closed_connections_total";

/// An app that answers `ok`, after `slow` on `/slow`, and counts the connections it accepted
/// and those still open.
struct SlowApp {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

async fn slow_app(slow: Duration) -> SlowApp {
    let connections = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (counted, still_open) = (connections.clone(), open.clone());
    let addr = serve_each(move |tcp| {
        counted.fetch_add(1, Ordering::SeqCst);
        still_open.fetch_add(1, Ordering::SeqCst);
        let still_open = still_open.clone();
        async move {
            let service = hyper::service::service_fn(move |request: http::Request<_>| async move {
                if request.uri().path() == "/slow" {
                    tokio::time::sleep(slow).await;
                }
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"ok",
                ))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            still_open.fetch_sub(1, Ordering::SeqCst);
        }
    })
    .await;
    SlowApp {
        addr,
        connections,
        open,
    }
}

/// certgate with `apps` and an admin listener, its PKI written beside the config.
async fn gateway(pki: &Pki, apps: serde_json::Value, timeouts: serde_json::Value) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    Gateway::start(
        dir,
        json!({ "admin": "127.0.0.1:0", "timeouts": timeouts, "apps": apps }),
    )
    .await
}

/// Rewrites the gateway's config with `apps` and `timeouts` and reloads it, as SIGHUP does.
async fn reload_with(gateway: &Gateway, apps: serde_json::Value, mut timeouts: serde_json::Value) {
    // As `Gateway::start` does: no balancer in front, so `stop` drains at once.
    timeouts["drainDelayMs"] = 0.into();
    let config = json!({
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "timeouts": timeouts,
        "apps": apps,
    });
    gateway
        .dir
        .write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
    gateway.reloader.reload().await.unwrap();
}

/// Whether certgate closes `connection` (bounded wait): HTTP/1.1 closed, or HTTP/2 closed
/// after GOAWAY.
async fn closed_by_certgate_soon(connection: &Connection) -> bool {
    until(200, Duration::from_millis(25), || !connection.is_open()).await
}

/// One tightening change: the app before and after, and the client that the new config must
/// refuse (at the handshake, or with a status).
struct Tightening {
    name: &'static str,
    before: serde_json::Value,
    after: serde_json::Value,
    client: ClientOptions,
    /// What a new connection of `client` gets under the new config: `None` for a refused
    /// handshake, else the status.
    refused_with: Option<StatusCode>,
}

/// A client of the `require` app with a certificate from its trusted CA.
fn alice(pki: &Pki) -> ClientOptions {
    ClientOptions::new(pki, "gated.example.test").with_identity(pki.client("alice").identity())
}

fn require_app(upstream: SocketAddr) -> serde_json::Value {
    let mut app = app("gated", &["gated.example.test"], upstream, "require");
    app["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    app
}

/// Every tightening change, and the files (name, contents) their configs name.
fn tightenings(
    pki: &Pki,
    upstream: SocketAddr,
    tls_upstream: SocketAddr,
) -> (Vec<Tightening>, Vec<(&'static str, String)>) {
    let client = pki.client("alice");
    let with_cert = ClientOptions::new(pki, "gated.example.test").with_identity(client.identity());
    let next_update = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let files = vec![
        ("other-ca.pem", Ca::root("another CA").pem),
        ("empty.crl", pki.client_ca.crl(&[], next_update)),
        ("revoked.crl", pki.client_ca.crl(&[&client], next_update)),
    ];

    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut app = require_app(upstream);
        change(&mut app);
        app
    };
    let https = |upstream_tls: serde_json::Value| {
        let mut app = require_app(tls_upstream);
        app["upstream"] = format!("https://{tls_upstream}").into();
        app["upstreamTls"] = upstream_tls;
        app
    };
    let changes = vec![
        Tightening {
            name: "mode ignore -> require",
            before: app("gated", &["gated.example.test"], upstream, "ignore"),
            after: require_app(upstream),
            client: ClientOptions::new(pki, "gated.example.test"),
            refused_with: None,
        },
        Tightening {
            name: "trust moved to another CA",
            before: require_app(upstream),
            after: with(&|app| app["clientAuth"]["trustedCaFiles"] = json!(["other-ca.pem"])),
            client: with_cert.clone(),
            refused_with: None,
        },
        Tightening {
            name: "serial added to the crlFiles CRL",
            before: with(&|app| app["clientAuth"]["crlFiles"] = json!(["empty.crl"])),
            after: with(&|app| app["clientAuth"]["crlFiles"] = json!(["revoked.crl"])),
            client: with_cert.clone(),
            refused_with: None,
        },
        Tightening {
            name: "allowedSubjects",
            before: require_app(upstream),
            after: with(&|app| app["clientAuth"]["allowedSubjects"] = json!(["CN=bob"])),
            client: with_cert.clone(),
            refused_with: None,
        },
        Tightening {
            name: "authorization rule",
            before: require_app(upstream),
            after: with(&|app| {
                app["authorization"] =
                    json!([{ "pathPrefix": "/", "allowedSubjects": ["CN=bob"] }]);
            }),
            client: with_cert.clone(),
            refused_with: Some(StatusCode::FORBIDDEN),
        },
        Tightening {
            name: "upstreamTls insecureSkipVerify -> caFiles",
            before: https(json!({ "insecureSkipVerify": true })),
            after: https(json!({ "caFiles": ["other-ca.pem"] })),
            client: with_cert,
            refused_with: Some(StatusCode::BAD_GATEWAY),
        },
    ];
    (changes, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tightening_change_reaches_open_connections_over_http1_and_http2() {
    let pki = Pki::new();
    let app = slow_app(Duration::ZERO).await;
    let (_, app_leaf) = tls_app::app_pki();
    let tls_app = tls_app::TlsApp::start(&app_leaf, None).await;
    let (changes, files) = tightenings(&pki, app.addr, tls_app.addr);
    for http2 in [false, true] {
        for change in &changes {
            let label = format!("{} (http2: {http2})", change.name);
            let dir = TempDir::new();
            pki.write(&dir);
            for (name, contents) in &files {
                dir.write(name, contents);
            }
            let config = json!({ "admin": "127.0.0.1:0", "apps": [change.before] });
            let gateway = Gateway::start(dir, config).await;
            let options = change.client.clone().http2(http2);
            let mut open = Connection::open(gateway.addr, &options).await.unwrap();
            let request = open.get("gated.example.test", "/before");
            assert_eq!(open.send(request).await.unwrap().status, 200, "{label}");

            reload_with(&gateway, json!([change.after]), json!({})).await;

            assert!(
                closed_by_certgate_soon(&open).await,
                "{label}: the open connection stayed open under the replaced config"
            );
            let fresh = get(gateway.addr, &options, "gated.example.test", "/after").await;
            match (change.refused_with, fresh) {
                (None, Err(_)) => {}
                (Some(status), Ok(reply)) => assert_eq!(reply.status, status, "{label}"),
                (expected, got) => panic!("{label}: expected {expected:?}, got {got:?}"),
            }
            gateway.stop().await;
        }
    }
}

#[tokio::test]
async fn an_unchanged_reload_closes_idle_connections_and_counts_them() {
    let pki = Pki::new();
    let app = slow_app(Duration::ZERO).await;
    let gateway = gateway(&pki, json!([require_app(app.addr)]), json!({})).await;
    let admin = gateway.admin.unwrap();
    let options = alice(&pki);
    let mut h1 = Connection::open(gateway.addr, &options).await.unwrap();
    let mut h2 = Connection::open(gateway.addr, &options.clone().http2(true))
        .await
        .unwrap();
    for connection in [&mut h1, &mut h2] {
        let request = connection.get("gated.example.test", "/");
        assert_eq!(connection.send(request).await.unwrap().status, 200);
    }
    assert_eq!(metric(&scrape(admin).await, CLOSED_BY_RELOAD), 0.0);

    gateway.reloader.reload().await.unwrap();

    assert!(closed_by_certgate_soon(&h1).await, "HTTP/1.1 stayed open");
    assert!(closed_by_certgate_soon(&h2).await, "HTTP/2 stayed open");
    assert_eq!(metric(&scrape(admin).await, CLOSED_BY_RELOAD), 2.0);
    let reply = get(gateway.addr, &options, "gated.example.test", "/again")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "a new connection is served as before");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_with_connection_close_over_http1() {
    let pki = Pki::new();
    let app = slow_app(Duration::from_millis(800)).await;
    let gateway = gateway(&pki, json!([require_app(app.addr)]), json!({})).await;
    let options = alice(&pki);
    let mut open = Connection::open(gateway.addr, &options).await.unwrap();
    let request = open.get("gated.example.test", "/slow");
    let in_flight = tokio::spawn(async move {
        let reply = open.send(request).await;
        (reply, open)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gateway.reloader.reload().await.unwrap();

    let (reply, open) = in_flight.await.unwrap();
    let reply = reply.unwrap();
    assert_eq!(reply.status, 200, "the request in flight was not finished");
    assert_eq!(
        reply.headers.get(http::header::CONNECTION).unwrap(),
        "close",
        "the last response of a replaced config's connection says so"
    );
    assert!(closed_by_certgate_soon(&open).await);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_in_flight_finish_and_the_connection_gets_goaway() {
    let pki = Pki::new();
    let app = slow_app(Duration::from_millis(800)).await;
    let gateway = gateway(&pki, json!([require_app(app.addr)]), json!({})).await;
    let options = alice(&pki).http2(true);
    let open = Connection::open(gateway.addr, &options).await.unwrap();
    let Sender::Http2(sender) = &open.sender else {
        unreachable!("an HTTP/2 connection")
    };
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut sender = sender.clone();
        let request = open.get("gated.example.test", "/slow");
        streams.push(tokio::spawn(async move {
            let response = sender.send_request(request).await?;
            Ok::<_, hyper::Error>(response.status())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    gateway.reloader.reload().await.unwrap();

    for stream in streams {
        assert_eq!(
            stream.await.unwrap().unwrap(),
            200,
            "a stream in flight was cut"
        );
    }
    assert!(
        closed_by_certgate_soon(&open).await,
        "no GOAWAY after the reload"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_runs_until_the_reload_grace_then_is_cut() {
    let pki = Pki::new();
    let upstream = counting_upstream().await;
    let grace = json!({ "reloadGraceMs": 1500 });
    let gateway = gateway(&pki, json!([require_app(upstream.addr)]), grace.clone()).await;
    let options = alice(&pki);
    let mut connection = Connection::open(gateway.addr, &options).await.unwrap();
    let mut websocket = upgrade(&mut connection, "gated.example.test")
        .await
        .unwrap();
    echo(&mut websocket, b"before").await;

    let reloaded = tokio::time::Instant::now();
    reload_with(&gateway, json!([require_app(upstream.addr)]), grace).await;
    echo(&mut websocket, b"within the grace").await;
    assert!(closed_by_certgate(&mut websocket).await, "never cut");
    assert!(
        reloaded.elapsed() >= Duration::from_millis(1500),
        "cut before the grace was over"
    );
    upstream.wait_for_no_open_pipe().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_reload_grace_cuts_a_websocket_at_once() {
    let pki = Pki::new();
    let upstream = counting_upstream().await;
    let gateway = gateway(&pki, json!([require_app(upstream.addr)]), json!({})).await;
    let options = alice(&pki);
    let mut connection = Connection::open(gateway.addr, &options).await.unwrap();
    let mut websocket = upgrade(&mut connection, "gated.example.test")
        .await
        .unwrap();
    echo(&mut websocket, b"before").await;

    reload_with(
        &gateway,
        json!([require_app(upstream.addr)]),
        json!({ "reloadGraceMs": 0 }),
    )
    .await;
    assert!(closed_by_certgate(&mut websocket).await, "never cut");
    upstream.wait_for_no_open_pipe().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_config_closes_its_idle_upstream_connections_and_dials_no_more() {
    let pki = Pki::new();
    let app = slow_app(Duration::ZERO).await;
    let gateway = gateway(&pki, json!([require_app(app.addr)]), json!({})).await;
    let options = alice(&pki);
    let mut open = Connection::open(gateway.addr, &options).await.unwrap();
    let request = open.get("gated.example.test", "/");
    assert_eq!(open.send(request).await.unwrap().status, 200);
    assert_eq!(app.connections.load(Ordering::SeqCst), 1);
    assert_eq!(app.open.load(Ordering::SeqCst), 1, "pooled, kept alive");

    // The app moves away: the new config sends nothing to the old address.
    let elsewhere = slow_app(Duration::ZERO).await;
    reload_with(&gateway, json!([require_app(elsewhere.addr)]), json!({})).await;
    assert!(closed_by_certgate_soon(&open).await);
    assert!(
        until(200, Duration::from_millis(25), || app
            .open
            .load(Ordering::SeqCst)
            == 0)
        .await,
        "the replaced config kept its idle upstream connection"
    );
    let reply = get(gateway.addr, &options, "gated.example.test", "/")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(elsewhere.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        1,
        "the replaced config dialed its app again"
    );
    gateway.stop().await;
}
