//! The hardening settings in the config file and `certgate check` (docs/config.md "Config reference"):
//! - every new key is read with its default when absent;
//! - `certgate check` accepts a config that sets them all, and refuses (exit 64, naming the
//!   key) a zero value, a `clientHelloMs` longer than `handshakeMs`, and a misspelled key;
//! - an unset `clientHelloMs` follows a shorter `handshakeMs` down;
//! - an unset `maxPendingHandshakes` is at most half of `maxConnections`, and `check` warns
//!   about one set to `maxConnections` or more (no slot left for verified clients).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::time::Duration;

use common::*;

fn write_config(
    dir: &TempDir,
    timeouts: serde_json::Value,
    limits: serde_json::Value,
) -> std::path::PathBuf {
    let upstream: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = serde_json::json!({
        "apps": [app("ignore", &["ignore.example.test"], upstream, "ignore")],
        "timeouts": timeouts,
        "limits": limits,
    });
    dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap())
}

fn check(dir: &TempDir) -> (Option<i32>, String) {
    let mut child = process::Child::spawn(&["check", "--config", "certgate.json"], dir.path(), &[]);
    let status = child.wait_exit();
    (status.code(), process::strip_ansi(&child.transcript()))
}

#[test]
fn absent_keys_take_their_defaults() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let path = write_config(&dir, serde_json::json!({}), serde_json::json!({}));
    let config = common::load_config(&path).unwrap();
    assert_eq!(config.timeouts.client_hello, Duration::from_millis(5_000));
    assert_eq!(
        config.timeouts.request_body_idle,
        Duration::from_millis(30_000)
    );
    assert_eq!(config.timeouts.upstream_idle, Duration::from_millis(60_000));
    assert_eq!(config.limits.max_request_headers, 100);
    assert_eq!(config.limits.max_connections_per_client, None);
    assert_eq!(config.limits.max_pending_handshakes, 1024);
    assert_eq!(config.limits.max_upstream_connections_per_app, 1024);
}

#[test]
fn an_unset_client_hello_deadline_follows_a_shorter_handshake_deadline() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let path = write_config(
        &dir,
        serde_json::json!({ "handshakeMs": 2000 }),
        serde_json::json!({}),
    );
    let config = common::load_config(&path).unwrap();
    assert_eq!(config.timeouts.client_hello, Duration::from_millis(2_000));
}

#[test]
fn check_accepts_every_hardening_setting() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    write_config(
        &dir,
        serde_json::json!({ "clientHelloMs": 1000, "requestBodyIdleMs": 2000, "upstreamIdleMs": 3000 }),
        serde_json::json!({ "maxConnectionsPerClient": 10, "maxPendingHandshakes": 20,
                            "maxRequestHeaders": 50, "maxUpstreamConnectionsPerApp": 8 }),
    );
    let (code, transcript) = check(&dir);
    assert_eq!(code, Some(0), "{transcript}");
}

#[test]
fn check_refuses_bad_hardening_settings_naming_the_key() {
    let pki = Pki::new();
    let cases = [
        (
            serde_json::json!({ "requestBodyIdleMs": 0 }),
            serde_json::json!({}),
            "timeouts.requestBodyIdleMs",
        ),
        (
            serde_json::json!({ "upstreamIdleMs": 0 }),
            serde_json::json!({}),
            "timeouts.upstreamIdleMs",
        ),
        (
            serde_json::json!({ "clientHelloMs": 0 }),
            serde_json::json!({}),
            "timeouts.clientHelloMs",
        ),
        (
            serde_json::json!({ "clientHelloMs": 20000, "handshakeMs": 10000 }),
            serde_json::json!({}),
            "timeouts.clientHelloMs",
        ),
        (
            serde_json::json!({}),
            serde_json::json!({ "maxRequestHeaders": 0 }),
            "limits.maxRequestHeaders",
        ),
        (
            serde_json::json!({}),
            serde_json::json!({ "maxConnectionsPerClient": 0 }),
            "limits.maxConnectionsPerClient",
        ),
        (
            serde_json::json!({}),
            serde_json::json!({ "maxPendingHandshakes": 0 }),
            "limits.maxPendingHandshakes",
        ),
        (
            serde_json::json!({}),
            serde_json::json!({ "maxUpstreamConnectionsPerApp": 0 }),
            "limits.maxUpstreamConnectionsPerApp",
        ),
        (
            serde_json::json!({}),
            serde_json::json!({ "maxPendingHandshake": 5 }),
            "maxPendingHandshake",
        ),
    ];
    for (timeouts, limits, key) in cases {
        let dir = TempDir::new();
        pki.write(&dir);
        write_config(&dir, timeouts, limits);
        let (code, transcript) = check(&dir);
        assert_eq!(code, Some(64), "{key}: {transcript}");
        assert!(transcript.contains(key), "{key} not named: {transcript}");
    }
}

#[test]
fn an_unset_pending_handshake_cap_is_at_most_half_of_max_connections() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    for (limits, pending) in [
        (serde_json::json!({ "maxConnections": 200 }), 100),
        (serde_json::json!({ "maxConnections": 10000 }), 1024),
        (
            serde_json::json!({ "maxConnections": 200, "maxPendingHandshakes": 150 }),
            150,
        ),
    ] {
        let path = write_config(&dir, serde_json::json!({}), limits.clone());
        let config = common::load_config(&path).unwrap();
        assert_eq!(config.limits.max_pending_handshakes, pending, "{limits}");
    }
}

#[test]
fn check_warns_about_a_pending_handshake_cap_that_leaves_no_slot_for_verified_clients() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    write_config(
        &dir,
        serde_json::json!({}),
        serde_json::json!({ "maxConnections": 200, "maxPendingHandshakes": 200 }),
    );
    let (code, transcript) = check(&dir);
    assert_eq!(code, Some(0), "a warning only: {transcript}");
    assert!(
        transcript.contains(
            "warning: limits.maxPendingHandshakes (200) is not below limits.maxConnections (200)"
        ),
        "{transcript}"
    );

    write_config(
        &dir,
        serde_json::json!({}),
        serde_json::json!({ "maxConnections": 200, "maxPendingHandshakes": 199 }),
    );
    let (code, transcript) = check(&dir);
    assert_eq!(code, Some(0), "{transcript}");
    assert!(!transcript.contains("maxPendingHandshakes"), "{transcript}");
}
