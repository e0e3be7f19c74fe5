//! What the app receives, byte for byte (RFC 9112 §3.2.1, docs/decisions.md): certgate in
//! front of raw-socket apps that record the exact bytes (HTTP/1.1) or the exact decoded
//! header block (h2c), with no HTTP library on the app side to tidy the target.
//! - an HTTP/1.1 GET reaches the app in origin-form, with `Host` unchanged and the forwarded
//!   headers after the client's, in a fixed order and spelling (XFCC last);
//! - an HTTP/2 GET reaches the HTTP/1.1 app the same way, `Host` carrying `:authority`;
//! - an HTTP/1.1 absolute-form target reaches the app in origin-form;
//! - a percent-encoded path and query reach the app byte for byte, from HTTP/1.1 and HTTP/2;
//! - `OPTIONS *` reaches the app as `*`;
//! - hop-by-hop request headers are removed, `X-Forwarded-For` is appended to, a forged XFCC
//!   never reaches the app;
//! - a POST with `Content-Length` keeps that framing (HTTP/1.1 and HTTP/2 clients);
//! - a chunked HTTP/1.1 POST, and an HTTP/2 POST of unknown length, reach the app chunked;
//! - a WebSocket upgrade reaches the app in origin-form with `Connection: upgrade` and
//!   `Upgrade`, and the upgraded connection is piped both ways;
//! - an h2c app (`transport: http2`) gets `:authority` = the client's authority, `:path` =
//!   the target as sent (percent-encoding and absolute-form included) and no `Host` that
//!   disagrees with `:authority` (RFC 9113 §8.3.1).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::raw::raw_http1;
use common::raw_h2c::raw_h2c_upstream;
use common::recording::{Recording, raw_upstream};
use common::{ClientOptions, Connection, Gateway, Leaf, Pki, TempDir, pem_of, tls_stream};
use http::Request;
use http_body_util::Full;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const REQUIRE: &str = "require.example.test";
const IGNORE: &str = "ignore.example.test";

/// certgate with the `require` and `ignore` apps of `require_and_ignore` in front of
/// `upstream`, over `transport`; the PKI and a client certificate it trusts.
async fn start(upstream: SocketAddr, transport: &str) -> (Gateway, Pki, Leaf) {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut apps = common::require_and_ignore(upstream);
    for app in &mut apps {
        app["ingress"]["transport"] = transport.into();
    }
    let gateway = Gateway::start(dir, serde_json::json!({ "apps": apps })).await;
    let client = pki.client("conformance client");
    (gateway, pki, client)
}

/// An HTTP/1.1 app behind certgate, and options for an `ignore`-app client.
async fn http1_app() -> (Gateway, ClientOptions, Recording) {
    let (upstream, recording) = raw_upstream().await;
    let (gateway, pki, _) = start(upstream, "http").await;
    let options = ClientOptions::new(&pki, IGNORE);
    (gateway, options, recording)
}

/// The bytes the app received, as text (every test sends ASCII).
fn received(recording: &Recording) -> String {
    String::from_utf8(recording.bytes()).unwrap()
}

/// Envoy's URL-encoding, written out: every byte but `A-Z a-z 0-9 * - . _` becomes `%XX`.
fn envoy_encode(text: &str) -> String {
    let mut out = String::new();
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'*' | b'-' | b'.' | b'_') {
            out.push(char::from(byte));
        } else {
            write!(out, "%{byte:02X}").unwrap();
        }
    }
    out
}

/// The XFCC value for a client sending `leaf` alone.
fn expected_xfcc(leaf: &Leaf) -> String {
    let hash = leaf.hash_hex();
    let cert = envoy_encode(&pem_of(leaf.der()));
    format!("Hash={hash};Cert=\"{cert}\";Chain=\"{cert}\"")
}

/// The forwarded headers certgate adds for an `ignore`-app client, in order.
fn forwarded(authority: &str) -> String {
    format!(
        "x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: https\r\nx-forwarded-host: {authority}\r\n"
    )
}

