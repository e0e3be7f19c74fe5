//! docs/cors.md in a real browser: headless Chromium (a missing `chromium` or `certutil` fails
//! the test when `CI` is set, with the command that installs them, and skips it otherwise)
//! loads a page from one origin (`http://127.0.0.1:<port>`, a small server in the test) whose
//! script `fetch`es apps behind certgate on other origins and writes what it could read into
//! the page; `--dump-dom` prints the page once the fetches are done. Chromium trusts certgate's
//! server certificate through an NSS database holding the test's server CA (no
//! `--ignore-certificate-errors`, which would leave the real verification out). Cases:
//! - an app whose policy lists the page's origin: a plain `fetch`, one with `credentials:
//!   "include"`, and a `PUT` with a custom header (preflighted) are all readable; a `DELETE`
//!   (not allowed) is blocked after its preflight and never reaches the app;
//! - an app whose policy lists another origin: blocked;
//! - an app with `*`: readable without credentials, blocked with `credentials: "include"`
//!   (browsers refuse a `*` answer to a credentialed request), a preflighted `PATCH` readable;
//! - an `accept` app, which asks for a certificate the browser has none of: a preflighted,
//!   credentialed `PUT` is readable.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::recording::recording_upstream;
use common::serve::serve_each;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

/// The page: each fetch's outcome, `read <status> <body>` or `blocked`, into `#out` as JSON.
const PAGE: &str = r#"<!doctype html>
<html><body><pre id="out">running</pre><script>
const base = (host) => `https://${host}:PORT`;
const allowed = base("allowed.example.test"), refused = base("refused.example.test"),
      star = base("star.example.test"), accepting = base("accepting.example.test");
const cases = [
  ["allowed", allowed + "/plain", {}],
  ["allowed_credentials", allowed + "/credentials", { credentials: "include" }],
  ["allowed_preflight", allowed + "/put", { method: "PUT", headers: { "X-Trace": "1" }, credentials: "include" }],
  ["refused_method", allowed + "/delete", { method: "DELETE" }],
  ["refused_origin", refused + "/other", {}],
  ["star", star + "/star", {}],
  ["star_credentials", star + "/star-credentials", { credentials: "include" }],
  ["star_preflight", star + "/patch", { method: "PATCH", headers: { "X-Any": "1" } }],
  ["accepting_preflight", accepting + "/accepting", { method: "PUT", headers: { "X-Trace": "1" }, credentials: "include" }],
];
(async () => {
  const results = {};
  for (const [name, url, init] of cases) {
    try {
      const response = await fetch(url, init);
      results[name] = `read ${response.status} ${await response.text()}`;
    } catch (error) {
      results[name] = `blocked`;
    }
  }
  document.getElementById("out").textContent = JSON.stringify(results);
})();
</script></body></html>
"#;

