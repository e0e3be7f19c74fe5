//! `ingress.ipSecurityRestrictions` (docs/config.md "IP restrictions"), judged on the client
//! address right after the ClientHello picks the app. On loopback, trusted PROXY v1 and v2
//! headers present other client addresses:
//! - the exported block of `config/containerapps-ingress.json` served as it is: its Allow
//!   rules admit this machine and the office range, and refuse any other address;
//! - Allow rules, IPv4 and IPv6 (v1 and v2 headers), an IPv4-mapped IPv6 address matching an
//!   IPv4 rule: matching clients are served, others get the TLS alert `access_denied`,
//!   counted as `ip_restricted`;
//! - Deny rules: a matching client is refused, any other served;
//! - `rejectWith: "http"`: a refused address completes a handshake that asks for no
//!   certificate and gets 403 (text or HTML), and nothing reaches the app, while an admitted
//!   address is asked for its certificate as usual;
//! - after a reload that tightens the rules, the first request of a connection opened before
//!   it gets 403 and the close, and a new connection from that address is refused;
//! - the real binary on `[::1]`: a Deny rule for `::1` refuses a real IPv6 loopback client
//!   with `access_denied`, and its warn line names the rule and the client address.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::polling::{poll, until};
use common::proxied::tcp_from;
use common::recording::recording_upstream;
use common::*;
use rustls::AlertDescription;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

const HOST: &str = "api.example.test";

/// A gateway whose listener trusts PROXY headers from 127.0.0.1, with `apps`.
async fn gateway(pki: &Pki, apps: Value) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    Gateway::start(dir, config(apps)).await
}

fn config(apps: Value) -> Value {
    json!({
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "proxyProtocol": { "trustedSources": ["127.0.0.1/32"] },
        "timeouts": { "drainDelayMs": 0 },
        "apps": apps,
    })
}

/// A `require` app at `HOST` in front of `upstream` with `rules` and `rejectWith`.
fn restricted(upstream: SocketAddr, rules: Value, reject_with: &str) -> Value {
    let mut app = app("api", &[HOST], upstream, "require");
    app["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    app["rejectWith"] = reject_with.into();
    app["ingress"]["ipSecurityRestrictions"] = rules;
    app
}

fn rule(name: &str, range: &str, action: &str) -> Value {
    json!({ "name": name, "description": "", "ipAddressRange": range, "action": action })
}

/// A PROXY v1 header naming `client` (IPv4 or IPv6).
fn v1(client: &str) -> Vec<u8> {
    let client: std::net::IpAddr = client.parse().unwrap();
    match client {
        std::net::IpAddr::V4(_) => format!("PROXY TCP4 {client} 192.0.2.1 40000 443\r\n"),
        std::net::IpAddr::V6(_) => format!("PROXY TCP6 {client} 2001:db8::1 40000 443\r\n"),
    }
    .into_bytes()
}

/// A PROXY v2 header naming `client` (`[addr]:port` or `addr:port`).
fn v2(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    let balancer: SocketAddr = if client.is_ipv4() {
        "192.0.2.1:443".parse().unwrap()
    } else {
        "[2001:db8::1]:443".parse().unwrap()
    };
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, balancer),
    )
    .build()
    .unwrap()
}

fn options(pki: &Pki, client: &Leaf) -> ClientOptions {
    ClientOptions::new(pki, HOST).with_identity(client.identity())
}

/// Writes `header`, makes an mTLS handshake with `options` and one GET.
async fn get_after(
    gateway: &Gateway,
    header: &[u8],
    options: &ClientOptions,
) -> Result<Reply, Failure> {
    let tcp = tcp_from(None, gateway.addr).await.unwrap();
    let mut connection = Connection::open_on(tcp, header, options).await?;
    let request = connection.get(HOST, "/");
    connection.send(request).await
}

