//! Path-override headers (docs/policy.md "Path normalization"): `X-Original-URL` and `X-Rewrite-URL`,
//! in any case and with `_` for `-`, are removed on apps with a path policy, since IIS- and
//! Symfony-style apps serve the path they name instead of the one certgate judged. On the
//! wire, with the raw-socket app recording every byte:
//! - an app with `clientCertExclusionPaths` gets none of them on an excluded path;
//! - an app with `authorization` rules gets none of them;
//! - an app without a path policy gets them as the client sent them.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use common::raw::raw_http1;
use common::recording::{Recording, raw_upstream};
use common::*;
use serde_json::json;

const OVERRIDES: &str = "X-Original-URL: /admin\r\nx-rewrite-url: /admin\r\n\
    X_Original_URL: /admin\r\nX_Rewrite_Url: /admin\r\n";

/// The raw app behind `app` (its `hosts` set to `host`), and certgate in front of it.
async fn gateway(pki: &Pki, host: &str, policy: serde_json::Value) -> (Gateway, Recording) {
    let (upstream, recording) = raw_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let mut entry = app("app", &[host], upstream, "require");
    entry["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    for (key, value) in policy.as_object().unwrap() {
        entry[key] = value.clone();
    }
    let gateway = Gateway::start(dir, json!({ "apps": [entry] })).await;
    (gateway, recording)
}

/// Sends `GET path` with the override headers; the header lines the app received, lowercase.
async fn override_lines(
    gateway: &Gateway,
    recording: &Recording,
    options: &ClientOptions,
    host: &str,
    path: &str,
) -> Vec<String> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{OVERRIDES}Connection: close\r\n\r\n");
    let reply = raw_http1(gateway.addr, options, &request).await;
    assert_eq!(reply.status, 200, "{:?}", reply.text());
    let received = String::from_utf8(recording.bytes()).unwrap();
    assert!(received.starts_with(&format!("GET {path} ")), "{received}");
    received
        .to_ascii_lowercase()
        .split("\r\n")
        .filter(|line| {
            line.replace('_', "-").starts_with("x-original-url:") || {
                line.replace('_', "-").starts_with("x-rewrite-url:")
            }
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn an_app_with_exclusion_paths_never_gets_path_override_headers() {
    let pki = Pki::new();
    let host = "require.example.test";
    let (gateway, recording) = gateway(
        &pki,
        host,
        json!({ "clientCertExclusionPaths": ["/public"] }),
    )
    .await;
    let options = ClientOptions::new(&pki, host);
    let lines = override_lines(&gateway, &recording, &options, host, "/public").await;
    assert!(lines.is_empty(), "{lines:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn an_app_with_authorization_rules_never_gets_path_override_headers() {
    let pki = Pki::new();
    let host = "require.example.test";
    let rules = json!({ "authorization": [{ "pathPrefix": "/", "allowAnyVerified": true }] });
    let (gateway, recording) = gateway(&pki, host, rules).await;
    let client = pki.client("authorized client");
    let options = ClientOptions::new(&pki, host).with_identity(client.identity());
    let lines = override_lines(&gateway, &recording, &options, host, "/public").await;
    assert!(lines.is_empty(), "{lines:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn an_app_without_a_path_policy_gets_path_override_headers_as_sent() {
    let pki = Pki::new();
    let host = "require.example.test";
    let (gateway, recording) = gateway(&pki, host, json!({})).await;
    let client = pki.client("client");
    let options = ClientOptions::new(&pki, host).with_identity(client.identity());
    let lines = override_lines(&gateway, &recording, &options, host, "/public").await;
    assert_eq!(
        lines,
        [
            "x-original-url: /admin",
            "x-rewrite-url: /admin",
            "x_original_url: /admin",
            "x_rewrite_url: /admin",
        ]
    );
    gateway.stop().await;
}
