//! TLS and mutual TLS from certgate to the app (docs/upstream-tls.md), against rustls +
//! hyper apps in the test and a real `openssl s_server`:
//! - an https app whose certificate verifies against `caFiles` is reached over HTTP/1.1 with
//!   the configured `serverName` as SNI, and over HTTP/2 (`:scheme` https) with
//!   `transport: http2`;
//! - over HTTP/2, revisions of an app that mix `http://` and `https://` each get their own
//!   `:scheme`, whichever of them is the app's `upstream`;
//! - an app certificate from an unknown CA (HTTP/1.1 and HTTP/2), without the server name,
//!   expired or not valid yet, or a handshake that does not finish within `upstreamConnectMs`:
//!   502, the reason counted in `certgate_upstream_tls_failures_total`; every reason is there
//!   at zero;
//! - an app that requires a client certificate certgate does not send: 502,
//!   `client_cert_refused`, over HTTP/1.1 and HTTP/2;
//! - certgate presents its client certificate to a rustls app (TLS 1.3, and TLS 1.2 only) and
//!   to `openssl s_server -Verify 1`, and exports its expiry;
//! - an app that does not speak TLS, or speaks first, gets nothing but a ClientHello: no request
//!   is ever written in plaintext;
//! - `insecureSkipVerify` reaches an app whose CA is unknown, and `certgate check` flags it;
//! - replacing certgate's client certificate and reloading fails no request, and the app sees
//!   the new certificate afterwards;
//! - without `caFiles` the app's certificate is verified against the system's CAs
//!   (`SSL_CERT_FILE`, as OpenSSL reads it): the app's own CA reaches it, another CA is a 502
//!   `unknown_ca`, `check` shows them, and no usable system CA refuses the config;
//! - `upstreamTls` on an http:// upstream, caFiles with insecureSkipVerify, a bad serverName, half a client certificate, a missing CA file and a
//!   misspelled key are refused, naming the key or file;
//! - the sidecar flags build the same app;
//! - the example app of docs/upstream-tls.md loads, and `explain` shows how it is reached.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::apps::IGNORE_HOST;
use common::polling::until_async;
use common::serve::serve_each;
use common::tls_app::*;
use common::tools;
use common::*;

const CERTGATE: &str = env!("CARGO_BIN_EXE_certgate");

/// certgate with one `ignore` app at [`IGNORE_HOST`] in front of `upstream`, with
/// `upstream_tls` and `files` (name, contents) written beside the config.
async fn gateway(
    pki: &Pki,
    upstream: String,
    upstream_tls: serde_json::Value,
    transport: &str,
    files: &[(&str, String)],
) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    for (name, contents) in files {
        dir.write(name, contents);
    }
    let config = ignore_config(upstream, upstream_tls, transport);
    Gateway::start(dir, config).await
}

fn ignore_config(
    upstream: String,
    upstream_tls: serde_json::Value,
    transport: &str,
) -> serde_json::Value {
    let mut app = common::apps::ignore_app("127.0.0.1:9".parse().unwrap());
    app["upstream"] = upstream.into();
    app["upstreamTls"] = upstream_tls;
    app["ingress"]["transport"] = transport.into();
    serde_json::json!({ "admin": "127.0.0.1:0", "apps": [app] })
}

async fn request(gateway: &Gateway, pki: &Pki, http2: bool) -> Reply {
    let options = ClientOptions::new(pki, IGNORE_HOST).http2(http2);
    get(gateway.addr, &options, IGNORE_HOST, "/").await.unwrap()
}

fn failures(text: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!(r#"certgate_upstream_tls_failures_total{{app="ignore",reason="{reason}"}}"#),
    )
}

/// Asserts that `reply` is certgate's 502 and that `reason` was counted once.
async fn assert_refused_for(gateway: &Gateway, reply: &Reply, reason: &str) {
    assert_certgate_error(reply, http::StatusCode::BAD_GATEWAY, reason);
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(failures(&text, reason), 1.0, "{reason} counted");
}

