//! The admin listener's `GET /upstreams` (docs/operations.md "Admin endpoints"): the live
//! state of each app's groups and endpoints, with real upstream servers on loopback ports:
//! - three endpoints of one group, one killed under load: it turns `ejected` by `failures`
//!   with an `ejected_until` about 30 s ahead, the others stay `healthy`, as the
//!   `certgate_upstream_endpoints` gauge counts them;
//! - an endpoint failing its health check is `ejected` by `health_check`, without an end, and
//!   `healthy` again once it passes;
//! - a request in flight is counted at its endpoint; an endpoint whose address left the set
//!   while it had one is `draining` until it ends, then gone;
//! - each group of a traffic split has its weight and upstream URL; after a reload only the
//!   newest generation is shown;
//! - `explain --config` against a running certgate shows the states it has (JSON and text),
//!   and against an admin address where nothing runs (or something else answers) says so,
//!   with every endpoint `unknown` (an unspecified admin address is asked on loopback);
//!   without an admin listener it lists what the upstream's name resolves to now, `unknown`
//!   too.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::named::{
    HEALTH_PATH, HOST, Load, Named, addresses_of, config, group_gateway, reload_with, split_config,
};
use common::polling::poll;
use common::{ClientOptions, Connection, Gateway, Pki, TempDir, metric, scrape, upstreams};
use http::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::watch;

