//! docs/policy.md "Paths without a certificate": `clientCertExclusionPaths` on a `require` app, over
//! HTTP/1.1 (raw request bytes, so targets reach certgate verbatim) and HTTP/2.
//!
//! Cases:
//! - Without a certificate the handshake succeeds; an excluded path is forwarded, any other
//!   path gets 403 with a one-line body and never reaches the app.
//! - The path-confusion list: `/public/../admin`, `/public/%2e%2e/admin`, `//admin`,
//!   `/PUBLIC/x` (paths are case-sensitive), `/public/..;/admin` and `/admin;x` (`;`
//!   parameters), an absolute-form target (HTTP/1.1) are refused without a certificate;
//!   `/public%2Fadmin` and a malformed escape are 400; `/public;v=1/x`, `/public/./x` and
//!   `/public/%78` are excluded and forwarded in normalized form.
//! - With a certificate every path is forwarded, normalized (`/public/../admin` reaches the
//!   app as `/admin`, the query unchanged).
//! - An app without a path policy forwards the path byte for byte, as before.
//! - A certificate that fails verification is still refused at the handshake.
//! - With `rejectWith: "http"`: a certificate-less request outside the exclusion paths gets the
//!   496 page (HTML for a browser), an excluded path on the same connection is still served,
//!   and a refused certificate gets 495 even on an excluded path.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use common::raw::send_target;
use common::*;
use serde_json::json;

const HOST: &str = "require.example.test";

async fn gateway(pki: &Pki) -> Gateway {
    let upstream = echo_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let [mut require, ignore] = require_and_ignore(upstream);
    require["clientCertExclusionPaths"] = json!(["/public", "/healthz"]);
    Gateway::start(dir, json!({ "apps": [require, ignore] })).await
}

fn options(pki: &Pki, http2: bool) -> ClientOptions {
    ClientOptions::new(pki, HOST).http2(http2)
}

fn version(http2: bool) -> &'static str {
    if http2 { "h2" } else { "h1" }
}

