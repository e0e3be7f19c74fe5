//! PROXY protocol on the mTLS listener (docs/replicas.md), with a real client
//! that writes the header before its TLS handshake:
//! - a v1 header (hand-built bytes) and a v2 header (written with the ppp crate, IPv6, with an
//!   unknown TLV) from a trusted source: the carried address is the client address in
//!   `X-Forwarded-For`, over HTTP/1.1 and HTTP/2, with mTLS and XFCC as usual;
//! - v2 `LOCAL` and v1 `UNKNOWN` (a balancer's own health check): served as the peer itself;
//! - refused and counted by reason: an untrusted source (even one sending a valid header), a
//!   trusted source with no header, a malformed header, a truncated one, an oversized one, and
//!   one that does not arrive within the handshake deadline;
//! - without `proxyProtocol`, a header is not read (the connection fails as bad TLS);
//! - the real binary's access line names the carried address in `client.addr`;
//! - the rate limit of certificate-less clients is keyed on the carried address: a v2
//!   `::ffff:6.6.6.6` shares the bucket of a v1 `6.6.6.6`, and IPv6 clients share one per /64.
//!
//! HAProxy in front, as the real balancer, is in `tests/integration/haproxy.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::time::Duration;

use common::polling::poll;
use common::proxied::tcp_from;
use common::*;
use tokio::io::AsyncWriteExt as _;

const HOST: &str = "require.example.test";

struct Setup {
    pki: Pki,
    client: Leaf,
    gateway: Gateway,
}

async fn setup(trusted: &[&str], handshake_ms: u64) -> Setup {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let [require, ignore] = require_and_ignore(upstream);
    let gateway = Gateway::start(
        dir,
        serde_json::json!({
            "admin": "127.0.0.1:0",
            "proxyProtocol": { "trustedSources": trusted },
            "timeouts": { "handshakeMs": handshake_ms },
            "apps": [require, ignore],
        }),
    )
    .await;
    Setup {
        client: pki.client("client behind a balancer"),
        pki,
        gateway,
    }
}

fn options(setup: &Setup, http2: bool) -> ClientOptions {
    ClientOptions::new(&setup.pki, HOST)
        .with_identity(setup.client.identity())
        .http2(http2)
}

/// Connects, writes `header`, then makes one mTLS request; returns the reply.
async fn request_after(setup: &Setup, header: &[u8], http2: bool) -> Result<Reply, Failure> {
    let tcp = tcp_from(None, setup.gateway.addr).await.unwrap();
    let mut conn = Connection::open_on(tcp, header, &options(setup, http2)).await?;
    let request = conn.get(HOST, "/");
    conn.send(request).await
}

fn forwarded_for(reply: &Reply) -> Vec<String> {
    reply.upstream_header("x-forwarded-for")
}

async fn refusals(setup: &Setup, reason: &str) -> f64 {
    let text = scrape(setup.gateway.admin.unwrap()).await;
    metric(
        &text,
        &format!(r#"certgate_proxy_protocol_refusals_total{{reason="{reason}"}}"#),
    )
}

/// Waits (bounded) until the refusal counter for `reason` reaches `count`: the refusal is
/// counted by the connection's task, a moment after the client sees the close.
async fn expect_refusals(setup: &Setup, reason: &str, count: f64) {
    let counted = poll(
        500,
        Duration::from_millis(10),
        async || refusals(setup, reason).await,
        |&counted| counted >= count,
    )
    .await;
    assert_eq!(counted, count, "reason {reason}");
}

#[tokio::test]
async fn v1_header_from_a_trusted_source_sets_the_client_address() {
    let setup = setup(&["127.0.0.1/32"], 10_000).await;
    for http2 in [false, true] {
        let reply = request_after(
            &setup,
            b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n",
            http2,
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(forwarded_for(&reply), ["203.0.113.7"], "http2={http2}");
        let xfcc = reply
            .xfcc()
            .expect("the client certificate is still forwarded");
        assert!(xfcc.starts_with(&format!("Hash={}", setup.client.hash_hex())));
    }
    setup.gateway.stop().await;
}

#[tokio::test]
async fn v2_header_with_an_unknown_tlv_sets_an_ipv6_client_address() {
    let setup = setup(&["127.0.0.0/8"], 10_000).await;
    let client: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let balancer: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    let header = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, balancer),
    )
    .write_tlv(0xEE, b"a type certgate does not know")
    .unwrap()
    .write_tlv(ppp::v2::Type::UniqueId, b"connection-42")
    .unwrap()
    .build()
    .unwrap();
    let reply = request_after(&setup, &header, false).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(forwarded_for(&reply), ["2001:db8::7"]);
    setup.gateway.stop().await;
}

