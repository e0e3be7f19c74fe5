//! `certgate explain` and the handshake's refusal line name the certificate and say why:
//! - a passing certificate: exit 0 and every JSON field (verdict, leaf facts, trust decision,
//!   allow-lists, the exact XFCC);
//! - each refusal reason a certificate can have: `unknown_issuer` (with "different issuer"),
//!   `expired`, `not_yet_valid` (also via `--at`), `revoked` (naming the CRL file, the entry's
//!   revocation time and reason), `crl_expired`,
//!   `bad_eku`, `bad_signature`, `not_allowed`, `unsupported_certificate` (an X.509 v1
//!   certificate made by `openssl x509 -req`): exit 1, reason and detail;
//! - the RFC 4514 order trap (`-subj "/CN=alice/O=Acme"` against `CN=alice,O=Acme`) is named;
//! - `--host` picks the app as SNI would; the sidecar form takes the policy flags;
//! - usage errors exit 64; the text form leads with the verdict;
//! - the `handshake refused` warn line carries the subject (as certgate writes it), issuer,
//!   serial, hash and detail; for a revoked certificate the CRL file, when and why;
//! - the trust decision of an expired or revoked certificate from a trusted CA says it chains
//!   to that CA and what refuses it (text and JSON), one from an unknown CA "not trusted";
//! - times are RFC 3339, also for an expired intermediate (rustls words it in Unix seconds).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::presenting::{get_to_end, presenting_client};
use common::{Ca, Leaf, LeafSpec, Pki, TempDir, app, tools};
use process::cli::SIDECAR;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// A config with a `require` app (`require.example.test`) trusting the client CA, with
/// `client_auth` merged into its `clientAuth`; returns the folder and the config path.
fn setup(pki: &Pki, client_auth: Value) -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    pki.write(&dir);
    let upstream = "127.0.0.1:9".parse().unwrap();
    let mut require = app("require", &["require.example.test"], upstream, "require");
    let mut auth = json!({ "trustedCaFiles": ["client-ca.pem"] });
    for (key, value) in client_auth.as_object().unwrap() {
        auth[key] = value.clone();
    }
    require["clientAuth"] = auth;
    let config = json!({ "listen": "127.0.0.1:0", "apps": [require] });
    let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
    (dir, path)
}

fn explain(args: &[&str]) -> Output {
    Command::new(process::BIN)
        .arg("explain")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `explain --format json` for `leaf` (written as PEM, chain included) against the app;
/// returns the exit code and the JSON.
fn explain_json(dir: &TempDir, config: &Path, leaf: &Leaf, extra: &[&str]) -> (i32, Value) {
    let cert = dir.write("presented.pem", leaf.chain_pem());
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--app",
        "require",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    args.push(cert.to_str().unwrap());
    let output = explain(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap(), json)
}

fn assert_refused(json: &Value, code: i32, reason: &str, detail: &str) {
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(json["verdict"], "refused", "{json:#}");
    assert_eq!(json["reason"], reason, "{json:#}");
    let text = json["detail"].as_str().unwrap();
    assert!(
        text.contains(detail),
        "detail {text:?} does not say {detail:?}"
    );
    assert_eq!(json["xfcc"], Value::Null);
}

/// `explain --format json` of `leaf` against the `require` app with `client_auth` merged
/// into its `clientAuth` (and a `client-ca.crl` of `crl`, when given): asserts the refusal
/// says `reason` with `detail`; the JSON.
fn assert_explained_refusal(
    pki: &Pki,
    client_auth: Value,
    crl: Option<String>,
    leaf: &Leaf,
    reason: &str,
    detail: &str,
) -> Value {
    let (dir, config) = setup(pki, client_auth);
    if let Some(crl) = crl {
        dir.write("client-ca.crl", crl);
    }
    let (code, json) = explain_json(&dir, &config, leaf, &[]);
    assert_refused(&json, code, reason, detail);
    json
}

/// `t` as explain writes times: RFC 3339, whole seconds.
fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Whether `text` is an RFC 3339 time with whole seconds in UTC, as explain writes them.
fn is_rfc3339(text: &str) -> bool {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .is_ok_and(|t| rfc3339(t) == text)
}

fn serial_of(leaf: &Leaf) -> String {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.der()).unwrap();
    parsed.raw_serial_as_string()
}

