//! End to end with the real `curl` binary (a missing `curl` fails each test when `CI` is set,
//! and skips it with a message otherwise):
//! - curl with a client certificate (PEM files) reaches a `require` app over HTTP/1.1, and the
//!   app's XFCC has `Hash=` the leaf's SHA-256, `Cert=` and `Chain=` decoding to its PEM;
//! - the same over HTTP/2 (`--http2`, negotiated by ALPN);
//! - curl without a certificate is refused by a `require` app (nonzero exit);
//! - curl uploads a 3 MiB file (`--data-binary`, which sends `Expect: 100-continue`) and the
//!   app receives it whole, over HTTP/1.1 and HTTP/2.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

const HOST: &str = "require.example.test";

/// certgate with one `require` app trusting the test client CA, and the PEM files curl needs.
struct Setup {
    gateway: Gateway,
    dir: PathBuf,
    client: Leaf,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Setup {
    async fn start() -> Self {
        let pki = Pki::new();
        let dir = TempDir::new();
        pki.write(&dir);
        let client = pki.client("curl client");
        let ca_file = dir.write("server-ca.pem", &pki.server_ca.pem);
        let cert_file = dir.write("client.pem", &client.pem);
        let key_file = dir.write("client.key", client.key.serialize_pem());
        let mut app = app("require", &[HOST], echo_upstream().await, "require");
        app["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
        let dir_path = dir.path().to_owned();
        let gateway = Gateway::start(dir, serde_json::json!({ "apps": [app] })).await;
        Self {
            gateway,
            dir: dir_path,
            client,
            ca_file,
            cert_file,
            key_file,
        }
    }

    /// Runs curl against `/hello` on the app, with `extra` arguments; the last line of
    /// stdout is the HTTP version curl used.
    async fn curl(&self, with_cert: bool, extra: &[&str]) -> Output {
        let port = self.gateway.addr.port();
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--max-time", "60"])
            .arg("--cacert")
            .arg(&self.ca_file)
            .arg("--resolve")
            .arg(format!("{HOST}:{port}:127.0.0.1"))
            .args(["--write-out", "\n%{http_version}"]);
        if with_cert {
            command
                .arg("--cert")
                .arg(&self.cert_file)
                .arg("--key")
                .arg(&self.key_file);
        }
        command
            .args(extra)
            .arg(format!("https://{HOST}:{port}/hello"));
        // The gateway runs on this test's runtime: wait for curl off it.
        tokio::task::spawn_blocking(move || command.output().expect("run curl"))
            .await
            .unwrap()
    }

    /// Checks a successful curl run: the echo JSON's XFCC carries this client's certificate;
    /// returns the HTTP version curl reports.
    fn check_xfcc(&self, output: &Output) -> String {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "curl failed ({}): {}{stdout}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let (body, version) = stdout.rsplit_once('\n').expect("curl --write-out line");
        let echo: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("not echo JSON: {body:?}"));
        assert_eq!(echo["path"], "/hello");
        let xfcc: Vec<&str> = echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[0] == "x-forwarded-client-cert")
            .map(|pair| pair[1].as_str().unwrap())
            .collect();
        assert_eq!(xfcc.len(), 1, "XFCC headers: {xfcc:?}");
        let fields = xfcc_fields(xfcc[0]);
        let pem = pem_of(self.client.der());
        assert_eq!(
            pem,
            self.client.pem.replace("\r\n", "\n"),
            "the harness PEM and rcgen's differ"
        );
        assert_eq!(
            fields.first(),
            Some(&("Hash".to_owned(), self.client.hash_hex())),
            "{}",
            xfcc[0]
        );
        assert_eq!(
            fields
                .get(1)
                .map(|(k, v)| (k.as_str(), url_decode(unquote(v)))),
            Some(("Cert", pem)),
            "{}",
            xfcc[0]
        );
        assert_eq!(
            fields
                .get(2)
                .map(|(k, v)| (k.as_str(), url_decode(unquote(v)))),
            Some(("Chain", self.client.chain_pem())),
            "{}",
            xfcc[0]
        );
        version.to_owned()
    }
}

/// Splits an XFCC element into `(key, raw value)` pairs (the values here hold no `;`).
fn xfcc_fields(value: &str) -> Vec<(String, String)> {
    value
        .split(';')
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("key=value");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not quoted: {value}"))
}

/// Percent-decoding, written independently of certgate's encoder.
fn url_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(pair, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn curl_with_a_client_certificate_gets_its_xfcc_to_the_app() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let output = setup.curl(true, &["--http1.1"]).await;
    let version = setup.check_xfcc(&output);
    assert_eq!(version, "1.1");
    setup.gateway.stop().await;
}

#[tokio::test]
async fn curl_with_a_client_certificate_over_http2_gets_its_xfcc_to_the_app() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let output = setup.curl(true, &["--http2"]).await;
    let version = setup.check_xfcc(&output);
    assert_eq!(version, "2", "curl did not negotiate HTTP/2");
    setup.gateway.stop().await;
}

#[tokio::test]
async fn curl_without_a_client_certificate_is_refused_by_a_require_app() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let output = setup.curl(false, &[]).await;
    assert!(
        !output.status.success(),
        "curl succeeded without a certificate: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("x-forwarded-client-cert") && !stdout.contains("/hello"),
        "the app answered: {stdout}"
    );
    setup.gateway.stop().await;
}

#[tokio::test]
async fn curl_uploads_a_large_file_that_arrives_whole() {
    if !tools::curl() {
        return;
    }
    let setup = Setup::start().await;
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let upload = setup.dir.join("upload.bin");
    std::fs::write(&upload, &data).unwrap();
    let sha = hex(&<sha2::Sha256 as sha2::Digest>::digest(&data));
    for version in ["--http1.1", "--http2"] {
        let data_arg = format!("@{}", upload.display());
        let output = setup
            .curl(
                true,
                &[
                    version,
                    "--data-binary",
                    &data_arg,
                    "-H",
                    "Content-Type: application/octet-stream",
                ],
            )
            .await;
        setup.check_xfcc(&output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (body, _) = stdout.rsplit_once('\n').unwrap();
        let echo: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(echo["method"], "POST", "{version}");
        assert_eq!(echo["body_len"], data.len(), "{version}");
        assert_eq!(echo["body_sha256"], sha.as_str(), "{version}");
    }
    setup.gateway.stop().await;
}
