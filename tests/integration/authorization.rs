//! docs/policy.md "Authorization": ordered rules per app, over HTTP/1.1 and HTTP/2.
//!
//! Cases:
//! - The issue's example (`/admin` GET/POST for `spiffe://corp/ops/*`, `/billing` for one
//!   pinned hash, `/` for any verified client): first match wins, the SPIFFE prefix form, the
//!   method filter (a DELETE on `/admin` is refused by the `/admin` rule, for every client),
//!   segment-boundary prefixes, and normalization before matching (`/admin/../billing` is
//!   `/billing`).
//! - `otherMethods: "next"`: a method the rule does not list falls through to the next rules.
//! - A denial is 403 with a one-line body naming the rule, counted in
//!   `certgate_authorization_denied_total{app,rule}` (present at zero before any traffic).
//! - `defaultDeny`: a request no rule matches is 403 (`rule="default"`).
//! - An `accept` app: a client without a certificate is refused by a rule that needs one, and
//!   served where no rule applies.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use common::apps::app_of_mode;
use common::raw::send_target;
use common::*;
use serde_json::json;

struct Setup {
    pki: Pki,
    ops: Leaf,
    web: Leaf,
    billing: Leaf,
    gateway: Gateway,
}

fn spiffe_client(pki: &Pki, name: &str, uri: &str) -> Leaf {
    pki.client_ca.issue(LeafSpec {
        uris: vec![uri.to_owned()],
        ..LeafSpec::client(name)
    })
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let ops = spiffe_client(&pki, "ops", "spiffe://corp/ops/deployer");
    let web = spiffe_client(&pki, "web", "spiffe://corp/web/frontend");
    let billing = pki.client("billing");
    let upstream = echo_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let mut require = app_of_mode("require", upstream, "require");
    require["authorization"] = json!([
        { "pathPrefix": "/admin", "methods": ["GET", "POST"], "allowedUriSans": ["spiffe://corp/ops/*"] },
        { "pathPrefix": "/billing", "allowedHashes": [billing.hash_hex()] },
        { "pathPrefix": "/", "allowAnyVerified": true }
    ]);
    let mut strict = app_of_mode("strict", upstream, "require");
    strict["authorization"] =
        json!([{ "pathPrefix": "/api", "allowedUriSans": ["spiffe://corp/ops/deployer"] }]);
    strict["defaultDeny"] = json!(true);
    let mut passing = app_of_mode("passing", upstream, "require");
    passing["authorization"] = json!([
        { "pathPrefix": "/admin", "methods": ["GET"], "otherMethods": "next", "allowedUriSans": ["spiffe://corp/ops/*"] },
        { "pathPrefix": "/", "allowAnyVerified": true }
    ]);
    let mut accept = app_of_mode("accept", upstream, "accept");
    accept["authorization"] = json!([{ "pathPrefix": "/private", "allowAnyVerified": true }]);
    let gateway = Gateway::start(
        dir,
        json!({ "admin": "127.0.0.1:0", "apps": [require, strict, passing, accept] }),
    )
    .await;
    Setup {
        pki,
        ops,
        web,
        billing,
        gateway,
    }
}

impl Setup {
    async fn send(
        &self,
        host: &str,
        client: Option<&Leaf>,
        http2: bool,
        method: &str,
        target: &str,
    ) -> common::raw::RawReply {
        let mut options = ClientOptions::new(&self.pki, host).http2(http2);
        if let Some(client) = client {
            options = options.with_identity(client.identity());
        }
        send_target(self.gateway.addr, &options, host, method, target).await
    }
}

fn label(http2: bool, who: &str, method: &str, target: &str) -> String {
    format!(
        "{} {who} {method} {target}",
        if http2 { "h2" } else { "h1" }
    )
}

