//! `certgate check` catches what would otherwise fail later, and has a sidecar form:
//! - an exact host the server certificate does not cover: an error (exit 64);
//! - a wildcard host it does not cover: a warning (exit 0);
//! - a host under a single-label wildcard (`billing.localhost`, `*.localhost`): the error says
//!   clients never match such a wildcard and names the `pki init --host` command;
//! - a leaf (non-CA) certificate in `trustedCaFiles`: a warning naming the file;
//! - an `allowedSubjects` entry in OpenSSL's `/CN=a/O=b` form: an error showing the RFC 4514
//!   form; a valid entry listing CN last: a warning about the RDN order;
//! - `admin` equal to or overlapping `listen`: an error, exit 64;
//! - `check --upstream … --cert … --key … --client-ca …` validates the sidecar flags;
//! - the summary line per app shows its allow-lists, forwarded fields and `rejectWith`;
//! - an `allowUntrusted` app with name-based authorization entries or allow-lists: a warning per
//!   rule and one for the allow-lists, and none for a rule of pins alone.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::path::Path;
use std::process::Output;

use common::{Pki, TempDir, app};
use process::cli::{SIDECAR, assert_says, certgate, exited};
use serde_json::{Value, json};

fn check(args: &[&str], dir: &Path) -> Output {
    certgate(&[&["check"][..], args].concat(), dir, &[])
}

/// Writes a config of one `require` app (with `edit` applied) and runs `check` on it.
fn check_config(edit: impl FnOnce(&mut Value, &mut Value)) -> Output {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("leaf.pem", pki.client("a-leaf").pem);
    let mut require = app(
        "payments",
        &["payments.example.test"],
        "127.0.0.1:8080".parse().unwrap(),
        "require",
    );
    require["clientAuth"] = json!({ "trustedCaFiles": ["client-ca.pem"] });
    let mut config = json!({ "listen": "127.0.0.1:8443", "apps": [] });
    edit(&mut config, &mut require);
    config["apps"] = json!([require]);
    let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
    check(&["--config", path.to_str().unwrap()], dir.path())
}

/// [`check_config`], asserting it exits with `code`; its stdout and stderr.
fn check_app(code: i32, edit: impl FnOnce(&mut Value, &mut Value)) -> (String, String) {
    exited(&check_config(edit), code)
}

#[test]
fn an_exact_host_the_server_certificate_does_not_cover_is_an_error() {
    let (_, stderr) = check_app(64, |_, app| {
        app["hosts"] = json!(["payments.other.test"]);
    });
    assert_says(
        &stderr,
        &[
            "error: app \"payments\": host payments.other.test is not covered by the server certificate",
            "server.pem",
            "*.example.test",
        ],
        &[],
    );
}

#[test]
fn a_host_under_a_single_label_wildcard_says_why_it_is_not_covered_and_what_to_do() {
    let dir = TempDir::new();
    // `pki init` lists `*.localhost`, which no client matches `billing.localhost` against.
    certgate::pki::init(dir.path(), false).unwrap();
    let mut billing = app(
        "billing",
        &["billing.localhost"],
        "127.0.0.1:8080".parse().unwrap(),
        "require",
    );
    billing["clientAuth"] = json!({ "trustedCaFiles": ["ca.pem"] });
    let config = json!({ "listen": "127.0.0.1:8443", "apps": [billing] });
    dir.write("certgate.json", config.to_string());
    let (_, stderr) = exited(&check(&["--config", "certgate.json"], dir.path()), 64);
    assert_says(
        &stderr,
        &[
            "error: app \"billing\": host billing.localhost is not covered by the server certificate",
            "its *.localhost stands directly above a single label",
            "OpenSSL and webpki",
            "*.com",
            "certgate pki init DIR --host billing.localhost",
        ],
        &["in its subjectAltName"],
    );
}

#[test]
fn a_wildcard_host_the_server_certificate_does_not_cover_is_a_warning() {
    let (stdout, stderr) = check_app(0, |_, app| {
        app["hosts"] = json!(["payments.example.test", "*.other.test"]);
    });
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_says(
        &stderr,
        &["warning: app \"payments\": host *.other.test is not covered"],
        &[],
    );
}

