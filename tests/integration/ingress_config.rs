//! The Container Apps `ingress` block in the config (docs/config.md "The ingress block" and
//! "IP restrictions"):
//! - the block as Azure exports it (ARM casing, enum values in any letter case, `null` where
//!   Azure prints it) loads; `certgate check` lists the keys it ignores and the IP rules, and
//!   `certgate explain --config` shows the rules;
//! - unknown keys stay errors;
//! - values certgate cannot honour are errors naming the key and what to do: `transport` `tcp`,
//!   a non-zero `exposedPort`, port mappings, a traffic split, sticky sessions;
//! - `ipSecurityRestrictions`: mixed actions, a bad range, a missing or unknown action, two
//!   rules of one name are errors; a range with host bits is a warning finding.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::path::PathBuf;
use std::process::Command;

use common::{Pki, TempDir, app, load_config};
use serde_json::{Value, json};

/// Loads a config whose one app has `ingress` (merged over `clientCertificateMode`) and the
/// test PKI's certificates; the error chain when it is refused.
fn load_with_ingress(ingress: Value) -> Result<certgate::Config, String> {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut entry = app(
        "api",
        &["api.example.test"],
        "127.0.0.1:9".parse().unwrap(),
        "require",
    );
    entry["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    for (key, value) in ingress.as_object().unwrap() {
        entry["ingress"][key] = value.clone();
    }
    let path = dir.write(
        "certgate.json",
        serde_json::to_vec(&json!({ "apps": [entry] })).unwrap(),
    );
    load_config(&path).map_err(|error| certgate::error_chain(&error))
}

fn refused(ingress: Value) -> String {
    match load_with_ingress(ingress) {
        Ok(_) => panic!("the config was accepted"),
        Err(chain) => chain,
    }
}

fn assert_says(text: &str, says: &[&str]) {
    for part in says {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
}

#[test]
fn the_exported_block_loads_with_any_letter_case_and_nulls() {
    let config = load_with_ingress(json!({
        "external": false,
        "fqdn": null,
        "targetPort": null,
        "exposedPort": null,
        "transport": "HTTP2",
        "traffic": [{ "weight": 100, "latestRevision": false, "revisionName": "api--rev7", "label": "blue" }],
        "ipSecurityRestrictions": [
            { "name": "office", "description": null, "ipAddressRange": "203.0.113.0/24", "action": "ALLOW" },
            { "name": "lab", "description": "v6", "ipAddressRange": "2001:DB8::/32", "action": "allow" }
        ],
        "stickySessions": { "affinity": null },
        "clientCertificateMode": "rEqUiRe",
        "additionalPortMappings": []
    }))
    .unwrap();
    let app = &config.apps[0];
    assert_eq!(app.mode, certgate::ClientCertMode::Require);
    assert_eq!(
        app.ip_restrictions.as_ref().unwrap().to_string(),
        "Allow[office 203.0.113.0/24 | lab 2001:db8::/32]"
    );
    assert_eq!(
        app.ignored_ingress,
        [
            "external",
            "fqdn",
            "exposedPort",
            "additionalPortMappings",
            "traffic",
            "stickySessions"
        ]
    );
    assert!(config.findings.is_empty(), "{:?}", config.findings);
    let nulls = load_with_ingress(json!({
        "ipSecurityRestrictions": null, "traffic": null, "stickySessions": null,
        "additionalPortMappings": null, "external": null, "exposedPort": 0
    }))
    .unwrap();
    assert!(nulls.apps[0].ip_restrictions.is_none());
    assert_eq!(
        nulls.apps[0].ignored_ingress,
        [
            "external",
            "exposedPort",
            "additionalPortMappings",
            "traffic",
            "stickySessions"
        ]
    );
    let absent = load_with_ingress(json!({ "ipSecurityRestrictions": [] })).unwrap();
    assert!(absent.apps[0].ip_restrictions.is_none());
    assert!(absent.apps[0].ignored_ingress.is_empty());
}

#[test]
fn unknown_ingress_keys_stay_errors() {
    for key in ["ipSecurityRestriction", "allowInsecures"] {
        let chain = refused(json!({ key: null }));
        assert_says(&chain, &[&format!("unknown field `{key}`")]);
    }
    let chain = refused(json!({
        "ipSecurityRestrictions": [
            { "name": "a", "ipAddressRange": "10.0.0.0/8", "action": "Allow", "priority": 1 }
        ]
    }));
    assert_says(&chain, &["unknown field `priority`"]);
}

#[test]
fn a_tcp_transport_is_refused_with_what_to_do() {
    for value in ["tcp", "TCP"] {
        let chain = refused(json!({ "transport": value }));
        assert_says(
            &chain,
            &[
                "app \"api\"",
                &format!("ingress.transport \"{value}\""),
                "HTTP apps only",
                "auto, http or http2",
                "TCP proxy",
            ],
        );
    }
}

#[test]
fn values_certgate_cannot_honour_name_the_key_and_what_to_do() {
    let cases = [
        (
            json!({ "exposedPort": 5000 }),
            vec![
                "ingress.exposedPort 5000",
                "set it to 0 or remove it",
                "listen",
            ],
        ),
        (
            json!({ "additionalPortMappings": [{ "external": false, "targetPort": 9000, "exposedPort": 9000 }] }),
            vec!["ingress.additionalPortMappings has 1 entries", "null or []"],
        ),
        (
            json!({ "traffic": [{ "weight": 80, "latestRevision": true }, { "weight": 20, "revisionName": "api--old" }] }),
            vec![
                "ingress.traffic splits traffic 2 ways",
                "the app has no revisions",
                "weight\": 100",
            ],
        ),
        (
            json!({ "traffic": [{ "weight": 50, "latestRevision": true }] }),
            vec![
                "ingress.traffic gives its one entry weight 50",
                "weights summing to 100",
            ],
        ),
        (
            json!({ "stickySessions": { "affinity": "Sticky" } }),
            vec![
                "ingress.stickySessions.affinity \"sticky\"",
                "not served yet",
                "none",
            ],
        ),
    ];
    for (ingress, says) in cases {
        let chain = refused(ingress.clone());
        assert_says(&chain, &["app \"api\""]);
        assert_says(&chain, &says);
    }
}

#[test]
fn mixed_actions_and_bad_rules_are_config_errors() {
    let rule = |name: &str, range: &str, action: Value| json!({ "name": name, "description": "", "ipAddressRange": range, "action": action });
    let cases = [
        (
            vec![
                rule("office", "203.0.113.0/24", "Allow".into()),
                rule("bad", "198.51.100.0/24", "Deny".into()),
            ],
            vec![
                "mixes Allow rule \"office\" and Deny rule \"bad\"",
                "all rules of an app have one action",
            ],
        ),
        (
            vec![rule("typo", "203.0.113.0/33", "Allow".into())],
            vec![
                "rule \"typo\"",
                "ipAddressRange \"203.0.113.0/33\"",
                "CIDR range",
            ],
        ),
        (
            vec![rule("words", "office network", "Allow".into())],
            vec!["rule \"words\"", "neither a CIDR range"],
        ),
        (
            vec![rule("block", "10.0.0.0/8", "Block".into())],
            vec![
                "rule \"block\"",
                "unknown action \"Block\"",
                "Allow or Deny",
            ],
        ),
        (
            vec![rule("none", "10.0.0.0/8", Value::Null)],
            vec!["rule \"none\"", "no action"],
        ),
        (
            vec![
                rule("twice", "10.0.0.0/8", "Deny".into()),
                rule("twice", "10.1.0.0/16", "Deny".into()),
            ],
            vec!["two rules named \"twice\""],
        ),
        (
            vec![rule(" ", "10.0.0.0/8", "Deny".into())],
            vec!["a rule with an empty name"],
        ),
    ];
    for (rules, says) in cases {
        let chain = refused(json!({ "ipSecurityRestrictions": rules }));
        assert_says(&chain, &["app \"api\"", "ingress.ipSecurityRestrictions"]);
        assert_says(&chain, &says);
    }
}

#[test]
fn a_range_with_host_bits_is_read_as_its_network_with_a_warning() {
    let config = load_with_ingress(json!({
        "ipSecurityRestrictions": [
            { "name": "sloppy", "ipAddressRange": "10.1.2.3/8", "action": "Deny" }
        ]
    }))
    .unwrap();
    assert_eq!(
        config.apps[0].ip_restrictions.as_ref().unwrap().to_string(),
        "Deny[sloppy 10.0.0.0/8]"
    );
    let findings: Vec<String> = config.findings.iter().map(ToString::to_string).collect();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_says(
        &findings[0],
        &[
            "warning",
            "\"sloppy\"",
            "\"10.1.2.3/8\"",
            "read as 10.0.0.0/8",
        ],
    );
}

/// The example's folder layout in a temp dir: `config/containerapps-ingress.json` and the
/// development PKI in `certs/`.
fn example_layout() -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    certgate::pki::init(&dir.path().join("certs"), false).unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    let path = dir.path().join("config/containerapps-ingress.json");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/containerapps-ingress.json"
        ),
        &path,
    )
    .unwrap();
    (dir, path)
}

