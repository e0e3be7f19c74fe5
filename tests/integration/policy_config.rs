//! docs/config.md "Config reference" for the policy keys: `clientCertExclusionPaths`,
//! `authorization`, `defaultDeny`, `rateLimit`, `forwardClientCert.formats`. Each refusal is
//! checked through `Config::load` and the real binary's `certgate check` (exit 64, the error
//! naming the app and the key):
//! - a path prefix that is a pattern (`*`, `?`, `;`), not absolute, or not normalized;
//! - a rule that lets no one pass, an empty `methods`, a bad method, an empty entry, a `*` in
//!   the middle of a URI SAN entry, a bad hash, an `otherMethods` that is not `deny`/`next`
//!   or comes without `methods`;
//! - an unknown key inside a rule and inside `rateLimit`;
//! - a zero or negative rate, a zero burst;
//! - an unknown format name;
//! - exclusion paths or rules on an `ignore` app;
//!
//! and a config using every key is accepted by `certgate check` (exit 0), which prints the
//! policy on the app's summary line.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::{Value, json};

fn check(path: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_certgate"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CERTGATE_") {
            command.env_remove(name);
        }
    }
    command
        .arg("check")
        .arg("--config")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A config with a `require` app named `api` (plus `changes` applied to it) and an `ignore`
/// app named `open`.
fn config(dir: &TempDir, changes: Value, ignore_changes: Value) -> std::path::PathBuf {
    let upstream: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let mut require = app("api", &["api.example.test"], upstream, "require");
    require["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    for (key, value) in changes.as_object().unwrap() {
        require[key] = value.clone();
    }
    let mut ignore = app("open", &["open.example.test"], upstream, "ignore");
    for (key, value) in ignore_changes.as_object().unwrap() {
        ignore[key] = value.clone();
    }
    dir.write(
        "certgate.json",
        serde_json::to_vec_pretty(&json!({ "listen": "127.0.0.1:0", "apps": [require, ignore] }))
            .unwrap(),
    )
}

fn assert_refused(changes: Value, ignore_changes: Value, needles: &[&str]) {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let path = config(&dir, changes.clone(), ignore_changes);
    let error = match common::load_config(&path) {
        Ok(_) => panic!("accepted: {changes}"),
        Err(error) => certgate::error_chain(&error),
    };
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{changes}: {stderr}");
    for needle in needles {
        assert!(
            error.contains(needle),
            "{changes}: {error:?} lacks {needle:?}"
        );
        assert!(
            stderr.contains(needle),
            "{changes}: {stderr:?} lacks {needle:?}"
        );
    }
}

#[test]
fn path_prefixes_that_are_patterns_or_not_normalized_are_refused() {
    for (value, reason) in [
        ("/admin/*", "not a pattern"),
        ("/admin?x", "not a pattern"),
        ("/a;b", "not a pattern"),
        ("admin", "must start with /"),
        ("/a/../b", "normalized form"),
        ("//a", "normalized form"),
        ("/a%2Fb", "percent-escape"),
    ] {
        assert_refused(
            json!({ "clientCertExclusionPaths": ["/ok", value] }),
            json!({}),
            &["\"api\"", "clientCertExclusionPaths[1]", reason],
        );
        assert_refused(
            json!({ "authorization": [{ "pathPrefix": value, "allowAnyVerified": true }] }),
            json!({}),
            &["\"api\"", "authorization[0].pathPrefix", reason],
        );
    }
}

