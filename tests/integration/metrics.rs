//! Admin endpoints and metrics (docs/operations.md "Metrics"): every series at zero before traffic,
//! refused handshakes counted by reason (scraped before and after a matrix of refusals),
//! requests by client certificate and code, 421s, certificate expiry gauges, /readyz.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use common::polling::scrape_until;
use common::*;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn failures(text: &str, app: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!(r#"certgate_handshake_failures_total{{app="{app}",reason="{reason}"}}"#),
    )
}

async fn metrics_gateway(pki: &Pki) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = echo_upstream().await;
    let [require, ignore] = require_and_ignore(upstream);
    Gateway::start(
        dir,
        serde_json::json!({ "admin": "127.0.0.1:0", "apps": [require, ignore] }),
    )
    .await
}

#[tokio::test]
async fn every_series_exists_at_zero_before_any_traffic() {
    let pki = Pki::new();
    let gateway = metrics_gateway(&pki).await;
    let text = scrape(gateway.admin.unwrap()).await;
    for app in ["require", "ignore"] {
        for series in [
            format!(r#"certgate_connections_total{{app="{app}"}} 0"#),
            format!(r#"certgate_connections_active{{app="{app}"}} 0"#),
            format!(r#"certgate_misdirected_requests_total{{app="{app}"}} 0"#),
            format!(r#"certgate_requests_total{{app="{app}",client_cert="none",code="200"}} 0"#),
            format!(r#"certgate_request_duration_seconds_count{{app="{app}"}} 0"#),
        ] {
            assert!(text.contains(&series), "missing {series} in:\n{text}");
        }
        for reason in certgate::FailureReason::ALL {
            let series = format!(
                r#"certgate_handshake_failures_total{{app="{app}",reason="{}"}} 0"#,
                reason.as_str()
            );
            assert!(text.contains(&series), "missing {series}");
        }
    }
    for series in [
        r#"certgate_reloads_total{result="success"} 0"#,
        r#"certgate_reloads_total{result="error"} 0"#,
        "certgate_log_lines_dropped_total 0",
    ] {
        assert!(text.contains(series), "missing {series}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn certificate_expiry_gauges_show_server_and_client_ca_not_after() {
    let pki = Pki::new();
    let gateway = metrics_gateway(&pki).await;
    let text = scrape(gateway.admin.unwrap()).await;
    let server = metric(
        &text,
        r#"certgate_certificate_not_after_seconds{app="require",kind="server"}"#,
    );
    let ca = metric(
        &text,
        r#"certgate_certificate_not_after_seconds{app="require",kind="client_ca"}"#,
    );
    let now = OffsetDateTime::now_utc().unix_timestamp() as f64;
    // The harness issues leaves for 30 days and CAs for a year.
    assert!(
        (server - now - 30.0 * 86400.0).abs() < 2.0 * 86400.0,
        "server {server}"
    );
    assert!(
        (ca - now - 365.0 * 86400.0).abs() < 2.0 * 86400.0,
        "ca {ca}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn refused_handshakes_are_counted_by_reason() {
    let pki = Pki::new();
    let gateway = metrics_gateway(&pki).await;
    let admin = gateway.admin.unwrap();
    let before = scrape(admin).await;

    let require = ClientOptions::new(&pki, "require.example.test");
    let now = OffsetDateTime::now_utc();
    let expired = pki.client_ca.issue(LeafSpec {
        not_before: now - Duration::days(30),
        not_after: now - Duration::days(1),
        ..LeafSpec::client("expired")
    });
    let stranger = Ca::root("stranger CA").issue(LeafSpec::client("stranger"));
    assert!(
        get(gateway.addr, &require, "require.example.test", "/")
            .await
            .is_err()
    );
    for leaf in [&expired, &stranger] {
        let options = require.clone().with_identity(leaf.identity());
        assert!(
            get(gateway.addr, &options, "require.example.test", "/")
                .await
                .is_err()
        );
    }
    let unknown = ClientOptions::new(&pki, "nobody.example.test");
    assert!(
        get(gateway.addr, &unknown, "nobody.example.test", "/")
            .await
            .is_err()
    );
    // Not TLS at all: the ClientHello cannot be read.
    let mut tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink).await;

    // Each refusal is counted when the server closes the connection, which can be just
    // after the client saw the alert.
    let expected = [
        ("require", "no_certificate"),
        ("require", "expired"),
        ("require", "unknown_issuer"),
        ("", "unknown_sni"),
        ("", "protocol"),
    ];
    let delta = |after: &str, (app, reason): (&str, &str)| {
        failures(after, app, reason) - failures(&before, app, reason)
    };
    let after = scrape_until(admin, 101, std::time::Duration::from_millis(20), |after| {
        expected.iter().all(|&e| delta(after, e) >= 1.0)
    })
    .await;
    for e in expected {
        assert_eq!(delta(&after, e), 1.0, "{e:?}");
    }
    assert_eq!(failures(&after, "require", "revoked"), 0.0);
    gateway.stop().await;
}

#[tokio::test]
async fn requests_and_misdirected_requests_are_counted() {
    let pki = Pki::new();
    let gateway = metrics_gateway(&pki).await;
    let admin = gateway.admin.unwrap();
    let options = ClientOptions::new(&pki, "require.example.test")
        .with_identity(pki.client("client").identity());
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    let request = conn.get("require.example.test", "/");
    assert_eq!(conn.send(request).await.unwrap().status, 200);
    let ignore = ClientOptions::new(&pki, "ignore.example.test");
    let mut conn = Connection::open(gateway.addr, &ignore).await.unwrap();
    let request = conn.get("require.example.test", "/");
    assert_eq!(conn.send(request).await.unwrap().status, 421);

    let text = scrape(admin).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_requests_total{app="require",client_cert="verified",code="200"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"certgate_requests_total{app="ignore",client_cert="none",code="421"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"certgate_misdirected_requests_total{app="ignore"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&text, r#"certgate_connections_total{app="require"}"#),
        1.0
    );
    for app in ["require", "ignore"] {
        assert_eq!(
            metric(
                &text,
                &format!(r#"certgate_request_duration_seconds_count{{app="{app}"}}"#)
            ),
            1.0,
            "{app}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_while_serving() {
    let pki = Pki::new();
    let gateway = metrics_gateway(&pki).await;
    let admin = gateway.admin.unwrap();
    for path in ["/healthz", "/readyz"] {
        let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
    }
    gateway.stop().await;
}