#[test]
fn a_covered_config_has_no_findings() {
    let (_, stderr) = check_app(0, |_, _| {});
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn a_leaf_certificate_among_trusted_cas_is_a_warning_naming_it() {
    let (_, stderr) = check_app(0, |_, app| {
        app["clientAuth"]["trustedCaFiles"] = json!(["client-ca.pem", "leaf.pem"]);
    });
    assert_says(
        &stderr,
        &[
            "certificate 1 in",
            "leaf.pem (CN=a-leaf) is not a CA certificate",
            "allowedHashes",
        ],
        &[],
    );
}

#[test]
fn an_openssl_style_subject_is_an_error_showing_the_rfc4514_form() {
    let (_, stderr) = check_app(64, |_, app| {
        app["clientAuth"]["allowedSubjects"] = json!(["/CN=alice/O=Acme"]);
    });
    assert_says(
        &stderr,
        &[
            "\"/CN=alice/O=Acme\"",
            "certgate reads RFC 4514, most specific RDN first: O=Acme,CN=alice",
        ],
        &[],
    );
}

#[test]
fn a_subject_listing_cn_last_is_a_warning_about_rdn_order() {
    let (_, stderr) = check_app(0, |_, app| {
        app["clientAuth"]["allowedSubjects"] = json!(["O=Acme,CN=alice"]);
    });
    assert_says(
        &stderr,
        &["warning:", "lists CN last", "\"CN=alice,O=Acme\""],
        &[],
    );
}

#[test]
fn an_admin_address_equal_to_listen_is_an_error() {
    for admin in ["127.0.0.1:8443", "0.0.0.0:8443"] {
        let output = check_config(|config, _| {
            config["admin"] = admin.into();
        });
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{admin}: {stderr}");
        assert!(
            stderr.contains(&format!("admin {admin} overlaps listen 127.0.0.1:8443")),
            "{stderr}"
        );
    }
}

#[test]
fn check_validates_the_sidecar_flags_too() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let flags = [
        "--client-ca",
        "client-ca.pem",
        "--allowed-subject",
        "CN=alice,O=Acme",
        "--allowed-uri-san",
        "spiffe://example.test/alice",
        "--forward-fields",
        "Hash,Subject,URI",
        "--reject-with",
        "http",
    ];
    let output = check(&[&SIDECAR[..], &flags].concat(), dir.path());
    let (stdout, _) = exited(&output, 0);
    let line = stdout.lines().next().unwrap();
    for needle in [
        "app: hosts=* (catch-all) mode=require",
        "allowed-subjects=[CN=alice,O=Acme]",
        "allowed-dns-sans=[]",
        "allowed-uri-sans=[spiffe://example.test/alice]",
        "forward=Hash,Subject,URI",
        "reject-with=http",
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    // The sidecar without a trust source is told about flags, not config keys.
    let output = check(&SIDECAR, dir.path());
    let (_, stderr) = exited(&output, 64);
    assert!(
        stderr.contains("pass --client-ca, --allowed-hash or --allow-untrusted"),
        "{stderr}"
    );
    assert!(!stderr.contains("trustedCaFiles"), "{stderr}");
}

#[test]
fn the_summary_line_shows_allow_lists_and_forwarded_fields() {
    let (stdout, _) = check_app(0, |_, app| {
        app["clientAuth"]["allowedDnsSans"] = json!(["alice.example.test"]);
        app["forwardClientCert"] = json!({ "fields": ["Hash", "Cert", "DNS"] });
    });
    assert_says(
        &stdout,
        &[
            "allowed-dns-sans=[alice.example.test]",
            "forward=Hash,Cert,DNS",
            "reject-with=tls",
        ],
        &[],
    );
}

#[test]
fn allow_untrusted_with_rules_by_name_is_a_warning() {
    let (stdout, stderr) = check_app(0, |_, app| {
        app["clientAuth"]["allowUntrusted"] = json!(true);
        app["clientAuth"]["allowedUriSans"] = json!(["spiffe://corp/ops/alice"]);
        app["authorization"] = json!([
            { "pathPrefix": "/admin", "allowedUriSans": ["spiffe://corp/ops/*"] },
            { "pathPrefix": "/pinned", "allowedHashes": ["ab".repeat(32)] },
            { "pathPrefix": "/", "allowAnyVerified": true }
        ]);
    });
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_says(
        &stderr,
        &[
            "warning: app \"payments\": clientAuth.allowedUriSans is set with allowUntrusted",
            "warning: app \"payments\": authorization[0] admits clients by allowedUriSans on an app with allowUntrusted",
            "warning: app \"payments\": authorization[2] admits clients by allowAnyVerified on an app with allowUntrusted",
        ],
        &["authorization[1]"],
    );
}

/// The entry check suggests for a refused `allowedSubjects` value, from its error line.
fn suggested_subject(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|line| line.contains("most specific RDN first: "))
        .unwrap_or_else(|| panic!("no suggestion in {stderr}"));
    line.split("most specific RDN first: ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_openssl_subject_leads_to_an_entry_that_admits_that_certificate() {
    if !common::tools::openssl() || !common::tools::curl() {
        return;
    }
    let upstream = common::echo_upstream().await;
    // OpenSSL 3's default output, RFC 2253 (already RFC 4514), and the `/O=…/CN=…` form.
    for nameopt in [None, Some("RFC2253"), Some("compat")] {
        let dir = TempDir::new();
        certgate::pki::init(dir.path(), false).unwrap();
        let mut args = vec!["x509", "-in", "client.pem", "-noout", "-subject"];
        args.extend(nameopt.iter().flat_map(|nameopt| ["-nameopt", nameopt]));
        let printed = common::tools::run_openssl(dir.path(), &args).stdout;
        let pasted = String::from_utf8(printed).unwrap();
        let pasted = pasted.trim().strip_prefix("subject=").unwrap().to_owned();
        let config = |entry: &str| {
            let mut require = app("require", &["require.localhost"], upstream, "require");
            require["clientAuth"] =
                json!({ "trustedCaFiles": ["ca.pem"], "allowedSubjects": [entry] });
            json!({ "listen": "127.0.0.1:0", "apps": [require] })
        };
        let write = |config: &Value| dir.write("certgate.json", config.to_string());
        write(&config(&pasted));
        let output = check(&["--config", "certgate.json"], dir.path());
        let entry = match output.status.code() {
            Some(0) => pasted.clone(),
            _ => suggested_subject(&String::from_utf8_lossy(&output.stderr)),
        };
        write(&config(&entry));
        exited(&check(&["--config", "certgate.json"], dir.path()), 0);

        let (path, config) = (dir.path().to_owned(), config(&entry));
        let gateway = common::Gateway::start(dir, config).await;
        let resolve = format!("require.localhost:{}:127.0.0.1", gateway.addr.port());
        let url = format!("https://require.localhost:{}/", gateway.addr.port());
        let curl = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--resolve",
                &resolve,
            ])
            .args([
                "--cacert",
                "ca.pem",
                "--cert",
                "client.pem",
                "--key",
                "client.key",
                &url,
            ])
            .current_dir(&path)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&curl.stdout),
            "200",
            "pasted {pasted:?} (-nameopt {nameopt:?}), entry {entry:?}"
        );
    }
}