#[test]
fn a_passing_certificate_is_explained_field_by_field() {
    let pki = Pki::new();
    let (dir, config) = setup(&pki, json!({}));
    let mut spec = LeafSpec::client("alice");
    spec.dns = vec!["alice.example.test".into()];
    spec.uris = vec!["spiffe://example.test/alice".into()];
    let alice = pki.client_ca.issue(spec.clone());
    let (code, json) = explain_json(&dir, &config, &alice, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["verdict"], "accepted");
    assert_eq!(json["reason"], Value::Null);
    assert_eq!(json["detail"], Value::Null);
    assert_eq!(json["app"], "require");
    assert_eq!(json["mode"], "require");
    let cert = &json["certificate"];
    assert_eq!(cert["subject"], "CN=alice");
    assert_eq!(cert["issuer"], "CN=certgate test client CA");
    assert_eq!(cert["serial"], serial_of(&alice));
    assert_eq!(cert["not_before"], rfc3339(spec.not_before));
    assert_eq!(cert["not_after"], rfc3339(spec.not_after));
    assert_eq!(cert["key_type"], "ECDSA P-256");
    assert_eq!(cert["ekus"], json!(["clientAuth"]));
    assert_eq!(cert["dns_sans"], json!(["alice.example.test"]));
    assert_eq!(cert["uri_sans"], json!(["spiffe://example.test/alice"]));
    assert_eq!(cert["version"], 3);
    assert_eq!(cert["sha256"], alice.hash_hex());
    let trust = &json["trust"];
    assert_eq!(trust["decision"], "ca");
    assert_eq!(trust["pinned"], false);
    assert_eq!(trust["pins"], 0);
    assert_eq!(trust["allow_untrusted"], false);
    assert_eq!(trust["cas"][0]["subject"], "CN=certgate test client CA");
    assert_eq!(trust["cas"][0]["result"], "vouches");
    assert_eq!(trust["crls"], json!([]));
    assert_eq!(
        json["allow"],
        json!({ "configured": false, "matched": null, "closest": [] })
    );
    let xfcc = json["xfcc"].as_str().unwrap();
    assert!(
        xfcc.starts_with(&format!(
            "Hash={};Cert=\"-----BEGIN%20CERTIFICATE",
            alice.hash_hex()
        )),
        "{xfcc}"
    );
    assert!(xfcc.contains(";Chain=\""), "{xfcc}");
}

#[test]
fn a_pinned_self_signed_certificate_names_the_pin() {
    let pki = Pki::new();
    let pinned = Leaf::self_signed(LeafSpec::client("pinned"));
    let (dir, config) = setup(&pki, json!({ "allowedHashes": [pinned.hash_hex()] }));
    let (code, json) = explain_json(&dir, &config, &pinned, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["trust"]["decision"], "pin");
    assert_eq!(json["trust"]["pinned"], true);
}

#[test]
fn an_unknown_issuer_is_explained_as_a_different_issuer() {
    let pki = Pki::new();
    let stranger = Ca::root("stranger CA").issue(LeafSpec::client("mallory"));
    let json = assert_explained_refusal(
        &pki,
        json!({}),
        None,
        &stranger,
        "unknown_issuer",
        "CN=stranger CA",
    );
    assert_eq!(json["trust"]["decision"], Value::Null);
    assert_eq!(json["trust"]["summary"], "not trusted");
    assert_eq!(json["trust"]["cas"][0]["result"], "refuses");
    let why = json["trust"]["cas"][0]["detail"].as_str().unwrap();
    assert!(why.contains("different issuer"), "{why}");
}

#[test]
fn an_expired_certificate_is_explained() {
    let pki = Pki::new();
    let mut spec = LeafSpec::client("late");
    spec.not_before = OffsetDateTime::now_utc() - time::Duration::days(30);
    spec.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let late = pki.client_ca.issue(spec.clone());
    let expired_at = format!("expired at {}", rfc3339(spec.not_after));
    let json = assert_explained_refusal(&pki, json!({}), None, &late, "expired", &expired_at);
    // Its CA still vouches for it: it is expired, not untrusted.
    assert_eq!(json["trust"]["decision"], Value::Null);
    assert_eq!(
        json["trust"]["summary"],
        format!("chains to a trusted CA, but {expired_at}")
    );
}