fn assert_access_denied(result: Result<Reply, Failure>, case: &str) {
    match result {
        Ok(reply) => panic!("{case}: served with {}", reply.status),
        Err(failure) => assert_eq!(
            failure.alert,
            Some(AlertDescription::AccessDenied),
            "{case}: {}",
            failure.message
        ),
    }
}

/// Waits (bounded) until `app`'s `ip_restricted` refusals reach `count`: the refusal is
/// counted by the connection's task, a moment after the client sees it.
async fn expect_refusals(gateway: &Gateway, app: &str, count: f64) {
    let series =
        format!(r#"certgate_handshake_failures_total{{app="{app}",reason="ip_restricted"}}"#);
    let admin = gateway.admin.unwrap();
    let counted = poll(
        200,
        Duration::from_millis(10),
        async || metric(&scrape(admin).await, &series),
        |&counted| counted >= count,
    )
    .await;
    assert_eq!(counted, count, "{series}");
}

#[tokio::test]
async fn the_exported_block_of_the_example_config_is_served() {
    let example: Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/containerapps-ingress.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    // The example's app as exported, with this test's certificates, host and upstream port.
    let mut app = example["apps"][0].clone();
    app["hosts"] = json!([HOST]);
    app["serverCertificate"] = json!({ "certFile": "server.pem", "keyFile": "server.key" });
    app["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    app["ingress"]["targetPort"] = upstream.port().into();
    // Its custom domain's certificate entry, named by the exported resource id.
    let mut config = config(json!([app]));
    config["certificates"] = example["certificates"].clone();
    config["certificates"]["dev-2026"] =
        json!({ "certFile": "server.pem", "keyFile": "server.key" });
    let dir = TempDir::new();
    pki.write(&dir);
    let gateway = Gateway::start(dir, config).await;
    let client = pki.client("exported block client");
    let options = options(&pki, &client);
    for header in [v1("127.0.0.1"), v1("203.0.113.77"), v2("[::1]:40000")] {
        let reply = get_after(&gateway, &header, &options).await.unwrap();
        assert_eq!(reply.status, 200);
        assert!(reply.xfcc().is_some(), "the certificate is forwarded");
    }
    assert_access_denied(
        get_after(&gateway, &v1("198.51.100.7"), &options).await,
        "an address no Allow rule matches",
    );
    expect_refusals(&gateway, "api", 1.0).await;
    gateway.stop().await;
}

#[tokio::test]
async fn allow_rules_admit_only_matching_ipv4_and_ipv6_clients() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let rules = json!([
        rule("office", "203.0.113.0/24", "Allow"),
        rule("lab", "2001:db8:1::/48", "allow"),
    ]);
    let gateway = gateway(&pki, json!([restricted(upstream, rules, "tls")])).await;
    let client = pki.client("allow client");
    let options = options(&pki, &client);
    for (header, forwarded) in [
        (v1("203.0.113.7"), "203.0.113.7"),
        (v2("203.0.113.8:1"), "203.0.113.8"),
        (v1("2001:db8:1::7"), "2001:db8:1::7"),
        (v2("[2001:db8:1:ffff::1]:1"), "2001:db8:1:ffff::1"),
        // An IPv4 client seen over IPv6 is matched by the IPv4 rule (and forwarded as the
        // balancer wrote it).
        (v2("[::ffff:203.0.113.9]:1"), "::ffff:203.0.113.9"),
    ] {
        let reply = get_after(&gateway, &header, &options).await.unwrap();
        assert_eq!(reply.status, 200, "{forwarded}");
        assert_eq!(reply.upstream_header("x-forwarded-for"), [forwarded]);
    }
    for (header, case) in [
        (v1("203.0.114.7"), "IPv4 outside the range"),
        (v2("[2001:db8:2::1]:1"), "IPv6 outside the range"),
        (v2("127.0.0.1:1"), "loopback"),
    ] {
        assert_access_denied(get_after(&gateway, &header, &options).await, case);
    }
    expect_refusals(&gateway, "api", 3.0).await;
    gateway.stop().await;
}

#[tokio::test]
async fn deny_rules_refuse_only_matching_clients() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let rules = json!([
        rule("scanner", "198.51.100.0/24", "Deny"),
        rule("v6-loopback", "::1", "DENY"),
    ]);
    let gateway = gateway(&pki, json!([restricted(upstream, rules, "tls")])).await;
    let client = pki.client("deny client");
    let options = options(&pki, &client);
    for header in [v1("127.0.0.1"), v1("198.51.101.1"), v2("[::2]:1")] {
        let reply = get_after(&gateway, &header, &options).await.unwrap();
        assert_eq!(reply.status, 200);
    }
    assert_access_denied(
        get_after(&gateway, &v1("198.51.100.200"), &options).await,
        "IPv4 in the Deny range",
    );
    assert_access_denied(
        get_after(&gateway, &v2("[::1]:1"), &options).await,
        "IPv6 loopback denied",
    );
    assert_access_denied(
        get_after(&gateway, &v2("[::ffff:198.51.100.3]:1"), &options).await,
        "IPv4-mapped address in the Deny range",
    );
    expect_refusals(&gateway, "api", 3.0).await;
    gateway.stop().await;
}

