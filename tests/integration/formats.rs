//! docs/headers.md "Certificate header formats": `forwardClientCert.formats`, each header checked
//! against a value computed independently of certgate, by `openssl x509` (DER, serial,
//! RFC 2253 names, dates) and Python's standard library (base64, `urllib.parse.quote` with
//! `+=/` safe as ALB documents, ISO 8601), over HTTP/1.1 and HTTP/2.
//!
//! Cases:
//! - Golden: `rfc9440` (`Client-Cert`, `Client-Cert-Chain` without the leaf), `aws-alb` (the
//!   five verify-mode headers), `azure-app-service` (`X-ARR-ClientCert`), for a client issued by
//!   an intermediate and with RFC 2253 specials in its CN; no XFCC unless `envoy` is listed.
//! - `verdict`: `SUCCESS` with a certificate, `NONE` without (an `accept` app, and an excluded
//!   path of a `require` app).
//! - A leaf sent alone gets `Client-Cert` and no `Client-Cert-Chain`.
//! - Spoofing: every header of every format, in three spellings (as named, upper case, `_` for
//!   `-`), sent by the client to an app configured with another format, with and without a
//!   certificate, reaches the app only as certgate's own value or not at all; a look-alike name
//!   passes untouched.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::apps::app_of_mode;
use common::raw::{RawReply, raw_http1, send_target};
use common::tools;
use common::*;
use serde_json::json;

const REFERENCE: &str = r#"
import base64, datetime, json, subprocess, sys, urllib.parse

def openssl(path, *args, text=True):
    return subprocess.run(["openssl", "x509", "-in", path, *args],
                          capture_output=True, check=True, text=text).stdout

def value(path, *args):
    # `subject=CN=...` -> `CN=...`
    return openssl(path, "-noout", *args).strip().split("=", 1)[1]

def iso(path, flag):
    text = value(path, flag)
    return datetime.datetime.strptime(text, "%b %d %H:%M:%S %Y GMT").strftime("%Y-%m-%dT%H:%M:%SZ")

def sf_binary(path):
    return ":" + base64.b64encode(openssl(path, "-outform", "DER", text=False)).decode() + ":"

leaf, rest = sys.argv[1], sys.argv[2:]
out = {
    "client-cert": sf_binary(leaf),
    "x-arr-clientcert": base64.b64encode(openssl(leaf, "-outform", "DER", text=False)).decode(),
    "x-amzn-mtls-clientcert-serial-number": value(leaf, "-serial"),
    "x-amzn-mtls-clientcert-issuer": value(leaf, "-issuer", "-nameopt", "RFC2253"),
    "x-amzn-mtls-clientcert-subject": value(leaf, "-subject", "-nameopt", "RFC2253"),
    "x-amzn-mtls-clientcert-validity": "NotBefore=%s;NotAfter=%s" % (iso(leaf, "-startdate"), iso(leaf, "-enddate")),
    "x-amzn-mtls-clientcert-leaf": urllib.parse.quote(openssl(leaf), safe="+=/"),
}
if rest:
    out["client-cert-chain"] = ", ".join(sf_binary(p) for p in rest)
print(json.dumps(out))
"#;

/// The expected header values for a chain the client sends (leaf first), computed by
/// openssl and Python; `None` when the tools are missing outside CI.
fn reference(dir: &Path, leaf: &Leaf) -> Option<BTreeMap<String, String>> {
    if !tools::openssl() || !tools::available("python3", "--version", "apt-get install python3") {
        return None;
    }
    let mut args = Vec::new();
    for (index, der) in leaf.chain.iter().enumerate() {
        let path = dir.join(format!("reference-{index}.pem"));
        std::fs::write(&path, pem_of(der)).unwrap();
        args.push(path);
    }
    let output = Command::new("python3")
        .arg("-c")
        .arg(REFERENCE)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "reference script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).unwrap())
}

