//! A drain that loses nothing (docs/operations.md "Drain"): after shutdown begins, `/readyz` answers 503 at
//! once while the listener keeps accepting and serving for `timeouts.drainDelayMs`; new
//! connections made during the delay are served, after it they are refused, and in-flight
//! requests finish. `certgate health` follows `/readyz`: exit 0 when ready, 1 while draining or
//! when nothing answers.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::process::Command;
use std::time::Duration;

use common::apps::{IGNORE_HOST, ignore_app_config};
use common::drain::{in_flight, readyz_status, until_refused};
use common::polling::poll;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_made_during_the_drain_delay_are_served_then_refused() {
    let pki = Pki::new();
    let extra = serde_json::json!({
        "admin": "127.0.0.1:0",
        "timeouts": { "drainDelayMs": 4000 },
    });
    let (dir, config) = ignore_app_config(&pki, extra).await;
    let gateway = Gateway::start(dir, config).await;
    let (addr, admin) = (gateway.addr, gateway.admin.unwrap());
    let options = ClientOptions::new(&pki, IGNORE_HOST);
    let slow = Connection::open(addr, &options).await.unwrap();
    let mut kept_alive = Connection::open(addr, &options).await.unwrap();
    assert_eq!(readyz_status(admin).await, Some(200));
    let in_flight = in_flight(slow, "/delay/6000").await;

    let stopping = tokio::spawn(gateway.stop());
    let ready = poll(
        500,
        Duration::from_millis(10),
        async || readyz_status(admin).await,
        |&ready| ready == Some(503),
    )
    .await;
    assert_eq!(ready, Some(503), "/readyz did not turn 503 at once");

    // During the delay: a new connection is accepted and served, and so is a new request on
    // an open connection.
    let reply = get(addr, &options, IGNORE_HOST, "/during-delay")
        .await
        .expect("a connection made during the drain delay was refused");
    assert_eq!(reply.status, 200);
    let request = kept_alive.get(IGNORE_HOST, "/again");
    assert_eq!(kept_alive.send(request).await.unwrap().status, 200);

    // After it: refused.
    assert!(
        until_refused(addr, 3000).await,
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
    let extra = serde_json::json!({
        "admin": "127.0.0.1:0",
        "timeouts": { "drainDelayMs": 3000 },
    });
    let (dir, config) = ignore_app_config(&pki, extra).await;
    let (mut child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    let admin = serving.admin().to_string();

    let ready = health(&admin);
    assert_eq!(ready.status.code(), Some(0), "{ready:?}");

    child.signal("TERM");
    let draining = poll(
        500,
        Duration::from_millis(10),
        async || health(&admin),
        |draining| draining.status.code() != Some(0),
    )
    .await;
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

/// A config whose drain delay no test waits out: a stop that keeps it would hang the test.
async fn long_drain_delay(pki: &Pki) -> (TempDir, serde_json::Value) {
    let extra = serde_json::json!({ "timeouts": { "drainDelayMs": 600_000 } });
    ignore_app_config(pki, extra).await
}

const DRAIN_DELAY_LINE: &str = "still accepting for the drain delay";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_at_a_terminal_skips_the_drain_delay() {
    let pki = Pki::new();
    let (dir, config) = long_drain_delay(&pki).await;
    let (mut child, _) = process::Child::run_config_at_terminal(dir.path(), &config);
    child.signal("INT");
    let status = child.wait_exit();
    let transcript = child.transcript();
    assert!(
        status.success(),
        "exit status {status}; output:\n{transcript}"
    );
    assert!(
        transcript.contains("skipping the drain delay") && !transcript.contains(DRAIN_DELAY_LINE),
        "{transcript}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_a_terminal_keeps_the_drain_delay_and_a_second_one_stops_at_once() {
    let pki = Pki::new();
    let (dir, config) = long_drain_delay(&pki).await;
    let (mut child, _) = process::Child::run_config_at_terminal(dir.path(), &config);
    child.signal("TERM");
    child.wait_for_line(process::Stream::Stderr, |line| {
        line.contains(DRAIN_DELAY_LINE)
    });
    child.signal("TERM");
    let status = child.wait_exit();
    assert_eq!(status.code(), Some(143), "{}", child.transcript());
    assert!(child.transcript().contains("second signal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_without_a_terminal_keeps_the_drain_delay_and_a_second_one_stops_at_once() {
    let pki = Pki::new();
    let (dir, config) = long_drain_delay(&pki).await;
    let (mut child, _) = process::Child::run_config(dir.path(), &config, &[]);
    child.signal("INT");
    child.wait_for_line(process::Stream::Stderr, |line| {
        line.contains(DRAIN_DELAY_LINE)
    });
    child.signal("INT");
    let status = child.wait_exit();
    assert_eq!(status.code(), Some(130), "{}", child.transcript());
    // The log line said why, written out before the exit.
    assert!(
        child.transcript().contains("second signal"),
        "{}",
        child.transcript()
    );
}