/// Starts a gateway whose app is the https app at `addr` with `upstream_tls` (and `files`),
/// and asserts that a request gets certgate's 502 counted as `reason`.
async fn assert_app_refused(
    pki: &Pki,
    addr: SocketAddr,
    upstream_tls: serde_json::Value,
    transport: &str,
    files: &[(&str, String)],
    reason: &str,
) {
    let gateway = gateway(
        pki,
        format!("https://{addr}"),
        upstream_tls,
        transport,
        files,
    )
    .await;
    let reply = request(&gateway, pki, false).await;
    assert_refused_for(&gateway, &reply, reason).await;
    gateway.stop().await;
}

#[tokio::test]
async fn an_https_app_is_reached_over_http1_with_the_server_name_as_sni() {
    let pki = Pki::new();
    let (app_ca, app_leaf) = app_pki();
    let app = TlsApp::start(&app_leaf, None).await;
    let gateway = gateway(
        &pki,
        format!("https://{}", app.addr),
        serde_json::json!({ "caFiles": ["app-ca.pem"], "serverName": "orders.example.test" }),
        "http",
        &[("app-ca.pem", app_ca.pem.clone())],
    )
    .await;
    let reply = request(&gateway, &pki, false).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "HTTP/1.1 none");
    let seen = app.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].sni.as_deref(), Some("orders.example.test"));
    // A second request reuses the pooled connection.
    let reply = request(&gateway, &pki, false).await;
    assert_eq!(reply.status, 200);
    assert_eq!(app.seen().len(), 1, "the TLS connection is pooled");
    gateway.stop().await;
}

#[tokio::test]
async fn an_https_app_is_reached_over_h2_when_the_transport_is_http2() {
    let pki = Pki::new();
    let (app_ca, app_leaf) = app_pki();
    let app = TlsApp::start(&app_leaf, None).await;
    let gateway = gateway(
        &pki,
        format!("https://localhost:{}", app.addr.port()),
        serde_json::json!({ "caFiles": ["app-ca.pem"] }),
        "http2",
        &[("app-ca.pem", app_ca.pem.clone())],
    )
    .await;
    for http2 in [false, true] {
        let reply = request(&gateway, &pki, http2).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "HTTP/2.0 none");
        assert_eq!(reply.headers["x-scheme"], "https", ":scheme over TLS");
    }
    assert_eq!(app.seen()[0].sni.as_deref(), Some("localhost"));
    gateway.stop().await;
}

#[tokio::test]
async fn over_h2_each_revision_gets_the_scheme_of_its_own_url() {
    let pki = Pki::new();
    let (app_ca, app_leaf) = app_pki();
    let tls_app = TlsApp::start(&app_leaf, None).await;
    let https = format!("https://localhost:{}", tls_app.addr.port());
    let http = format!("http://{}", cleartext_app().await);
    // Each way round: the app's `upstream` over TLS and a revision in cleartext, and the
    // reverse.
    for (latest, revision) in [(&http, &https), (&https, &http)] {
        let dir = TempDir::new();
        pki.write(&dir);
        dir.write("app-ca.pem", &app_ca.pem);
        let mut config = ignore_config(
            latest.clone(),
            serde_json::json!({ "caFiles": ["app-ca.pem"] }),
            "http2",
        );
        let app = &mut config["apps"][0];
        app["revisions"] = serde_json::json!({ "ignore--other": revision });
        app["ingress"]["traffic"] = serde_json::json!([
            { "weight": 50, "latestRevision": true },
            { "weight": 50, "revisionName": "ignore--other" },
        ]);
        let gateway = Gateway::start(dir, config).await;
        let mut answered = Vec::new();
        for http2 in [false, true, false, true] {
            let reply = request(&gateway, &pki, http2).await;
            assert_eq!(reply.status, 200);
            let scheme = reply.headers["x-scheme"].to_str().unwrap();
            answered.push(format!("{} {scheme}", String::from_utf8_lossy(&reply.body)));
        }
        answered.sort();
        assert_eq!(
            answered,
            [
                "HTTP/2.0 cleartext http",
                "HTTP/2.0 cleartext http",
                "HTTP/2.0 none https",
                "HTTP/2.0 none https",
            ],
            "upstream {latest}, revision {revision}"
        );
        gateway.stop().await;
    }
}

