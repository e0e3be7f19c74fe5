//! The client-certificate mode matrix of docs/modes.md: {require, accept, ignore} × {no cert,
//! CA-issued, other CA, expired, not yet valid, serverAuth-only EKU, self-signed pinned,
//! self-signed not pinned, revoked by CRL, CRL past nextUpdate, allow-list hit, allow-list
//! miss} × {TLS 1.2, TLS 1.3} × {HTTP/1.1, HTTP/2}.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use common::*;
use rcgen::ExtendedKeyUsagePurpose;
use rustls::AlertDescription;
use time::{Duration, OffsetDateTime};

/// The certificates of the matrix, and which app (by host prefix) each is tried against.
struct Case {
    name: &'static str,
    app: &'static str,
    identity: Option<Identity>,
    /// Passes every check of "What each mode does" when presented to a `require`/`accept` app.
    passes: bool,
    /// The alert a refused client receives.
    alert: Option<AlertDescription>,
}

struct Matrix {
    gateway: Gateway,
    pki: Pki,
    cases: Vec<Case>,
}

async fn matrix(mode: &str) -> Matrix {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let now = OffsetDateTime::now_utc();
    let valid = pki.client("valid");
    let revoked = pki.client("revoked");
    let other_ca = Ca::root("someone else's CA").issue(LeafSpec::client("other"));
    let expired = pki.client_ca.issue(LeafSpec {
        not_before: now - Duration::days(30),
        not_after: now - Duration::days(1),
        ..LeafSpec::client("expired")
    });
    let not_yet_valid = pki.client_ca.issue(LeafSpec {
        not_before: now + Duration::days(1),
        not_after: now + Duration::days(30),
        ..LeafSpec::client("not yet valid")
    });
    let server_only = pki.client_ca.issue(LeafSpec {
        ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
        ..LeafSpec::client("server auth only")
    });
    let pinned = Leaf::self_signed(LeafSpec::client("pinned"));
    let unpinned = Leaf::self_signed(LeafSpec::client("not pinned"));
    let allowed = pki.client_ca.issue(LeafSpec {
        uris: vec!["spiffe://example.test/allowed".into()],
        dns: vec!["spiffe.example.test".into()],
        ..LeafSpec::client("allowed")
    });
    // Types never cross: the allowed URI as a DNS SAN does not match.
    let not_allowed = pki.client_ca.issue(LeafSpec {
        uris: vec!["spiffe://example.test/other".into()],
        dns: vec!["allowed.example.test".into()],
        ..LeafSpec::client("not allowed")
    });
    dir.write(
        "crl.pem",
        pki.client_ca.crl(&[&revoked], now + Duration::days(1)),
    );
    dir.write(
        "stale-crl.pem",
        pki.client_ca.crl(&[], now - Duration::minutes(10)),
    );

    let upstream = echo_upstream().await;
    let mut apps = Vec::new();
    for kind in ["ca", "pin", "stale", "allow"] {
        let host = format!("{mode}-{kind}.example.test");
        let mut app = app(&format!("{mode}-{kind}"), &[host.as_str()], upstream, mode);
        if mode != "ignore" {
            app["clientAuth"] = match kind {
                "ca" => {
                    serde_json::json!({ "trustedCaFiles": ["client-ca.pem"], "crlFiles": ["crl.pem"] })
                }
                "pin" => serde_json::json!({ "allowedHashes": [pinned.hash_hex()] }),
                "stale" => {
                    serde_json::json!({ "trustedCaFiles": ["client-ca.pem"], "crlFiles": ["stale-crl.pem"] })
                }
                _ => serde_json::json!({
                    "trustedCaFiles": ["client-ca.pem"],
                    "allowedUriSans": ["spiffe://example.test/allowed"],
                    "allowedDnsSans": ["other.example.test"],
                }),
            };
        }
        apps.push(app);
    }
    let gateway = Gateway::start(dir, serde_json::json!({ "apps": apps })).await;

    let case = |name, app, leaf: Option<&Leaf>, passes, alert| Case {
        name,
        app,
        identity: leaf.map(Leaf::identity),
        passes,
        alert,
    };
    let cases = vec![
        case(
            "no certificate",
            "ca",
            None,
            mode != "require",
            Some(AlertDescription::CertificateRequired),
        ),
        case("CA-issued", "ca", Some(&valid), true, None),
        case(
            "other CA",
            "ca",
            Some(&other_ca),
            false,
            Some(AlertDescription::UnknownCA),
        ),
        case(
            "expired",
            "ca",
            Some(&expired),
            false,
            Some(AlertDescription::CertificateExpired),
        ),
        case(
            "not yet valid",
            "ca",
            Some(&not_yet_valid),
            false,
            Some(AlertDescription::CertificateExpired),
        ),
        case(
            "serverAuth-only EKU",
            "ca",
            Some(&server_only),
            false,
            Some(AlertDescription::UnsupportedCertificate),
        ),
        case("self-signed pinned", "pin", Some(&pinned), true, None),
        case(
            "self-signed not pinned",
            "pin",
            Some(&unpinned),
            false,
            Some(AlertDescription::UnknownCA),
        ),
        case(
            "revoked",
            "ca",
            Some(&revoked),
            false,
            Some(AlertDescription::CertificateRevoked),
        ),
        case("CRL past nextUpdate", "stale", Some(&valid), false, None),
        case("allow-list hit", "allow", Some(&allowed), true, None),
        case(
            "allow-list miss",
            "allow",
            Some(&not_allowed),
            false,
            Some(AlertDescription::AccessDenied),
        ),
    ];
    Matrix {
        gateway,
        pki,
        cases,
    }
}

