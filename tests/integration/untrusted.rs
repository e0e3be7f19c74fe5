//! docs/modes.md "What an untrusted certificate gets": a certificate only `allowUntrusted` admits is forwarded, but its
//! names vouch for nothing, since anyone can make one. Over HTTP/1.1 and HTTP/2.
//!
//! Cases:
//! - Authorization: entries by URI SAN, DNS SAN, subject and `allowAnyVerified` refuse a
//!   self-signed certificate carrying the allowed names and admit a CA-issued one with the same
//!   names; an `allowedHashes` pin admits the self-signed one; a path no rule covers serves
//!   both.
//! - Connection allow-lists (`clientAuth.allowedUriSans`): a self-signed certificate with the
//!   allowed URI is refused at the handshake as `not_allowed`; a CA-issued one and a pinned
//!   self-signed one with the same URI are served.
//! - Verdict headers, read on the wire by a raw-socket app: `X-Client-Verify` is `SUCCESS` for
//!   a CA-issued or pinned certificate and OpenSSL's reason after `FAILED:` for the others (a
//!   self-signed leaf, a leaf of an unknown CA alone, with its self-signed root, with only its
//!   intermediate); `aws-alb` sends its verify-mode headers for the first and only its
//!   passthrough header (the whole chain) for the others.
//! - Rate limit: two self-signed certificates from one address draw from that address's
//!   bucket; a CA-issued certificate keeps a bucket of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use common::raw::send_target;
use common::recording::{Recording, raw_upstream};
use common::revocation_app::{HOST, assert_refused, config, served};
use common::*;
use serde_json::json;

const ALICE_URI: &str = "spiffe://corp/ops/alice";
const ALICE_DNS: &str = "alice.corp.test";

/// A client certificate named alice in every way: CN, DNS SAN and URI SAN.
fn alice() -> LeafSpec {
    LeafSpec {
        uris: vec![ALICE_URI.to_owned()],
        dns: vec![ALICE_DNS.to_owned()],
        ..LeafSpec::client("alice")
    }
}

/// The `require` app at `HOST` trusting the test client CA with `allowUntrusted`, edited by
/// `edit`, in front of `upstream`.
async fn untrusted_gateway(
    pki: &Pki,
    upstream: std::net::SocketAddr,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    let mut config = config(upstream, json!({}));
    let app = &mut config["apps"][0];
    app["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"], "allowUntrusted": true });
    edit(app);
    Gateway::start(dir, config).await
}

fn options(pki: &Pki, leaf: &Leaf, http2: bool) -> ClientOptions {
    ClientOptions::new(pki, HOST)
        .http2(http2)
        .with_identity(leaf.identity())
}

