//! Revocation and what is already open or in flight (docs/revocation.md), counted at the
//! app, the responder and the CRL server. Cases:
//! - no request from a revoked certificate (on a fetched CRL, or reported by `openssl ocsp`)
//!   reaches the app over HTTP/1.1, HTTP/2 or an HTTP/1.1 WebSocket upgrade, while a good
//!   certificate's do (the control); with `rejectWith: "http"` the upgrade is answered 495;
//! - an open WebSocket is closed once a CRL refresh revokes its certificate, and once a
//!   responder reports its certificate revoked to another connection; so is a parked
//!   HTTP/1.1 connection (docs/operations.md "Memory while idle"), with a close_notify;
//! - an OCSP `revoked` answer learned by one handshake closes the open HTTP/1.1 and HTTP/2
//!   connections of that certificate before their next request is forwarded, and leaves
//!   another certificate's connection open, as does a `revoked` answer once a cached `good`
//!   one expired (for every connection admitted on it);
//! - what revocation learns reaches the connections of every config generation: after a
//!   reload (of an unchanged config), a responder's `revoked` answer to a new handshake closes
//!   a WebSocket opened before it; so does a `crlUrls` CRL the reload fetched; a `crlFiles`
//!   CRL rewritten to list a certificate (the file watch reloads) refuses its new handshakes
//!   and closes its WebSocket opened before; another certificate's WebSocket stays open in
//!   each (the control);
//! - concurrent handshakes with a cold cache make one responder request, and fetch a
//!   distribution point once; on a hung responder they share one request and each gives up
//!   at the timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::polling::scrape_until;
use common::revocation::*;
use common::revocation_app::*;
use common::websocket::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the revoked certificate's revocation is published.
#[derive(Clone, Copy)]
enum Source {
    CrlUrl,
    Ocsp,
}

/// What the sources behind a gateway need to stay up, and the gateway's revocation settings.
struct Sources {
    _crls: Option<HttpFixture>,
    _responder: Option<Responder>,
    settings: serde_json::Value,
}

/// `good` is good and `revoked` revoked at `source`; `None` (outside CI) without openssl.
fn publish(pki: &Pki, good: &Leaf, revoked: &Leaf, source: Source) -> Option<Sources> {
    Some(match source {
        Source::CrlUrl => {
            let crls = crl_server(&pki.client_ca, &[&revoked.serial]);
            let settings = serde_json::json!({ "crlUrls": [crls.url("ca.crl")] });
            Sources {
                _crls: Some(crls),
                _responder: None,
                settings,
            }
        }
        Source::Ocsp => {
            let entries = [(good, "good", false), (revoked, "revoked", true)];
            let responder = responder(pki, &entries, &[])?;
            let settings =
                serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() });
            Sources {
                _crls: None,
                _responder: Some(responder),
                settings,
            }
        }
    })
}

/// Whether an HTTP/1.1 WebSocket upgrade from `options` is piped through to the app.
/// A WebSocket through certgate for `client`, already carrying one echoed message; the
/// connection is returned so that it stays open as long as the pipe.
async fn open_websocket(
    gateway: &Gateway,
    pki: &Pki,
    client: &Leaf,
) -> (
    Connection,
    hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>,
) {
    let mut connection = Connection::open(gateway.addr, &options(pki, client))
        .await
        .unwrap();
    let mut io = upgrade(&mut connection, HOST).await.unwrap();
    echo(&mut io, b"before the revocation").await;
    (connection, io)
}

async fn upgraded(gateway: &Gateway, options: &ClientOptions) -> bool {
    let Ok(mut connection) = Connection::open(gateway.addr, options).await else {
        return false;
    };
    let Ok(mut io) = upgrade(&mut connection, HOST).await else {
        return false;
    };
    echo(&mut io, b"through certgate").await;
    true
}