const ALL_NAMES: [&str; 12] = [
    "x-forwarded-client-cert",
    "client-cert",
    "client-cert-chain",
    "x-amzn-mtls-clientcert",
    "x-amzn-mtls-clientcert-serial-number",
    "x-amzn-mtls-clientcert-issuer",
    "x-amzn-mtls-clientcert-subject",
    "x-amzn-mtls-clientcert-validity",
    "x-amzn-mtls-clientcert-leaf",
    "x-arr-clientcert",
    "x-client-verify",
    "x-amzn-mtls-clientcert-anything",
];

/// Every certificate header the app received, by name.
fn certificate_headers(reply: &RawReply) -> BTreeMap<String, Vec<String>> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in reply.echo()["headers"].as_array().unwrap() {
        let name = pair[0].as_str().unwrap().replace('_', "-");
        if ALL_NAMES.contains(&name.as_str()) || name.starts_with("x-amzn-mtls-clientcert") {
            seen.entry(name)
                .or_default()
                .push(pair[1].as_str().unwrap().to_owned());
        }
    }
    seen
}

struct Setup {
    pki: Pki,
    client: Leaf,
    gateway: Gateway,
}

async fn setup(formats: serde_json::Value) -> Setup {
    let pki = Pki::new();
    let intermediate = pki.client_ca.intermediate("certgate test intermediate");
    let client = intermediate.issue(LeafSpec::client("Client, Inc+\"1\""));
    let upstream = echo_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let mut require = app_of_mode("require", upstream, "require");
    require["clientCertExclusionPaths"] = json!(["/public"]);
    require["forwardClientCert"] = json!({ "formats": formats });
    let mut accept = app_of_mode("accept", upstream, "accept");
    accept["forwardClientCert"] = json!({ "formats": formats });
    let ignore = app("ignore", &["ignore.example.test"], upstream, "ignore");
    let gateway = Gateway::start(dir, json!({ "apps": [require, accept, ignore] })).await;
    Setup {
        pki,
        client,
        gateway,
    }
}

impl Setup {
    fn options(&self, host: &str, with_cert: bool, http2: bool) -> ClientOptions {
        let options = ClientOptions::new(&self.pki, host).http2(http2);
        if with_cert {
            options.with_identity(self.client.identity())
        } else {
            options
        }
    }
}

#[tokio::test]
async fn rfc9440_aws_alb_and_azure_headers_match_openssl_and_python() {
    let s = setup(json!(["rfc9440", "aws-alb", "azure-app-service"])).await;
    let Some(expected) = reference(s.gateway.dir.path(), &s.client) else {
        return;
    };
    assert!(
        expected["x-amzn-mtls-clientcert-subject"].contains("\\,"),
        "the CN exercises RFC 2253 escaping: {expected:?}"
    );
    for http2 in [false, true] {
        for host in ["require.example.test", "accept.example.test"] {
            let label = format!("{host} {}", if http2 { "h2" } else { "h1" });
            let options = s.options(host, true, http2);
            let reply = send_target(s.gateway.addr, &options, host, "GET", "/").await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            let seen = certificate_headers(&reply);
            let expected: BTreeMap<String, Vec<String>> = expected
                .iter()
                .map(|(name, value)| (name.clone(), vec![value.clone()]))
                .collect();
            assert_eq!(seen, expected, "{label}");
        }
    }
    s.gateway.stop().await;
}

