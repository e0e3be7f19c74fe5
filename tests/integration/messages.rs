//! Error messages a person can act on: each names the file (and the certificate's number in a
//! bundle), says what is wrong in words, says what to do, never repeats itself, and speaks the
//! flag names in sidecar mode:
//! - a misspelled `clientCertificateMode` is named once;
//! - a PEM file cut short says which certificate and which end line is missing (no byte lists);
//! - damaged base64 says which certificate of which file;
//! - an encrypted PKCS#8 key says so and gives the `openssl pkcs8 -topk8 -nocrypt` command;
//! - a DER CA file says so and gives the `openssl x509 -inform der -outform pem` command;
//! - `CERTGATE_CLIENT_CA="a.pem, b.pem"` reads `b.pem`, not ` b.pem`;
//! - the sidecar flags and environment variables that only the config file had
//!   (`--allowed-subject`, `--allowed-dns-san`, `--allowed-uri-san`, `--forward-fields`,
//!   `CERTGATE_CRL`, `CERTGATE_ALLOWED_HASH`, `CERTGATE_ALLOW_UNTRUSTED`) reach the config.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::path::PathBuf;

use common::{Pki, TempDir, app};
use process::cli::{SIDECAR, assert_says, certgate, exited};
use serde_json::json;

/// A folder with the test PKI and a config of one `require` app trusting `ca_file`, with
/// the key in `key_file`.
fn setup(ca_file: &str, key_file: &str) -> (Pki, TempDir, PathBuf) {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut require = app(
        "payments",
        &["payments.example.test"],
        "127.0.0.1:8080".parse().unwrap(),
        "require",
    );
    require["clientAuth"] = json!({ "trustedCaFiles": [ca_file] });
    require["serverCertificate"]["keyFile"] = key_file.into();
    let config = json!({ "listen": "127.0.0.1:8443", "apps": [require] });
    let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
    (pki, dir, path)
}

/// `check` on the config refuses it (exit 64); returns stderr.
fn refused(dir: &TempDir, path: &std::path::Path) -> String {
    let output = certgate(
        &["check", "--config", path.to_str().unwrap()],
        dir.path(),
        &[],
    );
    exited(&output, 64).1
}

#[test]
fn a_misspelled_mode_is_named_once() {
    let (_, dir, _) = setup("client-ca.pem", "server.key");
    let config = std::fs::read_to_string(dir.path().join("certgate.json"))
        .unwrap()
        .replace("\"require\"\n", "\"requird\"\n")
        .replace(
            "\"clientCertificateMode\": \"require\"",
            "\"clientCertificateMode\": \"requird\"",
        );
    let path = dir.write("certgate.json", config);
    let stderr = refused(&dir, &path);
    assert_eq!(stderr.matches("requird").count(), 1, "{stderr}");
    assert!(
        stderr.contains("app \"payments\": unknown clientCertificateMode \"requird\" (expected require, accept or ignore)"),
        "{stderr}"
    );
}

/// A `trustedCaFiles` bundle of the client CA then the server CA made into `damage(pem)` is
/// refused for its certificate 2, saying `says` and not `never`.
fn assert_second_bundle_certificate_refused(
    damage: impl FnOnce(&str) -> String,
    says: &str,
    never: &str,
) {
    let (pki, dir, path) = setup("bundle.pem", "server.key");
    let second = damage(&pki.server_ca.pem);
    dir.write("bundle.pem", format!("{}{second}", pki.client_ca.pem));
    assert_says(
        &refused(&dir, &path),
        &[
            "bundle.pem: certificate 2 is malformed PEM",
            says,
            "export it again as PEM",
        ],
        &[never],
    );
}

#[test]
fn a_pem_bundle_cut_short_names_the_certificate_and_the_missing_line() {
    assert_second_bundle_certificate_refused(
        |pem| pem[..pem.len() - 30].to_owned(),
        "-----END CERTIFICATE-----",
        // Bytes instead of text.
        "[45, 45",
    );
}

