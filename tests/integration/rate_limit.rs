//! docs/policy.md "Rate limiting": `rateLimit` per client identity, over HTTP/1.1 and HTTP/2, on a
//! paused tokio clock (time moves only when a test advances it, so no test sleeps). The rate
//! is one request per 1000 s, so no timer the runtime may jump to refills a bucket by itself.
//!
//! Cases:
//! - A client gets `burst` requests, then 429 with `Retry-After` and a one-line body, also on
//!   a new connection (the key is the certificate, not the connection) and across HTTP
//!   versions; once the clock has moved on by 1/rate, one more request passes.
//! - Keys are isolated: another certificate, and clients without a certificate (keyed by
//!   address), each have their own bucket.
//! - `certgate_rate_limited_requests_total{app}` counts the 429s (present at zero before).
//! - The eviction bound is unit-tested in `src/request_policy/rate_limit.rs` (a table of 100 000 keys
//!   is not built over sockets).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::time::Duration;

use common::raw::{RawReply, send_target};
use common::*;
use serde_json::json;

const HOST: &str = "accept.example.test";

async fn gateway(pki: &Pki) -> Gateway {
    let upstream = echo_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let mut accept = app("accept", &[HOST], upstream, "accept");
    accept["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    accept["rateLimit"] = json!({ "requestsPerSecond": 0.001, "burst": 2 });
    Gateway::start(dir, json!({ "admin": "127.0.0.1:0", "apps": [accept] })).await
}

async fn send(gateway: &Gateway, pki: &Pki, client: Option<&Leaf>, http2: bool) -> RawReply {
    let mut options = ClientOptions::new(pki, HOST).http2(http2);
    if let Some(client) = client {
        options = options.with_identity(client.identity());
    }
    send_target(gateway.addr, &options, HOST, "GET", "/").await
}

fn assert_limited(reply: &RawReply, label: &str) {
    reply.assert_certgate(429, label);
    let retry: u64 = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("{label}: no Retry-After in {:?}", reply.headers))
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&retry), "{label}: Retry-After {retry}");
}

#[tokio::test(start_paused = true)]
async fn a_burst_passes_then_429_until_a_token_is_back() {
    let pki = Pki::new();
    let gateway = gateway(&pki).await;
    for http2 in [false, true] {
        let label = if http2 { "h2" } else { "h1" };
        let client = pki.client(label);
        for n in 0..2 {
            let reply = send(&gateway, &pki, Some(&client), http2).await;
            assert_eq!(reply.status, 200, "{label} request {n}: {}", reply.text());
        }
        // Each `send` is a new connection: the bucket belongs to the certificate.
        assert_limited(&send(&gateway, &pki, Some(&client), http2).await, label);
        assert_limited(&send(&gateway, &pki, Some(&client), !http2).await, label);
        tokio::time::advance(Duration::from_secs(1000)).await;
        let reply = send(&gateway, &pki, Some(&client), http2).await;
        assert_eq!(
            reply.status,
            200,
            "{label} after the refill: {}",
            reply.text()
        );
        assert_limited(&send(&gateway, &pki, Some(&client), http2).await, label);
    }
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_rate_limited_requests_total{app="accept"}"#
        ),
        6.0,
        "{text}"
    );
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn each_certificate_and_each_address_has_its_own_bucket() {
    let pki = Pki::new();
    let gateway = gateway(&pki).await;
    let text = scrape(gateway.admin.unwrap()).await;
    assert!(
        text.contains(r#"certgate_rate_limited_requests_total{app="accept"} 0"#),
        "{text}"
    );
    let first = pki.client("first");
    let second = pki.client("second");
    for http2 in [false, true] {
        let reply = send(&gateway, &pki, Some(&first), http2).await;
        assert_eq!(reply.status, 200, "first: {}", reply.text());
    }
    assert_limited(&send(&gateway, &pki, Some(&first), false).await, "first");
    for http2 in [false, true] {
        let reply = send(&gateway, &pki, Some(&second), http2).await;
        assert_eq!(reply.status, 200, "second: {}", reply.text());
        // Without a certificate the key is the client's address (127.0.0.1 here).
        let reply = send(&gateway, &pki, None, http2).await;
        assert_eq!(reply.status, 200, "no certificate: {}", reply.text());
    }
    assert_limited(&send(&gateway, &pki, None, true).await, "no certificate");
    assert_limited(&send(&gateway, &pki, Some(&second), true).await, "second");
    gateway.stop().await;
}