#[tokio::test]
async fn an_app_that_speaks_only_tls12_is_reached_with_certgates_client_certificate() {
    let pki = Pki::new();
    let (app_ca, app_leaf) = app_pki();
    let certgate_ca = Ca::root("certgate's client CA");
    let certgate_leaf = certgate_ca.issue(LeafSpec::client("certgate"));
    let app =
        TlsApp::start_with_versions(&app_leaf, Some(&certgate_ca), &[&rustls::version::TLS12])
            .await;
    let gateway = gateway(
        &pki,
        format!("https://{}", app.addr),
        serde_json::json!({
            "caFiles": ["app-ca.pem"],
            "certFile": "certgate.pem",
            "keyFile": "certgate.key",
        }),
        "http",
        &[
            ("app-ca.pem", app_ca.pem.clone()),
            ("certgate.pem", certgate_leaf.pem.clone()),
            ("certgate.key", certgate_leaf.key.serialize_pem()),
        ],
    )
    .await;
    let reply = request(&gateway, &pki, false).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        format!("HTTP/1.1 {}", certgate_leaf.hash_hex()).as_str()
    );
    gateway.stop().await;
}

#[tokio::test]
async fn an_app_certificate_from_an_unknown_ca_is_a_502_counted_as_unknown_ca() {
    let pki = Pki::new();
    let (_, app_leaf) = app_pki();
    let other_ca = Ca::root("not the app's CA");
    let app = TlsApp::start(&app_leaf, None).await;
    for transport in ["http", "http2"] {
        assert_app_refused(
            &pki,
            app.addr,
            serde_json::json!({ "caFiles": ["other-ca.pem"] }),
            transport,
            &[("other-ca.pem", other_ca.pem.clone())],
            "unknown_ca",
        )
        .await;
    }
}

#[tokio::test]
async fn an_app_certificate_without_the_server_name_is_a_502_counted_as_name_mismatch() {
    let pki = Pki::new();
    let (app_ca, app_leaf) = app_pki();
    let app = TlsApp::start(&app_leaf, None).await;
    assert_app_refused(
        &pki,
        app.addr,
        serde_json::json!({ "caFiles": ["app-ca.pem"], "serverName": "orders.internal" }),
        "http",
        &[("app-ca.pem", app_ca.pem.clone())],
        "name_mismatch",
    )
    .await;
}

#[tokio::test]
async fn an_expired_app_certificate_is_a_502_counted_as_expired() {
    let pki = Pki::new();
    let app_ca = Ca::root("certgate test app CA");
    let now = time::OffsetDateTime::now_utc();
    let expired = app_ca.issue(LeafSpec {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
        ..LeafSpec::server()
    });
    let app = TlsApp::start(&expired, None).await;
    assert_app_refused(
        &pki,
        app.addr,
        serde_json::json!({ "caFiles": ["app-ca.pem"] }),
        "http",
        &[("app-ca.pem", app_ca.pem.clone())],
        "expired",
    )
    .await;
}

#[tokio::test]
async fn an_app_certificate_not_valid_yet_is_a_502_counted_as_not_yet_valid() {
    let pki = Pki::new();
    let app_ca = Ca::root("certgate test app CA");
    let now = time::OffsetDateTime::now_utc();
    let early = app_ca.issue(LeafSpec {
        not_before: now + time::Duration::days(1),
        not_after: now + time::Duration::days(30),
        ..LeafSpec::server()
    });
    let app = TlsApp::start(&early, None).await;
    assert_app_refused(
        &pki,
        app.addr,
        serde_json::json!({ "caFiles": ["app-ca.pem"] }),
        "http",
        &[("app-ca.pem", app_ca.pem.clone())],
        "not_yet_valid",
    )
    .await;
}