#[test]
fn damaged_base64_names_the_certificate_and_the_file() {
    assert_second_bundle_certificate_refused(
        |pem| pem.replacen("\nMII", "\nM!I", 1),
        "character '!' is not base64",
        "InvalidCharacter",
    );
}

#[test]
fn an_encrypted_key_says_how_to_decrypt_it() {
    let (_, dir, path) = setup("client-ca.pem", "encrypted.key");
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode([0x30u8; 96]);
    dir.write(
        "encrypted.key",
        format!(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}\n-----END ENCRYPTED PRIVATE KEY-----\n"
        ),
    );
    assert_says(
        &refused(&dir, &path),
        &[
            "encrypted.key holds an encrypted private key",
            "openssl pkcs8 -topk8 -nocrypt -in",
        ],
        &["holds no private key"],
    );
}

#[test]
fn a_der_ca_file_says_how_to_convert_it() {
    let (pki, dir, path) = setup("ca.der", "server.key");
    dir.write("ca.der", pki.client_ca.der.as_ref());
    assert_says(
        &refused(&dir, &path),
        &[
            "ca.der is a DER (binary) certificate",
            "openssl x509 -inform der -outform pem -in",
        ],
        &["holds no certificate"],
    );
}

#[test]
fn comma_separated_client_cas_in_the_environment_are_trimmed() {
    let (pki, dir, _) = setup("client-ca.pem", "server.key");
    dir.write("other-ca.pem", &pki.server_ca.pem);
    let output = certgate(
        &[&["check"][..], &SIDECAR].concat(),
        dir.path(),
        &[("CERTGATE_CLIENT_CA", "client-ca.pem, other-ca.pem")],
    );
    let (stdout, _) = exited(&output, 0);
    assert!(stdout.contains("trust=2 CA"), "{stdout}");
}

#[test]
fn sidecar_environment_variables_reach_the_config() {
    let (pki, dir, _) = setup("client-ca.pem", "server.key");
    let crl = pki.client_ca.crl(
        &[],
        time::OffsetDateTime::now_utc() + time::Duration::days(1),
    );
    dir.write("client-ca.crl", crl);
    let pin = "ab".repeat(32);
    let output = certgate(
        &[&["check"][..], &SIDECAR].concat(),
        dir.path(),
        &[
            ("CERTGATE_CLIENT_CA", "client-ca.pem"),
            ("CERTGATE_CRL", "client-ca.crl"),
            ("CERTGATE_ALLOWED_HASH", pin.as_str()),
            ("CERTGATE_ALLOW_UNTRUSTED", "true"),
            ("CERTGATE_ALLOWED_SUBJECT", "CN=alice,O=Acme;CN=bob"),
            ("CERTGATE_ALLOWED_DNS_SAN", "alice.example.test"),
            ("CERTGATE_ALLOWED_URI_SAN", "spiffe://example.test/alice"),
            ("CERTGATE_FORWARD_FIELDS", "Hash,DNS"),
        ],
    );
    let (stdout, _) = exited(&output, 0);
    for needle in [
        "trust=1 CA, 1 CRL, 1 pinned, untrusted allowed",
        "allowed-subjects=[CN=alice,O=Acme | CN=bob]",
        "allowed-dns-sans=[alice.example.test]",
        "allowed-uri-sans=[spiffe://example.test/alice]",
        "forward=Hash,DNS",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in {stdout}");
    }
}

#[test]
fn a_bad_sidecar_subject_flag_names_the_flag() {
    let (_, dir, _) = setup("client-ca.pem", "server.key");
    let flags = [
        "--client-ca",
        "client-ca.pem",
        "--allowed-subject",
        "/CN=a/O=b",
    ];
    let output = certgate(
        &[&["check"][..], &SIDECAR, &flags].concat(),
        dir.path(),
        &[],
    );
    let (_, stderr) = exited(&output, 64);
    assert!(
        stderr.contains("--allowed-subject value \"/CN=a/O=b\""),
        "{stderr}"
    );
    assert!(stderr.contains("O=b,CN=a"), "{stderr}");
}