/// The endpoints of group `group` of app `api` in a `/upstreams` answer.
fn endpoints<'a>(state: &'a Value, group: &str) -> &'a Vec<Value> {
    let app = state["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|app| app["name"] == "api")
        .unwrap_or_else(|| panic!("no app api in {state:#}"));
    app["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["name"] == group)
        .unwrap_or_else(|| panic!("no group {group} in {state:#}"))["endpoints"]
        .as_array()
        .unwrap()
}

/// The endpoint at `addr` of group `latest`.
fn endpoint(state: &Value, addr: std::net::SocketAddr) -> Value {
    endpoints(state, "latest")
        .iter()
        .find(|endpoint| endpoint["address"] == addr.to_string())
        .cloned()
        .unwrap_or(Value::Null)
}

/// Asks `/upstreams` until `done` holds for the answer, at most 10 s; the last answer.
async fn upstreams_until(admin: std::net::SocketAddr, done: impl Fn(&Value) -> bool) -> Value {
    poll(
        200,
        Duration::from_millis(50),
        async || upstreams(admin).await,
        done,
    )
    .await
}

fn gauge(text: &str, state: &str) -> f64 {
    metric(
        text,
        &format!(r#"certgate_upstream_endpoints{{app="api",group="latest",state="{state}"}}"#),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_killed_under_load_is_shown_ejected_by_its_failures_until_when() {
    let apps = Named::three().await;
    let (_source, addresses) = addresses_of(&apps);
    let (gateway, pki) = group_gateway(config(&apps[0].url(), json!({})), addresses).await;
    let admin = gateway.admin.unwrap();
    let state = upstreams(admin).await;
    assert_eq!(state["generation"], 0, "{state:#}");
    for app in &apps {
        assert_eq!(
            endpoint(&state, app.addr),
            json!({ "address": app.addr.to_string(), "state": "healthy", "in_flight": 0 }),
            "{state:#}"
        );
    }

    let load = Load::start(gateway.addr, &pki, 4, "/delay/5");
    tokio::time::sleep(Duration::from_millis(300)).await;
    apps[1].kill();
    let state = upstreams_until(admin, |state| {
        endpoint(state, apps[1].addr)["state"] == "ejected"
    })
    .await;
    let killed_at = OffsetDateTime::now_utc();
    load.stop().await;
    let killed = endpoint(&state, apps[1].addr);
    assert_eq!(killed["state"], "ejected", "{state:#}");
    assert_eq!(killed["ejected_by"], json!(["failures"]), "{state:#}");
    let until = OffsetDateTime::parse(
        killed["ejected_until"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ahead = (until - killed_at).whole_seconds();
    assert!((25..=31).contains(&ahead), "{ahead} s ahead: {state:#}");
    for app in [&apps[0], &apps[2]] {
        let kept = endpoint(&state, app.addr);
        assert_eq!(kept["state"], "healthy", "{state:#}");
        assert!(kept.get("ejected_by").is_none(), "{state:#}");
        assert!(kept.get("ejected_until").is_none(), "{state:#}");
    }
    // The gauge counts the same states.
    let text = scrape(admin).await;
    assert_eq!(
        (gauge(&text, "healthy"), gauge(&text, "ejected")),
        (2.0, 1.0)
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_its_health_check_is_shown_ejected_by_it() {
    let apps = Named::three().await;
    let (_source, addresses) = addresses_of(&apps);
    let health = json!({ "healthCheck": {
        "path": HEALTH_PATH, "intervalMs": 100, "timeoutMs": 100,
        "healthyThreshold": 2, "unhealthyThreshold": 2,
    } });
    let (gateway, _pki) = group_gateway(config(&apps[0].url(), health), addresses).await;
    let admin = gateway.admin.unwrap();
    apps[2].sick.store(true, Ordering::Relaxed);
    let state = upstreams_until(admin, |state| {
        endpoint(state, apps[2].addr)["state"] == "ejected"
    })
    .await;
    assert_eq!(
        endpoint(&state, apps[2].addr),
        json!({
            "address": apps[2].addr.to_string(), "state": "ejected", "in_flight": 0,
            "ejected_by": ["health_check"],
        }),
        "{state:#}"
    );
    assert_eq!(endpoint(&state, apps[0].addr)["state"], "healthy");
    assert_eq!(gauge(&scrape(admin).await, "ejected"), 1.0);

    apps[2].sick.store(false, Ordering::Relaxed);
    let state = upstreams_until(admin, |state| {
        endpoint(state, apps[2].addr)["state"] == "healthy"
    })
    .await;
    assert_eq!(
        endpoint(&state, apps[2].addr)["state"],
        "healthy",
        "{state:#}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_counted_and_a_removed_endpoint_drains() {
    let apps = [Named::start("a").await, Named::start("b").await];
    let (source, addresses) = watch::channel(Arc::from(vec![apps[0].addr]));
    let (gateway, pki) = group_gateway(config(&apps[0].url(), json!({})), addresses).await;
    let admin = gateway.admin.unwrap();
    let mut conn = Connection::open(gateway.addr, &ClientOptions::new(&pki, HOST))
        .await
        .unwrap();
    let slow = tokio::spawn(async move {
        let request = conn.get(HOST, "/delay/3000");
        conn.send(request).await.unwrap().status
    });
    let state = upstreams_until(admin, |state| {
        endpoint(state, apps[0].addr)["in_flight"] == 1
    })
    .await;
    assert_eq!(endpoint(&state, apps[0].addr)["in_flight"], 1, "{state:#}");

    source.send(Arc::from(vec![apps[1].addr])).unwrap();
    let state = upstreams_until(admin, |state| endpoints(state, "latest").len() == 2).await;
    assert_eq!(
        endpoints(&state, "latest"),
        &vec![
            json!({ "address": apps[1].addr.to_string(), "state": "healthy", "in_flight": 0 }),
            json!({ "address": apps[0].addr.to_string(), "state": "draining", "in_flight": 1 }),
        ],
        "{state:#}"
    );
    assert_eq!(gauge(&scrape(admin).await, "draining"), 1.0);
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    let state = upstreams_until(admin, |state| endpoints(state, "latest").len() == 1).await;
    assert_eq!(
        endpoints(&state, "latest"),
        &vec![json!({ "address": apps[1].addr.to_string(), "state": "healthy", "in_flight": 0 })],
        "{state:#}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_has_its_weight_and_only_the_newest_generation_is_shown() {
    let latest = Named::start("latest").await;
    let old = Named::start("old").await;
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let gateway = Gateway::start(dir, split_config(&latest, &old, 30)).await;
    let admin = gateway.admin.unwrap();
    let groups = |weights: [u32; 2]| {
        json!([
            { "name": "latest", "weight": weights[0], "upstream": latest.url(),
              "endpoints": [{ "address": latest.addr.to_string(), "state": "healthy", "in_flight": 0 }] },
            { "name": "api--old", "weight": weights[1], "upstream": old.url(),
              "endpoints": [{ "address": old.addr.to_string(), "state": "healthy", "in_flight": 0 }] },
        ])
    };
    assert_eq!(
        upstreams(admin).await,
        json!({ "generation": 0, "apps": [{ "name": "api", "groups": groups([70, 30]) }] })
    );
    reload_with(&gateway, split_config(&latest, &old, 10)).await;
    assert_eq!(
        upstreams(admin).await,
        json!({ "generation": 1, "apps": [{ "name": "api", "groups": groups([90, 10]) }] })
    );
    gateway.stop().await;
}

/// An `accept` app `api` trusting the client CA, with `extra` merged in: what `explain`
/// can judge a certificate against.
fn explainable(upstream: &str, extra: Value) -> Value {
    let mut file = config(
        upstream,
        json!({
            "clientAuth": { "trustedCaFiles": ["client-ca.pem"] },
            "ingress": { "clientCertificateMode": "accept" },
        }),
    );
    for (key, value) in extra.as_object().unwrap() {
        file["apps"][0][key] = value.clone();
    }
    file
}

/// `certgate explain --config explain.json --app api alice.pem` with `file` as
/// `explain.json` in `dir`, `--format json` when `json`; its stdout (it must exit 0).
async fn explain(dir: &TempDir, pki: &Pki, file: &Value, json: bool) -> String {
    explain_output(dir, pki, file, json).await.0
}

/// As `explain`, its stdout and stderr.
async fn explain_output(dir: &TempDir, pki: &Pki, file: &Value, json: bool) -> (String, String) {
    dir.write("explain.json", serde_json::to_vec(file).unwrap());
    dir.write("alice.pem", &pki.client("alice").pem);
    let path = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut args = vec!["explain", "--config", "explain.json", "--app", "api"];
        if json {
            args.extend(["--format", "json"]);
        }
        args.push("alice.pem");
        let output = process::cli::certgate(&args, &path, &[]);
        process::cli::exited(&output, 0)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_endpoint_states_of_the_running_certgate() {
    let apps = Named::three().await;
    let (_source, addresses) = addresses_of(&apps);
    let health = json!({ "healthCheck": {
        "path": HEALTH_PATH, "intervalMs": 100, "timeoutMs": 100, "unhealthyThreshold": 2,
    } });
    let (gateway, pki) =
        group_gateway(explainable(&apps[0].url(), health.clone()), addresses).await;
    let admin = gateway.admin.unwrap();
    apps[1].sick.store(true, Ordering::Relaxed);
    upstreams_until(admin, |state| {
        endpoint(state, apps[1].addr)["state"] == "ejected"
    })
    .await;
    // The same config, naming the admin address the running certgate was given.
    let mut file = explainable(&apps[0].url(), health);
    file["admin"] = admin.to_string().into();
    let stdout = explain(&gateway.dir, &pki, &file, true).await;
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["endpoint_states"]["source"], "live", "{json:#}");
    assert_eq!(
        json["endpoint_states"]["admin"],
        admin.to_string(),
        "{json:#}"
    );
    let groups = json["upstream_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{json:#}");
    assert_eq!(groups[0]["name"], "latest");
    let shown: Vec<Value> = groups[0]["endpoints"].as_array().unwrap().clone();
    let expected: Vec<Value> = apps
        .iter()
        .map(|app| {
            if app.addr == apps[1].addr {
                json!({ "address": app.addr.to_string(), "state": "ejected", "in_flight": 0,
                        "ejected_by": ["health_check"] })
            } else {
                json!({ "address": app.addr.to_string(), "state": "healthy", "in_flight": 0 })
            }
        })
        .collect();
    assert_eq!(shown, expected, "{json:#}");

    let text = explain(&gateway.dir, &pki, &file, false).await;
    process::cli::assert_says(
        &text,
        &[
            &format!(
                "  states: live from the certgate at {admin} (config generation 0), its groups as it serves them"
            ),
            &format!("    {} ejected by health_check, 0 in flight", apps[1].addr),
            &format!("    {} healthy, 0 in flight", apps[0].addr),
        ],
        &["unknown"],
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_when_no_certgate_runs_and_shows_no_state() {
    // A port nothing listens on any more.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = free.local_addr().unwrap();
    drop(free);
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut file = explainable(
        "http://127.0.0.1:8080",
        json!({ "revisions": { "api--v1": "http://127.0.0.1:8081" },
                "ingress": { "clientCertificateMode": "accept", "traffic": [
                    { "weight": 70, "latestRevision": true },
                    { "weight": 30, "revisionName": "api--v1" } ] } }),
    );
    file["admin"] = admin.to_string().into();
    let json: Value = serde_json::from_str(&explain(&dir, &pki, &file, true).await).unwrap();
    assert_eq!(json["endpoint_states"]["source"], "not_running", "{json:#}");
    assert_eq!(
        json["endpoint_states"]["admin"],
        admin.to_string(),
        "{json:#}"
    );
    let detail = json["endpoint_states"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!(
            "certgate is not running at {admin}, or has no admin listener there (cannot connect"
        )),
        "{detail}"
    );
    assert!(detail.ends_with("the endpoints as their names resolve now, their states unknown"));
    assert_eq!(
        json["upstream_groups"],
        json!([
            { "name": "latest", "weight": 70, "upstream": "http://127.0.0.1:8080",
              "endpoints": [{ "address": "127.0.0.1:8080", "state": "unknown" }] },
            { "name": "api--v1", "weight": 30, "upstream": "http://127.0.0.1:8081",
              "endpoints": [{ "address": "127.0.0.1:8081", "state": "unknown" }] }
        ])
    );
    let text = explain(&dir, &pki, &file, false).await;
    assert!(text.contains("    127.0.0.1:8080 unknown\n"), "{text}");
    assert!(!text.contains("healthy"), "{text}");
    // An unspecified admin address is asked on loopback.
    file["admin"] = format!("0.0.0.0:{}", admin.port()).into();
    let json: Value = serde_json::from_str(&explain(&dir, &pki, &file, true).await).unwrap();
    assert_eq!(
        json["endpoint_states"]["admin"],
        admin.to_string(),
        "{json:#}"
    );
    // A server there that answers something else is not taken for certgate.
    let other = Named::start("not certgate").await;
    file["admin"] = other.addr.to_string().into();
    let json: Value = serde_json::from_str(&explain(&dir, &pki, &file, true).await).unwrap();
    assert_eq!(json["endpoint_states"]["source"], "unreadable", "{json:#}");
    let detail = json["endpoint_states"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!(
            "the listener at {} answered, but not with the endpoints' states (the answer is not the JSON of GET /upstreams",
            other.addr
        )),
        "{detail}"
    );
    assert_eq!(
        json["upstream_groups"][0]["endpoints"][0]["state"], "unknown",
        "{json:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_without_an_admin_listener_lists_what_a_name_resolves_to_now() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut file = explainable("http://localhost:8080", json!({}));
    file.as_object_mut().unwrap().remove("admin");
    let (stdout, stderr) = explain_output(&dir, &pki, &file, true).await;
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["endpoint_states"]["source"], "not_asked", "{json:#}");
    assert_eq!(json["endpoint_states"]["admin"], Value::Null, "{json:#}");
    // localhost, as /etc/hosts answers it: IPv4 first.
    let endpoints = json["upstream_groups"][0]["endpoints"].as_array().unwrap();
    assert_eq!(
        endpoints[0],
        json!({ "address": "127.0.0.1:8080", "state": "unknown" }),
        "{json:#}"
    );
    assert!(
        endpoints
            .iter()
            .all(|endpoint| endpoint["state"] == "unknown"),
        "{json:#}"
    );
    // Resolving it is not a running certgate's endpoints changing.
    assert!(!stderr.contains("upstream addresses changed"), "{stderr}");
}
