//! Limits and timeouts (docs/modes.md and docs/config.md "Config reference"):
//! - a client that trickles its request header (slowloris) is cut off after requestHeaderMs;
//! - connections over maxConnections are refused promptly and counted, and served again once a
//!   slot frees;
//! - an idle kept-alive connection is closed after idleMs;
//! - a client certificate that expires during a kept-alive connection gets 403 on its next
//!   request, and the connection is closed;
//! - an open-file limit below twice maxConnections is said at start, not warned; running out
//!   of descriptors is warned about with what to do, once.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::time::Duration;

use common::polling::find;
use common::*;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn gateway(pki: &Pki, extra: serde_json::Value) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let [require, ignore] = require_and_ignore(upstream);
    let mut config = serde_json::json!({ "apps": [require, ignore] });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    Gateway::start(dir, config).await
}

/// Reads until EOF or error; true when the peer closed within `limit`.
async fn closed_within(stream: &mut (impl tokio::io::AsyncRead + Unpin), limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(start_paused = true)]
async fn slowloris_client_is_cut_off_after_request_header_timeout() {
    let pki = Pki::new();
    let gateway = gateway(
        &pki,
        serde_json::json!({ "timeouts": { "requestHeaderMs": 400 } }),
    )
    .await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    let cut_off = common::hardening::cut_off_while_trickling(&mut tls).await;
    assert!(cut_off, "the trickling client was never cut off");
    gateway.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_until_a_slot_frees() {
    let pki = Pki::new();
    let gateway = gateway(
        &pki,
        serde_json::json!({ "admin": "127.0.0.1:0", "limits": { "maxConnections": 2 } }),
    )
    .await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut first = Connection::open(gateway.addr, &options).await.unwrap();
    let second = Connection::open(gateway.addr, &options).await.unwrap();
    let request = first.get("ignore.example.test", "/");
    assert_eq!(first.send(request).await.unwrap().status, 200);

    let third = Connection::open(gateway.addr, &options).await;
    assert!(
        third.is_err(),
        "a third connection was accepted over maxConnections = 2"
    );
    let text = scrape(gateway.admin.unwrap()).await;
    let refused = metric(&text, "certgate_connections_refused_total");
    assert_eq!(refused, 1.0, "the refusal was not counted");

    drop(second);
    let served = find(100, Duration::from_millis(20), async || {
        let reply = get(gateway.addr, &options, "ignore.example.test", "/").await;
        reply.ok().map(|reply| reply.status)
    })
    .await;
    assert_eq!(
        served,
        Some(http::StatusCode::OK),
        "no slot freed after a close"
    );
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn idle_connection_is_closed_after_idle_timeout() {
    let pki = Pki::new();
    let gateway = gateway(&pki, serde_json::json!({ "timeouts": { "idleMs": 300 } })).await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: ignore.example.test\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut tls, Duration::from_secs(10)).await,
        "idle connection stayed open"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn certificate_expiring_during_a_connection_gets_403_and_a_close() {
    let pki = Pki::new();
    let gateway = gateway(&pki, serde_json::json!({})).await;
    let now = OffsetDateTime::now_utc();
    let short_lived = pki.client_ca.issue(LeafSpec {
        not_after: now + time::Duration::seconds(2),
        ..LeafSpec::client("short-lived")
    });
    let options =
        ClientOptions::new(&pki, "require.example.test").with_identity(short_lived.identity());
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let request = conn.get("require.example.test", "/");
    assert_eq!(conn.send(request).await.unwrap().status, 200);

    // Wait out the certificate (validity has one-second resolution). certgate compares the
    // leaf's notAfter with the wall clock, which a paused tokio clock does not move, so this
    // test sleeps for real.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let request = conn.get("require.example.test", "/");
    let reply = conn.send(request).await.unwrap();
    assert_certgate_error(
        &reply,
        http::StatusCode::FORBIDDEN,
        "expired mid-connection",
    );
    let request = conn.get("require.example.test", "/");
    assert!(
        conn.send(request).await.is_err(),
        "the connection stayed open after the 403"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_says_what_to_do_once() {
    let pki = Pki::new();
    let (dir, config) = common::apps::ignore_app_config(&pki, serde_json::json!({})).await;
    std::fs::write(
        dir.path().join("certgate.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let mut child =
        process::Child::spawn_with_open_files(64, &process::serving::RUN_CONFIG, dir.path());
    let serving = child.wait_serving();
    let started = child.transcript();
    assert!(
        started.contains("the open-file limit is below twice limits.maxConnections")
            && !started.contains("\"WARN\""),
        "the low limit is said at start, not warned about:\n{started}"
    );

    // Connections the kernel completes and certgate accepts until its descriptors run out;
    // each holds one while it waits for a ClientHello.
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(
            tokio::net::TcpStream::connect(serving.listen())
                .await
                .unwrap(),
        );
    }
    let out = "out of file descriptors";
    child.wait_for_line(process::Stream::Stderr, |line| line.contains(out));
    // The next failed accept, a second later, is logged without the advice.
    child.wait_for_line(process::Stream::Stderr, |line| {
        line.contains("accept failed") && !line.contains(out)
    });
    let transcript = child.transcript();
    assert_eq!(transcript.matches(out).count(), 1, "{transcript}");
    assert!(transcript.contains("LimitNOFILE"), "{transcript}");
    drop(held);
}
