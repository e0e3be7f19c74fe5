//! docs/config.md (custom domains): `ingress.customDomains`, as Azure exports it, adds host
//! names to an app; within the app the server certificate is chosen by SNI, from the top-level
//! `certificates` object that the last segment of `certificateId` names.
//!
//! Cases:
//! - An `SniEnabled` domain with a resource-id `certificateId` is served with its own
//!   certificate; the app's other host, on the same listener, with the app's; a `Disabled`
//!   domain with the app's. All three reach the app with the client certificate.
//! - The domain's certificate files rewritten: the reload that follows serves the new one, and
//!   `certgate_custom_domain_not_after_seconds{app,domain}` follows its expiry.
//! - Refused configs, each naming the domain and what to do: a `certificateId` naming no
//!   entry (the entries are listed), `bindingType` `Auto`, `SniEnabled` without a
//!   `certificateId`, an unknown `bindingType`, an entry with a key but no certificate.
//! - `certgate check` lists the custom domains and flags a domain its certificate does not
//!   cover.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::net::SocketAddr;
use std::time::Duration;

use common::polling::poll;
use common::*;
use rustls_pki_types::CertificateDer;

const APP_HOST: &str = "app.example.test";
const DOMAIN: &str = "api.contoso.test";
const LEGACY: &str = "legacy.example.test";
const CERTIFICATE_ID: &str = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.App/managedEnvironments/env/certificates/contoso-2026";

/// A certificate for the custom domain, from the server CA, valid for `days`.
fn domain_leaf(pki: &Pki, days: i64) -> Leaf {
    pki.server_ca.issue(LeafSpec {
        common_name: DOMAIN.to_owned(),
        dns: vec![DOMAIN.to_owned()],
        ips: Vec::new(),
        not_after: time::OffsetDateTime::now_utc() + time::Duration::days(days),
        ..LeafSpec::server()
    })
}

/// A `require` app at `APP_HOST` with the `SniEnabled` custom domain `DOMAIN` and the
/// `Disabled` one `LEGACY`, its certificate in `contoso.pem`/`contoso.key`.
fn domain_files(pki: &Pki, upstream: SocketAddr) -> (TempDir, serde_json::Value) {
    let dir = TempDir::new();
    pki.write(&dir);
    let leaf = domain_leaf(pki, 90);
    dir.write("contoso.pem", &leaf.pem);
    dir.write("contoso.key", leaf.key.serialize_pem());
    let mut app = app("orders", &[APP_HOST], upstream, "Require");
    app["clientAuth"] = serde_json::json!({ "trustedCaFiles": ["client-ca.pem"] });
    app["ingress"]["customDomains"] = serde_json::json!([
        { "name": DOMAIN, "bindingType": "SniEnabled", "certificateId": CERTIFICATE_ID },
        { "name": LEGACY, "bindingType": "Disabled", "certificateId": null },
    ]);
    let config = serde_json::json!({
        "admin": "127.0.0.1:0",
        "apps": [app],
        "certificates": {
            "contoso-2026": { "certFile": "contoso.pem", "keyFile": "contoso.key" }
        },
    });
    (dir, config)
}

/// The leaf certgate presents for `sni`, and the status of a request over that connection.
async fn presented(addr: SocketAddr, pki: &Pki, sni: &str) -> (CertificateDer<'static>, u16) {
    let options = ClientOptions::new(pki, sni).with_identity(pki.client("partner").identity());
    let tls = tls_stream(addr, &options).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut connection = Connection::over(tls, &options).await.unwrap();
    let reply = connection.send(connection.get(sni, "/")).await.unwrap();
    (leaf, reply.status.as_u16())
}