#[tokio::test]
async fn local_and_unknown_headers_are_served_as_the_peer_itself() {
    let setup = setup(&["127.0.0.1/32"], 10_000).await;
    let local = ppp::v2::Builder::new(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::AddressFamily::Unspecified | ppp::v2::Protocol::Unspecified,
    )
    .build()
    .unwrap();
    for header in [&local[..], b"PROXY UNKNOWN\r\n"] {
        let reply = request_after(&setup, header, false).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(forwarded_for(&reply), ["127.0.0.1"]);
    }
    setup.gateway.stop().await;
}

#[tokio::test]
async fn an_untrusted_source_is_refused_even_with_a_valid_header() {
    let setup = setup(&["10.0.0.0/8", "127.0.0.2/32"], 10_000).await;
    let result = request_after(
        &setup,
        b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n",
        false,
    )
    .await;
    assert!(result.is_err(), "an untrusted source was served");
    expect_refusals(&setup, "untrusted_source", 1.0).await;
    setup.gateway.stop().await;
}

#[tokio::test]
async fn a_trusted_source_without_a_header_is_refused() {
    let setup = setup(&["127.0.0.1/32"], 10_000).await;
    let result = request_after(&setup, b"", false).await;
    assert!(result.is_err(), "a connection without a header was served");
    expect_refusals(&setup, "missing_header", 1.0).await;
    setup.gateway.stop().await;
}

#[tokio::test]
async fn malformed_truncated_and_oversized_headers_are_refused_by_reason() {
    let setup = setup(&["127.0.0.1/32"], 10_000).await;
    let valid_v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "203.0.113.7:1".parse::<SocketAddr>().unwrap(),
            "192.0.2.1:443".parse::<SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap();
    let mut oversized = valid_v2[..14].to_vec();
    oversized.extend_from_slice(&u16::MAX.to_be_bytes());
    let cases: [(&[u8], &str); 4] = [
        (
            b"PROXY TCP4 203.0.113.7 nonsense 1 2\r\n",
            "malformed_header",
        ),
        (
            b"PROXY TCP9 203.0.113.7 192.0.2.1 1 2\r\n",
            "malformed_header",
        ),
        (&oversized, "header_too_large"),
        (&[b'P'; 300], "header_too_large"),
    ];
    let mut expected = std::collections::HashMap::new();
    for (header, reason) in cases {
        // Written raw: the refusal comes before any TLS.
        let mut tcp = tcp_from(None, setup.gateway.addr).await.unwrap();
        let _ = tcp.write_all(header).await;
        let _ = tcp.write_all(&[0u8; 64]).await;
        *expected.entry(reason).or_insert(0.0) += 1.0;
        expect_refusals(&setup, reason, expected[reason]).await;
    }
    // Truncated: the connection closes inside the header.
    let mut tcp = tcp_from(None, setup.gateway.addr).await.unwrap();
    tcp.write_all(&valid_v2[..valid_v2.len() - 3])
        .await
        .unwrap();
    tcp.shutdown().await.unwrap();
    expect_refusals(&setup, "truncated_header", 1.0).await;
    // A good header still works after all that.
    let reply = request_after(&setup, &valid_v2, false).await.unwrap();
    assert_eq!(forwarded_for(&reply), ["203.0.113.7"]);
    setup.gateway.stop().await;
}