#[test]
fn check_lists_the_ignored_keys_and_the_rules_of_the_exported_block() {
    let (dir, path) = example_layout();
    let output = Command::new(process::BIN)
        .args(["check", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let line = stdout.lines().next().unwrap();
    assert_says(
        line,
        &[
            "api: hosts=localhost custom-domains=[localhost certificates.dev-2026] mode=require upstream=http://127.0.0.1:8080",
            " ip-restrictions=Allow[office 203.0.113.0/24 | this-host 127.0.0.1/32 | this-host-v6 ::1/128]",
            " ignored=ingress.external,ingress.fqdn,ingress.exposedPort,ingress.additionalPortMappings,ingress.traffic,ingress.stickySessions",
        ],
    );
    assert!(stderr.is_empty(), "no findings: {stderr}");
}

#[test]
fn explain_with_the_config_shows_the_rules() {
    let (dir, path) = example_layout();
    let client = dir.path().join("certs/client.pem");
    let run = |format: &str| {
        Command::new(process::BIN)
            .args(["explain", "--config"])
            .arg(&path)
            .args(["--app", "api", "--format", format])
            .arg(&client)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let text = run("text");
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(0), "{stdout}");
    assert_says(
        &stdout,
        &[
            "ipSecurityRestrictions (Allow: only these client addresses may connect",
            "  office: 203.0.113.0/24 (HQ)\n",
            "  this-host-v6: ::1/128\n",
        ],
    );
    let json: Value = serde_json::from_slice(&run("json").stdout).unwrap();
    assert_eq!(json["ip_restrictions"]["action"], "Allow");
    assert_eq!(
        json["ip_restrictions"]["rules"][0],
        json!({ "name": "office", "range": "203.0.113.0/24", "description": "HQ" })
    );
}