#[test]
fn an_expired_certificate_from_an_unknown_ca_is_not_trusted() {
    let pki = Pki::new();
    let mut spec = LeafSpec::client("late stranger");
    spec.not_before = OffsetDateTime::now_utc() - time::Duration::days(30);
    spec.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let late = Ca::root("stranger CA").issue(spec);
    let json = assert_explained_refusal(&pki, json!({}), None, &late, "expired", "expired at");
    assert_eq!(json["trust"]["summary"], "not trusted");
}

#[test]
fn the_text_form_says_an_expired_certificate_still_chains_to_a_trusted_ca() {
    let pki = Pki::new();
    let (dir, config) = setup(&pki, json!({}));
    let mut spec = LeafSpec::client("late");
    spec.not_before = OffsetDateTime::now_utc() - time::Duration::days(30);
    spec.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let late = dir.write("late.pem", pki.client_ca.issue(spec.clone()).pem);
    let output = explain(&[
        "--config",
        config.to_str().unwrap(),
        "--app",
        "require",
        late.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    let expired_at = rfc3339(spec.not_after);
    assert!(
        text.contains(&format!(
            "detail:  the certificate expired at {expired_at}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "decision:   chains to a trusted CA, but expired at {expired_at}\n"
        )),
        "{text}"
    );
    assert!(!text.contains("not trusted"), "{text}");
}

#[test]
fn an_expired_intermediate_is_explained_with_rfc3339_times() {
    let pki = Pki::new();
    let (dir, config) = setup(&pki, json!({}));
    let mut params = common::ca_params("expired intermediate");
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(30);
    params.not_after = OffsetDateTime::now_utc() - time::Duration::days(2);
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&pki.client_ca.params, &pki.client_ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let intermediate = Ca {
        sent_after_leaf: vec![cert.der().clone()],
        der: cert.der().clone(),
        pem: cert.pem(),
        params,
        key,
    };
    let mut spec = LeafSpec::client("under an expired intermediate");
    spec.not_before = OffsetDateTime::now_utc() - time::Duration::days(10);
    let leaf = intermediate.issue(spec);
    let (code, json) = explain_json(&dir, &config, &leaf, &[]);
    assert_refused(&json, code, "expired", "expired at");
    let detail = json["detail"].as_str().unwrap();
    let at = detail
        .split("expired at ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    assert!(is_rfc3339(at), "{detail}");
    assert!(!detail.contains("UNIX"), "{detail}");
}

#[test]
fn a_certificate_not_yet_valid_is_explained() {
    let pki = Pki::new();
    let mut spec = LeafSpec::client("early");
    spec.not_before = OffsetDateTime::now_utc() + time::Duration::days(1);
    let early = pki.client_ca.issue(spec);
    let detail = "not valid before";
    assert_explained_refusal(&pki, json!({}), None, &early, "not_yet_valid", detail);
}

#[test]
fn at_judges_the_certificate_at_another_time() {
    let pki = Pki::new();
    let (dir, config) = setup(&pki, json!({}));
    let alice = pki.client("alice");
    let (code, json) = explain_json(&dir, &config, &alice, &["--at", "2090-01-01T00:00:00Z"]);
    assert_refused(&json, code, "expired", "expired at");
    assert_eq!(json["at"], "2090-01-01T00:00:00Z");
    let (code, json) = explain_json(&dir, &config, &alice, &["--at", "2000-01-01T00:00:00Z"]);
    assert_refused(&json, code, "not_yet_valid", "not valid before");
}

#[test]
fn a_revoked_certificate_names_the_crl_that_revokes_it() {
    let pki = Pki::new();
    let alice = pki.client("alice");
    let crl = pki.client_ca.crl(
        &[&alice],
        OffsetDateTime::now_utc() + time::Duration::days(1),
    );
    let crls = json!({ "crlFiles": ["client-ca.crl"] });
    let json = assert_explained_refusal(&pki, crls, Some(crl), &alice, "revoked", "revoked");
    let crl = &json["trust"]["crls"][0];
    assert_eq!(crl["issuer"], "CN=certgate test client CA");
    assert!(
        crl["source"].as_str().unwrap().ends_with("client-ca.crl"),
        "{crl}"
    );
    assert_eq!(crl["revokes_certificate"], true);
    assert_eq!(crl["expired"], false);
    // The CRL entry's revocationDate and reasonCode.
    let since = crl["revocation_time"].as_str().unwrap();
    assert!(is_rfc3339(since), "{crl}");
    assert_eq!(crl["revocation_reason"], "keyCompromise");
    let detail = json["detail"].as_str().unwrap();
    let serial = serial_of(&alice).replace(':', "").to_uppercase();
    let serial = serial.trim_start_matches("00");
    assert!(detail.starts_with("the crl from "), "{detail}");
    assert!(
        detail.contains(&format!(
            "client-ca.crl lists certificate {serial} (CN=alice) as revoked since {since} (keyCompromise)"
        )),
        "{detail}"
    );
    assert_eq!(json["trust"]["decision"], Value::Null);
    assert_eq!(
        json["trust"]["summary"],
        format!("chains to a trusted CA, but revoked: {detail}")
    );
}

#[test]
fn the_handshake_refusal_line_says_which_crl_revoked_the_certificate_when_and_why() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let alice = pki.client("alice");
    dir.write(
        "client-ca.crl",
        pki.client_ca.crl(
            &[&alice],
            OffsetDateTime::now_utc() + time::Duration::days(1),
        ),
    );
    let (mut child, addr) = sidecar(&dir, &["--crl", "client-ca.crl"]);
    let options = common::ClientOptions::new(&pki, "localhost").with_identity(alice.identity());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(common::get(addr, &options, "localhost", "/"));
    assert!(result.is_err(), "alice must be refused");
    let (_, refused) = refusal_line(&mut child);
    assert_eq!(refused["failure"], "revoked", "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the crl from client-ca.crl lists certificate"),
        "{detail}"
    );
    let since = detail
        .split("as revoked since ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" (keyCompromise)"))
        .unwrap_or_else(|| panic!("no time and reason in {detail:?}"));
    assert!(is_rfc3339(since), "{detail}");
}

#[test]
fn an_expired_crl_is_explained() {
    let pki = Pki::new();
    let alice = pki.client("alice");
    let crl = pki
        .client_ca
        .crl(&[], OffsetDateTime::now_utc() - time::Duration::hours(1));
    let crls = json!({ "crlFiles": ["client-ca.crl"] });
    let reason = "crl_expired";
    let json = assert_explained_refusal(&pki, crls, Some(crl), &alice, reason, "nextUpdate");
    assert_eq!(json["trust"]["crls"][0]["expired"], true);
}

#[test]
fn a_certificate_without_the_client_auth_eku_is_explained() {
    let pki = Pki::new();
    let mut spec = LeafSpec::client("server-only");
    spec.ekus = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = pki.client_ca.issue(spec);
    let json = assert_explained_refusal(&pki, json!({}), None, &leaf, "bad_eku", "clientAuth");
    assert_eq!(json["certificate"]["ekus"], json!(["serverAuth"]));
}

#[test]
fn a_certificate_with_a_broken_signature_is_explained() {
    let pki = Pki::new();
    let mut leaf = pki.client("tampered");
    let mut der = leaf.chain[0].to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    leaf.chain[0] = der.into();
    assert_explained_refusal(&pki, json!({}), None, &leaf, "bad_signature", "signature");
}

/// A leaf whose subject is made like `-subj "/CN=alice/O=Acme"`: CN first in the certificate.
fn alice_of_acme(ca: &Ca) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "alice");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x42, 0x01]));
    let serial = params.serial_number.clone().unwrap();
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
        .unwrap();
    Leaf {
        chain: vec![cert.der().clone()],
        pem: cert.pem(),
        key,
        serial,
    }
}