/// A client certificate resolver that presents nothing and records whether the server asked.
#[derive(Debug, Default)]
struct AskedFor(AtomicBool);

impl rustls::client::ResolvesClientCert for AskedFor {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, Ordering::SeqCst);
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Writes `header`, then a handshake recording whether a certificate was asked for, then one
/// GET with `accept`.
async fn get_recording_request(
    gateway: &Gateway,
    pki: &Pki,
    header: &[u8],
    accept: &str,
) -> (Reply, bool) {
    let asked = Arc::new(AskedFor::default());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.server_ca.der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_cert_resolver(asked.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut tcp = tcp_from(None, gateway.addr).await.unwrap();
    tcp.write_all(header).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(HOST.try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut connection = Connection::over(tls, &ClientOptions::new(pki, HOST))
        .await
        .unwrap();
    let mut request = connection.get(HOST, "/");
    request
        .headers_mut()
        .insert(http::header::ACCEPT, accept.parse().unwrap());
    let reply = connection.send(request).await.unwrap();
    (reply, asked.0.load(Ordering::SeqCst))
}

#[tokio::test]
async fn reject_with_http_answers_403_without_asking_for_a_certificate() {
    let pki = Pki::new();
    let (upstream, recording) = recording_upstream().await;
    let rules = json!([rule("office", "203.0.113.0/24", "Allow")]);
    let gateway = gateway(&pki, json!([restricted(upstream, rules, "http")])).await;
    let (reply, asked) = get_recording_request(&gateway, &pki, &v1("198.51.100.7"), "*/*").await;
    assert_eq!(reply.status, 403);
    assert!(!asked, "a refused address was asked for a certificate");
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.starts_with("403 "), "{text}");
    assert!(text.contains("ip_restricted"), "{text}");
    assert!(text.contains("198.51.100.7"), "{text}");
    assert!(text.contains("office"), "{text}");
    let (html, _) =
        get_recording_request(&gateway, &pki, &v2("[2001:db8::5]:1"), "text/html").await;
    assert_eq!(html.status, 403);
    assert_eq!(
        html.headers[http::header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert!(String::from_utf8_lossy(&html.body).contains("<code>ip_restricted</code>"));
    assert_eq!(recording.connections(), 0, "nothing reached the app");
    // An admitted address is asked for its certificate; without one, the `require` app's
    // readable refusal answers (496).
    let (reply, asked) = get_recording_request(&gateway, &pki, &v1("203.0.113.7"), "*/*").await;
    assert!(asked, "an admitted address was not asked for a certificate");
    assert_eq!(reply.status.as_u16(), 496);
    expect_refusals(&gateway, "api", 2.0).await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_reload_that_restricts_an_address_refuses_the_next_request_of_its_open_connection() {
    let pki = Pki::new();
    let (upstream, recording) = recording_upstream().await;
    let open = restricted(upstream, Value::Null, "tls");
    let gateway = gateway(&pki, json!([open])).await;
    let client = pki.client("reloaded client");
    let options = options(&pki, &client);
    let tcp = tcp_from(None, gateway.addr).await.unwrap();
    let mut connection = Connection::open_on(tcp, &v1("198.51.100.7"), &options)
        .await
        .unwrap();
    // The client's handshake ends before the server's: wait until certgate has admitted the
    // connection under the first config, or the reload would judge its handshake instead.
    let admitted = poll(
        200,
        Duration::from_millis(10),
        async || {
            metric(
                &scrape(gateway.admin.unwrap()).await,
                r#"certgate_connections_total{app="api"}"#,
            )
        },
        |&admitted| admitted >= 1.0,
    )
    .await;
    assert_eq!(
        admitted, 1.0,
        "the open connection is admitted before the reload"
    );
    let rules = json!([rule("blocked", "198.51.100.0/24", "Deny")]);
    gateway.dir.write(
        "certgate.json",
        serde_json::to_vec_pretty(&config(json!([restricted(upstream, rules, "tls")]))).unwrap(),
    );
    gateway.reloader.reload().await.unwrap();
    // The connection's handshake came before the reload. Its first request, when it is read
    // before the reload's close reaches the idle connection, is judged by the new rules: 403
    // and the close. When the close comes first (a busy machine), the request is never read.
    // Either way nothing reaches the app.
    let request = connection.get(HOST, "/");
    let refused_on_open = match connection.send(request).await {
        Ok(reply) => {
            assert_eq!(reply.status, 403);
            assert_eq!(
                &reply.body[..],
                b"forbidden: client address not allowed\n",
                "{:?}",
                reply.body
            );
            assert!(
                until(200, Duration::from_millis(25), || !connection.is_open()).await,
                "the connection stays open"
            );
            expect_refusals(&gateway, "api", 1.0).await;
            1.0
        }
        Err(failure) => {
            // The client's connection task ends a moment after it hands the error over.
            assert!(
                until(200, Duration::from_millis(25), || !connection.is_open()).await,
                "the connection stays open after {failure:?}"
            );
            0.0
        }
    };
    assert_eq!(recording.connections(), 0, "nothing reached the app");
    assert_access_denied(
        get_after(&gateway, &v1("198.51.100.7"), &options).await,
        "a new connection after the reload",
    );
    expect_refusals(&gateway, "api", refused_on_open + 1.0).await;
    gateway.stop().await;
}

#[test]
fn a_real_ipv6_loopback_client_is_refused_and_the_warn_line_names_the_rule() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upstream = runtime.block_on(echo_upstream());
    let rules = json!([rule("v6-loopback", "::1/128", "Deny")]);
    let config = json!({
        "listen": "[::1]:0",
        "apps": [restricted(upstream, rules, "tls")],
    });
    let (mut child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    let client = pki.client("ipv6 client");
    let result = runtime.block_on(get(serving.listen(), &options(&pki, &client), HOST, "/"));
    assert_access_denied(result, "a real ::1 client");
    let lines = child.wait_for_line(process::Stream::Stderr, |line| {
        line.contains("ip_restricted")
    });
    let line: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["message"], "handshake refused", "{line}");
    assert_eq!(line["failure"], "ip_restricted", "{line}");
    assert_eq!(line["rule"], "v6-loopback", "{line}");
    assert_eq!(line["app"], "api", "{line}");
    assert_eq!(line["sni"], HOST, "{line}");
    let addr = line["client.addr"].as_str().unwrap();
    assert!(addr.starts_with("[::1]:"), "{line}");
    assert!(
        line["detail"].as_str().unwrap().contains("v6-loopback"),
        "{line}"
    );
}