/// Sends one request over HTTP/2 and asserts the app's 200 came back.
async fn send_http2(options: &ClientOptions, addr: SocketAddr, request: Request<Full<Bytes>>) {
    let mut conn = Connection::open(addr, &options.clone().http2(true))
        .await
        .unwrap_or_else(|f| panic!("handshake refused: {}", f.message));
    let reply = conn
        .send(request)
        .await
        .unwrap_or_else(|f| panic!("{}", f.message));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

/// Sends raw HTTP/1.1 bytes and asserts the app's 200 (`RAW_RESPONSE`) came back.
async fn send_http1(options: &ClientOptions, addr: SocketAddr, request: &str) {
    let reply = raw_http1(addr, options, request).await;
    assert_eq!(reply.status, 200, "{:?}", reply.text());
    assert_eq!(reply.text(), "ok");
}

#[tokio::test]
async fn an_http1_get_reaches_the_app_in_origin_form_with_host_and_forwarded_headers_in_order() {
    let (upstream, recording) = raw_upstream().await;
    let (gateway, pki, client) = start(upstream, "http").await;
    let options = ClientOptions::new(&pki, REQUIRE).with_identity(client.identity());

    send_http1(
        &options,
        gateway.addr,
        "GET /orders/7?expand=items HTTP/1.1\r\nHost: require.example.test\r\nUser-Agent: conformance\r\nAccept: */*\r\n\r\n",
    )
    .await;

    assert_eq!(
        received(&recording),
        format!(
            "GET /orders/7?expand=items HTTP/1.1\r\nhost: require.example.test\r\nuser-agent: conformance\r\naccept: */*\r\n{}x-forwarded-client-cert: {}\r\n\r\n",
            forwarded(REQUIRE),
            expected_xfcc(&client),
        )
    );
}

#[tokio::test]
async fn an_http2_get_reaches_the_http1_app_in_origin_form_with_host_from_the_authority() {
    let (gateway, options, recording) = http1_app().await;
    let request = Request::get("https://ignore.example.test:8443/orders/7?expand=items")
        .header("user-agent", "conformance")
        .body(Full::new(Bytes::new()))
        .unwrap();

    send_http2(&options, gateway.addr, request).await;

    assert_eq!(
        received(&recording),
        format!(
            "GET /orders/7?expand=items HTTP/1.1\r\nuser-agent: conformance\r\n{}host: ignore.example.test:8443\r\n\r\n",
            forwarded("ignore.example.test:8443"),
        )
    );
}

#[tokio::test]
async fn an_http1_absolute_form_target_reaches_the_app_in_origin_form() {
    let (gateway, options, recording) = http1_app().await;

    send_http1(
        &options,
        gateway.addr,
        "GET https://ignore.example.test/absolute/x?y=1 HTTP/1.1\r\nHost: ignore.example.test\r\n\r\n",
    )
    .await;

    assert_eq!(
        received(&recording),
        format!(
            "GET /absolute/x?y=1 HTTP/1.1\r\nhost: ignore.example.test\r\n{}\r\n",
            forwarded(IGNORE)
        )
    );
}

/// A target no normalizer leaves alone: encoded `/`, `?`, `&`, `%`, space, UTF-8, `+`, and
/// lowercase hex.
const ENCODED: &str = "/files/a%2Fb%20c?q=%E2%82%AC%3F%26x%25&sort=name+asc&raw=%2f";

#[tokio::test]
async fn a_percent_encoded_target_reaches_the_app_byte_for_byte_from_an_http1_client() {
    let (gateway, options, recording) = http1_app().await;

    send_http1(
        &options,
        gateway.addr,
        &format!("GET {ENCODED} HTTP/1.1\r\nHost: ignore.example.test\r\n\r\n"),
    )
    .await;

    assert_eq!(
        received(&recording),
        format!(
            "GET {ENCODED} HTTP/1.1\r\nhost: ignore.example.test\r\n{}\r\n",
            forwarded(IGNORE)
        )
    );
}

#[tokio::test]
async fn a_percent_encoded_target_reaches_the_app_byte_for_byte_from_an_http2_client() {
    let (gateway, options, recording) = http1_app().await;
    let request = Request::get(format!("https://{IGNORE}{ENCODED}"))
        .body(Full::new(Bytes::new()))
        .unwrap();

    send_http2(&options, gateway.addr, request).await;

    assert_eq!(
        received(&recording),
        format!(
            "GET {ENCODED} HTTP/1.1\r\n{}host: ignore.example.test\r\n\r\n",
            forwarded(IGNORE)
        )
    );
}

#[tokio::test]
async fn options_asterisk_reaches_the_app_as_an_asterisk() {
    let (gateway, options, recording) = http1_app().await;

    send_http1(
        &options,
        gateway.addr,
        "OPTIONS * HTTP/1.1\r\nHost: ignore.example.test\r\n\r\n",
    )
    .await;

    assert_eq!(
        received(&recording),
        format!(
            "OPTIONS * HTTP/1.1\r\nhost: ignore.example.test\r\n{}\r\n",
            forwarded(IGNORE)
        )
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_x_forwarded_for_is_appended_to() {
    let (gateway, options, recording) = http1_app().await;

    send_http1(
        &options,
        gateway.addr,
        "GET /hop HTTP/1.1\r\nHost: ignore.example.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: gzip\r\nProxy-Authorization: Basic eDp5\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Client-Cert: Hash=forged\r\nX-App: kept\r\n\r\n",
    )
    .await;

    // Removing a header moves the last one into its place (RFC 9110 §5.3: the order of fields
    // with different names is not significant); certgate's own come last all the same.
    assert_eq!(
        received(&recording),
        "GET /hop HTTP/1.1\r\nhost: ignore.example.test\r\nx-app: kept\r\nx-forwarded-for: 203.0.113.7, 127.0.0.1\r\nx-forwarded-proto: https\r\nx-forwarded-host: ignore.example.test\r\n\r\n"
    );
}

#[tokio::test]
async fn an_http1_post_with_content_length_reaches_the_app_with_that_length() {
    let (gateway, options, recording) = http1_app().await;

    send_http1(
        &options,
        gateway.addr,
        "POST /upload?kind=json HTTP/1.1\r\nHost: ignore.example.test\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"id\": 12345}",
    )
    .await;

    assert_eq!(
        received(&recording),
        format!(
            "POST /upload?kind=json HTTP/1.1\r\nhost: ignore.example.test\r\ncontent-type: application/json\r\ncontent-length: 13\r\n{}\r\n{{\"id\": 12345}}",
            forwarded(IGNORE)
        )
    );
}

#[tokio::test]
async fn an_http2_post_with_content_length_reaches_the_app_with_that_length() {
    let (gateway, options, recording) = http1_app().await;
    let request = Request::post(format!("https://{IGNORE}/upload?kind=json"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"id\": 12345}")))
        .unwrap();

    send_http2(&options, gateway.addr, request).await;

    assert_eq!(
        received(&recording),
        format!(
            "POST /upload?kind=json HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 13\r\n{}host: ignore.example.test\r\n\r\n{{\"id\": 12345}}",
            forwarded(IGNORE)
        )
    );
}

#[tokio::test]
async fn an_http1_chunked_post_reaches_the_app_chunked() {
    let (gateway, options, recording) = http1_app().await;

    send_http1(
        &options,
        gateway.addr,
        "POST /stream HTTP/1.1\r\nHost: ignore.example.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;

    let text = received(&recording);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        format!("{head}\r\n\r\n"),
        format!(
            "POST /stream HTTP/1.1\r\nhost: ignore.example.test\r\n{}transfer-encoding: chunked\r\n\r\n",
            forwarded(IGNORE)
        )
    );
    // hyper may re-cut the chunks; the framing stays chunked and the payload whole.
    assert!(body.ends_with("0\r\n\r\n"), "{body:?}");
    assert_eq!(common::raw::dechunk(body.as_bytes()), b"hello world");
}

#[tokio::test]
async fn an_http2_post_of_unknown_length_reaches_the_app_chunked() {
    let (gateway, options, recording) = http1_app().await;
    let tls = tls_stream(gateway.addr, &options.clone().http2(true))
        .await
        .unwrap_or_else(|f| panic!("handshake refused: {}", f.message));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = UnknownLength(vec![
        Bytes::from_static(b" world"),
        Bytes::from_static(b"hello"),
    ]);
    let request = Request::post(format!("https://{IGNORE}/stream"))
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);

    let text = received(&recording);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        format!("{head}\r\n\r\n"),
        format!(
            "POST /stream HTTP/1.1\r\n{}host: ignore.example.test\r\ntransfer-encoding: chunked\r\n\r\n",
            forwarded(IGNORE)
        )
    );
    assert_eq!(common::raw::dechunk(body.as_bytes()), b"hello world");
}