#[tokio::test]
async fn excluded_paths_are_forwarded_without_a_certificate_and_others_get_403() {
    let pki = Pki::new();
    let gateway = gateway(&pki).await;
    for http2 in [false, true] {
        let options = options(&pki, http2);
        for (target, forwarded) in [
            ("/public", "/public"),
            ("/public/x?q=1", "/public/x?q=1"),
            ("/healthz", "/healthz"),
            ("/public/./x", "/public/x"),
            ("/public/%78", "/public/x"),
            ("/public;v=1/x", "/public;v=1/x"),
        ] {
            let label = format!("{} {target}", version(http2));
            let reply = send_target(gateway.addr, &options, HOST, "GET", target).await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            assert_eq!(reply.echo()["path"], forwarded, "{label}");
        }
        for target in ["/admin", "/", "/publicity", "/healthz2"] {
            let label = format!("{} {target}", version(http2));
            let reply = send_target(gateway.addr, &options, HOST, "GET", target).await;
            reply.assert_certgate(403, &label);
            assert!(reply.text().contains("certificate"), "{label}");
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn path_confusion_never_reaches_a_protected_path_without_a_certificate() {
    let pki = Pki::new();
    let gateway = gateway(&pki).await;
    for http2 in [false, true] {
        let options = options(&pki, http2);
        for target in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E%2E/admin",
            "/public/.%2e/admin",
            "//admin",
            "//public/../admin",
            "/PUBLIC/x",
            "/Public",
            "/public/..;/admin",
            "/public/..;x=1/admin",
            "/admin;public",
            "/public/../../admin",
            "/%70ublic/../admin",
        ] {
            let label = format!("{} {target}", version(http2));
            let reply = send_target(gateway.addr, &options, HOST, "GET", target).await;
            reply.assert_certgate(403, &label);
        }
        for target in [
            "/public%2Fadmin",
            "/public%2f..%2fadmin",
            "/public/..%5Cadmin",
            "/public/%zz",
        ] {
            let label = format!("{} {target}", version(http2));
            let reply = send_target(gateway.addr, &options, HOST, "GET", target).await;
            reply.assert_certgate(400, &label);
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn absolute_form_targets_are_normalized_like_origin_form_ones() {
    let pki = Pki::new();
    let gateway = gateway(&pki).await;
    let options = options(&pki, false);
    let reply = send_target(
        gateway.addr,
        &options,
        HOST,
        "GET",
        &format!("https://{HOST}/public/../admin"),
    )
    .await;
    reply.assert_certgate(403, "absolute-form /public/../admin");
    let reply = send_target(
        gateway.addr,
        &options,
        HOST,
        "GET",
        &format!("https://{HOST}/public/x"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.echo()["path"], "/public/x");
    gateway.stop().await;
}

#[tokio::test]
async fn with_a_certificate_every_path_is_forwarded_in_normalized_form() {
    let pki = Pki::new();
    let gateway = gateway(&pki).await;
    let client = pki.client("client");
    for http2 in [false, true] {
        let options = options(&pki, http2).with_identity(client.identity());
        for (target, forwarded) in [
            ("/admin", "/admin"),
            ("/public/../admin?a=%2F..", "/admin?a=%2F.."),
            ("//admin//x", "/admin/x"),
            ("/public/x", "/public/x"),
        ] {
            let label = format!("{} {target}", version(http2));
            let reply = send_target(gateway.addr, &options, HOST, "GET", target).await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            assert_eq!(reply.echo()["path"], forwarded, "{label}");
            assert_eq!(
                reply.upstream_header("x-forwarded-client-cert").len(),
                1,
                "{label}"
            );
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn an_app_without_a_path_policy_forwards_the_path_byte_for_byte() {
    let pki = Pki::new();
    let gateway = gateway(&pki).await;
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "ignore.example.test").http2(http2);
        let reply = send_target(
            gateway.addr,
            &options,
            "ignore.example.test",
            "GET",
            "/a/../b//c%2Fd",
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.echo()["path"], "/a/../b//c%2Fd");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_certificate_that_fails_verification_is_still_refused_at_the_handshake() {
    let pki = Pki::new();
    let gateway = gateway(&pki).await;
    let stranger = Ca::root("stranger CA").issue(LeafSpec::client("stranger"));
    let options = options(&pki, false).with_identity(stranger.identity());
    let result = get(gateway.addr, &options, HOST, "/public").await;
    let failure = result.expect_err("an untrusted certificate must be refused");
    assert_eq!(
        failure.alert,
        Some(rustls::AlertDescription::UnknownCA),
        "{}",
        failure.message
    );
    gateway.stop().await;
}

#[tokio::test]
async fn with_reject_with_http_a_request_outside_the_exclusions_gets_496() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let [mut require, ignore] = require_and_ignore(upstream);
    require["clientCertExclusionPaths"] = json!(["/public"]);
    require["rejectWith"] = json!("http");
    let gateway = Gateway::start(dir, json!({ "apps": [require, ignore] })).await;
    for http2 in [false, true] {
        let label = version(http2);
        let options = options(&pki, http2);
        let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
        let reply = conn.send(conn.get(HOST, "/admin")).await.unwrap();
        assert_eq!(reply.status.as_u16(), 496, "{label}: {:?}", reply.body);
        let mut browser = conn.get(HOST, "/public/../admin");
        browser.headers_mut().insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("text/html"),
        );
        let reply = conn.send(browser).await.unwrap();
        assert_eq!(reply.status.as_u16(), 496, "{label}");
        assert!(
            String::from_utf8_lossy(&reply.body).contains("<h1>496"),
            "{label}: {:?}",
            reply.body
        );
        let reply = conn.send(conn.get(HOST, "/public/x")).await.unwrap();
        assert_eq!(reply.status.as_u16(), 200, "{label}: {:?}", reply.body);
        assert_eq!(reply.echo()["path"], "/public/x");

        let stranger = Ca::root("stranger CA").issue(LeafSpec::client("stranger"));
        let refused = options.clone().with_identity(stranger.identity());
        let reply = send_target(gateway.addr, &refused, HOST, "GET", "/public").await;
        assert_eq!(reply.status, 495, "{label}: {}", reply.text());
    }
    gateway.stop().await;
}