async fn no_request_from_a_revoked_certificate_reaches_the_app(source: Source) {
    let pki = Pki::new();
    let (good, revoked) = (pki.client("good"), pki.client("revoked"));
    let Some(published) = publish(&pki, &good, &revoked, source) else {
        return;
    };
    let app = counting_upstream().await;
    let gateway = gateway_before(&pki, published.settings.clone(), app.addr).await;

    // Control: the good certificate reaches the app each way.
    assert!(served(&gateway, &options(&pki, &good)).await);
    assert!(served(&gateway, &options(&pki, &good).http2(true)).await);
    assert!(upgraded(&gateway, &options(&pki, &good)).await);
    assert_eq!((app.requests(), app.upgrades()), (3, 1));

    assert_refused(&gateway, &options(&pki, &revoked), "revoked").await;
    assert_refused(&gateway, &options(&pki, &revoked).http2(true), "revoked").await;
    let before = refusals(&gateway, "revoked").await;
    assert!(!upgraded(&gateway, &options(&pki, &revoked)).await);
    assert_eq!(refusals(&gateway, "revoked").await, before + 1.0);
    assert_eq!(
        (app.requests(), app.upgrades()),
        (3, 1),
        "a request from a revoked certificate reached the app"
    );
}

#[tokio::test]
async fn no_request_from_a_certificate_on_a_fetched_crl_reaches_the_app_over_any_protocol() {
    no_request_from_a_revoked_certificate_reaches_the_app(Source::CrlUrl).await;
}

#[tokio::test]
async fn no_request_from_a_certificate_ocsp_reports_revoked_reaches_the_app_over_any_protocol() {
    no_request_from_a_revoked_certificate_reaches_the_app(Source::Ocsp).await;
}

#[tokio::test]
async fn websocket_upgrade_from_a_revoked_certificate_is_answered_495_with_reject_with_http() {
    let pki = Pki::new();
    let (good, revoked) = (pki.client("good"), pki.client("revoked"));
    let published = publish(&pki, &good, &revoked, Source::CrlUrl).unwrap();
    let app = counting_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let mut config = config(app.addr, published.settings.clone());
    config["apps"][0]["rejectWith"] = "http".into();
    let gateway = Gateway::start(dir, config).await;

    let mut connection = Connection::open(gateway.addr, &options(&pki, &revoked))
        .await
        .unwrap();
    let refused = upgrade(&mut connection, HOST).await.err().unwrap();
    assert!(refused.starts_with("answered 495"), "{refused}");
    assert_eq!(app.requests(), 0, "the upgrade reached the app");
    assert!(
        upgraded(&gateway, &options(&pki, &good)).await,
        "control: a good certificate's upgrade is piped"
    );
}

#[tokio::test]
async fn open_websocket_is_closed_once_a_crl_refresh_revokes_its_certificate() {
    let pki = Pki::new();
    let client = pki.client("revoked while piping");
    let (crls, settings) = refreshed_crl(&pki);
    let app = counting_upstream().await;
    let gateway = gateway_before(&pki, settings, app.addr).await;
    let (_connection, mut io) = open_websocket(&gateway, &pki, &client).await;
    assert_eq!(app.open_pipes(), 1);

    publish_revocation(&gateway, &crls, &pki, &client).await;
    assert!(
        closed_by_certgate(&mut io).await,
        "the WebSocket stayed open after its certificate was revoked"
    );
    app.wait_for_no_open_pipe().await;
}

#[tokio::test]
async fn parked_connection_is_closed_once_a_crl_refresh_revokes_its_certificate() {
    let pki = Pki::new();
    let client = pki.client("revoked while parked");
    let (crls, settings) = refreshed_crl(&pki);
    let app = counting_upstream().await;
    let gateway = gateway_before(&pki, settings, app.addr).await;
    let mut tls = tls_stream(gateway.addr, &options(&pki, &client))
        .await
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0_u8; 1024];
        let read = tls.read(&mut buf).await.unwrap();
        assert!(read > 0, "closed before the response");
        head.extend_from_slice(&buf[..read]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Quiet for longer than the park delay (a second), the connection holds only TLS state.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    publish_revocation(&gateway, &crls, &pki, &client).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut rest)).await;
    let read = read.expect("the parked connection stayed open after its certificate was revoked");
    // rustls reports a close without a close_notify as an error.
    assert!(read.is_ok(), "closed without a close_notify: {read:?}");
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn open_websocket_is_closed_once_a_responder_reports_its_certificate_revoked() {
    let pki = Pki::new();
    let client = pki.client("reported while piping");
    let Some(mut responder) = responder(&pki, &[(&client, "client", false)], &[]) else {
        return;
    };
    let app = counting_upstream().await;
    let settings = serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() });
    let gateway = gateway_before(&pki, settings, app.addr).await;
    let (_connection, mut io) = open_websocket(&gateway, &pki, &client).await;

    responder
        .ocsp
        .write_index(&index_line(client.der(), "client", true));
    // Another connection of the same certificate learns the revocation.
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
    assert!(
        closed_by_certgate(&mut io).await,
        "the WebSocket stayed open after its certificate was reported revoked"
    );
    app.wait_for_no_open_pipe().await;
}

