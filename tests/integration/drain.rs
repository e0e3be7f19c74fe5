//! Graceful drain (docs/operations.md): after shutdown begins, a slow in-flight request still
//! completes with 200, new connections are refused, `/readyz` answers 503, and the real
//! binary exits 0 on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::time::Duration;

use common::apps::{IGNORE_HOST, ignore_app_config};
use common::drain::{in_flight, readyz, until_refused};
use common::polling::poll;
use common::*;

#[tokio::test]
async fn in_flight_request_completes_while_new_connections_are_refused() {
    let pki = Pki::new();
    let (dir, config) = ignore_app_config(&pki, serde_json::json!({})).await;
    let gateway = Gateway::start(dir, config).await;
    let addr = gateway.addr;
    let options = ClientOptions::new(&pki, IGNORE_HOST);
    let conn = Connection::open(addr, &options).await.unwrap();
    let in_flight = in_flight(conn, "/delay/1500").await;

    let stopping = tokio::spawn(gateway.stop());
    assert!(
        until_refused(addr, 100).await,
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
    let (dir, config) =
        ignore_app_config(&pki, serde_json::json!({ "admin": "127.0.0.1:0" })).await;
    let (mut child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    let (addr, admin) = (serving.listen(), serving.admin());
    assert_eq!(readyz(admin).await.as_deref(), Some("HTTP/1.1 200 OK"));

    let options = ClientOptions::new(&pki, IGNORE_HOST);
    let conn = Connection::open(addr, &options).await.unwrap();
    let in_flight = in_flight(conn, "/delay/2000").await;
    child.signal("TERM");

    let draining = poll(
        100,
        Duration::from_millis(10),
        async || readyz(admin).await,
        |ready| ready.as_deref() == Some("HTTP/1.1 503 Service Unavailable"),
    )
    .await;
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