/// A server of one page at every path of `http://127.0.0.1:<port>`; the page is what the
/// returned cell holds when it is asked for.
async fn page_server() -> (SocketAddr, Arc<Mutex<Bytes>>) {
    let page = Arc::new(Mutex::new(Bytes::new()));
    let shared = page.clone();
    let addr = serve_each(move |tcp| {
        let shared = shared.clone();
        async move {
            let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                let body = shared.lock().unwrap().clone();
                async move {
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .header("content-type", "text/html; charset=utf-8")
                            .body(Full::new(body))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        }
    })
    .await;
    (addr, page)
}

/// Runs `program` with `args`, panicking with its output when it fails.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_page_on_another_origin_reads_only_what_the_policy_allows() {
    if !tools::chromium() {
        return;
    }
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let (upstream, recording) = recording_upstream().await;
    // The page is served first so that its origin can be named in the policy; its text is
    // filled in once the gateway's port is known.
    let (page_addr, page) = page_server().await;
    let page_origin = format!("http://127.0.0.1:{}", page_addr.port());

    let mut allowed = app("allowed", &["allowed.example.test"], upstream, "ignore");
    allowed["ingress"]["corsPolicy"] = json!({
        "allowedOrigins": [page_origin],
        "allowedMethods": ["GET", "PUT"],
        "allowedHeaders": ["X-Trace"],
        "allowCredentials": true
    });
    let mut refused = app("refused", &["refused.example.test"], upstream, "ignore");
    refused["ingress"]["corsPolicy"] = json!({ "allowedOrigins": ["https://portal.example.test"] });
    let mut star = app("star", &["star.example.test"], upstream, "ignore");
    star["ingress"]["corsPolicy"] = json!({
        "allowedOrigins": ["*"], "allowedMethods": ["*"], "allowedHeaders": ["*"]
    });
    // An `accept` app asks for a certificate the browser does not have: the preflight and the
    // request go on without one.
    let mut accepting = app("accepting", &["accepting.example.test"], upstream, "accept");
    accepting["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    accepting["ingress"]["corsPolicy"] = allowed["ingress"]["corsPolicy"].clone();
    let gateway = Gateway::start(dir, json!({ "apps": [allowed, refused, star, accepting] })).await;
    *page.lock().unwrap() = Bytes::from(PAGE.replace("PORT", &gateway.addr.port().to_string()));

    // Chromium on Linux trusts the CAs of the NSS database under $HOME.
    let home = TempDir::new();
    let nssdb = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    let ca = home.write("server-ca.pem", &pki.server_ca.pem);
    let ca = ca.to_str().unwrap();
    run("certutil", &["-N", "-d", &db, "--empty-password"]);
    run(
        "certutil",
        &[
            "-A",
            "-d",
            &db,
            "-n",
            "certgate test server CA",
            "-t",
            "C,,",
            "-i",
            ca,
        ],
    );
    let dump = chromium_dump(home.path(), &format!("{page_origin}/")).await;
    let results = results(&dump);
    let read = |name: &str, path: &str| {
        assert_eq!(
            results[name],
            format!("read 200 upstream saw {path}"),
            "{name}: {results:#}"
        );
    };
    read("allowed", "/plain");
    read("allowed_credentials", "/credentials");
    read("allowed_preflight", "/put");
    read("star", "/star");
    read("star_preflight", "/patch");
    read("accepting_preflight", "/accepting");
    for name in ["refused_method", "refused_origin", "star_credentials"] {
        assert_eq!(results[name], "blocked", "{name}: {results:#}");
    }
    let received = String::from_utf8_lossy(&recording.bytes()).into_owned();
    assert!(received.contains("PUT /put HTTP/1.1"), "{received}");
    assert!(
        !received.contains("OPTIONS"),
        "preflights reach no app: {received}"
    );
    assert!(
        !received.contains("DELETE"),
        "a refused preflight stops the request: {received}"
    );
    gateway.stop().await;
}

/// Loads `url` in headless Chromium with `home` as `$HOME` and returns the page's DOM once its
/// network activity is over (`--virtual-time-budget` waits for pending fetches).
async fn chromium_dump(home: &std::path::Path, url: &str) -> String {
    let mut command = Command::new("chromium");
    command
        .env("HOME", home)
        .args([
            "--headless",
            // Running as root (containers, CI) needs it; it changes nothing about CORS.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            // The apps' names lead to the gateway on loopback; the port stays as written.
            "--host-resolver-rules=MAP *.example.test 127.0.0.1",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            home.join("profile").display()
        ))
        .arg(url);
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || command.output().expect("run chromium")),
    )
    .await
    .expect("chromium finished within a minute")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains("<pre id=\"out\">"),
        "chromium failed ({}): {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The JSON the page wrote into `#out`.
fn results(dump: &str) -> Value {
    let start = dump.find("<pre id=\"out\">").unwrap() + "<pre id=\"out\">".len();
    let end = start + dump[start..].find("</pre>").unwrap();
    let text = dump[start..end].replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("the page did not finish: {dump}"))
}