#[tokio::test]
async fn a_leaf_sent_alone_gets_client_cert_and_no_chain_header() {
    let pki = Pki::new();
    let client = pki.client("alone");
    let upstream = echo_upstream().await;
    let dir = TempDir::new();
    pki.write(&dir);
    let mut accept = app("accept", &["accept.example.test"], upstream, "accept");
    accept["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    accept["forwardClientCert"] = json!({ "formats": ["rfc9440"] });
    let gateway = Gateway::start(dir, json!({ "apps": [accept] })).await;
    let Some(expected) = reference(gateway.dir.path(), &client) else {
        return;
    };
    assert!(!expected.contains_key("client-cert-chain"));
    for http2 in [false, true] {
        let options = ClientOptions::new(&pki, "accept.example.test")
            .http2(http2)
            .with_identity(client.identity());
        let reply = send_target(gateway.addr, &options, "accept.example.test", "GET", "/").await;
        let seen = certificate_headers(&reply);
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["client-cert"], "{seen:?}");
        assert_eq!(seen["client-cert"], [expected["client-cert"].clone()]);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn the_verdict_is_success_with_a_certificate_and_none_without() {
    let s = setup(json!(["verdict"])).await;
    for http2 in [false, true] {
        for (host, target, with_cert, verdict) in [
            ("accept.example.test", "/", true, "SUCCESS"),
            ("accept.example.test", "/", false, "NONE"),
            ("require.example.test", "/public", false, "NONE"),
            ("require.example.test", "/public", true, "SUCCESS"),
        ] {
            let label = format!("{host}{target} cert={with_cert} h2={http2}");
            let options = s.options(host, with_cert, http2);
            let reply = send_target(s.gateway.addr, &options, host, "GET", target).await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            let seen = certificate_headers(&reply);
            let expected =
                BTreeMap::from([("x-client-verify".to_owned(), vec![verdict.to_owned()])]);
            assert_eq!(seen, expected, "{label}: only the verdict, no XFCC");
        }
    }
    s.gateway.stop().await;
}

/// The forged headers, each name in three spellings.
fn forged_lines() -> String {
    let mut lines = String::new();
    for name in ALL_NAMES {
        let upper = name.to_ascii_uppercase();
        let underscored = name.replace('-', "_");
        for spelling in [name.to_owned(), upper, underscored] {
            lines.push_str(&format!("{spelling}: forged\r\n"));
        }
    }
    lines.push_str("X-Client-Verify-Extra: kept\r\n");
    lines
}

#[tokio::test]
async fn every_format_header_sent_by_a_client_is_stripped_whatever_is_configured() {
    let s = setup(json!(["rfc9440"])).await;
    for (host, with_cert) in [
        ("accept.example.test", true),
        ("accept.example.test", false),
        ("require.example.test", true),
        ("ignore.example.test", false),
    ] {
        let label = format!("{host} cert={with_cert}");
        let expected_names: Vec<&str> = if with_cert {
            vec!["client-cert", "client-cert-chain"]
        } else {
            vec![]
        };
        // HTTP/1.1, as raw bytes so the spellings reach certgate as written.
        let options = s.options(host, with_cert, false);
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\n{}Connection: close\r\n\r\n",
            forged_lines()
        );
        let reply = raw_http1(s.gateway.addr, &options, &request).await;
        assert_eq!(reply.status, 200, "h1 {label}: {}", reply.text());
        let seen = certificate_headers(&reply);
        assert_eq!(
            seen.keys().map(String::as_str).collect::<Vec<_>>(),
            expected_names,
            "h1 {label}: {seen:?}"
        );
        assert!(
            seen.values().flatten().all(|v| v != "forged"),
            "h1 {label}: {seen:?}"
        );
        assert_eq!(
            reply.upstream_header("x-client-verify-extra"),
            ["kept"],
            "h1 {label}"
        );

        // HTTP/2: names are lowercase on the wire; `_` spellings still apply.
        let options = s.options(host, with_cert, true);
        let mut conn = Connection::open(s.gateway.addr, &options).await.unwrap();
        let mut request = conn.get(host, "/");
        for name in ALL_NAMES {
            for spelling in [name.to_owned(), name.replace('-', "_")] {
                request.headers_mut().append(
                    http::HeaderName::from_bytes(spelling.as_bytes()).unwrap(),
                    http::HeaderValue::from_static("forged"),
                );
            }
        }
        let reply = conn.send(request).await.unwrap();
        assert_eq!(reply.status, 200, "h2 {label}");
        let echo = reply.echo();
        let forged: Vec<&serde_json::Value> = echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[1] == "forged")
            .collect();
        assert!(forged.is_empty(), "h2 {label}: {forged:?}");
        let names: Vec<&str> = echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[0].as_str().unwrap())
            .filter(|name| name.starts_with("client-cert"))
            .collect();
        assert_eq!(names, expected_names, "h2 {label}");
    }
    s.gateway.stop().await;
}
