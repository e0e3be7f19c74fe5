//! docs/revocation.md, answers with no end: `clientAuth.revocation.maxAgeMs` bounds how long
//! a CRL or OCSP answer without nextUpdate is believed, counted from its thisUpdate, and a
//! thisUpdate in the future (beyond the 300 s clock skew) is refused. Cases:
//! - OCSP: `openssl ocsp` without `-ndays`/`-nmin` (no nextUpdate) is believed when fresh
//!   (control); a signed answer without nextUpdate older than the default week, or older than
//!   a `maxAgeMs` of an hour, gives `revocation_unknown` (the same answer is believed with a
//!   longer `maxAgeMs`); an answer from an hour ahead gives `revocation_unknown`, one from a
//!   minute ahead (inside the skew) is believed;
//! - CRL URLs: a CRL without nextUpdate is used while younger than `maxAgeMs` (control), and
//!   refused at start when older, as is one from the future; a CRL without nextUpdate is
//!   fetched again before it goes stale, even with a refresh interval of an hour;
//! - CRL files: without nextUpdate, served while fresh (control), refused at the handshake
//!   (`revocation_unknown`) once older than `maxAgeMs`, and `certgate check` warns about it;
//!   a file from the future is a config error;
//! - config: `maxAgeMs` below 1000 is refused naming the key.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::process::{Command, Stdio};

use common::revocation::*;
use common::revocation_app::*;
use common::*;
use serde_json::json;
use time::OffsetDateTime;

const HOUR: f64 = 3600.0;
const DAY: f64 = 24.0 * HOUR;

// ---- OCSP ----

/// A gateway asking `answer`'s responder about the leaf, with `settings` merged in.
async fn ocsp_gateway(
    pki: &Pki,
    answer: Handler,
    settings: serde_json::Value,
) -> (Gateway, HttpFixture) {
    let fixture = HttpFixture::start(Answer::With(answer));
    let mut revocation = json!({ "ocsp": "leaf", "ocspResponder": fixture.url("") });
    for (key, value) in settings.as_object().unwrap() {
        revocation[key] = value.clone();
    }
    (gateway(pki, revocation).await, fixture)
}

#[tokio::test]
async fn a_fresh_openssl_answer_without_next_update_is_believed() {
    let pki = Pki::new();
    let good = pki.client("ocsp fresh");
    let revoked = pki.client("ocsp revoked");
    // No -ndays/-nmin: openssl leaves nextUpdate out.
    let Some(responder) = responder(
        &pki,
        &[
            (&good, "ocsp fresh", false),
            (&revoked, "ocsp revoked", true),
        ],
        &[],
    ) else {
        return;
    };
    let gateway = gateway(
        &pki,
        json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url(), "maxAgeMs": 1000 }),
    )
    .await;
    assert!(served(&gateway, &options(&pki, &good)).await);
    assert_refused(&gateway, &options(&pki, &revoked), "revoked").await;
}

#[tokio::test]
async fn an_answer_without_next_update_older_than_a_week_gives_revocation_unknown() {
    let pki = Pki::new();
    let client = pki.client("ocsp old");
    let answer = ocsp_answer_at(&pki.client_ca, false, -8.0 * DAY, None);
    let (gateway, _fixture) = ocsp_gateway(&pki, answer, json!({})).await;
    assert_refused(&gateway, &options(&pki, &client), "revocation_unknown").await;
}

#[tokio::test]
async fn an_answer_without_next_update_is_judged_by_max_age_ms() {
    let pki = Pki::new();
    let client = pki.client("ocsp two hours");
    let two_hours_old = || ocsp_answer_at(&pki.client_ca, false, -2.0 * HOUR, None);
    let (strict, _a) = ocsp_gateway(&pki, two_hours_old(), json!({ "maxAgeMs": 3_600_000 })).await;
    assert_refused(&strict, &options(&pki, &client), "revocation_unknown").await;
    // Control: the same answer within the default week is believed.
    let (lenient, _b) = ocsp_gateway(&pki, two_hours_old(), json!({})).await;
    assert!(served(&lenient, &options(&pki, &client)).await);
}

