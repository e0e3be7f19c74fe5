//! Upstream groups and endpoints (docs/config.md "Revisions and traffic" and "Endpoints,
//! balancing and retries"), with real upstream servers on loopback ports:
//! - `ingress.traffic` splits 80/20 within 3 points over 2,000 requests, and three revisions
//!   of equal weight share the requests; `check` lists the groups and weights;
//! - one group whose address set (the source a DNS resolver plugs in) holds three endpoints:
//!   the requests spread over the three; one killed under steady GET load fails no request
//!   once it is ejected (the metrics say so), at most the ones in flight before;
//! - a POST that may have reached an endpoint that reset it is not sent again;
//! - an address added to the set gets requests, a removed one gets none;
//! - the sidecar's repeated `--upstream` splits evenly;
//! - a label host reaches only its revision; `check` names a label host no certificate
//!   covers;
//! - config errors: weights not summing to 100, an unknown revisionName, traffic naming
//!   revisions with none configured, revisions without traffic;
//! - a reload that changes the weights takes effect; `explain --config` lists each group and
//!   its endpoints, in state `unknown` when the config's admin port is 0 (see
//!   `upstream_states` for the live states).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::named::{
    HOST, Named, config, group_gateway, reload_with, sidecar_in_front, split_config, tally,
};
use common::{ClientOptions, Connection, Gateway, Pki, TempDir, load_config, metric, scrape};
use http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

async fn gateway(config: Value) -> (Gateway, Pki) {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    (Gateway::start(dir, config).await, pki)
}