#[tokio::test]
async fn an_app_requiring_a_client_certificate_certgate_lacks_is_a_502_counted_as_refused() {
    let pki = Pki::new();
    let (app_ca, app_leaf) = app_pki();
    let app = TlsApp::start(&app_leaf, Some(&Ca::root("app's client CA"))).await;
    for transport in ["http", "http2"] {
        assert_app_refused(
            &pki,
            app.addr,
            serde_json::json!({ "caFiles": ["app-ca.pem"] }),
            transport,
            &[("app-ca.pem", app_ca.pem.clone())],
            "client_cert_refused",
        )
        .await;
    }
}

#[tokio::test]
async fn an_app_that_never_finishes_the_handshake_is_a_502_counted_as_timeout() {
    let pki = Pki::new();
    let (app_ca, _) = app_pki();
    let addr = serve_each(|tcp| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(tcp);
    })
    .await;
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("app-ca.pem", &app_ca.pem);
    let mut config = ignore_config(
        format!("https://{addr}"),
        serde_json::json!({ "caFiles": ["app-ca.pem"] }),
        "http",
    );
    config["timeouts"] = serde_json::json!({ "upstreamConnectMs": 300 });
    let gateway = Gateway::start(dir, config).await;
    let started = std::time::Instant::now();
    let reply = request(&gateway, &pki, false).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_refused_for(&gateway, &reply, "timeout").await;
    gateway.stop().await;
}