#[tokio::test]
async fn a_header_that_does_not_arrive_within_the_handshake_deadline_is_refused() {
    let setup = setup(&["127.0.0.1/32"], 300).await;
    let mut tcp = tcp_from(None, setup.gateway.addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7").await.unwrap();
    // Kept open, and silent, until certgate gives up.
    expect_refusals(&setup, "timeout", 1.0).await;
    drop(tcp);
    setup.gateway.stop().await;
}

#[tokio::test]
async fn without_proxy_protocol_a_header_is_not_read() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let [require, ignore] = require_and_ignore(echo_upstream().await);
    let gateway = Gateway::start(dir, serde_json::json!({ "apps": [require, ignore] })).await;
    let tcp = tcp_from(None, gateway.addr).await.unwrap();
    let client = pki.client("client");
    let options = ClientOptions::new(&pki, HOST).with_identity(client.identity());
    let result = Connection::open_on(
        tcp,
        b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n",
        &options,
    )
    .await;
    assert!(
        result.is_err(),
        "a PROXY header was accepted without proxyProtocol"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_line_names_the_carried_client_address() {
    let pki = Pki::new();
    let extra = serde_json::json!({
        "proxyProtocol": { "trustedSources": ["127.0.0.1/32"] },
        "timeouts": { "drainDelayMs": 0 },
    });
    let (dir, config) = common::apps::ignore_app_config(&pki, extra).await;
    let (mut child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    let addr = serving.listen();

    let tcp = tcp_from(None, addr).await.unwrap();
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut conn = Connection::open_on(
        tcp,
        b"PROXY TCP4 198.51.100.9 192.0.2.1 40000 443\r\n",
        &options,
    )
    .await
    .unwrap();
    let request = conn.get("ignore.example.test", "/logged");
    assert_eq!(conn.send(request).await.unwrap().status, 200);

    let lines = child.wait_for_line(process::Stream::Stderr, |line| {
        line.contains("\"request\"") && line.contains("/logged")
    });
    let access: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(access["client.addr"], "198.51.100.9:40000", "{access}");
    child.signal("TERM");
    assert!(child.wait_exit().success(), "{}", child.transcript());
}

#[tokio::test]
async fn the_rate_limit_is_keyed_on_the_carried_address() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut ignore = app(
        "ignore",
        &["ignore.example.test"],
        echo_upstream().await,
        "ignore",
    );
    // One request, then a refill so slow no test ever sees it.
    ignore["rateLimit"] = serde_json::json!({ "requestsPerSecond": 0.001, "burst": 1 });
    let gateway = Gateway::start(
        dir,
        serde_json::json!({
            "proxyProtocol": { "trustedSources": ["127.0.0.1/32"] },
            "apps": [ignore],
        }),
    )
    .await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let status_from = |client: &'static str| {
        let options = options.clone();
        let addr = gateway.addr;
        async move {
            let header = format!("PROXY TCP4 {client} 192.0.2.1 40000 443\r\n");
            let tcp = tcp_from(None, addr).await.unwrap();
            let mut conn = Connection::open_on(tcp, header.as_bytes(), &options)
                .await
                .unwrap();
            let request = conn.get("ignore.example.test", "/");
            conn.send(request).await.unwrap().status.as_u16()
        }
    };
    assert_eq!(status_from("203.0.113.7").await, 200);
    assert_eq!(
        status_from("203.0.113.7").await,
        429,
        "same client, bucket empty"
    );
    assert_eq!(
        status_from("203.0.113.8").await,
        200,
        "another client, its own bucket"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn the_rate_limit_keys_a_mapped_address_as_ipv4_and_ipv6_clients_by_their_64() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut ignore = app(
        "ignore",
        &["ignore.example.test"],
        echo_upstream().await,
        "ignore",
    );
    // One request, then a refill so slow no test ever sees it.
    ignore["rateLimit"] = serde_json::json!({ "requestsPerSecond": 0.001, "burst": 1 });
    let gateway = Gateway::start(
        dir,
        serde_json::json!({
            "proxyProtocol": { "trustedSources": ["127.0.0.1/32"] },
            "apps": [ignore],
        }),
    )
    .await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let status_after = |header: Vec<u8>| {
        let options = options.clone();
        let addr = gateway.addr;
        async move {
            let tcp = tcp_from(None, addr).await.unwrap();
            let mut conn = Connection::open_on(tcp, &header, &options).await.unwrap();
            let request = conn.get("ignore.example.test", "/");
            conn.send(request).await.unwrap().status.as_u16()
        }
    };
    let v2 = |client: &str| {
        let client: SocketAddr = format!("[{client}]:40000").parse().unwrap();
        let balancer: SocketAddr = "[2001:db8:ffff::1]:443".parse().unwrap();
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (client, balancer),
        )
        .build()
        .unwrap()
    };
    assert_eq!(status_after(v2("::ffff:6.6.6.6")).await, 200);
    assert_eq!(
        status_after(b"PROXY TCP4 6.6.6.6 192.0.2.1 40000 443\r\n".to_vec()).await,
        429,
        "6.6.6.6 is the client ::ffff:6.6.6.6 was: its bucket is empty"
    );
    assert_eq!(status_after(v2("2001:db8:1:2::1")).await, 200);
    assert_eq!(
        status_after(v2("2001:db8:1:2:ffff::9")).await,
        429,
        "another address of the same /64 draws from the same bucket"
    );
    assert_eq!(
        status_after(v2("2001:db8:1:3::1")).await,
        200,
        "another /64, its own bucket"
    );
    gateway.stop().await;
}