fn share(bodies: &HashMap<String, usize>, name: &str, total: usize) -> f64 {
    bodies.get(name).copied().unwrap_or(0) as f64 * 100.0 / total as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_80_20_split_holds_within_3_points_over_2000_requests() {
    let latest = Named::start("latest").await;
    let old = Named::start("old").await;
    let (gateway, pki) = gateway(split_config(&latest, &old, 20)).await;
    let (bodies, failed) = tally(&gateway, &pki, "/", 2000).await;
    assert_eq!(failed, 0);
    let latest_share = share(&bodies, "latest", 2000);
    assert!((latest_share - 80.0).abs() <= 3.0, "{bodies:?}");
    assert!(
        (share(&bodies, "old", 2000) - 20.0).abs() <= 3.0,
        "{bodies:?}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_revisions_of_equal_weight_share_the_requests() {
    let apps = Named::three().await;
    let (gateway, pki) = gateway(config(
        &apps[0].url(),
        json!({
            "revisions": { "api--b": apps[1].url(), "api--c": apps[2].url() },
            "ingress": {
                "clientCertificateMode": "ignore",
                "traffic": [
                    { "weight": 34, "latestRevision": true },
                    { "weight": 33, "revisionName": "api--b" },
                    { "weight": 33, "revisionName": "api--c" }
                ]
            }
        }),
    ))
    .await;
    let (bodies, failed) = tally(&gateway, &pki, "/", 300).await;
    assert_eq!(failed, 0);
    for name in ["a", "b", "c"] {
        assert!(
            (share(&bodies, name, 300) - 33.3).abs() <= 3.0,
            "{bodies:?}"
        );
    }
    let text = scrape(gateway.admin.unwrap()).await;
    for group in ["latest", "api--b", "api--c"] {
        assert_eq!(
            metric(
                &text,
                &format!(
                    "certgate_upstream_endpoints{{app=\"api\",group=\"{group}\",state=\"healthy\"}}"
                )
            ),
            1.0
        );
    }
    gateway.stop().await;
}

/// certgate with one group whose address set is `addresses` (what a DNS source would send).
async fn endpoint_gateway(
    addresses: watch::Receiver<Arc<[SocketAddr]>>,
    first: &Named,
) -> (Gateway, Pki) {
    group_gateway(config(&first.url(), json!({})), addresses).await
}

fn endpoint_series(name: &str, app: &Named) -> String {
    format!(
        "certgate_upstream_endpoint_{name}_total{{app=\"api\",group=\"latest\",endpoint=\"{}\"}}",
        app.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_the_endpoints_of_a_group() {
    let apps = Named::three().await;
    let (_source, addresses) = watch::channel(Arc::from(
        apps.iter().map(|app| app.addr).collect::<Vec<_>>(),
    ));
    let (gateway, pki) = endpoint_gateway(addresses, &apps[0]).await;
    let (bodies, failed) = tally(&gateway, &pki, "/", 300).await;
    assert_eq!(failed, 0);
    for name in ["a", "b", "c"] {
        assert!(share(&bodies, name, 300) >= 20.0, "{bodies:?}");
    }
    let text = scrape(gateway.admin.unwrap()).await;
    assert_eq!(
        metric(
            &text,
            r#"certgate_upstream_endpoints{app="api",group="latest",state="healthy"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(&text, &endpoint_series("requests", &apps[1])),
        bodies["b"] as f64
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_killed_under_load_fails_no_request_once_ejected() {
    let apps = Named::three().await;
    let (_source, addresses) = watch::channel(Arc::from(
        apps.iter().map(|app| app.addr).collect::<Vec<_>>(),
    ));
    let (gateway, pki) = endpoint_gateway(addresses, &apps[0]).await;
    let admin = gateway.admin.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let failed_after_ejection = Arc::new(AtomicUsize::new(0));
    let ejected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    const CLIENTS: usize = 4;
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let (addr, options) = (gateway.addr, ClientOptions::new(&pki, HOST));
        let (stop, failed, failed_after, ejected) = (
            stop.clone(),
            failed.clone(),
            failed_after_ejection.clone(),
            ejected.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut conn = Connection::open(addr, &options).await.unwrap();
            while !stop.load(Ordering::SeqCst) {
                let was_ejected = ejected.load(Ordering::SeqCst);
                let request = conn.get(HOST, "/delay/5");
                match conn.send(request).await {
                    Ok(reply) if reply.status == StatusCode::OK => {}
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        if was_ejected {
                            failed_after.fetch_add(1, Ordering::SeqCst);
                        }
                        if !conn.is_open() {
                            conn = Connection::open(addr, &options).await.unwrap();
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    apps[1].kill();
    let ejected_series = r#"certgate_upstream_endpoints{app="api",group="latest",state="ejected"}"#;
    let became_ejected = common::polling::until_async(200, Duration::from_millis(50), async || {
        metric(&scrape(admin).await, ejected_series) == 1.0
    })
    .await;
    assert!(became_ejected, "the killed endpoint is ejected");
    ejected.store(true, Ordering::SeqCst);
    let sent_to_killed = metric(&scrape(admin).await, &endpoint_series("requests", &apps[1]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let text = scrape(admin).await;
    assert_eq!(failed_after_ejection.load(Ordering::SeqCst), 0);
    assert!(
        failed.load(Ordering::SeqCst) <= CLIENTS,
        "at most the ones in flight"
    );
    assert_eq!(
        metric(&text, &endpoint_series("requests", &apps[1])),
        sent_to_killed,
        "none sent to it once ejected"
    );
    assert!(metric(&text, &endpoint_series("failures", &apps[1])) >= 5.0);
    assert_eq!(
        metric(
            &text,
            r#"certgate_upstream_endpoints{app="api",group="latest",state="healthy"}"#
        ),
        2.0
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_may_have_reached_an_endpoint_is_not_sent_again() {
    let resetting = Named::resetting("reset").await;
    let healthy = Named::start("ok").await;
    let (_source, addresses) = watch::channel(Arc::from(vec![resetting.addr, healthy.addr]));
    let (gateway, pki) = endpoint_gateway(addresses, &resetting).await;
    let options = ClientOptions::new(&pki, HOST);
    let (mut answered, mut refused) = (0, 0);
    // Each POST goes to either endpoint at random (4 in a row to the healthy one happen once
    // in 16 runs): send until one went to the resetting one, at most 16.
    while refused == 0 && answered < 16 {
        let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
        let request = conn.request(http::Method::POST, HOST, "/", Bytes::from_static(b"pay"));
        match conn.send(request).await.unwrap().status {
            StatusCode::OK => answered += 1,
            StatusCode::BAD_GATEWAY => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "some POSTs went to the resetting endpoint");
    assert_eq!(
        healthy.count("POST"),
        answered,
        "no refused POST was sent again"
    );
    assert_eq!(resetting.count("POST"), refused);
    // A GET reset the same way goes again to the other endpoint.
    let (bodies, failed) = tally(&gateway, &pki, "/", 4).await;
    assert_eq!((failed, bodies.get("ok").copied()), (0, Some(4)));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_added_gets_requests_and_a_removed_one_gets_none() {
    let apps = [Named::start("a").await, Named::start("b").await];
    let (source, addresses) = watch::channel(Arc::from(vec![apps[0].addr]));
    let (gateway, pki) = endpoint_gateway(addresses, &apps[0]).await;
    let (bodies, _) = tally(&gateway, &pki, "/", 10).await;
    assert_eq!(bodies.get("a"), Some(&10));
    source.send(Arc::from(vec![apps[1].addr])).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (bodies, failed) = tally(&gateway, &pki, "/", 10).await;
    assert_eq!((failed, bodies.get("b")), (0, Some(&10)));
    assert_eq!(apps[0].count("GET"), 10);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_weights() {
    let latest = Named::start("latest").await;
    let old = Named::start("old").await;
    let (gateway, pki) = gateway(split_config(&latest, &old, 50)).await;
    let (bodies, _) = tally(&gateway, &pki, "/", 100).await;
    assert_eq!(
        (bodies.get("latest"), bodies.get("old")),
        (Some(&50), Some(&50))
    );
    reload_with(&gateway, split_config(&latest, &old, 0)).await;
    // A connection accepted just before the swap is served by the replaced config and closed
    // after its first response: wait for the new config to take the listener.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (bodies, _) = tally(&gateway, &pki, "/", 100).await;
    assert_eq!(bodies.get("latest"), Some(&100), "{bodies:?}");
    gateway.stop().await;
}

#[test]
fn the_sidecar_splits_evenly_between_repeated_upstreams() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = runtime.block_on(async { (Named::start("a").await, Named::start("b").await) });
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut child = sidecar_in_front(&dir, &a, &b, &[]);
    let serving = child.wait_serving();
    let (bodies, failed) = runtime.block_on(async {
        let options = ClientOptions::new(&pki, HOST);
        let mut conn = Connection::open(serving.listen(), &options).await.unwrap();
        let mut bodies: HashMap<String, usize> = HashMap::new();
        let mut failed = 0;
        for _ in 0..100 {
            let request = conn.get(HOST, "/");
            match conn.send(request).await {
                Ok(reply) if reply.status == StatusCode::OK => {
                    *bodies
                        .entry(String::from_utf8_lossy(&reply.body).into_owned())
                        .or_default() += 1;
                }
                _ => failed += 1,
            }
        }
        (bodies, failed)
    });
    assert_eq!(failed, 0);
    assert_eq!(
        (bodies.get("a"), bodies.get("b")),
        (Some(&50), Some(&50)),
        "{bodies:?}"
    );
}

/// Loads a config whose one app has `extra` merged in; the error chain when refused.
fn load(upstream: &str, extra: Value) -> Result<certgate::Config, String> {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let path = dir.write(
        "certgate.json",
        serde_json::to_vec(&config(upstream, extra)).unwrap(),
    );
    load_config(&path).map_err(|error| certgate::error_chain(&error))
}

#[test]
fn traffic_that_cannot_be_served_is_a_config_error() {
    let cases = [
        (
            json!({ "revisions": { "api--old": "http://127.0.0.1:9" }, "ingress": { "traffic": [
                { "weight": 80, "latestRevision": true }, { "weight": 30, "revisionName": "api--old" } ] } }),
            "weights sum to 110: integer weights must sum to 100",
        ),
        (
            json!({ "revisions": { "api--old": "http://127.0.0.1:9" }, "ingress": { "traffic": [
                { "weight": 80, "latestRevision": true }, { "weight": 20, "revisionName": "api--new" } ] } }),
            "names revision \"api--new\", which is not one of revisions (api--old)",
        ),
        (
            json!({ "ingress": { "traffic": [
                { "weight": 80, "latestRevision": true }, { "weight": 20, "revisionName": "api--old" } ] } }),
            "the app has no revisions",
        ),
        (
            json!({ "revisions": { "api--old": "http://127.0.0.1:9" } }),
            "has revisions but no ingress.traffic",
        ),
        (
            json!({ "revisions": { "api--old": "http://127.0.0.1:9/path" }, "ingress": { "traffic": [
                { "weight": 100, "revisionName": "api--old" } ] } }),
            "revisions.api--old \"http://127.0.0.1:9/path\" must be",
        ),
    ];
    for (extra, says) in cases {
        let chain = load("http://127.0.0.1:9", extra.clone()).expect_err(&extra.to_string());
        assert!(chain.contains("app \"api\""), "{chain}");
        assert!(chain.contains(says), "{says:?} not in: {chain}");
    }
}

#[test]
fn check_lists_the_groups_and_their_weights() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let file = config(
        "http://127.0.0.1:8080",
        json!({
            "revisions": { "api--v1": "http://127.0.0.1:8081" },
            "retries": 2,
            "ingress": { "clientCertificateMode": "ignore", "traffic": [
                { "weight": 90, "latestRevision": true }, { "weight": 10, "revisionName": "api--v1" } ] }
        }),
    );
    dir.write("certgate.json", serde_json::to_vec(&file).unwrap());
    let output = process::cli::certgate(&["check", "--config", "certgate.json"], dir.path(), &[]);
    let (stdout, _) = process::cli::exited(&output, 0);
    assert!(
        stdout.contains(
            " groups=latest:90=http://127.0.0.1:8080,api--v1:10=http://127.0.0.1:8081 retries=2"
        ),
        "{stdout}"
    );
}

#[test]
fn explain_lists_each_group_with_its_endpoints() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("alice.pem", &pki.client("alice").pem);
    let mut file = config(
        "http://127.0.0.1:8080",
        json!({
            "revisions": { "api--v1": "http://127.0.0.1:8081" },
            "clientAuth": { "trustedCaFiles": ["client-ca.pem"] },
            "ingress": { "clientCertificateMode": "require", "traffic": [
                { "weight": 70, "latestRevision": true }, { "weight": 30, "revisionName": "api--v1" } ] }
        }),
    );
    file["apps"][0]["ingress"]["clientCertificateMode"] = "require".into();
    dir.write("certgate.json", serde_json::to_vec(&file).unwrap());
    let args = [
        "explain",
        "--config",
        "certgate.json",
        "--app",
        "api",
        "--format",
        "json",
        "alice.pem",
    ];
    let output = process::cli::certgate(&args, dir.path(), &[]);
    let (stdout, _) = process::cli::exited(&output, 0);
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        json["upstream_groups"],
        json!([
            { "name": "latest", "weight": 70, "upstream": "http://127.0.0.1:8080",
              "endpoints": [{ "address": "127.0.0.1:8080", "state": "unknown" }] },
            { "name": "api--v1", "weight": 30, "upstream": "http://127.0.0.1:8081",
              "endpoints": [{ "address": "127.0.0.1:8081", "state": "unknown" }] }
        ])
    );
    // Its admin listener's port is chosen at start: no running certgate can be asked.
    assert_eq!(json["endpoint_states"]["source"], "not_asked", "{json:#}");
    assert_eq!(json["endpoint_states"]["admin"], "127.0.0.1:0", "{json:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_host_reaches_only_its_revision() {
    let latest = Named::start("latest").await;
    let blue = Named::start("blue").await;
    let (gateway, pki) = gateway(config(
        &latest.url(),
        json!({
            "revisions": { "api--blue": blue.url() },
            "ingress": {
                "clientCertificateMode": "ignore",
                "traffic": [
                    { "weight": 100, "latestRevision": true },
                    { "weight": 0, "revisionName": "api--blue", "label": "blue" }
                ]
            }
        }),
    ))
    .await;
    let (bodies, failed) = tally(&gateway, &pki, "/", 20).await;
    assert_eq!((failed, bodies.get("latest")), (0, Some(&20)), "{bodies:?}");
    let label_host = "api---blue.example.test";
    let options = ClientOptions::new(&pki, label_host);
    let mut conn = Connection::open(gateway.addr, &options).await.unwrap();
    for _ in 0..20 {
        let request = conn.get(label_host, "/");
        let reply = conn.send(request).await.unwrap();
        assert_eq!(
            (reply.status, &reply.body[..]),
            (StatusCode::OK, &b"blue"[..])
        );
    }
    gateway.stop().await;
}

#[test]
fn a_label_host_no_served_certificate_covers_is_named_by_check() {
    let mut file = config(
        "http://127.0.0.1:8080",
        json!({
            "revisions": { "api--blue": "http://127.0.0.1:8081" },
            "ingress": { "clientCertificateMode": "ignore", "traffic": [
                { "weight": 100, "latestRevision": true },
                { "weight": 0, "revisionName": "api--blue", "label": "blue" } ] }
        }),
    );
    // The test certificate covers example.test and *.example.test, not example---blue.test.
    file["apps"][0]["hosts"] = json!(["example.test"]);
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let path = dir.write("certgate.json", serde_json::to_vec(&file).unwrap());
    let config = load_config(&path).unwrap();
    assert!(
        config
            .findings
            .iter()
            .any(|finding| format!("{finding:?}")
                .contains("host example---blue.test is not covered")),
        "{:?}",
        config.findings
    );
    let chain = load(
        "http://127.0.0.1:8080",
        json!({ "revisions": { "api--blue": "http://127.0.0.1:8081" }, "ingress": { "traffic": [
            { "weight": 100, "latestRevision": true },
            { "weight": 0, "revisionName": "api--blue", "label": "Blue!" } ] } }),
    )
    .unwrap_err();
    assert!(chain.contains("ingress.traffic label \"Blue!\""), "{chain}");
}
