//! `rejectWith: "http"` and plain HTTP on the TLS port:
//! - no certificate on a `require` app: the handshake completes and every request gets 496,
//!   over HTTP/1.1 and HTTP/2, and no byte reaches the upstream;
//! - a certificate the policy refuses: 495 with the reason, subject and hash, as one text line
//!   or (for `Accept: text/html`) a small HTML page; no byte reaches the upstream;
//! - a certificate that passes is forwarded exactly as with `rejectWith: "tls"`;
//! - proof of possession is still checked: a certificate presented with another key fails the
//!   handshake;
//! - the refusal is counted under its reason in `certgate_handshake_failures_total`;
//! - a resumed TLS session of a refused certificate is refused again (the policy is judged on
//!   every connection, not only on full handshakes);
//! - plain HTTP sent to the TLS port gets `HTTP/1.1 400` saying the port speaks TLS, then a
//!   close.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;

use common::polling::scrape_until;
use common::presenting::{get_to_end, presenting_client};
use common::recording::{Recording, recording_upstream};
use common::{Ca, ClientOptions, Connection, Gateway, Leaf, LeafSpec, Pki, TempDir, app};
use http::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HOST: &str = "require.example.test";

async fn gateway(pki: &Pki, reject_with: &str, mode: &str) -> (Gateway, Recording) {
    let (upstream, recording) = recording_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let mut require = app("require", &[HOST], upstream, mode);
    require["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    require["rejectWith"] = reject_with.into();
    require["forwardClientCert"] = serde_json::json!({ "fields": ["Hash"] });
    let config = serde_json::json!({ "admin": "127.0.0.1:0", "apps": [require] });
    (Gateway::start(dir, config).await, recording)
}

async fn two_requests(
    gateway: &Gateway,
    options: &ClientOptions,
    accept: &str,
) -> Vec<common::Reply> {
    let mut connection = Connection::open(gateway.addr, options)
        .await
        .unwrap_or_else(|failure| panic!("the handshake must complete: {failure:?}"));
    let mut replies = Vec::new();
    for path in ["/one", "/two"] {
        let mut request = connection.request(
            http::Method::POST,
            HOST,
            path,
            bytes::Bytes::from_static(b"a body that must not reach the app"),
        );
        request
            .headers_mut()
            .insert(http::header::ACCEPT, accept.parse().unwrap());
        replies.push(connection.send(request).await.unwrap());
    }
    replies
}

async fn no_certificate_gets_496_and_nothing_reaches_the_app(http2: bool) {
    let pki = Pki::new();
    let (gateway, recording) = gateway(&pki, "http", "require").await;
    let options = ClientOptions::new(&pki, HOST).http2(http2);
    for reply in two_requests(&gateway, &options, "*/*").await {
        common::assert_certgate_error(&reply, StatusCode::from_u16(496).unwrap(), "496");
        let body = String::from_utf8_lossy(&reply.body);
        assert!(body.contains("no_certificate"), "{body}");
    }
    assert_eq!(recording.connections(), 0, "a connection reached the app");
    assert!(recording.bytes().is_empty(), "bytes reached the app");
    gateway.stop().await;
}

#[tokio::test]
async fn http1_without_a_certificate_gets_496_and_nothing_reaches_the_app() {
    no_certificate_gets_496_and_nothing_reaches_the_app(false).await;
}

#[tokio::test]
async fn http2_without_a_certificate_gets_496_and_nothing_reaches_the_app() {
    no_certificate_gets_496_and_nothing_reaches_the_app(true).await;
}

async fn refused_certificate_gets_495_and_nothing_reaches_the_app(http2: bool) {
    let pki = Pki::new();
    let (gateway, recording) = gateway(&pki, "http", "require").await;
    let stranger = Ca::root("a CA nobody trusts").issue(LeafSpec::client("mallory"));
    let options = ClientOptions::new(&pki, HOST)
        .http2(http2)
        .with_identity(stranger.identity());
    let replies = two_requests(&gateway, &options, "*/*").await;
    for reply in &replies {
        common::assert_certgate_error(reply, StatusCode::from_u16(495).unwrap(), "495");
        let body = String::from_utf8_lossy(&reply.body);
        assert!(body.contains("unknown_issuer"), "{body}");
        assert!(body.contains("CN=mallory"), "{body}");
        assert!(body.contains(&stranger.hash_hex()), "{body}");
    }
    let html = two_requests(&gateway, &options, "text/html,application/xhtml+xml").await;
    for reply in &html {
        assert_eq!(reply.status.as_u16(), 495);
        let content_type = reply.headers[http::header::CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let body = String::from_utf8_lossy(&reply.body);
        assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
        assert!(
            body.contains("unknown_issuer") && body.contains("CN=mallory"),
            "{body}"
        );
    }
    assert_eq!(recording.connections(), 0, "a connection reached the app");
    assert!(recording.bytes().is_empty(), "bytes reached the app");
    let metrics = common::scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        common::metric(
            &metrics,
            r#"certgate_handshake_failures_total{app="require",reason="unknown_issuer"}"#
        ),
        2.0,
        "{metrics}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn http1_with_a_refused_certificate_gets_495_and_nothing_reaches_the_app() {
    refused_certificate_gets_495_and_nothing_reaches_the_app(false).await;
}

#[tokio::test]
async fn http2_with_a_refused_certificate_gets_495_and_nothing_reaches_the_app() {
    refused_certificate_gets_495_and_nothing_reaches_the_app(true).await;
}

async fn a_passing_certificate_is_forwarded_whatever_reject_with_says(http2: bool) {
    let pki = Pki::new();
    let alice = pki.client("alice");
    for reject_with in ["tls", "http"] {
        let (gateway, recording) = gateway(&pki, reject_with, "require").await;
        let options = ClientOptions::new(&pki, HOST)
            .http2(http2)
            .with_identity(alice.identity());
        for reply in two_requests(&gateway, &options, "text/html").await {
            assert_eq!(reply.status, StatusCode::OK, "rejectWith {reject_with}");
            assert!(reply.body.starts_with(b"upstream saw /"), "{reply:?}");
        }
        let seen = String::from_utf8_lossy(&recording.bytes()).to_ascii_lowercase();
        assert!(
            seen.contains(&format!("hash={}", alice.hash_hex())),
            "rejectWith {reject_with}: the app did not get the XFCC"
        );
        gateway.stop().await;
    }
}

#[tokio::test]
async fn http1_passing_certificate_is_forwarded_whatever_reject_with_says() {
    a_passing_certificate_is_forwarded_whatever_reject_with_says(false).await;
}

#[tokio::test]
async fn http2_passing_certificate_is_forwarded_whatever_reject_with_says() {
    a_passing_certificate_is_forwarded_whatever_reject_with_says(true).await;
}

#[tokio::test]
async fn an_accept_app_with_reject_with_http_forwards_clients_without_a_certificate() {
    let pki = Pki::new();
    let (gateway, recording) = gateway(&pki, "http", "accept").await;
    let options = ClientOptions::new(&pki, HOST);
    for reply in two_requests(&gateway, &options, "*/*").await {
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert!(!recording.bytes().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn reject_with_http_still_checks_proof_of_possession() {
    let pki = Pki::new();
    let (gateway, recording) = gateway(&pki, "http", "require").await;
    let alice = pki.client("alice");
    let impostor = Leaf::self_signed(LeafSpec::client("impostor"));
    // Alice's certificate, signed for with another key.
    let config = presenting_client(&pki, alice.chain.clone(), impostor.key_der());
    let outcome = get_to_end(gateway.addr, config, HOST).await;
    match outcome {
        Err(error) => assert!(
            error.to_string().contains("DecryptError") || error.to_string().contains("alert"),
            "{error}"
        ),
        Ok(bytes) => panic!(
            "the handshake must fail; got {:?}",
            String::from_utf8_lossy(&bytes)
        ),
    }
    assert!(recording.bytes().is_empty(), "bytes reached the app");
    gateway.stop().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_a_400_saying_it_speaks_tls() {
    let pki = Pki::new();
    let (gateway, recording) = gateway(&pki, "tls", "require").await;
    let mut tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: require.example.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    // read_to_string ends at the close: the connection does not stay open.
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("Connection: close\r\n"), "{answer:?}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    assert!(
        body.contains("HTTPS (TLS)") && body.contains("https://"),
        "{body:?}"
    );
    let length: usize = answer
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len());
    assert!(recording.bytes().is_empty());
    drop(tcp);
    // The refusal is counted once certgate has closed its side; wait for it (bounded).
    let series = r#"certgate_handshake_failures_total{app="",reason="protocol"}"#;
    let every = std::time::Duration::from_millis(25);
    let text = scrape_until(gateway.admin.unwrap(), 200, every, |text| {
        common::metric(text, series) > 0.0
    })
    .await;
    assert_eq!(common::metric(&text, series), 1.0);
    gateway.stop().await;
}

#[tokio::test]
async fn a_resumed_session_of_a_refused_certificate_is_refused_again() {
    let pki = Pki::new();
    let (gateway, recording) = gateway(&pki, "http", "require").await;
    let stranger = Ca::root("a CA nobody trusts").issue(LeafSpec::client("mallory"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.server_ca.der.clone()).unwrap();
    // One config, so its session cache offers the first connection's ticket to the second.
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(stranger.chain.clone(), stranger.key_der())
        .unwrap(),
    );
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: require.example.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 495"), "{answer}");
        kinds.push(tls.get_ref().1.handshake_kind());
    }
    assert_eq!(
        kinds[1],
        Some(rustls::HandshakeKind::Resumed),
        "the second connection must resume for this test to mean anything"
    );
    assert!(recording.bytes().is_empty(), "bytes reached the app");
    gateway.stop().await;
}

#[tokio::test]
async fn a_client_that_sends_only_its_leaf_is_told_the_intermediate_is_missing() {
    let pki = Pki::new();
    let intermediate = pki.client_ca.intermediate("certgate test intermediate");
    let client = intermediate.issue(LeafSpec::client("leaf of an intermediate"));
    let (gateway, recording) = gateway(&pki, "http", "require").await;
    let leaf_only = common::client::Identity {
        chain: vec![client.der().clone()],
        key: Arc::new(client.key_der()),
    };
    let options = ClientOptions::new(&pki, HOST).with_identity(leaf_only);
    for reply in two_requests(&gateway, &options, "*/*").await {
        assert_eq!(reply.status.as_u16(), 495);
        let body = String::from_utf8_lossy(&reply.body);
        assert!(
            body.contains("the client sent no intermediate CA certificate")
                && body.contains("certgate test intermediate")
                && body.contains("--cert file"),
            "{body}"
        );
    }
    assert_eq!(recording.connections(), 0, "a connection reached the app");
    // With its intermediate after it, the same certificate is served.
    let options = ClientOptions::new(&pki, HOST).with_identity(client.identity());
    for reply in two_requests(&gateway, &options, "*/*").await {
        assert_eq!(reply.status, StatusCode::OK);
    }
}