/// Whether `io` still pipes both ways.
async fn still_piped(io: &mut hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) {
    echo(io, b"after the revocation of another certificate").await;
}

#[tokio::test]
async fn responder_revocation_learned_after_a_reload_closes_a_websocket_opened_before_it() {
    let pki = Pki::new();
    let (client, other) = (pki.client("revoked after a reload"), pki.client("other"));
    let entries = [(&client, "client", false), (&other, "other", false)];
    let Some(mut responder) = responder(&pki, &entries, &[]) else {
        return;
    };
    let app = counting_upstream().await;
    let settings = serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() });
    let gateway = gateway_before(&pki, settings, app.addr).await;
    let (_connection, mut io) = open_websocket(&gateway, &pki, &client).await;
    let (_other_connection, mut other_io) = open_websocket(&gateway, &pki, &other).await;

    // The same config again: a new generation, with a checker of its own.
    gateway.reloader.reload().await.unwrap();
    let index = index_line(client.der(), "client", true) + &index_line(other.der(), "other", false);
    responder.ocsp.write_index(&index);
    // A handshake under the new generation learns the revocation.
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
    assert!(
        closed_by_certgate(&mut io).await,
        "the WebSocket of the generation before the reload stayed open after its certificate was reported revoked"
    );
    still_piped(&mut other_io).await;
}

#[tokio::test]
async fn crl_fetched_by_a_reload_closes_a_websocket_opened_before_it() {
    let pki = Pki::new();
    let (client, other) = (pki.client("listed at the reload"), pki.client("other"));
    let crls = crl_server(&pki.client_ca, &[]);
    let app = counting_upstream().await;
    // Refreshed only hourly: the new generation's fetch at load is what learns the CRL.
    let settings = serde_json::json!({ "crlUrls": [crls.url("ca.crl")] });
    let gateway = gateway_before(&pki, settings, app.addr).await;
    let (_connection, mut io) = open_websocket(&gateway, &pki, &client).await;
    let (_other_connection, mut other_io) = open_websocket(&gateway, &pki, &other).await;

    crls.set(Answer::Body(fresh_crl(&pki.client_ca, &[&client.serial])));
    gateway.reloader.reload().await.unwrap();
    assert!(
        closed_by_certgate(&mut io).await,
        "the WebSocket of the generation before the reload stayed open after the CRL the reload fetched listed its certificate"
    );
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
    still_piped(&mut other_io).await;
}

#[tokio::test]
async fn crl_file_rewritten_to_list_a_certificate_closes_its_websocket_opened_before_the_reload() {
    let pki = Pki::new();
    let (client, other) = (pki.client("listed by the new file"), pki.client("other"));
    let in_a_day = || time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("ca.crl", pki.client_ca.crl(&[], in_a_day()));
    let app = counting_upstream().await;
    let mut config = config(app.addr, serde_json::json!({}));
    // `crlFiles` alone: webpki checks it during the handshake.
    config["apps"][0]["clientAuth"] = serde_json::json!({
        "trustedCaFiles": ["client-ca.pem"],
        "crlFiles": ["ca.crl"],
    });
    let gateway = Gateway::start(dir, config).await;
    let (_connection, mut io) = open_websocket(&gateway, &pki, &client).await;
    let (_other_connection, mut other_io) = open_websocket(&gateway, &pki, &other).await;

    gateway
        .dir
        .write("ca.crl", pki.client_ca.crl(&[&client], in_a_day()));
    let reloaded = r#"certgate_reloads_total{result="success"}"#;
    let text = scrape_until(
        gateway.admin.unwrap(),
        300,
        Duration::from_millis(50),
        |text| metric(text, reloaded) >= 1.0,
    )
    .await;
    assert_eq!(
        metric(&text, reloaded),
        1.0,
        "the file watch did not reload"
    );
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
    assert!(
        closed_by_certgate(&mut io).await,
        "the WebSocket of the generation before the reload stayed open after the new CRL listed its certificate"
    );
    still_piped(&mut other_io).await;
}

