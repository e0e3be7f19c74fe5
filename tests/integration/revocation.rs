//! Revocation that stays fresh (docs/revocation.md), against real responders: CRLs served
//! over HTTP by a fixture that can change, fail or lie, and `openssl ocsp` with an index the
//! tests edit. Cases:
//! - CRL URL: a leaf not listed is served, a listed leaf is refused (`revoked`), an
//!   intermediate listed on the root's CRL is refused, a chain no CRL covers is refused
//!   (`revocation_unknown`), as is a leaf whose CRL is a partition for other certificates,
//!   or served with `onUnknown: "allow"` (counted);
//! - at start, a CRL URL that is down, wrongly signed or stale is a config error naming it;
//!   one that two apps list is fetched once, for both;
//! - refresh: a revocation published later is picked up, and closes an open connection of
//!   that certificate; a failing refresh keeps the last good CRL; the fetches and the CRL's
//!   dates are in the metrics;
//! - CRL distribution points (`crlFromCertificates`): fetched the first time they are needed,
//!   once, for a leaf and for an intermediate;
//! - OCSP (`openssl ocsp`): good, revoked (index edited between connections), `unknown`, a
//!   delegated signer, the cache (a second connection makes no request), `chain` for an
//!   intermediate; a responder that hangs stalls no other connection; one that is down,
//!   hangs past the timeout, answers garbage, signs with a key that is not the issuer's, or
//!   sends a stale answer: `revocation_unknown`;
//! - a revocation learned after a first handshake refuses the resumed session (TLS 1.3 and
//!   TLS 1.2); HTTP/2 clients are refused like HTTP/1.1 ones; `rejectWith: "http"` answers 495;
//! - `certgate explain` shows the revocation decision and its source;
//! - a revocation names its source, the revocation time and the reason (a CRL entry's
//!   revocationDate and reasonCode, an OCSP answer's revocationTime and revocationReason) on
//!   the 495 page and in `explain`, whose trust decision says the chain is still trusted;
//! - config: the schema's keys, the `crlFiles` alias, bad values refused; the sidecar's
//!   `--crl-url` and `--ocsp`; the worked `openssl ocsp` example of docs/revocation.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;

use common::revocation::*;
use common::revocation_app::*;
use common::*;
use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ---- CRLs from crlUrls ----

#[tokio::test]
async fn leaf_not_on_the_fetched_crl_is_served() {
    let pki = Pki::new();
    let crls = crl_server(&pki.client_ca, &[]);
    let gateway = gateway(&pki, serde_json::json!({ "crlUrls": [crls.url("ca.crl")] })).await;
    let client = pki.client("good client");
    assert!(served(&gateway, &options(&pki, &client)).await);
    assert_eq!(crls.requests(), 1, "fetched once at start");
}

/// A client listed on the client CA's fetched CRL is refused as `revoked`, whatever else
/// `settings` (merged into `crlUrls`) say, over HTTP/1.1 or HTTP/2.
async fn listed_client_is_refused(settings: serde_json::Value, http2: bool) {
    let pki = Pki::new();
    let client = pki.client("revoked client");
    let crls = crl_server(&pki.client_ca, &[&client.serial]);
    let mut revocation = serde_json::json!({ "crlUrls": [crls.url("ca.crl")] });
    for (key, value) in settings.as_object().unwrap() {
        revocation[key] = value.clone();
    }
    let gateway = gateway(&pki, revocation).await;
    assert_refused(&gateway, &options(&pki, &client).http2(http2), "revoked").await;
}

#[tokio::test]
async fn leaf_on_the_fetched_crl_is_refused_as_revoked() {
    listed_client_is_refused(serde_json::json!({}), false).await;
}

#[tokio::test]
async fn pem_crls_are_read_like_der_ones() {
    let pki = Pki::new();
    let client = pki.client("revoked client");
    let pem = pki.client_ca.crl(
        &[&client],
        OffsetDateTime::now_utc() + time::Duration::days(1),
    );
    let crls = HttpFixture::start(Answer::Body(pem.into_bytes()));
    let gateway = gateway(&pki, serde_json::json!({ "crlUrls": [crls.url("ca.pem")] })).await;
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
}

/// A client under an intermediate of the client CA (neither names where its revocation is
/// published), in front of a gateway that fetches the root's CRL (listing the intermediate
/// when `intermediate_revoked`) and, with `intermediate_crl`, the intermediate's own;
/// `settings` are merged into the revocation settings.
async fn client_under_an_intermediate(
    intermediate_revoked: bool,
    intermediate_crl: bool,
    settings: serde_json::Value,
) -> (Gateway, ClientOptions) {
    let pki = Pki::new();
    let intermediate = intermediate(&pki.client_ca, "intermediate", &Published::default());
    let client = leaf(
        &intermediate,
        "client of an intermediate",
        &Published::default(),
    );
    let listed = ca_serial(&intermediate);
    let revoked: &[&rcgen::SerialNumber] = if intermediate_revoked {
        &[&listed]
    } else {
        &[]
    };
    let mut urls = vec![crl_server(&pki.client_ca, revoked).url("root.crl")];
    if intermediate_crl {
        urls.push(crl_server(&intermediate, &[]).url("int.crl"));
    }
    let mut revocation = serde_json::json!({ "crlUrls": urls });
    for (key, value) in settings.as_object().unwrap() {
        revocation[key] = value.clone();
    }
    (gateway(&pki, revocation).await, options(&pki, &client))
}

