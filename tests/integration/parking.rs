//! Parking (docs/operations.md "Memory while idle"): an HTTP/1.1 connection with no request in flight for a second
//! gives its HTTP buffers back and waits with nothing but its TLS state:
//! - it serves its next request, on the same connection, after `requestHeaderMs` of quiet
//!   (hyper alone would have closed it then);
//! - the next request's header is still bounded by `requestHeaderMs`, from its first byte, and
//!   a header that pauses for longer than the park delay, within that bound, is served;
//! - it still closes `idleMs` after its last request, with a close_notify, and at shutdown;
//! - a response that pauses longer than the park delay arrives whole (in `forwarding.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gateway(pki: &Pki, timeouts: serde_json::Value) -> Gateway {
    common::apps::ignore_gateway(pki, serde_json::json!({ "timeouts": timeouts })).await
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: ignore.example.test\r\n\r\n";

/// Reads one response with a `content-length` body from `tls`; returns its head.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(tls: &mut S) -> String {
    let mut seen = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("no content-length");
            if seen.len() >= end + 4 + length {
                return head;
            }
        }
        let read = tls.read(&mut buf).await.unwrap();
        assert!(read > 0, "the connection closed mid-response: {seen:?}");
        seen.extend_from_slice(&buf[..read]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_quiet_connection_serves_its_next_request_after_the_header_timeout() {
    let pki = Pki::new();
    let gateway = gateway(
        &pki,
        serde_json::json!({ "requestHeaderMs": 400, "idleMs": 20000 }),
    )
    .await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    for quiet in [0, 3_000, 10_000] {
        tokio::time::sleep(Duration::from_millis(quiet)).await;
        tls.write_all(REQUEST).await.unwrap();
        let head = read_response(&mut tls).await;
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "after {quiet} ms of quiet: {head}"
        );
    }
    gateway.stop().await;
}

/// On the real clock: a paused clock would jump to hyper's header deadline while the rest of
/// the header is on its way over the socket.
#[tokio::test]
async fn a_header_that_pauses_longer_than_the_park_delay_is_still_served() {
    let pki = Pki::new();
    let gateway = gateway(
        &pki,
        serde_json::json!({ "requestHeaderMs": 10000, "idleMs": 60000 }),
    )
    .await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    tls.write_all(REQUEST).await.unwrap();
    read_response(&mut tls).await;
    let (start, rest) = REQUEST.split_at(20);
    // Right after a response, then once the connection has parked: half a header, a pause
    // longer than the park delay (a second), the other half.
    for quiet in [0, 1_500] {
        tokio::time::sleep(Duration::from_millis(quiet)).await;
        tls.write_all(start).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        tls.write_all(rest).await.unwrap();
        let head = read_response(&mut tls).await;
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "after {quiet} ms of quiet: {head}"
        );
    }
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_still_cuts_off_a_trickled_header() {
    let pki = Pki::new();
    let gateway = gateway(
        &pki,
        serde_json::json!({ "requestHeaderMs": 400, "idleMs": 60000 }),
    )
    .await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    tls.write_all(REQUEST).await.unwrap();
    read_response(&mut tls).await;
    // Parked by now; the next header trickles in one byte every 100 ms and never ends.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut_off = common::hardening::cut_off_while_trickling(&mut tls).await;
    assert!(cut_off, "the trickling client was never cut off");
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_closes_after_idle_ms_with_a_close_notify() {
    let pki = Pki::new();
    let gateway = gateway(&pki, serde_json::json!({ "idleMs": 5000 })).await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    tls.write_all(REQUEST).await.unwrap();
    read_response(&mut tls).await;
    let started = tokio::time::Instant::now();
    closes_cleanly(&mut tls, "the parked connection never idled out").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4_900),
        "closed {waited:?} after the request, before idleMs"
    );
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_closes_at_shutdown() {
    let pki = Pki::new();
    let gateway = gateway(&pki, serde_json::json!({ "idleMs": 600000 })).await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    tls.write_all(REQUEST).await.unwrap();
    read_response(&mut tls).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped = tokio::spawn(gateway.stop());
    closes_cleanly(
        &mut tls,
        "the parked connection stayed open through shutdown",
    )
    .await;
    stopped.await.unwrap();
}

/// Waits for certgate to end `tls` with a close_notify (rustls reports a close without one as
/// an error), failing with `never` when it stays open.
async fn closes_cleanly<S: tokio::io::AsyncRead + Unpin>(tls: &mut S, never: &str) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut rest)).await;
    let read = read.unwrap_or_else(|_| panic!("{never}"));
    assert!(read.is_ok(), "closed without a close_notify: {read:?}");
}