#[tokio::test]
async fn each_domain_is_served_with_its_certificate_beside_the_apps_own() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let (dir, config) = domain_files(&pki, upstream);
    let contoso = std::fs::read_to_string(dir.path().join("contoso.pem")).unwrap();
    let gateway = Gateway::start(dir, config).await;

    let (leaf, status) = presented(gateway.addr, &pki, DOMAIN).await;
    assert_eq!(pem_of(&leaf), contoso, "{DOMAIN} got another certificate");
    assert_eq!(status, 200);
    for host in [APP_HOST, LEGACY] {
        let (leaf, status) = presented(gateway.addr, &pki, host).await;
        assert_eq!(
            leaf, pki.server.chain[0],
            "{host} is not served the app's certificate"
        );
        assert_eq!(status, 200, "{host}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_rewritten_domain_certificate_is_served_after_the_reload_with_its_expiry() {
    let pki = Pki::new();
    let upstream = echo_upstream().await;
    let (dir, config) = domain_files(&pki, upstream);
    let gateway = Gateway::start(dir, config).await;
    let admin = gateway.admin.unwrap();
    let series =
        format!(r#"certgate_custom_domain_not_after_seconds{{app="orders",domain="{DOMAIN}"}}"#);
    let first = metric_value(&scrape(admin).await, &series).expect("no expiry series");

    // Certificate and key in one file each, swapped by rename as atomic writers do.
    let renewed = domain_leaf(&pki, 200);
    for (name, contents) in [
        ("contoso.key", renewed.key.serialize_pem()),
        ("contoso.pem", renewed.pem.clone()),
    ] {
        let tmp = gateway.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, gateway.dir.path().join(name)).unwrap();
    }
    let served = poll(
        200,
        Duration::from_millis(50),
        async || presented(gateway.addr, &pki, DOMAIN).await.0,
        |leaf| *leaf == renewed.chain[0],
    )
    .await;
    assert_eq!(
        served, renewed.chain[0],
        "the renewed certificate is not served"
    );
    let text = scrape(admin).await;
    let now = metric_value(&text, &series).unwrap();
    let expected = x509_parser::parse_x509_certificate(&renewed.chain[0])
        .unwrap()
        .1
        .validity()
        .not_after
        .timestamp() as f64;
    assert_eq!(now, expected, "expiry gauge (was {first})");
    assert!(now > first);
    gateway.stop().await;
}

/// Writes `config` with the PKI and the domain certificate, and runs `certgate check` on it.
fn check(pki: &Pki, mutate: impl FnOnce(&mut serde_json::Value)) -> (Option<i32>, String) {
    let (dir, mut config) = domain_files(pki, "127.0.0.1:9".parse().unwrap());
    mutate(&mut config);
    let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
    let output = process::cli::certgate(
        &["check", "--config", path.to_str().unwrap()],
        dir.path(),
        &[],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// A change made to the config before it is checked.
type Mutation = Box<dyn FnOnce(&mut serde_json::Value)>;

#[test]
fn refused_domains_name_the_domain_and_what_to_do() {
    let pki = Pki::new();
    let domains =
        |config: &mut serde_json::Value| config["apps"][0]["ingress"]["customDomains"].clone();
    let cases: [(&str, Mutation, &[&str]); 5] = [
        (
            "unknown entry",
            Box::new(|config| {
                config["apps"][0]["ingress"]["customDomains"][0]["certificateId"] =
                    "/subscriptions/0000/certificates/contoso-2025".into();
            }),
            &[
                r#""contoso-2025""#,
                "it holds contoso-2026",
                "add it there",
                DOMAIN,
            ],
        ),
        (
            "managed",
            Box::new(|config| {
                config["apps"][0]["ingress"]["customDomains"][0]["bindingType"] = "auto".into();
            }),
            &["bindingType Auto", "top-level certificates object", DOMAIN],
        ),
        (
            "no certificateId",
            Box::new(|config| {
                config["apps"][0]["ingress"]["customDomains"][0]["certificateId"] =
                    serde_json::Value::Null;
                config["apps"][0]["ingress"]["customDomains"][0]["bindingType"] =
                    "SNIENABLED".into();
            }),
            &["no certificateId", "bindingType Disabled", DOMAIN],
        ),
        (
            "unknown binding",
            Box::new(|config| {
                config["apps"][0]["ingress"]["customDomains"][0]["bindingType"] = "Sni".into();
            }),
            &[r#"bindingType "Sni""#, "expected SniEnabled or Disabled"],
        ),
        (
            "no certFile",
            Box::new(|config| {
                config["certificates"]["contoso-2026"] =
                    serde_json::json!({ "keyFile": "contoso.key" });
            }),
            &["certificates.contoso-2026 needs certFile and keyFile"],
        ),
    ];
    for (case, mutate, says) in cases {
        let (code, text) = check(&pki, mutate);
        assert_ne!(code, Some(0), "{case}: accepted\n{text}");
        process::cli::assert_says(&text, says, &["panicked"]);
        assert!(
            text.contains("orders"),
            "{case}: the app is not named\n{text}"
        );
    }
    // The untouched config passes, listing the domains.
    let (code, text) = check(&pki, |config| {
        assert_eq!(domains(config).as_array().unwrap().len(), 2);
    });
    assert_eq!(code, Some(0), "{text}");
    process::cli::assert_says(
        &text,
        &[&format!(
            "custom-domains=[{DOMAIN} certificates.contoso-2026 | {LEGACY} serverCertificate]"
        )],
        &[],
    );
}

#[test]
fn check_flags_a_domain_its_certificate_does_not_cover() {
    let pki = Pki::new();
    let (code, text) = check(&pki, |config| {
        config["apps"][0]["ingress"]["customDomains"][0]["name"] = "shop.contoso.test".into();
    });
    assert_ne!(code, Some(0), "{text}");
    process::cli::assert_says(
        &text,
        &[
            "host shop.contoso.test is not covered",
            "certificates.contoso-2026",
            DOMAIN,
        ],
        &[],
    );
}