#[test]
fn rules_that_cannot_work_are_refused() {
    let any = json!({ "pathPrefix": "/", "allowAnyVerified": true });
    for (rule, needle) in [
        (
            json!({ "pathPrefix": "/x" }),
            "authorization[1] lets no one pass",
        ),
        (
            json!({ "pathPrefix": "/x", "allowAnyVerified": false }),
            "authorization[1] lets no one pass",
        ),
        (
            json!({ "pathPrefix": "/x", "methods": [], "allowAnyVerified": true }),
            "authorization[1].methods is empty",
        ),
        (
            json!({ "pathPrefix": "/x", "methods": ["GE T"], "allowAnyVerified": true }),
            "not an HTTP method",
        ),
        (
            json!({ "pathPrefix": "/x", "methods": ["GET"], "otherMethods": "allow", "allowAnyVerified": true }),
            "authorization[1].otherMethods \"allow\" is not deny or next",
        ),
        (
            json!({ "pathPrefix": "/x", "otherMethods": "next", "allowAnyVerified": true }),
            "authorization[1].otherMethods needs methods",
        ),
        (
            json!({ "pathPrefix": "/x", "allowedSubjects": [""] }),
            "authorization[1].allowedSubjects holds an empty entry",
        ),
        (
            json!({ "pathPrefix": "/x", "allowedUriSans": ["spiffe://*/ops"] }),
            "a * may only end the entry",
        ),
        (
            json!({ "pathPrefix": "/x", "allowedHashes": ["abc"] }),
            "not a SHA-256 hash",
        ),
        (
            json!({ "pathPrefix": "/x", "allowAnyVerified": true, "allowedUri": ["a"] }),
            "unknown field `allowedUri`",
        ),
    ] {
        assert_refused(
            json!({ "authorization": [any.clone(), rule] }),
            json!({}),
            &[needle],
        );
    }
}

#[test]
fn bad_rate_limits_are_refused() {
    for (limit, needle) in [
        (
            json!({ "requestsPerSecond": 0 }),
            "requestsPerSecond must be",
        ),
        (
            json!({ "requestsPerSecond": -1 }),
            "requestsPerSecond must be",
        ),
        (
            json!({ "requestsPerSecond": 5, "burst": 0 }),
            "burst must be at least 1",
        ),
        (
            json!({ "requestsPerSecond": 5, "maxKeys": 3 }),
            "unknown field `maxKeys`",
        ),
        (json!({ "burst": 3 }), "missing field `requestsPerSecond`"),
    ] {
        assert_refused(json!({ "rateLimit": limit }), json!({}), &[needle]);
    }
}

#[test]
fn unknown_format_names_are_refused() {
    assert_refused(
        json!({ "forwardClientCert": { "formats": ["envoy", "nginx"] } }),
        json!({}),
        &["\"api\"", "unknown forwardClientCert format \"nginx\""],
    );
}

#[test]
fn exclusion_paths_and_rules_on_an_ignore_app_are_refused() {
    assert_refused(
        json!({}),
        json!({ "clientCertExclusionPaths": ["/public"] }),
        &[
            "\"open\"",
            "clientCertExclusionPaths needs client certificates",
        ],
    );
    assert_refused(
        json!({}),
        json!({ "authorization": [{ "pathPrefix": "/", "allowAnyVerified": true }] }),
        &["\"open\"", "authorization needs client certificates"],
    );
    assert_refused(
        json!({}),
        json!({ "defaultDeny": true }),
        &["\"open\"", "authorization needs client certificates"],
    );
}

#[test]
fn a_config_using_every_policy_key_passes_check() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let path = config(
        &dir,
        json!({
            "clientCertExclusionPaths": ["/public", "/healthz", "/.well-known/"],
            "authorization": [
                { "pathPrefix": "/admin", "methods": ["GET", "post"], "allowedUriSans": ["spiffe://corp/ops/*"] },
                { "pathPrefix": "/reports", "methods": ["GET"], "otherMethods": "next", "allowedUriSans": ["spiffe://corp/ops/*"] },
                { "pathPrefix": "/billing", "allowedHashes": ["ab".repeat(32)], "allowedSubjects": ["CN=billing"], "allowedDnsSans": ["billing.corp.example"] },
                { "pathPrefix": "/", "allowAnyVerified": true }
            ],
            "defaultDeny": false,
            "rateLimit": { "requestsPerSecond": 50, "burst": 100 },
            "forwardClientCert": {
                "formats": ["envoy", "rfc9440", "aws-alb", "azure-app-service", "verdict"],
                "fields": ["Hash", "Cert", "Chain"]
            }
        }),
        json!({ "forwardClientCert": { "formats": ["verdict"] } }),
    );
    let output = check(&path);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].ends_with(
            " exclusion-paths=/public,/healthz,/.well-known/ authorization=4 rules (otherMethods next: 1), default allow \
             rate-limit=50/s burst 100 formats=envoy,rfc9440,aws-alb,azure-app-service,verdict"
        ),
        "{stdout}"
    );
    assert!(lines[1].ends_with(" formats=verdict"), "{stdout}");
}