async fn ocsp_revocation_closes_open_connections_of_that_certificate(http2: bool) {
    let pki = Pki::new();
    let client = pki.client("reported later");
    let other = pki.client("other client");
    let entries = [(&client, "client", false), (&other, "other", false)];
    let Some(mut responder) = responder(&pki, &entries, &[]) else {
        return;
    };
    let app = counting_upstream().await;
    let settings = serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() });
    let gateway = gateway_before(&pki, settings, app.addr).await;
    let addr = gateway.addr;
    let open = |leaf: &Leaf| {
        let options = options(&pki, leaf).http2(http2);
        async move { Connection::open(addr, &options).await.unwrap() }
    };
    let (mut revoked_later, mut unaffected) = (open(&client).await, open(&other).await);
    for connection in [&mut revoked_later, &mut unaffected] {
        let request = connection.get(HOST, "/");
        assert_eq!(connection.send(request).await.unwrap().status, 200);
    }
    assert_eq!(app.requests(), 2);

    let index = index_line(client.der(), "client", true) + &index_line(other.der(), "other", false);
    responder.ocsp.write_index(&index);
    assert_refused(&gateway, &options(&pki, &client).http2(http2), "revoked").await;

    // The revocation is known before the refused handshake ends: the next request on the
    // open connection is not forwarded, and the connection closes.
    let request = revoked_later.get(HOST, "/");
    if let Ok(reply) = revoked_later.send(request).await {
        assert_eq!(reply.status, 403, "{:?}", reply.body);
    }
    wait_until_closed(&mut revoked_later).await;
    assert_eq!(
        app.requests(),
        2,
        "a revoked certificate's request reached the app"
    );

    let request = unaffected.get(HOST, "/");
    assert_eq!(
        unaffected.send(request).await.unwrap().status,
        200,
        "another certificate's connection was closed"
    );
}

#[tokio::test]
async fn ocsp_revocation_closes_open_http1_connections_of_that_certificate_before_their_next_request()
 {
    ocsp_revocation_closes_open_connections_of_that_certificate(false).await;
}

#[tokio::test]
async fn ocsp_revocation_closes_open_http2_connections_of_that_certificate_before_their_next_request()
 {
    ocsp_revocation_closes_open_connections_of_that_certificate(true).await;
}

#[tokio::test]
async fn revoked_answer_after_a_cached_good_one_expired_closes_the_connections_admitted_on_it() {
    let pki = Pki::new();
    let client = pki.client("cached, then revoked");
    // `good` until nextUpdate, 3 s after the answer: cached until then.
    let good = ocsp_answer(&pki.client_ca, false, -60.0, 3.0);
    let responder = HttpFixture::start(Answer::With(good));
    let app = counting_upstream().await;
    let settings = serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.url("") });
    let gateway = gateway_before(&pki, settings, app.addr).await;
    let mut admitted = Vec::new();
    for _ in 0..2 {
        let mut connection = Connection::open(gateway.addr, &options(&pki, &client))
            .await
            .unwrap();
        let request = connection.get(HOST, "/");
        assert_eq!(connection.send(request).await.unwrap().status, 200);
        admitted.push(connection);
    }
    assert_eq!(
        responder.requests(),
        1,
        "control: the second connection used the cache"
    );

    responder.set(Answer::With(ocsp_answer(
        &pki.client_ca,
        true,
        -60.0,
        3600.0,
    )));
    // Past the cached answer's nextUpdate, the next handshake asks again and learns it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
    assert_eq!(responder.requests(), 2);
    for connection in &mut admitted {
        wait_until_closed(connection).await;
    }
    assert_eq!(
        app.requests(),
        2,
        "a revoked certificate's request reached the app"
    );
}

const CONCURRENT: usize = 6;

