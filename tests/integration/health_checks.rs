//! Active health checks (docs/config.md "Active health checks"), with real upstream servers
//! on loopback ports:
//! - three endpoints of one group; one starts answering 503 on the health path: it is taken
//!   out (the metrics say so) and gets no request while the others serve every one; it
//!   answers 200 again: it is brought back and gets requests again;
//! - with `ingress.transport: http2` the probes speak h2c, and an answer other than
//!   `expectedStatus` is a failure;
//! - config errors name the `healthCheck` key that is wrong;
//! - `check` and `explain --config` show the health check, sticky sessions and `retries`
//!   (and say retries and off for an app without them);
//! - the sidecar's `--health-check-path`, `--health-check-interval-ms`, `--sticky-sessions` and
//!   `--retries` (and their `CERTGATE_*` variables) turn them on in a real `certgate run`
//!   and `check`; they are refused beside `--config`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;
use crate::process;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::named::{
    HEALTH_PATH, HOST, Named, SERVING_FLAGS, addresses_of, config, group_gateway, sidecar_in_front,
    tally,
};
use common::polling::scrape_until;
use common::{ClientOptions, Connection, Gateway, Pki, TempDir, load_config, metric_value};
use http::StatusCode;
use serde_json::{Value, json};

fn state(text: &str, state: &str) -> Option<f64> {
    metric_value(
        text,
        &format!(r#"certgate_upstream_endpoints{{app="api",group="latest",state="{state}"}}"#),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_its_health_checks_is_taken_out_and_brought_back() {
    let apps = Named::three().await;
    // One group of three endpoints: the address set a DNS resolver would send.
    let (_source, addresses) = addresses_of(&apps);
    let health = json!({ "healthCheck": {
        "path": HEALTH_PATH, "intervalMs": 100, "timeoutMs": 100,
        "healthyThreshold": 2, "unhealthyThreshold": 2,
    } });
    let (gateway, pki) = group_gateway(config(&apps[0].url(), health), addresses).await;
    let admin = gateway.admin.unwrap();

    let (bodies, failed) = tally(&gateway, &pki, "/", 90).await;
    assert_eq!(failed, 0);
    for name in ["a", "b", "c"] {
        assert!(bodies.get(name).copied().unwrap_or(0) >= 10, "{bodies:?}");
    }

    apps[1].sick.store(true, Ordering::Relaxed);
    let text = scrape_until(admin, 100, Duration::from_millis(50), |text| {
        state(text, "ejected") == Some(1.0)
    })
    .await;
    assert_eq!(state(&text, "ejected"), Some(1.0), "{text}");
    assert_eq!(state(&text, "healthy"), Some(2.0), "{text}");
    let failures = format!(
        r#"certgate_upstream_health_checks_total{{app="api",group="latest",endpoint="{}",result="failure"}}"#,
        apps[1].addr
    );
    assert!(metric_value(&text, &failures).unwrap() >= 2.0, "{text}");
    let (bodies, failed) = tally(&gateway, &pki, "/", 90).await;
    assert_eq!(failed, 0);
    assert_eq!(bodies.get("b"), None, "{bodies:?}");
    assert_eq!(bodies.values().sum::<usize>(), 90, "{bodies:?}");
    // It is still probed while out.
    let probed = apps[1].checks.load(Ordering::Relaxed);
    assert!(
        common::polling::until(50, Duration::from_millis(50), || {
            apps[1].checks.load(Ordering::Relaxed) > probed
        })
        .await
    );

    apps[1].sick.store(false, Ordering::Relaxed);
    let text = scrape_until(admin, 100, Duration::from_millis(50), |text| {
        state(text, "healthy") == Some(3.0)
    })
    .await;
    assert_eq!(state(&text, "healthy"), Some(3.0), "{text}");
    assert_eq!(state(&text, "ejected"), Some(0.0), "{text}");
    let (bodies, failed) = tally(&gateway, &pki, "/", 90).await;
    assert_eq!(failed, 0);
    assert!(bodies.get("b").copied().unwrap_or(0) >= 10, "{bodies:?}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_health_check_no_probe_is_sent() {
    let upstream = Named::start("a").await;
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let gateway = Gateway::start(dir, config(&upstream.url(), json!({}))).await;
    let (bodies, failed) = tally(&gateway, &pki, "/", 5).await;
    assert_eq!((bodies["a"], failed), (5, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.checks.load(Ordering::Relaxed), 0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_probes_and_an_unexpected_status_takes_the_endpoint_out() {
    let upstream = Named::start("a").await;
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let mut entry = config(
        &upstream.url(),
        json!({ "healthCheck": {
            "path": HEALTH_PATH, "intervalMs": 100, "timeoutMs": 100,
            "unhealthyThreshold": 2, "expectedStatus": 204,
        } }),
    );
    entry["apps"][0]["ingress"]["transport"] = "http2".into();
    let gateway = Gateway::start(dir, entry).await;
    let text = scrape_until(
        gateway.admin.unwrap(),
        100,
        Duration::from_millis(50),
        |text| state(text, "ejected") == Some(1.0),
    )
    .await;
    assert_eq!(state(&text, "ejected"), Some(1.0), "{text}");
    assert!(upstream.h2_checks.load(Ordering::Relaxed) >= 2);
    assert_eq!(
        upstream.h2_checks.load(Ordering::Relaxed),
        upstream.checks.load(Ordering::Relaxed)
    );
    // Its group's one endpoint: requests still go to it.
    let (bodies, failed) = tally(&gateway, &pki, "/", 3).await;
    assert_eq!((bodies["a"], failed), (3, 0));
    gateway.stop().await;
}

/// Loads a config whose one app has `extra` merged in; the error chain when refused.
fn load(extra: Value) -> Result<certgate::Config, String> {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let path = dir.write(
        "certgate.json",
        serde_json::to_vec(&config("http://127.0.0.1:9", extra)).unwrap(),
    );
    load_config(&path).map_err(|error| certgate::error_chain(&error))
}

#[test]
fn a_wrong_health_check_is_a_config_error_naming_the_key() {
    let cases = [
        (
            json!({ "path": "healthz" }),
            "healthCheck.path \"healthz\": must start with /",
        ),
        (
            json!({ "intervalMs": 0 }),
            "healthCheck.intervalMs 0: must be from 100",
        ),
        (
            json!({ "intervalMs": 1000, "timeoutMs": 2000 }),
            "healthCheck.timeoutMs 2000: must be above 0 and at most intervalMs",
        ),
        (
            json!({ "healthyThreshold": 0 }),
            "healthCheck.healthyThreshold 0: must be at least 1",
        ),
        (
            json!({ "unhealthyThreshold": 0 }),
            "healthCheck.unhealthyThreshold 0",
        ),
        (
            json!({ "expectedStatus": 99 }),
            "healthCheck.expectedStatus 99: must be a status",
        ),
        (json!({ "expectedStatus": 302, "pathh": "/" }), "pathh"),
    ];
    for (check, says) in cases {
        let chain = load(json!({ "healthCheck": check })).expect_err(&check.to_string());
        assert!(chain.contains(says), "{says:?} not in: {chain}");
    }
    let loaded = load(json!({ "healthCheck": {} })).unwrap();
    let check = loaded.apps[0].health_check.clone().unwrap();
    assert_eq!(check.path.as_str(), "/");
    assert_eq!(check.interval, Duration::from_millis(5000));
    assert_eq!(check.timeout, Duration::from_millis(1000));
    assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (2, 3));
    assert_eq!(check.expected_status, StatusCode::OK);
    assert!(load(json!({})).unwrap().apps[0].health_check.is_none());
}

#[test]
fn check_and_explain_show_the_health_check_sticky_sessions_and_retries() {
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    dir.write("alice.pem", &pki.client("alice").pem);
    let mut file = config(
        "http://127.0.0.1:8080",
        json!({
            "retries": 2,
            "healthCheck": { "path": "/ready?deep=1", "intervalMs": 2000, "timeoutMs": 500,
                             "unhealthyThreshold": 4, "expectedStatus": 204 },
            "clientAuth": { "trustedCaFiles": ["client-ca.pem"] },
        }),
    );
    file["apps"][0]["ingress"] = json!({
        "clientCertificateMode": "accept", "stickySessions": { "affinity": "sticky" },
    });
    dir.write("certgate.json", serde_json::to_vec(&file).unwrap());
    let output = process::cli::certgate(&["check", "--config", "certgate.json"], dir.path(), &[]);
    let (stdout, _) = process::cli::exited(&output, 0);
    process::cli::assert_says(
        &stdout,
        &[
            " upstream=http://127.0.0.1:8080 retries=2 health-check=/ready?deep=1,interval=2000ms,timeout=500ms,unhealthy-threshold=4,healthy-threshold=2,expected-status=204 sticky-sessions=on,cookie=certgate-affinity trust=",
        ],
        &[],
    );

    let explain = ["explain", "--config", "certgate.json", "--app", "api"];
    let output = process::cli::certgate(
        &[&explain[..], &["--format", "json", "alice.pem"]].concat(),
        dir.path(),
        &[],
    );
    let (stdout, _) = process::cli::exited(&output, 0);
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["retries"], 2, "{json:#}");
    assert_eq!(
        json["health_check"],
        json!({ "path": "/ready?deep=1", "interval_ms": 2000, "timeout_ms": 500,
                "unhealthy_threshold": 4, "healthy_threshold": 2, "expected_status": 204 })
    );
    assert_eq!(
        json["sticky_sessions"],
        json!({ "cookie": "certgate-affinity" })
    );
    let output = process::cli::certgate(&[&explain[..], &["alice.pem"]].concat(), dir.path(), &[]);
    let (stdout, _) = process::cli::exited(&output, 0);
    process::cli::assert_says(
        &stdout,
        &[
            "\n  retries:         2 (a request that did not reach the app goes to another endpoint)\n",
            "\n  health check:    GET /ready?deep=1 every 2000 ms, timeout 500 ms; out after 4 failures in a row, back after 2 successes; expects 204\n",
            "\n  sticky sessions: on (cookie certgate-affinity)\n",
        ],
        &[],
    );

    // Without them: retries still said, the rest off (check) or said off (explain).
    let mut plain = file.clone();
    plain["apps"][0]
        .as_object_mut()
        .unwrap()
        .remove("healthCheck");
    plain["apps"][0].as_object_mut().unwrap().remove("retries");
    plain["apps"][0]["ingress"] = json!({ "clientCertificateMode": "accept" });
    dir.write("certgate.json", serde_json::to_vec(&plain).unwrap());
    let output = process::cli::certgate(&["check", "--config", "certgate.json"], dir.path(), &[]);
    let (stdout, _) = process::cli::exited(&output, 0);
    process::cli::assert_says(
        &stdout,
        &[" upstream=http://127.0.0.1:8080 retries=1 trust="],
        &["health-check=", "sticky-sessions="],
    );
    let output = process::cli::certgate(&[&explain[..], &["alice.pem"]].concat(), dir.path(), &[]);
    let (stdout, _) = process::cli::exited(&output, 0);
    process::cli::assert_says(
        &stdout,
        &[
            "\n  health check:    off (only failures eject an endpoint)\n",
            "\n  sticky sessions: off\n",
        ],
        &[],
    );
}

#[test]
fn the_sidecar_flags_turn_on_the_health_check_sticky_sessions_and_retries() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = runtime.block_on(async { (Named::start("a").await, Named::start("b").await) });
    b.sick.store(true, Ordering::Relaxed);
    let pki = Pki::new();
    let dir = TempDir::new();
    pki.write(&dir);
    let a_url = a.url();
    let mut child = sidecar_in_front(
        &dir,
        &a,
        &b,
        &[
            "--admin",
            "127.0.0.1:0",
            "--health-check-path",
            HEALTH_PATH,
            "--health-check-interval-ms",
            "100",
            "--sticky-sessions",
            "--retries",
            "0",
        ],
    );
    let serving = child.wait_serving();
    let admin = serving.admin();
    // The sick one is taken out by its health check; the other passes its.
    let state = runtime.block_on(common::polling::poll(
        200,
        Duration::from_millis(50),
        async || common::upstreams(admin).await,
        |state| state["apps"][0]["groups"][1]["endpoints"][0]["state"] == "ejected",
    ));
    let groups = &state["apps"][0]["groups"];
    assert_eq!(
        groups[1]["endpoints"][0]["ejected_by"],
        json!(["health_check"]),
        "{state:#}"
    );
    assert_eq!(groups[0]["endpoints"][0]["state"], "healthy", "{state:#}");
    assert!(a.checks.load(Ordering::Relaxed) > 0);
    // Sticky sessions: the first answer sets the cookie.
    let set_cookie = runtime.block_on(async {
        let options = ClientOptions::new(&pki, HOST);
        let mut conn = Connection::open(serving.listen(), &options).await.unwrap();
        let request = conn.get(HOST, "/");
        let reply = conn.send(request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        reply.headers[http::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned()
    });
    assert!(set_cookie.starts_with("certgate-affinity="), "{set_cookie}");
    drop(child);

    // The same through the environment, as `check` prints it.
    let check = |more: &[&'static str]| {
        let mut args = vec!["check", "--upstream", &a_url];
        args.extend_from_slice(&SERVING_FLAGS);
        args.extend_from_slice(more);
        args
    };
    let output = process::cli::certgate(
        &check(&[]),
        dir.path(),
        &[
            ("CERTGATE_HEALTH_CHECK_PATH", "/ready"),
            ("CERTGATE_HEALTH_CHECK_INTERVAL_MS", "500"),
            ("CERTGATE_STICKY_SESSIONS", "true"),
            ("CERTGATE_RETRIES", "3"),
        ],
    );
    let (stdout, _) = process::cli::exited(&output, 0);
    process::cli::assert_says(
        &stdout,
        &[
            " retries=3 health-check=/ready,interval=500ms,timeout=500ms,unhealthy-threshold=3,healthy-threshold=2,expected-status=200 sticky-sessions=on,cookie=certgate-affinity ",
        ],
        &[],
    );
    // A wrong value names the flag it came from, not the config key.
    for (flags, says) in [
        (
            ["--health-check-path", "ready"].as_slice(),
            "--health-check-path \"ready\": must start with /",
        ),
        (
            &[
                "--health-check-path",
                "/ready",
                "--health-check-interval-ms",
                "50",
            ],
            "--health-check-interval-ms 50: must be from 100",
        ),
    ] {
        let output = process::cli::certgate(&check(flags), dir.path(), &[]);
        let (_, stderr) = process::cli::exited(&output, 64);
        assert!(stderr.contains(says), "{says:?} not in: {stderr}");
        assert!(!stderr.contains("healthCheck."), "{stderr}");
    }
    // Sidecar flags only: not with a config file.
    dir.write("certgate.json", "{}");
    let output = process::cli::certgate(
        &["check", "--config", "certgate.json", "--retries", "2"],
        dir.path(),
        &[],
    );
    process::cli::exited(&output, 64);
}