#[tokio::test]
async fn an_answer_from_the_future_gives_revocation_unknown() {
    let pki = Pki::new();
    let client = pki.client("ocsp future");
    let ahead = ocsp_answer_at(&pki.client_ca, false, HOUR, Some(2.0 * HOUR));
    let (gateway, _a) = ocsp_gateway(&pki, ahead, json!({})).await;
    assert_refused(&gateway, &options(&pki, &client), "revocation_unknown").await;
    let ahead_without_end = ocsp_answer_at(&pki.client_ca, false, HOUR, None);
    let (gateway, _b) = ocsp_gateway(&pki, ahead_without_end, json!({})).await;
    assert_refused(&gateway, &options(&pki, &client), "revocation_unknown").await;
    // Control: a minute ahead is within the clock skew.
    let skewed = ocsp_answer_at(&pki.client_ca, false, 60.0, None);
    let (gateway, _c) = ocsp_gateway(&pki, skewed, json!({})).await;
    assert!(served(&gateway, &options(&pki, &client)).await);
}

// ---- CRLs from URLs ----

fn ago(seconds: f64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::seconds_f64(seconds)
}

#[tokio::test]
async fn a_fetched_crl_without_next_update_is_used_while_younger_than_max_age() {
    let pki = Pki::new();
    let good = pki.client("crl good");
    let listed = pki.client("crl listed");
    let crl = crl_der_at(&pki.client_ca, &[&listed.serial], ago(HOUR), None);
    let crls = HttpFixture::start(Answer::Body(crl));
    let gateway = gateway(&pki, json!({ "crlUrls": [crls.url("ca.crl")] })).await;
    assert!(served(&gateway, &options(&pki, &good)).await);
    assert_refused(&gateway, &options(&pki, &listed), "revoked").await;
}

#[tokio::test]
async fn a_fetched_crl_without_next_update_older_than_max_age_is_a_config_error() {
    let pki = Pki::new();
    let old = crl_der_at(&pki.client_ca, &[], ago(8.0 * DAY), None);
    let crls = HttpFixture::start(Answer::Body(old));
    let error = refused_config(&pki, json!({ "crlUrls": [crls.url("ca.crl")] })).await;
    assert!(
        error.contains("no nextUpdate") && error.contains("maxAgeMs"),
        "{error}"
    );
    let recent = crl_der_at(&pki.client_ca, &[], ago(2.0 * HOUR), None);
    let crls = HttpFixture::start(Answer::Body(recent));
    let error = refused_config(
        &pki,
        json!({ "crlUrls": [crls.url("ca.crl")], "maxAgeMs": 3_600_000 }),
    )
    .await;
    assert!(error.contains("maxAgeMs"), "{error}");
}

#[tokio::test]
async fn a_fetched_crl_from_the_future_is_a_config_error() {
    let pki = Pki::new();
    let ahead = OffsetDateTime::now_utc() + time::Duration::hours(1);
    for next_update in [Some(ahead + time::Duration::days(1)), None] {
        let crl = crl_der_at(&pki.client_ca, &[], ahead, next_update);
        let crls = HttpFixture::start(Answer::Body(crl));
        let error = refused_config(&pki, json!({ "crlUrls": [crls.url("ca.crl")] })).await;
        assert!(error.contains("in the future"), "{error}");
    }
}

#[tokio::test]
async fn a_crl_without_next_update_is_fetched_again_before_it_goes_stale() {
    let pki = Pki::new();
    let client = pki.client("crl refreshed");
    let crls = HttpFixture::start(Answer::Body(crl_der_at(
        &pki.client_ca,
        &[],
        ago(1.0),
        None,
    )));
    // Stale 4 s after its thisUpdate; the refresh interval alone would wait an hour.
    let gateway = gateway(
        &pki,
        json!({ "crlUrls": [crls.url("ca.crl")], "refreshMs": 3_600_000, "maxAgeMs": 4000 }),
    )
    .await;
    assert!(served(&gateway, &options(&pki, &client)).await);
    assert_eq!(crls.requests(), 1);
    let revoking = crl_der_at(
        &pki.client_ca,
        &[&client.serial],
        OffsetDateTime::now_utc(),
        None,
    );
    crls.set(Answer::Body(revoking));
    let good_fetches = r#"certgate_crl_fetches_total{app="require",outcome="good"}"#;
    wait_for_metric(&gateway, good_fetches, 2.0).await;
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
}

// ---- CRL files ----

fn pem_crl(der: &[u8]) -> String {
    pem_rfc7468::encode_string("X509 CRL", pem_rfc7468::LineEnding::LF, der).unwrap()
}