#[test]
fn the_rfc4514_order_trap_is_named() {
    let pki = Pki::new();
    let (dir, config) = setup(
        &pki,
        json!({ "allowedSubjects": ["CN=alice,O=Acme", "CN=bob"] }),
    );
    let alice = alice_of_acme(&pki.client_ca);
    let (code, json) = explain_json(&dir, &config, &alice, &[]);
    assert_refused(
        &json,
        code,
        "not_allowed",
        "subject O=Acme,CN=alice is not in allowedSubjects",
    );
    assert_eq!(json["certificate"]["subject"], "O=Acme,CN=alice");
    assert_eq!(json["allow"]["configured"], true);
    assert_eq!(json["allow"]["matched"], Value::Null);
    let closest = &json["allow"]["closest"][0];
    assert_eq!(closest["entry"], "CN=alice,O=Acme");
    let why = closest["why"].as_str().unwrap();
    assert!(
        why.contains("different order") && why.contains("O=Acme,CN=alice"),
        "{why}"
    );
    // With the string explain printed, the same certificate passes.
    let (dir, config) = setup(&pki, json!({ "allowedSubjects": ["O=Acme,CN=alice"] }));
    let (code, json) = explain_json(&dir, &config, &alice, &[]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(
        json["allow"]["matched"],
        json!({ "list": "allowedSubjects", "entry": "O=Acme,CN=alice" })
    );
}

/// An X.509 version 1 client certificate, made the way OpenSSL 3.0's `x509 -req` makes one
/// without `-extfile`; `None` when openssl is missing (outside CI).
fn openssl_v1_client(dir: &TempDir, ca: &Ca) -> Option<PathBuf> {
    if !tools::openssl() {
        return None;
    }
    dir.write("ca.pem", &ca.pem);
    dir.write("ca.key", ca.key.serialize_pem());
    let run = |args: &[&str]| tools::run_openssl(dir.path(), args);
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "v1.key",
        "-subj",
        "/CN=v1-client",
        "-out",
        "v1.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "v1.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-out",
        "v1.pem",
    ]);
    let path = dir.path().join("v1.pem");
    let der = common_pem_der(&path);
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        parsed.version().0,
        0,
        "this openssl made a v3 certificate; the test needs the v1 that OpenSSL 3.0 makes"
    );
    Some(path)
}

