//! The "Per-request policy" example app of docs/policy.md, loaded as written (only its upstream pointed
//! at the echo app) and exercised over HTTP/1.1 and HTTP/2:
//! - `/healthz` without a certificate is served, `/admin` without one is 403;
//! - an ops SPIFFE client may GET `/admin`, `CN=billing` may reach `/billing`, others may not;
//! - the app receives both XFCC and `Client-Cert`;
//! - the method matrix on `/admin/users` (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, a
//!   lowercase `get`, an extension method) for an ops client and a verified non-ops client:
//!   the ops client passes with GET, HEAD (covered by GET) and POST only, the other client
//!   never; every other method is refused by rule 0 instead of falling through to `/`. The same
//!   methods on `/` pass for both, so each 403 is the rule's doing.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use common::raw::send_target;
use common::*;
use serde_json::json;

fn readme_example() -> serde_json::Value {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policy.md")).unwrap();
    let section = readme
        .split("# Per-request policy")
        .nth(1)
        .expect("docs/policy.md has a Per-request policy section");
    let block = section
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section opens with a JSON example");
    serde_json::from_str(block).expect("the example is valid JSON")
}

fn ops_client(pki: &Pki) -> Leaf {
    pki.client_ca.issue(LeafSpec {
        uris: vec!["spiffe://corp/ops/deployer".to_owned()],
        ..LeafSpec::client("ops")
    })
}

#[tokio::test]
async fn the_readme_policy_example_works_as_documented() {
    let pki = Pki::new();
    let ops = ops_client(&pki);
    let billing = pki.client("billing");
    let other = pki.client("other");
    let upstream = echo_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let mut app = readme_example();
    app["upstream"] = json!(format!("http://{upstream}"));
    let gateway = Gateway::start(dir, json!({ "apps": [app] })).await;
    let host = "api.example.test";
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, host).http2(http2);
        let send = async |client: Option<&Leaf>, method: &str, target: &str| {
            let options = match client {
                Some(client) => options.clone().with_identity(client.identity()),
                None => options.clone(),
            };
            send_target(gateway.addr, &options, host, method, target).await
        };
        assert_eq!(send(None, "GET", "/healthz").await.status, 200);
        send(None, "GET", "/admin")
            .await
            .assert_certgate(403, "no certificate");
        assert_eq!(send(Some(&ops), "GET", "/admin/x").await.status, 200);
        send(Some(&other), "GET", "/admin")
            .await
            .assert_certgate(403, "other /admin");
        assert_eq!(send(Some(&billing), "GET", "/billing").await.status, 200);
        send(Some(&ops), "GET", "/billing")
            .await
            .assert_certgate(403, "ops /billing");
        let reply = send(Some(&other), "GET", "/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.upstream_header("x-forwarded-client-cert").len(), 1);
        assert_eq!(reply.upstream_header("client-cert").len(), 1);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_method_the_admin_rule_does_not_list_is_refused_by_that_rule() {
    let pki = Pki::new();
    let ops = ops_client(&pki);
    let other = pki.client("other");
    let upstream = echo_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let mut app = readme_example();
    app["upstream"] = json!(format!("http://{upstream}"));
    let gateway = Gateway::start(dir, json!({ "admin": "127.0.0.1:0", "apps": [app] })).await;
    let host = "api.example.test";
    // (method, passes rule 0 for the ops client)
    let matrix = [
        ("GET", true),
        ("HEAD", true),
        ("POST", true),
        ("PUT", false),
        ("PATCH", false),
        ("DELETE", false),
        ("OPTIONS", false),
        ("get", false),
        ("PURGE", false),
    ];
    let mut refusals = 0.0;
    for http2 in [false, true] {
        let version = if http2 { "h2" } else { "h1" };
        for (who, client, is_ops) in [("ops", &ops, true), ("other", &other, false)] {
            let options = ClientOptions::new(&pki, host)
                .http2(http2)
                .with_identity(client.identity());
            for (method, listed) in matrix {
                let label = format!("{version} {who} {method}");
                // Control: the `/` rule lets every method of a verified client through.
                let reply = send_target(gateway.addr, &options, host, method, "/users").await;
                assert_eq!(reply.status, 200, "{label} /users: {}", reply.text());
                if method != "HEAD" {
                    assert_eq!(reply.echo()["method"], method, "{label} /users");
                }
                let reply = send_target(gateway.addr, &options, host, method, "/admin/users").await;
                if is_ops && listed {
                    assert_eq!(reply.status, 200, "{label}: {}", reply.text());
                    if method != "HEAD" {
                        assert_eq!(reply.echo()["method"], method, "{label}");
                    }
                    continue;
                }
                refusals += 1.0;
                if method == "HEAD" {
                    // No body to name the rule; the metric below counts it.
                    assert_eq!(reply.status, 403, "{label}");
                    continue;
                }
                reply.assert_certgate(403, &label);
                assert!(
                    reply
                        .text()
                        .contains("authorization rule 0 (pathPrefix /admin)"),
                    "{label}: {:?}",
                    reply.text()
                );
            }
        }
    }
    // Per HTTP version: six methods for ops, all nine for the other client.
    assert_eq!(refusals, 30.0);
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_authorization_denied_total{app="payments-api",rule="0"}"#
        ),
        refusals,
        "{text}"
    );
    gateway.stop().await;
}