#[tokio::test]
async fn intermediate_on_the_roots_crl_is_refused_as_revoked() {
    let (gateway, client) = client_under_an_intermediate(true, true, serde_json::json!({})).await;
    assert_refused(&gateway, &client, "revoked").await;
}

#[tokio::test]
async fn leaf_of_a_good_intermediate_is_served_when_both_crls_cover_the_chain() {
    let (gateway, client) = client_under_an_intermediate(false, true, serde_json::json!({})).await;
    assert!(served(&gateway, &client).await);
}

#[tokio::test]
async fn chain_no_crl_covers_is_refused_as_revocation_unknown() {
    let (gateway, client) = client_under_an_intermediate(false, false, serde_json::json!({})).await;
    assert_refused(&gateway, &client, "revocation_unknown").await;
}

#[tokio::test]
async fn crl_scoped_to_another_distribution_point_does_not_vouch_for_a_leaf() {
    let pki = Pki::new();
    let client = pki.client("outside the partition");
    let partition = scoped_crl_der(
        &pki.client_ca,
        &[],
        OffsetDateTime::now_utc() + time::Duration::days(1),
        Some("http://pki.example.test/partition-2.crl"),
    );
    let crls = HttpFixture::start(Answer::Body(partition));
    let gateway = gateway(&pki, serde_json::json!({ "crlUrls": [crls.url("p2.crl")] })).await;
    assert_refused(&gateway, &options(&pki, &client), "revocation_unknown").await;
}

