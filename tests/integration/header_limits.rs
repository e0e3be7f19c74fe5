//! Request header limits on both HTTP versions (docs/operations.md "Limits under attack"):
//! - more than limits.maxRequestHeaders fields gets 431 over HTTP/1.1 and HTTP/2;
//! - a header block over limits.maxRequestHeaderBytes (70 KB against 64 KiB) gets 431 over
//!   HTTP/1.1 and, on its stream only, over HTTP/2: the HTTP/2 connection serves on;
//! - every one of them is counted as `code="431"`; a request within the limits is served.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::polling::scrape_until;
use common::*;
use http_body_util::Full;

const HOST: &str = "ignore.example.test";

async fn gateway(pki: &Pki, limits: serde_json::Value) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let config = serde_json::json!({
        "admin": "127.0.0.1:0",
        "apps": [app("ignore", &[HOST], upstream, "ignore")],
        "limits": limits,
    });
    Gateway::start(dir, config).await
}

fn with_fields(conn: &Connection, fields: usize, value_len: usize) -> http::Request<Full<Bytes>> {
    let mut request = conn.get(HOST, "/");
    let value = http::HeaderValue::from_str(&"v".repeat(value_len)).unwrap();
    for i in 0..fields {
        let name = http::HeaderName::from_bytes(format!("x-field-{i}").as_bytes()).unwrap();
        request.headers_mut().insert(name, value.clone());
    }
    request
}

async fn count_431(gateway: &Gateway, want: f64) {
    let series = r#"certgate_requests_total{app="ignore",client_cert="none",code="431"}"#;
    let text = scrape_until(
        gateway.admin.unwrap(),
        200,
        Duration::from_millis(25),
        |text| metric_value(text, series).is_some_and(|seen| seen >= want),
    )
    .await;
    assert_eq!(metric(&text, series), want, "431 answers counted");
}

#[tokio::test]
async fn too_many_header_fields_get_431_over_http1() {
    let pki = Pki::new();
    let gateway = gateway(&pki, serde_json::json!({ "maxRequestHeaders": 20 })).await;
    let options = ClientOptions::new(&pki, HOST);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let request = with_fields(&conn, 10, 8);
    assert_eq!(conn.send(request).await.unwrap().status, 200);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let request = with_fields(&conn, 30, 8);
    assert_eq!(conn.send(request).await.unwrap().status, 431);
    count_431(&gateway, 1.0).await;
    gateway.stop().await;
}

#[tokio::test]
async fn too_many_header_fields_get_431_on_their_http2_stream() {
    let pki = Pki::new();
    let gateway = gateway(&pki, serde_json::json!({ "maxRequestHeaders": 20 })).await;
    let options = ClientOptions::new(&pki, HOST).http2(true);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let request = with_fields(&conn, 30, 8);
    let reply = conn.send(request).await.unwrap();
    assert_certgate_error(
        &reply,
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "h2",
    );
    let request = with_fields(&conn, 10, 8);
    assert_eq!(conn.send(request).await.unwrap().status, 200);
    count_431(&gateway, 1.0).await;
    gateway.stop().await;
}

#[tokio::test]
async fn default_limit_is_one_hundred_header_fields() {
    let pki = Pki::new();
    let gateway = gateway(&pki, serde_json::json!({})).await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, HOST).http2(http2);
        let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
        // With Host (and, over HTTP/2, nothing else) 90 fields are within 100.
        let request = with_fields(&conn, 90, 8);
        assert_eq!(
            conn.send(request).await.unwrap().status,
            200,
            "http2={http2}"
        );
        let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
        let request = with_fields(&conn, 101, 8);
        assert_eq!(
            conn.send(request).await.unwrap().status,
            431,
            "http2={http2}"
        );
    }
    count_431(&gateway, 2.0).await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_70_kb_header_block_gets_431_over_both_versions() {
    let pki = Pki::new();
    let gateway = gateway(&pki, serde_json::json!({})).await;
    let options = ClientOptions::new(&pki, HOST);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let request = with_fields(&conn, 7, 10_000);
    assert_eq!(conn.send(request).await.unwrap().status, 431);

    let options = ClientOptions::new(&pki, HOST).http2(true);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let request = with_fields(&conn, 7, 10_000);
    let reply = conn.send(request).await.unwrap();
    assert_certgate_error(
        &reply,
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "h2",
    );
    // Only the stream was refused.
    let request = conn.get(HOST, "/");
    assert_eq!(conn.send(request).await.unwrap().status, 200);
    count_431(&gateway, 2.0).await;
    gateway.stop().await;
}
