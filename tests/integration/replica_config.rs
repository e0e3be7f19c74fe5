//! The replica settings in the config (docs/replicas.md), through
//! `Config::load` and the real `certgate check` (exit 64, stderr naming the problem):
//! - `sessionTickets.keyFile` that is missing, empty, not base64, of the wrong key length;
//!   an unknown key inside `sessionTickets` or `proxyProtocol`;
//! - `sessionTickets` on an app that also says `sessionResumption: false`;
//! - `proxyProtocol.trustedSources` empty or with a bad CIDR;
//! - what succeeds: `check` prints each app's resumption (`shared-keys`, per-app override,
//!   `off`, `process-keys`), `timeouts.drainDelayMs` takes 0 and defaults to 5000.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::process::Command;
use std::time::Duration;

use certgate::SessionResumption;
use common::*;
use serde_json::{Value, json};

const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fn base(dir: &TempDir) -> Value {
    let pki = Pki::new();
    pki.write(dir);
    let upstream: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let [require, ignore] = require_and_ignore(upstream);
    json!({ "apps": [require, ignore] })
}

/// Loads `config` in-process and through `certgate check`; returns the error text of both,
/// which must agree on failing.
fn refused(dir: &TempDir, config: &Value) -> String {
    let path = dir.write("certgate.json", serde_json::to_vec(config).unwrap());
    let error = match common::load_config(&path) {
        Ok(_) => panic!("config was accepted: {config}"),
        Err(error) => certgate::error_chain(&error),
    };
    let output = Command::new(process::BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stderr.contains(&error), "{stderr} vs {error}");
    error
}

#[test]
fn bad_ticket_key_files_are_refused_naming_the_file() {
    let dir = TempDir::new();
    let mut config = base(&dir);
    config["sessionTickets"] = json!({ "keyFile": "ticket-keys" });

    let error = refused(&dir, &config);
    assert!(error.contains("ticket-keys"), "{error}");

    for (contents, expected) in [
        ("\n", "is empty"),
        ("# only a comment\n", "holds no key"),
        ("not base64!\n", "line 1 is not base64"),
        ("AQID\n", "line 1 holds 3 bytes"),
    ] {
        dir.write("ticket-keys", contents);
        let error = refused(&dir, &config);
        assert!(error.contains("ticket-keys"), "{error}");
        assert!(error.contains(expected), "{contents:?}: {error}");
    }
}

#[test]
fn unknown_keys_inside_the_replica_settings_are_refused() {
    let dir = TempDir::new();
    dir.write("ticket-keys", format!("{KEY}\n"));
    let mut config = base(&dir);
    config["sessionTickets"] = json!({ "keyFile": "ticket-keys", "lifetime": 5 });
    assert!(refused(&dir, &config).contains("lifetime"));
    let mut config = base(&dir);
    config["proxyProtocol"] = json!({ "trustedSources": ["10.0.0.0/8"], "version": 2 });
    assert!(refused(&dir, &config).contains("version"));
    let mut config = base(&dir);
    config["apps"][0]["sessionResumtion"] = false.into();
    assert!(refused(&dir, &config).contains("sessionResumtion"));
}

#[test]
fn session_tickets_with_session_resumption_false_is_refused() {
    let dir = TempDir::new();
    dir.write("ticket-keys", format!("{KEY}\n"));
    let mut config = base(&dir);
    config["apps"][0]["sessionResumption"] = false.into();
    config["apps"][0]["sessionTickets"] = json!({ "keyFile": "ticket-keys" });
    let error = refused(&dir, &config);
    assert!(error.contains("\"require\""), "{error}");
    assert!(error.contains("sessionResumption"), "{error}");
}

#[test]
fn bad_trusted_sources_are_refused() {
    let dir = TempDir::new();
    for (sources, expected) in [
        (json!([]), "is empty"),
        (json!(["10.0.0.0/33"]), "\"10.0.0.0/33\""),
        (
            json!(["10.0.0.1", "balancer.internal"]),
            "\"balancer.internal\"",
        ),
    ] {
        let mut config = base(&dir);
        config["proxyProtocol"] = json!({ "trustedSources": sources });
        let error = refused(&dir, &config);
        assert!(error.contains("proxyProtocol.trustedSources"), "{error}");
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn check_prints_each_apps_resumption_and_drain_delay_takes_zero() {
    let dir = TempDir::new();
    dir.write("ticket-keys", format!("{KEY}\n"));
    dir.write("partner-keys", format!("{KEY}\n"));
    let mut config = base(&dir);
    let mut partners = config["apps"][0].clone();
    partners["name"] = "partners".into();
    partners["hosts"] = json!(["partners.example.test"]);
    partners["sessionTickets"] = json!({ "keyFile": "partner-keys" });
    let mut private = config["apps"][0].clone();
    private["name"] = "private".into();
    private["hosts"] = json!(["private.example.test"]);
    private["sessionResumption"] = false.into();
    config["apps"].as_array_mut().unwrap().push(partners);
    config["apps"].as_array_mut().unwrap().push(private);
    config["sessionTickets"] = json!({ "keyFile": "ticket-keys" });
    config["proxyProtocol"] = json!({ "trustedSources": ["10.0.0.0/8", "::1/128"] });
    config["timeouts"] = json!({ "drainDelayMs": 0 });
    let path = dir.write("certgate.json", serde_json::to_vec(&config).unwrap());

    let loaded = common::load_config(&path).unwrap();
    assert_eq!(loaded.timeouts.drain_delay, Duration::ZERO);
    let resumption: Vec<&SessionResumption> = loaded
        .apps
        .iter()
        .map(|app| &app.session_resumption)
        .collect();
    assert_eq!(
        resumption,
        [
            &SessionResumption::SharedKeys {
                key_file: dir.path().join("ticket-keys")
            },
            &SessionResumption::SharedKeys {
                key_file: dir.path().join("ticket-keys")
            },
            &SessionResumption::SharedKeys {
                key_file: dir.path().join("partner-keys")
            },
            &SessionResumption::Off,
        ]
    );
    // Key files are watched for reload like every other file.
    assert!(loaded.files.contains(&dir.path().join("ticket-keys")));
    assert!(loaded.files.contains(&dir.path().join("partner-keys")));
    let proxy = loaded.proxy_protocol.unwrap();
    assert!(proxy.trusts("10.1.2.3".parse().unwrap()));
    assert!(!proxy.trusts("192.0.2.1".parse().unwrap()));

    let output = Command::new(process::BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].ends_with("resumption=shared-keys"), "{stdout}");
    assert!(lines[3].ends_with("resumption=off"), "{stdout}");

    let defaults = base(&dir);
    let path = dir.write("defaults.json", serde_json::to_vec(&defaults).unwrap());
    let loaded = common::load_config(&path).unwrap();
    assert_eq!(loaded.timeouts.drain_delay, Duration::from_millis(5000));
    assert!(loaded.proxy_protocol.is_none());
    assert_eq!(
        loaded.apps[0].session_resumption,
        SessionResumption::ProcessKeys
    );
}
