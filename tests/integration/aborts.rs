//! Every request that reached certgate gets exactly one access line and one count, however it
//! ended (docs/operations.md "Logs"), checked on the real binary's JSON log and its /metrics:
//! - HTTP/1.1: the client closes its connection while the app is slow to answer (499);
//! - HTTP/2: the client resets the stream (RST_STREAM) while the app is slow (499);
//! - HTTP/2: the client closes the whole connection with a stream open (499);
//! - HTTP/1.1: the client breaks off its upload (400);
//! - a stalled upload (408), a header block over the limit (431) and a stalled response body
//!   each log their own `outcome`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt as _;

const HOST: &str = "ignore.example.test";
const STALL_HOST: &str = "stall.example.test";

struct Binary {
    child: process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: TempDir,
}

/// The binary with an `ignore` app at `HOST` in front of the echo upstream, and one at
/// `STALL_HOST` in front of `stalling` (when given).
async fn start(pki: &Pki, stalling: Option<SocketAddr>, timeouts: serde_json::Value) -> Binary {
    let dir = TempDir::new();
    pki.write(&dir);
    let mut apps = vec![app("ignore", &[HOST], echo_upstream().await, "ignore")];
    if let Some(stalling) = stalling {
        apps.push(app("stall", &[STALL_HOST], stalling, "ignore"));
    }
    let config = serde_json::json!({
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "apps": apps,
        "timeouts": timeouts,
    });
    let (child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    Binary {
        child,
        addr: serving.listen(),
        admin: serving.admin(),
        _dir: dir,
    }
}

impl Binary {
    /// Waits for the access line of `path`, then checks it is the only one.
    fn access_line(&mut self, path: &str) -> serde_json::Value {
        let wanted = format!("\"path\":\"{path}\"");
        self.child
            .wait_for_line(process::Stream::Stderr, |line| line.contains(&wanted));
        let lines: Vec<serde_json::Value> = self
            .child
            .transcript()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["message"] == "request" && line["path"] == path)
            .collect();
        assert_eq!(lines.len(), 1, "access lines for {path}: {lines:?}");
        lines.into_iter().next().unwrap()
    }

    async fn count(&self, code: u16) -> f64 {
        let text = scrape(self.admin).await;
        metric(
            &text,
            &format!(r#"certgate_requests_total{{app="ignore",client_cert="none",code="{code}"}}"#),
        )
    }
}

fn slow(conn: &Connection, path: &str) -> http::Request<Full<Bytes>> {
    conn.get(HOST, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_abort_shape_gets_one_access_line_and_one_count() {
    let pki = Pki::new();
    let mut binary = start(&pki, None, serde_json::json!({})).await;
    let h1 = ClientOptions::new(&pki, HOST);
    let h2 = ClientOptions::new(&pki, HOST).http2(true);

    // HTTP/1.1: the connection closes while the app takes 30 s.
    let mut conn = Connection::open(binary.addr, &h1).await.unwrap();
    let request = slow(&conn, "/delay/30001");
    let _ = tokio::time::timeout(Duration::from_millis(300), conn.send(request)).await;
    drop(conn);
    let line = binary.access_line("/delay/30001");
    assert_eq!(
        (line["status"].as_u64(), line["outcome"].as_str()),
        (Some(499), Some("client_aborted"))
    );
    assert_eq!(binary.count(499).await, 1.0);

    // HTTP/2: RST_STREAM (the response future is dropped), the connection stays.
    let mut conn = Connection::open(binary.addr, &h2).await.unwrap();
    let request = slow(&conn, "/delay/30002");
    let _ = tokio::time::timeout(Duration::from_millis(300), conn.send(request)).await;
    let line = binary.access_line("/delay/30002");
    assert_eq!(
        (line["status"].as_u64(), line["outcome"].as_str()),
        (Some(499), Some("client_aborted"))
    );
    assert_eq!(binary.count(499).await, 2.0);
    let request = conn.get(HOST, "/after-reset");
    assert_eq!(conn.send(request).await.unwrap().status, 200);

    // HTTP/2: the whole connection closes with a stream open.
    let tls = tls_stream(binary.addr, &h2).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("https://{HOST}/delay/30003"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(300), sender.send_request(request)).await;
    connection.abort();
    drop(sender);
    let line = binary.access_line("/delay/30003");
    assert_eq!(
        (line["status"].as_u64(), line["outcome"].as_str()),
        (Some(499), Some("client_aborted"))
    );
    assert_eq!(binary.count(499).await, 3.0);

    // HTTP/1.1: the upload is broken off: the client's fault, 400.
    let mut tls = tls_stream(binary.addr, &h1).await.unwrap();
    tls.write_all(
        format!("POST /upload-broken HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000\r\n\r\n0123")
            .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tls);
    let line = binary.access_line("/upload-broken");
    let status = line["status"].as_u64().unwrap();
    assert!(status == 400 || status == 499, "{line}");
    assert_eq!(binary.count(400).await + binary.count(499).await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_and_header_limits_log_their_own_outcome() {
    let pki = Pki::new();
    let (stalling, _closed) = common::hardening::stalling_upstream().await;
    let mut binary = start(
        &pki,
        Some(stalling),
        serde_json::json!({ "requestBodyIdleMs": 300, "upstreamIdleMs": 300 }),
    )
    .await;
    let h1 = ClientOptions::new(&pki, HOST);

    let mut tls = tls_stream(binary.addr, &h1).await.unwrap();
    tls.write_all(
        format!("POST /stalled-upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n01")
            .as_bytes(),
    )
    .await
    .unwrap();
    let line = binary.access_line("/stalled-upload");
    assert_eq!(line["status"], 408, "{line}");
    assert_eq!(line["outcome"], "request_body_idle", "{line}");
    drop(tls);

    let mut conn = Connection::open(binary.addr, &h1).await.unwrap();
    let mut request = conn.get(HOST, "/");
    request.headers_mut().insert(
        "x-big",
        http::HeaderValue::from_str(&"v".repeat(70_000)).unwrap(),
    );
    assert_eq!(conn.send(request).await.unwrap().status, 431);
    let lines = binary.child.wait_for_line(process::Stream::Stderr, |line| {
        line.contains("request_header_too_large")
    });
    let line: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(line["status"], 431, "{line}");

    let stall = ClientOptions::new(&pki, STALL_HOST);
    let mut conn = Connection::open(binary.addr, &stall).await.unwrap();
    let request = conn.get(STALL_HOST, "/stalled-response");
    let response = conn.send_raw(request).await.unwrap();
    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    let lines = binary.child.wait_for_line(process::Stream::Stderr, |line| {
        line.contains("\"upstream_idle\"")
    });
    let line: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(line["level"], "WARN", "{line}");
    // It names what the response came from, as the access line and the failure warnings do.
    assert_eq!(line["app"], "stall", "{line}");
    assert_eq!(line["upstream"], format!("http://{stalling}"), "{line}");
    assert_eq!(line["upstream_group"], "latest", "{line}");
    assert_eq!(line["upstream_endpoint"], stalling.to_string(), "{line}");
    assert!(line["client.addr"].as_str().is_some(), "{line}");
    let text = scrape(binary.admin).await;
    for (app, reason) in [("ignore", "request_body_idle"), ("stall", "upstream_idle")] {
        let series = format!(r#"certgate_stalled_requests_total{{app="{app}",reason="{reason}"}}"#);
        assert_eq!(metric(&text, &series), 1.0, "{series}");
    }
}