/// Runs every case over TLS 1.2/1.3 and HTTP/1.1/2; returns a line per unexpected outcome.
async fn run(mode: &str) -> Vec<String> {
    let Matrix {
        gateway,
        pki,
        cases,
    } = matrix(mode).await;
    let mut wrong = Vec::new();
    for case in &cases {
        for tls12 in [false, true] {
            for http2 in [false, true] {
                let host = format!("{mode}-{}.example.test", case.app);
                let mut options = ClientOptions::new(&pki, &host).tls12(tls12).http2(http2);
                options.identity = case.identity.clone();
                let label = format!(
                    "{mode} / {} / {} / {}",
                    case.name,
                    if tls12 { "TLS 1.2" } else { "TLS 1.3" },
                    if http2 { "HTTP/2" } else { "HTTP/1.1" }
                );
                let result = get(gateway.addr, &options, &host, "/matrix").await;
                // ignore never asks, so the client never sends its certificate.
                let presented = case.identity.is_some() && mode != "ignore";
                let served = mode == "ignore" || case.passes;
                match (&result, served) {
                    (Ok(reply), true) => {
                        let xfcc = reply.xfcc();
                        if reply.status != 200 {
                            wrong.push(format!("{label}: status {}", reply.status));
                        } else if presented != xfcc.is_some() {
                            wrong.push(format!("{label}: XFCC present = {}", xfcc.is_some()));
                        } else if let (Some(xfcc), Some(id)) = (&xfcc, &case.identity) {
                            let hash = format!(
                                "Hash={}",
                                hex(&<sha2::Sha256 as sha2::Digest>::digest(&id.chain[0]))
                            );
                            if !xfcc.starts_with(&hash) {
                                wrong.push(format!(
                                    "{label}: XFCC {xfcc} does not start with {hash}"
                                ));
                            }
                        }
                    }
                    (Ok(reply), false) => {
                        wrong.push(format!("{label}: served with {}", reply.status));
                    }
                    (Err(failure), true) => {
                        wrong.push(format!("{label}: refused: {}", failure.message));
                    }
                    (Err(failure), false) => {
                        let expected = case.alert;
                        if expected.is_some() && failure.alert != expected {
                            wrong.push(format!(
                                "{label}: alert {:?}, expected {expected:?} ({})",
                                failure.alert, failure.message
                            ));
                        }
                    }
                }
            }
        }
    }
    gateway.stop().await;
    wrong
}

#[tokio::test]
async fn require_mode_matrix_matches_spec() {
    let wrong = run("require").await;
    assert!(
        wrong.is_empty(),
        "unexpected outcomes:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn accept_mode_matrix_matches_spec() {
    let wrong = run("accept").await;
    assert!(
        wrong.is_empty(),
        "unexpected outcomes:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn ignore_mode_matrix_matches_spec() {
    let wrong = run("ignore").await;
    assert!(
        wrong.is_empty(),
        "unexpected outcomes:\n{}",
        wrong.join("\n")
    );
}