fn common_pem_der(path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(path)
        .unwrap()
        .to_vec()
}

#[test]
fn an_x509_version_1_certificate_is_unsupported_not_an_unknown_issuer() {
    let pki = Pki::new();
    let (dir, config) = setup(&pki, json!({}));
    let Some(v1) = openssl_v1_client(&dir, &pki.client_ca) else {
        return;
    };
    let output = explain(&[
        "--config",
        config.to_str().unwrap(),
        "--host",
        "require.example.test",
        "--format",
        "json",
        v1.to_str().unwrap(),
    ]);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_refused(
        &json,
        output.status.code().unwrap(),
        "unsupported_certificate",
        "X.509 version 1 certificate; webpki accepts only version 3",
    );
    assert_eq!(json["certificate"]["version"], 1);
}

/// The JSON `handshake refused` line `child` writes next, as text and parsed.
fn refusal_line(child: &mut process::Child) -> (String, Value) {
    let lines = child.wait_for_line(process::Stream::Stderr, |line| {
        line.contains("handshake refused")
    });
    let line = lines.last().unwrap().clone();
    let json = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    (line, json)
}

/// `certgate run` in its sidecar form in `dir`, logging JSON, trusting the client CA, with
/// `flags` added; the child and the address it serves on. No request reaches the upstream.
fn sidecar(dir: &TempDir, flags: &[&str]) -> (process::Child, std::net::SocketAddr) {
    let run = ["--log-format", "json", "run", "--listen", "127.0.0.1:0"];
    let trust = ["--client-ca", "client-ca.pem"];
    let args = [&run[..], &SIDECAR, &trust, flags].concat();
    let mut child = process::Child::spawn(&args, dir.path(), &[]);
    let addr = child.wait_serving().listen();
    (child, addr)
}

#[test]
fn the_handshake_refusal_line_names_the_certificate_and_says_why() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let Some(v1) = openssl_v1_client(&dir, &pki.client_ca) else {
        return;
    };
    let (mut child, addr) = sidecar(&dir, &[]);
    // rustls' own client refuses to load a v1 certificate, so present it through a resolver.
    let key = <rustls_pki_types::PrivateKeyDer<'static> as rustls_pki_types::pem::PemObject>::from_pem_file(
        dir.path().join("v1.key"),
    )
    .unwrap();
    let config = presenting_client(&pki, vec![common_pem_der(&v1).into()], key);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(get_to_end(addr, config, "localhost"));
    assert!(
        result.is_err(),
        "the v1 certificate must be refused: {result:?}"
    );
    let (line, refused) = refusal_line(&mut child);
    assert_eq!(refused["failure"], "unsupported_certificate", "{refused}");
    assert_eq!(refused["client.subject"], "CN=v1-client", "{refused}");
    assert_eq!(
        refused["client.issuer"], "CN=certgate test client CA",
        "{refused}"
    );
    let der = common_pem_der(&v1);
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(refused["client.serial"], parsed.raw_serial_as_string());
    assert_eq!(
        refused["client.hash"],
        common::hex(&<sha2::Sha256 as sha2::Digest>::digest(&der))
    );
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("version 1"), "{detail}");
    assert!(!line.contains("BEGIN"), "never the whole certificate");
}

