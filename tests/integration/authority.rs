//! Malformed ports in the request's authority (docs/modes.md "Routing"): the port must be 1 to 5 ASCII
//! digits with a value from 1 to 65535, IPv6 literals in brackets, nothing else.
//! - over HTTP/1.1, `Host: name:99999`, `:abc`, `:0x1bb`, `:+443`, `:0` and `:` get 400;
//! - over HTTP/2 (curl turns `Host` into `:authority`), the same authorities get 400;
//! - none of them reaches the app, while a well-formed port on the same connection does.
//!
//! Hosts that are not host names, on a catch-all `ignore` app reached without SNI (where the
//! 421 check has nothing to compare with): `x,a.test`, `a.test..`, `a.test%2e`, `a.test;x`,
//! `a.test!` and others get 400 in `Host`, in `:authority` (hyper's client and curl) and in an
//! absolute-form target, and the raw-socket app receives not one byte; a good host reaches it
//! with exactly one `X-Forwarded-Host`, whatever the client sent in its own.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::process::Command;
use std::sync::atomic::Ordering;

use common::hardening::counting_upstream;
use common::raw::raw_http1;
use common::recording::{Recording, raw_upstream};
use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HOST: &str = "ignore.example.test";
const BAD_PORTS: [&str; 6] = ["99999", "abc", "0x1bb", "+443", "0", ""];

async fn gateway(pki: &Pki) -> (Gateway, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let dir = TempDir::new();
    pki.write(&dir);
    let (upstream, count) = counting_upstream().await;
    let config = serde_json::json!({ "apps": [app("ignore", &[HOST], upstream, "ignore")] });
    (Gateway::start(dir, config).await, count)
}

/// Sends one raw HTTP/1.1 request with `host` on a fresh connection; returns the status line.
async fn status_line_http1(gateway: &Gateway, pki: &Pki, host: &str) -> String {
    let options = ClientOptions::new(pki, HOST);
    let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.lines().next().unwrap_or("").to_owned()
}

#[tokio::test]
async fn malformed_ports_over_http1_get_400_and_never_reach_the_app() {
    let pki = Pki::new();
    let (gateway, count) = gateway(&pki).await;
    for port in BAD_PORTS {
        let host = format!("{HOST}:{port}");
        let status = status_line_http1(&gateway, &pki, &host).await;
        assert!(
            status.contains(" 400 "),
            "Host {host:?} answered {status:?}"
        );
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "a malformed Host reached the app"
    );
    let status = status_line_http1(&gateway, &pki, &format!("{HOST}:443")).await;
    assert!(status.contains(" 200 "), "a good port answered {status:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn malformed_ports_over_http2_get_400_and_never_reach_the_app() {
    if !common::tools::curl() {
        return;
    }
    let pki = Pki::new();
    let (gateway, count) = gateway(&pki).await;
    let ca = gateway.dir.write("server-ca.pem", &pki.server_ca.pem);
    let port = gateway.addr.port();
    let curl = |host: String| curl_http2(&gateway, &ca, host);
    for bad in BAD_PORTS {
        let host = format!("{HOST}:{bad}");
        let output = curl(host.clone()).await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            stdout,
            "400 2",
            ":authority {host:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "a malformed :authority reached the app"
    );
    let output = curl(format!("{HOST}:{port}")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "200 2");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    gateway.stop().await;
}

/// Runs curl over HTTP/2 to `HOST` on the gateway with `Host: host` (which curl sends as
/// `:authority`); its output, `status http_version` on stdout.
fn curl_http2(
    gateway: &Gateway,
    ca: &std::path::Path,
    host: String,
) -> tokio::task::JoinHandle<std::process::Output> {
    let port = gateway.addr.port();
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--http2", "--max-time", "30"])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{HOST}:{port}:127.0.0.1"))
        .args([
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code} %{http_version}",
        ])
        .arg("--header")
        .arg(format!("Host: {host}"))
        .arg(format!("https://{HOST}:{port}/"));
    tokio::task::spawn_blocking(move || command.output().expect("run curl"))
}

/// Authorities that are not `host[:port]` with a host name or IP literal (docs/modes.md "Routing").
const NOT_HOST_NAMES: [&str; 10] = [
    "x,a.test",
    "a.test,x",
    "a.test..",
    "a..test",
    ".a.test",
    "a.test%2e",
    "a.test;x",
    "a.test!",
    "a.test~",
    "a.test*",
];

/// certgate with one catch-all `ignore` app (no `hosts`) in front of the raw-socket app.
async fn catch_all_gateway(pki: &Pki) -> (Gateway, Recording) {
    let dir = TempDir::new();
    pki.write(&dir);
    let (upstream, recording) = raw_upstream().await;
    let config = serde_json::json!({ "apps": [app("catch-all", &[], upstream, "ignore")] });
    (Gateway::start(dir, config).await, recording)
}