#[tokio::test]
async fn on_unknown_allow_serves_an_uncovered_chain_and_counts_it() {
    let allow = serde_json::json!({ "onUnknown": "allow" });
    let (gateway, client) = client_under_an_intermediate(false, false, allow).await;
    assert!(served(&gateway, &client).await);
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_revocation_unknown_allowed_total{app="require"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn on_unknown_allow_still_refuses_a_revoked_leaf() {
    listed_client_is_refused(serde_json::json!({ "onUnknown": "allow" }), false).await;
}

#[tokio::test]
async fn crl_url_that_is_down_at_start_is_a_config_error_naming_it() {
    let url = format!("http://127.0.0.1:{}/gone.crl", free_port());
    let error = refused_config(&Pki::new(), serde_json::json!({ "crlUrls": [url] })).await;
    assert!(error.contains(&url), "{error}");
}

#[tokio::test]
async fn a_crl_url_two_apps_list_is_fetched_once_for_both() {
    let pki = Pki::new();
    let revoked = pki.client("revoked in both apps");
    let crls = crl_server(&pki.client_ca, &[&revoked.serial]);
    let dir = TempDir::new();
    pki.write(&dir);
    let mut apps = Vec::new();
    for name in ["first", "second"] {
        let mut app = common::apps::app_of_mode(name, "127.0.0.1:9".parse().unwrap(), "require");
        app["clientAuth"]["revocation"] = serde_json::json!({ "crlUrls": [crls.url("ca.crl")] });
        apps.push(app);
    }
    let config = serde_json::json!({ "apps": apps });
    let path = dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let config = certgate::LoadedConfig::load(&path)
        .await
        .unwrap_or_else(|e| panic!("{}", certgate::error_chain(&e)));
    assert_eq!(crls.requests(), 1);
    for app in &config.apps {
        let line = certgate::cli::summary(app);
        assert!(line.contains("revocation: 1 CRL"), "{line}");
    }
}

#[tokio::test]
async fn crl_signed_by_another_key_is_a_config_error() {
    // Same name as the client CA, another key: only the signature tells them apart.
    let impostor = Ca::root("certgate test client CA");
    let crls = crl_server(&impostor, &[]);
    let error = refused_config(
        &Pki::new(),
        serde_json::json!({ "crlUrls": [crls.url("ca.crl")] }),
    )
    .await;
    assert!(error.contains("signature"), "{error}");
}

#[tokio::test]
async fn crl_past_its_next_update_at_start_is_a_config_error() {
    let pki = Pki::new();
    let stale = crl_der(
        &pki.client_ca,
        &[],
        OffsetDateTime::now_utc() - time::Duration::minutes(5),
    );
    let crls = HttpFixture::start(Answer::Body(stale));
    let error = refused_config(&pki, serde_json::json!({ "crlUrls": [crls.url("ca.crl")] })).await;
    assert!(error.contains("nextUpdate"), "{error}");
}

#[tokio::test]
async fn revocation_published_later_is_picked_up_by_the_refresh() {
    let pki = Pki::new();
    let client = pki.client("client revoked later");
    let (crls, settings) = refreshed_crl(&pki);
    let gateway = gateway(&pki, settings).await;
    assert!(served(&gateway, &options(&pki, &client)).await);
    publish_revocation(&gateway, &crls, &pki, &client).await;
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
}

#[tokio::test]
async fn open_connection_is_closed_once_a_refresh_revokes_its_certificate() {
    let pki = Pki::new();
    let client = pki.client("revoked while connected");
    let (crls, settings) = refreshed_crl(&pki);
    let gateway = gateway(&pki, settings).await;
    let mut connection = Connection::open(gateway.addr, &options(&pki, &client))
        .await
        .unwrap();
    let request = connection.get(HOST, "/");
    assert_eq!(connection.send(request).await.unwrap().status, 200);
    publish_revocation(&gateway, &crls, &pki, &client).await;
    wait_until_closed(&mut connection).await;
}

#[tokio::test]
async fn failed_refresh_keeps_the_last_good_crl() {
    let pki = Pki::new();
    let client = pki.client("good client");
    let crls = crl_server(&pki.client_ca, &[]);
    let gateway = gateway(
        &pki,
        serde_json::json!({ "crlUrls": [crls.url("ca.crl")], "refreshMs": 1000 }),
    )
    .await;
    crls.set(Answer::Status(503));
    wait_for_metric(
        &gateway,
        r#"certgate_crl_fetches_total{app="require",outcome="error"}"#,
        1.0,
    )
    .await;
    assert!(served(&gateway, &options(&pki, &client)).await);
}

#[tokio::test]
async fn fetched_crls_are_in_the_metrics() {
    let pki = Pki::new();
    let crls = crl_server(&pki.client_ca, &[]);
    let url = crls.url("ca.crl");
    let gateway = gateway(&pki, serde_json::json!({ "crlUrls": [url] })).await;
    let text = scrape(gateway.admin.unwrap()).await;
    let now = OffsetDateTime::now_utc().unix_timestamp() as f64;
    let next = metric(
        &text,
        &format!(r#"certgate_crl_next_update_seconds{{app="require",source="{url}"}}"#),
    );
    let this = metric(
        &text,
        &format!(r#"certgate_crl_this_update_seconds{{app="require",source="{url}"}}"#),
    );
    assert!(next > now && this < now, "{text}");
    let not_after = metric(
        &text,
        r#"certgate_certificate_not_after_seconds{app="require",kind="crl"}"#,
    );
    assert_eq!(not_after, next, "{text}");
    for outcome in ["good", "revoked", "unknown", "error", "cache_hit"] {
        let series = format!(r#"certgate_ocsp_lookups_total{{app="require",outcome="{outcome}"}}"#);
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
}

// ---- CRL distribution points ----

#[tokio::test]
async fn distribution_point_of_a_leaf_is_fetched_once_when_first_needed() {
    let pki = Pki::new();
    let crls = HttpFixture::start(Answer::Status(404));
    let published = Published {
        crl: Some(crls.url("ca.crl")),
        ocsp: None,
    };
    let good = leaf(&pki.client_ca, "good cdp client", &published);
    let revoked = leaf(&pki.client_ca, "revoked cdp client", &published);
    crls.set(Answer::Body(fresh_crl(&pki.client_ca, &[&revoked.serial])));
    let gateway = gateway(&pki, serde_json::json!({ "crlFromCertificates": true })).await;
    assert_eq!(crls.requests(), 0, "fetched before it was needed");
    assert!(served(&gateway, &options(&pki, &good)).await);
    assert_refused(&gateway, &options(&pki, &revoked), "revoked").await;
    assert!(served(&gateway, &options(&pki, &good)).await);
    assert_eq!(
        crls.requests(),
        1,
        "the distribution point was fetched again"
    );
}

#[tokio::test]
async fn distribution_point_of_an_intermediate_that_lists_it_refuses_the_chain() {
    let pki = Pki::new();
    let root_crls = HttpFixture::start(Answer::Status(404));
    let intermediate = intermediate(
        &pki.client_ca,
        "intermediate with cdp",
        &Published {
            crl: Some(root_crls.url("root.crl")),
            ocsp: None,
        },
    );
    root_crls.set(Answer::Body(fresh_crl(
        &pki.client_ca,
        &[&ca_serial(&intermediate)],
    )));
    let int_crls = crl_server(&intermediate, &[]);
    let client = leaf(
        &intermediate,
        "client under a revoked intermediate",
        &Published {
            crl: Some(int_crls.url("int.crl")),
            ocsp: None,
        },
    );
    let gateway = gateway(&pki, serde_json::json!({ "crlFromCertificates": true })).await;
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
}

// ---- OCSP with openssl ----

#[tokio::test]
async fn ocsp_good_leaf_is_served_and_revoked_leaf_is_refused() {
    let pki = Pki::new();
    let good = pki.client("ocsp good");
    let revoked = pki.client("ocsp revoked");
    let Some(responder) = responder(
        &pki,
        &[
            (&good, "ocsp good", false),
            (&revoked, "ocsp revoked", true),
        ],
        &[],
    ) else {
        return;
    };
    let gateway = gateway(
        &pki,
        serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() }),
    )
    .await;
    assert!(served(&gateway, &options(&pki, &good)).await);
    assert_refused(&gateway, &options(&pki, &revoked), "revoked").await;
}

#[tokio::test]
async fn ocsp_unknown_answer_gives_revocation_unknown() {
    let pki = Pki::new();
    let stranger = pki.client("not in the index");
    let Some(responder) = responder(&pki, &[], &[]) else {
        return;
    };
    let gateway = gateway(
        &pki,
        serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() }),
    )
    .await;
    assert_refused(&gateway, &options(&pki, &stranger), "revocation_unknown").await;
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_ocsp_lookups_total{app="require",outcome="unknown"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn ocsp_revocation_edited_into_the_index_refuses_the_next_connection() {
    let pki = Pki::new();
    let Some(mut responder) = responder(&pki, &[], &[]) else {
        return;
    };
    let published = Published {
        crl: None,
        ocsp: Some(responder.ocsp.url()),
    };
    // The responder named in the certificate's AIA this time.
    let client = leaf(&pki.client_ca, "ocsp aia", &published);
    responder
        .ocsp
        .write_index(&index_line(client.der(), "ocsp aia", false));
    let gateway = gateway(&pki, serde_json::json!({ "ocsp": "leaf" })).await;
    assert!(served(&gateway, &options(&pki, &client)).await);
    // Answers without nextUpdate are not cached, so the next connection asks again.
    responder
        .ocsp
        .write_index(&index_line(client.der(), "ocsp aia", true));
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
}

#[tokio::test]
async fn ocsp_answer_with_next_update_is_cached_and_not_asked_again() {
    let pki = Pki::new();
    let client = pki.client("ocsp cached");
    let Some(responder) = responder(&pki, &[(&client, "ocsp cached", false)], &["-nmin", "10"])
    else {
        return;
    };
    let proxy = CountingProxy::start(([127, 0, 0, 1], responder.ocsp.port).into());
    let gateway = gateway(
        &pki,
        serde_json::json!({ "ocsp": "leaf", "ocspResponder": proxy.url() }),
    )
    .await;
    assert!(served(&gateway, &options(&pki, &client)).await);
    assert!(served(&gateway, &options(&pki, &client)).await);
    assert_eq!(
        proxy.connections(),
        1,
        "the second connection asked the responder again"
    );
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_ocsp_lookups_total{app="require",outcome="cache_hit"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"certgate_ocsp_lookups_total{app="require",outcome="good"}"#
        ),
        1.0
    );
    assert!(
        text.contains("certgate_ocsp_duration_seconds_count{app=\"require\"} 1"),
        "{text}"
    );
}

/// The client CA's responder signs with `signer` (a certificate and key PEM) and answers
/// `revoked` or `good` for the client; the handshake must be refused with `reason`.
async fn assert_ocsp_signer_judged(
    name: &str,
    signer: impl FnOnce(&Pki) -> (String, String),
    revoked: bool,
    reason: &str,
) {
    let pki = Pki::new();
    let client = pki.client(name);
    let signer = signer(&pki);
    let index = index_line(client.der(), name, revoked);
    let Some(responder) = openssl_responder(&pki.client_ca, Some(signer), &index, &[]) else {
        return;
    };
    let gateway = gateway(
        &pki,
        serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() }),
    )
    .await;
    assert_refused(&gateway, &options(&pki, &client), reason).await;
}

#[tokio::test]
async fn ocsp_answer_from_a_delegated_signer_is_believed() {
    let delegated = |pki: &Pki| ocsp_signer(&pki.client_ca, "delegated responder");
    assert_ocsp_signer_judged("ocsp delegated", delegated, true, "revoked").await;
}

#[tokio::test]
async fn ocsp_answer_signed_by_another_ca_is_not_believed() {
    let other = |_: &Pki| {
        let other = Ca::root("some other CA");
        (other.pem.clone(), other.key.serialize_pem())
    };
    assert_ocsp_signer_judged("ocsp wrong signer", other, false, "revocation_unknown").await;
}

#[tokio::test]
async fn ocsp_chain_refuses_an_intermediate_its_issuer_reports_revoked() {
    let pki = Pki::new();
    // The root's responder knows the intermediate; the intermediate's responder the leaf.
    let Some(mut root_responder) = openssl_responder(&pki.client_ca, None, "", &[]) else {
        return;
    };
    let at = |responder: &Responder| Published {
        crl: None,
        ocsp: Some(responder.ocsp.url()),
    };
    let intermediate = intermediate(&pki.client_ca, "ocsp intermediate", &at(&root_responder));
    root_responder
        .ocsp
        .write_index(&index_line(&intermediate.der, "ocsp intermediate", true));
    let mut int_responder = openssl_responder(&intermediate, None, "", &[]).unwrap();
    let client = leaf(&intermediate, "ocsp chain client", &at(&int_responder));
    int_responder
        .ocsp
        .write_index(&index_line(client.der(), "ocsp chain client", false));

    let leaf_only = gateway(&pki, serde_json::json!({ "ocsp": "leaf" })).await;
    assert!(
        served(&leaf_only, &options(&pki, &client)).await,
        "control: the leaf itself is good"
    );
    let chain = gateway(&pki, serde_json::json!({ "ocsp": "chain" })).await;
    assert_refused(&chain, &options(&pki, &client), "revoked").await;
}

async fn misbehaving_responder_gives_unknown(answer: Option<Answer>, pki: &Pki) {
    let client = pki.client("ocsp misbehaving");
    let fixture;
    let url = match answer {
        Some(answer) => {
            fixture = HttpFixture::start(answer);
            fixture.url("")
        }
        None => format!("http://127.0.0.1:{}", free_port()),
    };
    let gateway = gateway(
        pki,
        serde_json::json!({ "ocsp": "leaf", "ocspResponder": url }),
    )
    .await;
    assert_refused(&gateway, &options(pki, &client), "revocation_unknown").await;
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_ocsp_lookups_total{app="require",outcome="error"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn ocsp_responder_that_is_down_gives_revocation_unknown() {
    misbehaving_responder_gives_unknown(None, &Pki::new()).await;
}

#[tokio::test]
async fn ocsp_responder_that_hangs_past_the_timeout_gives_revocation_unknown() {
    misbehaving_responder_gives_unknown(Some(Answer::Hang), &Pki::new()).await;
}

#[tokio::test]
async fn ocsp_responder_that_answers_garbage_gives_revocation_unknown() {
    misbehaving_responder_gives_unknown(
        Some(Answer::Body(b"<html>hello</html>".to_vec())),
        &Pki::new(),
    )
    .await;
}

#[tokio::test]
async fn a_hanging_lookup_does_not_stall_another_connection() {
    let pki = Pki::new();
    let hanging = HttpFixture::start(Answer::Hang);
    let stuck = leaf(
        &pki.client_ca,
        "client of a hanging responder",
        &Published {
            crl: None,
            ocsp: Some(hanging.url("")),
        },
    );
    let Some(mut responder) = responder(&pki, &[], &[]) else {
        return;
    };
    let fine = leaf(
        &pki.client_ca,
        "client of a working responder",
        &Published {
            crl: None,
            ocsp: Some(responder.ocsp.url()),
        },
    );
    responder.ocsp.write_index(&index_line(
        fine.der(),
        "client of a working responder",
        false,
    ));
    let gateway = Arc::new(gateway(&pki, serde_json::json!({ "ocsp": "leaf" })).await);

    let first = {
        let (gateway, options) = (gateway.clone(), options(&pki, &stuck));
        tokio::spawn(async move { served(&gateway, &options).await })
    };
    hanging.wait_for_requests(1).await;
    assert!(served(&gateway, &options(&pki, &fine)).await);
    assert!(
        !first.is_finished(),
        "the other connection's lookup was not pending while this one was served"
    );
    assert!(
        !first.await.unwrap(),
        "served although its responder never answered"
    );
}

#[tokio::test]
async fn ocsp_answer_past_its_next_update_gives_revocation_unknown() {
    let pki = Pki::new();
    let answer = stale_ocsp_answer(&pki.client_ca);
    misbehaving_responder_gives_unknown(Some(Answer::With(answer)), &pki).await;
}

#[tokio::test]
async fn ocsp_responder_down_is_served_with_on_unknown_allow() {
    let pki = Pki::new();
    let client = pki.client("ocsp allowed");
    let url = format!("http://127.0.0.1:{}", free_port());
    let gateway = gateway(
        &pki,
        serde_json::json!({ "ocsp": "leaf", "ocspResponder": url, "onUnknown": "allow" }),
    )
    .await;
    assert!(served(&gateway, &options(&pki, &client)).await);
}

// ---- resumption and HTTP/2 ----

/// One request on a fresh connection: how the handshake went and the response, if any.
async fn visit(
    gateway: &Gateway,
    config: &Arc<rustls::ClientConfig>,
) -> (Option<HandshakeKind>, String) {
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
    else {
        return (None, String::new());
    };
    let kind = tls.get_ref().1.handshake_kind();
    let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let _ = tls.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    (kind, String::from_utf8_lossy(&response).into_owned())
}

async fn resumed_session_after_a_revocation_is_refused(tls12: bool) {
    let pki = Pki::new();
    let client = pki.client("resuming client");
    let (crls, settings) = refreshed_crl(&pki);
    let gateway = gateway(&pki, settings).await;
    let jar = Arc::new(common::sessions::TicketJar::default());
    let config = common::sessions::resuming_client(&pki, &client, &jar, tls12);
    let (_, first) = visit(&gateway, &config).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let (control, second) = visit(&gateway, &config).await;
    assert_eq!(
        control,
        Some(HandshakeKind::Resumed),
        "control: the session should resume"
    );
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");

    publish_revocation(&gateway, &crls, &pki, &client).await;

    let before = refusals(&gateway, "revoked").await;
    let (kind, response) = visit(&gateway, &config).await;
    assert_eq!(
        kind,
        Some(HandshakeKind::Resumed),
        "the test meant to resume"
    );
    assert!(
        response.is_empty(),
        "a resumed session reached the app: {response}"
    );
    assert_eq!(refusals(&gateway, "revoked").await, before + 1.0);
}

#[tokio::test]
async fn tls13_resumed_session_is_refused_after_a_revocation_learned_later() {
    resumed_session_after_a_revocation_is_refused(false).await;
}

#[tokio::test]
async fn tls12_resumed_session_is_refused_after_a_revocation_learned_later() {
    resumed_session_after_a_revocation_is_refused(true).await;
}

#[tokio::test]
async fn reject_with_http_answers_495_naming_the_revocation() {
    let pki = Pki::new();
    let client = pki.client("revoked, told so");
    let crls = crl_server(&pki.client_ca, &[&client.serial]);
    let dir = TempDir::new();
    pki.write(&dir);
    let mut config = config(
        echo_upstream().await,
        serde_json::json!({ "crlUrls": [crls.url("ca.crl")] }),
    );
    config["apps"][0]["rejectWith"] = "http".into();
    let gateway = Gateway::start(dir, config).await;
    let reply = get(gateway.addr, &options(&pki, &client), HOST, "/")
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 495, "{:?}", reply.body);
    let body = String::from_utf8_lossy(&reply.body);
    assert!(
        body.contains("revoked") && !body.contains("\"method\""),
        "{body}"
    );
    assert_eq!(refusals(&gateway, "revoked").await, 1.0);
}

#[tokio::test]
async fn http2_client_with_a_revoked_leaf_is_refused() {
    let pki = Pki::new();
    let good = pki.client("h2 good");
    let crls = crl_server(&pki.client_ca, &[]);
    let gateway = gateway(&pki, serde_json::json!({ "crlUrls": [crls.url("ca.crl")] })).await;
    assert!(
        served(&gateway, &options(&pki, &good).http2(true)).await,
        "control: a good HTTP/2 client is served"
    );
    listed_client_is_refused(serde_json::json!({}), true).await;
}

// ---- config ----

fn load(client_auth: serde_json::Value) -> Result<certgate::LoadedConfig, String> {
    load_for(&Pki::new(), client_auth)
}

fn load_for(pki: &Pki, client_auth: serde_json::Value) -> Result<certgate::LoadedConfig, String> {
    let dir = TempDir::new();
    pki.write(&dir);
    let mut app = app(
        "require",
        &[HOST],
        "127.0.0.1:9".parse().unwrap(),
        "require",
    );
    app["clientAuth"] = client_auth;
    let path = dir.write(
        "certgate.json",
        serde_json::to_vec(&serde_json::json!({ "apps": [app] })).unwrap(),
    );
    common::load_generation(&path).map_err(|e| certgate::error_chain(&e))
}

#[test]
fn revocation_keys_are_read_with_their_defaults() {
    let config = load(serde_json::json!({
        "trustedCaFiles": ["client-ca.pem"],
        "revocation": { "ocsp": "chain", "ocspResponder": "http://127.0.0.1:9/ocsp", "crlFromCertificates": true, "refreshMs": 60000, "onUnknown": "allow" }
    }))
    .unwrap();
    let policy = config.apps[0].revocation.as_ref().unwrap().policy().clone();
    assert_eq!(policy.ocsp, certgate::OcspMode::Chain);
    assert_eq!(policy.on_unknown, certgate::OnUnknown::Allow);
    assert!(policy.crl_from_certificates);
    assert_eq!(policy.refresh, std::time::Duration::from_secs(60));

    let defaults = certgate::RevocationPolicy::default();
    assert_eq!(defaults.ocsp, certgate::OcspMode::Off);
    assert_eq!(defaults.on_unknown, certgate::OnUnknown::Refuse);
    assert!(!defaults.crl_from_certificates);
    assert_eq!(defaults.refresh, std::time::Duration::from_secs(3600));
}

#[test]
fn bad_revocation_settings_are_refused_with_the_key_named() {
    let cases = [
        (serde_json::json!({ "ocsp": "always" }), "ocsp"),
        (serde_json::json!({ "onUnknown": "maybe" }), "onUnknown"),
        (
            serde_json::json!({ "crlUrls": ["https://pki.example.test/ca.crl"] }),
            "http://",
        ),
        (
            serde_json::json!({ "ocspResponder": "ftp://x" }),
            "ocspResponder",
        ),
        (serde_json::json!({ "refreshMs": 10 }), "refreshMs"),
        (
            serde_json::json!({ "ocspResponders": "http://x" }),
            "ocspResponders",
        ),
    ];
    for (revocation, named) in cases {
        let error = load(
            serde_json::json!({ "trustedCaFiles": ["client-ca.pem"], "revocation": revocation }),
        )
        .err()
        .unwrap_or_else(|| panic!("{revocation} was accepted"));
        assert!(error.contains(named), "{revocation}: {error}");
    }
    let error =
        load(serde_json::json!({ "allowUntrusted": true, "revocation": { "ocsp": "leaf" } }))
            .expect_err("revocation without trustedCaFiles was accepted");
    assert!(error.contains("trustedCaFiles"), "{error}");
}

#[test]
fn check_summary_describes_the_revocation_sources() {
    let pki = Pki::new();
    let crls = crl_server(&pki.client_ca, &[]);
    let config = load_for(
        &pki,
        serde_json::json!({
            "trustedCaFiles": ["client-ca.pem"],
            "revocation": { "crlUrls": [crls.url("ca.crl")], "ocsp": "leaf" }
        }),
    )
    .unwrap();
    let line = certgate::cli::summary(&config.apps[0]);
    assert!(
        line.contains("revocation: 1 CRL, OCSP leaf, unknown refused"),
        "{line}"
    );
}

#[tokio::test]
async fn explain_shows_the_revocation_decision_and_its_source() {
    use clap::Parser as _;
    let pki = Pki::new();
    let good = pki.client("explained good");
    let revoked = pki.client("explained revoked");
    let crls = crl_server(&pki.client_ca, &[&revoked.serial]);
    let dir = TempDir::new();
    pki.write(&dir);
    let config = config(
        "127.0.0.1:9".parse().unwrap(),
        serde_json::json!({ "crlUrls": [crls.url("ca.crl")] }),
    );
    let path = dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let args = |leaf: &Leaf, name: &str| {
        let cert = dir.write(name, leaf.chain_pem());
        let cli = certgate::cli::Cli::try_parse_from([
            "certgate",
            "explain",
            "--config",
            path.to_str().unwrap(),
            "--app",
            "require",
            "--format",
            "json",
            cert.to_str().unwrap(),
        ])
        .unwrap();
        let certgate::cli::Command::Explain(args) = cli.command else {
            panic!("not explain");
        };
        args
    };
    let explain = |args| async move { certgate::explain::run(&args).await.unwrap() };
    let accepted = explain(args(&good, "good.pem")).await;
    assert!(accepted.accepted, "{accepted:?}");
    assert_eq!(accepted.revocation.decision, "good");
    let refused = explain(args(&revoked, "revoked.pem")).await;
    assert!(!refused.accepted);
    assert_eq!(refused.reason, Some("revoked"));
    assert_eq!(refused.revocation.decision, "revoked");
    let detail = refused.revocation.detail.as_deref().unwrap();
    assert!(detail.contains(&crls.url("ca.crl")), "{detail}");
    // The CRL entry's revocationDate and reasonCode (the fixture revokes for key compromise).
    assert!(detail.contains("as revoked since "), "{detail}");
    assert!(detail.ends_with(" (keyCompromise)"), "{detail}");
    assert_eq!(
        refused.trust.summary,
        format!("chains to a trusted CA, but revoked: {detail}")
    );
    assert!(
        refused
            .revocation
            .checks
            .as_deref()
            .unwrap()
            .contains("1 CRL"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn crl_files_under_revocation_work_like_the_old_key() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let client = pki.client("revoked by file");
    dir.write(
        "ca.crl",
        pki.client_ca.crl(
            &[&client],
            OffsetDateTime::now_utc() + time::Duration::days(1),
        ),
    );
    let upstream = echo_upstream().await;
    let gateway = Gateway::start(
        dir,
        config(upstream, serde_json::json!({ "crlFiles": ["ca.crl"] })),
    )
    .await;
    assert_refused(&gateway, &options(&pki, &client), "revoked").await;
}

#[tokio::test]
async fn sidecar_flags_add_crl_urls_and_ocsp() {
    use clap::Parser as _;
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let crls = crl_server(&pki.client_ca, &[]);
    let path = |name: &str| dir.path().join(name).display().to_string();
    let cli = certgate::cli::Cli::try_parse_from([
        "certgate",
        "run",
        "--upstream",
        "http://127.0.0.1:9",
        "--cert",
        &path("server.pem"),
        "--key",
        &path("server.key"),
        "--client-ca",
        &path("client-ca.pem"),
        "--crl-url",
        &crls.url("ca.crl"),
        "--ocsp",
        "chain",
    ])
    .unwrap();
    let certgate::cli::Command::Run(args) = cli.command else {
        panic!("not run");
    };
    let config = (args.source().unwrap())().await.unwrap();
    let policy = config.apps[0].revocation.as_ref().unwrap().policy().clone();
    assert_eq!(policy.ocsp, certgate::OcspMode::Chain);
    assert_eq!(policy.crl_urls.len(), 1);
    assert_eq!(crls.requests(), 1);
    assert!(
        certgate::cli::Cli::try_parse_from(["certgate", "run", "--ocsp", "sometimes"]).is_err()
    );
}

// ---- the worked example of docs/revocation.md ----

/// The first fenced block of `kind` after `heading` in docs/revocation.md.
fn readme_block(heading: &str, kind: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/revocation.md"))
            .unwrap();
    let section = &readme[readme
        .find(heading)
        .expect("docs/revocation.md section missing")..];
    let fence = format!("```{kind}\n");
    let body = &section[section.find(&fence).unwrap() + fence.len()..];
    body[..body.find("```").unwrap()].to_owned()
}

/// Kills the responder the example's script started in the background.
struct Background(std::path::PathBuf);

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn bash(dir: &std::path::Path, script: &str) -> String {
    let output = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}\n{text}");
    text
}

#[tokio::test]
async fn readme_worked_openssl_ocsp_example_serves_then_refuses_a_revoked_client() {
    if !tools::openssl() {
        return;
    }
    let heading = "## A worked example with `openssl ocsp`";
    let dir = TempDir::new();
    let port = free_port().to_string();
    // The background responder writes to a file (so the script's output closes) and is
    // waited for until it listens; `certgate` is the binary under test.
    let start_responder = |line: &str| {
        format!(
            "for try in $(seq 50); do {} > ocsp.out 2>&1 & echo $! > ocsp.pid; \
             for i in $(seq 50); do grep -q ACCEPT ocsp.out && break 2; kill -0 $! 2>/dev/null || break; sleep 0.1; done; sleep 0.1; done",
            line.trim_end_matches('&').trim()
        )
    };
    let mut responder_line = String::new();
    let script: Vec<String> = readme_block(heading, "sh")
        .replace("8888", &port)
        .lines()
        .map(|line| {
            if line.ends_with('&') {
                responder_line = line.to_owned();
                start_responder(line)
            } else if let Some(rest) = line.strip_prefix("certgate ") {
                format!("{} {rest}", env!("CARGO_BIN_EXE_certgate"))
            } else {
                line.to_owned()
            }
        })
        .collect();
    let _responder = Background(dir.path().join("ocsp.pid"));
    let output = bash(dir.path(), &script.join("\n"));
    assert!(output.contains("certs/client.pem: good"), "{output}");

    let certs = dir.path().join("certs");
    let mut config: serde_json::Value = serde_json::from_str(
        &readme_block(heading, "json")
            .replace("8888", &port)
            .replace("certs/", &format!("{}/", certs.display())),
    )
    .unwrap();
    config["admin"] = "127.0.0.1:0".into();
    config["apps"][0]["upstream"] = format!("http://{}", echo_upstream().await).into();
    let gateway = Gateway::start(TempDir::new(), config).await;

    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(certs.join("ca.pem")).unwrap())
        .unwrap();
    let client = ClientOptions {
        roots: Arc::new(roots),
        identity: Some(Identity {
            chain: rustls::pki_types::CertificateDer::pem_file_iter(certs.join("client.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect(),
            key: Arc::new(
                rustls::pki_types::PrivateKeyDer::from_pem_file(certs.join("client.key")).unwrap(),
            ),
        }),
        sni: Some("localhost".to_owned()),
        tls12: false,
        http2: false,
    };
    assert!(
        served(&gateway, &client).await,
        "the good client was refused"
    );

    // What the example says to do to revoke: flip V to R with a date, restart the responder.
    bash(
        dir.path(),
        &format!(
            "kill $(cat ocsp.pid); sleep 0.2; sed -i 's/^V\\t\\([^\\t]*\\)\\t\\t/R\\t\\1\\t240101000000Z\\t/' index.txt; {}",
            start_responder(&responder_line.replace("8888", &port))
        ),
    );
    assert!(
        !served(&gateway, &client).await,
        "a revoked client was served"
    );
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_handshake_failures_total{app="payments",reason="revoked"}"#
        ),
        1.0,
        "{text}"
    );
}

/// `certgate explain --config CONFIG --app require --format json CERT`, run in this process.
async fn explain_in_process(
    config: &std::path::Path,
    cert: &std::path::Path,
) -> certgate::explain::Explanation {
    use clap::Parser as _;
    let cli = certgate::cli::Cli::try_parse_from([
        "certgate",
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--app",
        "require",
        "--format",
        "json",
        cert.to_str().unwrap(),
    ])
    .unwrap();
    let certgate::cli::Command::Explain(args) = cli.command else {
        panic!("not explain");
    };
    certgate::explain::run(&args).await.unwrap()
}

#[tokio::test]
async fn an_ocsp_revocation_names_the_responder_when_and_why_on_the_495_page_and_in_explain() {
    let pki = Pki::new();
    let client = pki.client("ocsp revoked for key compromise");
    // `openssl ocsp` answers with the revocation time and reason of its index line.
    let index = index_line(client.der(), "ocsp revoked for key compromise", true)
        .replace("240101000000Z", "240101000000Z,keyCompromise");
    let Some(responder) = openssl_responder(&pki.client_ca, None, &index, &[]) else {
        return;
    };
    let dir = TempDir::new();
    pki.write(&dir);
    let mut config = config(
        echo_upstream().await,
        serde_json::json!({ "ocsp": "leaf", "ocspResponder": responder.ocsp.url() }),
    );
    config["apps"][0]["rejectWith"] = "http".into();
    let responder_at = format!(
        "the ocsp responder http://127.0.0.1:{}",
        responder.ocsp.port
    );
    let revoked = "as revoked since 2024-01-01T00:00:00Z (keyCompromise)";

    let path = dir.write("certgate.json", serde_json::to_vec(&config).unwrap());
    let cert = dir.write("revoked.pem", client.chain_pem());
    let explained = explain_in_process(&path, &cert).await;
    assert_eq!(explained.reason, Some("revoked"), "{explained:?}");
    let detail = explained.revocation.detail.as_deref().unwrap();
    assert!(detail.starts_with(&responder_at), "{detail}");
    assert!(detail.ends_with(revoked), "{detail}");
    assert_eq!(
        explained.trust.summary,
        format!("chains to a trusted CA, but revoked: {detail}")
    );

    let gateway = Gateway::start(dir, config).await;
    let reply = get(gateway.addr, &options(&pki, &client), HOST, "/")
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 495, "{:?}", reply.body);
    let body = String::from_utf8_lossy(&reply.body);
    assert!(body.contains(&responder_at), "{body}");
    assert!(body.contains(revoked), "{body}");
    assert!(!body.contains("\"method\""), "{body}");
}
