//! The request path's bookkeeping (docs/operations.md "Logs" and "Metrics"):
//! - an HTTP/2 stream the client cancels is counted and logged as 499 `client_aborted`, and
//!   the connection still closes after `idleMs` of silence;
//! - the idle deadline is counted from the end of the last request, not from a poll;
//! - `accessLog: false`, `--no-access-log` and `RUST_LOG` turn the access line off; when on,
//!   it carries an integer `duration_ms`, and its plain form reads as docs/operations.md "Logs" shows;
//! - a stderr nobody reads never stalls requests (logs go through a non-blocking writer).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::time::Duration;

use common::apps::ignore_gateway;
use common::polling::{find, scrape_until, tries_within};
use common::*;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test]
async fn cancelled_http2_stream_is_counted_and_the_connection_still_idles_out() {
    let pki = Pki::new();
    let gateway = ignore_gateway(
        &pki,
        serde_json::json!({ "admin": "127.0.0.1:0", "timeouts": { "idleMs": 500 } }),
    )
    .await;
    let options = ClientOptions::new(&pki, "ignore.example.test").http2(true);
    let tls = tls_stream(gateway.addr, &options).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get("https://ignore.example.test/slow")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    // The upstream answers /slow after 30 s: give up after 300 ms, which resets the stream.
    let cancelled = tokio::time::timeout(Duration::from_millis(300), sender.send_request(request));
    assert!(cancelled.await.is_err(), "/slow answered early");

    // Silence from here on: the server must close the connection about idleMs later.
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(
        closed.is_ok(),
        "the connection never idled out after a cancelled stream"
    );

    let series = r#"certgate_requests_total{app="ignore",client_cert="none",code="499"}"#;
    let aborted = |text: &str| metric_value(text, series).unwrap_or(0.0);
    let text = scrape_until(
        gateway.admin.unwrap(),
        100,
        Duration::from_millis(20),
        |text| aborted(text) > 0.0,
    )
    .await;
    assert_eq!(
        aborted(&text),
        1.0,
        "the cancelled stream was not counted as 499"
    );
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn idle_deadline_counts_from_the_end_of_the_last_request() {
    let pki = Pki::new();
    let gateway = ignore_gateway(&pki, serde_json::json!({ "timeouts": { "idleMs": 1500 } })).await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    // A request that lasts longer than idleMs keeps the connection open throughout.
    let request = conn.get("ignore.example.test", "/delay/2000");
    assert_eq!(conn.send(request).await.unwrap().status, 200);
    // A request 1 s after the last one ended is still served on the same connection: the
    // deadline moved with the activity.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let request = conn.get("ignore.example.test", "/");
    assert_eq!(conn.send(request).await.unwrap().status, 200);
    gateway.stop().await;
}

/// Starts the real binary on a config with one `ignore` app (plus `extra` top-level keys)
/// with `args` added; returns it, its folder and its listen address.
async fn spawn_binary(
    pki: &Pki,
    extra: serde_json::Value,
    args: &[&str],
) -> (process::Child, TempDir, SocketAddr) {
    let (dir, config) = common::apps::ignore_app_config(pki, extra).await;
    let (child, serving) = process::Child::run_config(dir.path(), &config, args);
    (child, dir, serving.listen())
}

/// The binary started with `extra` config keys and `args` serves two requests, then shuts
/// down on SIGTERM without having written an access line.
async fn assert_no_access_lines(extra: serde_json::Value, args: &[&str]) {
    let pki = Pki::new();
    let (mut child, _dir, addr) = spawn_binary(&pki, extra, args).await;
    two_requests(&pki, addr).await;
    // The shutdown line comes after anything the requests could have logged.
    child.signal("TERM");
    child.wait_exit();
    let transcript = child.transcript();
    assert!(transcript.contains("shutting down"), "{transcript}");
    assert!(access_lines(&transcript).is_empty(), "{transcript}");
}

/// Sends one request, then a request for `/marker` whose access line (when the log is on)
/// shows that the first one's would have been written by then.
async fn two_requests(pki: &Pki, addr: SocketAddr) {
    let options = ClientOptions::new(pki, "ignore.example.test");
    let mut conn = Connection::open(addr, &options).await.unwrap();
    for path in ["/first", "/marker"] {
        let request = conn.get("ignore.example.test", path);
        assert_eq!(conn.send(request).await.unwrap().status, 200);
    }
}

fn access_lines(transcript: &str) -> Vec<serde_json::Value> {
    transcript
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "request")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_has_integer_milliseconds() {
    let pki = Pki::new();
    let (mut child, _dir, addr) = spawn_binary(&pki, serde_json::json!({}), &[]).await;
    two_requests(&pki, addr).await;
    child.wait_for_line(process::Stream::Stderr, |line| line.contains("/marker"));
    let lines = access_lines(&child.transcript());
    let first = lines
        .iter()
        .find(|line| line["path"] == "/first")
        .unwrap_or_else(|| panic!("no access line for /first:\n{}", child.transcript()));
    assert_eq!(first["status"], 200);
    assert!(
        first["duration_ms"].is_u64(),
        "duration_ms is not an integer: {first}"
    );
}

/// Starts the real binary with plain log lines and `env`; returns it, its folder and its
/// listen address, read from the `serving` line.
async fn spawn_plain(pki: &Pki, env: &[(&str, &str)]) -> (process::Child, TempDir, SocketAddr) {
    let (dir, config) = common::apps::ignore_app_config(pki, serde_json::json!({})).await;
    std::fs::write(
        dir.path().join("certgate.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let mut child = process::Child::spawn(&["run", "--config", "certgate.json"], dir.path(), env);
    let lines = child.wait_for_line(process::Stream::Stderr, |line| line.contains(" serving "));
    let serving = lines.last().unwrap();
    let listen = serving
        .split(' ')
        .find_map(|field| field.strip_prefix("listen="))
        .unwrap_or_else(|| panic!("no listen= in {serving}"));
    (child, dir, listen.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_access_line_reads_as_the_readme_shows() {
    let pki = Pki::new();
    let (mut child, _dir, addr) = spawn_plain(&pki, &[("RUST_LOG", "info")]).await;
    two_requests(&pki, addr).await;
    let lines = child.wait_for_line(process::Stream::Stderr, |line| line.contains("/marker"));
    let line = lines
        .iter()
        .find(|line| line.contains("path=\"/first\""))
        .unwrap_or_else(|| panic!("no access line for /first:\n{}", child.transcript()));
    // 2026-12-01T08:38:41.870016Z: a UTC timestamp with microseconds, then the level.
    let (timestamp, rest) = line.split_at(27);
    assert!(
        timestamp.len() == 27 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "{line}"
    );
    let rest = rest
        .strip_prefix("  INFO certgate::proxy: request client.addr=127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected start: {line}"));
    let (port, rest) = rest.split_once(' ').unwrap();
    assert!(port.parse::<u16>().is_ok(), "{line}");
    let rest = rest
        .strip_prefix(
            "sni=\"ignore.example.test\" app=ignore client.hash=\"\" method=GET path=\"/first\" status=200 rule=\"\" duration_ms=",
        )
        .unwrap_or_else(|| panic!("unexpected fields: {line}"));
    let (duration, upstream) = rest.split_once(' ').unwrap();
    assert!(duration.parse::<u64>().is_ok(), "{line}");
    // upstream=http://127.0.0.1:<port> upstream_group=latest upstream_endpoint=127.0.0.1:<port>
    let fields: Vec<&str> = upstream.split(' ').collect();
    let [url, group, endpoint] = fields[..] else {
        panic!("unexpected upstream fields: {line}");
    };
    let address = url
        .strip_prefix("upstream=http://")
        .unwrap_or_else(|| panic!("{line}"));
    assert!(address.starts_with("127.0.0.1:"), "{line}");
    assert_eq!(group, "upstream_group=latest", "{line}");
    assert_eq!(endpoint, format!("upstream_endpoint={address}"), "{line}");
    child.signal("TERM");
    child.wait_exit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_above_info_for_the_proxy_writes_no_request_lines() {
    let pki = Pki::new();
    let env = [("RUST_LOG", "info,certgate::proxy=warn")];
    let (mut child, _dir, addr) = spawn_plain(&pki, &env).await;
    two_requests(&pki, addr).await;
    child.signal("TERM");
    child.wait_exit();
    let transcript = child.transcript();
    assert!(transcript.contains("shutting down"), "{transcript}");
    assert!(!transcript.contains("request client.addr"), "{transcript}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_false_in_the_config_writes_no_request_lines() {
    assert_no_access_lines(serde_json::json!({ "accessLog": false }), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_access_log_flag_writes_no_request_lines() {
    assert_no_access_lines(serde_json::json!({}), &["--no-access-log"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_nobody_reads_never_stalls_requests() {
    let pki = Pki::new();
    let (dir, config) = common::apps::ignore_app_config(&pki, serde_json::json!({})).await;
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let mut child = std::process::Command::new(process::BIN)
        .args(["run", "--config", "certgate.json"])
        .current_dir(dir.path())
        .env("RUST_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // stdout and stderr are pipes this test never reads, so the "serving" line cannot tell
    // the address: read the port the child listens on from /proc.
    let every = Duration::from_millis(50);
    let tries = tries_within(process::PATIENCE, every);
    let port = find(tries, every, async || listening_port(child.id())).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port.expect("certgate never listened")));
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut conn = Connection::open(addr, &options).await.unwrap();
    // Each request logs several debug and info lines: far more than a pipe buffer (64 KiB)
    // holds. A blocking writer would stop the workers once the pipe is full.
    let all = async {
        for i in 0..3000 {
            let request = conn.get("ignore.example.test", &format!("/request/{i}"));
            let reply = conn.send(request).await.unwrap();
            assert_eq!(reply.status, 200);
        }
    };
    let done = tokio::time::timeout(process::PATIENCE, all).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(done.is_ok(), "requests stalled behind an unread stderr");
}

/// A plain HTTP/1.1 upstream on raw sockets that counts the connections it accepts and
/// answers each request with `200 ok`; with `close_idle`, it closes each connection 50 ms
/// after answering, without saying so, as an app with a short keep-alive timeout does.
async fn counting_upstream(
    close_idle: bool,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let addr = common::serve::serve_each(move |mut tcp| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let Ok(n) = tcp.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..end + 4);
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if tcp.write_all(reply).await.is_err() {
                        return;
                    }
                    if close_idle {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return;
                    }
                }
            }
        }
    })
    .await;
    (addr, accepted)
}

async fn gateway_in_front_of(pki: &Pki, upstream: SocketAddr) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    let ignore = app("ignore", &["ignore.example.test"], upstream, "ignore");
    Gateway::start(dir, serde_json::json!({ "apps": [ignore] })).await
}

#[tokio::test]
async fn upstream_connections_are_reused_between_requests() {
    let pki = Pki::new();
    let (upstream, accepted) = counting_upstream(false).await;
    let gateway = gateway_in_front_of(&pki, upstream).await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    for http2 in [false, true] {
        let mut conn = Connection::open(gateway.addr, &options.clone().http2(http2))
            .await
            .unwrap();
        for _ in 0..20 {
            let request = conn.get("ignore.example.test", "/");
            let reply = conn.send(request).await.unwrap();
            assert_eq!((reply.status.as_u16(), &reply.body[..]), (200, &b"ok"[..]));
        }
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "40 sequential requests did not share one upstream connection"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn upstream_that_closes_idle_connections_loses_no_request() {
    let pki = Pki::new();
    let (upstream, accepted) = counting_upstream(true).await;
    let gateway = gateway_in_front_of(&pki, upstream).await;
    let options = ClientOptions::new(&pki, "ignore.example.test");
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    for i in 0..10 {
        let request = conn.get("ignore.example.test", "/");
        let reply = conn.send(request).await.unwrap();
        assert_eq!(reply.status, 200, "request {i}");
        // By the next request the app has closed the pooled connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 10);
    gateway.stop().await;
}

/// The TCP port process `pid` listens on: its socket inodes from `/proc/PID/fd`, matched with
/// the listening sockets of `/proc/net/tcp`.
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local_address is field 1, the state field 3 (0A = LISTEN), the inode field 9.
        let listening = fields.get(3) == Some(&"0A");
        if !listening || !inodes.contains(*fields.get(9)?) {
            return None;
        }
        u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()
    })
}
