//! docs/config.md "Plain HTTP: listenHttp and allowInsecure": the plain-HTTP listener beside
//! the mTLS one.
//!
//! Cases:
//! - curl -L from `http://` follows the 301 to the `require` app and reaches it with its
//!   client certificate (XFCC at the app), on worker threads as `certgate run` serves.
//! - The `Location` bytes: `https://`, the validated host without the plain port, the mTLS
//!   listener's port, the path and query as sent; an IPv6 literal stays bracketed.
//! - An `allowInsecure` app answers over plain HTTP: the app receives exactly the request
//!   with `X-Forwarded-Proto: http` and none of the certificate headers the client sent.
//! - An `allowInsecure` app's authorization judges a plain request as one without a
//!   certificate: a rule that needs a verified certificate refuses it (403), others pass.
//! - HTTP/2 with prior knowledge: one connection carries a redirect for one app and a
//!   forwarded request for another, each routed by its `:authority`.
//! - An idle plain connection closes after `idleMs`.
//! - A host no app serves is 404; with a catch-all app, every host is that app's.
//! - Hostile or malformed authorities are 400: no app is asked, nothing is redirected.
//! - Every request on it is counted (`certgate_http_listener_requests_total{outcome}` and the
//!   app's `certgate_requests_total`), and a reload changes what it does without a restart.
//! - Config errors: `allowInsecure` on a `require` app, a bad `listenHttp`, `listenHttp` on
//!   the port of `listen` or `admin`.
//! - Drain: the plain listener stops accepting with the mTLS one.
//! - Shared with the mTLS listener: `limits.maxConnections` (a plain connection holds a slot
//!   an mTLS one then lacks), and `proxyProtocol.trustedSources` (the PROXY header's client
//!   reaches the app in `X-Forwarded-For`; a connection without one is refused); on worker
//!   threads, an open plain connection counts in `certgate_worker_connections` until it closes.
//! - The binary: `--listen-http` and `CERTGATE_LISTEN_HTTP` for the sidecar, the `serving`
//!   line, `certgate check`'s `listenHttp` line and `allow-insecure`, and the JSON access
//!   lines with `listener: "http"`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::process::Command;

use common::drain::until_refused;
use common::polling::poll;
use common::raw::RawReply;
use common::recording::raw_upstream;
use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SECURE: &str = "secure.example.test";
const INSECURE: &str = "insecure.example.test";

