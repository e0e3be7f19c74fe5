//! README "allowUntrusted": a certificate only `allowUntrusted` admits is forwarded, but its
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

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::raw::send_target;
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