#[test]
fn the_handshake_refusal_line_shows_the_subject_as_certgate_writes_it() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let (mut child, addr) = sidecar(&dir, &["--allowed-subject", "CN=alice,O=Acme"]);
    let alice = alice_of_acme(&pki.client_ca);
    let options = common::ClientOptions::new(&pki, "localhost").with_identity(alice.identity());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(common::get(addr, &options, "localhost", "/"));
    assert!(result.is_err(), "alice must be refused");
    let (_, refused) = refusal_line(&mut child);
    assert_eq!(refused["failure"], "not_allowed", "{refused}");
    assert_eq!(refused["client.subject"], "O=Acme,CN=alice", "{refused}");
    assert_eq!(refused["client.hash"], alice.hash_hex(), "{refused}");
    assert_eq!(
        refused["detail"], "subject O=Acme,CN=alice is not in allowedSubjects",
        "{refused}"
    );
}

#[test]
fn the_sidecar_form_takes_the_policy_flags() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let alice = dir.write("alice.pem", pki.client("alice").pem);
    let ca = dir.path().join("client-ca.pem");
    let output = explain(&["--client-ca", ca.to_str().unwrap(), alice.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let output = explain(&[
        "--client-ca",
        ca.to_str().unwrap(),
        "--allowed-subject",
        "CN=bob",
        "--format",
        "json",
        alice.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["reason"], "not_allowed");
}

#[test]
fn the_text_form_leads_with_the_verdict_and_the_subject_to_paste() {
    let pki = Pki::new();
    let (dir, config) = setup(&pki, json!({}));
    let stranger = dir.write(
        "stranger.pem",
        Ca::root("stranger CA")
            .issue(LeafSpec::client("mallory"))
            .pem,
    );
    let output = explain(&[
        "--config",
        config.to_str().unwrap(),
        "--app",
        "require",
        stranger.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.starts_with("verdict: refused: unknown_issuer\n"),
        "{text}"
    );
    assert!(text.contains("subject:    CN=mallory"), "{text}");
    assert!(text.contains("different issuer"), "{text}");
}

#[test]
fn explain_usage_errors_exit_64_and_say_what_to_do() {
    let pki = Pki::new();
    let (dir, config) = setup(&pki, json!({}));
    let alice = dir.write("alice.pem", pki.client("alice").pem);
    let config = config.to_str().unwrap();
    let alice = alice.to_str().unwrap();
    for (args, needle) in [
        (vec!["--config", config, alice], "--app NAME or --host HOST"),
        (
            vec!["--config", config, "--app", "nope", alice],
            "its apps: require",
        ),
        (
            vec!["--config", config, "--host", "other.test", alice],
            "other.test",
        ),
        (
            vec![
                "--config", config, "--app", "require", "--at", "tomorrow", alice,
            ],
            "RFC 3339",
        ),
        (
            vec!["--config", config, "--app", "require", "missing.pem"],
            "missing.pem",
        ),
    ] {
        let output = explain(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_leaf_sent_without_its_intermediate_is_explained_and_chain_passes_it() {
    let pki = Pki::new();
    let intermediate = pki.client_ca.intermediate("certgate test intermediate");
    let client = intermediate.issue(LeafSpec::client("leaf of an intermediate"));
    let dir = TempDir::new();
    pki.write(&dir);
    let leaf = dir.write("leaf.pem", common::pem_of(client.der()));
    let chain = dir.write("intermediate.pem", common::pem_of(&client.chain[1]));
    let ca = dir.path().join("client-ca.pem");
    let (ca, leaf) = (ca.to_str().unwrap(), leaf.to_str().unwrap());

    let alone = explain(&["--client-ca", ca, leaf]);
    let text = String::from_utf8_lossy(&alone.stdout);
    assert_eq!(alone.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the client sent no intermediate CA certificate")
            && text.contains("--chain FILE"),
        "{text}"
    );
    let with_chain = explain(&["--client-ca", ca, leaf, "--chain", chain.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&with_chain.stdout);
    assert_eq!(with_chain.status.code(), Some(0), "{text}");
}
