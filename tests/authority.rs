//! Malformed ports in the request's authority (README "Routing"): the port must be 1 to 5 ASCII
//! digits with a value from 1 to 65535, IPv6 literals in brackets, nothing else.
//! - over HTTP/1.1, `Host: name:99999`, `:abc`, `:0x1bb`, `:+443`, `:0` and `:` get 400;
//! - over HTTP/2 (curl turns `Host` into `:authority`), the same authorities get 400;
//! - none of them reaches the app, while a well-formed port on the same connection does.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;

use common::hardening::counting_upstream;
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
    let curl = |host: String| {
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--http2", "--max-time", "30"])
            .arg("--cacert")
            .arg(&ca)
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
    };
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