/// Opens `CONCURRENT` connections of `client` at once, waits until each finished its TLS
/// handshake (so each server-side check is under way or about to be), lets `gate` through,
/// and returns whether each was served.
async fn concurrent_handshakes(
    gateway: &Arc<Gateway>,
    options: ClientOptions,
    gate: &Gate,
) -> Vec<bool> {
    let (handshaken, mut ready) = tokio::sync::mpsc::channel(CONCURRENT);
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENT {
        let (gateway, options, handshaken) = (gateway.clone(), options.clone(), handshaken.clone());
        tasks.push(tokio::spawn(async move {
            let opened = Connection::open(gateway.addr, &options).await;
            let _ = handshaken.send(()).await;
            let mut connection = opened.ok()?;
            let request = connection.get(HOST, "/");
            Some(connection.send(request).await.ok()?.status)
        }));
    }
    for _ in 0..CONCURRENT {
        ready.recv().await.unwrap();
    }
    gate.wait_for_connections(1).await;
    // The server reads each client's Finished right after the client sent it; this leaves
    // the last check time to join the lookup in flight before the answer is let through.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gate.release();
    let mut served = Vec::new();
    for task in tasks {
        served.push(task.await.unwrap().is_some_and(|status| status == 200));
    }
    served
}

#[tokio::test]
async fn concurrent_handshakes_with_a_cold_cache_make_one_responder_request() {
    let pki = Pki::new();
    let client = pki.client("many connections at once");
    let Some(responder) = responder(&pki, &[(&client, "client", false)], &[]) else {
        return;
    };
    let gate = Gate::start(([127, 0, 0, 1], responder.ocsp.port).into());
    let settings = serde_json::json!({ "ocsp": "leaf", "ocspResponder": gate.url("") });
    let gateway = Arc::new(gateway(&pki, settings).await);
    let served = concurrent_handshakes(&gateway, options(&pki, &client), &gate).await;
    assert_eq!(served, vec![true; CONCURRENT]);
    assert_eq!(
        gate.connections(),
        1,
        "the responder was asked more than once"
    );
    let text = scrape(gateway.admin.unwrap()).await;
    let lookups = |outcome: &str| {
        metric(
            &text,
            &format!(r#"certgate_ocsp_lookups_total{{app="require",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(lookups("good"), 1.0, "{text}");
    assert_eq!(lookups("cache_hit"), (CONCURRENT - 1) as f64, "{text}");
}

#[tokio::test]
async fn concurrent_first_uses_of_a_distribution_point_fetch_it_once() {
    let pki = Pki::new();
    let crls = HttpFixture::start(Answer::Body(fresh_crl(&pki.client_ca, &[])));
    let gate = Gate::start(crls.addr);
    let client = leaf(
        &pki.client_ca,
        "many first uses at once",
        &Published {
            crl: Some(gate.url("ca.crl")),
            ocsp: None,
        },
    );
    let settings = serde_json::json!({ "crlFromCertificates": true });
    let gateway = Arc::new(gateway(&pki, settings).await);
    let served = concurrent_handshakes(&gateway, options(&pki, &client), &gate).await;
    assert_eq!(served, vec![true; CONCURRENT]);
    assert_eq!(
        (gate.connections(), crls.requests()),
        (1, 1),
        "the distribution point was fetched more than once"
    );
}

#[tokio::test]
async fn concurrent_handshakes_on_a_hung_responder_share_one_request_and_each_give_up() {
    let pki = Pki::new();
    let client = pki.client("waiting on a hung responder");
    let hung = HttpFixture::start(Answer::Hang);
    let gate = Gate::start(hung.addr);
    let settings = serde_json::json!({ "ocsp": "leaf", "ocspResponder": gate.url("") });
    let gateway = Arc::new(gateway(&pki, settings).await);
    let before = refusals(&gateway, "revocation_unknown").await;
    let served = concurrent_handshakes(&gateway, options(&pki, &client), &gate).await;
    assert_eq!(served, vec![false; CONCURRENT]);
    assert_eq!(
        refusals(&gateway, "revocation_unknown").await,
        before + CONCURRENT as f64,
        "each waiter is refused once the shared lookup times out"
    );
    assert_eq!(
        hung.requests(),
        1,
        "the hung responder was asked more than once"
    );
}