#[tokio::test]
async fn every_upstream_tls_failure_reason_is_a_series_at_zero_before_any_traffic() {
    let pki = Pki::new();
    let (app_ca, _) = app_pki();
    let gateway = gateway(
        &pki,
        "https://127.0.0.1:9".to_owned(),
        serde_json::json!({ "caFiles": ["app-ca.pem"] }),
        "http",
        &[("app-ca.pem", app_ca.pem.clone())],
    )
    .await;
    let text = scrape(gateway.admin.unwrap()).await;
    for reason in [
        "unknown_ca",
        "name_mismatch",
        "expired",
        "not_yet_valid",
        "bad_certificate",
        "client_cert_refused",
        "timeout",
        "protocol",
    ] {
        assert_eq!(failures(&text, reason), 0.0, "{reason}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn certgate_presents_its_client_certificate_to_an_app_that_requires_one() {
    let pki = Pki::new();
    let (app_ca, app_leaf) = app_pki();
    let certgate_ca = Ca::root("certgate's client CA");
    let certgate_leaf = certgate_ca.issue(LeafSpec::client("certgate"));
    let app = TlsApp::start(&app_leaf, Some(&certgate_ca)).await;
    for http2 in [false, true] {
        let gateway = gateway(
            &pki,
            format!("https://{}", app.addr),
            serde_json::json!({
                "caFiles": ["app-ca.pem"],
                "certFile": "certgate.pem",
                "keyFile": "certgate.key",
            }),
            if http2 { "http2" } else { "http" },
            &[
                ("app-ca.pem", app_ca.pem.clone()),
                ("certgate.pem", certgate_leaf.pem.clone()),
                ("certgate.key", certgate_leaf.key.serialize_pem()),
            ],
        )
        .await;
        let reply = request(&gateway, &pki, http2).await;
        assert_eq!(reply.status, 200);
        let text = scrape(gateway.admin.unwrap()).await;
        let not_after = metric(
            &text,
            r#"certgate_certificate_not_after_seconds{app="ignore",kind="upstream_client"}"#,
        );
        // LeafSpec::client certificates expire in 30 days.
        let days_left =
            (not_after - time::OffsetDateTime::now_utc().unix_timestamp() as f64) / 86400.0;
        assert!((29.0..=30.0).contains(&days_left), "{days_left} days left");
        let version = if http2 { "HTTP/2.0" } else { "HTTP/1.1" };
        assert_eq!(
            reply.body,
            format!("{version} {}", certgate_leaf.hash_hex()).as_str()
        );
        gateway.stop().await;
    }
}

#[tokio::test]
async fn openssl_s_server_requiring_a_client_certificate_receives_certgates() {
    if !tools::openssl() {
        return;
    }
    let pki = Pki::new();
    let (app_ca, app_leaf) = app_pki();
    let certgate_ca = Ca::root("certgate's client CA");
    let certgate_leaf = certgate_ca.issue(LeafSpec::client("certgate upstream client"));
    let dir = TempDir::new();
    dir.write("app.pem", &app_leaf.pem);
    dir.write("app.key", app_leaf.key.serialize_pem());
    dir.write("certgate-ca.pem", &certgate_ca.pem);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "app.pem",
            "-key",
            "app.key",
            "-CAfile",
            "certgate-ca.pem",
            "-Verify",
            "1",
            "-verify_return_error",
            "-www",
            "-quiet",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let listening = until_async(100, Duration::from_millis(50), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(listening, "openssl s_server did not start");
    let gateway = gateway(
        &pki,
        format!("https://localhost:{port}"),
        serde_json::json!({
            "caFiles": ["app-ca.pem"],
            "certFile": "certgate.pem",
            "keyFile": "certgate.key",
        }),
        "http",
        &[
            ("app-ca.pem", app_ca.pem.clone()),
            ("certgate.pem", certgate_leaf.pem.clone()),
            ("certgate.key", certgate_leaf.key.serialize_pem()),
        ],
    )
    .await;
    let reply = request(&gateway, &pki, false).await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(reply.status, 200);
    let page = String::from_utf8_lossy(&reply.body);
    assert!(page.contains("Client certificate"), "{page}");
    assert!(page.contains("CN=certgate upstream client"), "{page}");
    gateway.stop().await;
}

/// A TCP app that records every byte it receives; `greeting` is written first when given.
async fn recording_app(greeting: Option<&'static [u8]>) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let recorded = received.clone();
    let addr = serve_each(move |mut tcp| {
        let received = recorded.clone();
        async move {
            if let Some(greeting) = greeting {
                let _ = tcp.write_all(greeting).await;
            }
            let mut buf = [0u8; 4096];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        received.lock().unwrap().extend_from_slice(&buf[..n]);
                        // Answer like an HTTP server would to anything.
                        let _ = tcp
                            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                }
            }
        }
    })
    .await;
    (addr, received)
}

#[tokio::test]
async fn an_app_that_does_not_speak_tls_or_speaks_first_never_receives_a_plaintext_request() {
    let pki = Pki::new();
    let (app_ca, _) = app_pki();
    for greeting in [None, Some(&b"220 ready\r\n"[..])] {
        let (addr, received) = recording_app(greeting).await;
        let gateway = gateway(
            &pki,
            format!("https://{addr}"),
            serde_json::json!({ "caFiles": ["app-ca.pem"] }),
            "http",
            &[("app-ca.pem", app_ca.pem.clone())],
        )
        .await;
        let reply = request(&gateway, &pki, false).await;
        assert_refused_for(&gateway, &reply, "protocol").await;
        let bytes = received.lock().unwrap().clone();
        assert_eq!(bytes.first(), Some(&0x16), "a TLS handshake record first");
        assert!(
            !bytes.windows(4).any(|w| w == b"GET "),
            "no request in plaintext"
        );
        gateway.stop().await;
    }
}

#[tokio::test]
async fn insecure_skip_verify_reaches_an_app_whose_ca_is_unknown_and_check_flags_it() {
    let pki = Pki::new();
    let (_, app_leaf) = app_pki();
    let app = TlsApp::start(&app_leaf, None).await;
    let gateway = gateway(
        &pki,
        format!("https://{}", app.addr),
        serde_json::json!({ "insecureSkipVerify": true }),
        "http",
        &[],
    )
    .await;
    let reply = request(&gateway, &pki, false).await;
    assert_eq!(reply.status, 200);
    let config = gateway.dir.path().join("certgate.json");
    let output = Command::new(CERTGATE)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("upstreamTls.insecureSkipVerify"),
        "{stderr}"
    );
    assert!(
        stdout.contains("upstream-tls=insecure-skip-verify"),
        "{stdout}"
    );
    gateway.stop().await;
}