#[tokio::test]
async fn a_websocket_upgrade_reaches_the_app_in_origin_form_and_is_piped_both_ways() {
    let (gateway, options, recording) = http1_app().await;
    let mut tls = tls_stream(gateway.addr, &options)
        .await
        .unwrap_or_else(|f| panic!("handshake refused: {}", f.message));
    tls.write_all(b"GET /ws?room=1 HTTP/1.1\r\nHost: ignore.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    tls.write_all(b"frame").await.unwrap();
    let mut echoed = [0u8; 5];
    tls.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"frame");

    assert_eq!(
        received(&recording),
        format!(
            "GET /ws?room=1 HTTP/1.1\r\nhost: ignore.example.test\r\nsec-websocket-version: 13\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nconnection: upgrade\r\n{}\r\nframe",
            forwarded(IGNORE)
        )
    );
}

/// A body whose parts (last first) are sent as DATA frames, with no size hint: hyper's
/// client then sends no content-length.
struct UnknownLength(Vec<Bytes>);

impl hyper::body::Body for UnknownLength {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.pop().map(|part| Ok(Frame::data(part))))
    }
}

/// The fields an h2c app must see first: the request's pseudo-headers.
fn pseudo(method: &str, authority: &str, path: &str) -> Vec<(String, String)> {
    [
        (":method", method),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect()
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn an_h2c_app_gets_the_client_authority_and_the_target_from_an_http1_client() {
    let (upstream, recording) = raw_h2c_upstream().await;
    let (gateway, pki, _) = start(upstream, "http2").await;
    let options = ClientOptions::new(&pki, IGNORE);

    send_http1(
        &options,
        gateway.addr,
        "GET /orders/7?expand=items HTTP/1.1\r\nHost: ignore.example.test\r\nUser-Agent: conformance\r\n\r\n",
    )
    .await;

    let request = recording.single();
    let mut expected = pseudo("GET", IGNORE, "/orders/7?expand=items");
    expected.extend(fields(&[
        ("user-agent", "conformance"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", IGNORE),
    ]));
    assert_eq!(request.fields, expected);
}

#[tokio::test]
async fn an_h2c_app_gets_an_absolute_form_target_as_its_path() {
    let (upstream, recording) = raw_h2c_upstream().await;
    let (gateway, pki, _) = start(upstream, "http2").await;
    let options = ClientOptions::new(&pki, IGNORE);

    send_http1(
        &options,
        gateway.addr,
        "GET https://ignore.example.test/absolute/x?y=1 HTTP/1.1\r\nHost: ignore.example.test\r\n\r\n",
    )
    .await;

    let request = recording.single();
    assert_eq!(
        request.fields[..4],
        pseudo("GET", IGNORE, "/absolute/x?y=1")
    );
    assert!(request.values("host").is_empty(), "{:?}", request.fields);
}

#[tokio::test]
async fn an_h2c_app_gets_a_percent_encoded_target_byte_for_byte_from_an_http2_client() {
    let (upstream, recording) = raw_h2c_upstream().await;
    let (gateway, pki, _) = start(upstream, "http2").await;
    let options = ClientOptions::new(&pki, IGNORE);
    let request = Request::get(format!("https://ignore.example.test:8443{ENCODED}"))
        .body(Full::new(Bytes::new()))
        .unwrap();

    send_http2(&options, gateway.addr, request).await;

    let request = recording.single();
    let mut expected = pseudo("GET", "ignore.example.test:8443", ENCODED);
    expected.extend(fields(&[
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "ignore.example.test:8443"),
    ]));
    assert_eq!(request.fields, expected);
}

#[tokio::test]
async fn an_h2c_app_gets_a_post_body_with_its_length() {
    let (upstream, recording) = raw_h2c_upstream().await;
    let (gateway, pki, client) = start(upstream, "http2").await;
    let options = ClientOptions::new(&pki, REQUIRE).with_identity(client.identity());

    send_http1(
        &options,
        gateway.addr,
        "POST /upload HTTP/1.1\r\nHost: require.example.test\r\nContent-Length: 13\r\n\r\n{\"id\": 12345}",
    )
    .await;

    let request = recording.single();
    let mut expected = pseudo("POST", REQUIRE, "/upload");
    expected.extend(fields(&[
        ("content-length", "13"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", REQUIRE),
        ("x-forwarded-client-cert", &expected_xfcc(&client)),
    ]));
    assert_eq!(request.fields, expected);
    assert_eq!(request.body, b"{\"id\": 12345}");
}
