//! Graceful drain (README "Operations"): after shutdown begins, a slow in-flight request still
//! completes with 200, new connections are refused, `/readyz` answers 503, and the real
//! binary exits 0 on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;
mod process;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn readyz(admin: std::net::SocketAddr) -> Option<String> {
    let mut tcp = tokio::net::TcpStream::connect(admin).await.ok()?;
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.ok()?;
    text.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn in_flight_request_completes_while_new_connections_are_refused() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let ignore = app("ignore", &["ignore.example.test"], upstream, "ignore");
    let gateway = Gateway::start(dir, serde_json::json!({ "apps": [ignore] })).await;
    let addr = gateway.addr;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut conn = Connection::open(addr, &options).await.unwrap();
    let request = conn.get("ignore.example.test", "/delay/1500");
    let in_flight = tokio::spawn(async move { conn.send(request).await });
    // Let the request reach the upstream before shutdown starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopping = tokio::spawn(gateway.stop());
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "new connections were still accepted while draining"
    );
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(&reply.body[..], b"delayed");
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let ignore = app("ignore", &["ignore.example.test"], upstream, "ignore");
    let config = serde_json::json!({
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "apps": [ignore],
    });
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let mut child = process::Child::spawn(
        &["--log-format", "json", "run", "--config", "certgate.json"],
        dir.path(),
        &[],
    );
    let lines = child.wait_for_line(process::Stream::Stderr, |line| line.contains("\"serving\""));
    let serving: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let addr: std::net::SocketAddr = serving["listen"].as_str().unwrap().parse().unwrap();
    let admin: std::net::SocketAddr = serving["admin"].as_str().unwrap().parse().unwrap();
    assert_eq!(readyz(admin).await.as_deref(), Some("HTTP/1.1 200 OK"));

    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut conn = Connection::open(addr, &options).await.unwrap();
    let request = conn.get("ignore.example.test", "/delay/2000");
    let in_flight = tokio::spawn(async move { conn.send(request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.signal("TERM");

    let mut draining = None;
    for _ in 0..100 {
        draining = readyz(admin).await;
        if draining.as_deref() == Some("HTTP/1.1 503 Service Unavailable") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        draining.as_deref(),
        Some("HTTP/1.1 503 Service Unavailable")
    );
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.status, 200, "the in-flight request was cut off");
    let status = child.wait_exit();
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        child.transcript()
    );
}
