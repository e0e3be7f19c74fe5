//! A drain that loses nothing (README "Drain"): after shutdown begins, `/readyz` answers 503 at
//! once while the listener keeps accepting and serving for `timeouts.drainDelayMs`; new
//! connections made during the delay are served, after it they are refused, and in-flight
//! requests finish. `certgate health` follows `/readyz`: exit 0 when ready, 1 while draining or
//! when nothing answers.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;
mod process;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn readyz(admin: SocketAddr) -> Option<u16> {
    let mut tcp = tokio::net::TcpStream::connect(admin).await.ok()?;
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_made_during_the_drain_delay_are_served_then_refused() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let ignore = app("ignore", &["ignore.example.test"], upstream, "ignore");
    let gateway = Gateway::start(
        dir,
        serde_json::json!({
            "admin": "127.0.0.1:0",
            "timeouts": { "drainDelayMs": 4000 },
            "apps": [ignore],
        }),
    )
    .await;
    let (addr, admin) = (gateway.addr, gateway.admin.unwrap());
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut slow = Connection::open(addr, &options).await.unwrap();
    let request = slow.get("ignore.example.test", "/delay/6000");
    let in_flight = tokio::spawn(async move { slow.send(request).await });
    let mut kept_alive = Connection::open(addr, &options).await.unwrap();
    assert_eq!(readyz(admin).await, Some(200));
    // Let the slow request reach the upstream before shutdown starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopping = tokio::spawn(gateway.stop());
    let mut ready = readyz(admin).await;
    for _ in 0..500 {
        if ready == Some(503) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        ready = readyz(admin).await;
    }
    assert_eq!(ready, Some(503), "/readyz did not turn 503 at once");

    // During the delay: a new connection is accepted and served, and so is a new request on
    // an open connection.
    let reply = get(addr, &options, "ignore.example.test", "/during-delay")
        .await
        .expect("a connection made during the drain delay was refused");
    assert_eq!(reply.status, 200);
    let request = kept_alive.get("ignore.example.test", "/again");
    assert_eq!(kept_alive.send(request).await.unwrap().status, 200);

    // After it: refused.
    let mut refused = false;
    for _ in 0..3000 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "new connections were still accepted after the drain delay"
    );

    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.status, 200, "the in-flight request was cut off");
    assert_eq!(&reply.body[..], b"delayed");
    stopping.await.unwrap();
}

fn health(admin: &str) -> std::process::Output {
    Command::new(process::BIN)
        .args(["health", "--admin", admin])
        .env_remove("CERTGATE_ADMIN")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_zero_when_ready_and_one_while_draining_or_unreachable() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let config = serde_json::json!({
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "timeouts": { "drainDelayMs": 3000 },
        "apps": [app("ignore", &["ignore.example.test"], upstream, "ignore")],
    });
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let mut child = process::Child::spawn(
        &["--log-format", "json", "run", "--config", "certgate.json"],
        dir.path(),
        &[],
    );
    let lines = child.wait_for_line(process::Stream::Stderr, |line| line.contains("\"serving\""));
    let serving: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let admin = serving["admin"].as_str().unwrap().to_owned();

    let ready = health(&admin);
    assert_eq!(ready.status.code(), Some(0), "{ready:?}");

    child.signal("TERM");
    let mut draining = health(&admin);
    for _ in 0..500 {
        if draining.status.code() != Some(0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        draining = health(&admin);
    }
    assert_eq!(draining.status.code(), Some(1), "{draining:?}");
    let stderr = String::from_utf8_lossy(&draining.stderr);
    assert!(stderr.contains("/readyz answered 503"), "{stderr}");

    let status = child.wait_exit();
    assert!(status.success(), "{status}\n{}", child.transcript());
    let gone = health(&admin);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(
        stderr.contains("cannot reach the admin listener"),
        "{stderr}"
    );
}