/// A client that sends no SNI: the connection lands on the catch-all app.
fn without_sni(pki: &Pki, http2: bool) -> ClientOptions {
    let mut options = ClientOptions::new(pki, HOST).http2(http2);
    options.sni = None;
    options
}

fn assert_nothing_reached(recording: &Recording, label: &str) {
    assert!(
        recording.bytes().is_empty(),
        "{label} reached the app: {:?}",
        String::from_utf8_lossy(&recording.bytes())
    );
}

#[tokio::test]
async fn hosts_that_are_not_host_names_get_400_over_http1_and_never_reach_the_app() {
    let pki = Pki::new();
    let (gateway, recording) = catch_all_gateway(&pki).await;
    let options = without_sni(&pki, false);
    for bad in NOT_HOST_NAMES {
        let request = format!("GET / HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n");
        let reply = raw_http1(gateway.addr, &options, &request).await;
        reply.assert_certgate(400, &format!("Host {bad:?}"));
    }
    assert_nothing_reached(&recording, "a Host that is not a host name");
    gateway.stop().await;
}

#[tokio::test]
async fn absolute_form_targets_that_are_not_host_names_get_400_and_never_reach_the_app() {
    let pki = Pki::new();
    let (gateway, recording) = catch_all_gateway(&pki).await;
    let options = without_sni(&pki, false);
    for bad in NOT_HOST_NAMES {
        let mut tls = tls_stream(gateway.addr, &options).await.unwrap();
        let request =
            format!("GET http://{bad}/ HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.starts_with("HTTP/1.1 400 "),
            "target http://{bad}/ answered {text:?}"
        );
    }
    assert_nothing_reached(
        &recording,
        "an absolute-form target that is not a host name",
    );
    gateway.stop().await;
}

#[tokio::test]
async fn authorities_that_are_not_host_names_get_400_over_http2_and_never_reach_the_app() {
    let pki = Pki::new();
    let (gateway, recording) = catch_all_gateway(&pki).await;
    let options = without_sni(&pki, true);
    for bad in NOT_HOST_NAMES {
        let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
        let Ok(request) = http::Request::builder()
            .uri(format!("https://{bad}/"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
        else {
            // hyper's client cannot even write this one; curl does below.
            continue;
        };
        match conn.send(request).await {
            Ok(reply) => assert_certgate_error(
                &reply,
                http::StatusCode::BAD_REQUEST,
                &format!(":authority {bad:?}"),
            ),
            Err(failure) => panic!(":authority {bad:?}: {}", failure.message),
        }
    }
    assert_nothing_reached(&recording, "an :authority that is not a host name");
    gateway.stop().await;
}

#[tokio::test]
async fn authorities_that_are_not_host_names_get_400_over_http2_from_curl() {
    if !common::tools::curl() {
        return;
    }
    let pki = Pki::new();
    let (gateway, recording) = catch_all_gateway(&pki).await;
    let ca = gateway.dir.write("server-ca.pem", &pki.server_ca.pem);
    for bad in NOT_HOST_NAMES {
        let output = curl_http2(&gateway, &ca, bad.to_owned()).await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // hyper's HTTP/2 layer resets a stream whose `:authority` is not even URI syntax
        // (`%2e`) before certgate sees it; that is a refusal too.
        assert!(
            stdout == "400 2" || stderr.contains("PROTOCOL_ERROR"),
            ":authority {bad:?}: {stdout} {stderr}"
        );
    }
    assert_nothing_reached(&recording, "an :authority that is not a host name");
    let output = curl_http2(&gateway, &ca, "a.test".to_owned())
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "200 2");
    gateway.stop().await;
}

#[tokio::test]
async fn the_app_gets_one_x_forwarded_host_holding_the_routed_host() {
    let pki = Pki::new();
    let (gateway, recording) = catch_all_gateway(&pki).await;
    let options = without_sni(&pki, false);
    let request = "GET / HTTP/1.1\r\nHost: a.test:8443\r\n\
        X-Forwarded-Host: x, a.test\r\nx-forwarded-host: other.test\r\n\
        Connection: close\r\n\r\n";
    let reply = raw_http1(gateway.addr, &options, request).await;
    assert_eq!(reply.status, 200, "{:?}", reply.text());
    let received = String::from_utf8_lossy(&recording.bytes()).to_ascii_lowercase();
    let forwarded_hosts: Vec<&str> = received
        .split("\r\n")
        .filter(|line| line.starts_with("x-forwarded-host:"))
        .collect();
    assert_eq!(
        forwarded_hosts,
        ["x-forwarded-host: a.test:8443"],
        "{received}"
    );
    gateway.stop().await;
}
