//! docs/policy.md "Authorization" and docs/operations.md "Logs": the real binary's JSON access line of a request an
//! authorization rule refused names the rule in `rule`; an allowed request's `rule` is empty.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_line_of_a_denied_request_names_the_rule() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let client = pki.client("client");
    let upstream = echo_upstream().await;
    let mut require = app("require", &["require.example.test"], upstream, "require");
    require["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    require["authorization"] = serde_json::json!([
        { "pathPrefix": "/open", "allowAnyVerified": true },
        { "pathPrefix": "/admin", "allowedUriSans": ["spiffe://corp/ops/*"] }
    ]);
    let config = serde_json::json!({ "listen": "127.0.0.1:0", "apps": [require] });
    let (mut child, serving) = process::Child::run_config(dir.path(), &config, &[]);
    let addr = serving.listen();

    let options = ClientOptions::new(&pki, "require.example.test").with_identity(client.identity());
    let mut conn = Connection::open(addr, &options).await.unwrap();
    for (path, status) in [("/admin/x", 403), ("/open", 200), ("/marker", 200)] {
        let request = conn.get("require.example.test", path);
        assert_eq!(
            conn.send(request).await.unwrap().status.as_u16(),
            status,
            "{path}"
        );
    }
    child.wait_for_line(process::Stream::Stderr, |line| line.contains("/marker"));
    let access: Vec<serde_json::Value> = child
        .transcript()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "request")
        .collect();
    let line = |path: &str| {
        access
            .iter()
            .find(|line| line["path"] == path)
            .unwrap_or_else(|| panic!("no access line for {path}: {access:?}"))
            .clone()
    };
    assert_eq!(line("/admin/x")["status"], 403);
    assert_eq!(line("/admin/x")["rule"], "1");
    assert_eq!(line("/open")["rule"], "");
}
