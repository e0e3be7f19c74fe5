//! The README's "Per-request policy" example app, loaded as written (only its upstream pointed
//! at the echo app) and exercised over HTTP/1.1 and HTTP/2:
//! - `/healthz` without a certificate is served, `/admin` without one is 403;
//! - an ops SPIFFE client may GET `/admin`, `CN=billing` may reach `/billing`, others may not;
//! - the app receives both XFCC and `Client-Cert`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::raw::send_target;
use common::*;
use serde_json::json;

fn readme_example() -> serde_json::Value {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Per-request policy")
        .nth(1)
        .expect("README has a Per-request policy section");
    let block = section
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section opens with a JSON example");
    serde_json::from_str(block).expect("the example is valid JSON")
}

#[tokio::test]
async fn the_readme_policy_example_works_as_documented() {
    let pki = Pki::new();
    let ops = pki.client_ca.issue(LeafSpec {
        uris: vec!["spiffe://corp/ops/deployer".to_owned()],
        ..LeafSpec::client("ops")
    });
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