/// A `require` app at `SECURE` trusting the test client CA and an `accept` app at
/// `INSECURE` with `allowInsecure`, both in front of `upstream`; the plain listener on
/// 127.0.0.1:0 and the admin listener too.
fn files(pki: &Pki, upstream: SocketAddr) -> (TempDir, serde_json::Value) {
    let dir = TempDir::new();
    pki.write(&dir);
    let mut secure = app("secure", &[SECURE], upstream, "require");
    secure["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    let mut insecure = app("insecure", &[INSECURE], upstream, "accept");
    insecure["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    insecure["ingress"]["allowInsecure"] = true.into();
    let config = serde_json::json!({
        "listenHttp": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "apps": [secure, insecure],
    });
    (dir, config)
}

/// Sends `request` (raw bytes, which should ask `Connection: close`) to the plain listener
/// and reads the response to the close.
async fn plain(addr: SocketAddr, request: &str) -> RawReply {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tcp.read_to_end(&mut bytes).await.unwrap();
    common::raw::parse(&bytes)
}

fn get(host: &str, target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_follows_the_redirect_to_the_mtls_app_with_its_client_certificate() {
    if !common::tools::curl() {
        return;
    }
    let pki = Pki::new();
    let (dir, config) = files(&pki, echo_upstream().await);
    let client = pki.client("curl client");
    let ca_file = dir.write("server-ca.pem", &pki.server_ca.pem);
    let cert_file = dir.write("curl.pem", &client.pem);
    let key_file = dir.write("curl.key", client.key.serialize_pem());
    let gateway = Gateway::start_with_workers(dir, config, 2).await;
    let (http, https) = (gateway.http.unwrap().port(), gateway.addr.port());

    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--max-time", "30", "--location"])
        .arg("--cacert")
        .arg(&ca_file)
        .arg("--cert")
        .arg(&cert_file)
        .arg("--key")
        .arg(&key_file)
        .args(["--resolve", &format!("{SECURE}:{http}:127.0.0.1")])
        .args(["--resolve", &format!("{SECURE}:{https}:127.0.0.1")])
        .args([
            "--write-out",
            "\n%{num_redirects} %{url_effective} %{http_code}",
        ])
        .arg(format!("http://{SECURE}:{http}/hello/there?x=1&y=two"));
    let output = tokio::task::spawn_blocking(move || command.output().expect("run curl"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "curl failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (body, summary) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(
        summary,
        format!("1 https://{SECURE}:{https}/hello/there?x=1&y=two 200")
    );
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["path"], "/hello/there?x=1&y=two");
    let xfcc = echo_header(&echo, "x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1, "{echo}");
    assert!(
        xfcc[0].starts_with(&format!("Hash={}", client.hash_hex())),
        "{xfcc:?}"
    );
    assert_eq!(echo_header(&echo, "x-forwarded-proto"), ["https"]);
    gateway.stop().await;
}

#[tokio::test]
async fn the_location_is_the_same_host_path_and_query_on_the_mtls_port() {
    let pki = Pki::new();
    let (dir, config) = files(&pki, echo_upstream().await);
    let gateway = Gateway::start(dir, config).await;
    let (http, https) = (gateway.http.unwrap(), gateway.addr.port());
    for (host, target, location) in [
        (
            format!("{SECURE}:{}", http.port()),
            "/a/b%20c?x=1&y=%2F",
            format!("https://{SECURE}:{https}/a/b%20c?x=1&y=%2F"),
        ),
        (
            "SECURE.Example.Test".to_owned(),
            "/",
            format!("https://SECURE.Example.Test:{https}/"),
        ),
        (
            format!("{SECURE}."),
            "/?",
            format!("https://{SECURE}.:{https}/?"),
        ),
        (
            SECURE.to_owned(),
            &format!("http://{SECURE}/abs?q"),
            format!("https://{SECURE}:{https}/abs?q"),
        ),
    ] {
        let reply = plain(http, &get(&host, target)).await;
        reply.assert_certgate(301, &host);
        assert_eq!(reply.header("location"), Some(location.as_str()), "{host}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn an_ipv6_literal_host_is_redirected_in_brackets() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    // The catch-all app serves every host, IP literals too.
    let config = serde_json::json!({
        "listenHttp": "127.0.0.1:0",
        "apps": [app("any", &[], echo_upstream().await, "ignore")],
    });
    let gateway = Gateway::start(dir, config).await;
    let reply = plain(gateway.http.unwrap(), &get("[::1]:8080", "/v6")).await;
    reply.assert_certgate(301, "[::1]");
    assert_eq!(
        reply.header("location"),
        Some(format!("https://[::1]:{}/v6", gateway.addr.port()).as_str())
    );
    let reply = plain(gateway.http.unwrap(), &get("anything.example", "/")).await;
    reply.assert_certgate(301, "catch-all");
    gateway.stop().await;
}

#[tokio::test]
async fn an_allow_insecure_app_gets_the_request_over_http_without_certificate_headers() {
    let pki = Pki::new();
    let (upstream, recording) = raw_upstream().await;
    let (dir, config) = files(&pki, upstream);
    let gateway = Gateway::start(dir, config).await;
    let http = gateway.http.unwrap();

    let request = format!(
        "POST /insecure/path?q=1 HTTP/1.1\r\nHost: {INSECURE}:{port}\r\n\
         X-Forwarded-Client-Cert: Hash=spoofed\r\nx_forwarded_client_cert: spoofed\r\n\
         X-Client-Verify: SUCCESS\r\nX-ARR-ClientCert: spoofed\r\nClient-Cert: :c3Bvb2ZlZA==:\r\n\
         User-Agent: test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        port = http.port()
    );
    let reply = plain(http, &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "ok");
    let received = String::from_utf8(recording.bytes()).unwrap();
    assert_eq!(
        received,
        format!(
            "POST /insecure/path?q=1 HTTP/1.1\r\nhost: {INSECURE}:{port}\r\n\
             user-agent: test\r\ncontent-length: 3\r\nx-forwarded-for: 127.0.0.1\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: {INSECURE}:{port}\r\n\r\nabc",
            port = http.port()
        )
    );
    gateway.stop().await;
}

#[tokio::test]
async fn authorization_judges_a_plain_request_as_one_without_a_certificate() {
    let pki = Pki::new();
    let (dir, mut config) = files(&pki, echo_upstream().await);
    config["apps"][1]["authorization"] = serde_json::json!([
        { "pathPrefix": "/admin", "allowAnyVerified": true },
    ]);
    let gateway = Gateway::start(dir, config).await;
    let http = gateway.http.unwrap();
    let refused = plain(http, &get(INSECURE, "/admin/x")).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let served = plain(http, &get(INSECURE, "/public")).await;
    assert_eq!(served.status, 200, "{}", served.text());
    // Over mTLS with a certificate, the rule lets the same request through.
    let options = ClientOptions::new(&pki, INSECURE).with_identity(pki.client("c").identity());
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let request = conn.get(INSECURE, "/admin/x");
    assert_eq!(conn.send(request).await.unwrap().status, 200);
    gateway.stop().await;
}

#[tokio::test]
async fn one_h2c_connection_routes_each_request_by_its_authority() {
    let pki = Pki::new();
    let (dir, config) = files(&pki, echo_upstream().await);
    let gateway = Gateway::start(dir, config).await;
    let http = gateway.http.unwrap();
    let tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = |host: &str, path: &str| {
        http::Request::get(format!("http://{host}{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let redirected = sender.send_request(request(SECURE, "/h2?x")).await.unwrap();
    assert_eq!(redirected.status(), 301);
    assert_eq!(
        redirected.headers()["location"],
        format!("https://{SECURE}:{}/h2?x", gateway.addr.port()).as_str()
    );
    let served = sender.send_request(request(INSECURE, "/h2")).await.unwrap();
    assert_eq!(served.status(), 200);
    let body = http_body_util::BodyExt::collect(served.into_body())
        .await
        .unwrap()
        .to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["path"], "/h2");
    assert_eq!(echo_header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        echo_header(&echo, "x-forwarded-client-cert"),
        Vec::<String>::new()
    );
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_plain_connection_closes_after_idle_ms() {
    let pki = Pki::new();
    let (dir, mut config) = files(&pki, echo_upstream().await);
    config["timeouts"] = serde_json::json!({ "idleMs": 300, "requestHeaderMs": 600000 });
    let gateway = Gateway::start(dir, config).await;
    let mut tcp = tokio::net::TcpStream::connect(gateway.http.unwrap())
        .await
        .unwrap();
    tcp.write_all(format!("GET / HTTP/1.1\r\nHost: {SECURE}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut bytes = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut bytes),
    )
    .await
    .expect("the idle connection was not closed")
    .unwrap();
    assert!(bytes.starts_with(b"HTTP/1.1 301"), "{bytes:?}");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(300)
            && waited < std::time::Duration::from_secs(5),
        "closed after {waited:?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_host_no_app_serves_is_404_and_nothing_is_redirected() {
    let pki = Pki::new();
    let (dir, config) = files(&pki, echo_upstream().await);
    let gateway = Gateway::start(dir, config).await;
    let http = gateway.http.unwrap();
    for host in ["other.example.test", "127.0.0.1", "[::1]"] {
        let reply = plain(http, &get(host, "/")).await;
        reply.assert_certgate(404, host);
        assert_eq!(reply.header("location"), None, "{host}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn hostile_or_malformed_authorities_are_400() {
    let pki = Pki::new();
    let (upstream, recording) = raw_upstream().await;
    let (dir, config) = files(&pki, upstream);
    let gateway = Gateway::start(dir, config).await;
    let http = gateway.http.unwrap();
    let requests = [
        format!("GET / HTTP/1.1\r\nHost: {INSECURE}/x\r\nConnection: close\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: evil@{SECURE}\r\nConnection: close\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {SECURE}:0\r\nConnection: close\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {SECURE},{INSECURE}\r\nConnection: close\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {SECURE}%2f\r\nConnection: close\r\n\r\n"),
        format!(
            "GET / HTTP/1.1\r\nHost: {INSECURE}\r\nHost: {SECURE}\r\nConnection: close\r\n\r\n"
        ),
        format!("GET http://{SECURE}/ HTTP/1.1\r\nHost: {INSECURE}\r\nConnection: close\r\n\r\n"),
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
    ];
    for request in &requests {
        let reply = plain(http, request).await;
        reply.assert_certgate(400, request);
        assert_eq!(reply.header("location"), None, "{request}");
    }
    assert!(recording.bytes().is_empty(), "a request reached the app");
    gateway.stop().await;
}

#[tokio::test]
async fn every_request_is_counted_by_outcome_and_by_app() {
    let pki = Pki::new();
    let (dir, config) = files(&pki, echo_upstream().await);
    let gateway = Gateway::start(dir, config).await;
    let (http, admin) = (gateway.http.unwrap(), gateway.admin.unwrap());
    let before = scrape(admin).await;
    for outcome in [
        "redirected",
        "served",
        "unknown_host",
        "bad_request",
        "request_header_too_large",
    ] {
        let series = format!(r#"certgate_http_listener_requests_total{{outcome="{outcome}"}}"#);
        assert_eq!(metric(&before, &series), 0.0, "{series}");
    }
    for (host, status) in [
        (SECURE, 301),
        (SECURE, 301),
        (INSECURE, 200),
        ("nobody.example.test", 404),
        ("bad/host", 400),
    ] {
        assert_eq!(plain(http, &get(host, "/")).await.status, status, "{host}");
    }
    // A head over `maxRequestHeaderBytes` is refused by the HTTP layer before any app.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: {INSECURE}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(70_000)
    );
    assert_eq!(plain(http, &huge).await.status, 431);
    // Counted as its connection ends, a moment after the client read the answer.
    let after = poll(
        200,
        std::time::Duration::from_millis(10),
        async || scrape(admin).await,
        |scraped| {
            metric(
                scraped,
                r#"certgate_http_listener_requests_total{outcome="request_header_too_large"}"#,
            ) > 0.0
        },
    )
    .await;
    for (outcome, count) in [
        ("redirected", 2.0),
        ("served", 1.0),
        ("unknown_host", 1.0),
        ("bad_request", 1.0),
        ("request_header_too_large", 1.0),
    ] {
        let series = format!(r#"certgate_http_listener_requests_total{{outcome="{outcome}"}}"#);
        assert_eq!(metric(&after, &series), count, "{series}");
    }
    assert_eq!(
        metric(
            &after,
            r#"certgate_requests_total{app="secure",client_cert="none",code="301"}"#
        ),
        2.0
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_reload_changes_what_the_plain_listener_does() {
    let pki = Pki::new();
    let (dir, mut config) = files(&pki, echo_upstream().await);
    config["apps"][0]["ingress"]["clientCertificateMode"] = "accept".into();
    let gateway = Gateway::start(dir, config.clone()).await;
    let http = gateway.http.unwrap();
    assert_eq!(plain(http, &get(SECURE, "/")).await.status, 301);

    config["listen"] = "127.0.0.1:0".into();
    config["timeouts"]["drainDelayMs"] = 0.into();
    config["apps"][0]["ingress"]["allowInsecure"] = true.into();
    config["apps"][1]["ingress"]["allowInsecure"] = false.into();
    gateway
        .dir
        .write("certgate.json", serde_json::to_vec(&config).unwrap());
    gateway.reloader.reload().await.unwrap();
    let served = plain(http, &get(SECURE, "/now")).await;
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.echo()["path"], "/now");
    assert_eq!(plain(http, &get(INSECURE, "/")).await.status, 301);
    gateway.stop().await;
}

#[tokio::test]
async fn the_plain_listener_stops_accepting_on_drain() {
    let pki = Pki::new();
    let (dir, config) = files(&pki, echo_upstream().await);
    let gateway = Gateway::start(dir, config).await;
    let http = gateway.http.unwrap();
    assert_eq!(plain(http, &get(SECURE, "/")).await.status, 301);
    let stopping = tokio::spawn(gateway.stop());
    assert!(
        until_refused(http, 100).await,
        "the plain listener still accepted while draining"
    );
    stopping.await.unwrap();
}

#[tokio::test]
async fn plain_and_mtls_connections_share_max_connections() {
    let pki = Pki::new();
    let (dir, mut config) = files(&pki, echo_upstream().await);
    config["limits"] = serde_json::json!({ "maxConnections": 1 });
    let gateway = Gateway::start(dir, config).await;
    let http = gateway.http.unwrap();
    let mut held = tokio::net::TcpStream::connect(http).await.unwrap();
    held.write_all(format!("GET / HTTP/1.1\r\nHost: {SECURE}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0_u8; 12];
    held.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 301");

    let options = ClientOptions::new(&pki, SECURE).with_identity(pki.client("c").identity());
    assert!(
        Connection::open(gateway.addr, &options).await.is_err(),
        "an mTLS connection was accepted while the plain one held the only slot"
    );
    drop(held);
    let served = common::polling::find(100, std::time::Duration::from_millis(20), async || {
        let mut conn = Connection::open(gateway.addr, &options).await.ok()?;
        let request = conn.get(SECURE, "/");
        conn.send(request).await.ok().map(|reply| reply.status)
    })
    .await;
    assert_eq!(served, Some(http::StatusCode::OK), "no slot freed");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_plain_connection_counts_on_its_worker_thread() {
    let pki = Pki::new();
    let (dir, config) = files(&pki, echo_upstream().await);
    let gateway = Gateway::start_with_workers(dir, config, 2).await;
    let (http, admin) = (gateway.http.unwrap(), gateway.admin.unwrap());
    let open = async || {
        let text = scrape(admin).await;
        (0..2)
            .map(|worker| {
                metric(
                    &text,
                    &format!(r#"certgate_worker_connections{{worker="{worker}"}}"#),
                )
            })
            .sum::<f64>()
    };
    assert_eq!(open().await, 0.0);
    let mut held = tokio::net::TcpStream::connect(http).await.unwrap();
    held.write_all(format!("GET / HTTP/1.1\r\nHost: {SECURE}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0_u8; 12];
    held.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 301");
    assert_eq!(open().await, 1.0);
    drop(held);
    let closed = common::polling::find(100, std::time::Duration::from_millis(20), async || {
        (open().await == 0.0).then_some(())
    })
    .await;
    assert!(
        closed.is_some(),
        "the closed plain connection stayed counted"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn the_plain_listener_reads_the_proxy_header_of_trusted_sources() {
    let pki = Pki::new();
    let (dir, mut config) = files(&pki, echo_upstream().await);
    config["proxyProtocol"] = serde_json::json!({ "trustedSources": ["127.0.0.1/32"] });
    let gateway = Gateway::start(dir, config).await;
    let http = gateway.http.unwrap();
    let request = format!(
        "PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\n{}",
        get(INSECURE, "/behind")
    );
    let reply = plain(http, &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-forwarded-for"), ["203.0.113.7"]);
    assert_eq!(reply.upstream_header("x-forwarded-proto"), ["http"]);

    let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    tcp.write_all(get(INSECURE, "/").as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let _ = tcp.read_to_end(&mut bytes).await;
    assert!(
        !bytes.starts_with(b"HTTP/1.1 200"),
        "served without a PROXY header: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    gateway.stop().await;
}

#[tokio::test]
async fn ip_restrictions_judge_each_plain_request_by_its_app() {
    let pki = Pki::new();
    let (dir, mut config) = files(&pki, echo_upstream().await);
    config["proxyProtocol"] = serde_json::json!({ "trustedSources": ["127.0.0.1/32"] });
    // The served app admits one office range only; the redirected one refuses one address.
    config["apps"][1]["ingress"]["ipSecurityRestrictions"] = serde_json::json!([
        { "name": "office", "ipAddressRange": "203.0.113.0/24", "action": "Allow" }
    ]);
    config["apps"][0]["ingress"]["ipSecurityRestrictions"] = serde_json::json!([
        { "name": "blocked", "ipAddressRange": "198.51.100.9", "action": "Deny" }
    ]);
    let gateway = Gateway::start(dir, config).await;
    let http = gateway.http.unwrap();
    let from = |addr: &str, host: &str| {
        format!(
            "PROXY TCP4 {addr} 192.0.2.1 40000 80\r\n{}",
            get(host, "/x")
        )
    };
    let reply = plain(http, &from("203.0.113.7", INSECURE)).await;
    assert_eq!(
        reply.status,
        200,
        "an office address is served: {}",
        reply.text()
    );
    for (addr, host) in [("198.51.100.9", INSECURE), ("198.51.100.9", SECURE)] {
        let reply = plain(http, &from(addr, host)).await;
        assert_eq!(reply.status, 403, "{addr} to {host}: {}", reply.text());
        assert!(
            reply.text().contains("ipSecurityRestrictions"),
            "{}",
            reply.text()
        );
    }
    // Another address outside the office is redirected for the app that only denies one.
    let reply = plain(http, &from("198.51.100.10", SECURE)).await;
    assert_eq!(reply.status, 301, "{}", reply.text());
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric_value(
            &text,
            r#"certgate_http_listener_requests_total{outcome="ip_restricted"}"#
        ),
        Some(2.0)
    );
    gateway.stop().await;
}

/// Writes `config` as `certgate.json` in a fresh folder with the test PKI; the config error
/// `certgate check` prints.
fn refused(pki: &Pki, config: &serde_json::Value) -> String {
    let dir = TempDir::new();
    pki.write(&dir);
    let path = dir.write("certgate.json", serde_json::to_vec(config).unwrap());
    let error = load_config(&path).expect_err("the config was accepted");
    certgate::error_chain(&error)
}

#[test]
fn allow_insecure_on_a_require_app_is_refused_naming_the_key() {
    let pki = Pki::new();
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut secure = app("secure", &[SECURE], upstream, "Require");
    secure["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    secure["ingress"]["allowInsecure"] = true.into();
    let error = refused(&pki, &serde_json::json!({ "apps": [secure] }));
    process::cli::assert_says(
        &error,
        &[
            "\"secure\"",
            "ingress.allowInsecure",
            "require mode",
            "set clientCertificateMode to accept or ignore",
        ],
        &[],
    );
    for mode in ["accept", "ignore"] {
        let dir = TempDir::new();
        pki.write(&dir);
        let mut other = app("other", &[SECURE], upstream, mode);
        other["clientAuth"] = match mode {
            "accept" => serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] }),
            _ => serde_json::json!({}),
        };
        other["ingress"]["allowInsecure"] = true.into();
        let path = dir.write(
            "certgate.json",
            serde_json::to_vec(&serde_json::json!({ "apps": [other] })).unwrap(),
        );
        let config = load_config(&path).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(config.apps[0].allow_insecure, "{mode}");
    }
}

#[test]
fn a_bad_or_colliding_listen_http_is_refused() {
    let pki = Pki::new();
    let apps = [app("any", &[], "127.0.0.1:9".parse().unwrap(), "ignore")];
    for (config, says) in [
        (
            serde_json::json!({ "listenHttp": "0.0.0.0", "apps": apps }),
            "listenHttp \"0.0.0.0\" is not an IP:port socket address",
        ),
        (
            serde_json::json!({ "listenHttp": "0.0.0.0:8443", "apps": apps }),
            "listenHttp 0.0.0.0:8443 overlaps listen 0.0.0.0:8443: put the plain-HTTP listener on another port",
        ),
        (
            serde_json::json!({
                "listen": "127.0.0.1:8443", "listenHttp": "0.0.0.0:8443", "apps": apps,
            }),
            "listenHttp 0.0.0.0:8443 overlaps listen 127.0.0.1:8443",
        ),
        (
            serde_json::json!({
                "admin": "127.0.0.1:9901", "listenHttp": "127.0.0.1:9901", "apps": apps,
            }),
            "listenHttp 127.0.0.1:9901 overlaps admin 127.0.0.1:9901",
        ),
    ] {
        let error = refused(&pki, &config);
        assert!(error.contains(says), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_takes_listen_http_from_its_flag_and_its_environment() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut args = vec!["--log-format", "json", "run"];
    args.extend(process::cli::SIDECAR);
    args.extend(["--client-cert-mode", "ignore", "--listen", "127.0.0.1:0"]);
    let with_flag = [args.clone(), vec!["--listen-http", "127.0.0.1:0"]].concat();
    for (argv, env) in [
        (with_flag, vec![]),
        (args.clone(), vec![("CERTGATE_LISTEN_HTTP", "127.0.0.1:0")]),
    ] {
        let mut child = process::Child::spawn(&argv, dir.path(), &env);
        let serving = child.wait_serving();
        let reply = plain(serving.listen_http(), &get("app.example.test", "/x?y")).await;
        reply.assert_certgate(301, "sidecar");
        assert_eq!(
            reply.header("location"),
            Some(format!("https://app.example.test:{}/x?y", serving.listen().port()).as_str())
        );
        child.signal("TERM");
        assert!(child.wait_exit().success());
    }
    let mut child = process::Child::spawn(&args, dir.path(), &[]);
    let serving = child.wait_serving();
    assert_eq!(serving.0["listen_http"], "off", "{}", serving.0);
    child.signal("TERM");
    assert!(child.wait_exit().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_plain_requests_with_listener_http_and_check_shows_the_listener() {
    let pki = Pki::new();
    let (dir, mut config) = files(&pki, echo_upstream().await);
    config["listen"] = "127.0.0.1:0".into();
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let check = process::cli::certgate(&["check", "--config", "certgate.json"], dir.path(), &[]);
    let (stdout, _) = process::cli::exited(&check, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "listenHttp 127.0.0.1:0: redirects to https:// on port 0, serves over plain HTTP [insecure]"
    );
    assert!(lines[1].starts_with("secure: ") && !lines[1].contains("allow-insecure"));
    assert!(lines[2].starts_with("insecure: ") && lines[2].ends_with(" allow-insecure"));

    let (mut child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    let http = serving.listen_http();
    assert_eq!(plain(http, &get(SECURE, "/to-https")).await.status, 301);
    assert_eq!(plain(http, &get(INSECURE, "/plain")).await.status, 200);
    assert_eq!(plain(http, &get("nobody.test", "/none")).await.status, 404);
    child.wait_for_line(process::Stream::Stderr, |line| line.contains("/none"));
    let access: Vec<serde_json::Value> = child
        .transcript()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "request")
        .collect();
    let line = |path: &str| {
        access
            .iter()
            .find(|line| line["path"] == path)
            .unwrap_or_else(|| panic!("no access line for {path}: {access:?}"))
            .clone()
    };
    for (path, app, status) in [
        ("/to-https", "secure", 301),
        ("/plain", "insecure", 200),
        ("/none", "", 404),
    ] {
        let line = line(path);
        assert_eq!(line["listener"], "http", "{line}");
        assert_eq!(line["app"], app, "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["sni"], "", "{line}");
    }
    assert_eq!(line("/none")["outcome"], "unknown_host");
    child.signal("TERM");
    assert!(child.wait_exit().success());
}