#[tokio::test]
async fn first_matching_rule_decides_with_spiffe_prefixes_methods_and_pins() {
    let s = setup().await;
    let host = "require.example.test";
    for http2 in [false, true] {
        let allowed = [
            (&s.ops, "ops", "GET", "/admin/x"),
            (&s.ops, "ops", "POST", "/admin"),
            (&s.web, "web", "GET", "/administrator"),
            (&s.billing, "billing", "PUT", "/billing/invoices"),
            (&s.web, "web", "GET", "/"),
        ];
        for (client, who, method, target) in allowed {
            let label = label(http2, who, method, target);
            let reply = s.send(host, Some(client), http2, method, target).await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            assert_eq!(reply.echo()["method"], method, "{label}");
        }
        let denied = [
            (&s.web, "web", "GET", "/admin", "0"),
            (&s.web, "web", "POST", "/admin/users", "0"),
            (&s.web, "web", "DELETE", "/admin", "0"),
            (&s.ops, "ops", "DELETE", "/admin", "0"),
            (&s.billing, "billing", "GET", "/admin", "0"),
            (&s.ops, "ops", "GET", "/billing", "1"),
            (&s.ops, "ops", "GET", "/admin/../billing", "1"),
            (&s.web, "web", "GET", "/admin;x=1", "0"),
        ];
        for (client, who, method, target, rule) in denied {
            let label = label(http2, who, method, target);
            let reply = s.send(host, Some(client), http2, method, target).await;
            reply.assert_certgate(403, &label);
            assert!(
                reply
                    .text()
                    .contains(&format!("authorization rule {rule} ")),
                "{label}: {:?}",
                reply.text()
            );
        }
    }
    let text = scrape(s.gateway.admin.unwrap()).await;
    // Per HTTP version: rule 0 six times, rule 1 twice.
    let denied = |rule: &str| {
        metric(
            &text,
            &format!(r#"certgate_authorization_denied_total{{app="require",rule="{rule}"}}"#),
        )
    };
    assert_eq!(denied("0"), 12.0, "{text}");
    assert_eq!(denied("1"), 4.0, "{text}");
    assert!(
        text.contains(r#"certgate_authorization_denied_total{app="require",rule="2"} 0"#),
        "every rule's series exists at zero: {text}"
    );
    s.gateway.stop().await;
}

#[tokio::test]
async fn other_methods_next_passes_unlisted_methods_to_the_next_rule() {
    let s = setup().await;
    let host = "passing.example.test";
    for http2 in [false, true] {
        for method in ["DELETE", "PUT", "get"] {
            let label = label(http2, "web", method, "/admin");
            let reply = s.send(host, Some(&s.web), http2, method, "/admin").await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            assert_eq!(reply.echo()["method"], method, "{label}");
        }
        for method in ["GET", "HEAD"] {
            let reply = s.send(host, Some(&s.web), http2, method, "/admin").await;
            assert_eq!(
                reply.status,
                403,
                "{}",
                label(http2, "web", method, "/admin")
            );
            let reply = s.send(host, Some(&s.ops), http2, method, "/admin").await;
            assert_eq!(
                reply.status,
                200,
                "{}",
                label(http2, "ops", method, "/admin")
            );
        }
    }
    s.gateway.stop().await;
}

#[tokio::test]
async fn default_deny_refuses_what_no_rule_matches() {
    let s = setup().await;
    let host = "strict.example.test";
    for http2 in [false, true] {
        let reply = s.send(host, Some(&s.ops), http2, "GET", "/api/v1").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let reply = s.send(host, Some(&s.ops), http2, "GET", "/other").await;
        reply.assert_certgate(403, "ops /other");
        assert!(reply.text().contains("defaultDeny"), "{}", reply.text());
        let reply = s.send(host, Some(&s.web), http2, "GET", "/api").await;
        reply.assert_certgate(403, "web /api");
    }
    let text = scrape(s.gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_authorization_denied_total{app="strict",rule="default"}"#
        ),
        2.0,
        "{text}"
    );
    s.gateway.stop().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_by_a_rule_that_needs_one() {
    let s = setup().await;
    let host = "accept.example.test";
    for http2 in [false, true] {
        let reply = s.send(host, None, http2, "GET", "/private/x").await;
        reply.assert_certgate(403, "no certificate /private/x");
        assert!(reply.text().contains("rule 0"), "{}", reply.text());
        let reply = s.send(host, None, http2, "GET", "/open").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let reply = s.send(host, Some(&s.web), http2, "GET", "/private/x").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    s.gateway.stop().await;
}