/// A gateway whose app has only `crlFiles` (webpki's path, unless a file has no nextUpdate).
async fn crl_file_gateway(pki: &Pki, crl: &[u8], settings: serde_json::Value) -> Gateway {
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("ca.crl.pem", pem_crl(crl));
    let mut revocation = json!({ "crlFiles": ["ca.crl.pem"] });
    for (key, value) in settings.as_object().unwrap() {
        revocation[key] = value.clone();
    }
    Gateway::start(dir, config(echo_upstream().await, revocation)).await
}

#[tokio::test]
async fn a_crl_file_without_next_update_is_used_while_fresh() {
    let pki = Pki::new();
    let good = pki.client("file good");
    let listed = pki.client("file listed");
    let crl = crl_der_at(&pki.client_ca, &[&listed.serial], ago(HOUR), None);
    let gateway = crl_file_gateway(&pki, &crl, json!({})).await;
    assert!(served(&gateway, &options(&pki, &good)).await);
    assert_refused(&gateway, &options(&pki, &listed), "revoked").await;
}

#[tokio::test]
async fn a_crl_file_without_next_update_older_than_max_age_is_refused_at_the_handshake() {
    let pki = Pki::new();
    let client = pki.client("file old");
    let crl = crl_der_at(&pki.client_ca, &[], ago(2.0 * HOUR), None);
    let gateway = crl_file_gateway(&pki, &crl, json!({ "maxAgeMs": 3_600_000 })).await;
    assert_refused(&gateway, &options(&pki, &client), "revocation_unknown").await;
    let old = crl_der_at(&pki.client_ca, &[], ago(8.0 * DAY), None);
    let gateway = crl_file_gateway(&pki, &old, json!({})).await;
    assert_refused(&gateway, &options(&pki, &client), "revocation_unknown").await;
}

#[tokio::test]
async fn a_crl_file_from_the_future_is_a_config_error() {
    let pki = Pki::new();
    let ahead = OffsetDateTime::now_utc() + time::Duration::hours(1);
    for next_update in [Some(ahead + time::Duration::days(1)), None] {
        let dir = TempDir::new();
        pki.write(&dir);
        let crl = crl_der_at(&pki.client_ca, &[], ahead, next_update);
        dir.write("ca.crl.pem", pem_crl(&crl));
        let error = try_load(&dir, json!({ "crlFiles": ["ca.crl.pem"] }))
            .await
            .unwrap_err();
        assert!(
            error.contains("ca.crl.pem") && error.contains("in the future"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn check_warns_about_a_crl_file_without_next_update() {
    let pki = Pki::new();
    let cases = [
        (ago(HOUR), "it vouches until"),
        (
            ago(8.0 * DAY),
            "is older than clientAuth.revocation.maxAgeMs",
        ),
    ];
    for (this_update, needle) in cases {
        let dir = TempDir::new();
        pki.write(&dir);
        let crl = crl_der_at(&pki.client_ca, &[], this_update, None);
        dir.write("ca.crl.pem", pem_crl(&crl));
        let config = config(
            "127.0.0.1:9".parse().unwrap(),
            json!({ "crlFiles": ["ca.crl.pem"] }),
        );
        let path = dir.write("certgate.json", serde_json::to_vec_pretty(&config).unwrap());
        let output = Command::new(env!("CARGO_BIN_EXE_certgate"))
            .args(["check", "--config"])
            .arg(&path)
            .env_remove("CERTGATE_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(0), "{all}");
        assert!(
            all.contains("ca.crl.pem has no nextUpdate") && all.contains(needle),
            "{all}"
        );
    }
    // Control: a CRL with a nextUpdate draws no such warning.
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("ca.crl.pem", pem_crl(&fresh_crl(&pki.client_ca, &[])));
    let error = try_load(&dir, json!({ "crlFiles": ["ca.crl.pem"] })).await;
    assert!(error.is_ok(), "{error:?}");
}

// ---- config ----

#[tokio::test]
async fn max_age_ms_below_a_second_is_refused_naming_the_key() {
    let error = refused_config(&Pki::new(), json!({ "crlFiles": [], "maxAgeMs": 999 })).await;
    assert!(error.contains("\"require\""), "{error}");
    assert!(
        error.contains("clientAuth.revocation.maxAgeMs must be at least 1000"),
        "{error}"
    );
}