/// `certgate` run as a process with `SSL_CERT_FILE` naming `ca_file` (and no `SSL_CERT_DIR`),
/// in front of the https app at `app`, with no `caFiles`; returns the child and its addresses.
fn run_with_system_cas(
    dir: &TempDir,
    app: SocketAddr,
    ca_file: &str,
) -> (process::Child, process::serving::Serving) {
    let mut config = ignore_config(
        format!("https://{app}"),
        serde_json::json!({ "serverName": "localhost" }),
        "http",
    );
    config["listen"] = "127.0.0.1:0".into();
    dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let mut child = process::Child::spawn(
        &process::serving::RUN_CONFIG,
        dir.path(),
        &[("SSL_CERT_FILE", ca_file), ("SSL_CERT_DIR", "")],
    );
    let serving = child.wait_serving();
    (child, serving)
}

#[tokio::test]
async fn without_ca_files_the_app_certificate_is_verified_against_the_system_cas() {
    let pki = Pki::new();
    let (app_ca, app_leaf) = app_pki();
    let app = TlsApp::start(&app_leaf, None).await;
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("app-ca.pem", &app_ca.pem);
    dir.write("other-ca.pem", &Ca::root("another CA").pem);
    dir.write("no-certificates.pem", "not a certificate\n");
    let options = ClientOptions::new(&pki, IGNORE_HOST);

    // The system's CAs hold the app's CA: reached, and `check` says what it verifies against.
    let (child, serving) = run_with_system_cas(&dir, app.addr, "app-ca.pem");
    let reply = get(serving.listen(), &options, IGNORE_HOST, "/")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", child.transcript());
    assert_eq!(app.seen()[0].sni.as_deref(), Some("localhost"));
    drop(child);
    let output = Command::new(CERTGATE)
        .args(["check", "--config", "certgate.json"])
        .current_dir(dir.path())
        .env("SSL_CERT_FILE", "app-ca.pem")
        .env("SSL_CERT_DIR", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("upstream-tls=system 1 CA,server-name=localhost"),
        "{stdout}"
    );

    // They do not: certgate's 502, counted as unknown_ca; nothing reaches the app.
    let (child, serving) = run_with_system_cas(&dir, app.addr, "other-ca.pem");
    let reply = get(serving.listen(), &options, IGNORE_HOST, "/")
        .await
        .unwrap();
    assert_certgate_error(&reply, http::StatusCode::BAD_GATEWAY, "unknown_ca");
    let text = scrape(serving.admin()).await;
    assert_eq!(failures(&text, "unknown_ca"), 1.0, "{}", child.transcript());
    assert_eq!(app.seen().len(), 1, "no second connection completed");
    drop(child);

    // No usable system CA: refused before anything binds, saying what to do.
    for ca_file in ["no-certificates.pem", "missing.pem"] {
        let output = Command::new(CERTGATE)
            .args(["check", "--config", "certgate.json"])
            .current_dir(dir.path())
            .env("SSL_CERT_FILE", ca_file)
            .env("SSL_CERT_DIR", "")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert!(
            stderr.contains("no upstreamTls.caFiles")
                && stderr.contains("system's CA certificates cannot be used")
                && stderr.contains("ca-certificates"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_client_certificate_and_reloading_fails_no_request() {
    let pki = Pki::new();
    let (app_ca, app_leaf) = app_pki();
    let certgate_ca = Ca::root("certgate's client CA");
    let first = certgate_ca.issue(LeafSpec::client("certgate before"));
    let second = certgate_ca.issue(LeafSpec::client("certgate after"));
    let bundle = |leaf: &Leaf| format!("{}{}", leaf.pem, leaf.key.serialize_pem());
    let app = TlsApp::start(&app_leaf, Some(&certgate_ca)).await;
    let gateway = gateway(
        &pki,
        format!("https://{}", app.addr),
        serde_json::json!({
            "caFiles": ["app-ca.pem"],
            "certFile": "certgate-bundle.pem",
            "keyFile": "certgate-bundle.pem",
        }),
        "http",
        &[
            ("app-ca.pem", app_ca.pem.clone()),
            ("certgate-bundle.pem", bundle(&first)),
        ],
    )
    .await;
    let options = ClientOptions::new(&pki, IGNORE_HOST);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, sent, failed, options) =
            (stop.clone(), sent.clone(), failed.clone(), options.clone());
        let addr = gateway.addr;
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(addr, &options, IGNORE_HOST, "/").await {
                    Ok(reply) if reply.status == 200 => {}
                    Ok(reply) => failed
                        .lock()
                        .unwrap()
                        .push(format!("status {}", reply.status)),
                    Err(failure) => failed.lock().unwrap().push(failure.message),
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Written beside, then renamed over: the file changes in one step.
    let staged = gateway
        .dir
        .write("certgate-bundle.pem.new", bundle(&second));
    std::fs::rename(&staged, gateway.dir.path().join("certgate-bundle.pem")).unwrap();
    gateway.reloader.reload().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(sent.load(Ordering::Relaxed) > 10);
    assert!(failed.is_empty(), "failed requests: {failed:?}");

    let reply = request(&gateway, &pki, false).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        format!("HTTP/1.1 {}", second.hash_hex()).as_str()
    );
    let hashes: Vec<_> = app
        .seen()
        .into_iter()
        .filter_map(|s| s.client_hash)
        .collect();
    assert!(
        hashes.contains(&first.hash_hex()),
        "the old certificate was used first"
    );
    gateway.stop().await;
}

#[test]
fn upstream_tls_settings_that_cannot_work_are_refused_naming_the_key() {
    let dir = TempDir::new();
    let pki = Pki::new();
    pki.write(&dir);
    dir.write("app-ca.pem", &app_pki().0.pem);
    let https = || "https://127.0.0.1:8443".to_owned();
    let cases = [
        (
            ignore_config(
                "http://127.0.0.1:8080".into(),
                serde_json::json!({ "insecureSkipVerify": true }),
                "http",
            ),
            "not https://",
        ),
        (
            ignore_config(
                https(),
                serde_json::json!({ "caFiles": ["app-ca.pem"], "insecureSkipVerify": true }),
                "http",
            ),
            "sets both upstreamTls.caFiles and upstreamTls.insecureSkipVerify",
        ),
        (
            ignore_config(
                https(),
                serde_json::json!({ "caFiles": ["app-ca.pem"], "serverName": "not a name" }),
                "http",
            ),
            "upstreamTls.serverName \"not a name\"",
        ),
        (
            ignore_config(
                https(),
                serde_json::json!({ "caFiles": ["app-ca.pem"], "certFile": "server.pem" }),
                "http",
            ),
            "upstreamTls needs certFile and keyFile",
        ),
        (
            ignore_config(
                https(),
                serde_json::json!({ "caFiles": ["missing-ca.pem"] }),
                "http",
            ),
            "missing-ca.pem",
        ),
        (
            ignore_config(
                https(),
                serde_json::json!({ "caFiles": ["app-ca.pem"], "insecureSkipVerfy": true }),
                "http",
            ),
            "unknown field `insecureSkipVerfy`",
        ),
    ];
    for (config, expected) in cases {
        let path = dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
        let error = common::load_config(&path).unwrap_err();
        let message = certgate::error_chain(&error);
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn the_sidecar_flags_make_an_https_app_with_a_client_certificate() {
    let pki = Pki::new();
    let (app_ca, _) = app_pki();
    let certgate_leaf = Ca::root("certgate's client CA").issue(LeafSpec::client("certgate"));
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("app-ca.pem", &app_ca.pem);
    dir.write("certgate.pem", &certgate_leaf.pem);
    dir.write("certgate.key", certgate_leaf.key.serialize_pem());
    let output = Command::new(CERTGATE)
        .current_dir(dir.path())
        .args(["check", "--upstream", "https://127.0.0.1:8443"])
        .args(common::named::SERVING_FLAGS)
        .args([
            "--upstream-server-name",
            "orders.internal",
            "--upstream-cert",
            "certgate.pem",
            "--upstream-key",
            "certgate.key",
        ])
        .env("CERTGATE_UPSTREAM_CA", "app-ca.pem")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(
            "upstream=https://127.0.0.1:8443 upstream-tls=1 CA,server-name=orders.internal,client-cert"
        ),
        "{stdout}"
    );
}

#[test]
fn the_readme_example_app_loads() {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/upstream-tls.md"));
    let section = readme
        .split("# TLS to the app\n")
        .nth(1)
        .expect("docs/upstream-tls.md has a \"TLS to the app\" section");
    let json = section
        .split("```json\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .expect("the section shows an app as JSON");
    let app: serde_json::Value = serde_json::from_str(json).unwrap();
    let pki = Pki::new();
    let (app_ca, _) = app_pki();
    let certgate_leaf = Ca::root("certgate's client CA").issue(LeafSpec::client("certgate"));
    let dir = TempDir::new();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    dir.write("certs/server.pem", &pki.server.pem);
    dir.write("certs/server.key", pki.server.key.serialize_pem());
    dir.write("certs/ca.pem", &pki.client_ca.pem);
    dir.write("certs/app-ca.pem", &app_ca.pem);
    dir.write("certs/certgate-client.pem", &certgate_leaf.pem);
    dir.write(
        "certs/certgate-client.key",
        certgate_leaf.key.serialize_pem(),
    );
    let config = serde_json::json!({ "apps": [app] });
    let path = dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let config =
        common::load_config(&path).unwrap_or_else(|e| panic!("{}", certgate::error_chain(&e)));
    assert_eq!(
        config.apps[0].upstream.to_string(),
        "https://orders.internal:8443"
    );

    // `explain` says how a request it admits reaches the app.
    dir.write("alice.pem", &pki.client("alice").pem);
    let explain = |format: &str| {
        let output = Command::new(CERTGATE)
            .current_dir(dir.path())
            .args(["explain", "--config", "certgate.json", "--app", "orders"])
            .args(["--format", format, "alice.pem"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&explain("json")).unwrap();
    assert_eq!(
        json["upstream"],
        serde_json::json!({
            "address": "https://orders.internal:8443",
            "transport": "http1",
            "tls": {
                "verify": "ca_files",
                "cas": 1,
                "server_name": "orders.internal",
                "client_certificate": {
                    "subject": "CN=certgate",
                    "not_after": json["upstream"]["tls"]["client_certificate"]["not_after"],
                },
            },
            "dns": {
                "name": "orders.internal",
                "refresh_ms": 5000,
                "min_refresh_ms": 1000,
                "nameservers": "system (/etc/resolv.conf)",
            },
        })
    );
    let text = explain("text");
    assert!(
        text.contains(
            "upstream\n  address:    https://orders.internal:8443 (HTTP/1.1)\n  verified:   against 1 CA(s) of upstreamTls.caFiles\n  name:       orders.internal\n  client certificate: CN=certgate, valid to "
        ),
        "{text}"
    );
}