#[tokio::test]
async fn authorization_by_name_refuses_a_self_signed_certificate_and_admits_a_ca_issued_one() {
    let pki = Pki::new();
    let issued = pki.client_ca.issue(alice());
    let self_signed = Leaf::self_signed(alice());
    let pin = self_signed.hash_hex();
    let gateway = untrusted_gateway(&pki, echo_upstream().await, |app| {
        app["authorization"] = json!([
            { "pathPrefix": "/uri", "allowedUriSans": [ALICE_URI] },
            { "pathPrefix": "/dns", "allowedDnsSans": [ALICE_DNS] },
            { "pathPrefix": "/subject", "allowedSubjects": ["CN=alice"] },
            { "pathPrefix": "/any", "allowAnyVerified": true },
            { "pathPrefix": "/pinned", "allowedHashes": [pin] },
        ]);
    })
    .await;
    for http2 in [false, true] {
        for (path, issued_status, self_signed_status) in [
            ("/uri", 200, 403),
            ("/dns", 200, 403),
            ("/subject", 200, 403),
            ("/any", 200, 403),
            ("/pinned", 403, 200),
            ("/open", 200, 200),
        ] {
            for (who, leaf, status) in [
                ("ca-issued", &issued, issued_status),
                ("self-signed", &self_signed, self_signed_status),
            ] {
                let label = format!("h2={http2} {who} {path}");
                let reply =
                    send_target(gateway.addr, &options(&pki, leaf, http2), HOST, "GET", path).await;
                assert_eq!(reply.status, status, "{label}: {}", reply.text());
            }
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn connection_allow_lists_refuse_a_self_signed_certificate_carrying_an_allowed_name() {
    let pki = Pki::new();
    let issued = pki.client_ca.issue(alice());
    let self_signed = Leaf::self_signed(alice());
    let pinned = Leaf::self_signed(alice());
    let gateway = untrusted_gateway(&pki, echo_upstream().await, |app| {
        app["clientAuth"]["allowedUriSans"] = json!([ALICE_URI]);
        app["clientAuth"]["allowedHashes"] = json!([pinned.hash_hex()]);
    })
    .await;
    assert!(served(&gateway, &options(&pki, &issued, false)).await);
    assert!(served(&gateway, &options(&pki, &pinned, false)).await);
    assert_refused(&gateway, &options(&pki, &self_signed, false), "not_allowed").await;
    gateway.stop().await;
}

/// The request headers the raw app received since `from` bytes, lowercase names.
fn received_headers(recording: &Recording, from: usize) -> Vec<(String, String)> {
    let bytes = recording.bytes();
    let text = String::from_utf8(bytes[from..].to_vec()).unwrap();
    let head = text.split("\r\n\r\n").next().unwrap();
    head.lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect()
}

/// The client certificate headers among `headers`.
fn certificate_headers(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .filter(|(name, _)| name == "x-client-verify" || name.starts_with("x-amzn-mtls"))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

#[tokio::test]
async fn verdict_headers_tell_an_untrusted_certificate_from_a_verified_one() {
    let pki = Pki::new();
    let issued = pki.client_ca.issue(alice());
    let self_signed = Leaf::self_signed(alice());
    let pinned = Leaf::self_signed(LeafSpec::client("pinned"));
    let stranger_ca = Ca::root("certgate test stranger CA");
    let alone = stranger_ca.issue(LeafSpec::client("stranger"));
    let rooted = stranger_ca.issue(LeafSpec::client("stranger with root"));
    let with_root = Leaf {
        chain: vec![rooted.der().clone(), stranger_ca.der.clone()],
        ..rooted
    };
    let under_intermediate = stranger_ca
        .intermediate("certgate test stranger intermediate")
        .issue(LeafSpec::client("stranger under intermediate"));
    assert_eq!(under_intermediate.chain.len(), 2, "leaf and intermediate");
    let (upstream, recording) = raw_upstream().await;
    let gateway = untrusted_gateway(&pki, upstream, |app| {
        app["clientAuth"]["allowedHashes"] = json!([pinned.hash_hex()]);
        app["forwardClientCert"] = json!({ "formats": ["verdict", "aws-alb"] });
    })
    .await;
    let verified = [("ca-issued", &issued), ("pinned", &pinned)];
    let untrusted = [
        (
            "self-signed",
            &self_signed,
            "FAILED:self-signed certificate",
        ),
        (
            "unknown CA, leaf alone",
            &alone,
            "FAILED:unable to verify the first certificate",
        ),
        (
            "unknown CA, with its root",
            &with_root,
            "FAILED:self-signed certificate in certificate chain",
        ),
        (
            "unknown CA, with its intermediate",
            &under_intermediate,
            "FAILED:unable to get local issuer certificate",
        ),
    ];
    for http2 in [false, true] {
        for (who, leaf) in verified {
            let from = recording.bytes().len();
            let reply =
                send_target(gateway.addr, &options(&pki, leaf, http2), HOST, "GET", "/").await;
            assert_eq!(reply.status, 200, "h2={http2} {who}");
            let headers = received_headers(&recording, from);
            let seen = certificate_headers(&headers);
            let names: Vec<&str> = seen.iter().map(|(name, _)| *name).collect();
            assert!(
                seen.contains(&("x-client-verify", "SUCCESS")),
                "h2={http2} {who}: {seen:?}"
            );
            for name in [
                "x-amzn-mtls-clientcert-serial-number",
                "x-amzn-mtls-clientcert-subject",
                "x-amzn-mtls-clientcert-leaf",
            ] {
                assert!(names.contains(&name), "h2={http2} {who}: {seen:?}");
            }
            assert!(
                !names.contains(&"x-amzn-mtls-clientcert"),
                "h2={http2} {who}: {seen:?}"
            );
        }
        for (who, leaf, verdict) in untrusted {
            let from = recording.bytes().len();
            let reply =
                send_target(gateway.addr, &options(&pki, leaf, http2), HOST, "GET", "/").await;
            assert_eq!(reply.status, 200, "h2={http2} {who}");
            let headers = received_headers(&recording, from);
            let seen = certificate_headers(&headers);
            let chain: String = leaf.chain.iter().map(|cert| pem_of(cert)).collect();
            let passthrough = alb_encode(&chain);
            assert_eq!(
                seen,
                [
                    ("x-amzn-mtls-clientcert", passthrough.as_str()),
                    ("x-client-verify", verdict)
                ],
                "h2={http2} {who}"
            );
        }
    }
    gateway.stop().await;
}

/// ALB's URL-encoding, written out: every byte but `A-Z a-z 0-9 - . _ ~ + = /` becomes `%XX`.
fn alb_encode(text: &str) -> String {
    let mut out = String::new();
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~+=/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[tokio::test]
async fn untrusted_clients_are_rate_limited_by_address_whatever_certificate_they_present() {
    let pki = Pki::new();
    let issued = pki.client_ca.issue(alice());
    let gateway = untrusted_gateway(&pki, echo_upstream().await, |app| {
        // One request per 1000 s: no bucket refills during the test.
        app["rateLimit"] = json!({ "requestsPerSecond": 0.001, "burst": 2 });
    })
    .await;
    for (index, status) in [(0, 200), (1, 200), (2, 429)] {
        let fresh = Leaf::self_signed(LeafSpec::client(&format!("fresh {index}")));
        let reply = send_target(
            gateway.addr,
            &options(&pki, &fresh, index % 2 == 1),
            HOST,
            "GET",
            "/",
        )
        .await;
        assert_eq!(reply.status, status, "self-signed certificate {index}");
    }
    let reply = send_target(
        gateway.addr,
        &options(&pki, &issued, false),
        HOST,
        "GET",
        "/",
    )
    .await;
    assert_eq!(
        reply.status, 200,
        "a CA-issued certificate has a bucket of its own"
    );
    gateway.stop().await;
}
